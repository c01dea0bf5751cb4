"""A real Redis Cluster of a test's own: ``masters`` shards of one master and ``replicas``
replicas each, every node a Debian ``/usr/bin/redis-server`` (7.0) on a free 127.0.0.1 port, in
a folder of its own under the test's folder (``redis.conf``, ``nodes.conf``, ``node.log``).

The test moves slots between masters, fails masters over (gracefully or by SIGKILL) and starts
killed nodes again, while its clients (``redis.asyncio.cluster.RedisCluster``) keep working.
Every wait has a deadline scaled by ``seconds()``; a wait that times out says what it waited for,
what was still wrong, and each node's CLUSTER INFO and log tail.

The nodes keep nothing on disk but ``nodes.conf``: no RDB snapshots, no append-only file, and
replicas load a full sync straight from the socket. A master killed and started again before a
replica took over comes back empty, as a real one without persistence does.
"""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from conftest import seconds

REDIS_SERVER = Path("/usr/bin/redis-server")
REDIS_CLI = Path("/usr/bin/redis-cli")
HOST = "127.0.0.1"
SLOTS = 16384
#: flags of a CLUSTER NODES line that mean the node cannot serve
_DOWN_FLAGS = frozenset({"fail", "fail?", "noaddr", "handshake"})


def require_binaries() -> None:
    """Skip the calling test when Debian's redis-server or redis-cli is not installed."""
    for path in (REDIS_SERVER, REDIS_CLI):
        if not path.exists():
            pytest.skip(f"a Redis Cluster needs {path} (apt-get install redis-server redis-tools)")


@dataclass(frozen=True)
class NodeLine:
    """One line of CLUSTER NODES: a node as one member of the cluster sees it."""

    node_id: str
    port: int
    flags: frozenset[str]
    #: the id of the master it replicates, None for a master
    master_id: str | None
    #: inclusive (first, last) slot ranges it serves; migrating/importing marks are left out
    slot_ranges: tuple[tuple[int, int], ...]

    @property
    def is_master(self) -> bool:
        return "master" in self.flags

    @property
    def is_down(self) -> bool:
        return bool(self.flags & _DOWN_FLAGS)

    def owns(self, slot: int) -> bool:
        return any(first <= slot <= last for first, last in self.slot_ranges)


def parse_cluster_nodes(text: str) -> list[NodeLine]:
    """The nodes of a CLUSTER NODES reply
    (``<id> <ip:port@cport[,host]> <flags> <master> <ping> <pong> <epoch> <link> <slot>...``)."""
    lines = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 8:
            continue
        address = fields[1].split(",", 1)[0].split("@", 1)[0]
        ranges = []
        for item in fields[8:]:
            if item.startswith("["):  # [slot->-id] / [slot-<-id]: a migration in progress
                continue
            first, _, last = item.partition("-")
            ranges.append((int(first), int(last or first)))
        lines.append(NodeLine(
            node_id=fields[0], port=int(address.rsplit(":", 1)[1]),
            flags=frozenset(fields[2].split(",")),
            master_id=None if fields[3] == "-" else fields[3], slot_ranges=tuple(ranges)))
    return lines


def _fields(text: str) -> dict[str, str]:
    """``key:value`` lines (CLUSTER INFO) as a dict."""
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {key.strip(): value.strip() for key, value in pairs}


def _text(reply: Any) -> str:
    return reply.decode() if isinstance(reply, bytes) else str(reply)


