#!/usr/bin/env python3
"""Rooms throughput at a fixed p99, with 1 and with 2 ysync server processes on one port.

Runs ``scripts/load.py rooms --servers ysync --ysync-processes N --room-rate R`` for each N and
each rate of a ladder (every run its own: a fresh server, Redis shared, auth and PostgreSQL
storage as load.py sets them up), and reports, per N, the highest rate whose p99 latency stays
at or below ``--p99`` ms with every update delivered, with server CPU and the load generator's
own CPU beside it (on a 2-core machine the generator, Redis and the servers share the cores).
Example::

    .venv/bin/python scripts/load_processes.py --redis private --json procs.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

SCRIPTS = Path(__file__).resolve().parent


def run_once(processes: int, rate: float, args: argparse.Namespace) -> dict[str, Any]:
    """One load.py rooms run; its ysync result (latency, CPU, delivery)."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        command = [sys.executable, str(SCRIPTS / "load.py"), "rooms", "--servers", "ysync",
                   "--ysync-processes", str(processes), "--room-rate", str(rate),
                   "--rooms", str(args.rooms), "--clients-per-room", str(args.clients_per_room),
                   "--duration", str(args.duration), "--wait-quiet", str(args.wait_quiet),
                   "--redis", args.redis, "--json", out.name]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, timeout=args.timeout)
        result: dict[str, Any] = json.loads(Path(out.name).read_text())
    return dict(result["scenarios"]["rooms"]["ysync"], source=result["ysync_source"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="1,2,3,4,6,8",
                        help="updates/s of each client, in order (default 1,2,3,4,6,8)")
    parser.add_argument("--processes", default="1,2", help="server processes (default 1,2)")
    parser.add_argument("--p99", type=float, default=25.0,
                        help="latency p99 the throughput is measured at, ms (default 25)")
    parser.add_argument("--rooms", type=int, default=100)
    parser.add_argument("--clients-per-room", type=int, default=10)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--wait-quiet", type=float, default=30.0)
    parser.add_argument("--redis", default="private")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per run at most")
    parser.add_argument("--json", type=Path, help="write every run's numbers to this file")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    runs: list[dict[str, Any]] = []
    best: dict[int, dict[str, Any] | None] = {}
    for processes in (int(p) for p in args.processes.split(",")):
        best[processes] = None
        for rate in rates:
            result = run_once(processes, rate, args)
            p99 = result["latency_ms"]["p99"]
            ok = p99 <= args.p99 and result["delivered_pct"] >= 100
            row = {"processes": processes, "rate_per_client": rate,
                   "updates_per_s": result["updates_per_s"], "p99_ms": p99,
                   "p50_ms": result["latency_ms"]["p50"], "delivered_pct": result["delivered_pct"],
                   "server_cpu_pct": result["server_cpu_pct"],
                   "redis_cpu_pct": result["redis_cpu_pct"],
                   "client_cpu_pct": result["client_cpu_pct"], "within_p99": ok,
                   "source": result["source"]}
            runs.append(row)
            print(f"{processes} process(es), {rate:g} upd/s per client: "
                  f"{row['updates_per_s']:.0f} upd/s, p50 {row['p50_ms']:.1f} ms, "
                  f"p99 {p99:.1f} ms, delivered {row['delivered_pct']} %, server CPU "
                  f"{row['server_cpu_pct']:.0f} %, generator {row['client_cpu_pct']:.0f} %"
                  f"{'' if ok else '  (over the p99)'}", flush=True)
            if not ok:
                break
            best[processes] = row
    print(f"\nupdates/s at p99 <= {args.p99:g} ms, every update delivered:")
    for processes, row in best.items():
        shown = f"{row['updates_per_s']:.0f}" if row else "none of the rates"
        print(f"  {processes} process(es): {shown}")
    if args.json:
        args.json.write_text(json.dumps({"p99_ms": args.p99, "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
