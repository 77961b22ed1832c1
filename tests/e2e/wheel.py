"""Build smartswitch's wheel the way ``pip install .`` does, and unpack it to run from.

Plain library code (no pytest), shared by ``tests/test_compiled.py`` and ``bench/speed.py``: the
project is copied first (the build leaves ``build/`` and C sources where it runs), pip builds the
wheel with build isolation (setup.py compiles the core with mypyc unless it cannot), and the
wheel is unzipped into a directory that goes first on ``PYTHONPATH``, ahead of the checkout's
editable install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# What a build needs of the checkout: setup.py, pyproject.toml (which names the README) and the
# package.
_PROJECT_FILES = ("setup.py", "pyproject.toml", "README.md")


@dataclass(frozen=True)
class Installed:
    """An unpacked wheel."""

    wheel: Path
    site: Path
    """The directory to put first on ``PYTHONPATH``."""
    compiled: frozenset[str]
    """Dotted names of the modules the wheel carries compiled."""
    log: str
    """The build's output (setup.py says there why a module stayed pure)."""


def build_wheel(dest: Path, switch: str | None = None, timeout: float = 900) -> Installed:
    """Build the checkout's wheel under ``dest`` and unpack it; raises RuntimeError if pip fails.

    ``switch``: setup.py's ``SMARTSWITCH_MYPYC`` for this build; None builds as a plain
    ``pip install .`` does, whatever the caller's environment says."""
    env = {k: v for k, v in os.environ.items() if k != "SMARTSWITCH_MYPYC"}
    if switch is not None:
        env["SMARTSWITCH_MYPYC"] = switch
    project = dest / "project"
    project.mkdir(parents=True)
    for name in _PROJECT_FILES:
        shutil.copy(ROOT / name, project / name)
    shutil.copytree(
        ROOT / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__", "*.so")
    )
    wheels = dest / "wheel"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--verbose", "-w", str(wheels), "."],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    log = build.stdout + build.stderr
    found = sorted(wheels.glob("smartswitch-*.whl"))
    if build.returncode != 0 or not found:
        raise RuntimeError(f"pip wheel failed ({build.returncode}):\n{log[-4000:]}")
    site = dest / "site"
    with zipfile.ZipFile(found[0]) as archive:
        archive.extractall(site)
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    compiled = frozenset(
        ".".join(path.relative_to(site).with_name(path.name.removesuffix(suffix)).parts)
        for path in (site / "smartswitch").rglob("*" + suffix)
    )
    return Installed(wheel=found[0], site=site, compiled=compiled, log=log)
