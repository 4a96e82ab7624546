"""In-process middleware overhead: what inferwatch adds to a request, next to one bare OTel span.

For each workload (a tabular predict and a ~1.6 KB chat turn) and each interface (ASGI, WSGI),
the same do-nothing model app runs three ways, in one process and one run:

* ``bare``: the app alone;
* ``otel span``: the app inside one bare OpenTelemetry span (``start_as_current_span``, SERVER
  kind, no attributes) on an SDK ``TracerProvider`` with a ``BatchSpanProcessor`` — the cost
  the issue's target is measured against;
* ``inferwatch``: the app inside :class:`~inferwatch.agent.InferwatchMiddleware` (or the WSGI
  one), with an agent whose spans go to an identical provider and processor, and whose events
  go to a producer that discards them (the bus's own cost is not the agent's).

Figures per variant, all as the cost added to ``bare``'s:

* **request path** — measured around each call, with the calls paced (one every ``--gap-ms``)
  so the background threads (the span processor's, the agent's shipper) do their work between
  requests, as on a server that is not saturated; the three variants take turns request by
  request, so drift and the machine's power states hit them alike. Two clocks: the wall time a
  client waits (median and mean) and the serving thread's CPU time (median). The ratio divides
  the middleware's added cost by the span's. **Target: at most 1.6 times.**
* **CPU per request, all threads** — process CPU time over a closed loop of the same requests
  plus the final flush: extraction, redaction, event building and encoding on the shipper
  thread included. This is the honest total and it is not held to the target: reading bodies
  and redacting text is work a span does not do; the agent does it off the request path.

Absolute figures depend on the machine (a core that idles between paced calls runs them
slower); compare the ratios.

    .venv/bin/python benchmarks/agent_overhead.py [--requests 3000] [--gap-ms 0.5]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import time
from collections.abc import Callable, Coroutine, Iterable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind

from inferwatch.agent import Agent, InferwatchMiddleware, InferwatchWSGIMiddleware
from inferwatch.collectors.settings import AgentSettings

TARGET = 1.6

Message = MutableMapping[str, Any]
ASGIApp = Callable[[MutableMapping[str, Any], Any, Any], Coroutine[Any, Any, None]]
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class NullExporter(SpanExporter):
    """Takes the spans and drops them: the exporter's network cost is not the span's."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class NullProducer:
    """Takes the events and drops them: the bus's cost is not the agent's."""

    def send(self, value: bytes, key: str | None = None) -> None:
        pass

    def send_many(self, records: Sequence[tuple[bytes, str | None]]) -> None:
        pass

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class Workload:
    name: str
    path: str
    request: bytes
    response: bytes


def workloads() -> list[Workload]:
    tabular = Workload(
        "tabular predict",
        "/predict",
        json.dumps({"features": {"age": 41, "plan": "pro", "tenure_months": 12.5, "monthly_spend": 79.9,
                                 "support_calls": 2, "region": "north", "autopay": True}}).encode(),
        json.dumps({"label": "stay", "score": 0.91}).encode(),
    )
    prompt = (
        "Please summarise the following customer e-mail in two sentences and suggest a reply. "
        "Hello, I ordered a pair of walking boots on the 3rd and they arrived with a torn sole. "
        "I would like a replacement in the same size, or a refund if that is not possible. "
    ) * 5
    chat = Workload(
        "chat turn (1.6 KB)",
        "/v1/chat/completions",
        json.dumps({"model": "tiny-llm", "max_tokens": 256, "messages": [
            {"role": "system", "content": "You are a helpful support assistant."},
            {"role": "user", "content": prompt},
        ]}).encode(),
        json.dumps({"model": "tiny-llm", "choices": [{"index": 0, "finish_reason": "stop", "message": {
            "role": "assistant", "content": "The customer received boots with a torn sole and wants a "
            "replacement or a refund. Reply: apologise, offer a replacement in the same size."}}],
            "usage": {"prompt_tokens": 380, "completion_tokens": 41}}).encode(),
    )
    return [tabular, chat]


# -- ASGI ------------------------------------------------------------------------------------------


