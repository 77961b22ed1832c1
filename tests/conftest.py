"""Shared pytest setup for the whole suite.

Kept small on purpose: fixtures belong next to the tests that use them
(tests/e2e/conftest.py for the node and sipp harness).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from e2e.wheel import Installed, WheelBuild

# The compiled wheel's build, started as soon as the run is known to need it (see
# pytest_collection_modifyitems).
_WHEEL_BUILD = pytest.StashKey[WheelBuild]()


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Name the real tools the run used, so a report from CI says which sipp."""
    sipp = shutil.which("sipp")
    if sipp is None:
        return ["sipp: not installed (scripts/install-system-deps.sh)"]
    out = subprocess.run([sipp, "-v"], capture_output=True, text=True, check=False, timeout=10)
    version = next((line.strip() for line in out.stdout.splitlines() if line.strip()), "?")
    return [f"sipp: {sipp} {version}"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Everything under tests/e2e is end-to-end, marked or not, so that
    # `pytest -m "not e2e"` gives the fast suite. So are the network-namespace tests
    # (`-m netns`): real daemons, seconds each, and timing-sensitive.
    for item in items:
        heavy = "e2e" in item.path.parts or item.get_closest_marker("netns") is not None
        if heavy and item.get_closest_marker("e2e") is None:
            item.add_marker(pytest.mark.e2e)
    # The wheel takes two minutes of one core to build (mypyc, then gcc on one large C file)
    # and its first user comes after the unit and cluster tests, which mostly wait on
    # daemons and timers: built meanwhile, in the background, it costs the run no wall time.
    wanted = any("built_wheel" in getattr(item, "fixturenames", ()) for item in items)
    if wanted and not config.option.collectonly:
        _start_wheel_build(config)


def _start_wheel_build(config: pytest.Config) -> WheelBuild:
    build = config.stash[_WHEEL_BUILD] = WheelBuild(
        Path(tempfile.mkdtemp(prefix="smartswitch-wheel-"))
    )
    return build


def pytest_unconfigure(config: pytest.Config) -> None:
    build = config.stash.get(_WHEEL_BUILD, None)
    if build is not None:
        build.cancel()
        shutil.rmtree(build.dest, ignore_errors=True)


@pytest.fixture(scope="session")
def built_wheel(request: pytest.FixtureRequest) -> Installed:
    """The wheel as ``pip install .`` builds it (the compiled core where a C compiler is), once
    per run, shared by tests/test_compiled.py and tests/e2e/test_install.py."""
    build = request.config.stash.get(_WHEEL_BUILD, None)
    if build is None:  # a fixture asked for by name (request.getfixturevalue)
        build = _start_wheel_build(request.config)
    return build.wait()
