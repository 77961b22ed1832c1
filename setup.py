"""The optional compiled core (issue 13): everything else is declared in pyproject.toml.

``SMARTSWITCH_MYPYC=1 pip install .`` (or ``make dist SMARTSWITCH_MYPYC=1``) compiles the
strictly typed SIP core and B2BUA engine (:data:`COMPILED`) with mypyc, which ships with mypy:
SIP messages parse and serialise about 2.7 times as fast, a lab node spends 17-25 % less CPU per
call and a billing node 10-13 % less (bench/README.md; compiling routing/ and billing/ as well
did not pay). The ``.py`` sources are
installed beside the extensions, and Python imports an extension in preference to its source.
Without the switch, or without mypyc or a C compiler, the package is pure Python, as before:
the build says why and goes on.

With build isolation (pip's default), the switch adds mypy to the build's requirements;
``--no-build-isolation`` uses the environment's mypy instead.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, ExecError, PlatformError

HERE = Path(__file__).resolve().parent

# Modules compiled with mypyc: strict under mypy, on the per-message path. sip/sdp.py is left
# out: mypyc rejects its dataclasses deriving from a plain base class with annotations
# ("non-default argument 'kind' follows default argument" at import).
COMPILED = sorted(
    str(path.relative_to(HERE))
    for package in ("sip", "b2bua")
    for path in (HERE / "src" / "smartswitch" / package).glob("*.py")
    if path.name != "sdp.py"
)


def _say(text: str) -> None:
    print(f"smartswitch: {text}", file=sys.stderr)


class OptionalBuildExt(build_ext):
    """Build the extensions if the compiler can; otherwise the pure-Python package stands."""

    def run(self) -> None:
        try:
            super().run()
        except (CCompilerError, ExecError, PlatformError) as exc:
            _say(f"compiled core not built ({exc}): pure Python")

    def build_extension(self, ext: Any) -> None:
        try:
            super().build_extension(ext)
        except (CCompilerError, ExecError, PlatformError) as exc:
            _say(f"{ext.name} not compiled ({exc}): pure Python")


def _compiled_core() -> dict[str, Any]:
    if os.environ.get("SMARTSWITCH_MYPYC") != "1":
        return {}
    try:
        from mypyc.build import mypycify
    except ImportError:
        # Also the first pass of an isolated build, which collects setup_requires.
        _say("SMARTSWITCH_MYPYC=1 but mypyc is not installed: pure Python")
        return {"setup_requires": ["mypy>=1.10"]}
    # setuptools runs this file from its own directory: the paths and pyproject.toml's mypy
    # settings are found from there.
    extensions = mypycify(COMPILED, opt_level="3")
    return {"ext_modules": extensions, "cmdclass": {"build_ext": OptionalBuildExt}}


setup(**_compiled_core())
