"""The repository stands alone: nothing in it points into a ``shared`` folder beside it.

A clone has no such folder. The one exception is a locator of the y-redis peer
(``peers/y-redis-...``), which is optional by design. The folders are walked directly, so the
check works without git (and also sees files not committed yet).
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHECKED = ("README.md", "docs", "tests", "ysync", "workers", "scripts")
#: Generated or installed folders: not the project's text.
SKIPPED_DIRS = {"node_modules", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache",
                ".hypothesis"}
# spelled in pieces so that this file does not match itself
FORBIDDEN = ("../" + "shared/", "/work/" + "shared/")
ALLOWED_LINE = "peers/y-redis"


def _files() -> list[Path]:
    files: list[Path] = []
    for name in CHECKED:
        top = ROOT / name
        if top.is_file():
            files.append(top)
            continue
        for path in sorted(top.rglob("*")):
            relative = path.relative_to(ROOT)
            if path.is_file() and not SKIPPED_DIRS.intersection(relative.parts):
                files.append(path)
    return [path for path in files if path.resolve() != Path(__file__).resolve()]


def _offending_lines(path: Path) -> list[str]:
    text = path.read_bytes().decode("utf-8", errors="replace")
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        if any(pattern in line for pattern in FORBIDDEN) and ALLOWED_LINE not in line:
            found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    return found


def test_the_checked_folders_are_there() -> None:
    files = _files()
    assert ROOT / "README.md" in files
    assert ROOT / "ysync" / "streams.py" in files


def test_no_reference_outside_the_repository() -> None:
    offending = [line for path in _files() for line in _offending_lines(path)]
    assert offending == [], "references to a folder beside the repository:\n" + "\n".join(
        offending)
