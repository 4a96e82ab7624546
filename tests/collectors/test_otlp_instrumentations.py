"""Real instrumentations of the ``openai`` client, exporting over OTLP/HTTP to the receiver.

The ``openai`` client calls the demo's OpenAI-compatible chat endpoint (a real uvicorn server);
OpenLLMetry (``opentelemetry-instrumentation-openai``) or OpenInference
(``openinference-instrumentation-openai``) records the call; the OpenTelemetry SDK's OTLP/HTTP
exporter sends the span to the receiver, which hands events to the agent's shipper and the bus.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import uvicorn
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from inferwatch.agent.principal import Pseudonymizer
from inferwatch.agent.shipper import EventShipper
from inferwatch.collectors.event import InferenceEvent, decode_event
from inferwatch.collectors.otlp import OtlpReceiver
from inferwatch.collectors.otlp_map import MappingOptions
from inferwatch.collectors.settings import CaptureMode
from inferwatch.collectors.sqlite_bus import SQLiteBus
from inferwatch.demo.server import IrisModel, build_app, chat_reply

pytestmark = pytest.mark.filterwarnings("ignore:Support for class-based `config`:DeprecationWarning")

PROMPT = "Summarise my order and send it to bob@example.com"
SYSTEM = "You are a shop assistant."


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Served:
    """An ASGI app on a free loopback port, in a thread."""

    def __init__(self, app: Any) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def model_server() -> Iterator[Served]:
    with Served(build_app(IrisModel())) as served:
        yield served


class Pipeline:
    """Receiver -> the agent's shipper -> an SQLite bus; and a tracer provider exporting to it."""

    def __init__(self, tmp_path: Path, capture: CaptureMode) -> None:
        self.bus = SQLiteBus(tmp_path / "bus.db")
        self.shipper = EventShipper(self.bus.producer(), queue_size=100, batch_size=10, flush_interval_s=0.05)
        options = MappingOptions(capture=capture, pseudonymize=Pseudonymizer("k").pseudonym)
        self.receiver = OtlpReceiver(self.shipper, options)
        self.served = Served(self.receiver)

    def __enter__(self) -> Pipeline:
        self.served.__enter__()
        self.provider = TracerProvider(resource=Resource.create({"service.name": "shop-assistant"}))
        self.provider.add_span_processor(
            SimpleSpanProcessor(OTLPSpanExporter(endpoint=self.served.base + "/v1/traces")))
        return self

    def __exit__(self, *exc: object) -> None:
        self.provider.shutdown()
        self.served.__exit__()
        self.shipper.shutdown()

    def events(self) -> list[InferenceEvent]:
        self.provider.force_flush()
        assert self.shipper.flush(10)
        return [decode_event(r.value) for r in self.bus.consumer("test").poll(100, timeout=1.0)]


def _instrumentor(kind: str) -> Any:
    if kind == "openllmetry":
        from opentelemetry.instrumentation.openai import OpenAIInstrumentor
    else:
        from openinference.instrumentation.openai import OpenAIInstrumentor  # type: ignore[no-redef]
    return OpenAIInstrumentor()


def _chat(base_url: str, prompt: str = PROMPT, user: str = "customer-42") -> Any:
    client = openai.OpenAI(base_url=base_url, api_key="sk-test", max_retries=0)
    return client.chat.completions.create(
        model="demo-chat",
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}],
        max_tokens=64,
        user=user,
    )


@pytest.mark.parametrize("kind", ["openllmetry", "openinference"])
@pytest.mark.parametrize("capture", [CaptureMode.REDACTED, CaptureMode.FULL, CaptureMode.NONE])
def test_instrumented_openai_client_yields_events(
    model_server: Served, tmp_path: Path, kind: str, capture: CaptureMode
) -> None:
    instrumentor = _instrumentor(kind)
    with Pipeline(tmp_path, capture) as pipeline:
        instrumentor.instrument(tracer_provider=pipeline.provider)
        try:
            response = _chat(model_server.base + "/v1")
        finally:
            instrumentor.uninstrument()
        events = pipeline.events()

    assert len(events) == 1, events
    event = events[0]
    reply = chat_reply([{"role": "user", "content": PROMPT}])
    assert response.choices[0].message.content == reply
    assert event.service == "shop-assistant"
    assert event.model == "demo-chat"
    assert event.operation == "chat"
    assert event.status == 200
    assert event.input.tokens == response.usage.prompt_tokens
    assert event.output.tokens == response.usage.completion_tokens
    assert event.input.chars == len(SYSTEM) + len(PROMPT)
    assert event.output.chars == len(reply)
    assert event.output.finish_reason == "stop"
    assert event.attributes["max_tokens"] == 64
    assert event.attributes["convention"] == ("gen_ai" if kind == "openllmetry" else "openinference")
    assert event.trace_id is not None
    assert event.span_id is not None
    assert event.agent is not None
    assert event.agent.seq == 0
    if capture is CaptureMode.FULL:
        assert event.input.text == PROMPT
        assert event.output.text == reply
    elif capture is CaptureMode.REDACTED:
        assert event.input.text == "Summarise my order and send it to [EMAIL]"
        assert event.output.text == reply
    else:
        assert event.input.text is None
        assert event.output.text is None
    # the OpenAI `user` field: gen_ai.user (OpenLLMetry), llm.invocation_parameters (OpenInference)
    assert event.principal == Pseudonymizer("k").pseudonym("customer-42")


@pytest.mark.parametrize("kind", ["openllmetry", "openinference"])
def test_failed_call_is_an_error_event(model_server: Served, tmp_path: Path, kind: str) -> None:
    instrumentor = _instrumentor(kind)
    with Pipeline(tmp_path, CaptureMode.REDACTED) as pipeline:
        instrumentor.instrument(tracer_provider=pipeline.provider)
        try:
            with pytest.raises(openai.NotFoundError):
                _chat(model_server.base + "/missing/v1")
        finally:
            instrumentor.uninstrument()
        events = pipeline.events()
    assert len(events) == 1
    assert events[0].status == 404
    assert events[0].error is not None
    assert events[0].input.text == "Summarise my order and send it to [EMAIL]"

