"""The sidecar proxy against a real model server: uvicorn on a free port, the proxy on another.

Clients are real (httpx, and raw sockets where a client library would refuse to send what is
being tested). Events go through a real agent to an in-memory producer (conftest.ListProducer).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import http.client
import json
import os
import select
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from inferwatch.agent import proxy as proxy_module
from inferwatch.agent.proxy import ProxyConfig, ProxyServer, serve
from inferwatch.agent.proxy_record import InlineRecorder
from inferwatch.collectors.event import InferenceEvent

if TYPE_CHECKING:
    from conftest import AgentFactory, DownProducer, ListProducer

API_KEY = "sk-live-alice-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class UpstreamState:
    """What the model server saw, and a gate the streaming test holds the stream at."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.requests: list[dict[str, Any]] = []
        self.stream_closed = threading.Event()


def model_server(state: UpstreamState) -> Starlette:
    """A model server that knows nothing of inferwatch: OpenAI, KServe v2, TF Serving, TorchServe."""

    async def note(request: Request) -> bytes:
        body = await request.body()
        state.requests.append({"path": request.url.path, "headers": request.headers.raw, "body": body})
        return body

    async def chat(request: Request) -> Response:
        body = json.loads(await note(request))
        model = body.get("model", "m")
        if body.get("slow_body"):  # a whole answer whose head comes before its body
            async def halves() -> AsyncIterator[bytes]:
                yield b'{"id": "c1", "object": "chat.completion", "model": "%s", ' % model.encode()
                await asyncio.sleep(0.3)
                yield (b'"choices": [{"index": 0, "message": {"role": "assistant", "content": '
                       b'"Your key is AKIAZ3MXQ7R2LPWN4VYD."}, "finish_reason": "stop"}]}')
            return StreamingResponse(halves(), media_type="application/json")
        if not body.get("stream"):
            return JSONResponse({
                "id": "c1", "object": "chat.completion", "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris."},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 21, "completion_tokens": 2, "total_tokens": 23},
            })

        async def parts() -> AsyncIterator[bytes]:
            try:
                for i, word in enumerate(["Hello", " there", "!"]):
                    chunk = {"id": "c1", "model": model,
                             "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
                    yield f"data: {json.dumps(chunk)}\n\n".encode()
                    if i == 0 and body.get("hold"):
                        deadline = time.monotonic() + 10
                        while not state.release.is_set() and time.monotonic() < deadline:
                            await asyncio.sleep(0.005)
                final = {"id": "c1", "model": model,
                         "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                         "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}}
                yield f"data: {json.dumps(final)}\n\n".encode()
                yield b"data: [DONE]\n\n"
            finally:
                state.stream_closed.set()

        return StreamingResponse(parts(), media_type="text/event-stream")

    async def completions(request: Request) -> Response:
        await note(request)
        return JSONResponse({"model": "gpt-x",
                             "choices": [{"index": 0, "text": "four", "finish_reason": "stop"}],
                             "usage": {"prompt_tokens": 4, "completion_tokens": 1}})

    async def embeddings(request: Request) -> Response:
        await note(request)
        return JSONResponse({"model": "emb", "data": [{"index": 0, "embedding": [0.1, 0.2]}],
                             "usage": {"prompt_tokens": 3, "total_tokens": 3}})

    async def kserve(request: Request) -> Response:
        body = json.loads(await note(request))
        tensor = body["inputs"][0]
        rows = tensor["shape"][0]
        return JSONResponse({
            "model_name": request.path_params["name"], "model_version": "1",
            "outputs": [
                {"name": "predict", "shape": [rows], "datatype": "INT64", "data": [1] * rows},
                {"name": "predict_proba", "shape": [rows, 2], "datatype": "FP32", "data": [0.2, 0.8] * rows},
            ],
        })

    async def tf_serving(request: Request) -> Response:
        body = json.loads(await note(request))
        if not request.path_params["rest"].endswith(":predict"):
            return JSONResponse({"error": "not found"}, status_code=404)
        return JSONResponse({"predictions": [[0.1, 0.9] for _ in body["instances"]]})

    async def torchserve(request: Request) -> Response:
        await note(request)
        return JSONResponse({"prediction": "tabby_cat", "probability": 0.91})

    async def generic(request: Request) -> Response:
        await note(request)
        return JSONResponse({"label": "churn", "score": 0.73})

    async def echo(request: Request) -> Response:
        return Response(await note(request), media_type="application/octet-stream")

    async def headers(request: Request) -> Response:
        await note(request)
        return JSONResponse([[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.headers.raw])

    async def response_headers(request: Request) -> Response:
        response = PlainTextResponse("ok", headers={"x-model-server": "yes", "keep-alive": "timeout=99"})
        response.raw_headers.append((b"set-cookie", b"a=1"))
        response.raw_headers.append((b"set-cookie", b"b=2"))
        return response

    async def slow(request: Request) -> Response:
        await asyncio.sleep(3)
        return PlainTextResponse("late")

    async def metrics(request: Request) -> Response:
        return PlainTextResponse("model_server_metric 1\n")

    async def gzipped(request: Request) -> Response:
        await note(request)
        data = gzip.compress(json.dumps({"label": "spam", "score": 0.99}).encode())
        return Response(data, media_type="application/json", headers={"content-encoding": "gzip"})

    async def no_content(request: Request) -> Response:
        return Response(status_code=204)

    async def teapot(request: Request) -> Response:
        return JSONResponse({"error": "I am a teapot"}, status_code=418)

    return Starlette(routes=[
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
        Route("/v2/models/{name}/infer", kserve, methods=["POST"]),
        Route("/v2/models/{name}/versions/{version}/infer", kserve, methods=["POST"]),
        Route("/v1/models/{rest:path}", tf_serving, methods=["POST"]),
        Route("/predictions/{name}", torchserve, methods=["POST", "PUT"]),
        Route("/score", generic, methods=["POST"]),
        Route("/echo", echo, methods=["POST", "PUT"]),
        Route("/headers", headers, methods=["GET", "POST"]),
        Route("/response-headers", response_headers),
        Route("/slow", slow),
        Route("/metrics", metrics),
        Route("/healthz", metrics),
        Route("/gzip", gzipped, methods=["POST"]),
        Route("/no-content", no_content, methods=["POST"]),
        Route("/teapot", teapot),
    ])


class Upstream:
    """The model server on uvicorn, in a thread."""

    def __init__(self) -> None:
        self.state = UpstreamState()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(model_server(self.state), host="127.0.0.1", port=self.port,
                                log_level="warning", lifespan="off", timeout_keep_alive=30)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Upstream:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "model server did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.state.release.set()
        self.server.should_exit = True
        self.thread.join(10)


class Proxy:
    """The proxy on its own event loop, in a thread."""

    def __init__(self, config: ProxyConfig, recorder: InlineRecorder | None) -> None:
        self.config = config
        self.recorder = recorder
        self.loop = asyncio.new_event_loop()
        self.started = threading.Event()
        self.server: ProxyServer | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.stop: asyncio.Event | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def main() -> None:
            self.stop = asyncio.Event()
            await serve(self.config, self.recorder, ready=self._ready, stop=self.stop)

        self.loop.run_until_complete(main())
        self.loop.close()

    def _ready(self, server: ProxyServer) -> None:
        self.server = server
        self.started.set()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.port}"

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.port

    def __enter__(self) -> Proxy:
        self.thread.start()
        assert self.started.wait(10), "proxy did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        if self.stop is not None:
            self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(15)


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with Upstream() as served:
        yield served


