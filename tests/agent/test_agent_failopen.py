"""Fail-open: whatever happens to the bus or to inferwatch's own code, the app answers as before."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from fastapi import FastAPI

from inferwatch.agent import InferwatchMiddleware

if TYPE_CHECKING:
    from conftest import AgentFactory, DownProducer, HangingProducer, ListProducer

REQUESTS: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/predict", {"json": {"age": 41, "plan": "pro"}}),
    ("POST", "/predict", {"json": {"instances": [{"age": 1}, {"age": 2}]}}),
    ("POST", "/predict", {"content": b"{not json"}),
    (
        "POST",
        "/v1/chat/completions",
        {"json": {"messages": [{"role": "user", "content": "hi bob@example.com"}]}},
    ),
    ("GET", "/missing", {}),
    ("POST", "/teapot", {"json": {}}),
]


def model_app() -> FastAPI:
    app = FastAPI()

    @app.post("/predict")
    async def predict(body: dict[str, Any]) -> dict[str, Any]:
        return {"label": "stay", "score": 0.5, "echo": body}

    @app.post("/v1/chat/completions")
    async def chat(body: dict[str, Any]) -> dict[str, Any]:
        return {"choices": [{"index": 0, "message": {"content": "hello"}, "finish_reason": "stop"}]}

    @app.post("/teapot", status_code=418)
    async def teapot() -> dict[str, str]:
        return {"detail": "short and stout"}

    return app


def run_all(app: Any, requests: list[tuple[str, str, dict[str, Any]]]) -> list[tuple[int, bytes, list[Any]]]:
    async def send_all() -> list[tuple[int, bytes, list[Any]]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://model") as client:
            answers = []
            for method, url, options in requests:
                response = await client.request(method, url, **options)
                answers.append((response.status_code, response.content, sorted(response.headers.items())))
            return answers

    return asyncio.run(send_all())


def monitored(agent: Any) -> FastAPI:
    app = model_app()
    app.add_middleware(InferwatchMiddleware, agent=agent)
    return app


def test_bus_down_changes_no_response_and_counts_drops(
    make_agent: AgentFactory, down_producer: DownProducer
) -> None:
    agent = make_agent(down_producer)
    assert run_all(monitored(agent), REQUESTS) == run_all(model_app(), REQUESTS)
    agent.flush(timeout=5.0)
    stats = agent.stats()
    assert stats.shipper.captured == len(REQUESTS) + 1  # the batched request gave two events
    assert stats.shipper.dropped_bus_error == stats.shipper.captured
    assert stats.shipper.sent == 0
    assert stats.internal_errors == 0
    assert down_producer.attempts > 0


def test_hanging_bus_does_not_hold_requests_and_fills_the_queue(
    make_agent: AgentFactory, hanging: HangingProducer
) -> None:
    agent = make_agent(hanging, queue_size=2, batch_size=1)
    many = [("POST", "/predict", {"json": {"age": n}}) for n in range(12)]
    answers = run_all(monitored(agent), many)  # completes although the bus never answers
    assert [status for status, _, _ in answers] == [200] * 12
    stats = agent.stats().shipper
    assert stats.captured == 12
    assert stats.queue_depth <= 2
    assert stats.dropped_queue_full >= 12 - 2 - 1  # at most one event is stuck inside send()
    assert stats.sent == 0


def test_full_queue_drops_are_counted(make_agent: AgentFactory, hanging: HangingProducer) -> None:
    agent = make_agent(hanging, queue_size=1, batch_size=1)
    app = monitored(agent)
    run_all(app, [("POST", "/predict", {"json": {"age": 0}})])
    assert hanging.entered.wait(5.0)  # the first event is stuck in send(); the queue is empty
    run_all(app, [("POST", "/predict", {"json": {"age": n}}) for n in range(1, 5)])
    stats = agent.stats().shipper
    assert (stats.captured, stats.queue_depth, stats.dropped_queue_full) == (5, 1, 3)


def test_inferwatch_failure_is_swallowed_and_counted(
    make_agent: AgentFactory, list_producer: ListProducer, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = make_agent(list_producer)

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("bug in inferwatch")

    # Simulate a bug in inferwatch's own code on the request path (not the app's).
    monkeypatch.setattr(agent, "record", broken)
    assert run_all(monitored(agent), REQUESTS) == run_all(model_app(), REQUESTS)
    assert agent.stats().internal_errors == len(REQUESTS)
