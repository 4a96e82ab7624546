"""OTLP receiver throughput: spans per second decoded and mapped to events, measured side by side.

Spans are made by the real OpenTelemetry SDK (GenAI chat spans as OpenLLMetry writes them: model,
usage, a ~600-character system prompt plus a ~300-character user turn in ``gen_ai.input.messages``,
a ~400-character reply in ``gen_ai.output.messages``) and encoded by the SDK's own OTLP encoder in
batches of 512 (the BatchSpanProcessor's default). The receiver then handles the same bodies:

* ``sdk encode``: what the application pays to encode a span (``encode_spans`` + serialise) — the
  reference every other row is a ratio to, since shared machines are noisy;
* ``decode only``: protobuf parsing into plain spans;
* ``export <mode>``: decode + map + capture (none / redacted / full) + event objects, sink a no-op;
* ``export json``: the same batch as OTLP/JSON;
* ``mixed 1:9``: one GenAI span in ten, the others ordinary HTTP spans (skipped);
* ``http``: the ASGI app under uvicorn on loopback, one client posting protobuf batches.

    .venv/bin/python benchmarks/otlp_receiver.py [--batches 20]
"""

from __future__ import annotations

import argparse
import base64
import json
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import uvicorn
from google.protobuf.json_format import MessageToDict
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from inferwatch.collectors.event import InferenceEvent
from inferwatch.collectors.otlp import OtlpReceiver
from inferwatch.collectors.otlp_decode import decode_request
from inferwatch.collectors.otlp_map import MappingOptions
from inferwatch.collectors.settings import CaptureMode

BATCH = 512
SYSTEM = ("You are a careful support assistant for an online shop. Answer in two sentences. " * 8)[:600]
USER = ("My order 1234 has not arrived, can you check the status and email me at bob@example.com? " * 4)[:300]
REPLY = ("Your order shipped yesterday and should arrive within two working days. " * 6)[:400]


class CountingSink:
    def __init__(self) -> None:
        self.count = 0

    def offer(self, event: InferenceEvent) -> bool:
        self.count += 1
        return True


def make_spans(n: int, genai_every: int = 1) -> list[ReadableSpan]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "support-bot"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("bench")
    for i in range(n):
        if i % genai_every == 0:
            with tracer.start_as_current_span("openai.chat", kind=SpanKind.CLIENT) as span:
                span.set_attributes({
                    "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                    "gen_ai.request.model": "gpt-4o-mini", "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
                    "gen_ai.request.max_tokens": 256, "gen_ai.usage.input_tokens": 180,
                    "gen_ai.usage.output_tokens": 90, "gen_ai.response.finish_reasons": ["stop"],
                    "gen_ai.user": f"user-{i % 50}", "gen_ai.is_streaming": False,
                    "gen_ai.input.messages": json.dumps([
                        {"role": "system", "parts": [{"type": "text", "content": SYSTEM}]},
                        {"role": "user", "parts": [{"type": "text", "content": f"{USER} #{i}"}]}]),
                    "gen_ai.output.messages": json.dumps([
                        {"role": "assistant", "parts": [{"type": "text", "content": REPLY}],
                         "finish_reason": "stop"}]),
                })
        else:
            with tracer.start_as_current_span("GET /orders/{id}", kind=SpanKind.SERVER) as span:
                span.set_attributes({"http.request.method": "GET", "http.route": "/orders/{id}",
                                     "url.path": f"/orders/{i}", "http.response.status_code": 200,
                                     "server.address": "shop", "server.port": 8080,
                                     "user_agent.original": "curl/8", "client.address": "10.0.0.1"})
    provider.shutdown()
    return list(memory.get_finished_spans())


def to_json(body: bytes) -> bytes:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    document = MessageToDict(ExportTraceServiceRequest.FromString(body))
    for resource_spans in document["resourceSpans"]:
        for scope_spans in resource_spans["scopeSpans"]:
            for span in scope_spans["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex()
    return json.dumps(document).encode()


def rate(work: Callable[[], Any], spans_per_call: int, calls: int) -> float:
    work()  # warm-up
    start = time.perf_counter()
    for _ in range(calls):
        work()
    return spans_per_call * calls / (time.perf_counter() - start)


def http_rate(body: bytes, calls: int) -> float:
    receiver = OtlpReceiver(CountingSink(), MappingOptions(pseudonymize=lambda v: "p_" + v))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(receiver, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    url = f"http://127.0.0.1:{port}/v1/traces"
    headers = {"content-type": "application/x-protobuf"}
    with httpx.Client() as client:
        def post() -> None:
            assert client.post(url, content=body, headers=headers).status_code == 200
        result = rate(post, BATCH, calls)
    server.should_exit = True
    thread.join(10)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=20)
    args = parser.parse_args()
    n = args.batches

    genai = make_spans(BATCH)
    mixed = make_spans(BATCH, genai_every=10)
    body = encode_spans(genai).SerializePartialToString()
    mixed_body = encode_spans(mixed).SerializePartialToString()
    json_body = to_json(body)
    print(f"batch: {BATCH} spans, {len(body) / BATCH:.0f} B/span protobuf, "
          f"{len(json_body) / BATCH:.0f} B/span JSON")

    def receiver(mode: CaptureMode) -> OtlpReceiver:
        return OtlpReceiver(CountingSink(), MappingOptions(capture=mode, pseudonymize=lambda v: "p_" + v),
                            max_body_bytes=64 << 20)

    redacted = receiver(CaptureMode.REDACTED)
    rows: list[tuple[str, float]] = [
        ("sdk encode (application side)",
         rate(lambda: encode_spans(genai).SerializePartialToString(), BATCH, n)),
        ("decode only (protobuf)", rate(lambda: decode_request(body, "protobuf"), BATCH, n)),
    ]
    for mode in CaptureMode:
        r = redacted if mode is CaptureMode.REDACTED else receiver(mode)
        rows.append((f"export protobuf, capture={mode.value}",
                     rate(lambda r=r: r.export(body, "application/x-protobuf"), BATCH, n)))
    rows.append(("export json, capture=redacted",
                 rate(lambda: redacted.export(json_body, "application/json"), BATCH, n)))
    rows.append(("export protobuf, mixed 1 GenAI : 9 HTTP spans",
                 rate(lambda: redacted.export(mixed_body, "application/x-protobuf"), BATCH, n)))
    rows.append(("http (uvicorn, loopback), capture=redacted", http_rate(body, n)))

    reference = rows[0][1]
    print(f"{'':48} {'spans/s':>10} {'us/span':>8} {'x sdk encode':>13}")
    for name, value in rows:
        print(f"{name:48} {value:10,.0f} {1e6 / value:8.1f} {reference / value:13.2f}")


if __name__ == "__main__":
    main()
