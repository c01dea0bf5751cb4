"""Storage identities and the rule that refuses two storages on one prefix (pure parts)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ysync.config import Config, StorageConfig, load_config
from ysync.storage.fingerprint import (
    FOLDER_ID_NAME,
    ROLE_SERVER,
    ROLE_SERVER_AND_WORKER,
    ROLE_WORKER,
    Announcement,
    StorageIdentity,
    conflict_message,
    find_conflict,
    postgres_identity,
    read_folder_id,
    server_role,
    split_live,
    storage_identity,
)

from storage_fixtures import make_config


def identity(storage: StorageConfig, *, host: str = "h1", process: str = "p1",
             folder_id: str | None = None, **environ: str) -> StorageIdentity:
    return storage_identity(make_config(storage=storage), host=host, process=process,
                            folder_id=folder_id, environ=environ)


def entry(process: str, role: str, key: str, seen_ms: int = 1000,
          ttl_ms: int = 30_000) -> Announcement:
    return Announcement(process, role, StorageIdentity(key, f"storage {key}"), "host", 42,
                        seen_ms, seen_ms + ttl_ms)


# --- identities -----------------------------------------------------------------------------


def test_memory_is_each_process_own() -> None:
    memory = StorageConfig(kind="memory")
    assert identity(memory, process="a").key != identity(memory, process="b").key
    assert identity(memory, process="a") == identity(memory, process="a")
    assert "its own" in identity(memory).shown


def test_a_filesystem_folder_is_known_by_its_id_else_by_host_and_path(tmp_path: Path) -> None:
    one = StorageConfig(kind="filesystem", path=str(tmp_path / "a"))
    other = StorageConfig(kind="filesystem", path=str(tmp_path / "b"))
    # one folder seen from two hosts (a shared volume) under two paths: the same storage
    assert (identity(one, host="h1", folder_id="F").key
            == identity(other, host="h2", folder_id="F").key)
    assert identity(one, folder_id="F").key != identity(one, folder_id="G").key
    # without an id file: host and absolute path
    assert identity(one, host="h1").key != identity(one, host="h2").key
    assert identity(one).key != identity(other).key
    shown = identity(one, host="h1", folder_id="F").shown
    assert str(tmp_path / "a") in shown and "h1" in shown


def test_relative_filesystem_paths_are_made_absolute(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    shown = identity(StorageConfig(kind="filesystem", path="store")).shown
    assert str(tmp_path / "store") in shown


def test_gcs_identity_is_bucket_and_prefix_as_used() -> None:
    def gcs(prefix: str, bucket: str = "docs", **environ: str) -> str:
        return identity(StorageConfig(kind="gcs", gcs_bucket=bucket, gcs_prefix=prefix),
                        **environ).key

    assert gcs("prod") == gcs("prod/") == "gcs://docs/prod/"
    assert gcs("") == "gcs://docs/"
    assert gcs("prod") != gcs("test") != gcs("test", bucket="other")
    assert gcs("p") != gcs("p", STORAGE_EMULATOR_HOST="http://127.0.0.1:9023")


def test_postgres_identity_names_the_database_without_secrets() -> None:
    key = identity(StorageConfig(kind="postgres",
                                 postgres="postgres://ysync:hunter2@DB.example:5433/ydocs")).key
    assert key == "postgres://db.example:5433/ydocs"
    assert "hunter2" not in key and "ysync" not in key
    same = postgres_identity("postgresql://other:pw@db.example:5433/ydocs", {})
    assert same == key  # another user of the same database: the same storage
    assert (postgres_identity("postgres://u@db/ydocs", {})
            == postgres_identity("postgres://u@db:5432/ydocs", {}))
    assert postgres_identity("postgres://u@db/a", {}) != postgres_identity("postgres://u@db/b", {})
    # a password with characters that should have been escaped still stays out
    odd = postgres_identity("postgres://u:se/cr@t:x@db/ydocs", {})
    assert odd == "postgres://db:5432/ydocs"
    assert "se" not in odd.replace("postgres", "") and "cr" not in odd


def test_postgres_identity_fills_in_libpq_defaults() -> None:
    assert postgres_identity("postgres://", {}) == "postgres://localhost:5432/"
    assert (postgres_identity("postgres://", {"PGHOST": "pg", "PGPORT": "6000",
                                              "PGDATABASE": "d"})
            == "postgres://pg:6000/d")
    assert postgres_identity("postgres://ann@db", {}) == "postgres://db:5432/ann"
    assert (postgres_identity("postgres:///d?host=/var/run/postgresql", {})
            == "postgres:///var/run/postgresql:5432/d")
    assert (postgres_identity("postgres://a:1,[::1]:2/d", {})
            == "postgres://a:1,[::1]:2/d")
    with_schema = postgres_identity("postgres://db/d?options=-csearch_path%3Dother", {})
    assert with_schema == "postgres://db:5432/d?options=-csearch_path=other"
    assert with_schema != postgres_identity("postgres://db/d", {})


def test_the_servers_role_includes_an_in_process_worker() -> None:
    assert server_role(load_config(None, {})) == ROLE_SERVER_AND_WORKER  # embedded
    assert server_role(load_config(None, {"REDIS": "redis://h", "POSTGRES": "postgres://d/x"})
                       ) == ROLE_SERVER
    assert server_role(load_config(None, {"REDIS": "redis://h", "POSTGRES": "postgres://d/x",
                                          "YSYNC_WORKER_ENABLED": "yes"})
                       ) == ROLE_SERVER_AND_WORKER


# --- the rule -------------------------------------------------------------------------------


@pytest.mark.parametrize(("mine", "theirs", "refused"), [
    (ROLE_SERVER, ROLE_SERVER, False),  # readers only: nothing is compacted, nothing lost
    (ROLE_SERVER, ROLE_WORKER, True),
    (ROLE_WORKER, ROLE_SERVER, True),
    (ROLE_WORKER, ROLE_WORKER, True),
    (ROLE_SERVER, ROLE_SERVER_AND_WORKER, True),
    (ROLE_SERVER_AND_WORKER, ROLE_SERVER, True),
])
def test_a_worker_must_share_the_storage_of_every_process(mine: str, theirs: str,
                                                          refused: bool) -> None:
    own = entry("me", mine, "filesystem:A")
    other = entry("them", theirs, "filesystem:B")
    assert (find_conflict(own, [other]) == other) is refused
    assert find_conflict(own, [entry("them", theirs, "filesystem:A")]) is None


def test_memory_server_and_memory_worker_conflict_unless_one_process() -> None:
    memory = StorageConfig(kind="memory")
    server = Announcement("s", ROLE_SERVER, identity(memory, process="s"), "h", 1)
    worker = Announcement("w", ROLE_WORKER, identity(memory, process="w"), "h", 2)
    assert find_conflict(worker, [server]) == server
    assert find_conflict(server, [worker]) == worker
    both = Announcement("s", ROLE_SERVER_AND_WORKER, identity(memory, process="s"), "h", 1)
    assert find_conflict(both, [both]) is None  # its own earlier entry (a refresh)


def test_the_first_conflicting_live_entry_is_named() -> None:
    own = entry("me", ROLE_WORKER, "A")
    others = [entry("x", ROLE_SERVER, "A"), entry("y", ROLE_SERVER, "B"),
              entry("z", ROLE_WORKER, "C")]
    assert find_conflict(own, others) == others[1]


def test_expired_and_unreadable_entries_are_stale() -> None:
    fresh = entry("fresh", ROLE_SERVER, "A", 9000, ttl_ms=5000)
    old = entry("old", ROLE_WORKER, "B", 1000, ttl_ms=5000)
    live, stale = split_live({"fresh": fresh, "old": old, "junk": None}, now_ms=10_000)
    assert live == [fresh]
    assert sorted(stale) == ["junk", "old"]
    live, stale = split_live({"old": old}, now_ms=5999)
    assert live == [old] and stale == []
    # each entry's own lifetime counts, not the reader's
    assert split_live({"long": entry("long", ROLE_SERVER, "A", 0, ttl_ms=60_000)},
                      now_ms=59_000)[0]


def test_announcements_round_trip_as_json() -> None:
    one = entry("p", ROLE_SERVER_AND_WORKER, "filesystem:F")
    assert Announcement.from_json("p", one.to_json(1234, 500).encode()) == Announcement(
        "p", one.role, one.storage, one.host, one.pid, 1234, 1734)
    for junk in (b"", b"{", b"[]", b'{"role": "server"}', b'{"role": 1, "storage": 2, '
                 b'"shown": 3, "host": 4, "pid": "x", "seen": 5}'):
        assert Announcement.from_json("p", junk) is None


def test_the_message_names_both_storages_and_the_setting() -> None:
    own = entry("me", ROLE_WORKER, "filesystem:B")
    other = entry("them", ROLE_SERVER, "filesystem:A", seen_ms=7000)
    text = conflict_message("yp", own, other, now_ms=10_000)
    for part in ("storage filesystem:B", "storage filesystem:A", "storage.kind",
                 "YSYNC_STORAGE_KIND", "'yp'", "worker (pid 42 on host)",
                 "server (pid 42 on host)", "3 s ago", "expires in 27 s", "yp:ysync:storage"):
        assert part in text, part
    assert "Memory" not in text
    memory = Announcement("m", ROLE_WORKER, identity(StorageConfig(kind="memory"), process="m"),
                          "h", 1)
    assert "Memory storage is each process's own" in conflict_message("yp", memory, other,
                                                                      10_000)


# --- the folder id file ---------------------------------------------------------------------


def test_folder_id_is_created_once_and_kept(tmp_path: Path) -> None:
    root = tmp_path / "new" / "storage"
    first = read_folder_id(root)
    assert first is not None and len(first) == 36
    assert read_folder_id(root) == first
    assert (root / FOLDER_ID_NAME).read_text().strip() == first
    assert [p.name for p in root.iterdir()] == [FOLDER_ID_NAME]  # no temporary file left
    assert read_folder_id(tmp_path / "other") != first


def test_folder_id_unavailable_is_none(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert read_folder_id(blocker / "storage") is None


def test_folder_id_file_cannot_be_a_rooms_folder() -> None:
    from ysync.storage.filesystem import folder_name

    assert folder_name(FOLDER_ID_NAME) != FOLDER_ID_NAME


def test_identity_needs_a_chosen_storage() -> None:
    from ysync.errors import ConfigError

    config = Config(redis=make_config().redis)  # storage.kind auto, external Redis
    with pytest.raises(ConfigError, match="storage.kind"):
        storage_identity(config, host="h", process="p", environ={})
