"""The build of ysync.updates: compiled by mypyc as a whole, or pure Python as a whole.

``pip install`` compiles every module of ysync/updates when it can (setup.py); the pure-Python
codec is what a build without mypyc or a C compiler installs, so it is checked here too, in a
process that imports the sources (tests/updates_source.py).
"""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

import ysync.updates

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = Path(ysync.updates.__file__).parent
REBUILD = "rebuild: .venv/bin/pip install -e . (or scripts/install)"


def _is_extension(path: str) -> bool:
    return path.endswith(tuple(EXTENSION_SUFFIXES))


def test_every_module_runs_as_compiled_says() -> None:
    names = [m.name for m in pkgutil.iter_modules(ysync.updates.__path__)]
    assert "lib0" in names
    files = {"__init__": ysync.updates.__file__}
    for name in names:
        files[name] = importlib.import_module(f"ysync.updates.{name}").__file__ or ""
    compiled = ysync.updates.COMPILED
    mixed = {name: path for name, path in files.items() if _is_extension(path) != compiled}
    assert not mixed, f"COMPILED is {ysync.updates.COMPILED} but not for {mixed}; {REBUILD}"


@pytest.mark.skipif(not ysync.updates.COMPILED, reason="the codec runs as Python source")
def test_compiled_build_is_newer_than_its_sources() -> None:
    # An editable install leaves the extensions in the source tree, where they shadow any
    # later edit of a .py file until the next build.
    suffix = EXTENSION_SUFFIXES[0]
    stale = [
        source.name
        for source in sorted(PACKAGE.glob("*.py"))
        if not (built := source.with_name(source.stem + suffix)).exists()
        or built.stat().st_mtime < source.stat().st_mtime
    ]
    assert not stale, f"the compiled ysync.updates is older than {stale}; {REBUILD}"


_PURE_CHECK = """
import importlib
import pkgutil

import updates_source

updates_source.use_sources()
import ysync.updates
from interop.test_updates_support import check_against_yjs_outputs, load_corpus

assert not ysync.updates.COMPILED
files = [ysync.updates.__file__] + [
    importlib.import_module("ysync.updates." + m.name).__file__
    for m in pkgutil.iter_modules(ysync.updates.__path__)
]
assert all(f.endswith(".py") for f in files), files
cases = load_corpus()
for case in cases:
    check_against_yjs_outputs(case)
print(len(files), len(cases))
"""


def test_pure_python_codec_writes_the_bytes_yjs_writes() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _PURE_CHECK],
        cwd=ROOT / "tests",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    modules, cases = map(int, result.stdout.split())
    assert modules == len(list(PACKAGE.glob("*.py")))
    assert cases == 32


def _imported(path: Path) -> set[str]:
    """The top-level names of the modules ``path`` imports (absolute imports)."""
    import ast

    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_what_the_codec_imports_from_ysync_needs_only_the_standard_library() -> None:
    """mypyc compiles the codec in pip's isolated build environment, where only mypy and
    setuptools are installed: a ysync module the codec imports that imports a dependency
    (redis, say) fails the type check, and every fresh install gets the pure-Python codec."""
    outside = {name for path in PACKAGE.glob("*.py") for name in _imported(path)
               if name.startswith("ysync.") and not name.startswith("ysync.updates")}
    assert outside, "the codec imports no ysync module any more: drop this test"
    for module in sorted(outside):
        path = ROOT / (module.replace(".", "/") + ".py")
        third_party = {name for name in _imported(path) if name.split(".")[0] not in
                       {*sys.stdlib_module_names, "__future__", "ysync", "mypy_extensions"}}
        assert not third_party, f"{module} (imported by the codec) imports {third_party}"
