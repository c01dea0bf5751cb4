"""Compiles the update codec (every module of ``ysync/updates``) with mypyc, or installs it pure.

pyproject.toml holds the project; this file only adds the C extensions. ``pip install .`` and
``pip install -e .`` compile when mypyc (a build requirement) and a C compiler work, and fall
back to the pure-Python codec with a warning when they do not: a type error mypyc refuses, a
missing compiler, a failed compile. ``YSYNC_PURE_PYTHON=1`` skips compiling.

Extensions left in the source tree by an earlier editable build are removed first: a stale
``ysync/updates/*.so`` would shadow newer ``.py`` edits (or a module since deleted).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import BaseError, CCompilerError

ROOT = Path(__file__).resolve().parent
CODEC = "ysync/updates"
#: Suffixes of extension modules, for every interpreter (a stale one shadows its .py too).
EXTENSION_GLOBS = ("*.so", "*.pyd")


def _warn(message: str) -> None:
    print(f"ysync setup.py: {message}", file=sys.stderr, flush=True)


def _remove_stale_extensions() -> None:
    """Delete what earlier in-place builds left: codec extensions and mypyc's shared library."""
    for pattern in EXTENSION_GLOBS:
        for path in [*(ROOT / CODEC).glob(pattern), *ROOT.glob(f"*__mypyc*{pattern[1:]}")]:
            path.unlink()


def _codec_extensions() -> list[Any]:
    if os.environ.get("YSYNC_PURE_PYTHON", "") not in ("", "0"):
        _warn("YSYNC_PURE_PYTHON is set: installing the pure-Python codec")
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        _warn("mypyc is not installed: installing the pure-Python codec")
        return []
    # relative paths: pip runs this file from the project root, and mypyc names modules by them
    paths = sorted(str(p.relative_to(ROOT)) for p in (ROOT / CODEC).glob("*.py"))
    try:
        extensions: list[Any] = mypycify(paths, opt_level="3")
    except (SystemExit, Exception) as exc:  # mypyc reports type errors with sys.exit
        _warn(f"mypyc cannot compile {CODEC} ({exc!r}): installing the pure-Python codec")
        return []
    return extensions


class OptionalBuildExt(build_ext):
    """build_ext that installs pure Python when compiling the codec fails."""

    def run(self) -> None:
        try:
            super().run()
        except (CCompilerError, BaseError, OSError) as exc:
            _warn(f"compiling {CODEC} failed ({exc}): installing the pure-Python codec")
            # a half-built set (shims without the shared library) must not be installed
            for ext in self.extensions:
                built = Path(self.build_lib) / self.get_ext_filename(ext.name)
                built.unlink(missing_ok=True)
            self.extensions = []


os.chdir(ROOT)
_remove_stale_extensions()
setup(ext_modules=_codec_extensions(), cmdclass={"build_ext": OptionalBuildExt})