def _free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 right now (all bound at once, then freed)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sockets.append(sock)
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class ClusterNodeProcess:
    """One ``redis-server`` of the cluster: its folder, its process and an admin connection."""

    def __init__(self, folder: Path, port: int, bus_port: int, settings: dict[str, str]) -> None:
        self.port = port
        self.url = f"redis://{HOST}:{port}"
        self.folder = folder
        self.log = folder / "node.log"
        self._output = folder / "output.log"  # what it prints before its log file is open
        self._config = folder / "redis.conf"
        self._settings = {"port": str(port), "cluster-port": str(bus_port), "bind": HOST,
                          "dir": str(folder), "logfile": str(self.log), **settings}
        self._proc: asyncio.subprocess.Process | None = None
        # no retries: a node the test killed must fail a command at once, not after backoffs
        self.admin = aioredis.Redis(host=HOST, port=port, socket_timeout=seconds(5),
                                    socket_connect_timeout=seconds(2),
                                    retry=Retry(NoBackoff(), 0))

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    def _prepare(self) -> IO[bytes]:
        """Write ``redis.conf`` (once) and open the file for the process's output."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if not self._config.exists():
            self._config.write_text("".join(f"{key} {value}\n"
                                            for key, value in self._settings.items()))
        return self._output.open("ab")

    async def start(self) -> None:
        """Start the process (with its ``nodes.conf`` if it has one) and wait until it answers."""
        output = self._prepare()
        try:
            self._proc = await asyncio.create_subprocess_exec(
                str(REDIS_SERVER), str(self._config), stdin=asyncio.subprocess.DEVNULL,
                stdout=output, stderr=output)
        finally:
            output.close()
        deadline = asyncio.get_running_loop().time() + seconds(10)
        while True:
            try:
                if await self.admin.ping():
                    return
            except (aioredis.RedisError, OSError) as exc:
                problem = repr(exc)
            if not self.running:
                raise AssertionError(f"redis-server on port {self.port} exited "
                                     f"({self.exit_status()}):\n{self.log_tail()}")
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"redis-server on port {self.port} does not answer PING "
                                     f"({problem}):\n{self.log_tail()}")
            await asyncio.sleep(0.05)

    async def kill(self) -> None:
        """SIGKILL the process and wait for it to exit (nothing when it is not running)."""
        if self._proc is None or self._proc.returncode is not None:
            return
        self._proc.send_signal(signal.SIGKILL)
        await asyncio.wait_for(self._proc.wait(), seconds(10))

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` (SIGSTOP freezes the node, replication included; SIGCONT thaws it)."""
        assert self._proc is not None and self._proc.returncode is None, "not running"
        self._proc.send_signal(sig)

    def exit_status(self) -> str:
        if self._proc is None:
            return "not started"
        return "running" if self._proc.returncode is None else f"exit {self._proc.returncode}"

    async def command(self, *args: Any) -> Any:
        """One command on this node, its reply as redis-py gives it (bytes for text replies)."""
        # redis-py leaves execute_command unannotated
        return await self.admin.execute_command(*args)  # type: ignore[no-untyped-call]

    async def cluster_nodes(self) -> list[NodeLine]:
        return parse_cluster_nodes(_text(await self.command("CLUSTER", "NODES")))

    async def cluster_info(self) -> dict[str, str]:
        return _fields(_text(await self.command("CLUSTER", "INFO")))

    async def node_id(self) -> str:
        return _text(await self.command("CLUSTER", "MYID"))

    def log_tail(self, lines: int = 15) -> str:
        parts = []
        for path in (self._output, self.log):
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"  {path.name}:\n" + "\n".join(f"    {line}" for line in tail))
        return "\n".join(parts) or "  (no output)"

    async def close(self) -> None:
        await self.admin.aclose()


