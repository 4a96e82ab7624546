"""The WSGI middleware on a real Flask app, served by a real WSGI server, called over HTTP."""

from __future__ import annotations

import io
import json
import threading
import wsgiref.simple_server
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from flask import Flask, Response, request, stream_with_context
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from werkzeug.serving import make_server
from werkzeug.test import EnvironBuilder

from inferwatch.agent import Agent, InferwatchWSGIMiddleware, set_attributes, set_principal
from inferwatch.collectors.event import InferenceEvent

if TYPE_CHECKING:
    from conftest import AgentFactory, DownProducer, ListProducer

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


def flask_app() -> Flask:
    app = Flask("model")

    @app.post("/predict")
    def predict() -> Any:
        body = request.get_json()
        if "instances" in body:
            rows = body["instances"]
            return {"predictions": [{"label": "churn" if r["age"] > 50 else "stay"} for r in rows]}
        return {"label": "churn" if body.get("age", 0) > 50 else "stay", "score": 0.81}

    @app.post("/v1/chat/completions")
    def chat() -> Any:
        request.get_json()
        return CHAT_REPLY

    @app.post("/echo")
    def echo() -> Response:
        return Response(request.get_data(), mimetype="application/octet-stream")

    @app.get("/stream")
    def stream() -> Response:
        def parts() -> Iterator[bytes]:
            for i in range(5):
                yield f"part-{i};".encode() * 100

        return Response(parts(), mimetype="text/plain")

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> Any:
        return {"item": item_id}

    @app.post("/users/<user>/predict")
    def user_predict(user: str) -> Any:
        set_principal(user)  # the app knows its user: that is the principal
        set_attributes(tenant="acme", plan=request.get_json().get("plan"))
        return {"label": "stay"}

    @app.get("/streamed-principal")
    def streamed_principal() -> Response:
        @stream_with_context
        def parts() -> Iterator[bytes]:
            yield b"a"
            set_principal("late-user")  # inside the generator, while the response streams
            yield b"b"

        return Response(parts(), mimetype="text/plain")

    @app.post("/fail")
    def fail() -> Any:
        raise ModelFailed("weights missing")

    @app.get("/health")
    def health() -> Any:
        return {"status": "ok"}

    return app


@contextmanager
def serving(app: Callable[..., Any], *, server: str = "werkzeug") -> Iterator[str]:
    """Serve ``app`` on a free loopback port with a real WSGI server; yield its base URL."""
    if server == "werkzeug":
        httpd: Any = make_server("127.0.0.1", 0, app, threaded=True)
        # werkzeug's request threads are daemons that server_close() does not wait for: the
        # client can read a response before the middleware has recorded the call (it does so
        # when the response closes), so a test would look for an event not yet captured.
        httpd.daemon_threads = False
    else:
        httpd = wsgiref.simple_server.make_server(
            "127.0.0.1", 0, app, handler_class=QuietHandler
        )
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5.0)


