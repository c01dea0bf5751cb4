"""The retention policy of versions (workers/history.py), on synthetic times."""

from __future__ import annotations

from workers.history import Retention, versions_to_drop

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR
#: A "now" on a day boundary plus a bit, so that buckets are easy to read.
NOW = 20_000 * DAY + 30 * MINUTE
POLICY = Retention(keep_all=3600, keep_hourly=86400, keep_daily=30 * 86400)


def ids(times: list[int]) -> list[tuple[str, int]]:
    return [(f"v{t}", t) for t in times]


def kept(times: list[int], now: int = NOW, policy: Retention = POLICY) -> list[int]:
    versions = ids(times)
    drop = set(versions_to_drop(versions, now, policy))
    return sorted(t for name, t in versions if name not in drop)


def test_every_version_of_the_last_hour_is_kept() -> None:
    times = [NOW - i * MINUTE for i in range(60)]
    assert kept(times) == sorted(times)


def test_the_last_version_of_each_hour_is_kept_for_a_day() -> None:
    # every 10 minutes from 2 h to 20 h ago: one per hour survives, the latest of its hour
    times = [NOW - 2 * HOUR - i * 10 * MINUTE for i in range(6 * 18)]
    survivors = kept(times)
    hours = [t // HOUR for t in survivors]
    assert len(hours) == len(set(hours)) == len({t // HOUR for t in times})
    for t in survivors:
        same_hour = [x for x in times if x // HOUR == t // HOUR]
        assert t == max(same_hour)


def test_the_last_version_of_each_day_is_kept_for_30_days_then_none() -> None:
    times = [NOW - 2 * DAY - i * 5 * HOUR for i in range(6 * 40)]  # 2 to 52 days ago
    survivors = kept(times)
    assert all(NOW - t <= 30 * DAY for t in survivors)
    days = [t // DAY for t in survivors]
    assert len(days) == len(set(days))
    for t in survivors:
        assert t == max(x for x in times if x // DAY == t // DAY and NOW - x <= 30 * DAY)
    assert len(survivors) >= 27


def test_thinning_is_stable_as_time_passes() -> None:
    # a version every minute for three hours; thinned every minute as a worker would
    versions: list[tuple[str, int]] = []
    start = NOW - 3 * HOUR
    created = [start + minute * MINUTE for minute in range(3 * 60 + 1)]
    for now in created:
        versions.append((f"v{now}", now))
        drop = set(versions_to_drop(versions, now, POLICY))
        versions = [v for v in versions if v[0] not in drop]
    times = [t for _, t in versions]
    last_hour = [t for t in times if NOW - t <= HOUR]
    assert len(last_hour) == 61  # every minute of the last hour
    older = [t for t in times if NOW - t > HOUR]
    assert len({t // HOUR for t in older}) == len(older)  # one per hour before that
    for t in older:  # the last one of its hour that is older than the last hour
        assert t == max(x for x in created if x // HOUR == t // HOUR and NOW - x > HOUR)


def test_a_smaller_policy() -> None:
    policy = Retention(keep_all=0, keep_hourly=0, keep_daily=0)
    assert kept([NOW - 1, NOW - 2], policy=policy) == []
    assert kept([NOW], policy=policy) == [NOW]  # age 0: within keep_all = 0


def test_ids_tie_break_on_equal_times() -> None:
    versions = [("a", NOW - 2 * HOUR), ("b", NOW - 2 * HOUR)]
    assert versions_to_drop(versions, NOW, POLICY) == ["a"]
