#!/usr/bin/env python3
"""Load benchmark: ysync side by side with the JavaScript y-redis 0.1.6 server and the
reference Node y-websocket server.

Each scenario runs against each server in turn, in one run, on one machine: the script starts
the server on a free loopback port, drives it with many raw-protocol clients written in Node
(``scripts/load/clients.mjs``), samples the processes (CPU from utime+stime in /proc/<pid>/stat
over the measured window, apart for the server, its worker, Redis and the permission endpoint;
the server's RSS) and prints a table per scenario: every server, and ysync's ratio to each.

Scenarios (``docs/benchmarks.md`` says what each one measures):
  fanout     1 writer -> N observers in one room, R updates/s            (brief A)
  rooms      M rooms x K clients, every client writes R updates/s        (brief B)
  awareness  M rooms x K clients, every client updates its awareness at R Hz
  idle       N idle connections: memory per connection, connections/s    (brief C)
  join       N clients join a ~5 MB document at once                      (brief D)

Servers: ``ysync`` (``python -m ysync serve`` and ``ysync-worker``), ``yredis`` (y-redis 0.1.6's
``bin/server.js`` and ``bin/worker.js``, from ``../shared/peers/y-redis-0.1.6``; left out with a
message when it is not there) - both on one Redis, each on a PostgreSQL database of its own
(``--storage``), both with auth on (one key pair, one permission endpoint: ``--no-auth`` runs
ysync without) - and ``peer`` (y-websocket 1.5.4 ``bin/server.js``: one in-memory Y.Doc per
room, installed with npm into ``~/.cache/ysync-bench-node``). Examples::

    .venv/bin/python scripts/load.py --redis private      # everything, ~10 minutes
    .venv/bin/python scripts/load.py --quick              # smoke run, ~2 minutes
    .venv/bin/python scripts/load.py fanout --observers 1000 --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

LOAD_DIR = Path(__file__).resolve().parent / "load"
sys.path.insert(0, str(LOAD_DIR))

from bench_report import LABELS, REFERENCE, SERVERS, median_of, ratios, table  # noqa: E402
from bench_sampling import (  # noqa: E402
    Probe,
    PySpy,
    RedisCpu,
    cpu_seconds,
    machine_info,
    wait_quiet,
    window,
)
from bench_servers import (  # noqa: E402
    Server,
    baseline_checkout,
    delete_prefix,
    install_clients,
    install_peer,
    private_redis,
    redis_answers,
    start_peer,
    start_yredis,
    start_ysync,
)
from bench_stack import Auth, find_postgres, fresh_database, locate_yredis  # noqa: E402

SCENARIOS = ("fanout", "rooms", "awareness", "idle", "join")
MB = 1_000_000


@dataclass
class Setup:
    """What every run of one invocation shares."""

    node_dir: Path
    redis_url: str
    redis_cpu: RedisCpu | None = None
    auth: Auth | None = None
    postgres: str | None = None  #: admin URL; None: memory storage and no workers
    peer_js: Path | None = None
    yredis_dir: Path | None = None
    baseline: Path | None = None
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        """Say it now, and in the report."""
        print(f"!! {text}", flush=True)
        self.notes.append(text)

    def settings(self, database: str | None) -> dict[str, str]:
        """Environment of a Redis server (ysync, y-redis) and its worker."""
        out = self.auth.settings() if self.auth is not None else {}
        if database is not None:
            out["POSTGRES"] = database
        return out

    def describe(self) -> str:
        storage = ("PostgreSQL (a fresh database per server run), a separate worker each"
                   if self.postgres else "memory storage, no workers")
        auth = ("auth on (one key pair, one permission endpoint, a token per client)"
                if self.auth else "auth off")
        cpu = self.redis_cpu.source if self.redis_cpu else "-"
        return f"{auth}; {storage}; Redis {self.redis_url} (CPU from {cpu})"


# --- running the clients -------------------------------------------------------------------------


def run_clients(node_dir: Path, config: dict[str, Any], workdir: Path,
                on_checkpoint: Callable[[str, dict[str, Any]], None]) -> dict[str, Any]:
    """Run clients.mjs for one scenario; call ``on_checkpoint`` at each of its checkpoints."""
    log_path = workdir / f"clients-{config['scenario']}-{uuid.uuid4().hex[:6]}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(["node", "ysync-bench-clients.mjs", json.dumps(config)],
                                cwd=node_dir, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=log, text=True)
    watchdog = threading.Timer(config["deadline_s"] + 30, proc.kill)
    watchdog.start()
    result: dict[str, Any] | None = None
    error = ""
    try:
        assert proc.stdout is not None and proc.stdin is not None
        for line in proc.stdout:
            event = json.loads(line)
            kind = event.get("event")
            if kind == "checkpoint":
                on_checkpoint(event["name"], event)
                proc.stdin.write("go\n")
                proc.stdin.flush()
            elif kind == "result":
                result = event["result"]
            elif kind == "error":
                error = event["error"]
            elif kind == "log":
                print(f"    clients: {event['msg']}", flush=True)
        proc.wait(30)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if result is None:
        tail = log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"the clients failed: {error or 'no result'}\n{tail}")
    return result


def scenario_config(name: str, args: argparse.Namespace) -> dict[str, Any]:
    common = {"scenario": name, "connect_batch": args.connect_batch, "connect_timeout_s": 30,
              "warmup_s": args.warmup, "drain_s": 5, "update_size": args.update_size,
              "duration_s": args.duration}
    measured = 120 + args.warmup + args.duration + 5
    if name == "fanout":
        return {**common, "observers": args.observers, "rate": args.rate, "deadline_s": measured}
    if name == "rooms":
        return {**common, "rooms": args.rooms, "clients_per_room": args.clients_per_room,
                "rate": args.room_rate, "deadline_s": measured}
    if name == "awareness":
        return {**common, "rooms": args.awareness_rooms,
                "clients_per_room": args.awareness_clients_per_room,
                "rate": args.awareness_rate, "deadline_s": measured}
    if name == "idle":
        return {**common, "connections": args.connections, "rooms": args.idle_rooms,
                "deadline_s": 180}
    return {**common, "joiners": args.joiners, "doc_bytes": int(args.doc_mb * MB),
            "doc_updates": args.doc_updates, "join_timeout_s": args.join_timeout,
            "settle_s": args.settle, "deadline_s": 3 * args.join_timeout + 120}


def clients_needed(args: argparse.Namespace) -> int:
    """The most clients any selected scenario opens at once (one token each)."""
    counts = {"fanout": args.observers + 1, "rooms": args.rooms * args.clients_per_room,
              "awareness": args.awareness_rooms * args.awareness_clients_per_room,
              "idle": args.connections + 1, "join": args.joiners + 1}
    return max(counts[name] for name in args.scenarios)


def measure(server: Server, name: str, args: argparse.Namespace, setup: Setup,
            workdir: Path, authenticated: bool) -> dict[str, Any]:
    """One scenario against one running server: the clients' numbers plus the processes'."""
    out: dict[str, Any] = {"setup": server.setup}
    marks: dict[str, dict[str, float | None]] = {}
    spy = (PySpy(server.pid, Path(args.py_spy) / f"{server.name}-{name}.txt")
           if args.py_spy and server.name == "ysync" else None)
    perm_pid = setup.auth.perm_pid if setup.auth is not None and authenticated else None
    redis_cpu = setup.redis_cpu if server.name != "peer" else None
    helpers = {"worker": server.worker_pid, "perm": perm_pid}
    with Probe(server.pid, helpers, redis_cpu) as probe:
        def on_checkpoint(point: str, event: dict[str, Any]) -> None:
            if point in ("idle-before", "idle-connected"):
                time.sleep(args.settle)  # let the server finish what the clients started
                key = "server_rss_before_mb" if point == "idle-before" else "server_rss_after_mb"
                out[key] = probe.rss() / MB
            if point in ("measure-start", "join-start"):
                probe.reset_peak()
                out["server_rss_before_mb"] = probe.rss() / MB
                if spy is not None:
                    spy.start()
            marks[point] = probe.snapshot()
            if spy is not None and point in ("measure-end", "join-end"):
                spy.stop()

        config = {**scenario_config(name, args), "url": server.url}
        if authenticated and setup.auth is not None:
            config["tokens_file"] = str(setup.auth.tokens_file)
        try:
            result = run_clients(setup.node_dir, config, workdir, on_checkpoint)
        finally:
            if spy is not None:
                spy.stop()
        out["server_rss_end_mb"] = probe.rss() / MB
        out["server_peak_rss_mb"] = probe.peak_rss / MB
    server.check_worker()
    out.update(result)
    derive(out, name, marks, args)
    return out


def derive(out: dict[str, Any], name: str, marks: dict[str, dict[str, float | None]],
           args: argparse.Namespace) -> None:
    """The figures computed from the checkpoints' samples, into ``out``."""
    if "measure-start" in marks and "measure-end" in marks:
        out.update(window(marks["measure-start"], marks["measure-end"]))
        if "machine_cpu_pct" in out:
            ours = sum(out.get(k) or 0 for k in ("server_cpu_pct", "worker_cpu_pct",
                                                  "redis_cpu_pct", "perm_cpu_pct",
                                                  "client_cpu_pct"))
            out["others_cpu_pct"] = max(0.0, out["machine_cpu_pct"] - ours)
    if "join-start" in marks and "join-end" in marks:
        out.update(cpu_seconds(marks["join-start"], marks["join-end"]))
    if name == "idle" and "idle-before" in marks and "idle-connected" in marks:
        spent = cpu_seconds(marks["idle-before"], marks["idle-connected"])
        out["connect_cpu_s"] = spent
        for who in ("server", "worker", "redis", "perm"):
            if f"{who}_cpu_s" in spent:
                out[f"{who}_cpu_ms_per_connection"] = (1000 * spent[f"{who}_cpu_s"]
                                                       / max(1, args.connections))
    if name == "idle" and "server_rss_after_mb" in out:
        grown = (out["server_rss_after_mb"] - out["server_rss_before_mb"]) * MB
        out["kib_per_connection"] = grown / 1024 / max(1, args.connections)
    if name == "join" and out.get("doc_bytes"):
        out["doc_mb"] = out["doc_bytes"] / MB


