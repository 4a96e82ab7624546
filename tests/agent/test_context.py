"""The context API: the application names the caller, the model and extra attributes of a call."""

from __future__ import annotations

import asyncio
import doctest
import importlib
import threading
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from fastapi import FastAPI

from inferwatch.agent import (
    InferwatchMiddleware,
    context,
    monitor,
    set_attributes,
    set_model,
    set_principal,
)
from inferwatch.agent.content import CallContent
from inferwatch.agent.context import MAX_ATTRIBUTE_CHARS, MAX_ATTRIBUTES, current_values

if TYPE_CHECKING:
    from conftest import AgentFactory, ListProducer

    from inferwatch.agent import Agent
    from inferwatch.collectors.event import InferenceEvent


def shipped(agent: Agent, producer: ListProducer) -> list[InferenceEvent]:
    assert agent.flush(timeout=5.0)
    return producer.events()


def app_with_context() -> FastAPI:
    app = FastAPI()

    @app.post("/async/{user}")
    async def async_view(user: str, body: dict[str, Any]) -> dict[str, str]:
        set_principal(user)
        set_model("routed-model")
        set_attributes({"tenant": "acme"}, experiment="b")
        return {"label": "stay"}

    @app.post("/sync/{user}")
    def sync_view(user: str, body: dict[str, Any]) -> dict[str, str]:  # runs in FastAPI's thread pool
        set_principal(user)
        return {"label": "stay"}

    @app.post("/block")
    async def block_view(body: dict[str, Any]) -> dict[str, str]:
        with context(principal="p_already-a-pseudonym", pseudonymized=True, attributes={"arm": "b"}):
            pass  # the request keeps the values after the block
        return {"label": "stay"}

    @app.post("/task")
    async def task_view(body: dict[str, Any]) -> dict[str, str]:
        async def inner() -> None:
            set_principal("from-a-task")

        await asyncio.create_task(inner())  # a task copies the context: same call
        return {"label": "stay"}

    return app