def asgi_model(response: bytes) -> ASGIApp:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(response)).encode())]

    async def app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": response})

    return app


def asgi_spanned(app: ASGIApp, provider: TracerProvider) -> ASGIApp:
    tracer = provider.get_tracer("bench")

    async def wrapped(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        with tracer.start_as_current_span("POST", kind=SpanKind.SERVER):
            await app(scope, receive, send)

    return wrapped


def asgi_caller(app: ASGIApp, workload: Workload) -> Callable[[], None]:
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "path": workload.path, "raw_path": workload.path.encode(), "query_string": b"",
        "headers": [(b"host", b"model"), (b"content-type", b"application/json"),
                    (b"x-api-key", b"key-123"), (b"content-length", str(len(workload.request)).encode())],
        "client": ("203.0.113.9", 50000), "server": ("127.0.0.1", 8000),
    }
    request = {"type": "http.request", "body": workload.request, "more_body": False}

    async def receive() -> Message:
        return request

    async def send(message: Message) -> None:
        pass

    def call() -> None:
        # Nothing in these apps waits on I/O, so the coroutine runs to the end in one step.
        coroutine = app(dict(scope), receive, send)
        try:
            coroutine.send(None)
        except StopIteration:
            return
        raise RuntimeError("the app suspended: this harness drives it without an event loop")

    return call


# -- WSGI ------------------------------------------------------------------------------------------


def wsgi_model(response: bytes) -> WSGIApp:
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(response)))]

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        start_response("200 OK", headers)
        return [response]

    return app


def wsgi_spanned(app: WSGIApp, provider: TracerProvider) -> WSGIApp:
    tracer = provider.get_tracer("bench")

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        with tracer.start_as_current_span("POST", kind=SpanKind.SERVER):
            return list(app(environ, start_response))

    return wrapped


def wsgi_caller(app: WSGIApp, workload: Workload) -> Callable[[], None]:
    base = {
        "REQUEST_METHOD": "POST", "PATH_INFO": workload.path, "QUERY_STRING": "", "SERVER_NAME": "model",
        "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "203.0.113.9",
        "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(workload.request)),
        "HTTP_HOST": "model", "HTTP_X_API_KEY": "key-123", "wsgi.url_scheme": "http",
    }

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        return None

    def call() -> None:
        environ = dict(base)
        environ["wsgi.input"] = io.BytesIO(workload.request)
        result = app(environ, start_response)
        try:
            for _ in result:
                pass
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()

    return call


# -- measuring -------------------------------------------------------------------------------------


@dataclass
class Variant:
    name: str
    call: Callable[[], None]
    drain: Callable[[], None]
    wall: list[int]
    thread: list[int]


def request_path(variants: list[Variant], requests: int, gap_s: float) -> None:
    """Paced calls, the variants taking turns; each call's wall and thread CPU time is noted."""
    for variant in variants:  # warm up: imports, caches, first spans
        for _ in range(300):
            variant.call()
        variant.drain()
    next_slot = time.perf_counter()
    for _ in range(requests):
        for variant in variants:
            next_slot += gap_s
            cpu = time.thread_time_ns()
            began = time.perf_counter_ns()
            variant.call()
            variant.wall.append(time.perf_counter_ns() - began)
            variant.thread.append(time.thread_time_ns() - cpu)
            pause = next_slot - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            else:
                next_slot = time.perf_counter()
    for variant in variants:
        variant.drain()


def cpu_per_request(variant: Variant, requests: int) -> float:
    """Process CPU seconds (all threads) per call over a closed loop, the final drain included."""
    variant.drain()
    began = time.process_time()
    for _ in range(requests):
        variant.call()
    variant.drain()
    return (time.process_time() - began) / requests


