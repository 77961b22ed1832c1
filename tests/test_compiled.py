"""The wheel an install builds carries the compiled core, and the compiled core passes the SIP and
B2BUA tests; without it (``SMARTSWITCH_MYPYC=0``, an editable install) the package is pure Python.

The rest of the suite runs the pure-Python modules of the editable install. The first test takes
the wheel built as ``pip install .`` builds it (build isolation, mypyc, then the C compiler, in a
copy of the project: ``e2e/wheel.py``, once per run: tests/conftest.py) and runs ``tests/sip`` and ``tests/b2bua`` against it in a child
process: about a minute of CPU, most of it the C compiler's. It is skipped where a C compiler
(``gcc``, scripts/install-system-deps.sh) or Python's headers are missing: there the install is
pure Python, which the other tests check.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from types import ModuleType

import pytest

from e2e.wheel import ROOT, Installed, build_wheel


def _compiler() -> str | None:
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(cc)


def _setup_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("smartswitch_setup", ROOT / "setup.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # setup() itself runs only as __main__
    return module


_setup = _setup_module()


@pytest.mark.skipif(
    _compiler() is None or not (Path(sysconfig.get_paths()["include"]) / "Python.h").exists(),
    reason="no C compiler or no Python headers: the install is pure Python",
)
def test_the_installed_wheel_is_compiled_and_passes_the_sip_and_b2bua_tests(
    built_wheel: Installed,
) -> None:
    installed = built_wheel
    python_tag = f"-cp{sys.version_info.major}{sys.version_info.minor}-"
    assert python_tag in installed.wheel.name, installed.wheel.name
    # The strictly typed SIP core and B2BUA engine were compiled: a silent fall-back to Python
    # would pass below.
    src = ROOT / "src"
    expected = {
        f"smartswitch.{package}.{path.stem}"
        for package in ("sip", "b2bua")
        for path in (src / "smartswitch" / package).glob("*.py")
    }
    assert installed.compiled == expected, installed.log[-4000:]

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
        env={**os.environ, "PYTHONPATH": str(installed.site)},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    summary = tests.stdout.strip().splitlines()[-1] if tests.stdout.strip() else ""
    assert tests.returncode == 0, tests.stdout[-6000:] + tests.stderr[-2000:]
    # The two tests that patch module globals skip when compiled, and only they.
    assert " 2 skipped" in summary, summary


def test_switched_off_the_wheel_is_pure_python(tmp_path: Path) -> None:
    installed = build_wheel(tmp_path, switch="0")
    assert installed.wheel.name.endswith("-py3-none-any.whl"), installed.wheel.name
    assert installed.compiled == frozenset()
    assert "SMARTSWITCH_MYPYC=0: pure Python" in installed.log


@pytest.mark.parametrize(
    ("argv", "switch", "pure"),
    [
        (["setup.py", "bdist_wheel"], None, False),
        (["setup.py", "build_ext", "--inplace"], None, False),
        (["setup.py", "editable_wheel", "--dist-dir", "d"], None, True),
        (["setup.py", "develop"], None, True),
        (["setup.py", "bdist_wheel"], "0", True),
        (["setup.py", "editable_wheel"], "1", False),
    ],
)
def test_setup_compiles_unless_editable_or_switched_off(
    argv: list[str], switch: str | None, pure: bool
) -> None:
    environ = {} if switch is None else {"SMARTSWITCH_MYPYC": switch}
    reason = _setup.compile_wanted(argv, environ)
    assert (reason is not None) == pure, reason