class RedisClusterProcesses:
    """A Redis Cluster of ``masters`` masters with ``replicas`` replicas each, on 127.0.0.1.

    ``async with RedisClusterProcesses(tmp_path) as cluster:`` starts it and stops it; the
    nodes' ports are in ``ports`` (``urls``), ``seed_url`` is the master that owned slot 0 at
    start. Timeouts are in seconds, scaled by ``seconds()``.

    Settings: ``cluster-node-timeout`` is ``node_timeout_ms``; ``cluster-replica-validity-factor
    0`` (a replica takes over however long it was cut off); ``cluster-allow-replica-migration
    no`` (replicas stay with the master they were given, so a test knows who follows whom).
    ``cluster-require-full-coverage`` is ``require_full_coverage``, False by default (Redis's
    default is yes): while a shard has no master, only its slots fail and the other masters keep
    serving theirs; with True, every node answers CLUSTERDOWN until a replica takes over.
    """

    def __init__(self, workdir: Path, *, masters: int = 3, replicas: int = 1,
                 node_timeout_ms: int = 1000, require_full_coverage: bool = False) -> None:
        if masters < 3:
            raise ValueError("redis-cli --cluster create needs at least 3 masters")
        self._workdir = workdir
        self._replicas = replicas
        self._node_timeout_ms = node_timeout_ms
        settings = {
            "cluster-enabled": "yes", "cluster-config-file": "nodes.conf",
            "cluster-node-timeout": str(node_timeout_ms),
            "cluster-replica-validity-factor": "0",
            "cluster-allow-replica-migration": "no",
            "cluster-require-full-coverage": "yes" if require_full_coverage else "no",
            "appendonly": "no", "save": '""',
            "repl-diskless-sync": "yes", "repl-diskless-sync-delay": "0",
            "repl-diskless-load": "swapdb",
            "loglevel": "notice", "daemonize": "no",
        }
        count = masters * (1 + replicas)
        ports = _free_ports(2 * count)
        self._nodes = {
            port: ClusterNodeProcess(workdir / f"node-{port}", port, bus_port, settings)
            for port, bus_port in zip(ports[:count], ports[count:], strict=True)}
        self.ports = list(self._nodes)
        self.urls = [node.url for node in self._nodes.values()]
        self.seed_url = self.urls[0]

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop()

    def node(self, port: int) -> ClusterNodeProcess:
        """The node on ``port``."""
        return self._nodes[port]

    def client(self, **kwargs: Any) -> RedisCluster:
        """A ``RedisCluster`` client that knows every node as a startup node (so it finds the
        cluster with any of them down); the caller closes it (``aclose``)."""
        return RedisCluster(startup_nodes=[ClusterNode(HOST, port) for port in self.ports],
                            **kwargs)

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every node, create the cluster with ``redis-cli --cluster create`` and wait
        until it is healthy (:meth:`wait_healthy`). Skips the test without the binaries."""
        require_binaries()
        await asyncio.gather(*(node.start() for node in self._nodes.values()))
        proc = await asyncio.create_subprocess_exec(
            str(REDIS_CLI), "--cluster", "create", *(f"{HOST}:{port}" for port in self.ports),
            "--cluster-replicas", str(self._replicas), "--cluster-yes",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
        try:
            output, _ = await asyncio.wait_for(proc.communicate(), seconds(60))
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise AssertionError("redis-cli --cluster create did not finish in "
                                 f"{seconds(60):.0f}s\n{await self.describe()}") from None
        (self._workdir / "cluster-create.log").write_bytes(output)
        if proc.returncode != 0:
            raise AssertionError(f"redis-cli --cluster create failed ({proc.returncode}):\n"
                                 f"{output.decode(errors='replace')}")
        await self.wait_healthy(30)
        self.seed_url = self._nodes[await self.slot_owner(0)].url

    async def restart(self, port: int) -> None:
        """Start the node on ``port`` again (SIGKILLed first if it runs) with its
        ``nodes.conf`` and wait until the cluster is healthy with it: a master that a replica
        replaced comes back as that replica's replica."""
        node = self._nodes[port]
        await node.kill()
        await node.start()
        await self.wait_healthy(30)

    async def stop(self) -> None:
        """SIGKILL every node and wait for it to exit; close the admin connections."""
        try:
            await asyncio.gather(*(node.kill() for node in self._nodes.values()))
        finally:
            for node in self._nodes.values():
                await node.close()

    # -- what the cluster says --------------------------------------------------------------

    def _running(self) -> list[ClusterNodeProcess]:
        return [node for node in self._nodes.values() if node.running]

    async def _view(self) -> list[NodeLine]:
        """CLUSTER NODES from the first running node that answers, down nodes left out."""
        problems = []
        for node in self._running():
            try:
                lines = await node.cluster_nodes()
            except (aioredis.RedisError, OSError) as exc:
                problems.append(f"{node.port}: {exc!r}")
                continue
            running = {n.port for n in self._running()}
            return [line for line in lines if line.port in running and not line.is_down]
        raise AssertionError(f"no node of the cluster answers CLUSTER NODES: {problems}")

    async def masters(self) -> list[int]:
        """Ports of the masters, as the cluster says, by the first slot they own."""
        lines = [line for line in await self._view() if line.is_master]
        lines.sort(key=lambda line: (line.slot_ranges[0][0] if line.slot_ranges else SLOTS,
                                     line.port))
        return [line.port for line in lines]

    async def slot_owner(self, slot: int) -> int:
        """Port of the master that owns ``slot``, as the cluster says."""
        for line in await self._view():
            if line.is_master and line.owns(slot):
                return line.port
        raise AssertionError(f"no running master owns slot {slot}\n{await self.describe()}")

    async def replicas_of(self, master_port: int) -> list[int]:
        """Ports of the running replicas of the master on ``master_port``."""
        view = await self._view()
        ids = [line.node_id for line in view if line.port == master_port]
        return sorted(line.port for line in view if ids and line.master_id == ids[0])

    # -- waiting ----------------------------------------------------------------------------

    async def _poll(self, check: Callable[[], Awaitable[str | None]], within: float,
                    what: str) -> None:
        """Call ``check`` until it returns None (no problem left); fail after ``within``
        (scaled) seconds with its last problem and :meth:`describe`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds(within)
        while True:
            problem = await check()
            if problem is None:
                return
            if loop.time() > deadline:
                raise AssertionError(f"timed out after {seconds(within):.1f}s waiting for "
                                     f"{what}: {problem}\n{await self.describe()}")
            await asyncio.sleep(0.05)

    async def wait_healthy(self, within: float) -> None:
        """Wait until every running node says cluster_state:ok with all 16384 slots served,
        they all agree on who is master of which slots and who replicates whom, none of them
        sees a running node as failing, and every replica's link to its master is up."""
        await self._poll(self._health_problem, within, "a healthy cluster")

    async def _health_problem(self) -> str | None:
        running = self._running()
        ports = {node.port for node in running}
        layouts: dict[int, list[tuple[int, bool, int | None, tuple[tuple[int, int], ...]]]] = {}
        for node in running:
            try:
                info = await node.cluster_info()
                lines = await node.cluster_nodes()
            except (aioredis.RedisError, OSError) as exc:
                return f"node {node.port} does not answer: {exc!r}"
            for field, wanted in (("cluster_state", "ok"), ("cluster_slots_assigned", str(SLOTS)),
                                  ("cluster_slots_ok", str(SLOTS)),
                                  ("cluster_known_nodes", str(len(self._nodes)))):
                if info.get(field) != wanted:
                    return f"node {node.port} says {field}:{info.get(field)}"
            port_of = {line.node_id: line.port for line in lines}
            for line in lines:
                if line.port in ports and line.is_down:
                    return f"node {node.port} sees running node {line.port} as {line.flags}"
            layouts[node.port] = sorted(
                (line.port, line.is_master, port_of.get(line.master_id or ""), line.slot_ranges)
                for line in lines if line.port in ports)
            myself = next(line for line in lines if "myself" in line.flags)
            if not myself.is_master:
                replication = await node.admin.info("replication")
                if replication.get("master_link_status") != "up":
                    return (f"replica {node.port}: master_link_status:"
                            f"{replication.get('master_link_status')}")
        first, *others = layouts.items()
        for port, layout in others:
            if layout != first[1]:
                return f"nodes {first[0]} and {port} disagree: {first[1]} / {layout}"
        served = sum(last - start + 1 for _, is_master, _, ranges in first[1] if is_master
                     for start, last in ranges)
        if served != SLOTS:
            return f"running masters serve {served} of {SLOTS} slots: {first[1]}"
        return None

    async def wait_replicated(self, within: float = 10) -> None:
        """Wait until every replica has applied everything its master had written when the
        wait began, so that killing a master then loses nothing."""
        wanted: dict[int, int] = {}  # replica port -> its master's offset at the start
        for master in await self.masters():
            info = await self._nodes[master].admin.info("replication")
            for replica in await self.replicas_of(master):
                wanted[replica] = int(info["master_repl_offset"])

        async def lagging() -> str | None:
            # the replica's own offset: the master only learns it from an ACK once a second
            for port, offset in wanted.items():
                info = await self._nodes[port].admin.info("replication")
                if int(info.get("slave_repl_offset", -1)) < offset:
                    return (f"replica {port} at offset {info.get('slave_repl_offset')}, its "
                            f"master was at {offset}")
            return None

        await self._poll(lagging, within, "replicas to catch up")

    async def describe(self) -> str:
        """Every node: its process, CLUSTER INFO (the state lines), role and log tail."""
        parts = []
        for node in self._nodes.values():
            head = f"node {HOST}:{node.port} ({node.exit_status()}, {node.folder})"
            if node.running:
                try:
                    info = await asyncio.wait_for(node.cluster_info(), seconds(2))
                    replication = await asyncio.wait_for(node.admin.info("replication"),
                                                         seconds(2))
                    head += ("\n  " + " ".join(f"{key}:{value}" for key, value in info.items()
                                               if key.startswith(("cluster_state",
                                                                  "cluster_slots",
                                                                  "cluster_known",
                                                                  "cluster_current_epoch")))
                             + f" role:{replication.get('role')}"
                             + f" master_link_status:{replication.get('master_link_status')}")
                except (aioredis.RedisError, OSError, TimeoutError) as exc:
                    head += f"\n  CLUSTER INFO failed: {exc!r}"
            parts.append(f"{head}\n{node.log_tail()}")
        return "\n".join(parts)

    # -- changes ----------------------------------------------------------------------------

    async def migrate_slot(self, slot: int, to_port: int, *, batch: int = 10,
                           pause: float = 0.0) -> int:
        """Move ``slot`` to the master on ``to_port`` while clients keep using it: IMPORTING on
        the target, MIGRATING on the source, MIGRATE ``batch`` keys at a time (``pause``
        seconds between batches), then SETSLOT NODE on the target, the source and every other
        master; returns once every running node names the target. Returns the number of keys
        moved (0 when the target owns the slot already)."""
        source_port = await self.slot_owner(slot)
        if source_port == to_port:
            return 0
        source, target = self._nodes[source_port], self._nodes[to_port]
        source_id, target_id = await source.node_id(), await target.node_id()
        await target.command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        await source.command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        # keys new to the slot now go to the target (ASK): the source's keys only ever shrink
        moved = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds(60)
        while keys := await source.command("CLUSTER", "GETKEYSINSLOT", slot, batch):
            reply = _text(await source.command("MIGRATE", HOST, to_port, "", 0,
                                               int(seconds(5) * 1000), "KEYS", *keys))
            if reply != "NOKEY":  # NOKEY: they all expired or were deleted meanwhile
                moved += len(keys)
            if loop.time() > deadline:
                raise AssertionError(f"slot {slot} still has keys on {source_port} after "
                                     f"{seconds(60):.0f}s ({moved} moved)")
            if pause:
                await asyncio.sleep(pause)
        others = [self._nodes[port] for port in await self.masters()
                  if port not in (source_port, to_port)]
        for node in (target, source, *others):
            await node.command("CLUSTER", "SETSLOT", slot, "NODE", target_id)

        async def not_everywhere() -> str | None:
            for node in self._running():
                owners = [line.port for line in await node.cluster_nodes()
                          if line.is_master and line.owns(slot)]
                if owners != [to_port]:
                    return f"node {node.port} says slot {slot} is served by {owners}"
            return None

        await self._poll(not_everywhere, 10, f"every node to name {to_port} owner of {slot}")
        return moved

    async def failover(self, master_port: int, *, kill: bool) -> int:
        """Make a replica of the master on ``master_port`` its master; returns its port.

        ``kill=False``: CLUSTER FAILOVER on the first replica (the master hands over after the
        replica caught up: nothing is lost); the old master becomes its replica. ``kill=True``:
        SIGKILL the master; a replica takes over once the others agree it failed (about twice
        ``node_timeout_ms``); what the replica had not received is lost (see
        :meth:`wait_replicated`). :meth:`restart` brings the killed node back as a replica.
        Both wait until the cluster is healthy again."""
        replicas = await self.replicas_of(master_port)
        if not replicas:
            raise AssertionError(f"master {master_port} has no replica to fail over to\n"
                                 f"{await self.describe()}")
        if kill:
            await self._nodes[master_port].kill()
        else:
            await self._nodes[replicas[0]].command("CLUSTER", "FAILOVER")
        candidates = replicas if kill else replicas[:1]
        promoted: list[int] = []

        async def not_promoted() -> str | None:
            for port in candidates:
                try:
                    lines = await self._nodes[port].cluster_nodes()
                except (aioredis.RedisError, OSError) as exc:
                    return f"replica {port} does not answer: {exc!r}"
                if any("myself" in line.flags and line.is_master for line in lines):
                    promoted.append(port)
                    return None
            return f"none of {candidates} is master yet"

        await self._poll(not_promoted, 10 + 4 * self._node_timeout_ms / 1000,
                         f"a replica of {master_port} to take over")
        await self.wait_healthy(30)
        return promoted[0]

