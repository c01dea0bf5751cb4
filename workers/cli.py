"""``ysync-worker``: the compaction worker as a command.

Continuous by default (like y-redis's ``bin/worker.js``); ``--once`` processes every due task and
exits, for cron and Kubernetes CronJobs. SIGTERM or SIGINT lets the tasks in hand finish, then
exits 0; a second signal stops at once.

Exit status: 0 done; 1 a task or Redis/storage failed (``--once``) or a start-up error; 2 bad
configuration (no Redis URL, no storage chosen, or a storage other than that of a live server or
worker of the prefix: ysync.storage.fingerprint).
"""

from __future__ import annotations

import argparse
import functools
import logging
import signal
import sys
from collections.abc import Sequence

import anyio
import redis.asyncio as aioredis
import redis.exceptions as redis_errors

from workers.compactor import Worker
from workers.http import WorkerHttp
from ysync.config import Config, load_config
from ysync.errors import ConfigError, YsyncError
from ysync.logs import configure
from ysync.metrics import CONTENT_TYPE
from ysync.redis_clients import RedisClient, any_redis_client
from ysync.sentinel import is_sentinel_url
from ysync.sentinel_pool import follow_master
from ysync.storage.factory import open_storage
from ysync.storage.fingerprint import ROLE_WORKER, announced_storage

log = logging.getLogger("ysync.worker")

_DESCRIPTION = """\
Compact ysync / y-redis room streams into storage snapshots (the y-redis worker).

Continuous (default): claim tasks as they become due, forever; run one or more next to the
servers. SIGTERM or SIGINT finishes the tasks in hand and exits 0.

--once: process every task that is due now, then exit 0 (1 if any task failed). Run it from
cron or a Kubernetes CronJob, e.g. every minute:
    * * * * *  REDIS=redis://redis:6379 POSTGRES=postgres://... ysync-worker --once

Settings come from the config file (--config, $YSYNC_CONFIG or ./config.toml) and the
environment: REDIS (required), REDIS_PREFIX, REDIS_TASK_DEBOUNCE, REDIS_MIN_MESSAGE_LIFETIME,
POSTGRES, S3_ENDPOINT/S3_PORT/S3_SSL/S3_ACCESS_KEY/S3_SECRET_KEY, YDOC_UPDATE_CALLBACK, LOG,
and YSYNC_<SECTION>_<KEY> for every setting (e.g. YSYNC_STORAGE_KIND=gcs
YSYNC_STORAGE_GCS_BUCKET=my-bucket). A storage is required: POSTGRES, S3_ENDPOINT, or
storage.kind (YSYNC_STORAGE_KIND) filesystem, gcs, postgres or s3 - the one the servers of the
prefix use (a different one is refused); memory only by name, for tests.
See docs/worker.md.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ysync-worker", description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", metavar="PATH",
                        help="TOML configuration file (default: $YSYNC_CONFIG, ./config.toml)")
    parser.add_argument("--once", action="store_true",
                        help="process every due task, then exit (cron style)")
    parser.add_argument("--consumer", metavar="NAME",
                        help="consumer name in the worker group (default: a random UUID)")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                        help="overrides log.level / LOG")
    parser.add_argument("--metrics-port", type=int, metavar="PORT",
                        help="serve /metrics and /healthz on this port (0.0.0.0); overrides "
                             "worker.metrics_port (YSYNC_WORKER_METRICS_PORT)")
    parser.add_argument("--metrics-host", default="0.0.0.0", metavar="HOST",
                        help="interface of the metrics port (default 0.0.0.0)")
    return parser


async def run_worker(config: Config, *, once: bool, consumer: str | None = None,
                     metrics_host: str = "0.0.0.0") -> int:
    """Run the worker until done (``once``) or a signal; return the exit status."""
    client = any_redis_client(config.redis.url, config)
    try:
        # refused (ConfigError) when a live server or worker of the prefix uses another storage
        async with announced_storage(config, config.redis.url, ROLE_WORKER) as announcer, \
                open_storage(config) as storage:
            worker = Worker(client, storage, config, consumer)
            error: YsyncError | None = None
            async with anyio.create_task_group() as tg:
                tg.start_soon(_stop_on_signal, worker, tg.cancel_scope)
                tg.start_soon(announcer.keep_fresh)
                if is_sentinel_url(config.redis.url) and isinstance(client, aioredis.Redis):
                    tg.start_soon(follow_master, [client])  # to a new master at once
                if config.worker.metrics_port:
                    http = WorkerHttp(worker.metrics.render, CONTENT_TYPE,
                                      functools.partial(_redis_problem, client, config))
                    await tg.start(http.serve, metrics_host, config.worker.metrics_port)
                try:
                    await worker.run(once=once)
                except YsyncError as exc:
                    error = exc  # raised below, not wrapped in the task group's ExceptionGroup
                finally:
                    tg.cancel_scope.cancel()
            if error is not None:
                raise error
    finally:
        await client.aclose()
    return 1 if once and worker.failures else 0


async def _redis_problem(client: RedisClient, config: Config) -> str | None:
    try:
        with anyio.fail_after(config.redis.timeout):
            await client.ping()
    except (redis_errors.RedisError, OSError, TimeoutError) as exc:
        log.warning("health check: Redis does not answer: %s", exc or "timed out")
        return "redis unavailable"
    return None


async def _stop_on_signal(worker: Worker, scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            if worker.stopping:
                log.warning("second %s: stopping now", signal.Signals(signum).name)
                scope.cancel()
                return
            log.info("%s: finishing the tasks in hand, then exiting",
                     signal.Signals(signum).name)
            worker.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``ysync-worker``; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        overrides = {"log.level": args.log_level, "worker.metrics_port": args.metrics_port}
        config = load_config(args.config, overrides=overrides)
        if not config.redis.url:
            raise ConfigError(
                "ysync-worker needs a Redis URL: set REDIS (or redis.url in the config file), "
                "e.g. REDIS=redis://localhost:6379. (Without Redis, `ysync serve` runs the "
                "worker in-process with its embedded Redis.)")
        config.storage_kind  # noqa: B018 - refuses a missing storage before anything starts
    except ConfigError as exc:
        print(f"ysync-worker: {exc}", file=sys.stderr)
        return 2
    configure(config)  # log.level and log.format on stderr, safe lines; config warnings
    try:
        return anyio.run(lambda: run_worker(config, once=args.once, consumer=args.consumer,
                                            metrics_host=args.metrics_host))
    except ConfigError as exc:
        print(f"ysync-worker: {exc}", file=sys.stderr)
        return 2
    except YsyncError as exc:
        print(f"ysync-worker: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
