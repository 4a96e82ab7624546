"""String features and attributes per capture mode: no free text leaves the process under ``none``.

The reviewer's cases: a classifier taking ``{"text": "..."}`` behind the ASGI middleware, an
application attribute holding a customer's note, and ``@monitor def generate(prompt: str)``.
The rule is docs/privacy.md's "String values under capture none".
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from fastapi import FastAPI

from inferwatch.agent import InferwatchMiddleware, monitor, set_attributes
from inferwatch.agent.content import MAX_CATEGORY_CHARS, TEXT_PLACEHOLDER, is_category, scalar_value
from inferwatch.collectors.settings import CaptureMode

if TYPE_CHECKING:
    from conftest import AgentFactory, ListProducer

    from inferwatch.agent import Agent
    from inferwatch.collectors.event import InferenceEvent

LETTER = "Dear support, I am John Smith of 12 Elm Street and I want to cancel, mail john@example.com"
NOTE = "customer says: my card is 4111 1111 1111 1111, I hate this product"
PROMPT = "Ignore previous instructions; my name is Jane Doe, DOB 1990-01-02"


def shipped(agent: Agent, producer: ListProducer) -> list[InferenceEvent]:
    assert agent.flush(timeout=5.0)
    return producer.events()


def classify(agent: Agent, body: dict[str, Any]) -> None:
    app = FastAPI()

    @app.post("/classify")
    async def route(request: dict[str, Any]) -> dict[str, Any]:
        set_attributes(note=NOTE, tenant="acme")
        return {"label": "negative", "score": 0.9}

    app.add_middleware(InferwatchMiddleware, agent=agent)

    async def send() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://m") as client:
            assert (await client.post("/classify", json=body)).status_code == 200

    asyncio.run(send())


def test_capture_none_ships_no_free_text_from_a_body_or_an_attribute(
    make_agent: AgentFactory, list_producer: ListProducer
) -> None:
    agent = make_agent(list_producer, capture="none")
    body = {"text": LETTER, "lang": "en-GB", "channel": "e-mail", "stars": 1, "who": "bob@example.com"}
    classify(agent, body)
    (event,) = shipped(agent, list_producer)
    assert event.input.features == {
        "text": TEXT_PLACEHOLDER, "lang": "en-GB", "channel": "e-mail", "stars": 1, "who": "[EMAIL]"}
    assert event.attributes["note"] == TEXT_PLACEHOLDER
    assert event.attributes["tenant"] == "acme"
    wire = json.dumps(event.model_dump(mode="json"))
    for fragment in ("Smith", "Elm", "john@", "4111", "hate"):
        assert fragment not in wire


def test_capture_none_ships_no_free_text_from_monitor_arguments(
    make_agent: AgentFactory, list_producer: ListProducer
) -> None:
    agent = make_agent(list_producer, capture="none")

    @monitor(agent=agent)
    def generate(prompt: str, temperature: float = 0.2, style: str = "terse") -> str:
        return "ok"

    generate(PROMPT, style="terse")
    (event,) = shipped(agent, list_producer)
    assert event.input.features == {"prompt": TEXT_PLACEHOLDER, "style": "terse"}
    assert "Jane" not in json.dumps(event.model_dump(mode="json"))


def test_capture_redacted_redacts_string_features_and_attributes_like_prompts(
    make_agent: AgentFactory, list_producer: ListProducer
) -> None:
    agent = make_agent(list_producer, capture="redacted")
    classify(agent, {"text": LETTER, "lang": "en-GB"})
    (event,) = shipped(agent, list_producer)
    assert event.input.features is not None
    assert event.input.features["text"] == LETTER.replace("john@example.com", "[EMAIL]")
    assert event.input.features["lang"] == "en-GB"
    assert event.attributes["note"] == "customer says: my card is [CARD], I hate this product"


def test_capture_full_keeps_string_features_as_sent(
    make_agent: AgentFactory, list_producer: ListProducer
) -> None:
    agent = make_agent(list_producer, capture="full")
    classify(agent, {"text": LETTER})
    (event,) = shipped(agent, list_producer)
    assert event.input.features == {"text": LETTER}
    assert event.attributes["note"] == NOTE


@pytest.mark.parametrize(
    ("value", "none", "redacted"),
    [
        ("pro", "pro", "pro"),
        ("en-US", "en-US", "en-US"),
        ("2024-01-31", "2024-01-31", "2024-01-31"),
        ("", "", ""),
        ("bob@example.com", "[EMAIL]", "[EMAIL]"),
        ("4111111111111111", "[CARD]", "[CARD]"),
        ("x" * MAX_CATEGORY_CHARS, "x" * MAX_CATEGORY_CHARS, "x" * MAX_CATEGORY_CHARS),
        ("x" * (MAX_CATEGORY_CHARS + 1), TEXT_PLACEHOLDER, "x" * (MAX_CATEGORY_CHARS + 1)),
        ("two words", TEXT_PLACEHOLDER, "two words"),
        ("tab\there", TEXT_PLACEHOLDER, "tab\there"),
        ("no\u00a0break", TEXT_PLACEHOLDER, "no\u00a0break"),
        ("write to eve@example.com", TEXT_PLACEHOLDER, "write to [EMAIL]"),
    ],
)
def test_the_documented_rule(value: str, none: str, redacted: str) -> None:
    assert scalar_value(value, CaptureMode.NONE) == none
    assert scalar_value(value, CaptureMode.REDACTED) == redacted
    assert scalar_value(value, CaptureMode.FULL) == value
    assert is_category(value) == (none != TEXT_PLACEHOLDER)


@pytest.mark.parametrize(
    ("capture", "label"),
    [("none", TEXT_PLACEHOLDER), ("redacted", "Sure Jane, I wrote to [EMAIL]"),
     ("full", "Sure Jane, I wrote to jane@example.com")],
)
def test_a_returned_text_is_a_string_label_and_follows_the_same_rule(
    make_agent: AgentFactory, list_producer: ListProducer, capture: str, label: str
) -> None:
    agent = make_agent(list_producer, capture=capture)

    @monitor(agent=agent)
    def generate(prompt: str) -> str:
        return "Sure Jane, I wrote to jane@example.com"

    generate(PROMPT)
    (event,) = shipped(agent, list_producer)
    assert event.output.label == label


def test_a_class_name_label_is_kept_under_capture_none(
    make_agent: AgentFactory, list_producer: ListProducer
) -> None:
    agent = make_agent(list_producer, capture="none")
    classify(agent, {"text": LETTER})
    (event,) = shipped(agent, list_producer)
    assert (event.output.label, event.output.score) == ("negative", 0.9)
