"""The ASGI middleware on a real FastAPI app: events, spans, capture modes, pass-through."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from inferwatch.agent import Agent, InferwatchMiddleware
from inferwatch.collectors.event import InferenceEvent

if TYPE_CHECKING:
    from conftest import AgentFactory, ListProducer

CHAT_REPLY = {
    "model": "tiny-llm-0.1",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Noted, bob@example.com"},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 11, "completion_tokens": 4},
}


class ModelFailed(RuntimeError):
    pass


def model_app() -> FastAPI:
    app = FastAPI()

    @app.post("/predict")
    async def predict(body: dict[str, Any]) -> Any:
        if "instances" in body:
            return {
                "predictions": [
                    {"label": "churn" if r["age"] > 50 else "stay", "score": 0.7} for r in body["instances"]
                ]
            }
        return {"label": "churn" if body.get("age", 0) > 50 else "stay", "score": 0.81}

    @app.post("/v1/chat/completions")
    async def chat(body: dict[str, Any]) -> Any:
        return CHAT_REPLY

    @app.post("/echo")
    async def echo(request: Request) -> Response:
        return Response(await request.body(), media_type="application/octet-stream")

    @app.post("/fail")
    async def fail() -> None:
        raise ModelFailed("weights missing")

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def parts() -> AsyncIterator[bytes]:
            for i in range(5):
                yield f"part-{i};".encode() * 100

        return StreamingResponse(parts(), media_type="text/plain")

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"item": item_id}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


class Client:
    """Requests through httpx's ASGI transport, from a fixed client address."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def request(self, method: str, url: str, **options: Any) -> httpx.Response:
        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app, client=("198.51.100.77", 50000))
            async with httpx.AsyncClient(transport=transport, base_url="http://model") as client:
                return await client.request(method, url, **options)

        return asyncio.run(send())

    def post(self, url: str, **options: Any) -> httpx.Response:
        return self.request("POST", url, **options)

    def get(self, url: str, **options: Any) -> httpx.Response:
        return self.request("GET", url, **options)


def client_for(agent: Agent, **options: Any) -> Client:
    app = model_app()
    app.add_middleware(InferwatchMiddleware, agent=agent, **options)
    return Client(app)


def shipped(agent: Agent, producer: ListProducer) -> list[InferenceEvent]:
    assert agent.flush(timeout=5.0)
    return producer.events()


def test_tabular_predict_becomes_an_event(make_agent: AgentFactory, list_producer: ListProducer) -> None:
    agent = make_agent(list_producer, model="churn-model", model_version="7")
    response = client_for(agent).post(
        "/predict", json={"age": 61, "plan": "pro"}, headers={"x-api-key": "alice"}
    )
    assert response.json() == {"label": "churn", "score": 0.81}
    (event,) = shipped(agent, list_producer)
    assert event.input.features == {"age": 61, "plan": "pro"}
    assert (event.output.label, event.output.score) == ("churn", 0.81)
    assert (event.status, event.operation, event.endpoint) == (200, "predict", "/predict")
    assert (event.service, event.model, event.model_version) == ("svc", "churn-model", "7")
    assert event.principal == agent.pseudonymizer.pseudonym("alice")
    assert list_producer.records[0][1] == event.principal  # keyed by principal on the bus
    assert event.duration_ms >= 0
    assert event.agent is not None
    assert event.agent.id == agent.id


@pytest.mark.parametrize(
    ("capture", "prompt_text", "reply_text"),
    [
        ("redacted", "my mail is [EMAIL]", "Noted, [EMAIL]"),
        ("none", None, None),
        ("full", "my mail is bob@example.com", "Noted, bob@example.com"),
    ],
)
def test_chat_text_follows_the_capture_mode(
    make_agent: AgentFactory,
    list_producer: ListProducer,
    capture: str,
    prompt_text: str | None,
    reply_text: str | None,
) -> None:
    agent = make_agent(list_producer, capture=capture)
    body = {
        "model": "tiny-llm",
        "max_tokens": 32,
        "messages": [{"role": "user", "content": "my mail is bob@example.com"}],
    }
    assert client_for(agent).post("/v1/chat/completions", json=body).json() == CHAT_REPLY
    (event,) = shipped(agent, list_producer)
    assert event.operation == "chat"
    assert (event.input.text, event.output.text) == (prompt_text, reply_text)
    assert (event.input.chars, event.input.tokens, event.output.tokens) == (26, 11, 4)
    assert event.model == "tiny-llm"