class QuietHandler(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def monitored(agent: Agent, **options: Any) -> Flask:
    app = flask_app()
    app.wsgi_app = InferwatchWSGIMiddleware(app.wsgi_app, agent=agent, **options)  # type: ignore[method-assign]
    return app


def shipped(agent: Agent, producer: ListProducer) -> list[InferenceEvent]:
    assert agent.flush(timeout=5.0)
    return producer.events()


def test_tabular_predict_over_http_becomes_an_event(
    make_agent: AgentFactory, list_producer: ListProducer, spans: InMemorySpanExporter
) -> None:
    agent = make_agent(list_producer, model="churn-model", model_version="7")
    with serving(monitored(agent)) as url:
        response = httpx.post(
            f"{url}/predict", json={"age": 61, "plan": "pro"}, headers={"x-api-key": "alice"}
        )
    assert response.json() == {"label": "churn", "score": 0.81}
    (event,) = shipped(agent, list_producer)
    assert event.input.features == {"age": 61, "plan": "pro"}
    assert (event.output.label, event.output.score) == ("churn", 0.81)
    assert (event.status, event.operation, event.endpoint) == (200, "predict", "/predict")
    assert (event.service, event.model, event.model_version) == ("svc", "churn-model", "7")
    assert event.principal == agent.pseudonymizer.pseudonym("alice")
    assert event.client_ip == "127.0.0.0"
    (span,) = spans.get_finished_spans()
    assert span.kind is SpanKind.SERVER
    assert event.trace_id == format(span.context.trace_id, "032x")


@pytest.mark.parametrize(
    ("capture", "prompt_text", "reply_text"),
    [
        ("redacted", "my mail is [EMAIL]", "Noted, [EMAIL]"),
        ("none", None, None),
        ("full", "my mail is bob@example.com", "Noted, bob@example.com"),
    ],
)
def test_chat_text_follows_the_capture_mode(
    make_agent: AgentFactory, list_producer: ListProducer, capture: str, prompt_text: str | None,
    reply_text: str | None,
) -> None:
    agent = make_agent(list_producer, capture=capture)
    body = {"model": "tiny-llm", "messages": [{"role": "user", "content": "my mail is bob@example.com"}]}
    with serving(monitored(agent)) as url:
        assert httpx.post(f"{url}/v1/chat/completions", json=body).json() == CHAT_REPLY
    (event,) = shipped(agent, list_producer)
    assert event.operation == "chat"
    assert (event.input.text, event.output.text) == (prompt_text, reply_text)
    assert (event.input.tokens, event.output.tokens, event.model) == (11, 4, "tiny-llm")


def test_bodies_pass_through_unchanged_even_over_the_limit(
    make_agent: AgentFactory, list_producer: ListProducer
) -> None:
    agent = make_agent(list_producer, max_body_bytes=1024)
    payload = bytes(range(256)) * 40  # 10 KiB of binary, ten times the capture limit
    with serving(monitored(agent)) as url:
        response = httpx.post(f"{url}/echo", content=payload)
    assert response.content == payload
    (event,) = shipped(agent, list_producer)
    assert event.attributes["request_bytes"] == len(payload)
    assert event.attributes["response_bytes"] == len(payload)
    assert event.attributes["request_truncated"] is True


def test_streamed_response_passes_through_and_is_counted(
    make_agent: AgentFactory, list_producer: ListProducer
) -> None:
    agent = make_agent(list_producer, max_body_bytes=1024)
    with serving(monitored(agent)) as url:
        response = httpx.get(f"{url}/stream")
    assert response.text == "".join(f"part-{i};" * 100 for i in range(5))
    (event,) = shipped(agent, list_producer)
    assert (event.status, event.attributes["response_bytes"]) == (200, len(response.content))


def test_responses_are_the_same_with_and_without_the_middleware_even_with_the_bus_down(
    make_agent: AgentFactory, down_producer: DownProducer
) -> None:
    agent = make_agent(down_producer)
    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/predict", {"json": {"age": 41}}),
        ("POST", "/predict", {"content": b"{not json", "headers": {"content-type": "application/json"}}),
        ("POST", "/v1/chat/completions", {"json": {"messages": [{"role": "user", "content": "hi"}]}}),
        ("GET", "/stream", {}),
        ("GET", "/missing", {}),
        ("POST", "/fail", {}),
    ]

    def answers(app: Flask) -> list[tuple[int, bytes, str]]:
        with serving(app) as url:
            out = []
            for method, path, options in calls:
                r = httpx.request(method, f"{url}{path}", **options)
                out.append((r.status_code, r.content, r.headers.get("content-type", "")))
            return out

    assert answers(monitored(agent)) == answers(flask_app())
    agent.flush(timeout=5.0)
    stats = agent.stats()
    assert stats.shipper.captured == len(calls)
    assert stats.shipper.dropped_bus_error == len(calls)
    assert stats.internal_errors == 0


def test_flask_error_becomes_a_500_event(make_agent: AgentFactory, list_producer: ListProducer) -> None:
    agent = make_agent(list_producer)
    with serving(monitored(agent)) as url:
        assert httpx.post(f"{url}/fail").status_code == 500  # Flask answers 500 itself
        assert httpx.post(f"{url}/predict", json={"age": 3}).status_code == 200
    failed, fine = shipped(agent, list_producer)
    assert (failed.status, failed.error) == (500, "ModelFailed")  # the type, though Flask handled it
    assert (fine.status, fine.error) == (200, None)


def raw_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    if environ["PATH_INFO"] == "/fail":
        raise ModelFailed("weights missing")
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


def test_an_exception_from_a_plain_wsgi_app_propagates_and_is_recorded(
    make_agent: AgentFactory, list_producer: ListProducer
) -> None:
    agent = make_agent(list_producer)
    middleware = InferwatchWSGIMiddleware(raw_app, agent=agent)
    with pytest.raises(ModelFailed, match="weights missing"):
        middleware({"PATH_INFO": "/fail", "REQUEST_METHOD": "POST"}, lambda *a: None)
    with serving(middleware, server="wsgiref") as url:  # the server turns it into its own 500
        assert httpx.post(f"{url}/fail").status_code == 500
        assert httpx.post(f"{url}/echo", json={"age": 3}).json() == {"age": 3}
    events = shipped(agent, list_producer)
    assert [(e.status, e.error) for e in events] == [(500, "ModelFailed"), (500, "ModelFailed"), (200, None)]
    assert events[2].input.features == {"age": 3}


