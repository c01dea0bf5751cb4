"""The report: one table per scenario (every server measured, ysync's ratio to each of the
others, the y-redis numbers of the product brief when y-redis itself was not run) and medians."""

from __future__ import annotations

import statistics
from typing import Any

SERVERS = ("ysync", "yredis", "peer", "baseline")
#: column headings
LABELS = {"ysync": "ysync", "yredis": "y-redis", "peer": "y-websocket", "baseline": "baseline"}
#: the servers ysync is compared with (a ratio column ysync/<server> each)
COMPARED = ("yredis", "peer", "baseline")

#: The JavaScript y-redis server (uWebSockets) on this 2-core machine, from the product brief;
#: shown only when y-redis itself is not in the run.
REFERENCE: dict[str, dict[str, float]] = {
    "fanout": {"latency_ms.p99": 15, "server_cpu_pct": 5},
    "rooms": {"latency_ms.p99": 5.5, "server_cpu_pct": 27},
    "idle": {"kib_per_connection": 25},
    "join": {"time_to_synced_s.p50": 18, "time_to_synced_s.max": 43,
             "doc_copies_per_client.mean": 2, "server_peak_rss_mb": 1300},
}

_CPU_ROWS = [
    ("server_cpu_pct", "server CPU % of a core"),
    ("worker_cpu_pct", "worker CPU % of a core"),
    ("redis_cpu_pct", "redis CPU % of a core"),
    ("stack_cpu_pct", "server + worker + redis CPU %"),
]

#: Rows of each scenario's table: (key in the result, label). Lower is better unless the label
#: says "higher is better". A row no server has a number for is left out.
ROWS: dict[str, list[tuple[str, str]]] = {
    "fanout": [
        ("latency_ms.p50", "latency p50 (ms)"),
        ("latency_ms.p90", "latency p90 (ms)"),
        ("latency_ms.p99", "latency p99 (ms)"),
        ("latency_ms.max", "latency max (ms)"),
        ("delivered_pct", "delivered % (higher is better)"),
        ("clients_closed_by_server", "clients closed by the server"),
        *_CPU_ROWS,
        ("server_rss_end_mb", "server RSS at end (MB)"),
        ("server_peak_rss_mb", "server peak RSS (MB)"),
        ("client_cpu_pct", "bench client CPU %"),
        ("others_cpu_pct", "other processes CPU % (noise)"),
    ],
    "idle": [
        ("kib_per_connection", "KiB per idle connection"),
        ("server_rss_before_mb", "server RSS before (MB)"),
        ("server_rss_after_mb", "server RSS with connections (MB)"),
        ("connects_per_s", "connections per second (higher is better)"),
        ("connect_s", "time to open all (s)"),
        ("server_cpu_ms_per_connection", "server CPU per connection (ms)"),
        ("redis_cpu_ms_per_connection", "redis CPU per connection (ms)"),
        ("perm_cpu_ms_per_connection", "permission endpoint CPU per connection (ms)"),
    ],
    "join": [
        ("time_to_synced_s.p50", "time to synced p50 (s)"),
        ("time_to_synced_s.p99", "time to synced p99 (s)"),
        ("time_to_synced_s.max", "time to synced max (s)"),
        ("synced", "clients synced (higher is better)"),
        ("doc_copies_per_client.mean", "bytes received / doc size, mean"),
        ("doc_copies_per_client.max", "bytes received / doc size, max"),
        ("server_peak_rss_mb", "server peak RSS during join (MB)"),
        ("server_rss_before_mb", "server RSS before join (MB)"),
        ("server_cpu_s", "server CPU during join (s)"),
        ("worker_cpu_s", "worker CPU during join (s)"),
        ("redis_cpu_s", "redis CPU during join (s)"),
        ("client_cpu_s", "bench client CPU during join (s)"),
        ("build_s", "building the document (s)"),
    ],
}
ROWS["rooms"] = ROWS["fanout"]
ROWS["awareness"] = ROWS["fanout"]


def lookup(values: dict[str, Any] | None, key: str) -> float | None:
    node: Any = values
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return float(node) if isinstance(node, int | float) else None



def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"



def ratios(name: str, results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """ysync's number divided by each other server's: ``{"yredis": {key: ratio}, ...}``."""
    out: dict[str, dict[str, float]] = {}
    for other in COMPARED:
        if not results.get(other) or not results.get("ysync"):
            continue
        out[other] = {}
        for key, _label in ROWS[name]:
            ours, theirs = lookup(results.get("ysync"), key), lookup(results.get(other), key)
            if ours is not None and theirs:
                out[other][key] = ours / theirs
    return out


def table(name: str, title: str, results: dict[str, Any], *, markdown: bool = False) -> str:
    """The scenario's metrics for every server in ``results``, ysync's ratio to each other
    server, and the brief's y-redis numbers when y-redis was not measured."""
    servers = [s for s in SERVERS if results.get(s)]
    rel = ratios(name, results)
    ref = REFERENCE.get(name, {}) if "yredis" not in servers else {}
    header = ("metric", *(LABELS[s] for s in servers), *(f"ysync/{LABELS[o]}" for o in rel))
    if ref:
        header += ("y-redis (brief)",)
    rows = []
    for key, label in ROWS[name]:
        values = [lookup(results.get(s), key) for s in servers]
        if all(v is None for v in values) and key not in ref:
            continue
        row = (label, *(fmt(v) for v in values), *(fmt(rel[o].get(key)) for o in rel))
        rows.append(row + ((fmt(ref.get(key)),) if ref else ()))
    if markdown:
        lines = [f"**{title}**", "", "| " + " | ".join(header) + " |",
                 "|---" + "|--:" * (len(header) - 1) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
    else:
        lines = [f"== {title} ==", _plain_row(header)] + [_plain_row(row) for row in rows]
    for server in SERVERS:
        problem = (results.get(server) or {}).get("error")
        if problem:
            lines.append(f"  {LABELS[server]} FAILED: {problem.splitlines()[0][:200]}")
    return "\n".join(lines)


def _plain_row(cells: tuple[str, ...]) -> str:
    label, *values = cells
    return f"{label:44}" + "".join(f" {v:>13}" for v in values)


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One result from repeated runs: the median of every number (the runs are kept too)."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return runs[-1]
    if len(ok) == 1 and len(runs) == 1:
        return ok[0]

    def merge(values: list[Any]) -> Any:
        if all(isinstance(v, dict) for v in values):
            keys = [k for k in values[0] if all(k in v for v in values)]
            return {k: merge([v[k] for v in values]) for k in keys}
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            return statistics.median(values)
        return values[0]

    merged: dict[str, Any] = merge(ok)
    merged["runs"] = runs
    return merged