def title_of(name: str, args: argparse.Namespace) -> str:
    if name == "fanout":
        return (f"fanout: 1 writer -> {args.observers} observers, {args.rate:g} updates/s, "
                f"{args.duration:g} s")
    if name == "rooms":
        return (f"rooms: {args.rooms} rooms x {args.clients_per_room} clients, "
                f"{args.room_rate:g} update/s each, {args.duration:g} s")
    if name == "awareness":
        return (f"awareness: {args.awareness_rooms} rooms x {args.awareness_clients_per_room} "
                f"clients, {args.awareness_rate:g} awareness update/s each, {args.duration:g} s")
    if name == "idle":
        return (f"idle: {args.connections} connections in {args.idle_rooms} rooms, opened "
                f"{args.connect_batch} at a time")
    return (f"join: {args.joiners} clients join a {args.doc_mb:g} MB document "
            f"({args.doc_updates} updates) at once")


# --- main ----------------------------------------------------------------------------------------


def source_info() -> str:
    """The commit of the ysync being measured, and whether its source differs from it."""
    root = LOAD_DIR.parent.parent
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                          text=True, check=False).stdout.strip()
    changed = subprocess.run(["git", "status", "--porcelain", "--", "ysync", "workers"],
                             cwd=root, capture_output=True, text=True, check=False).stdout
    return f"{head or 'unknown'}{' + uncommitted changes' if changed.strip() else ''}"


