"""The OTLP/HTTP receiver over real HTTP: the OpenTelemetry SDK's own OTLP exporter, JSON posted by
hand per the specification, bad payloads, back-pressure, and the ``inferwatch collect otlp`` command."""

from __future__ import annotations

import base64
import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from google.rpc import status_pb2
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from inferwatch.agent.principal import Pseudonymizer
from inferwatch.agent.shipper import EventShipper
from inferwatch.collectors.event import InferenceEvent, decode_event
from inferwatch.collectors.otlp import OtlpReceiver
from inferwatch.collectors.otlp_map import MappingOptions
from inferwatch.collectors.settings import CaptureMode
from inferwatch.collectors.sqlite_bus import SQLiteBus

HMAC_KEY = "test-hmac-key"
LIMIT = 1 << 20


class ListSink:
    """Collects offered events; refuses once ``capacity`` is reached."""

    def __init__(self, capacity: int | None = None) -> None:
        self.events: list[InferenceEvent] = []
        self.capacity = capacity
        self.lock = threading.Lock()

    def offer(self, event: InferenceEvent) -> bool:
        with self.lock:
            if self.capacity is not None and len(self.events) >= self.capacity:
                return False
            self.events.append(event)
            return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Served:
    def __init__(self, receiver: OtlpReceiver) -> None:
        self.receiver = receiver
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1/traces"
        self.server = uvicorn.Server(uvicorn.Config(receiver, host="127.0.0.1", port=self.port,
                                                    log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "receiver did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def sink() -> ListSink:
    return ListSink()


@pytest.fixture
def served(sink: ListSink) -> Iterator[Served]:
    options = MappingOptions(capture=CaptureMode.REDACTED, pseudonymize=Pseudonymizer(HMAC_KEY).pseudonym)
    with Served(OtlpReceiver(sink, options, max_body_bytes=LIMIT)) as s:
        yield s


def _provider(exporter: Any, *, batch: bool = False) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": "support-bot"}))
    provider.add_span_processor(BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter))
    return provider


def _chat_span(provider: TracerProvider, prompt: str = "hello, mail me at bob@example.com",
               user: str = "alice") -> tuple[str, str]:
    tracer = provider.get_tracer("test.genai")
    with tracer.start_as_current_span("chat gpt-4o", kind=SpanKind.CLIENT) as span:
        span.set_attributes({
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.response.model": "gpt-4o-2024-08-06",
            "gen_ai.request.max_tokens": 200,
            "gen_ai.usage.input_tokens": 12,
            "gen_ai.usage.output_tokens": 7,
            "gen_ai.response.finish_reasons": ["stop"],
            "enduser.id": user,
            "gen_ai.input.messages": json.dumps([
                {"role": "system", "parts": [{"type": "text", "content": "You are helpful."}]},
                {"role": "user", "parts": [{"type": "text", "content": prompt}]},
            ]),
            "gen_ai.output.messages": json.dumps([
                {"role": "assistant", "parts": [{"type": "text", "content": "Sure, call +44 20 7946 0958."}],
                 "finish_reason": "stop"},
            ]),
        })
        ctx = span.get_span_context()
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"


def _wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


# --- the real SDK exporter ----------------------------------------------------------------


@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip, Compression.Deflate])
def test_sdk_otlp_exporter_spans_become_events(
    served: Served, sink: ListSink, compression: Compression
) -> None:
    exporter = OTLPSpanExporter(endpoint=served.url, compression=compression)
    provider = _provider(exporter)
    with provider.get_tracer("test.http").start_as_current_span("GET /health", kind=SpanKind.SERVER):
        pass  # an ordinary span: accepted and skipped
    trace_id, span_id = _chat_span(provider)
    provider.shutdown()

    assert len(sink.events) == 1
    event = sink.events[0]
    assert (event.trace_id, event.span_id) == (trace_id, span_id)
    assert event.service == "support-bot"
    assert event.model == "gpt-4o"
    assert event.operation == "chat"
    assert event.status == 200
    assert event.input.text == "hello, mail me at [EMAIL]"
    assert event.input.chars == len("You are helpful.") + len("hello, mail me at bob@example.com")
    assert (event.input.tokens, event.output.tokens) == (12, 7)
    assert event.output.text == "Sure, call [PHONE]."
    assert event.output.finish_reason == "stop"
    assert event.attributes["max_tokens"] == 200
    assert event.attributes["response_model"] == "gpt-4o-2024-08-06"
    assert event.principal == Pseudonymizer(HMAC_KEY).pseudonym("alice")
    assert event.agent is not None
    assert event.agent.id == served.receiver.id
    assert event.agent.seq == 0
    assert event.duration_ms >= 0
    stats = served.receiver.stats()
    assert stats.spans_received == 2
    assert stats.events_queued == 1
    assert stats.spans_skipped == {"not_genai": 1}


