"""Data-losing set-ups are refused: no storage with an external Redis, memory not named, and a
server and a worker of one prefix on different storages (real Redis, real processes)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
import redis.asyncio as aioredis

from ysync.config import Config, StorageConfig
from ysync.errors import ConfigError
from ysync.storage.fingerprint import (
    ROLE_SERVER,
    ROLE_WORKER,
    Announcement,
    StorageIdentity,
    announce,
    announce_key,
    announced_storage,
)

from conftest import seconds
from harness import REPO, running_server, wait_until
from storage_fixtures import make_config

pytestmark = pytest.mark.anyio


def clean_env(**settings: str) -> dict[str, str]:
    """Nothing of the machine's ysync / y-redis settings inherited, plus ``settings``."""
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO),
           "HOME": os.environ.get("HOME", "/tmp"), "PYTHONUNBUFFERED": "1"}
    return {**env, **settings}


def filesystem(path: Path) -> dict[str, str]:
    return {"YSYNC_STORAGE_KIND": "filesystem", "YSYNC_STORAGE_PATH": str(path)}


async def run(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str]:
    """Run a command that is expected to end soon; its exit status and stderr."""
    with anyio.fail_after(seconds(60)):
        result = await anyio.run_process(args, env=env, cwd=cwd, check=False)
    return result.returncode, result.stderr.decode(errors="replace")


def serve(*args: str) -> list[str]:
    return [sys.executable, "-m", "ysync", "serve", "--port", "0", *args]


def worker(*args: str) -> list[str]:
    return [sys.executable, "-m", "workers.cli", *args]


def config_on(redis_url: str, prefix: str, path: Path) -> Config:
    return make_config(redis_url=redis_url, prefix=prefix,
                       storage=StorageConfig(kind="filesystem", path=str(path)))


# --- no storage, memory by name ------------------------------------------------------------


@pytest.mark.parametrize("command", [serve(), worker("--once"), worker()],
                         ids=["serve", "worker --once", "worker"])
async def test_external_redis_without_storage_exits_2(
    command: list[str], tmp_path: Path, redis_url: str, prefix: str, client: aioredis.Redis
) -> None:
    code, err = await run(command, clean_env(REDIS=redis_url, REDIS_PREFIX=prefix), tmp_path)
    assert code == 2, err
    assert "storage.kind" in err and "YSYNC_STORAGE_KIND" in err, err
    assert not await client.exists(announce_key(prefix))  # refused before anything was written


async def test_memory_chosen_by_name_starts_with_a_warning(
    tmp_path: Path, redis_url: str, prefix: str
) -> None:
    env = clean_env(REDIS=redis_url, REDIS_PREFIX=prefix, YSYNC_STORAGE_KIND="memory")
    async with running_server(env, cwd=tmp_path) as server:
        async def warned() -> bool:
            return "ATTENTION! storage.kind is memory" in server.log_text()

        await wait_until(warned, 10, "the memory storage warning")
        assert "LOST" in server.log_text()
    code, err = await run(worker("--once"), env, tmp_path)
    assert code == 0, err
    assert "ATTENTION! storage.kind is memory" in err


# --- one storage per prefix ----------------------------------------------------------------


async def test_a_worker_on_another_folder_than_the_server_is_refused(
    tmp_path: Path, redis_url: str, prefix: str
) -> None:
    base = clean_env(REDIS=redis_url, REDIS_PREFIX=prefix, REDIS_TASK_DEBOUNCE="0")
    folder_a, folder_b = tmp_path / "a", tmp_path / "b"
    async with running_server({**base, **filesystem(folder_a)}, cwd=tmp_path):
        code, err = await run(worker("--once"), {**base, **filesystem(folder_b)}, tmp_path)
        assert code == 2, err
        assert "storage mismatch" in err
        assert str(folder_a) in err and str(folder_b) in err, err
        assert "storage.kind" in err
        # the same folder is accepted
        code, err = await run(worker("--once"), {**base, **filesystem(folder_a)}, tmp_path)
        assert code == 0, err
        # memory is every process's own: refused beside a server on a folder too
        code, err = await run(worker("--once"), {**base, "YSYNC_STORAGE_KIND": "memory"},
                              tmp_path)
        assert code == 2, err
        assert str(folder_a) in err and "memory" in err


async def test_a_memory_worker_beside_a_memory_server_is_refused(
    tmp_path: Path, redis_url: str, prefix: str
) -> None:
    env = clean_env(REDIS=redis_url, REDIS_PREFIX=prefix, YSYNC_STORAGE_KIND="memory")
    async with running_server(env, cwd=tmp_path):
        code, err = await run(worker("--once"), env, tmp_path)
    assert code == 2, err
    assert "storage mismatch" in err and "Memory storage is each process's own" in err


