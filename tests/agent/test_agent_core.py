"""The agent object and its module-level set-up: configure, get_agent, producers, providers."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

import inferwatch.agent.core as core
from inferwatch.agent import configure, get_agent
from inferwatch.agent.content import CallContent
from inferwatch.agent.core import AgentConfigError, producer_from_settings
from inferwatch.agent.telemetry import resolve_tracer_provider
from inferwatch.collectors.event import decode_event
from inferwatch.collectors.settings import AgentSettings, BusSettings, Settings

if TYPE_CHECKING:
    from conftest import AgentFactory, ListProducer


@pytest.fixture
def global_agent_slot() -> Iterator[None]:
    """Leave the process-wide agent as it was found."""
    before = core._agent
    yield
    current = core._agent
    if current is not None and current is not before:
        current.shutdown(timeout=2.0)
    core._agent = before


def test_configure_sets_the_process_agent(
    global_agent_slot: None, list_producer: ListProducer, tracer_provider: TracerProvider
) -> None:
    agent = configure(
        AgentSettings(service="svc", flush_interval_s=0.01),
        producer=list_producer,
        tracer_provider=tracer_provider,
    )
    assert get_agent() is agent
    replacement = configure(
        AgentSettings(service="svc2"), producer=list_producer, tracer_provider=tracer_provider
    )
    assert get_agent() is replacement
    agent.record(agent.begin(), CallContent(), status=200)  # the replaced agent was shut down
    assert agent.stats().shipper.dropped_after_shutdown == 1


def test_configure_without_producer_uses_the_embedded_bus(
    global_agent_slot: None, tmp_path: Path, tracer_provider: TracerProvider
) -> None:
    from inferwatch.collectors.sqlite_bus import SQLiteBus

    settings = Settings(
        agent=AgentSettings(service="svc", flush_interval_s=0.01), bus=BusSettings(path=tmp_path / "bus.db")
    )
    agent = configure(settings, tracer_provider=tracer_provider)
    call = agent.begin(operation="predict", headers={"x-api-key": "alice"})
    (event,) = agent.record(call, CallContent(), status=200)
    assert agent.flush(timeout=5.0)
    records = SQLiteBus(tmp_path / "bus.db").consumer("test").poll(timeout=0)
    assert [decode_event(r.value).id for r in records] == [event.id]
    assert records[0].key == event.principal


def test_kafka_producer_is_built_lazily_without_touching_the_brokers() -> None:
    # Nothing listens on port 1: the producer must still be built (it connects on first send),
    # so a model server can start before Kafka is reachable.
    producer = producer_from_settings(BusSettings(kind="kafka", bootstrap_servers=["127.0.0.1:1"]))
    assert type(producer).__name__ == "KafkaEventProducer"
    producer.close()


def test_kafka_without_kafka_python_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "inferwatch.collectors.kafka_bus", None)
    with pytest.raises(AgentConfigError, match=r"inferwatch\[kafka\]"):
        producer_from_settings(BusSettings(kind="kafka"))


def test_global_provider_is_used_when_the_app_set_one(monkeypatch: pytest.MonkeyPatch) -> None:
    app_provider = TracerProvider()
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: app_provider)
    assert resolve_tracer_provider("svc") is app_provider
    explicit = TracerProvider()
    assert resolve_tracer_provider("svc", explicit) is explicit


def test_own_provider_names_the_service_when_none_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trace, "get_tracer_provider", trace.ProxyTracerProvider)
    provider = resolve_tracer_provider("fraud-scorer")
    assert isinstance(provider, TracerProvider)
    assert provider.resource.attributes["service.name"] == "fraud-scorer"


def test_events_share_agent_identity_and_count_up(make_agent: AgentFactory) -> None:
    agent = make_agent()
    seqs = []
    for _ in range(3):
        (event,) = agent.record(agent.begin(), CallContent(), status=200)
        assert event.agent is not None
        assert event.agent.id == agent.id
        seqs.append(event.agent.seq)
    assert seqs == [0, 1, 2]


def test_forked_child_is_a_new_agent_instance(make_agent: AgentFactory) -> None:
    agent = make_agent()
    agent.next_seq()
    parent_id = agent.id
    pid = os.fork()
    if pid == 0:
        os._exit(0 if agent.id != parent_id and agent.next_seq() == 0 else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert (agent.id, agent.next_seq()) == (parent_id, 1)


def test_importing_the_agent_stays_light() -> None:
    code = (
        "import sys, inferwatch.agent\n"
        "heavy = ('starlette', 'fastapi', 'numpy', 'sklearn', 'scipy', 'elasticsearch', 'kafka', 'httpx',"
        " 'inferwatch.detectors')\n"
        "print(sorted(m for m in sys.modules if m.startswith(heavy)))\n"
    )
    # Run from a neutral directory so the source tree is not what gets imported.
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(("key", "warned"), [
    ("", "has 0 characters"), ("short", "has 5 characters"), ("a" * 16, None),
])
def test_a_short_hmac_key_is_warned_about_without_showing_it(make_agent, caplog, key, warned):
    with caplog.at_level("WARNING", logger="inferwatch.agent"):
        make_agent(hmac_key=key)
    said = [r.getMessage() for r in caplog.records if "hmac_key" in r.getMessage()]
    if warned is None:
        assert said == []
    else:
        assert len(said) == 1
        assert warned in said[0]
        assert "at least 16" in said[0]
        assert not key or key not in said[0]
