"""Shared pytest setup for the whole suite.

Kept small on purpose: fixtures belong next to the tests that use them
(tests/e2e/conftest.py for the node and sipp harness).
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from e2e.wheel import Installed, build_wheel


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Name the real tools the run used, so a report from CI says which sipp."""
    sipp = shutil.which("sipp")
    if sipp is None:
        return ["sipp: not installed (scripts/install-system-deps.sh)"]
    out = subprocess.run([sipp, "-v"], capture_output=True, text=True, check=False, timeout=10)
    version = next((line.strip() for line in out.stdout.splitlines() if line.strip()), "?")
    return [f"sipp: {sipp} {version}"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Everything under tests/e2e is end-to-end, marked or not, so that
    # `pytest -m "not e2e"` gives the fast suite. So are the network-namespace tests
    # (`-m netns`): real daemons, seconds each, and timing-sensitive.
    for item in items:
        heavy = "e2e" in item.path.parts or item.get_closest_marker("netns") is not None
        if heavy and item.get_closest_marker("e2e") is None:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The wheel as ``pip install .`` builds it (the compiled core where a C compiler is), once
    per run: about a minute of compiling, shared by tests/test_compiled.py and
    tests/e2e/test_install.py."""
    return build_wheel(tmp_path_factory.mktemp("wheel"))