def test_batch_processor_many_spans_none_lost(served: Served, sink: ListSink) -> None:
    exporter = OTLPSpanExporter(endpoint=served.url, compression=Compression.Gzip)
    provider = _provider(exporter, batch=True)
    ids = {_chat_span(provider, prompt=f"question {i}", user=f"user-{i % 7}") for i in range(300)}
    provider.force_flush()
    provider.shutdown()
    assert {(e.trace_id, e.span_id) for e in sink.events} == ids
    assert sorted(e.agent.seq for e in sink.events if e.agent) == list(range(300))


# --- JSON, per the specification -----------------------------------------------------------


def _spec_json(trace_id: str = "5b8efff798038103d269b633813fc60c", span_id: str = "eee19b7ec3c1b174",
               **span_extra: Any) -> dict[str, Any]:
    """The shape of the specification's JSON example, with GenAI attributes."""
    span = {
        "traceId": trace_id,
        "spanId": span_id,
        "parentSpanId": "eee19b7ec3c1b173",
        "name": "chat llama-3",
        "startTimeUnixNano": "1544712660000000000",
        "endTimeUnixNano": "1544712661500000000",
        "kind": 3,
        "attributes": [
            {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
            {"key": "gen_ai.request.model", "value": {"stringValue": "llama-3"}},
            {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "42"}},
            {"key": "gen_ai.usage.output_tokens", "value": {"intValue": 9}},
            {"key": "gen_ai.request.temperature", "value": {"doubleValue": 0.2}},
            {"key": "gen_ai.is_streaming", "value": {"boolValue": True}},
            {"key": "gen_ai.response.finish_reasons",
             "value": {"arrayValue": {"values": [{"stringValue": "length"}]}}},
            {"key": "gen_ai.prompt.0.role", "value": {"stringValue": "user"}},
            {"key": "gen_ai.prompt.0.content", "value": {"stringValue": "what is 2+2?"}},
            {"key": "gen_ai.completion.0.content", "value": {"stringValue": "4"}},
            {"key": "enduser.id", "value": {"stringValue": "carol"}},
        ],
        "events": [],
        "status": {},
        **span_extra,
    }
    return {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "my.service"}}]},
        "scopeSpans": [{"scope": {"name": "my.library", "version": "1.0.0"}, "spans": [span]}],
    }]}


def test_json_request_per_spec(served: Served, sink: ListSink) -> None:
    response = httpx.post(served.url, json=_spec_json())
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {}
    event = sink.events[0]
    assert event.trace_id == "5b8efff798038103d269b633813fc60c"
    assert event.span_id == "eee19b7ec3c1b174"
    assert event.time == datetime(2018, 12, 13, 14, 51, 0, tzinfo=UTC)
    assert event.duration_ms == pytest.approx(1500.0)
    assert event.service == "my.service"
    assert event.model == "llama-3"
    assert (event.input.text, event.output.text) == ("what is 2+2?", "4")
    assert (event.input.tokens, event.output.tokens) == (42, 9)
    assert event.output.finish_reason == "length"
    assert event.attributes["temperature"] == 0.2
    assert event.attributes["stream"] is True
    assert event.attributes["parent_span_id"] == "eee19b7ec3c1b173"
    assert event.attributes["instrumentation"] == "my.library"
    assert event.principal == Pseudonymizer(HMAC_KEY).pseudonym("carol")


