"""An OTLP/HTTP trace receiver that turns GenAI and OpenInference spans into inference events.

Applications already instrumented with OpenLLMetry, OpenInference or the OpenTelemetry GenAI
instrumentations point their OTLP/HTTP exporter at it
(``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://127.0.0.1:4318/v1/traces``); each span of a model
call becomes one :class:`~inferwatch.collectors.event.InferenceEvent` (see
:mod:`inferwatch.collectors.otlp_map`), and the events go to an :class:`EventSink` — in
``inferwatch collect otlp``, the agent's bounded queue and shipper thread, so the receiver has the
agent's counters, batching and fail-open behaviour.

:class:`OtlpReceiver` is a plain ASGI application (run it with uvicorn, or mount it in any ASGI
server); :meth:`OtlpReceiver.export` is the same work without HTTP. Responses follow the OTLP/HTTP
specification:

=====================================  =========================================================
request                                response
=====================================  =========================================================
``POST /v1/traces``, decodable         200, ``ExportTraceServiceResponse`` in the request's
                                       encoding; ``partial_success`` counts spans rejected
                                       (malformed ids or times), with the first reasons
body not protobuf / JSON OTLP          400, ``google.rpc.Status`` saying what is wrong
other ``Content-Type``                 415 (``Content-Encoding`` other than gzip/deflate too)
body over ``max_body_bytes``           413 (decompressed size counts: no gzip bombs)
more spans than ``max_spans``          200 with ``partial_success``: the first ``max_spans``
                                       spans are read, the rest rejected, naming the setting
event queue full                       503 with ``Retry-After``: nothing was taken, the
                                       exporter retries the batch
``max_concurrent_exports`` requests    503 with ``Retry-After``: the body is not decoded
already being decoded
other method / path                    405 / 404
``GET /healthz``, ``GET /metrics``     ``ok``; the counters in Prometheus text format
=====================================  =========================================================

Spans that are not model calls (HTTP handlers, agent and tool spans, …) are accepted and
counted as skipped, not rejected: an exporter sends the receiver all of an application's spans.
They are recognised from a few attributes before the rest of the span is decoded.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Final, Protocol

from inferwatch.collectors.event import AgentInfo, InferenceEvent
from inferwatch.collectors.ids import uuid7
from inferwatch.collectors.otlp_decode import (
    CODE_INTERNAL,
    CODE_INVALID_ARGUMENT,
    CODE_RESOURCE_EXHAUSTED,
    CODE_UNAVAILABLE,
    DecodedRequest,
    Encoding,
    OtlpDecodeError,
    OtlpTooLarge,
    OtlpUnsupported,
    SpanSelector,
    decode_request,
    decompress,
    encode_response,
    encode_status,
    media_type,
)
from inferwatch.collectors.otlp_map import (
    MODEL_CALLS,
    MappingOptions,
    SpanRejected,
    convention,
    span_to_event,
)

__all__ = ["DEFAULT_MAX_BODY_BYTES", "DEFAULT_MAX_CONCURRENT_EXPORTS", "DEFAULT_MAX_SPANS", "EventSink",
           "ExportResult", "MappingOptions", "OtlpReceiver", "ReceiverStats"]

TRACES_PATH: Final = "/v1/traces"
DEFAULT_MAX_BODY_BYTES: Final = 20 << 20  # the OpenTelemetry Collector's default limit
# An SDK exporter sends batches of 512 spans (OTEL_BSP_MAX_EXPORT_BATCH_SIZE); a Collector's batch
# processor 8192. 20 MiB of minimal spans is ~700k of them: reading all would cost ~440 MiB.
DEFAULT_MAX_SPANS: Final = 10_000
# Decoding is CPU work under the GIL: more requests at once add memory, not throughput.
DEFAULT_MAX_CONCURRENT_EXPORTS: Final = 2
_RETRY_AFTER_S: Final = 1
_LOG_EVERY_S: Final = 60.0
_CONTENT_TYPES: Final = {"protobuf": b"application/x-protobuf", "json": b"application/json"}

_log = logging.getLogger("inferwatch.collectors.otlp")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class EventSink(Protocol):
    """Where events go: ``offer`` queues one and returns at once, ``False`` if it was dropped.

    :class:`inferwatch.agent.shipper.EventShipper` is one.
    """

    def offer(self, event: InferenceEvent) -> bool: ...


@dataclass(frozen=True, slots=True)
class ExportResult:
    """One response: HTTP status, body, content type and extra headers."""

    status: int
    body: bytes
    content_type: bytes
    headers: tuple[tuple[bytes, bytes], ...] = ()
    events: int = 0


@dataclass(frozen=True, slots=True)
class ReceiverStats:
    """The receiver's counters since it started."""

    requests: dict[int, int]
    spans_received: int
    events_queued: int
    spans_skipped: dict[str, int]
    spans_rejected: int
    bytes_received: int
    internal_errors: int