def test_span_carries_genai_attributes_and_matches_the_event(
    make_agent: AgentFactory, list_producer: ListProducer, spans: InMemorySpanExporter
) -> None:
    agent = make_agent(list_producer)
    body = {"model": "tiny-llm", "max_tokens": 32, "messages": [{"role": "user", "content": "hi"}]}
    client_for(agent).post("/v1/chat/completions", json=body)
    (event,) = shipped(agent, list_producer)
    (span,) = spans.get_finished_spans()
    assert span.name == "chat tiny-llm"
    assert span.kind is SpanKind.SERVER
    attributes = dict(span.attributes or {})
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.request.model"] == "tiny-llm"
    assert attributes["gen_ai.response.model"] == "tiny-llm-0.1"
    assert attributes["gen_ai.request.max_tokens"] == 32
    assert (attributes["gen_ai.usage.input_tokens"], attributes["gen_ai.usage.output_tokens"]) == (11, 4)
    assert tuple(attributes["gen_ai.response.finish_reasons"]) == ("stop",)  # type: ignore[arg-type]
    assert attributes["http.response.status_code"] == 200
    assert event.trace_id == format(span.context.trace_id, "032x")
    assert event.span_id == format(span.context.span_id, "016x")


def test_incoming_traceparent_is_honoured(make_agent: AgentFactory, list_producer: ListProducer) -> None:
    agent = make_agent(list_producer)
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    client_for(agent).post(
        "/predict", json={"age": 1}, headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}
    )
    (event,) = shipped(agent, list_producer)
    assert event.trace_id == trace_id


def test_seq_is_monotonic_across_requests(make_agent: AgentFactory, list_producer: ListProducer) -> None:
    agent = make_agent(list_producer)
    client = client_for(agent)
    for age in range(5):
        client.post("/predict", json={"age": age})
    events = shipped(agent, list_producer)
    assert [e.agent.seq for e in events if e.agent] == [0, 1, 2, 3, 4]
    assert len({e.id for e in events}) == 5


def test_batched_instances_give_one_event_per_row(
    make_agent: AgentFactory, list_producer: ListProducer
) -> None:
    agent = make_agent(list_producer)
    rows = [{"age": 30}, {"age": 70}, {"age": 55}]
    client_for(agent).post("/predict", json={"instances": rows})
    events = shipped(agent, list_producer)
    assert [e.input.features for e in events] == rows
    assert [e.output.label for e in events] == ["stay", "churn", "churn"]
    assert len({e.trace_id for e in events}) == 1
    assert events[0].trace_id is not None
    assert [e.attributes["batch_index"] for e in events] == [0, 1, 2]


def test_request_body_reaches_the_app_unchanged_even_over_the_limit(
    make_agent: AgentFactory, list_producer: ListProducer
) -> None:
    agent = make_agent(list_producer, max_body_bytes=1024)
    payload = bytes(range(256)) * 40  # 10 KiB of binary, ten times the capture limit
    response = client_for(agent).post("/echo", content=payload)
    assert response.content == payload
    (event,) = shipped(agent, list_producer)
    assert event.attributes["request_bytes"] == len(payload)
    assert event.attributes["request_truncated"] is True
    assert event.attributes["response_truncated"] is True


def test_streamed_response_passes_through_and_is_counted(
    make_agent: AgentFactory, list_producer: ListProducer
) -> None:
    agent = make_agent(list_producer, max_body_bytes=1024)
    response = client_for(agent).get("/stream")
    assert response.text == "".join(f"part-{i};" * 100 for i in range(5))
    (event,) = shipped(agent, list_producer)
    assert event.attributes["response_bytes"] == len(response.content)
    assert event.status == 200


def test_app_exception_propagates_unchanged_and_is_recorded(
    make_agent: AgentFactory, list_producer: ListProducer
) -> None:
    agent = make_agent(list_producer)
    with pytest.raises(ModelFailed, match="weights missing"):
        client_for(agent).post("/fail")
    (event,) = shipped(agent, list_producer)
    assert (event.status, event.error) == (500, "ModelFailed")


def test_excluded_paths_are_not_recorded(make_agent: AgentFactory, list_producer: ListProducer) -> None:
    agent = make_agent(list_producer)
    assert client_for(agent).get("/health").json() == {"status": "ok"}
    assert shipped(agent, list_producer) == []


