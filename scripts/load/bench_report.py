"""The report: one table per scenario (ysync, peer, ysync/peer, y-redis) and medians."""

from __future__ import annotations

import statistics
from typing import Any

SERVERS = ("ysync", "peer", "baseline")

#: The JavaScript y-redis server (uWebSockets) on this 2-core machine, from the product brief.
REFERENCE: dict[str, dict[str, float]] = {
    "fanout": {"latency_ms.p99": 15, "server_cpu_pct": 5},
    "rooms": {"latency_ms.p99": 5.5, "server_cpu_pct": 27},
    "idle": {"kib_per_connection": 25},
    "join": {"time_to_synced_s.p50": 18, "time_to_synced_s.max": 43,
             "doc_copies_per_client.mean": 2, "server_peak_rss_mb": 1300},
}



#: Rows of each scenario's table: (key in the result, label). Lower is better unless the label
#: says "higher is better".
ROWS: dict[str, list[tuple[str, str]]] = {
    "fanout": [
        ("latency_ms.p50", "latency p50 (ms)"),
        ("latency_ms.p90", "latency p90 (ms)"),
        ("latency_ms.p99", "latency p99 (ms)"),
        ("latency_ms.max", "latency max (ms)"),
        ("delivered_pct", "delivered % (higher is better)"),
        ("clients_closed_by_server", "clients closed by the server"),
        ("server_cpu_pct", "server CPU % of a core"),
        ("redis_cpu_pct", "redis CPU % of a core"),
        ("server_rss_end_mb", "server RSS at end (MB)"),
        ("server_peak_rss_mb", "server peak RSS (MB)"),
        ("client_cpu_pct", "bench client CPU %"),
        ("others_cpu_pct", "other processes CPU % (noise)"),
    ],
    "idle": [
        ("kib_per_connection", "KiB per idle connection"),
        ("server_rss_before_mb", "server RSS before (MB)"),
        ("server_rss_after_mb", "server RSS with connections (MB)"),
        ("connect_s", "time to open all (s)"),
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
        ("redis_cpu_s", "redis CPU during join (s)"),
        ("client_cpu_s", "bench client CPU during join (s)"),
        ("build_s", "building the document (s)"),
    ],
}
ROWS["rooms"] = ROWS["fanout"]



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



def ratios(name: str, results: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, _label in ROWS[name]:
        ours, theirs = lookup(results.get("ysync"), key), lookup(results.get("peer"), key)
        if ours is not None and theirs:
            out[key] = ours / theirs
    return out



def table(name: str, title: str, results: dict[str, Any], *, markdown: bool = False) -> str:
    """The scenario's metrics for ysync, the peer, their ratio and the y-redis reference."""
    rel = ratios(name, results)
    ref = REFERENCE.get(name, {})
    rows = [(label, fmt(lookup(results.get("ysync"), key)), fmt(lookup(results.get("peer"), key)),
             fmt(rel.get(key)), fmt(ref.get(key))) for key, label in ROWS[name]]
    header: tuple[str, ...] = ("metric", "ysync", "peer", "ysync/peer", "y-redis (brief)")
    if results.get("baseline"):
        header += ("baseline", "ysync/baseline")
        for i, (key, _label) in enumerate(ROWS[name]):
            ours, before = lookup(results.get("ysync"), key), lookup(results.get("baseline"), key)
            rows[i] += (fmt(before), fmt(ours / before if ours is not None and before else None))
    if markdown:
        lines = [f"**{title}**", "", "| " + " | ".join(header) + " |",
                 "|---" + "|--:" * (len(header) - 1) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
    else:
        lines = [f"== {title} ==", _plain_row(header)] + [_plain_row(row) for row in rows]
    for server in SERVERS:
        problem = (results.get(server) or {}).get("error")
        if problem:
            lines.append(f"  {server} FAILED: {problem.splitlines()[0][:200]}")
    return "\n".join(lines)


def _plain_row(cells: tuple[str, ...]) -> str:
    label, *values = cells
    return f"{label:34}" + "".join(f" {v:>10}" for v in values)


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
