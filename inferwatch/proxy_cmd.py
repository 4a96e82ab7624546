"""``inferwatch agent proxy``: the sidecar reverse proxy as a command (see docs/proxy.md).

Every flag also reads an environment variable, ``INFERWATCH_PROXY__`` + the flag's name in
capitals (``--upstream`` → ``INFERWATCH_PROXY__UPSTREAM``); a flag given on the command line
wins. The agent's own settings (capture mode, HMAC key, bus) come from ``INFERWATCH_AGENT__…``,
``INFERWATCH_BUS__…`` and ``--config`` as for every other command.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import logging
import os
import signal
import sys
import textwrap
from collections.abc import Callable
from typing import Any

from inferwatch.collectors.settings import Settings

_log = logging.getLogger("inferwatch.agent.proxy")
ENV_PREFIX = "INFERWATCH_PROXY__"
# A waiting event loop gets the GIL back from the shipper thread within this long (the default,
# 5 ms, would show in the proxy's p99 whenever the shipper encodes a batch).
SWITCH_INTERVAL_S = 0.0005


_ENV_NAMES: set[str] = set()
"""The ``INFERWATCH_PROXY__*`` names the flags read (filled as the parser is built)."""


def _env(name: str, default: Any, kind: Callable[[str], Any] = str) -> Any:
    _ENV_NAMES.add(name)
    value = os.environ.get(ENV_PREFIX + name)
    if value is None or value == "":
        return default
    try:
        return kind(value)
    except (ValueError, argparse.ArgumentTypeError):
        raise SystemExit(f"inferwatch: {ENV_PREFIX}{name}={value!r} is not valid") from None


def size_arg(value: str, minimum: int = 1) -> int:
    """A size in bytes from ``33554432``, ``32MiB``, ``50MB`` or ``1_048_576`` (at least ``minimum``)."""
    units = {"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "kb": 1000, "mb": 1000**2, "gb": 1000**3}
    text = value.strip().lower().replace("_", "")
    suffix = next((s for s in units if text.endswith(s)), "")
    number, factor = text.removesuffix(suffix).strip(), units.get(suffix, 1)
    try:
        size = int(float(number) * factor)
    except (ValueError, OverflowError):
        size = 0
    if size < minimum:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a size in bytes of at least {minimum} (e.g. 33554432 or 32MiB)")
    return size


def _seconds(value: str) -> float:
    from inferwatch.collectors.durations import parse_duration

    try:
        seconds = parse_duration(value)
    except ValueError:
        seconds = 0.0
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive length of time (5, 2.5 or 5m)")
    return seconds


def _flag_on(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def add_agent_commands(sub: Any) -> None:
    """Register ``inferwatch agent proxy`` on the top-level subparsers ``sub``."""
    parser = sub.choices.get("agent") if hasattr(sub, "choices") else None
    if parser is None:
        parser = sub.add_parser("agent", help="run the agent beside a model server (the sidecar proxy)")
        parser.set_defaults(agent_actions=parser.add_subparsers(dest="action", required=True,
                                                                metavar="ACTION"))
    actions = parser.get_default("agent_actions")
    p = actions.add_parser(
        "proxy",
        help="reverse proxy in front of any model server: every call becomes events",
        description="Forward HTTP to one fixed model server and record each call as inference events "
                    "(OpenAI-compatible, KServe v2/Triton, TF Serving, TorchServe, generic JSON). "
                    "Every flag also reads an environment variable (listed at the end).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", metavar="FILE", help="YAML settings file (also INFERWATCH_CONFIG)")
    p.add_argument("--bus", metavar="PATH", help="embedded bus file (INFERWATCH_BUS__PATH)")
    p.add_argument("--listen", default=_env("LISTEN", "127.0.0.1:8080"), metavar="HOST:PORT",
                   help="where to accept connections (default 127.0.0.1:8080; 0.0.0.0:8080 for all)")
    upstream = _env("UPSTREAM", None)
    p.add_argument("--upstream", default=upstream, required=upstream is None, metavar="URL",
                   help="the model server, e.g. http://127.0.0.1:8000 (the only place requests go)")
    p.add_argument("--admin-prefix", default=_env("ADMIN_PREFIX", "/-/"), metavar="PREFIX",
                   help="path prefix of the proxy's own healthz, livez and metrics (default /-/)")
    p.add_argument("--max-request-bytes", type=size_arg,
                   default=_env("MAX_REQUEST_BYTES", 32 << 20, size_arg), metavar="SIZE",
                   help="larger request bodies get 413 (default 32MiB)")
    p.add_argument("--connect-timeout", type=_seconds, default=_env("CONNECT_TIMEOUT_S", 5.0, _seconds),
                   metavar="SECONDS", help="connecting to the upstream (default 5; then 504)")
    p.add_argument("--upstream-timeout", type=_seconds,
                   default=_env("UPSTREAM_TIMEOUT_S", 300.0, _seconds), metavar="SECONDS",
                   help="longest wait for response headers or between body chunks (default 300; then 504)")
    p.add_argument("--client-idle-timeout", type=_seconds,
                   default=_env("CLIENT_IDLE_TIMEOUT_S", 75.0, _seconds), metavar="SECONDS",
                   help="close idle keep-alive client connections after this long (default 75)")
    p.add_argument("--principal-header", default=_env("PRINCIPAL_HEADER", None), metavar="NAME",
                   help="request header naming the caller (default agent.principal_header: x-api-key; "
                        "an Authorization bearer token is used when it is absent)")
    p.add_argument("--no-principal-from-address", action="store_true",
                   default=_env("NO_PRINCIPAL_FROM_ADDRESS", False, _flag_on),
                   help="callers without a credential get no principal "
                        "(default: a keyed pseudonym of their address)")
    p.add_argument("--exclude-path", action="append", default=None, metavar="PATH",
                   help="a path to forward without recording events (repeatable; added to the defaults: "
                        "/health, /healthz, /livez, /readyz, /ping, /metrics, /v2/health/live, ...)")
    p.add_argument("--forwarded-for", action="store_true", default=_env("FORWARDED_FOR", False, _flag_on),
                   help="append the client address to X-Forwarded-For")
    p.add_argument("--service", default=_env("SERVICE", None), help="service name on events (agent.service)")
    p.add_argument("--model", default=_env("MODEL", None),
                   help="model name when neither path nor body says (agent.model)")
    p.add_argument("--inline-events", action="store_true", default=_env("INLINE_EVENTS", False, _flag_on),
                   help="build events in the proxy's own process, after each response, instead of in a "
                        "worker process (one process, but every request waits for the event work)")
    p.add_argument("--no-events", action="store_true", default=_env("NO_EVENTS", False, _flag_on),
                   help="forward and count only, record nothing (to measure the proxy alone)")
    p.set_defaults(handler=proxy)
    names = textwrap.fill(", ".join(ENV_PREFIX + name for name in sorted(_ENV_NAMES)), 78,
                          break_on_hyphens=False)
    p.epilog = f"environment variables (the flags' defaults; a flag given wins):\n{names}"


def proxy(args: argparse.Namespace, settings: Settings) -> int:
    """Run the proxy until SIGTERM or SIGINT."""
    from inferwatch.agent.core import AgentConfigError, configure
    from inferwatch.agent.proxy import DEFAULT_EXCLUDED_PATHS, ProxyConfig, ProxyError, Recorder, parse_listen
    from inferwatch.agent.proxy_record import InlineRecorder, WorkerRecorder

    try:
        excluded = args.exclude_path or _env("EXCLUDE_PATHS", "").split(",")
        _check_env_names()  # after the last name is read
        host, port = parse_listen(args.listen)
        config = ProxyConfig(
            upstream=args.upstream, host=host, port=port, admin_prefix=args.admin_prefix,
            max_request_bytes=args.max_request_bytes, connect_timeout_s=args.connect_timeout,
            upstream_timeout_s=args.upstream_timeout, client_idle_timeout_s=args.client_idle_timeout,
            principal_from_address=not args.no_principal_from_address, forwarded_for=args.forwarded_for,
            exclude_paths=DEFAULT_EXCLUDED_PATHS | {p for p in excluded if p},
        )
        settings = settings.model_copy(update={"agent": _agent_with_flags(settings, args)})
        from_address = config.principal_from_address
        recorder: Recorder | None = None
        if args.no_events:
            recorder = None
        elif args.inline_events:
            recorder = InlineRecorder(configure(settings), principal_from_address=from_address)
        else:
            _check_bus(settings)  # fail here, not in a worker restarted over and over
            recorder = WorkerRecorder(settings, principal_from_address=from_address)
        return _run(config, recorder)
    except (ProxyError, AgentConfigError) as exc:
        print(f"inferwatch: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the port is taken, the address is not ours
        print(f"inferwatch: cannot listen on {args.listen}: {exc}", file=sys.stderr)
        return 1


def _agent_with_flags(settings: Settings, args: argparse.Namespace) -> Any:
    """``settings.agent`` with what ``--principal-header``, ``--service`` and ``--model`` say,
    checked as the settings are (``--principal-header ''`` is refused, not ignored)."""
    from pydantic import ValidationError

    from inferwatch.agent.proxy import ProxyError

    flags = (("principal_header", "--principal-header", args.principal_header),
             ("service", "--service", args.service), ("model", "--model", args.model))
    # An empty --service or --model leaves the setting as it is; an empty header name is a mistake.
    updates = {key: value for key, _, value in flags
               if value or (value is not None and key == "principal_header")}
    try:
        return type(settings.agent).model_validate({**dict(settings.agent), **updates})
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        flag = next((flag for key, flag, _ in flags if key == err["loc"][0]), str(err["loc"][0]))
        raise ProxyError(f"{flag} {err.get('input')!r}: {err['msg'].removeprefix('Value error, ')}") from None


def _check_env_names() -> None:
    """An ``INFERWATCH_PROXY__*`` variable no flag reads is a mistake (``UPSTREAM_TIMEOUT`` for
    ``UPSTREAM_TIMEOUT_S``): refused, naming the closest real one, rather than ignored."""
    from inferwatch.agent.proxy import ProxyError

    for variable in sorted(os.environ):
        name = variable[len(ENV_PREFIX):]
        if variable.startswith(ENV_PREFIX) and name not in _ENV_NAMES:
            close = difflib.get_close_matches(name, sorted(_ENV_NAMES), n=1, cutoff=0.6)
            hint = f"did you mean {ENV_PREFIX}{close[0]}? " if close else ""
            raise ProxyError(f"{variable} is not a proxy setting ({hint}`inferwatch agent proxy --help` "
                             "lists them)")


def _check_bus(settings: Settings) -> None:
    from inferwatch.agent.core import AgentConfigError

    if settings.bus.kind == "kafka":
        try:
            import inferwatch.collectors.kafka_bus  # noqa: F401
        except ImportError:
            raise AgentConfigError(
                "INFERWATCH_BUS__KIND=kafka needs kafka-python: pip install 'inferwatch[kafka]'"
            ) from None


def _run(config: Any, recorder: Any) -> int:
    from inferwatch.agent.proxy import serve

    try:
        import uvloop
    except ImportError:  # the standard loop works; uvloop is faster
        uvloop = None  # type: ignore[assignment]
    sys.setswitchinterval(SWITCH_INTERVAL_S)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        def ready(server: Any) -> None:
            events = "off" if recorder is None else type(recorder).__name__.removesuffix("Recorder").lower()
            _log.info("event=proxy_listening listen=%s:%d upstream=%s admin=%s events=%s loop=%s",
                      config.host, server.port, config.upstream, config.admin_prefix, events,
                      "uvloop" if uvloop else "asyncio")

        await serve(config, recorder, ready=ready, stop=stop)
        _log.info("event=proxy_stopped")

    if uvloop is not None:
        uvloop.run(main())
    else:
        asyncio.run(main())
    return 0