def markdown_report(report: dict[str, Any], args: argparse.Namespace) -> str:
    others = [run.get("others_cpu_pct") for results in report["scenarios"].values()
              for server in SERVERS for run in results.get(server, {}).get("runs", [])
              or [results.get(server, {})] if run.get("others_cpu_pct") is not None]
    noise = (f"; other processes used {min(others):.0f}-{max(others):.0f} % of a core during "
             "the measured windows" if others else "")
    parts = [f"{report['date']}, ysync {report['ysync_source']}, "
             f"{report['machine']['cpus']} cores, Python "
             f"{report['machine']['python']}, Node {report['machine']['node']}, "
             f"{args.repeat} run(s) per server (medians){noise}. {report['setup']}."]
    parts += [f"Note: {note}" for note in report.get("notes", [])]
    for name, results in report["scenarios"].items():
        parts.append(table(name, title_of(name, args), results, markdown=True))
    return "\n\n".join(parts) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/load.py", description=__doc__.split("\n\n")[0],
        epilog="Lower is better for every metric unless its label says otherwise; a ratio "
               "ysync/<server> below 1 means ysync is better. See docs/benchmarks.md.")
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO",
                        help=f"scenarios to run: {', '.join(SCENARIOS)} (default: all)")
    parser.add_argument("--servers", default="ysync,yredis,peer",
                        help="comma-separated servers to run: ysync, yredis (y-redis 0.1.6), "
                             "peer (y-websocket) (default: all three)")
    parser.add_argument("--baseline", metavar="REF",
                        help="also run the ysync of this git commit (e.g. HEAD~3), as server "
                             "'baseline', to compare before and after in one run")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and short windows (~2 minutes), for smoke-testing")
    parser.add_argument("--json", metavar="FILE", help="write every number to FILE")
    parser.add_argument("--markdown", metavar="FILE",
                        help="also write the tables to FILE in Markdown (for docs/benchmarks.md)")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", metavar="URL",
                        help="Redis for ysync and y-redis; 'private' (or a URL that does not "
                             "answer) starts a redis-server of our own (default: %(default)s)")
    parser.add_argument("--storage", choices=("postgres", "memory"), default="postgres",
                        help="postgres: a fresh PostgreSQL database per server run and a "
                             "separate worker each (ysync-worker, y-redis's worker); memory: no "
                             "workers (default: postgres, memory if none answers)")
    parser.add_argument("--postgres", metavar="URL",
                        help="PostgreSQL admin URL that may create databases (default: "
                             "postgres@ or root@127.0.0.1:5432, trust auth)")
    parser.add_argument("--no-auth", dest="auth", action="store_false",
                        help="run ysync without auth (y-redis cannot run without: not with "
                             "yredis)")
    parser.add_argument("--ysync-processes", type=int, default=1, metavar="N",
                        help="ysync server processes on the one port (server.processes, 1)")
    parser.add_argument("--profile", metavar="DIR",
                        help="run ysync under cProfile; write DIR/ysync-<scenario>.prof")
    parser.add_argument("--py-spy", metavar="DIR",
                        help="sample ysync with py-spy ($PY_SPY or on PATH); write collapsed "
                             "stacks to DIR/ysync-<scenario>.txt and print a summary")
    timing = parser.add_argument_group("timing")
    timing.add_argument("--duration", type=float,
                        help="measured seconds of fanout/rooms/awareness (20)")
    timing.add_argument("--warmup", type=float, help="unmeasured seconds before that (2)")
    timing.add_argument("--repeat", type=int, default=1,
                        help="runs per server, alternating the order; the median is reported (1)")
    timing.add_argument("--wait-quiet", type=float,
                        help="seconds to wait, before each run, for other processes to use less "
                             "than half a core (10; 0 = do not wait)")
    timing.add_argument("--settle", type=float, default=2.0,
                        help="seconds to wait before reading memory / after a join (2)")
    timing.add_argument("--connect-batch", type=int, default=50,
                        help="clients connecting at once, in every scenario but join (50)")
    fanout = parser.add_argument_group("fanout (A)")
    fanout.add_argument("--observers", type=int, help="observers of the one writer (500)")
    fanout.add_argument("--rate", type=float, default=10.0, help="writer updates/s (10)")
    fanout.add_argument("--update-size", type=int, default=40,
                        help="characters inserted per update, marker included (40)")
    rooms = parser.add_argument_group("rooms (B)")
    rooms.add_argument("--rooms", type=int, help="rooms (100)")
    rooms.add_argument("--clients-per-room", type=int, default=10, help="clients per room (10)")
    rooms.add_argument("--room-rate", type=float, default=1.0,
                       help="updates/s of each client (1)")
    aware = parser.add_argument_group("awareness")
    aware.add_argument("--awareness-rooms", type=int, help="rooms (30)")
    aware.add_argument("--awareness-clients-per-room", type=int, default=10,
                       help="clients per room (10)")
    aware.add_argument("--awareness-rate", type=float, default=1.0,
                       help="awareness updates/s of each client (1)")
    idle = parser.add_argument_group("idle (C)")
    idle.add_argument("--connections", type=int, help="idle connections (1000)")
    idle.add_argument("--idle-rooms", type=int, help="rooms they are spread over (100)")
    join = parser.add_argument_group("join (D)")
    join.add_argument("--joiners", type=int, help="clients joining at once (100)")
    join.add_argument("--doc-mb", type=float, help="document size in MB (5)")
    join.add_argument("--doc-updates", type=int, help="updates the document is built from (50)")
    join.add_argument("--join-timeout", type=float, default=120.0,
                      help="seconds a joiner may take to sync (120)")
    args = parser.parse_args(argv)
    defaults = {"duration": (20, 5), "warmup": (2, 1), "wait_quiet": (10, 0),
                "observers": (500, 100), "rooms": (100, 20), "awareness_rooms": (30, 10),
                "connections": (1000, 200), "idle_rooms": (100, 20), "joiners": (100, 20),
                "doc_mb": (5, 1), "doc_updates": (50, 20)}
    for key, (full, quick) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    args.scenarios = args.scenarios or list(SCENARIOS)
    if set(args.scenarios) - set(SCENARIOS):
        parser.error(f"unknown scenario(s); choose from {', '.join(SCENARIOS)}")
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = set(args.servers) - set(SERVERS) | ({"baseline"} & set(args.servers))
    if unknown:
        parser.error(f"unknown server(s): {', '.join(sorted(unknown))}; choose from ysync, "
                     "yredis, peer (and --baseline REF)")
    if not args.auth and "yredis" in args.servers:
        parser.error("y-redis always checks tokens: --no-auth only without yredis in --servers")
    if args.ysync_processes < 0:
        parser.error("--ysync-processes must be 0 (one per core) or more")
    return args


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run(args: argparse.Namespace, setup: Setup, workdir: Path) -> dict[str, Any]:
    run_id = f"ysync-bench-{uuid.uuid4().hex[:8]}"
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "machine": machine_info(),
        "ysync_source": source_info(), "setup": setup.describe(), "notes": setup.notes,
        "args": {k: v for k, v in vars(args).items() if k != "json"}, "scenarios": {}}
    servers = [s for s in args.servers
               if (s != "peer" or setup.peer_js is not None)
               and (s != "yredis" or setup.yredis_dir is not None)]
    print(f"-- servers: {', '.join(LABELS[s] for s in servers)}; {setup.describe()}", flush=True)
    for name in args.scenarios:
        runs: dict[str, list[dict[str, Any]]] = {}
        for repeat in range(args.repeat):
            # alternate the order, so that no server always runs on a warmer machine
            for server_name in servers if repeat % 2 == 0 else servers[::-1]:
                busy = wait_quiet(args.wait_quiet)
                print(f"-- {name} on {LABELS[server_name]} (run {repeat + 1}/{args.repeat}; "
                      f"other processes use {busy:.0f}% of a core)", flush=True)
                try:
                    result = run_one(name, server_name, args, setup,
                                     f"{run_id}-{server_name}-{name}-{repeat}", workdir)
                except (RuntimeError, OSError, subprocess.SubprocessError, ValueError) as exc:
                    print(f"   {server_name} failed: {exc}", flush=True)
                    result = {"error": str(exc)}
                result["others_cpu_pct_before"] = busy
                runs.setdefault(server_name, []).append(result)
        results: dict[str, Any] = {server: median_of(r) for server, r in runs.items()}
        results["ratio"] = ratios(name, results)
        if "yredis" not in results:
            results["reference_y_redis"] = REFERENCE.get(name, {})
        report["scenarios"][name] = results
        print("\n" + table(name, title_of(name, args), results) + "\n", flush=True)
    print(f"ysync {report['ysync_source']}; lower is better unless marked; a ratio ysync/<server> "
          "below 1 means ysync is better", flush=True)
    return report


