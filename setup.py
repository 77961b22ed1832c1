"""The compiled core (issue 13): everything else is declared in pyproject.toml.

An install from a wheel or a source tree (``pip install .``, ``make dist``) compiles the strictly
typed SIP core and B2BUA engine (:data:`COMPILED`) with mypyc, which ships with mypy: SIP messages
parse and serialise about 2.7 times as fast, a lab node spends 17-25 % less CPU per call and a
billing node 10-13 % less (bench/README.md; compiling routing/ and billing/ as well did not pay).
The ``.py`` sources are installed beside the extensions, and Python imports an extension in
preference to its source. Where mypyc or a C compiler is missing, the package is pure Python:
the build says why and goes on.

Pure Python as well: an editable install (``pip install -e``, what ``make venv`` does), whose
compiled modules would sit beside the sources and hide every later edit of them, and any build
with ``SMARTSWITCH_MYPYC=0``. ``SMARTSWITCH_MYPYC=1`` compiles whatever the command.

With build isolation (pip's default), the build adds mypy to its own requirements;
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

# Modules compiled with mypyc: strict under mypy, on the per-message path.
COMPILED = sorted(
    str(path.relative_to(HERE))
    for package in ("sip", "b2bua")
    for path in (HERE / "src" / "smartswitch" / package).glob("*.py")
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


# The setup.py commands that build modules. The others (egg_info, dist_info: the metadata passes
# of a PEP 517 build) only collect requirements, and type-checking the core for them is wasted.
_BUILDS = {"build", "build_ext", "bdist_wheel", "bdist", "install"}
# An editable install's build (PEP 660), and the legacy one.
_EDITABLE = {"editable_wheel", "develop"}


def compile_wanted(argv: list[str], environ: dict[str, str] | os._Environ[str]) -> str | None:
    """Why this run of setup.py leaves the core pure, or None if it compiles it."""
    switch = environ.get("SMARTSWITCH_MYPYC", "")
    if switch == "1":
        return None
    if switch == "0":
        return "SMARTSWITCH_MYPYC=0"
    if _EDITABLE & set(argv):
        return "an editable install runs its sources"
    return None


def _compiled_core() -> dict[str, Any]:
    # Metadata passes (egg_info, dist_info) neither say anything nor compile.
    builds = bool((_BUILDS | _EDITABLE) & set(sys.argv))
    reason = compile_wanted(sys.argv, os.environ)
    if reason is not None:
        if builds:
            _say(f"{reason}: pure Python")
        return {}
    try:
        from mypyc.build import mypycify
    except ImportError:
        if not builds:
            # The first pass of an isolated build, which collects setup_requires.
            return {"setup_requires": ["mypy>=1.10"]}
        _say("mypyc is not installed: pure Python")
        return {}
    if not builds:
        return {}
    # setuptools runs this file from its own directory: the paths and pyproject.toml's mypy
    # settings are found from there.
    extensions = mypycify(COMPILED, opt_level="3")
    return {"ext_modules": extensions, "cmdclass": {"build_ext": OptionalBuildExt}}


if __name__ == "__main__":
    setup(**_compiled_core())
