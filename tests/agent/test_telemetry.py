"""Self-telemetry: the agent's counters on /metrics (Prometheus text format) and in the logs."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from fastapi import FastAPI

from inferwatch.agent import InferwatchMiddleware
from inferwatch.agent.content import CallContent
from inferwatch.agent.metrics import CONTENT_TYPE

if TYPE_CHECKING:
    from conftest import AgentFactory, DownProducer, ListProducer

    from inferwatch.agent import Agent

_SAMPLE = re.compile(
    r'^([a-zA-Z_:][a-zA-Z0-9_:]*)\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*)\} (\S+)$'
)


def parse(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Read the exposition format strictly: HELP and TYPE before each family, then its samples."""
    assert text.endswith("\n")
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    typed: dict[str, str] = {}
    helped: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            helped.add(line.split()[2])
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert kind in ("counter", "gauge"), line
            assert name in helped, f"TYPE before HELP for {name}"
            typed[name] = kind
        else:
            match = _SAMPLE.match(line)
            assert match, f"not a sample line: {line!r}"
            name, labels, value = match.groups()
            assert name in typed, f"sample before TYPE: {name}"
            if typed[name] == "counter":
                assert name.endswith("_total"), name
            key = (name, frozenset(re.findall(r'([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"', labels)))
            assert key not in samples, f"duplicate series {key}"
            samples[key] = float(value)
    return samples


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    for (sample_name, sample_labels), sample_value in samples.items():
        if sample_name == name and set(labels.items()) <= set(sample_labels):
            return sample_value
    raise KeyError(name)


def record(agent: Agent, count: int) -> None:
    for _ in range(count):
        agent.record(agent.begin(operation="predict"), CallContent(), status=200)


def test_metrics_text_counts_what_happened(make_agent: AgentFactory, list_producer: ListProducer) -> None:
    agent = make_agent(list_producer, service='fraud "api"', queue_size=5, flush_interval_s=60)
    record(agent, 8)  # the queue holds 5: three are dropped
    samples = parse(agent.metrics_text())
    service = 'fraud \\"api\\"'
    assert value(samples, "inferwatch_agent_events_captured_total", service=service) == 8
    assert value(samples, "inferwatch_agent_events_dropped_total", reason="queue_full") == 3
    assert value(samples, "inferwatch_agent_queue_depth") == 5
    assert agent.flush(5.0)
    samples = parse(agent.metrics_text())
    assert value(samples, "inferwatch_agent_events_sent_total") == 5
    assert value(samples, "inferwatch_agent_queue_depth") == 0
    assert value(samples, "inferwatch_agent_bus_up") == 1
    assert value(samples, "inferwatch_agent_info", version=agent.version) == 1
    reasons = {dict(labels)["reason"] for name, labels in samples if name.endswith("dropped_total")}
    assert reasons == {"queue_full", "bus_error", "encode_error", "after_shutdown", "spool_full",
                       "spool_error", "spool_corrupt", "shipper_error"}


def test_spool_and_bus_state_are_exposed(
    make_agent: AgentFactory, down_producer: DownProducer, tmp_path: Path
) -> None:
    agent = make_agent(down_producer, spool_dir=tmp_path / "spool", spool_fsync=False)
    record(agent, 4)
    deadline = time.monotonic() + 10
    while agent.stats().shipper.spooled < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    samples = parse(agent.metrics_text())
    assert value(samples, "inferwatch_agent_events_spooled_total") == 4
    assert value(samples, "inferwatch_agent_spool_depth") == 4
    assert value(samples, "inferwatch_agent_spool_bytes") > 0
    assert value(samples, "inferwatch_agent_bus_up") == 0


def test_asgi_metrics_path_serves_the_text(make_agent: AgentFactory, list_producer: ListProducer) -> None:
    agent = make_agent(list_producer, service="svc-a")
    app = FastAPI()

    @app.post("/predict")
    async def predict(body: dict[str, int]) -> dict[str, str]:
        return {"label": "stay"}

    app.add_middleware(InferwatchMiddleware, agent=agent, metrics_path="/inferwatch/metrics")

    async def calls() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://m") as client:
            await client.post("/predict", json={"x": 1})
            assert agent.flush(5.0)
            return await client.get("/inferwatch/metrics")

    response = asyncio.run(calls())
    assert response.headers["content-type"] == CONTENT_TYPE
    samples = parse(response.text)
    assert value(samples, "inferwatch_agent_events_sent_total", service="svc-a") == 1
    assert len(list_producer.records) == 1  # the scrape is not an event


def test_one_log_line_per_interval_and_only_when_counters_change(
    make_agent: AgentFactory, list_producer: ListProducer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="inferwatch.agent")
    agent = make_agent(list_producer, stats_log_interval_s=0.05)
    record(agent, 3)
    assert agent.flush(5.0)

    def stats_lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.getMessage().startswith("event=agent_stats")]

    deadline = time.monotonic() + 10
    while not any("sent=3" in line for line in stats_lines()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert any("captured=3 sent=3 dropped=0" in line for line in stats_lines())
    settled = len(stats_lines())
    time.sleep(0.3)  # six intervals with nothing new
    assert len(stats_lines()) == settled
    record(agent, 1)
    assert agent.flush(5.0)
    deadline = time.monotonic() + 10
    while len(stats_lines()) == settled and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "captured=4 sent=4" in stats_lines()[-1]


def test_stats_logging_can_be_turned_off(
    make_agent: AgentFactory, list_producer: ListProducer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="inferwatch.agent")
    agent = make_agent(list_producer, stats_log_interval_s=0)
    record(agent, 2)
    assert agent.flush(5.0)
    time.sleep(0.1)
    assert not [r for r in caplog.records if r.getMessage().startswith("event=agent_stats")]