@contextlib.contextmanager
def database(setup: Setup, label: str) -> Iterator[str | None]:
    """A fresh PostgreSQL database for one server run, or None (memory storage)."""
    if setup.postgres is None:
        yield None
        return
    with fresh_database(setup.postgres, label) as url:
        yield url


def run_one(name: str, server_name: str, args: argparse.Namespace, setup: Setup, prefix: str,
            workdir: Path) -> dict[str, Any]:
    if server_name == "peer":
        assert setup.peer_js is not None
        with start_peer(setup.peer_js, workdir) as server:
            server.setup = {"auth": "off", "storage": "memory", "worker": "none"}
            return _checked(server, name, args, setup, workdir, authenticated=False)
    profile = None
    if server_name == "ysync":
        profile = Path(args.profile) / f"ysync-{name}.prof" if args.profile else None
        for folder in (args.profile, args.py_spy):
            if folder:
                Path(folder).mkdir(parents=True, exist_ok=True)
    try:
        with database(setup, server_name) as db:
            settings = setup.settings(db)
            if server_name == "yredis":
                assert setup.yredis_dir is not None
                started = start_yredis(setup.yredis_dir, setup.redis_url, prefix, workdir,
                                       settings, worker=db is not None)
            else:
                if args.ysync_processes != 1:
                    settings["YSYNC_SERVER_PROCESSES"] = str(args.ysync_processes)
                source = setup.baseline if server_name == "baseline" else None
                started = start_ysync(setup.redis_url, prefix, workdir, profile, source=source,
                                      settings=settings, worker=db is not None)
            with started as server:
                server.setup = {"auth": "on" if setup.auth else "off",
                                "storage": "postgres" if db else "memory",
                                "worker": "separate" if server.worker else "none"}
                return _checked(server, name, args, setup, workdir,
                                authenticated=setup.auth is not None)
    finally:
        delete_prefix(setup.redis_url, prefix)