ProxyFactory = Callable[..., Proxy]


@pytest.fixture
def make_proxy(
    upstream: Upstream, make_agent: AgentFactory, list_producer: ListProducer
) -> Iterator[ProxyFactory]:
    started: list[Proxy] = []

    def factory(
        *, agent_settings: dict[str, Any] | None = None, record: bool = True, **options: Any
    ) -> Proxy:
        options.setdefault("upstream", upstream.url)
        config = ProxyConfig(host="127.0.0.1", port=0, **options)
        recorder = None
        if record:
            agent = make_agent(list_producer, hmac_key="test-key", **(agent_settings or {}))
            recorder = InlineRecorder(agent, principal_from_address=config.principal_from_address)
        proxy = Proxy(config, recorder).__enter__()
        started.append(proxy)
        return proxy

    yield factory
    for proxy in started:
        proxy.__exit__()


@pytest.fixture
def proxy(make_proxy: ProxyFactory) -> Proxy:
    return make_proxy()


def events_of(
    proxy: Proxy, producer: ListProducer, count: int, timeout: float = 10.0
) -> list[InferenceEvent]:
    """Wait for ``count`` events (they are built after the response, then shipped)."""
    assert proxy.recorder is not None
    deadline = time.monotonic() + timeout
    while True:
        proxy.recorder.agent.flush(1.0)
        events = producer.events()
        if len(events) >= count or time.monotonic() > deadline:
            assert len(events) == count, [e.endpoint for e in events]
            return events
        time.sleep(0.01)


