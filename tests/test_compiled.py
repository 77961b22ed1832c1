"""The optional compiled core (setup.py, ``SMARTSWITCH_MYPYC=1``) passes the SIP and B2BUA tests.

The rest of the suite runs the pure-Python modules; this test builds the compiled ones as an
install does (mypyc, then the C compiler, in a copy of the project) and runs ``tests/sip`` and
``tests/b2bua`` against them in a child process. About a minute of CPU, most of it the C
compiler's. Skipped where mypyc, a C compiler (``gcc``, scripts/install-system-deps.sh) or
Python's headers are missing: there the install is pure Python.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _compiler() -> str | None:
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(cc)


pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("mypyc") is None
    or _compiler() is None
    or not (Path(sysconfig.get_paths()["include"]) / "Python.h").exists(),
    reason="mypyc, a C compiler or Python's headers missing: the pure-Python install only",
)


def test_the_compiled_core_passes_the_sip_and_b2bua_tests(tmp_path: Path) -> None:
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(
        ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__", "*.so")
    )
    env = {**os.environ, "SMARTSWITCH_MYPYC": "1"}
    build = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--inplace"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert build.returncode == 0, build.stderr[-4000:]
    # The strictly typed SIP core and B2BUA engine were compiled, SDP aside (setup.py says why):
    # a silent fall-back to Python would pass below.
    src = tmp_path / "src"
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    expected = {
        f"smartswitch.{package}.{path.stem}"
        for package in ("sip", "b2bua")
        for path in (src / "smartswitch" / package).glob("*.py")
        if path.name != "sdp.py"
    }
    built = {
        ".".join(path.relative_to(src).with_name(path.name.removesuffix(suffix)).parts)
        for path in (src / "smartswitch").rglob("*" + suffix)
    }
    assert built == expected, build.stderr[-4000:]

    tests = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/sip",
            "tests/b2bua",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(src)},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    summary = tests.stdout.strip().splitlines()[-1] if tests.stdout.strip() else ""
    assert tests.returncode == 0, tests.stdout[-6000:] + tests.stderr[-2000:]
    # The two tests that patch module globals skip when compiled, and only they.
    assert " 2 skipped" in summary, summary