def _checked(server: Server, name: str, args: argparse.Namespace, setup: Setup, workdir: Path,
             authenticated: bool) -> dict[str, Any]:
    try:
        result = measure(server, name, args, setup, workdir, authenticated)
    except (RuntimeError, psutil.Error, OSError) as exc:
        raise RuntimeError(f"{exc}\n-- {server.name} log:\n{server.log_tail()}") from exc
    complaints = server.complaints()
    if complaints:
        result["server_log"] = complaints
        print(f"   {server.name} logged {len(complaints)} warnings/errors, e.g. "
              f"{complaints[0][:300]}", flush=True)
    return result


def prepare(args: argparse.Namespace, redis_url: str, workdir: Path,
            stack: contextlib.ExitStack) -> Setup:
    """Install and start what the runs share; say what is left out and why."""
    setup = Setup(install_clients(), redis_url)
    if args.baseline:
        setup.baseline = stack.enter_context(baseline_checkout(args.baseline, workdir))
        args.servers.append("baseline")
    redis_servers = {"ysync", "yredis", "baseline"} & set(args.servers)
    if redis_servers:
        setup.redis_cpu = RedisCpu(redis_url)
    if "peer" in args.servers:
        setup.peer_js, why = install_peer()
        if setup.peer_js is None:
            setup.note(f"the y-websocket peer could not be installed ({why}); running without it")
    if "yredis" in args.servers:
        setup.yredis_dir, why = locate_yredis()
        if setup.yredis_dir is None:
            setup.note(f"y-redis 0.1.6 is not available, running without it: {why}")
    if redis_servers and args.storage == "postgres":
        setup.postgres, why = find_postgres(args.postgres)
        if setup.postgres is None:
            setup.note(f"no PostgreSQL ({why}): memory storage and no workers")
    if args.auth and (redis_servers - {"yredis"} or setup.yredis_dir is not None):
        setup.auth = stack.enter_context(Auth(workdir, clients_needed(args)))
    return setup


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_fd_limit()
    with tempfile.TemporaryDirectory(prefix="ysync-load-") as tmp, contextlib.ExitStack() as st:
        workdir = Path(tmp)
        redis_url = args.redis
        wants_redis = {"ysync", "yredis"} & set(args.servers) or args.baseline
        if wants_redis and (redis_url == "private" or not redis_answers(redis_url)):
            redis_url = st.enter_context(private_redis(workdir))
            print(f"-- using a private redis-server at {redis_url}", flush=True)
        setup = prepare(args, redis_url, workdir, st)
        report = run(args, setup, workdir)
        report["redis"] = redis_url
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.markdown:
        Path(args.markdown).write_text(markdown_report(report, args))
        print(f"wrote {args.markdown}")
    failed = any("error" in r for s in report["scenarios"].values()
                 for k, r in s.items() if k in SERVERS)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
