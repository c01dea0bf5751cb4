"""How long do compacting and joining a large document stall other rooms' traffic?

Runs `ysync serve` on the embedded default three times: without the in-process worker, with
it, and without it but with joiners. In each run a writer puts a large document (many items)
into one room, while a prober in another room sends an awareness message every few
milliseconds and times the server's echo. With the worker on, the document is compacted while
the prober runs; with joiners, one client after another opens the large room and asks for what
an earlier state vector lacks (so the server assembles the document and computes a diff each
time). The report compares the echo latencies of the runs (the bound: neither may stall
WebSocket traffic for more than 50 ms). A measurement, not a test:

    .venv/bin/python scripts/bench_compaction_stall.py [--items 200000] [--seconds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pycrdt
from websockets.asyncio.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ysync.protocol import (  # noqa: E402
    AwarenessEntry,
    SyncStep2,
    decode_message,
    encode_awareness,
    encode_awareness_entries,
    encode_sync_step1,
    encode_sync_update,
)


def big_update(items: int) -> bytes:
    doc: pycrdt.Doc[pycrdt.Text] = pycrdt.Doc(client_id=4242)
    text = doc.get("text", type=pycrdt.Text)
    length = 0
    for i in range(items):  # alternate ends so that every insert stays its own item
        text.insert(0 if i % 2 else length, "abcdefghijklmnopqrstuvwxy")
        length += 25
    return bytes(doc.get_update())


async def join_repeatedly(url: str, joins: list[float]) -> None:
    """Join the large room again and again at an early state vector; record each join's time."""
    early = b"\x01" + bytes([0x92, 0x21]) + b"\x0a"  # client 4242 at clock 10
    while True:
        started = time.perf_counter()
        async with connect(f"{url}/big", max_size=None) as joiner:
            await joiner.send(encode_sync_step1(early))
            while True:
                frame = await asyncio.wait_for(joiner.recv(), 60)
                assert isinstance(frame, bytes)
                if isinstance(decode_message(frame), SyncStep2):
                    break
        joins.append(time.perf_counter() - started)


async def run(worker: bool, update: bytes, seconds: float, interval: float,
              joining: bool = False) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="ysync-stall-") as data_dir:
        env = {k: v for k, v in os.environ.items() if k not in ("REDIS", "POSTGRES")}
        env.update({"YSYNC_DATA_DIR": data_dir, "REDIS_TASK_DEBOUNCE": "500",
                    "REDIS_MIN_MESSAGE_LIFETIME": "500", "LOG": "warning",
                    "YSYNC_WORKER_ENABLED": "yes" if worker else "no"})
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ysync", "serve", "--port", "0", env=env,
            stdout=asyncio.subprocess.PIPE)
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        url = line.strip().removeprefix("ysync ready on ")
        latencies: list[float] = []
        try:
            async with connect(f"{url}/big", max_size=None) as writer, \
                    connect(f"{url}/probe", max_size=None) as prober:
                await writer.send(encode_sync_update(update))
                joins: list[float] = []
                joiner = asyncio.create_task(join_repeatedly(url, joins)) if joining else None
                deadline = time.monotonic() + seconds
                clock = 0
                while time.monotonic() < deadline:
                    clock += 1
                    entry = AwarenessEntry(7, clock, f'{{"t":{clock}}}')
                    message = encode_awareness(encode_awareness_entries([entry]))
                    sent = time.perf_counter()
                    await prober.send(message)
                    while True:  # the server's step 1 and other frames come first
                        frame = await asyncio.wait_for(prober.recv(), 30)
                        if frame == message:
                            break
                    latencies.append((time.perf_counter() - sent) * 1000)
                    await asyncio.sleep(interval)
                if joiner is not None:
                    joiner.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await joiner
            snapshots = Path(data_dir) / "storage" / "big" / "index"
            compacted = snapshots.is_dir() and any(snapshots.iterdir())
        finally:
            proc.terminate()
            await proc.wait()
        latencies.sort()
        return {"compacted": float(compacted), "p50": statistics.median(latencies),
                "p99": latencies[int(len(latencies) * 0.99) - 1],
                "max": latencies[-1], "samples": len(latencies), "joins": len(joins)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=200_000, help="items in the document")
    parser.add_argument("--seconds", type=float, default=8.0, help="probing time per run")
    parser.add_argument("--interval", type=float, default=0.005, help="seconds between probes")
    args = parser.parse_args()
    update = big_update(args.items)
    print(f"document: {args.items} items, {len(update) / 1e6:.1f} MB (v1)")
    off = await run(False, update, args.seconds, args.interval)
    on = await run(True, update, args.seconds, args.interval)
    joins = await run(False, update, args.seconds, args.interval, joining=True)
    print(f"{'echo latency (ms)':<20}{'worker off':>12}{'worker on':>12}{'joiners':>12}"
          f"{'on/off':>8}{'join/off':>9}")
    for key in ("p50", "p99", "max"):
        print(f"{key:<20}{off[key]:>12.2f}{on[key]:>12.2f}{joins[key]:>12.2f}"
              f"{on[key] / off[key]:>8.2f}{joins[key] / off[key]:>9.2f}")
    print(f"{'samples':<20}{off['samples']:>12.0f}{on['samples']:>12.0f}{joins['samples']:>12.0f}")
    print(f"{'joins completed':<20}{'':>12}{'':>12}{joins['joins']:>12.0f}")
    print(f"{'snapshot persisted':<20}{'yes' if off['compacted'] else 'no':>12}"
          f"{'yes' if on['compacted'] else 'no':>12}")


if __name__ == "__main__":
    asyncio.run(main())