def post(agent: Agent, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    app = app_with_context()
    app.add_middleware(InferwatchMiddleware, agent=agent)

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://model") as client:
            return await client.post(path, json={"age": 3}, headers=headers or {})

    return asyncio.run(send())


def test_an_async_view_names_principal_model_and_attributes(
    make_agent: AgentFactory, list_producer: ListProducer
) -> None:
    agent = make_agent(list_producer, model="configured")
    post(agent, "/async/alice@example.com", headers={"x-api-key": "shared-gateway-key"})
    (event,) = shipped(agent, list_producer)
    # The app's principal wins over the header's, and is pseudonymised like a key: no raw id.
    assert event.principal == agent.pseudonymizer.pseudonym("alice@example.com")
    assert event.model == "routed-model"
    assert (event.attributes["tenant"], event.attributes["experiment"]) == ("acme", "b")
    assert event.attributes["request_bytes"] > 0  # the middleware's own attributes are still there


def test_a_thread_pool_view_reaches_its_request(
    make_agent: AgentFactory, list_producer: ListProducer
) -> None:
    agent = make_agent(list_producer)
    post(agent, "/sync/bob")
    (event,) = shipped(agent, list_producer)
    assert event.principal == agent.pseudonymizer.pseudonym("bob")


def test_a_task_started_by_the_view_reaches_its_request(
    make_agent: AgentFactory, list_producer: ListProducer
) -> None:
    agent = make_agent(list_producer)
    post(agent, "/task")
    (event,) = shipped(agent, list_producer)
    assert event.principal == agent.pseudonymizer.pseudonym("from-a-task")


def test_a_block_applies_to_the_request_in_flight_and_a_pseudonym_is_kept(
    make_agent: AgentFactory, list_producer: ListProducer
) -> None:
    agent = make_agent(list_producer)
    post(agent, "/block")
    (event,) = shipped(agent, list_producer)
    assert event.principal == "p_already-a-pseudonym"
    assert event.attributes["arm"] == "b"


def test_a_monitored_function_called_in_a_block_takes_its_values(
    make_agent: AgentFactory, list_producer: ListProducer
) -> None:
    agent = make_agent(list_producer)

    @monitor(agent=agent, model="default-model")
    def predict(features: dict[str, int]) -> str:
        return "stay"

    with context(principal="carol", model="outer", attributes={"tenant": "acme", "arm": "a"}):
        predict({"x": 1})
        with context(model="inner", attributes={"arm": "b"}):  # blocks nest, the innermost wins
            predict({"x": 2})
    predict({"x": 3})  # outside: nothing applies
    first, second, third = shipped(agent, list_producer)
    assert (first.model, first.attributes["arm"], first.attributes["tenant"]) == ("outer", "a", "acme")
    assert (second.model, second.attributes["arm"], second.attributes["tenant"]) == ("inner", "b", "acme")
    assert first.principal == second.principal == agent.pseudonymizer.pseudonym("carol")
    assert (third.model, third.principal, "arm" in third.attributes) == ("default-model", None, False)


def test_set_inside_a_monitored_function(make_agent: AgentFactory, list_producer: ListProducer) -> None:
    agent = make_agent(list_producer)

    @monitor(agent=agent)
    def predict(features: dict[str, int]) -> str:
        assert set_principal("dave")
        return "stay"

    predict({"x": 1})
    (event,) = shipped(agent, list_producer)
    assert event.principal == agent.pseudonymizer.pseudonym("dave")


@pytest.mark.parametrize(
    ("capture", "expected", "obj"),
    [("redacted", "write to [EMAIL]", "['a', 1]"), ("none", "[TEXT]", "[TEXT]"),
     ("full", "write to eve@example.com", "['a', 1]")],
)
def test_string_attributes_are_redacted_unless_capture_is_full(
    make_agent: AgentFactory, list_producer: ListProducer, capture: str, expected: str, obj: str
) -> None:
    agent = make_agent(list_producer, capture=capture)
    call = agent.begin()
    token = call.attach()
    set_attributes(note="write to eve@example.com", score=0.5, obj=["a", 1])
    call.detach(token)
    agent.record(call, CallContent(), status=200)
    (event,) = shipped(agent, list_producer)
    assert event.attributes["note"] == expected
    assert event.attributes["score"] == 0.5
    assert event.attributes["obj"] == obj  # not a scalar: kept as its str(), a string like any other


def test_attributes_are_capped(make_agent: AgentFactory, list_producer: ListProducer) -> None:
    agent = make_agent(list_producer, capture="full")
    call = agent.begin()
    token = call.attach()
    set_attributes({f"k{n}": "v" * 5000 for n in range(200)})
    call.detach(token)
    agent.record(call, CallContent(), status=200)
    (event,) = shipped(agent, list_producer)
    names = [k for k in event.attributes if k.startswith("k")]
    assert len(names) == MAX_ATTRIBUTES
    assert all(len(str(event.attributes[k])) == MAX_ATTRIBUTE_CHARS for k in names)


def test_outside_any_call_setters_do_nothing() -> None:
    assert set_principal("nobody") is False
    assert set_model("m") is False
    assert set_attributes(a=1) is False
    with context(model="m"):
        assert set_model("other") is False  # a block is not a call
        assert current_values().model == "m"
    assert current_values().model is None


def test_concurrent_calls_do_not_see_each_others_values(
    make_agent: AgentFactory, list_producer: ListProducer
) -> None:
    agent = make_agent(list_producer)

    @monitor(agent=agent)
    def predict(features: dict[str, int]) -> int:
        set_principal(f"user-{features['n']}")
        set_attributes(n=features["n"])
        barrier.wait(5.0)  # every thread is inside its call at once
        return features["n"]

    barrier = threading.Barrier(8)
    threads = [threading.Thread(target=predict, args=({"n": n},)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5.0)
    events = shipped(agent, list_producer)
    assert len(events) == 8
    for event in events:
        n = event.attributes["n"]
        assert event.principal == agent.pseudonymizer.pseudonym(f"user-{n}")
        assert event.output.label == n


@pytest.mark.parametrize(
    "name", ["inferwatch.agent.context", "inferwatch.agent.spool", "inferwatch.agent.metrics"]
)
def test_docstring_examples_of_the_context_spool_and_metrics_modules(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0
    assert result.failed == 0