def _distribution_version() -> str:
    try:
        return metadata.version("inferwatch")
    except metadata.PackageNotFoundError:
        return "0+unknown"


class OtlpReceiver:
    """The receiver: an ASGI app for ``POST /v1/traces`` that maps spans and hands events to ``sink``.

    ``room``, when given, says how many more events ``sink`` can take now; a request whose
    events do not fit is answered 503 (retryable) before any of them is queued — unless it has
    more events than ``capacity`` (the queue's size), which no retry would fit: those events are
    offered as they come and the ones refused are rejected spans (partial success), naming the
    setting to raise or the batch size to lower.
    At most ``max_spans`` spans of one request are read (the rest are rejected, partial
    success), and at most ``max_concurrent_exports`` requests are decoded at once over HTTP
    (another is answered 503 with ``Retry-After``).
    ``extra_metrics`` returns more Prometheus text for ``/metrics``. Each receiver is
    an event source of its own: ``agent.id`` is :attr:`id` and ``agent.seq`` counts its events
    from 0, so gaps downstream reveal loss, as for the agent.
    """

    def __init__(
        self,
        sink: EventSink,
        options: MappingOptions | None = None,
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        room: Callable[[], int] | None = None,
        capacity: int | None = None,
        extra_metrics: Callable[[], str] | None = None,
        version: str | None = None,
        max_spans: int = DEFAULT_MAX_SPANS,
        max_concurrent_exports: int = DEFAULT_MAX_CONCURRENT_EXPORTS,
        select: SpanSelector | None = MODEL_CALLS,
    ) -> None:
        if max_body_bytes < 1024:
            raise ValueError("max_body_bytes must be at least 1024")
        if max_spans < 1:
            raise ValueError(f"max_spans must be at least 1, got {max_spans}")
        if max_concurrent_exports < 1:
            raise ValueError(f"max_concurrent_exports must be at least 1, got {max_concurrent_exports}")
        self.sink = sink
        self.options = options or MappingOptions()
        self.max_body_bytes = max_body_bytes
        self.max_spans = max_spans
        self.max_concurrent_exports = max_concurrent_exports
        self.select = select
        self._decode_slots = threading.BoundedSemaphore(max_concurrent_exports)
        self.room = room
        self.capacity = capacity
        self.extra_metrics = extra_metrics
        self.version = version or _distribution_version()
        self.id = uuid7()
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self._requests = collections.Counter[int]()
        self._skipped = collections.Counter[str]()
        self._counts = collections.Counter[str]()
        self._last_logged: dict[str, float] = {}

    # --- the work, without HTTP -----------------------------------------------------------

    def export(
        self, body: bytes, content_type: str | None, content_encoding: str | None = None
    ) -> ExportResult:
        """Handle one ``POST /v1/traces`` body; never raises."""
        encoding = media_type(content_type)
        if encoding is None:
            return self._error(415, "json", CODE_INVALID_ARGUMENT,
                               f"Content-Type {content_type!r} is not supported: send application/x-protobuf "
                               "or application/json (OTLP/HTTP)")
        try:
            raw = decompress(body, content_encoding, self.max_body_bytes)
            decoded = decode_request(raw, encoding, max_spans=self.max_spans, select=self.select)
        except OtlpTooLarge as exc:
            return self._error(413, encoding, CODE_RESOURCE_EXHAUSTED, str(exc))
        except OtlpUnsupported as exc:
            return self._error(415, encoding, CODE_INVALID_ARGUMENT, str(exc))
        except OtlpDecodeError as exc:
            return self._error(400, encoding, CODE_INVALID_ARGUMENT, str(exc))
        except Exception as exc:  # a decoder bug must not take the receiver down
            self._internal_error(exc)
            return self._error(400, encoding, CODE_INVALID_ARGUMENT,
                               f"the request could not be decoded ({type(exc).__name__})")
        with self._lock:
            self._counts["bytes_received"] += len(body)
        try:
            return self._accept(decoded, encoding)
        except Exception as exc:  # a sink or mapping bug: say so, keep serving
            self._internal_error(exc)
            return self._error(500, encoding, CODE_INTERNAL, f"the receiver failed ({type(exc).__name__})")

    def _accept(self, decoded: DecodedRequest, encoding: Encoding) -> ExportResult:
        events: list[InferenceEvent] = []
        skipped = collections.Counter[str](decoded.skipped)
        if decoded.over_limit:
            decoded.reject(f"{decoded.over_limit} span(s) past the first {self.max_spans} of the request "
                           f"were not read (--max-spans {self.max_spans}): export smaller batches "
                           "(OTEL_BSP_MAX_EXPORT_BATCH_SIZE) or raise --max-spans", count=decoded.over_limit)
        # Every span of the request once: read, refused while decoding, skipped or past the cap
        # (counted before mapping, whose refusals are spans already read).
        received = len(decoded.spans) + decoded.rejected + sum(decoded.skipped.values())
        for span in decoded.spans:
            conv, reason = convention(span)
            if conv is None:
                skipped[reason or "not_genai"] += 1
                continue
            try:
                events.append(span_to_event(span, conv, self.options))
            except SpanRejected as exc:
                decoded.reject(str(exc))
            except Exception as exc:  # one odd span must not sink its batch
                self._internal_error(exc)
                decoded.reject(f"span {span.span_id} ({span.name!r}) could not be mapped "
                               f"({type(exc).__name__})")
        never_fits = self.capacity is not None and len(events) > self.capacity
        if events and self.room is not None and not never_fits and self.room() < len(events):
            with self._lock:
                self._counts["spans_received"] += received
            return self._error(503, encoding, CODE_UNAVAILABLE,
                               f"the event queue is full; retry the batch ({len(events)} events) later",
                               headers=((b"retry-after", str(_RETRY_AFTER_S).encode()),))
        queued = 0
        for event in events:
            event.agent = AgentInfo(id=self.id, seq=next(self._seq), version=self.version)
            if self.sink.offer(event):
                queued += 1
            elif never_fits:
                decoded.reject(f"the batch has {len(events)} model-call spans, more than the event queue "
                               f"holds (agent.queue_size {self.capacity}): export smaller batches "
                               "(OTEL_BSP_MAX_EXPORT_BATCH_SIZE) or raise INFERWATCH_AGENT__QUEUE_SIZE")
            else:
                decoded.reject("the event queue is full")
        with self._lock:
            self._requests[200] += 1
            self._counts["spans_received"] += received
            self._counts["events_queued"] += queued
            self._counts["spans_rejected"] += decoded.rejected
            self._skipped.update(skipped)
        message = ""
        if decoded.rejected:
            message = f"{decoded.rejected} span(s) rejected: " + "; ".join(decoded.reasons)
            self._log_limited("rejected", "event=otlp_spans_rejected count=%d first=%s",
                              decoded.rejected, decoded.reasons[0] if decoded.reasons else "")
        return ExportResult(200, encode_response(encoding, decoded.rejected, message),
                            _CONTENT_TYPES[encoding], events=queued)

    def _error(
        self, status: int, encoding: Encoding, code: int, message: str,
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ) -> ExportResult:
        with self._lock:
            self._requests[status] += 1
        self._log_limited(str(status), "event=otlp_request_refused status=%d reason=%s", status, message)
        return ExportResult(status, encode_status(encoding, code, message), _CONTENT_TYPES[encoding], headers)

    def _internal_error(self, exc: Exception) -> None:
        with self._lock:
            self._counts["internal_errors"] += 1
            first = self._counts["internal_errors"] == 1
        _log.log(logging.WARNING if first else logging.DEBUG, "event=otlp_internal_error error=%s",
                 type(exc).__name__, exc_info=first)

    def _log_limited(self, key: str, fmt: str, *args: Any) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last_logged.get(key)
            if last is not None and now - last < _LOG_EVERY_S:
                return
            self._last_logged[key] = now
        _log.warning(fmt, *args)

    def stats(self) -> ReceiverStats:
        """A snapshot of the counters."""
        with self._lock:
            counts = dict(self._counts)
            requests = dict(self._requests)
            skipped = dict(self._skipped)
        return ReceiverStats(
            requests=requests,
            spans_received=counts.get("spans_received", 0),
            events_queued=counts.get("events_queued", 0),
            spans_skipped=skipped,
            spans_rejected=counts.get("spans_rejected", 0),
            bytes_received=counts.get("bytes_received", 0),
            internal_errors=counts.get("internal_errors", 0),
        )

    def metrics_text(self) -> str:
        """The counters in the Prometheus text exposition format, then ``extra_metrics()`` (the
        agent's, in ``inferwatch collect otlp``)."""
        stats = self.stats()
        lines = ["# TYPE inferwatch_otlp_requests_total counter"]
        lines += [f'inferwatch_otlp_requests_total{{code="{code}"}} {n}'
                  for code, n in sorted(stats.requests.items())]
        counters = {"spans_received": stats.spans_received, "events_queued": stats.events_queued,
                    "spans_rejected": stats.spans_rejected, "bytes_received": stats.bytes_received,
                    "internal_errors": stats.internal_errors}
        for name, value in counters.items():
            lines += [f"# TYPE inferwatch_otlp_{name}_total counter", f"inferwatch_otlp_{name}_total {value}"]
        lines.append("# TYPE inferwatch_otlp_spans_skipped_total counter")
        lines += [f'inferwatch_otlp_spans_skipped_total{{reason="{reason}"}} {n}'
                  for reason, n in sorted(stats.spans_skipped.items())]
        text = "\n".join(lines) + "\n"
        if self.extra_metrics is not None:
            try:
                text += self.extra_metrics()
            except Exception as exc:
                self._internal_error(exc)
        return text

    # --- ASGI -----------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope.get("path", ""), scope.get("method", "GET")
        if path == TRACES_PATH:
            if method != "POST":
                await _respond(send, 405, b"only POST is allowed on /v1/traces\n", b"text/plain",
                               ((b"allow", b"POST"),))
                return
            result = await self._traces(scope, receive)
            await _respond(send, result.status, result.body, result.content_type, result.headers)
        elif path == "/healthz" and method in ("GET", "HEAD"):
            await _respond(send, 200, b"ok\n", b"text/plain")
        elif path == "/metrics" and method in ("GET", "HEAD"):
            await _respond(send, 200, self.metrics_text().encode(), b"text/plain; version=0.0.4")
        else:
            await _respond(send, 404, b"not found: the OTLP/HTTP trace endpoint is POST /v1/traces\n",
                           b"text/plain")

    async def _traces(self, scope: Scope, receive: Receive) -> ExportResult:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        content_type = headers.get("content-type")
        encoding = media_type(content_type)
        if encoding is None:
            return self.export(b"", content_type)  # 415 without reading the body
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body_bytes:
            return self._error(413, encoding, CODE_RESOURCE_EXHAUSTED,
                               f"the body is {length} bytes, over the {self.max_body_bytes}-byte limit")
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return self._error(400, encoding, CODE_INVALID_ARGUMENT, "the client went away mid-body")
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                return self._error(413, encoding, CODE_RESOURCE_EXHAUSTED,
                                   f"the body is over the {self.max_body_bytes}-byte limit")
            if not message.get("more_body", False):
                break
        # Decoding and mapping are CPU work: off the event loop, so the server keeps accepting; and
        # a few at a time, as a small gzip body can decode to far more memory than it takes.
        if not self._decode_slots.acquire(blocking=False):
            return self._error(503, encoding, CODE_UNAVAILABLE,
                               f"the receiver is already decoding {self.max_concurrent_exports} requests "
                               "(--max-concurrent-exports); retry later",
                               headers=((b"retry-after", str(_RETRY_AFTER_S).encode()),))
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                None, self.export, bytes(body), content_type, headers.get("content-encoding"))
        finally:
            self._decode_slots.release()


async def _respond(
    send: Send, status: int, body: bytes, content_type: bytes, headers: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *headers],
    })
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
