"""``inferwatch collect otlp``: the OTLP/HTTP receiver as a command.

It wires :class:`~inferwatch.collectors.otlp.OtlpReceiver` to an :class:`~inferwatch.agent.Agent`
built from the settings, exactly as the in-process agent is: the bus producer, the shipper
(bounded queue, background sending, the disk spool when ``agent.spool_dir`` is set, drop
counters, periodic stats log lines), the keyed pseudonyms and ``/metrics``. It serves with uvicorn
until SIGINT or SIGTERM, then sends what is queued and prints the counters.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import socket
import sys
from types import FrameType
from typing import TYPE_CHECKING, Any

from inferwatch.collectors.otlp import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_CONCURRENT_EXPORTS,
    DEFAULT_MAX_SPANS,
    OtlpReceiver,
)
from inferwatch.collectors.otlp_map import DEFAULT_PRINCIPAL_ATTRIBUTES, MappingOptions
from inferwatch.collectors.settings import CaptureMode, Settings
from inferwatch.proxy_cmd import size_arg

if TYPE_CHECKING:
    from inferwatch.agent.core import Agent

def add_parser(sub: Any) -> None:
    """Add ``collect otlp`` to the ``inferwatch`` sub-command parsers."""
    p = sub.add_parser("collect", help="receive telemetry from instrumented applications as events")
    csub = p.add_subparsers(dest="source", required=True, metavar="SOURCE")
    q = csub.add_parser(
        "otlp",
        help="OTLP/HTTP trace receiver: OpenLLMetry, OpenInference and OTel GenAI spans become events",
        description="Receive OTLP/HTTP traces (protobuf or JSON, optionally gzip) on POST /v1/traces and "
                    "turn model-call spans into events on the bus. Point an exporter at it with "
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://HOST:PORT/v1/traces. See docs/otlp.md.",
    )
    q.add_argument("--config", metavar="FILE", help="YAML settings file (also INFERWATCH_CONFIG)")
    q.add_argument("--bus", metavar="PATH", help="embedded bus file (INFERWATCH_BUS__PATH)")
    q.add_argument("--json", action="store_true", help="print the final counters as JSON")
    q.add_argument("--listen", default="127.0.0.1:4318", type=_address, metavar="HOST:PORT",
                   help="address to serve on (default 127.0.0.1:4318, the OTLP/HTTP port)")
    q.add_argument("--capture", choices=[m.value for m in CaptureMode],
                   help="prompt and completion text: none, redacted or full (default agent.capture)")
    q.add_argument("--principal-attribute", action="append", metavar="NAME", dest="principal_attributes",
                   help="span or resource attribute naming the caller, pseudonymised with agent.hmac_key "
                        f"(repeatable; default {', '.join(DEFAULT_PRINCIPAL_ATTRIBUTES)})")
    q.add_argument("--no-principal", action="store_true", help="do not record a principal")
    q.add_argument("--service", help="service for spans whose resource has no service.name "
                                     "(default agent.service)")
    q.add_argument("--max-body-bytes", type=_size, default=DEFAULT_MAX_BODY_BYTES, metavar="N",
                   help="largest request accepted, after decompression: bytes, or with a unit "
                        f"(20MiB, 50MB; default {DEFAULT_MAX_BODY_BYTES})")
    q.add_argument("--max-spans", type=_positive, default=DEFAULT_MAX_SPANS, metavar="N",
                   help="spans read per request; the rest are rejected as a partial success naming this "
                        f"option (default {DEFAULT_MAX_SPANS})")
    q.add_argument("--max-concurrent-exports", type=_positive, default=DEFAULT_MAX_CONCURRENT_EXPORTS,
                   metavar="N", help="requests decoded at once; another is answered 503 with Retry-After "
                                     f"(default {DEFAULT_MAX_CONCURRENT_EXPORTS})")
    q.set_defaults(handler=run)


def _address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{value!r} is not HOST:PORT (e.g. 127.0.0.1:4318)")
    return host.strip("[]") or "0.0.0.0", int(port)


def _positive(value: str) -> int:
    if not value.strip().isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of at least 1")
    return int(value)


def _size(value: str) -> int:
    return size_arg(value, minimum=1024)


def build_receiver(args: argparse.Namespace, settings: Settings) -> tuple[OtlpReceiver, Agent]:
    """The receiver, and the agent whose shipper, pseudonyms and counters it uses."""
    from inferwatch.agent.core import Agent, producer_from_settings

    agent = Agent(settings.agent, producer_from_settings(settings.bus))
    options = MappingOptions(
        capture=CaptureMode(args.capture) if args.capture else settings.agent.capture,
        principal_attributes=() if args.no_principal else tuple(
            args.principal_attributes or DEFAULT_PRINCIPAL_ATTRIBUTES),
        pseudonymize=agent.pseudonymizer.pseudonym,
        service=args.service or settings.agent.service,
    )
    queue_size = settings.agent.queue_size

    def room() -> int:
        return queue_size - agent.shipper.stats().queue_depth

    receiver = OtlpReceiver(agent.shipper, options, max_body_bytes=args.max_body_bytes, room=room,
                            capacity=queue_size, max_spans=args.max_spans,
                            max_concurrent_exports=args.max_concurrent_exports,
                            extra_metrics=agent.metrics_text, version=agent.version)
    return receiver, agent


class _Stopped(Exception):
    """SIGINT or SIGTERM, after uvicorn has shut down."""


def _stop(signum: int, frame: FrameType | None) -> None:
    raise _Stopped


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Serve until interrupted; 2 when the server's dependencies are missing."""
    from inferwatch.agent.core import AgentConfigError

    try:
        import uvicorn
    except ImportError:
        print("inferwatch: collect otlp needs uvicorn and opentelemetry-proto: "
              "pip install 'inferwatch[otlp]'", file=sys.stderr)
        return 2
    host, port = args.listen
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:  # first: a port in use is said plainly, before anything else starts
        sock = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    except OSError as exc:
        print(f"inferwatch: cannot listen on {shown}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    try:
        receiver, agent = build_receiver(args, settings)
    except AgentConfigError as exc:
        sock.close()
        print(f"inferwatch: {exc}", file=sys.stderr)
        return 2
    server = uvicorn.Server(uvicorn.Config(
        receiver, host=host, port=port, lifespan="on", access_log=False, log_level="warning",
        server_header=False,
    ))
    where = settings.bus.path if settings.bus.kind == "sqlite" else ",".join(settings.bus.bootstrap_servers)
    print(f"otlp: receiving on http://{shown}/v1/traces (capture={receiver.options.capture.value}, "
          f"bus={settings.bus.kind}:{where})", file=sys.stderr, flush=True)
    # uvicorn stops on SIGINT/SIGTERM, then re-raises the signal to the handlers it found: make
    # those end the run quietly, so the queue is sent and the counters printed either way.
    handlers = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run(sockets=[sock])
    except _Stopped:
        pass
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        agent.shutdown(timeout=5.0)
    stats = receiver.stats()
    summary = {
        "requests": sum(stats.requests.values()),
        "spans_received": stats.spans_received,
        "events_queued": stats.events_queued,
        "spans_skipped": sum(stats.spans_skipped.values()),
        "spans_rejected": stats.spans_rejected,
        **{f"shipper_{k}": v for k, v in dataclasses.asdict(agent.stats().shipper).items()},
    }
    if args.json:
        print(json.dumps(summary), flush=True)
    else:
        print("otlp: " + " ".join(f"{k}={v}" for k, v in summary.items()), file=sys.stderr, flush=True)
    return 0 if server.started else 1
