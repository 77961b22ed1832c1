"""Build smartswitch's wheel the way ``pip install .`` does, and unpack it to run from.

Plain library code (no pytest), shared by ``tests/test_compiled.py`` and ``bench/speed.py``: the
project is copied first (the build leaves ``build/`` and C sources where it runs), pip builds the
wheel with build isolation (setup.py compiles the core with mypyc unless it cannot), and the
wheel is unzipped into a directory that goes first on ``PYTHONPATH``, ahead of the checkout's
editable install.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
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


class WheelBuild:
    """A wheel build running in the background (``pip wheel`` in its own process group)."""

    def __init__(self, dest: Path, switch: str | None = None) -> None:
        """Copy the checkout under ``dest`` and start ``pip wheel`` on the copy.

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
        self.dest = dest
        self._wheels = dest / "wheel"
        # A file, not a pipe: nobody reads the output until the build is over.
        self._log_path = dest / "build.log"
        argv = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--verbose"]
        with self._log_path.open("wb") as log:
            self._process = subprocess.Popen(
                [*argv, "-w", str(self._wheels), "."],
                cwd=project,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # pip's build runs in children: cancel ends them all
            )

    def wait(self, timeout: float = 900) -> Installed:
        """The unpacked wheel, once the build is over; raises RuntimeError if pip fails."""
        try:
            returncode = self._process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.cancel()
            raise RuntimeError(f"pip wheel still running after {timeout:.0f} s") from None
        log = self._log_path.read_text(errors="replace")
        found = sorted(self._wheels.glob("smartswitch-*.whl"))
        if returncode != 0 or not found:
            raise RuntimeError(f"pip wheel failed ({returncode}):\n{log[-4000:]}")
        site = self.dest / "site"
        with zipfile.ZipFile(found[0]) as archive:
            archive.extractall(site)
        suffix = sysconfig.get_config_var("EXT_SUFFIX")
        compiled = frozenset(
            ".".join(path.relative_to(site).with_name(path.name.removesuffix(suffix)).parts)
            for path in (site / "smartswitch").rglob("*" + suffix)
        )
        return Installed(wheel=found[0], site=site, compiled=compiled, log=log)

    def cancel(self) -> None:
        """End the build and its compilers if it still runs."""
        if self._process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()


def build_wheel(dest: Path, switch: str | None = None, timeout: float = 900) -> Installed:
    """Build the checkout's wheel under ``dest`` and unpack it (:class:`WheelBuild`, waited
    for)."""
    return WheelBuild(dest, switch).wait(timeout)
