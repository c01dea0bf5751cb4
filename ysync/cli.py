"""The ``ysync`` command: ``serve`` and the operator commands.

Every setting of :mod:`ysync.config` is also a flag of ``ysync serve``:
``--<section>-<key>`` (for example ``--server-port 3002``, ``--redis-url redis://...``).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AsyncExitStack
from typing import Any, TypeVar

import anyio

from ysync import __version__
from ysync.config import Config, env_names, load_config, redact_url, settings
from ysync.errors import ConfigError, YsyncError
from ysync.logs import configure

log = logging.getLogger("ysync")

T = TypeVar("T")

_ALIASES = {"server.host": ["--host"], "server.port": ["--port"], "redis.url": ["--redis"],
            "redis.prefix": ["--prefix"], "embedded.data_dir": ["--data-dir"],
            "storage.kind": ["--storage"]}


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("settings (override config.toml and the environment)")
    for section, key, f, _kind in settings():
        name = f"{section}.{key}"
        flags = [f"--{section}-{key}".replace("_", "-"), *_ALIASES.get(name, [])]
        envs = ", ".join(env_names(section, key, f))
        also = "".join(f"; config.toml also: [{alias.replace('.', '] ', 1)}"
                       for alias in f.metadata["alias_toml"])
        group.add_argument(*flags, dest=name, default=None, metavar="VALUE",
                           help=f"{f.metadata['help']} [env: {envs}{also}; "
                                f"default: {f.default!r}]")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ysync", description=(
        "Yjs sync server on Redis Streams, wire-compatible with y-redis. With no Redis "
        "configured, `ysync serve` runs a complete single-node deployment (embedded Redis, "
        "filesystem storage, compaction worker in-process)."))
    parser.add_argument("--version", action="version", version=f"ysync {__version__}")
    parser.add_argument("--config", metavar="FILE", default=None,
                        help="TOML configuration file [env: YSYNC_CONFIG; default: ./config.toml "
                             "if present]")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = commands.add_parser("serve", help="run the WebSocket server")
    _add_setting_flags(serve)

    show_config = commands.add_parser("config", help="print the effective configuration")
    _add_setting_flags(show_config)

    doc = commands.add_parser("doc", help="inspect documents").add_subparsers(
        dest="doc_command", metavar="ACTION", required=True)
    show = doc.add_parser("show", help="print a document (persisted + pending) as JSON")
    show.add_argument("room", help="the room, as the client names it or as it appears in the "
                                   "WebSocket URL path (my room = my%%20room)")
    show.add_argument("--docid", default="index", help="doc id (default: index)")
    _add_setting_flags(show)

    redis_cmd = commands.add_parser("redis", help="maintain Redis").add_subparsers(
        dest="redis_command", metavar="ACTION", required=True)
    clean = redis_cmd.add_parser("clean", help="delete every key of the prefix given with "
                                               "--prefix (required)")
    clean.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    _add_setting_flags(clean)

    kick = commands.add_parser("kick", help="revoke a room's connections on every ysync process")
    kick.add_argument("room", help="the room (as in the URL, or as the client named it)")
    kick.add_argument("--user", default=None, help="only this user's connections (yuserid)")
    _add_setting_flags(kick)

    keys = commands.add_parser("keys", help="authentication keys").add_subparsers(
        dest="keys_command", metavar="ACTION", required=True)
    keys.add_parser("generate", help="print a new P-384 key pair as AUTH_PUBLIC_KEY=... and "
                                     "AUTH_PRIVATE_KEY=... lines (lib0's format)")

    token = commands.add_parser("token", help="mint a token (needs AUTH_PRIVATE_KEY)")
    token.add_argument("--user", required=True, help="the yuserid claim")
    token.add_argument("--ttl", type=float, default=3600.0,
                       help="seconds until the token expires (default 3600)")
    _add_setting_flags(token)
    return parser


def _config_from(args: argparse.Namespace) -> Config:
    overrides = {name: value for name, value in vars(args).items()
                 if "." in name and value is not None}
    return load_config(args.config, overrides=overrides)


def _setup_logging(config: Config) -> None:
    configure(config)  # log.level, log.format on stderr; no tokens, no raw control characters


async def _serve(config: Config) -> None:
    from ysync.server import run_server
    from ysync.storage.fingerprint import Announcer, announced_storage, server_role

    role = server_role(config)
    async with AsyncExitStack() as stack:
        announcer: Announcer | None = None
        if config.redis.url:
            # before the server starts: nothing is served or compacted before the check
            announcer = await stack.enter_async_context(
                announced_storage(config, config.redis.url, role))
        stop = anyio.Event()
        error: YsyncError | None = None
        async with anyio.create_task_group() as tg:
            async def watch_signals() -> None:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for signum in signals:
                        name = signal.Signals(signum).name
                        if stop.is_set():
                            log.warning("received %s again: stopping now", name)
                            tg.cancel_scope.cancel()
                            return
                        log.info("received %s: draining (readiness fails, clients are closed "
                                 "with 1012 over %.1f s); send it again to stop now", name,
                                 config.server.drain_period)
                        stop.set()

            tg.start_soon(watch_signals)
            async with run_server(config) as running, AsyncExitStack() as embedded:
                try:
                    if announcer is None:  # the embedded Redis exists only now
                        announcer = await embedded.enter_async_context(
                            announced_storage(config, running.redis_url, role))
                except YsyncError as exc:
                    error = exc  # raised below, not wrapped in the task group's ExceptionGroup
                else:
                    tg.start_soon(announcer.keep_fresh)
                    print(f"ysync ready on ws://{running.host}:{running.port}", flush=True)
                    await stop.wait()
                    await running.drain()
            tg.cancel_scope.cancel()
        if error is not None:
            raise error


def run_async(config: Config, func: Callable[..., Awaitable[T]], *args: Any) -> T:
    """``anyio.run`` on the event loop ``server.event_loop`` asks for."""
    choice = config.server.event_loop
    use_uvloop = False
    if choice != "asyncio":
        try:
            import uvloop  # noqa: F401 - only checking that it is there
        except ImportError:
            if choice == "uvloop":
                raise ConfigError("setting server.event_loop: uvloop is not installed "
                                  "(pip install uvloop)") from None
        else:
            use_uvloop = True
    return anyio.run(func, *args, backend_options={"use_uvloop": use_uvloop})


def _print_config(config: Config) -> None:
    out: dict[str, dict[str, Any]] = {}
    for section, key, f, _kind in settings():
        value = getattr(getattr(config, section), key)
        if f.metadata["secret"] and value:
            value = "<secret>"
        elif isinstance(value, str):
            value = redact_url(value)  # redis://:password@host
        out.setdefault(section, {})[key] = value
    print(json.dumps(out, indent=2))


async def _doc_show(config: Config, room: str, docid: str) -> None:
    from ysync.embedded import redis_for_operator
    from ysync.gate import room_as_sent
    from ysync.ops import show_doc
    from ysync.redis_clients import any_redis_client

    async with redis_for_operator(config) as url:
        client = any_redis_client(url, config)
        try:
            shown = await show_doc(config, room_as_sent(room), docid, client=client)
        finally:
            await client.aclose()
    print(json.dumps(shown, indent=2, ensure_ascii=False))


def _confirm_clean(config: Config, prefix: str) -> bool:
    where = config.redis.url or f"the embedded Redis of {config.embedded.data_dir}"
    answer = input(f"Delete every key of prefix {prefix!r} in {where}? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


async def _redis_clean(config: Config, prefix: str) -> int:
    from ysync.embedded import redis_for_operator
    from ysync.ops import clean_prefix
    from ysync.redis_clients import any_redis_client

    async with redis_for_operator(config) as url:
        client = any_redis_client(url, config)
        try:
            count = await clean_prefix(client, prefix)
        finally:
            await client.aclose()
    print(f"deleted {count} keys")
    return 0


async def _kick(config: Config, room: str, user: str | None) -> int:
    from ysync.control import publish_kick
    from ysync.embedded import running_embedded_url
    from ysync.redis_clients import any_redis_client

    url = config.redis.url or await running_embedded_url(config.embedded)
    if url is None:
        print("ysync kick: no REDIS configured and no ysync serve running on "
              f"{config.embedded.data_dir}", file=sys.stderr)
        return 2
    client = any_redis_client(url, config)
    try:
        kicked = await publish_kick(client, config.redis.prefix, room, user,
                                    window=config.auth.kick_window)
    finally:
        await client.aclose()
    print(f"kick sent to {kicked.reached} ysync processes; recorded for "
          f"{config.auth.kick_window:g} s for processes cut off from Redis now")
    return 0


def _token(config: Config, user: str, ttl: float) -> int:
    from ysync.auth import load_private_key, mint_token

    if not config.auth.private_key:
        print("ysync token needs AUTH_PRIVATE_KEY (see `ysync keys generate`)", file=sys.stderr)
        return 2
    key = load_private_key(config.auth.private_key, setting="auth.private_key (AUTH_PRIVATE_KEY)")
    print(mint_token(key, user, ttl))
    return 0


def _leaves(group: BaseExceptionGroup[YsyncError]) -> Iterator[YsyncError]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    if args.command == "keys":
        from ysync.auth import generate_keypair, keypair_env_lines

        print(keypair_env_lines(*generate_keypair()))
        return 0
    try:
        config = _config_from(args)
        _setup_logging(config)
        if args.command == "serve":
            config.storage_kind  # noqa: B018 - refuses a missing storage before anything starts
            config.auth_enabled  # noqa: B018 - refuses half of the auth pair, likewise
            from ysync.supervisor import process_count, supervise

            if process_count(config) > 1:
                given = list(sys.argv[1:] if argv is None else argv)
                serve_args = given[given.index("serve") + 1:]
                run_async(config, supervise, config, serve_args, args.config)
            else:
                run_async(config, _serve, config)
        elif args.command == "config":
            _print_config(config)
        elif args.command == "doc":
            run_async(config, _doc_show, config, args.room, args.docid)
        elif args.command == "redis":
            prefix = vars(args)["redis.prefix"]
            if not prefix:
                print("ysync redis clean: --prefix is required", file=sys.stderr)
                return 2
            if not args.yes and not _confirm_clean(config, prefix):
                print("nothing deleted")
                return 1
            return run_async(config, _redis_clean, config, prefix)
        elif args.command == "kick":
            return run_async(config, _kick, config, args.room, args.user)
        elif args.command == "token":
            return _token(config, args.user, args.ttl)
    except YsyncError as exc:
        print(f"ysync: {exc}", file=sys.stderr)
        return 2
    except BaseExceptionGroup as group:  # from a task group: report ours, re-raise the rest
        ours, rest = group.split(YsyncError)
        if ours is None or rest is not None:
            raise
        for error in _leaves(ours):
            print(f"ysync: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