def test_excluded_paths_are_not_recorded(make_agent: AgentFactory, list_producer: ListProducer) -> None:
    agent = make_agent(list_producer)
    with serving(monitored(agent)) as url:
        assert httpx.get(f"{url}/health").json() == {"status": "ok"}
    assert shipped(agent, list_producer) == []


def test_endpoint_is_the_flask_route_rule(make_agent: AgentFactory, list_producer: ListProducer) -> None:
    agent = make_agent(list_producer)
    with serving(monitored(agent)) as url:
        assert httpx.get(f"{url}/items/7").json() == {"item": 7}
    (event,) = shipped(agent, list_producer)
    assert event.endpoint == "/items/<int:item_id>"


def test_the_view_names_the_principal_and_attributes(
    make_agent: AgentFactory, list_producer: ListProducer
) -> None:
    agent = make_agent(list_producer)
    with serving(monitored(agent)) as url:
        httpx.post(f"{url}/users/u-981/predict", json={"plan": "pro"}, headers={"x-api-key": "shared-key"})
        httpx.get(f"{url}/streamed-principal")
    first, second = shipped(agent, list_producer)
    assert first.principal == agent.pseudonymizer.pseudonym("u-981")  # the app's, pseudonymised
    assert (first.attributes["tenant"], first.attributes["plan"]) == ("acme", "pro")
    assert second.principal == agent.pseudonymizer.pseudonym("late-user")


def test_traceparent_makes_the_span_a_child(make_agent: AgentFactory, list_producer: ListProducer) -> None:
    agent = make_agent(list_producer)
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    with serving(monitored(agent)) as url:
        parent = f"00-{trace_id}-00f067aa0ba902b7-01"
        httpx.post(f"{url}/predict", json={"age": 1}, headers={"traceparent": parent})
    (event,) = shipped(agent, list_producer)
    assert event.trace_id == trace_id


def test_metrics_path_serves_the_agents_counters(
    make_agent: AgentFactory, list_producer: ListProducer
) -> None:
    agent = make_agent(list_producer, service="flask-model")
    with serving(monitored(agent, metrics_path="/metrics")) as url:
        httpx.post(f"{url}/predict", json={"age": 1})
        assert agent.flush(5.0)
        response = httpx.get(f"{url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert 'inferwatch_agent_events_sent_total{service="flask-model"} 1' in response.text
    assert len(list_producer.records) == 1  # the scrape itself is not an event


class ReadOnlyBody:
    """A ``wsgi.input`` with only what PEP 3333 requires, like gunicorn's ``Body`` (no ``readinto``)."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def read(self, size: int | None = None) -> bytes:
        return self._data.read(size)

    def readline(self, size: int | None = None) -> bytes:
        return self._data.readline(size)

    def readlines(self, hint: int | None = None) -> list[bytes]:
        return self._data.readlines(hint)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._data)


@pytest.mark.parametrize("stream", [ReadOnlyBody, io.BytesIO])
def test_an_input_stream_keeps_its_own_methods_for_werkzeugs_limited_stream(
    make_agent: AgentFactory, list_producer: ListProducer, stream: Callable[[bytes], Any]
) -> None:
    # With MAX_CONTENT_LENGTH set, Werkzeug wraps wsgi.input in a LimitedStream that calls
    # readinto() when hasattr() finds one: the wrapper must not offer a readinto the stream lacks.
    agent = make_agent(list_producer)
    app = monitored(agent)
    app.config["MAX_CONTENT_LENGTH"] = 1 << 20
    body = b'{"age": 61}'
    environ = EnvironBuilder(
        path="/predict", method="POST", data=body, content_type="application/json"
    ).get_environ()
    environ["wsgi.input"] = stream(body)
    statuses: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        statuses.append(status)

    response: Any = app(environ, start_response)
    try:
        answer = b"".join(response)
    finally:
        response.close()
    assert statuses == ["200 OK"]
    assert json.loads(answer) == {"label": "churn", "score": 0.81}
    (event,) = shipped(agent, list_producer)
    assert event.input.features == {"age": 61}
    assert event.attributes["request_bytes"] == len(body)