async def test_a_server_on_another_folder_than_a_running_worker_is_refused(
    tmp_path: Path, redis_url: str, prefix: str, client: aioredis.Redis
) -> None:
    base = clean_env(REDIS=redis_url, REDIS_PREFIX=prefix, YSYNC_WORKER_IDLE_WAIT="0.05")
    folder_a, folder_b = tmp_path / "a", tmp_path / "b"
    proc = await anyio.open_process(worker(), env={**base, **filesystem(folder_a)},
                                    cwd=tmp_path, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
    try:
        async def announced() -> bool:
            return bool(await client.hlen(announce_key(prefix)))

        await wait_until(announced, 30, "the worker to announce its storage")
        code, err = await run(serve(), {**base, **filesystem(folder_b)}, tmp_path)
        assert code == 2, err
        assert str(folder_a) in err and str(folder_b) in err, err
        assert "ysync ready" not in err
        async with running_server({**base, **filesystem(folder_a)}, cwd=tmp_path):
            pass  # the worker's folder is fine
    finally:
        proc.terminate()
        with anyio.fail_after(seconds(20)):
            await proc.wait()
        await proc.aclose()
    assert not await client.exists(announce_key(prefix))  # both withdrew on a clean stop


async def test_one_folder_under_two_paths_is_one_storage(
    tmp_path: Path, redis_url: str, prefix: str
) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    base = clean_env(REDIS=redis_url, REDIS_PREFIX=prefix)
    async with running_server({**base, **filesystem(tmp_path / "real")}, cwd=tmp_path):
        code, err = await run(worker("--once"), {**base, **filesystem(tmp_path / "link")},
                              tmp_path)
    assert code == 0, err


# --- the announcement itself ---------------------------------------------------------------


async def test_servers_that_only_read_may_differ_but_no_worker_joins_them(
    tmp_path: Path, redis_url: str, prefix: str
) -> None:
    async with announced_storage(config_on(redis_url, prefix, tmp_path / "a"), redis_url,
                                 ROLE_SERVER), \
            announced_storage(config_on(redis_url, prefix, tmp_path / "b"), redis_url,
                              ROLE_SERVER):
        for folder in ("a", "b", "c"):
            with pytest.raises(ConfigError, match="storage mismatch"):
                async with announced_storage(config_on(redis_url, prefix, tmp_path / folder),
                                             redis_url, ROLE_WORKER):
                    pass


async def test_withdrawn_on_exit_and_other_prefixes_are_apart(
    tmp_path: Path, redis_url: str, prefix: str, client: aioredis.Redis
) -> None:
    config_a = config_on(redis_url, prefix, tmp_path / "a")
    async with announced_storage(config_a, redis_url, ROLE_WORKER):
        assert await client.hlen(announce_key(prefix)) == 1
        ttl = await client.pttl(announce_key(prefix))
        assert 0 < ttl <= 30_000
        other = make_config(redis_url=redis_url, prefix=f"{prefix}-other",
                            storage=StorageConfig(kind="filesystem", path=str(tmp_path / "b")))
        async with announced_storage(other, redis_url, ROLE_WORKER):
            pass
    assert not await client.exists(announce_key(prefix))
    async with announced_storage(config_on(redis_url, prefix, tmp_path / "b"), redis_url,
                                 ROLE_WORKER):
        pass  # the first one stopped: another storage may take the prefix


async def test_a_crashed_processes_entry_expires(
    redis_url: str, prefix: str, client: aioredis.Redis
) -> None:
    dead = Announcement("dead", ROLE_WORKER, StorageIdentity("x", "storage X"), "h", 1)
    assert await announce(client, prefix, dead, ttl=0.5) is None  # never withdrawn
    mine = Announcement("mine", ROLE_WORKER, StorageIdentity("y", "storage Y"), "h", 2)
    refused = await announce(client, prefix, mine, ttl=0.5)
    assert refused is not None and "storage X" in refused and "storage Y" in refused

    async def accepted() -> bool:
        return await announce(client, prefix, mine, ttl=0.5) is None

    await wait_until(accepted, 10, "the dead process's entry to expire")
    assert await client.hkeys(announce_key(prefix)) == [b"mine"]  # the stale entry deleted


async def test_a_live_process_keeps_its_entry_fresh(
    tmp_path: Path, redis_url: str, prefix: str
) -> None:
    config_a = config_on(redis_url, prefix, tmp_path / "a")
    async with anyio.create_task_group() as tg:
        async with announced_storage(config_a, redis_url, ROLE_SERVER, interval=0.1,
                                     ttl=0.4) as announcer:
            tg.start_soon(announcer.keep_fresh)
            await anyio.sleep(1.2)  # three lifetimes: alive only if refreshed
            with pytest.raises(ConfigError, match="storage mismatch"):
                async with announced_storage(config_on(redis_url, prefix, tmp_path / "b"),
                                             redis_url, ROLE_WORKER):
                    pass
            tg.cancel_scope.cancel()