def build(interface: str, workload: Workload) -> tuple[list[Variant], Agent, list[TracerProvider]]:
    span_provider = TracerProvider()
    span_provider.add_span_processor(BatchSpanProcessor(NullExporter()))
    agent_provider = TracerProvider()
    agent_provider.add_span_processor(BatchSpanProcessor(NullExporter()))
    settings = AgentSettings(
        service="bench", hmac_key="bench-key-0123456789abcdef", queue_size=200_000, stats_log_interval_s=0
    )
    agent = Agent(settings, NullProducer(), tracer_provider=agent_provider)

    def nothing() -> None:
        pass

    if interface == "ASGI":
        model = asgi_model(workload.response)
        calls = [
            asgi_caller(model, workload),
            asgi_caller(asgi_spanned(model, span_provider), workload),
            asgi_caller(InferwatchMiddleware(model, agent=agent), workload),  # type: ignore[arg-type]
        ]
    else:
        wsgi = wsgi_model(workload.response)
        calls = [
            wsgi_caller(wsgi, workload),
            wsgi_caller(wsgi_spanned(wsgi, span_provider), workload),
            wsgi_caller(InferwatchWSGIMiddleware(wsgi, agent=agent), workload),
        ]
    drains = [
        nothing,
        lambda: span_provider.force_flush(),
        lambda: drain_agent(agent, agent_provider),
    ]
    names = ["bare", "otel span", "inferwatch"]
    variants = [Variant(n, c, d, [], []) for n, c, d in zip(names, calls, drains, strict=True)]
    return variants, agent, [span_provider, agent_provider]


def drain_agent(agent: Agent, provider: TracerProvider) -> None:
    agent.flush(60.0)
    provider.force_flush()


@dataclass(frozen=True)
class Added:
    """Microseconds added over ``bare`` by the span and by the middleware, and their ratio."""

    span: float
    middleware: float

    @property
    def ratio(self) -> float:
        return self.middleware / self.span


@dataclass
class Row:
    interface: str
    workload: str
    wall_median: Added
    wall_mean: Added
    thread_median: Added
    cpu_total: Added


def added(values: list[float]) -> Added:
    bare, span, middleware = values
    return Added(span - bare, middleware - bare)


def measure(interface: str, workload: Workload, requests: int, gap_s: float) -> Row:
    variants, agent, providers = build(interface, workload)
    try:
        request_path(variants, requests, gap_s)
        row = Row(
            interface,
            workload.name,
            wall_median=added([statistics.median(v.wall) / 1e3 for v in variants]),
            wall_mean=added([statistics.fmean(v.wall) / 1e3 for v in variants]),
            thread_median=added([statistics.median(v.thread) / 1e3 for v in variants]),
            cpu_total=added([cpu_per_request(v, requests) * 1e6 for v in variants]),
        )
        stats = agent.stats()
        if stats.internal_errors or stats.shipper.dropped:
            raise RuntimeError(f"the agent lost events or failed: {stats}")
        return row
    finally:
        agent.shutdown(10.0)
        for provider in providers:
            provider.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=3000, help="paced requests per variant")
    parser.add_argument("--gap-ms", type=float, default=0.5, help="time from one call's start to the next's")
    args = parser.parse_args(argv)
    rows = [
        measure(interface, workload, args.requests, args.gap_ms / 1000)
        for interface in ("ASGI", "WSGI")
        for workload in workloads()
    ]
    print(
        f"\nAdded cost per request over the bare app, in µs: OTel span / inferwatch (ratio). "
        f"{args.requests} paced requests per variant, one call every {args.gap_ms:g} ms, variants "
        "interleaved; CPU all threads: closed loop, flush included.\n"
    )
    print("| interface | workload | wall p50 | wall mean | thread CPU p50 | CPU all threads |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        cells = [cell(r.wall_median), cell(r.wall_mean), cell(r.thread_median), cell(r.cpu_total)]
        print(f"| {r.interface} | {r.workload} | " + " | ".join(cells) + " |")
    worst = max(max(r.wall_median.ratio, r.thread_median.ratio) for r in rows)
    verdict = "met" if worst <= TARGET else "NOT met"
    print(
        f"\nTarget: request-path added cost at most {TARGET} times one bare OTel span (p50, wall and "
        f"thread CPU); worst ratio {worst:.2f}: {verdict}"
    )
    return 0


def cell(value: Added) -> str:
    return f"{value.span:.1f} / {value.middleware:.1f} ({value.ratio:.2f}x)"


if __name__ == "__main__":
    raise SystemExit(main())
