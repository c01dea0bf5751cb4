"""Installs the real npm packages the tests drive (yjs, y-websocket, lib0) into a cache folder.

The folder is ``$YSYNC_NODE_CACHE`` (default ``~/.cache/ysync-node``) plus a hash of
``tests/node/package.json``, so a changed package list installs afresh and an unchanged one is
installed once per machine. Node scripts of the tests live in ``tests/node/``; they find the
packages because they are copied next to the installed ``node_modules`` (ES modules ignore
``NODE_PATH``) and run from there: a folder per set of scripts, so that checkouts with other
scripts can share the cache. Another folder with its own ``package.json`` and scripts
(``tests/browser``) is installed the same way with ``install(folder)``.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

NODE_DIR = Path(__file__).parent / "node"


def node_available() -> bool:
    return shutil.which("node") is not None and shutil.which("npm") is not None


def install(folder: Path = NODE_DIR) -> Path:
    """Install (once) and return the folder holding ``node_modules`` and the test scripts.

    ``folder`` holds the ``package.json`` and the ``*.mjs`` scripts (default ``tests/node``).
    """
    manifest = (folder / "package.json").read_bytes()
    digest = hashlib.sha256(manifest).hexdigest()[:16]
    root = Path(os.environ.get("YSYNC_NODE_CACHE", Path.home() / ".cache" / "ysync-node"))
    target = root / digest
    target.mkdir(parents=True, exist_ok=True)
    with open(root / f"{digest}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "node_modules" / ".ysync-complete").exists():
            (target / "package.json").write_bytes(manifest)
            subprocess.run(
                ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=target,
                check=True,
                timeout=600,
            )
            (target / "node_modules" / ".ysync-complete").write_text("ok")
        # Scripts change more often than packages, and checkouts with other scripts may share
        # the cache: each set of scripts gets a folder of its own below the packages (Node finds
        # ../node_modules, and the link keeps node_dir / "node_modules" working).
        scripts = sorted(folder.glob("*.mjs"))
        script_digest = hashlib.sha256(
            b"".join(p.name.encode() + b"\0" + p.read_bytes() + b"\0" for p in scripts)
        ).hexdigest()[:16]
        own = target / "scripts" / script_digest
        if not (own / ".ysync-complete").exists():
            own.mkdir(parents=True, exist_ok=True)
            for script in scripts:
                shutil.copyfile(script, own / script.name)
            if not (own / "node_modules").exists():
                (own / "node_modules").symlink_to(target / "node_modules")
            (own / ".ysync-complete").write_text("ok")
    return own