def raw_exchange(port: int, data: bytes, *, timeout: float = 10.0) -> bytes:
    """Send raw bytes, read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def proxy_error(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["proxy"] == "inferwatch"
    assert response.headers["x-inferwatch-proxy-error"] == body["error"]["type"]
    error: dict[str, Any] = body["error"]
    return error


CHAT = {
    "model": "llama-3-8b",
    "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is the capital of France? Mail me at bob@example.com"},
    ],
    "max_tokens": 50,
}


# OpenAI-compatible


def test_chat_passes_through_and_becomes_an_event(
    proxy: Proxy, upstream: Upstream, list_producer: ListProducer
) -> None:
    direct = httpx.post(f"{upstream.url}/v1/chat/completions", json=CHAT)
    via = httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT,
                     headers={"authorization": f"Bearer {API_KEY}"})
    assert via.status_code == direct.status_code == 200
    assert via.content == direct.content
    assert upstream.state.requests[-1]["body"] == upstream.state.requests[-2]["body"]

    [event] = events_of(proxy, list_producer, 1)
    assert event.model == "llama-3-8b"
    assert event.operation == "chat"
    assert event.endpoint == "/v1/chat/completions"
    assert event.status == 200
    assert event.principal is not None
    assert event.principal.startswith("p_")
    assert API_KEY not in event.model_dump_json()
    assert event.input.text == "What is the capital of France? Mail me at [EMAIL]"
    assert event.output.text == "Paris."
    assert (event.input.tokens, event.output.tokens) == (21, 2)
    assert event.attributes["protocol"] == "openai"
    assert event.attributes["max_tokens"] == 50
    assert event.duration_ms is not None
    assert event.duration_ms > 0


def test_streamed_chat_is_passed_chunk_by_chunk_with_usage(
    proxy: Proxy, upstream: Upstream, list_producer: ListProducer
) -> None:
    request = {**CHAT, "stream": True}
    direct = httpx.post(f"{upstream.url}/v1/chat/completions", json=request).content

    # The model server holds the stream after its first chunk until the test releases it: the
    # client must see that chunk through the proxy while the rest is still being generated.
    upstream.state.release.clear()
    received = []
    with httpx.Client(timeout=10) as client, client.stream(
        "POST", f"{proxy.url}/v1/chat/completions", json={**request, "hold": True},
        headers={"x-api-key": API_KEY},
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        chunks = response.iter_raw()
        first = next(chunks)
        assert first.startswith(b"data: ")
        assert b"Hello" in first
        assert not upstream.state.release.is_set()
        received.append(first)
        upstream.state.release.set()
        received.extend(chunks)
    assert b"".join(received) == direct

    [event] = events_of(proxy, list_producer, 1)
    assert event.output.text == "Hello there!"
    assert (event.input.tokens, event.output.tokens) == (12, 3)
    assert event.output.finish_reason == "stop"
    assert event.attributes["stream"] is True


def test_completions_and_embeddings(proxy: Proxy, list_producer: ListProducer) -> None:
    httpx.post(f"{proxy.url}/v1/completions", json={"model": "gpt-x", "prompt": "2+2="})
    httpx.post(f"{proxy.url}/v1/embeddings", json={"model": "emb", "input": "a sentence"})
    completion, embedding = events_of(proxy, list_producer, 2)
    assert completion.operation == "text_completion"
    assert (completion.input.text, completion.output.text) == ("2+2=", "four")
    assert embedding.operation == "embeddings"
    assert (embedding.input.text, embedding.input.tokens) == ("a sentence", 3)


# Tensor and tabular protocols


def test_kserve_v2_rows_become_events_with_labels_and_scores(
    proxy: Proxy, list_producer: ListProducer
) -> None:
    body = {"inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP32",
                        "data": [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3]]}]}
    response = httpx.post(f"{proxy.url}/v2/models/iris/versions/3/infer", json=body)
    assert response.json()["model_name"] == "iris"
    first, second = events_of(proxy, list_producer, 2)
    assert first.model == second.model == "iris"
    assert first.endpoint == "/v2/models/{name}/versions/{version}/infer"
    assert first.operation == "predict"
    assert first.input.features == {"0": 5.1, "1": 3.5, "2": 1.4, "3": 0.2}
    assert second.input.features == {"0": 6.2, "1": 2.9, "2": 4.3, "3": 1.3}
    assert (first.output.label, first.output.score) == (1, 0.8)
    assert first.trace_id == second.trace_id
    assert first.attributes["protocol"] == "kserve_v2"
    assert first.attributes["path_model_version"] == "3"
    assert (first.attributes["batch_index"], first.attributes["batch_size"]) == (0, 2)


def test_kserve_v2_named_column_tensors(proxy: Proxy, list_producer: ListProducer) -> None:
    body = {"inputs": [
        {"name": "age", "shape": [1], "datatype": "INT32", "data": [41]},
        {"name": "plan", "shape": [1], "datatype": "BYTES", "data": ["pro"]},
    ]}
    httpx.post(f"{proxy.url}/v2/models/churn/infer", json=body)
    [event] = events_of(proxy, list_producer, 1)
    assert event.input.features == {"age": 41, "plan": "pro"}
    assert event.endpoint == "/v2/models/{name}/infer"


def test_tf_serving_predict(proxy: Proxy, list_producer: ListProducer) -> None:
    body = {"instances": [{"age": 41, "income": 52000.0}, {"age": 23, "income": 18000.0}]}
    response = httpx.post(f"{proxy.url}/v1/models/churn:predict", json=body)
    assert response.json() == {"predictions": [[0.1, 0.9], [0.1, 0.9]]}
    first, second = events_of(proxy, list_producer, 2)
    assert first.model == "churn"
    assert first.endpoint == "/v1/models/{name}:predict"
    assert first.input.features == {"age": 41, "income": 52000.0}
    assert second.input.features == {"age": 23, "income": 18000.0}
    assert (first.output.label, first.output.score) == (1, 0.9)
    assert first.attributes["protocol"] == "tf_serving"


def test_torchserve_prediction(proxy: Proxy, list_producer: ListProducer) -> None:
    httpx.post(f"{proxy.url}/predictions/resnet-18", json={"data": [0.5, 0.25]})
    [event] = events_of(proxy, list_producer, 1)
    assert event.model == "resnet-18"
    assert event.endpoint == "/predictions/{name}"
    assert (event.output.label, event.output.score) == ("tabby_cat", 0.91)
    assert event.attributes["protocol"] == "torchserve"


def test_generic_json(make_proxy: ProxyFactory, list_producer: ListProducer) -> None:
    proxy = make_proxy(agent_settings={"model": "churn-v2"})
    httpx.post(f"{proxy.url}/score?debug=1", json={"tenure": 12, "plan": "pro"})
    [event] = events_of(proxy, list_producer, 1)
    assert event.model == "churn-v2"
    assert event.endpoint == "/score"
    assert event.input.features == {"tenure": 12, "plan": "pro"}
    assert (event.output.label, event.output.score) == ("churn", 0.73)
    assert event.attributes["protocol"] == "generic"


def test_gzip_response_is_passed_as_sent_and_read_decoded(proxy: Proxy, list_producer: ListProducer) -> None:
    with httpx.Client() as client:
        response = client.post(f"{proxy.url}/gzip", json={"text": "win money"})
    assert response.headers["content-encoding"] == "gzip"
    assert response.json() == {"label": "spam", "score": 0.99}  # httpx decoded the bytes we passed
    [event] = events_of(proxy, list_producer, 1)
    assert (event.output.label, event.output.score) == ("spam", 0.99)
    assert event.attributes["response_encoding"] == "gzip"


# Bytes and headers


def test_binary_body_and_query_pass_unchanged(proxy: Proxy, upstream: Upstream) -> None:
    payload = os.urandom(300_000)
    response = httpx.post(f"{proxy.url}/echo?a=1&b=%2F", content=payload)
    assert response.content == payload
    assert upstream.state.requests[-1]["body"] == payload


def test_headers_preserved_and_hop_by_hop_removed(proxy: Proxy) -> None:
    response = httpx.get(f"{proxy.url}/headers", headers={
        "x-request-id": "r-1", "authorization": "Bearer tok", "connection": "keep-alive, x-hop",
        "x-hop": "secret", "proxy-authorization": "Basic Zm9v", "te": "trailers",
        "host": "model.example.com",
    })
    seen = dict(response.json())
    assert seen["x-request-id"] == "r-1"
    assert seen["authorization"] == "Bearer tok"
    assert seen["host"] == "model.example.com"  # passed as sent, and still only our upstream got it
    for hop in ("connection", "x-hop", "proxy-authorization", "te"):
        assert hop not in seen

    response = httpx.get(f"{proxy.url}/response-headers")
    assert response.headers["x-model-server"] == "yes"
    assert response.headers.get_list("set-cookie") == ["a=1", "b=2"]
    assert "keep-alive" not in response.headers


def test_status_and_body_of_upstream_errors_pass_unchanged(proxy: Proxy, list_producer: ListProducer) -> None:
    response = httpx.get(f"{proxy.url}/teapot")
    assert response.status_code == 418
    assert response.json() == {"error": "I am a teapot"}
    assert "x-inferwatch-proxy-error" not in response.headers
    [event] = events_of(proxy, list_producer, 1)
    assert event.status == 418


def test_head_no_content_and_expect_continue(proxy: Proxy) -> None:
    with httpx.Client() as client:
        head = client.head(f"{proxy.url}/response-headers")
        assert head.status_code == 200
        assert head.content == b""
        assert client.post(f"{proxy.url}/no-content", json={}).status_code == 204
        assert client.get(f"{proxy.url}/response-headers").text == "ok"  # the connection still works
    answer = raw_exchange(proxy.port, b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n"
                                      b"expect: 100-continue\r\nconnection: close\r\n\r\nhello")
    assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n")
    assert answer.endswith(b"hello")


def test_pipelined_requests_are_answered_in_order(proxy: Proxy) -> None:
    requests = b"".join(
        b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n%02d" % i for i in range(5)
    ) + b"GET /headers HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    answer = raw_exchange(proxy.port, requests)
    assert answer.count(b"HTTP/1.1 200 OK") == 6
    bodies = [answer.index(b"\r\n\r\n%02d" % i) for i in range(5)]
    assert bodies == sorted(bodies)


def test_http10_client_gets_a_close_delimited_stream(proxy: Proxy) -> None:
    body = json.dumps({**CHAT, "stream": True}).encode()
    answer = raw_exchange(proxy.port, b"POST /v1/chat/completions HTTP/1.0\r\n"
                                      b"content-type: application/json\r\n"
                                      b"content-length: %d\r\n\r\n%s" % (len(body), body))
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"transfer-encoding" not in head.lower()
    assert rest.endswith(b"data: [DONE]\n\n")


# The proxy's own answers


def test_oversized_body_gets_413_naming_the_limit(
    make_proxy: ProxyFactory, list_producer: ListProducer
) -> None:
    proxy = make_proxy(max_request_bytes=1000)
    response = httpx.post(f"{proxy.url}/echo", content=b"x" * 1001)
    assert response.status_code == 413
    error = proxy_error(response)
    assert error["type"] == "request_too_large"
    assert error["limit_bytes"] == 1000
    assert "--max-request-bytes" in error["setting"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is counted as the body arrives
        for _ in range(5):
            yield b"y" * 300

    assert httpx.post(f"{proxy.url}/echo", content=chunks()).status_code == 413
    assert httpx.post(f"{proxy.url}/echo", content=b"x" * 1000).status_code == 200
    events = events_of(proxy, list_producer, 3)
    assert [(e.status, e.error) for e in events[:2]] == [(413, "request_too_large")] * 2


def test_a_client_still_sending_its_oversized_body_reads_the_413(make_proxy: ProxyFactory) -> None:
    # http.client (under requests and urllib) writes the whole body before it reads: had the proxy
    # closed with 20 MB unread, the kernel would reset the connection and the client see a reset.
    proxy = make_proxy(max_request_bytes=1000)
    for _ in range(3):
        client = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
        client.request("POST", "/echo", body=b"x" * 20_000_000)
        response = client.getresponse()
        assert response.status == 413
        assert json.loads(response.read())["error"]["type"] == "request_too_large"
        client.close()


def test_lingering_after_a_413_ends_when_the_client_stalls_or_sends_too_much(
    make_proxy: ProxyFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(proxy_module, "_LINGER_IDLE_S", 0.2)
    monkeypatch.setattr(proxy_module, "_LINGER_BYTES", 1 << 20)
    proxy = make_proxy(max_request_bytes=1000)
    head = b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 100000000\r\n\r\n"
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as stalled:
        stalled.sendall(head + b"x" * 5000)  # then nothing, the connection left open
        answer = b"".join(iter(lambda: stalled.recv(65536), b""))  # ends: the proxy closed
    assert answer.startswith(b"HTTP/1.1 413 ")
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as endless:
        endless.sendall(head)
        chunk, cut_off = b"x" * 65536, None
        for _ in range(10_000):  # 640 MiB at most: the proxy stops dropping after 1 MiB
            try:
                endless.sendall(chunk)
            except (ConnectionResetError, BrokenPipeError) as exc:
                cut_off = exc
                break
        assert cut_off is not None
        assert endless.recv(65536).startswith(b"HTTP/1.1 413 ")


def test_malformed_request_gets_400(proxy: Proxy, upstream: Upstream, list_producer: ListProducer) -> None:
    answer = raw_exchange(proxy.port, b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n"
                                      b"transfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b'"type": "bad_request"' in answer
    assert raw_exchange(proxy.port, b"NOT HTTP AT ALL\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert upstream.state.requests == []  # neither reached the model server
    # A request whose head was read is an event (status 400); bytes that never made a request are not.
    [event] = events_of(proxy, list_producer, 1)
    assert (event.status, event.error, event.endpoint) == (400, "bad_request", "/echo")


def test_never_an_open_proxy(proxy: Proxy, upstream: Upstream) -> None:
    answer = raw_exchange(proxy.port, b"GET http://169.254.169.254/latest/meta-data HTTP/1.1\r\n"
                                      b"host: 169.254.169.254\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"absolute_target_refused" in answer
    answer = raw_exchange(proxy.port, b"CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 405 ")
    metrics = httpx.get(f"{proxy.url}/-/metrics").text  # the reason is the error type answered
    assert 'inferwatch_proxy_rejected_total{reason="absolute_target_refused"} 1' in metrics
    assert upstream.state.requests == []
    # Whatever the Host header says, the request goes to the one upstream.
    response = httpx.get(f"{proxy.url}/headers", headers={"host": "evil.example.com"})
    assert response.status_code == 200
    assert upstream.state.requests[-1]["path"] == "/headers"


@pytest.mark.parametrize("request_bytes", [
    b"GET /v1/models HTTP/1.1\r\nhost: x\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: Upgrade, HTTP2-Settings\r\nupgrade: h2c\r\n"
    b"http2-settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 7\r\nconnection: Upgrade\r\n"
    b"upgrade: websocket\r\n\r\n{\"a\":1}",
])
def test_an_upgrade_is_refused_once_and_never_reaches_the_model_server(
    proxy: Proxy, upstream: Upstream, request_bytes: bytes
) -> None:
    answer = raw_exchange(proxy.port, request_bytes)
    assert answer.startswith(b"HTTP/1.1 501 ")
    assert b"upgrade_not_supported" in answer
    assert answer.count(b"HTTP/1.1 ") == 1  # one answer, not the model server's and then ours
    assert upstream.state.requests == []


def test_upstream_down_gives_502_and_an_event(make_proxy: ProxyFactory, list_producer: ListProducer) -> None:
    proxy = make_proxy(upstream=f"http://127.0.0.1:{free_port()}")
    response = httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT, headers={"x-api-key": API_KEY})
    assert response.status_code == 502
    error = proxy_error(response)
    assert error["type"] == "upstream_unreachable"
    assert "127.0.0.1" in error["message"]
    [event] = events_of(proxy, list_producer, 1)
    assert (event.status, event.error) == (502, "upstream_unreachable")
    assert event.input.text is not None  # the request was read; it is still worth recording
    health = httpx.get(f"{proxy.url}/-/healthz")
    assert health.status_code == 503
    assert health.json()["upstream_reachable"] is False
    assert httpx.get(f"{proxy.url}/-/livez").status_code == 200


def test_upstream_timeout_gives_504(make_proxy: ProxyFactory, list_producer: ListProducer) -> None:
    proxy = make_proxy(upstream_timeout_s=0.3)
    response = httpx.get(f"{proxy.url}/slow", timeout=10)
    assert response.status_code == 504
    error = proxy_error(response)
    assert error["type"] == "upstream_timeout"
    assert "--upstream-timeout" in error["setting"]
    [event] = events_of(proxy, list_producer, 1)
    assert (event.status, event.error) == (504, "upstream_timeout")


@contextlib.contextmanager
def held_stream(proxy: Proxy, upstream: Upstream) -> Iterator[Iterator[bytes]]:
    """A streamed chat whose first chunk arrived while the model server holds the rest; the
    client leaves when the block ends (the iterator is yielded so that it stays referenced:
    a dropped iterator closes the response, which is the client leaving early)."""
    upstream.state.release.clear()
    with httpx.Client(timeout=10) as client, client.stream(
        "POST", f"{proxy.url}/v1/chat/completions", json={**CHAT, "stream": True, "hold": True}
    ) as response:
        chunks = response.iter_raw()
        next(chunks)
        yield chunks


def test_client_leaving_mid_stream_closes_the_upstream_stream(
    proxy: Proxy, upstream: Upstream, list_producer: ListProducer
) -> None:
    with held_stream(proxy, upstream):
        pass
    # The client hung up while the model was still generating: the proxy closed its upstream
    # connection, and the model server's stream ended without being released.
    assert upstream.state.stream_closed.wait(10)
    upstream.state.release.set()
    [event] = events_of(proxy, list_producer, 1)
    assert event.error == "client_disconnected"
    assert event.output.text == "Hello"


def test_a_client_that_hangs_up_after_the_status_still_has_the_answer_recorded(
    proxy: Proxy, upstream: Upstream, list_producer: ListProducer
) -> None:
    # An on-call walk-through: clients that read the status and close (urllib without read(),
    # http.client's getresponse(); close()) left 56 of 200 events without their output, and a
    # leaked key in it unseen. A whole answer already made is read to its end for the record.
    payload = json.dumps({**CHAT, "slow_body": True}).encode()
    port = int(proxy.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                     b"content-length: %d\r\n\r\n" % len(payload) + payload)
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 200")
    [event] = events_of(proxy, list_producer, 1)
    assert event.error == "client_disconnected"
    assert event.output.text is not None
    assert "[SECRET:aws_access_key" in event.output.text
    assert event.output.finish_reason == "stop"


def test_a_request_cut_off_by_shutdown_says_so_not_that_the_client_left(
    proxy: Proxy, upstream: Upstream, list_producer: ListProducer
) -> None:
    with held_stream(proxy, upstream):
        assert proxy.server is not None
        asyncio.run_coroutine_threadsafe(proxy.server.close(grace_s=0.2), proxy.loop).result(10)
    upstream.state.release.set()
    [event] = events_of(proxy, list_producer, 1)
    assert event.error == "proxy_shutdown"


# Principal


def test_principal_from_header_bearer_or_address(
    make_proxy: ProxyFactory, list_producer: ListProducer
) -> None:
    proxy = make_proxy(agent_settings={"principal_header": "x-tenant"})
    httpx.post(f"{proxy.url}/score", json={"a": 1}, headers={"x-tenant": "acme"})
    httpx.post(f"{proxy.url}/score", json={"a": 1}, headers={"authorization": "Bearer acme"})
    httpx.post(f"{proxy.url}/score", json={"a": 1})
    httpx.post(f"{proxy.url}/score", json={"a": 1})
    by_header, by_bearer, by_address, again = events_of(proxy, list_producer, 4)
    assert by_header.principal == by_bearer.principal  # the same credential, the same pseudonym
    assert by_address.principal is not None
    assert by_address.principal.startswith("p_")
    assert by_address.principal == again.principal != by_header.principal
    assert "acme" not in by_header.model_dump_json()
    assert by_address.client_ip == "127.0.0.0"


def test_no_principal_from_address_when_turned_off(
    make_proxy: ProxyFactory, list_producer: ListProducer
) -> None:
    proxy = make_proxy(principal_from_address=False)
    httpx.post(f"{proxy.url}/score", json={"a": 1})
    [event] = events_of(proxy, list_producer, 1)
    assert event.principal is None


def test_forwarded_for_is_opt_in(make_proxy: ProxyFactory) -> None:
    plain = make_proxy(record=False)
    assert "x-forwarded-for" not in dict(httpx.get(f"{plain.url}/headers").json())
    forwarding = make_proxy(record=False, forwarded_for=True)
    seen = dict(httpx.get(f"{forwarding.url}/headers", headers={"x-forwarded-for": "203.0.113.9"}).json())
    assert seen["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"


# Health and metrics


def test_healthz_says_whether_events_reach_the_bus_without_failing_the_probe(
    upstream: Upstream, make_agent: AgentFactory, down_producer: DownProducer
) -> None:
    # An agent whose bus refuses everything (a topic missing, brokers down) drops what it cannot
    # spool: the readiness probe stays the model's, but says so.
    config = ProxyConfig(host="127.0.0.1", port=0, upstream=upstream.url)
    agent = make_agent(down_producer, hmac_key="test-key")
    proxy = Proxy(config, InlineRecorder(agent, principal_from_address=True)).__enter__()
    try:
        httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT)
        deadline = time.monotonic() + 10
        while agent.stats().shipper.dropped == 0 and time.monotonic() < deadline:
            agent.flush(0.5)
        health = httpx.get(f"{proxy.url}/-/healthz")
        assert health.status_code == 200  # the model answers: ready
        events = health.json()["events"]
        assert events["bus_up"] is False
        assert (events["sent"], events["dropped"]) == (0, 1)
    finally:
        proxy.__exit__()


def test_healthz_livez_and_metrics_do_not_shadow_the_model_server(
    proxy: Proxy, list_producer: ListProducer
) -> None:
    health = httpx.get(f"{proxy.url}/-/healthz")
    assert health.status_code == 200
    assert health.json()["upstream_reachable"] is True
    assert httpx.get(f"{proxy.url}/metrics").text == "model_server_metric 1\n"  # the server's own
    assert httpx.get(f"{proxy.url}/healthz").text == "model_server_metric 1\n"
    httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT)
    events_of(proxy, list_producer, 1)
    metrics = httpx.get(f"{proxy.url}/-/metrics")
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = metrics.text
    assert 'inferwatch_proxy_requests_total{protocol="openai",code="200"} 1' in text
    assert 'inferwatch_proxy_request_duration_seconds_count{protocol="openai"} 1' in text
    assert "inferwatch_agent_events_captured_total" in text
    assert "inferwatch_agent_events_sent_total" in text
    assert "inferwatch_agent_queue_depth" in text
    assert 'inferwatch_agent_events_dropped_total{service="svc",reason="queue_full"} 0' in text
    assert httpx.get(f"{proxy.url}/-/nothing").status_code == 404
    assert len(list_producer.events()) == 1  # the proxy's own endpoints are not events


def test_metrics_count_upstream_errors_and_rejections(make_proxy: ProxyFactory) -> None:
    proxy = make_proxy(upstream=f"http://127.0.0.1:{free_port()}", max_request_bytes=1024, record=False)
    httpx.get(f"{proxy.url}/anything")
    httpx.post(f"{proxy.url}/anything", content=b"z" * 2000)
    text = httpx.get(f"{proxy.url}/-/metrics").text
    assert 'inferwatch_proxy_upstream_errors_total{kind="upstream_unreachable"} 1' in text
    assert 'inferwatch_proxy_rejected_total{reason="request_too_large"} 1' in text
    assert 'inferwatch_proxy_requests_total{protocol="generic",code="502"} 1' in text


def test_admin_prefix_is_configurable(make_proxy: ProxyFactory) -> None:
    proxy = make_proxy(admin_prefix="/_inferwatch/", record=False)
    assert httpx.get(f"{proxy.url}/_inferwatch/livez").status_code == 200
    assert httpx.get(f"{proxy.url}/-/livez").status_code == 404  # forwarded: the model server has none


def test_agent_failure_never_reaches_the_client(proxy: Proxy, list_producer: ListProducer) -> None:
    assert proxy.recorder is not None
    agent = proxy.recorder.agent

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("inferwatch bug")

    agent.tracer.start = broken  # type: ignore[method-assign]
    response = httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT)
    assert response.status_code == 200
    deadline = time.monotonic() + 5
    while agent.stats().internal_errors == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert agent.stats().internal_errors == 1
    assert httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT).status_code == 200


def test_slow_reader_of_a_large_response_gets_every_byte(proxy: Proxy) -> None:
    payload = os.urandom(6 << 20)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=20) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        sock.sendall(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % len(payload) + payload)
        time.sleep(0.5)  # the proxy's buffer towards us fills: it stops reading from the model server
        received = bytearray()
        while b"\r\n\r\n" not in received or len(received) < received.index(b"\r\n\r\n") + 4 + len(payload):
            chunk = sock.recv(65536)
            assert chunk
            received += chunk
    assert received.endswith(payload)
    # The upstream connection that was paused for us went back to the pool reading again.
    with httpx.Client() as client:
        for _ in range(3):
            assert client.post(f"{proxy.url}/echo", content=b"ok").content == b"ok"


# Retries: only the keep-alive race, never a request the upstream may have been working on


class DyingUpstream:
    """A raw HTTP/1.1 upstream that keeps connections alive and fails each path in ``die`` once.

    ``die[path]`` is ``"after_reading"`` (the request is read whole, then the connection closes
    with nothing answered: a worker killed mid-generation) or ``"before_reading"`` (the connection
    is reset as soon as the request starts to arrive, most of it unread: the server closed it as
    idle). Afterwards that path is answered ``200 ok``, as is every other.
    """

    def __init__(self, die: dict[str, str]) -> None:
        self.die = dict(die)
        self.seen: list[tuple[str, str, int]] = []  # method, path, body bytes read
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            buffer = b""
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ")
                length = next((int(line.split(":")[1]) for line in lines[1:]
                               if line.lower().startswith("content-length:")), 0)
                with self.lock:
                    mode = self.die.pop(path, None)
                if mode == "before_reading":
                    self.seen.append((method, path, len(buffer)))
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    return  # closed with unread bytes and no linger: a reset
                while len(buffer) < length:
                    chunk = conn.recv(1 << 20)
                    if not chunk:
                        return
                    buffer += chunk
                self.seen.append((method, path, length))
                buffer = buffer[length:]
                if mode == "after_reading":
                    return
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok")

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def dying_upstream(request: pytest.FixtureRequest) -> Iterator[DyingUpstream]:
    served = DyingUpstream(request.param)
    yield served
    served.close()


def retries(proxy: Proxy) -> int:
    text = httpx.get(f"{proxy.url}/-/metrics").text
    name = "inferwatch_proxy_upstream_retries_total"
    return int(next(line for line in text.splitlines() if line.startswith(name)).split()[-1])


@pytest.mark.parametrize("dying_upstream", [{"/v1/chat/completions": "after_reading"}], indirect=True)
def test_a_post_the_upstream_read_whole_and_died_on_is_not_sent_again(
    make_proxy: ProxyFactory, dying_upstream: DyingUpstream
) -> None:
    proxy = make_proxy(upstream=dying_upstream.url, record=False)
    with httpx.Client(timeout=10) as client:
        assert client.post(f"{proxy.url}/warm", content=b"{}").text == "ok"  # a pooled connection
        response = client.post(f"{proxy.url}/v1/chat/completions", json=CHAT)
    assert response.status_code == 502
    assert proxy_error(response)["type"] in ("upstream_closed", "upstream_reset")
    assert [path for _, path, _ in dying_upstream.seen] == ["/warm", "/v1/chat/completions"]  # once
    assert retries(proxy) == 0


@pytest.mark.parametrize("dying_upstream", [{"/v1/models": "after_reading"}], indirect=True)
def test_a_get_on_a_reused_connection_that_closed_unanswered_is_sent_once_more(
    make_proxy: ProxyFactory, dying_upstream: DyingUpstream
) -> None:
    proxy = make_proxy(upstream=dying_upstream.url, record=False)
    with httpx.Client(timeout=10) as client:
        assert client.get(f"{proxy.url}/warm").text == "ok"
        response = client.get(f"{proxy.url}/v1/models")
    assert response.text == "ok"
    assert [path for _, path, _ in dying_upstream.seen] == ["/warm", "/v1/models", "/v1/models"]
    assert retries(proxy) == 1


@pytest.mark.parametrize("dying_upstream", [{"/v1/embeddings": "before_reading"}], indirect=True)
def test_a_post_not_all_written_when_the_reused_connection_was_reset_is_sent_again(
    make_proxy: ProxyFactory, dying_upstream: DyingUpstream
) -> None:
    # The keep-alive race with a body larger than the sockets' buffers: the upstream closed the
    # connection with most of the request unread, so it cannot have acted on it.
    proxy = make_proxy(upstream=dying_upstream.url, record=False)
    body = b"x" * (24 << 20)
    with httpx.Client(timeout=30) as client:
        assert client.post(f"{proxy.url}/warm", content=b"{}").text == "ok"
        response = client.post(f"{proxy.url}/v1/embeddings", content=body)
    assert response.text == "ok"
    (first, second) = [seen for seen in dying_upstream.seen if seen[1] == "/v1/embeddings"]
    assert first[2] < len(body) == second[2]
    assert retries(proxy) == 1


def test_an_idle_connection_closed_before_it_is_picked_is_not_reused() -> None:
    listener = socket.create_server(("127.0.0.1", 0))  # a plain socket: nothing runs on the loop

    async def main() -> tuple[bool, bool]:
        port = listener.getsockname()[1]
        server = ProxyServer(ProxyConfig(upstream=f"http://127.0.0.1:{port}", port=0), None)
        pool = proxy_module._Pool(server)
        conn, reused = await pool.acquire()
        assert not reused
        pool.release(conn)
        peer, _ = listener.accept()
        peer.close()  # the server's keep-alive timeout, say
        assert conn.transport is not None
        # Without yielding to the loop, wait for the end of stream to reach the socket: the loop
        # has not handled it when the pool is next asked for a connection.
        assert select.select([conn.transport.get_extra_info("socket").fileno()], [], [], 10)[0]
        picked, reused = await pool.acquire()
        result = (picked is conn, reused)
        picked.close()
        conn.close()
        return result

    try:
        assert asyncio.run(main()) == (False, False)
    finally:
        listener.close()


def test_a_pooled_connection_past_its_idle_time_is_not_reused() -> None:
    # The sweep runs every pool_idle_s, so a connection could sit idle up to twice as long and
    # meet the upstream's own keep-alive close mid-request; acquire() retires it instead.
    from types import SimpleNamespace

    from inferwatch.agent.proxy import _Pool, _UpstreamConnection

    proxy = SimpleNamespace(upstream=SimpleNamespace(tls=False), metrics=SimpleNamespace(upstream_idle=0),
                            config=SimpleNamespace(pool_idle_s=4.0, max_idle_connections=8))
    pool = _Pool(proxy)  # type: ignore[arg-type]
    stale, fresh = _UpstreamConnection(pool), _UpstreamConnection(pool)
    stale.idle_since, fresh.idle_since = time.monotonic() - 5.0, time.monotonic() - 1.0
    pool.idle.extend([fresh, stale])  # the most recently released last: the stale one is tried first

    async def first() -> tuple[Any, bool]:
        return await pool.acquire()

    conn, reused = asyncio.run(first())
    assert (conn, reused) == (fresh, True)
    assert stale.closed


def test_an_email_or_key_in_the_path_does_not_leave_the_host(
    proxy: Proxy, upstream: Upstream, list_producer: ListProducer
) -> None:
    """A security walk-through: /v1/tenants/<email>/v1/chat/completions was kept verbatim as the
    event's endpoint (and the span's url.path), whatever the capture mode."""
    path = "/v1/tenants/bob.victim@example.org/hooks/AKIAZ3MXQ7R2LPWN4VYD/v1/chat/completions"
    httpx.post(f"{proxy.url}{path}", json=CHAT, headers={"authorization": f"Bearer {API_KEY}"})
    [event] = events_of(proxy, list_producer, 1)
    assert event.endpoint == "/v1/tenants/[EMAIL]/hooks/[SECRET:aws_access_key]/v1/chat/completions"
    assert "bob.victim" not in event.model_dump_json()
    assert "AKIAZ3MXQ7R2LPWN4VYD" not in event.model_dump_json()