def test_lifespan_scope_passes_through(make_agent: AgentFactory, list_producer: ListProducer) -> None:
    agent = make_agent(list_producer)
    middleware = InferwatchMiddleware(model_app(), agent=agent)
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: Any) -> None:
        sent.append(dict(message))

    asyncio.run(middleware({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send))
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert shipped(agent, list_producer) == []


def test_endpoint_is_the_route_template(make_agent: AgentFactory, list_producer: ListProducer) -> None:
    agent = make_agent(list_producer)
    client = client_for(agent)
    assert client.get("/items/7").json() == {"item": 7}
    client.get("/items/8")
    assert [e.endpoint for e in shipped(agent, list_producer)] == ["/items/{item_id}"] * 2


def test_client_address_is_truncated(make_agent: AgentFactory, list_producer: ListProducer) -> None:
    agent = make_agent(list_producer)
    assert client_for(agent).post("/predict", json={"age": 3}).status_code == 200
    (event,) = shipped(agent, list_producer)
    assert event.client_ip == "198.51.100.0"


def test_behind_a_trusted_load_balancer_the_forwarded_client_is_recorded(
        make_agent: AgentFactory, list_producer: ListProducer) -> None:
    # The test client connects from 198.51.100.77: here that is the load balancer.
    agent = make_agent(list_producer, trusted_proxies="198.51.100.0/24, 10.0.0.0/8", truncate_client_ip=False)
    client = client_for(agent)
    client.post("/predict", json={"age": 3}, headers={"x-forwarded-for": "203.0.113.9, 10.1.1.1"})
    client.post("/predict", json={"age": 3}, headers={"x-forwarded-for": "10.2.2.2"})  # only proxies
    client.post("/predict", json={"age": 3})  # no header: the balancer's own request
    recorded = [e.client_ip for e in shipped(agent, list_producer)]
    assert recorded == ["203.0.113.9", "10.2.2.2", "198.51.100.77"]


def test_a_forwarded_header_from_an_untrusted_peer_is_ignored(make_agent: AgentFactory,
                                                              list_producer: ListProducer) -> None:
    # A client may write any X-Forwarded-For: only a trusted proxy's is believed.
    agent = make_agent(list_producer, trusted_proxies=["10.0.0.0/8"])
    client_for(agent).post("/predict", json={"age": 3}, headers={"x-forwarded-for": "203.0.113.9"})
    assert [e.client_ip for e in shipped(agent, list_producer)] == ["198.51.100.0"]


def test_a_trusted_proxy_that_is_not_an_address_is_refused() -> None:
    from pydantic import ValidationError

    from inferwatch.collectors.settings import AgentSettings

    with pytest.raises(ValidationError, match=r"'10\.0\.0/33' is not an IP address or network"):
        AgentSettings(trusted_proxies="10.0.0/33")


def test_a_reply_gzipped_inside_the_agent_is_still_read(make_agent: AgentFactory,
                                                        list_producer: ListProducer) -> None:
    from starlette.middleware.gzip import GZipMiddleware

    agent = make_agent(list_producer, capture="full")
    app = model_app()
    app.add_middleware(GZipMiddleware, minimum_size=10)
    app.add_middleware(InferwatchMiddleware, agent=agent)  # added last: outside the compression
    body = {"model": "tiny-llm", "messages": [{"role": "user", "content": "my mail is bob@example.com"}]}
    response = Client(app).post("/v1/chat/completions", json=body, headers={"accept-encoding": "gzip"})
    assert response.headers["content-encoding"] == "gzip"
    assert response.json() == CHAT_REPLY
    (event,) = shipped(agent, list_producer)
    assert event.attributes["response_encoding"] == "gzip"
    assert (event.output.text, event.output.tokens) == ("Noted, bob@example.com", 4)


def test_an_email_in_the_path_is_masked_in_the_event_and_the_span(
    make_agent: AgentFactory, list_producer: ListProducer, spans: InMemorySpanExporter
) -> None:
    agent = make_agent(list_producer, capture="none")
    client_for(agent).post("/users/bob.victim@example.org/echo", content=b"hi")
    (event,) = shipped(agent, list_producer)
    (span,) = spans.get_finished_spans()
    assert event.endpoint == "/users/[EMAIL]/echo"
    assert dict(span.attributes or {})["url.path"] == "/users/[EMAIL]/echo"
