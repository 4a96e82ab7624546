"""The OTLP receiver's bounds on one request's work: spans read per request, spans decoded whole,
requests decoded at once. A ~50 KB gzip body of minimal spans used to cost ~440 MiB and 4 s."""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from inferwatch.collectors.event import InferenceEvent
from inferwatch.collectors.otlp import DEFAULT_MAX_SPANS, ExportResult, OtlpReceiver
from inferwatch.collectors.otlp_decode import decode_request
from inferwatch.collectors.otlp_map import MODEL_CALLS


class Sink:
    def __init__(self) -> None:
        self.events: list[InferenceEvent] = []

    def offer(self, event: InferenceEvent) -> bool:
        self.events.append(event)
        return True


def minimal_spans(count: int) -> bytes:
    """The reviewer's body: ``count`` spans with ids and nothing else, as gzip protobuf."""
    request = trace_service_pb2.ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add().spans
    for _ in range(count):
        span = spans.add()
        span.trace_id, span.span_id = b"\x01" * 16, b"\x02" * 8
    return gzip.compress(request.SerializeToString(), 9)


def chat_spans(count: int, *, noise: int = 0) -> dict[str, Any]:
    """OTLP/JSON with ``count`` model-call spans, then ``noise`` HTTP-handler spans."""
    def span(i: int, attributes: list[dict[str, Any]]) -> dict[str, Any]:
        return {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": f"{i + 1:016x}", "name": "chat m",
                "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000001000000000",
                "attributes": attributes}

    model = [{"key": "gen_ai.request.model", "value": {"stringValue": "m"}}]
    http = [{"key": "http.route", "value": {"stringValue": "/"}}]
    spans = [span(i, model) for i in range(count)] + [span(count + i, http) for i in range(noise)]
    return {"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}


def test_a_small_gzip_body_of_many_spans_reads_only_max_spans_of_them() -> None:
    sink = Sink()
    receiver = OtlpReceiver(sink, max_spans=1000)
    wire = minimal_spans(50_000)
    assert len(wire) < 5_000
    result = receiver.export(wire, "application/x-protobuf", "gzip")
    assert result.status == 200
    answer = trace_service_pb2.ExportTraceServiceResponse.FromString(result.body).partial_success
    assert answer.rejected_spans == 49_000
    assert "not read (--max-spans 1000)" in answer.error_message
    assert "OTEL_BSP_MAX_EXPORT_BATCH_SIZE" in answer.error_message
    stats = receiver.stats()
    counts = (stats.spans_received, stats.spans_rejected, stats.spans_skipped)
    assert counts == (50_000, 49_000, {"not_genai": 1000})


def test_spans_over_the_limit_are_a_partial_success_and_the_first_ones_become_events() -> None:
    sink = Sink()
    receiver = OtlpReceiver(sink, max_spans=2)
    result = receiver.export(json.dumps(chat_spans(3)).encode(), "application/json")
    assert result.status == 200
    partial = json.loads(result.body)["partialSuccess"]
    assert partial["rejectedSpans"] == "1"
    assert "1 span(s) past the first 2 of the request were not read (--max-spans 2)" in (
        partial["errorMessage"])
    assert [e.span_id for e in sink.events] == [f"{1:016x}", f"{2:016x}"]


def test_the_default_limit_takes_a_collectors_batch() -> None:
    assert DEFAULT_MAX_SPANS >= 8192  # the OpenTelemetry Collector's batch processor sends 8192
    sink = Sink()
    result = OtlpReceiver(sink).export(json.dumps(chat_spans(3, noise=2)).encode(), "application/json")
    assert (result.status, result.body, len(sink.events)) == (200, b"{}", 3)


@pytest.mark.parametrize("encoding", ["json", "protobuf"])
def test_spans_that_are_not_model_calls_are_counted_without_being_built(encoding: str) -> None:
    document = chat_spans(1, noise=3)
    # a malformed attribute on a span that is skipped anyway: not read, so not a rejection
    document["resourceSpans"][0]["scopeSpans"][0]["spans"][1]["attributes"].append(
        {"key": "x", "value": {"intValue": "not a number"}})
    if encoding == "json":
        body = json.dumps(document).encode()
    else:
        request = trace_service_pb2.ExportTraceServiceRequest()
        for i, kind in enumerate(("gen_ai.request.model", "http.route", "http.route", "http.route")):
            span = request.resource_spans.add().scope_spans.add().spans.add()
            span.trace_id, span.span_id = b"\x01" * 16, (i + 1).to_bytes(8, "big")
            attribute = span.attributes.add()
            attribute.key, attribute.value.string_value = kind, "m"
        body = request.SerializeToString()
    decoded = decode_request(body, encoding, select=MODEL_CALLS)  # type: ignore[arg-type]
    assert [s.span_id for s in decoded.spans] == [f"{1:016x}"]
    assert (decoded.skipped, decoded.rejected) == ({"not_genai": 3}, 0)
    whole = decode_request(body, encoding)  # type: ignore[arg-type]
    assert len(whole.spans) + whole.rejected == 4


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_spans must be at least 1, got 0"):
        OtlpReceiver(Sink(), max_spans=0)
    with pytest.raises(ValueError, match="max_concurrent_exports must be at least 1"):
        OtlpReceiver(Sink(), max_concurrent_exports=0)


def test_cli_options() -> None:
    from inferwatch.cli import build_parser

    given = ["collect", "otlp", "--max-spans", "500", "--max-concurrent-exports", "3"]
    args = build_parser().parse_args(given)
    assert (args.max_spans, args.max_concurrent_exports) == (500, 3)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["collect", "otlp", "--max-spans", "0"])


def test_a_request_beyond_max_concurrent_exports_is_answered_503_with_retry_after() -> None:
    receiver = OtlpReceiver(Sink(), max_concurrent_exports=1)
    entered, release = threading.Event(), threading.Event()
    export = receiver.export

    def slow_export(*args: Any) -> ExportResult:
        entered.set()
        release.wait(10)
        return export(*args)

    receiver.export = slow_export  # type: ignore[method-assign]
    body = json.dumps(chat_spans(1)).encode()
    headers = {"content-type": "application/json"}

    async def scenario() -> tuple[httpx.Response, httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app=receiver)
        async with httpx.AsyncClient(transport=transport, base_url="http://otlp") as client:
            first = asyncio.create_task(client.post("/v1/traces", content=body, headers=headers))
            while not entered.is_set():
                await asyncio.sleep(0.01)
            second = await client.post("/v1/traces", content=body, headers=headers)
            release.set()
            done = await first
            third = await client.post("/v1/traces", content=body, headers=headers)  # the slot is free again
            return done, second, third

    first, second, third = asyncio.run(scenario())
    assert (first.status_code, second.status_code, third.status_code) == (200, 503, 200)
    assert second.headers["retry-after"] == "1"
    assert "--max-concurrent-exports" in second.json()["message"]


def test_a_span_refused_while_mapping_is_received_once() -> None:
    # A model-call span with no start time is read, then refused by the mapping: one span received,
    # one rejected (it was counted twice, once read and once refused).
    body = chat_spans(2)
    del body["resourceSpans"][0]["scopeSpans"][0]["spans"][1]["startTimeUnixNano"]
    receiver = OtlpReceiver(Sink())
    assert receiver.export(json.dumps(body).encode(), "application/json").status == 200
    stats = receiver.stats()
    assert (stats.spans_received, stats.spans_rejected, stats.events_queued) == (2, 1, 1)