def test_json_from_sdk_spans_gzip(served: Served, sink: ListSink) -> None:
    """Spans made by the SDK, written as OTLP/JSON (hex ids, string int64s) and gzip-compressed."""
    memory = InMemorySpanExporter()
    provider = _provider(memory)
    trace_id, span_id = _chat_span(provider)
    document = _otlp_json(memory.get_finished_spans())
    body = gzip.compress(json.dumps(document).encode())
    response = httpx.post(served.url, content=body,
                          headers={"content-type": "application/json", "content-encoding": "gzip"})
    assert response.status_code == 200, response.text
    assert [(e.trace_id, e.span_id) for e in sink.events] == [(trace_id, span_id)]
    assert sink.events[0].input.text == "hello, mail me at [EMAIL]"


def _otlp_json(spans: Any) -> dict[str, Any]:
    """OTLP/JSON of SDK spans: protobuf JSON mapping, with ids turned from base64 into hex."""
    from google.protobuf.json_format import MessageToDict

    document = MessageToDict(encode_spans(spans))
    for resource_spans in document["resourceSpans"]:
        for scope_spans in resource_spans["scopeSpans"]:
            for span in scope_spans["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex()
    return document


def test_partial_success_for_bad_ids(served: Served, sink: ListSink) -> None:
    document = _spec_json()
    good = document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    base64_id = dict(good, traceId=base64.b64encode(bytes.fromhex(good["traceId"])).decode())
    zero_id = dict(good, spanId="0" * 16)
    document["resourceSpans"][0]["scopeSpans"][0]["spans"] += [base64_id, zero_id]
    response = httpx.post(served.url, json=document)
    assert response.status_code == 200
    partial = response.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "2"
    assert "not base64" in partial["errorMessage"]
    assert len(sink.events) == 1
    assert served.receiver.stats().spans_rejected == 2


def test_protobuf_partial_success_decodes_with_generated_class(served: Served, sink: ListSink) -> None:
    request = trace_service_pb2.ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id, span.name = b"\x01" * 16, b"\x02" * 5, "chat"
    attribute = span.attributes.add()
    attribute.key, attribute.value.string_value = "gen_ai.request.model", "m"
    response = httpx.post(served.url, content=request.SerializeToString(),
                          headers={"content-type": "application/x-protobuf"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-protobuf"
    parsed = trace_service_pb2.ExportTraceServiceResponse.FromString(response.content)
    assert parsed.partial_success.rejected_spans == 1
    assert "spanId" in parsed.partial_success.error_message


# --- bad requests --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "headers", "status", "words"),
    [
        (b"{not json", {"content-type": "application/json"}, 400, "not valid JSON"),
        (b'{"resourceSpans": {}}', {"content-type": "application/json"}, 400, "must be an array"),
        (b"\xff\xff\xff\xff", {"content-type": "application/x-protobuf"}, 400, "not a protobuf"),
        (b"x" * 10, {"content-type": "application/json", "content-encoding": "gzip"}, 400, "gzip"),
        (b"{}", {"content-type": "application/json", "content-encoding": "br"}, 415, "Content-Encoding"),
        (b"{}", {"content-type": "text/plain"}, 415, "application/x-protobuf"),
        (b"{}", {}, 415, "Content-Type"),
        (b" " * (LIMIT + 1), {"content-type": "application/json"}, 413, "limit"),
        (gzip.compress(b" " * (2 * LIMIT)), {"content-type": "application/json", "content-encoding": "gzip"},
         413, "decompressed"),
    ],
)
def test_bad_requests_get_clear_errors(
    served: Served, sink: ListSink, body: bytes, headers: dict[str, str], status: int, words: str
) -> None:
    response = httpx.post(served.url, content=body, headers=headers)
    assert response.status_code == status
    if response.headers["content-type"] == "application/x-protobuf":
        message = status_pb2.Status.FromString(response.content).message
    else:
        message = response.json()["message"]
    assert words in message
    assert sink.events == []
    # the server is still fine afterwards
    assert httpx.post(served.url, json=_spec_json()).status_code == 200


def test_chunked_body_over_the_limit(served: Served) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(LIMIT // 1024 + 1):
            yield b" " * 1024

    response = httpx.post(served.url, content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_other_methods_and_paths(served: Served) -> None:
    base = served.url.removesuffix("/v1/traces")
    assert httpx.get(served.url).status_code == 405
    assert httpx.post(base + "/v1/logs", json={}).status_code == 404
    assert httpx.get(base + "/healthz").text == "ok\n"
    httpx.post(served.url, json=_spec_json())
    metrics = httpx.get(base + "/metrics").text
    assert "inferwatch_otlp_events_queued_total 1" in metrics
    assert 'inferwatch_otlp_requests_total{code="200"} 1' in metrics


def test_full_queue_answers_503_and_the_exporter_retries() -> None:
    """Back-pressure: when the queue cannot take a batch, nothing is taken and the client retries."""
    sink = ListSink()
    room = {"free": 0}
    receiver = OtlpReceiver(sink, room=lambda: room["free"])
    with Served(receiver) as served:
        response = httpx.post(served.url, json=_spec_json())
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert sink.events == []
        room["free"] = 10
        exporter = OTLPSpanExporter(endpoint=served.url, timeout=20)
        room["free"] = 0
        threading.Timer(0.5, lambda: room.update(free=10)).start()
        provider = _provider(exporter)
        trace_id, _ = _chat_span(provider)  # SimpleSpanProcessor: export retries until room
        provider.shutdown()
    assert [e.trace_id for e in sink.events] == [trace_id]
    assert sink.events[0].agent is not None
    assert sink.events[0].agent.seq == 0


def test_a_batch_larger_than_the_whole_queue_is_not_answered_503_forever() -> None:
    """503 says "retry": for a batch no empty queue could hold, what fits is queued and the rest
    rejected (partial success, final) with the setting to change."""
    sink = ListSink(capacity=1)
    document = _spec_json()
    spans = document["resourceSpans"][0]["scopeSpans"][0]["spans"]
    spans.append(dict(spans[0], spanId="eee19b7ec3c1b175"))
    spans.append(dict(spans[0], spanId="fff19b7ec3c1b175"))
    with Served(OtlpReceiver(sink, room=lambda: 1, capacity=1)) as served:
        response = httpx.post(served.url, json=document)
    assert response.status_code == 200
    success = response.json()["partialSuccess"]
    assert success["rejectedSpans"] == "2"
    assert "more than the event queue holds (agent.queue_size 1)" in success["errorMessage"]
    assert success["errorMessage"].count("agent.queue_size") == 1  # one reason, not one per span
    assert len(sink.events) == 1


def test_sink_refusal_is_reported_as_rejected_spans() -> None:
    sink = ListSink(capacity=1)
    document = _spec_json()
    spans = document["resourceSpans"][0]["scopeSpans"][0]["spans"]
    spans.append(dict(spans[0], spanId="eee19b7ec3c1b175"))
    with Served(OtlpReceiver(sink)) as served:
        response = httpx.post(served.url, json=document)
    assert response.status_code == 200
    assert response.json()["partialSuccess"]["rejectedSpans"] == "1"
    assert "queue is full" in response.json()["partialSuccess"]["errorMessage"]
    assert len(sink.events) == 1


# --- through the agent's shipper to the bus, and the command -------------------------------


def test_events_reach_the_bus_through_the_agent_shipper(tmp_path: Path) -> None:
    bus = SQLiteBus(tmp_path / "bus.db")
    shipper = EventShipper(bus.producer(), queue_size=100, batch_size=10, flush_interval_s=0.05)
    receiver = OtlpReceiver(shipper, MappingOptions(capture=CaptureMode.NONE))
    with Served(receiver) as served:
        provider = _provider(OTLPSpanExporter(endpoint=served.url))
        ids = [_chat_span(provider) for _ in range(5)]
        provider.shutdown()
        assert shipper.flush(10)
    shipper.shutdown()
    records = bus.consumer("g").poll(100, timeout=1.0)
    events = [decode_event(r.value) for r in records]
    assert [(e.trace_id, e.span_id) for e in events] == ids
    assert all(e.input.text is None and e.output.text is None for e in events)  # capture=none
    assert all(e.input.chars and e.input.tokens == 12 for e in events)
    assert shipper.stats().sent == 5


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_collect_otlp_command(tmp_path: Path, stop: signal.Signals) -> None:
    """The command end to end; stopped either way, it sends what it queued and prints its counters."""
    port = _free_port()
    bus_path = tmp_path / "bus.db"
    env = dict(os.environ, INFERWATCH_AGENT__HMAC_KEY=HMAC_KEY, INFERWATCH_AGENT__FLUSH_INTERVAL_S="0.05")
    process = subprocess.Popen(
        [sys.executable, "-m", "inferwatch.cli", "collect", "otlp", "--listen", f"127.0.0.1:{port}",
         "--bus", str(bus_path), "--capture", "full", "--json"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_for(lambda: _healthy(url))
        provider = _provider(OTLPSpanExporter(endpoint=url + "/v1/traces"))
        trace_id, span_id = _chat_span(provider, user="dave")
        provider.shutdown()
        _wait_for(lambda: 'inferwatch_agent_events_sent_total{service="unknown"} 1'
                  in httpx.get(url + "/metrics").text)
    finally:
        process.send_signal(stop)
        out, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    assert "receiving on http://127.0.0.1" in err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["events_queued"] == 1
    assert summary["shipper_sent"] == 1
    records = SQLiteBus(bus_path).consumer("g").poll(10, timeout=1.0)
    event = decode_event(records[0].value)
    assert (event.trace_id, event.span_id) == (trace_id, span_id)
    assert event.input.text == "hello, mail me at bob@example.com"  # capture=full keeps it
    assert event.principal == Pseudonymizer(HMAC_KEY).pseudonym("dave")


def test_collect_otlp_on_a_port_in_use_says_so_and_exits_1(tmp_path: Path) -> None:
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "inferwatch.cli", "collect", "otlp", "--listen", f"127.0.0.1:{port}",
             "--bus", str(tmp_path / "bus.db")],
            capture_output=True, text=True, timeout=60, check=False,
        )
    assert done.returncode == 1
    assert f"inferwatch: cannot listen on 127.0.0.1:{port}: Address already in use" in done.stderr
    assert "receiving on" not in done.stderr
    assert "Traceback" not in done.stderr


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_help_mentions_the_receiver() -> None:
    from inferwatch.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["collect", "otlp", "--listen", "nonsense"])
    args = build_parser().parse_args(["collect", "otlp"])
    assert args.listen == ("127.0.0.1", 4318)




def test_a_failing_sink_is_a_500_and_the_receiver_keeps_serving() -> None:
    class BrokenSink:
        def offer(self, event: InferenceEvent) -> bool:
            raise RuntimeError("boom")

    receiver = OtlpReceiver(BrokenSink(), extra_metrics=lambda: "extra_metric 1\n")
    with Served(receiver) as served:
        response = httpx.post(served.url, json=_spec_json())
        assert response.status_code == 500
        assert "RuntimeError" in response.json()["message"]
        assert httpx.get(served.url.removesuffix("/v1/traces") + "/healthz").status_code == 200
        assert "extra_metric 1" in httpx.get(served.url.removesuffix("/v1/traces") + "/metrics").text
    assert receiver.stats().internal_errors == 1


def test_spans_of_the_inferwatch_agent_are_skipped(served: Served, sink: ListSink) -> None:
    """An app with the inferwatch middleware exporting its traces here too: the agent already made
    the call's event, so its span (which carries gen_ai.* attributes) must not make a second one."""
    from inferwatch.agent.content import CallContent
    from inferwatch.agent.core import Agent
    from inferwatch.collectors.settings import AgentSettings

    class NullProducer:
        def send(self, value: bytes, key: str | None = None) -> None: ...
        def flush(self, timeout: float | None = None) -> None: ...
        def close(self) -> None: ...

    provider = _provider(OTLPSpanExporter(endpoint=served.url))
    settings = AgentSettings(service="svc", stats_log_interval_s=0)
    agent = Agent(settings, NullProducer(), tracer_provider=provider)
    call = agent.begin(operation="chat", model="m")
    agent.record(call, CallContent(operation="chat", request_model="m", input_tokens=3), status=200)
    _chat_span(provider)
    provider.shutdown()
    agent.shutdown()
    assert len(sink.events) == 1  # the OpenLLMetry-style span only
    assert served.receiver.stats().spans_skipped == {"inferwatch_agent": 1}
