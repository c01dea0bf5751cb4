"""Import ``ysync.updates`` from its Python sources even where a compiled build sits beside them.

``pip install`` compiles the codec with mypyc (setup.py) and an extension module wins over the
``.py`` next to it; the pure-Python codec, the fallback of a build that cannot compile, is
still what runs elsewhere, so tests and the benchmark load it on purpose with
:func:`use_sources` in a process of their own.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

PACKAGE = "ysync.updates"


class _SourcesOnly(MetaPathFinder):
    """Finds ``ysync.updates`` and its modules as ``.py`` files in one folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def find_spec(
        self, name: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if name == PACKAGE:
            return importlib.util.spec_from_file_location(
                name, self.folder / "__init__.py", submodule_search_locations=[str(self.folder)]
            )
        if name.startswith(PACKAGE + "."):
            source = self.folder / (name.removeprefix(PACKAGE + ".") + ".py")
            if source.is_file():
                return importlib.util.spec_from_file_location(name, source)
        return None


def use_sources() -> None:
    """From now on ``ysync.updates`` is imported from its ``.py`` files; call before any import."""
    if PACKAGE in sys.modules:
        raise RuntimeError(f"{PACKAGE} is already imported: call use_sources() first")
    spec = importlib.util.find_spec("ysync")
    assert spec is not None and spec.submodule_search_locations is not None
    folder = Path(next(iter(spec.submodule_search_locations))) / "updates"
    sys.meta_path.insert(0, _SourcesOnly(folder))
