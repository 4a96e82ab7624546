"""Shared pieces for the agent tests: producers at the bus seam, a span recorder, agent factory.

The producers below implement :class:`~inferwatch.collectors.bus.EventProducer` — the seam the
agent ships through — in the three ways a real bus behaves: it takes records, it is down, or it
hangs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from inferwatch.agent import Agent
from inferwatch.collectors.bus import BusUnavailable
from inferwatch.collectors.event import InferenceEvent, decode_event
from inferwatch.collectors.settings import AgentSettings


class SwitchableProducer:
    """A bus that refuses every send (``BusUnavailable``) while ``down`` is set."""

    def __init__(self, *, down: bool = False) -> None:
        self.down = threading.Event()
        if down:
            self.down.set()
        self.records: list[tuple[bytes, str | None]] = []
        self.refused = 0
        self._lock = threading.Lock()

    def send(self, value: bytes, key: str | None = None) -> None:
        if self.down.is_set():
            with self._lock:
                self.refused += 1
            raise BusUnavailable("bus is down (test)")
        with self._lock:
            self.records.append((value, key))

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self) -> None:
        pass

    def events(self) -> list[InferenceEvent]:
        with self._lock:
            return [decode_event(value) for value, _ in self.records]


class ListProducer:
    """A bus that takes every record and keeps it."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes, str | None]] = []
        self.closed = False
        self._lock = threading.Lock()

    def send(self, value: bytes, key: str | None = None) -> None:
        with self._lock:
            self.records.append((value, key))

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def events(self) -> list[InferenceEvent]:
        with self._lock:
            return [decode_event(value) for value, _ in self.records]


class DownProducer(ListProducer):
    """A bus that is down: every send raises :class:`BusUnavailable`."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts = 0

    def send(self, value: bytes, key: str | None = None) -> None:
        self.attempts += 1
        raise BusUnavailable("bus is down (test)")


class HangingProducer(ListProducer):
    """A bus that never answers: send blocks until the test releases it."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.entered = threading.Event()

    def send(self, value: bytes, key: str | None = None) -> None:
        self.entered.set()
        self.release.wait()
        super().send(value, key)


@pytest.fixture
def spans() -> InMemorySpanExporter:
    """Finished spans of the agent under test."""
    return InMemorySpanExporter()


@pytest.fixture
def tracer_provider(spans: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    return provider


AgentFactory = Callable[..., Agent]


@pytest.fixture
def make_agent(tracer_provider: TracerProvider) -> Iterator[AgentFactory]:
    """Build agents on a producer; every agent is shut down after the test."""
    agents: list[Agent] = []

    def factory(producer: Any = None, **settings: Any) -> Agent:
        settings.setdefault("service", "svc")
        settings.setdefault("flush_interval_s", 0.01)
        agent = Agent(AgentSettings(**settings), producer or ListProducer(), tracer_provider=tracer_provider)
        agents.append(agent)
        return agent

    yield factory
    for agent in agents:
        agent.shutdown(timeout=1.0)


@pytest.fixture
def hanging() -> Iterator[HangingProducer]:
    """A hanging bus, released at the end of the test so its thread can finish."""
    producer = HangingProducer()
    yield producer
    producer.release.set()


@pytest.fixture
def list_producer() -> ListProducer:
    """A bus that keeps every record."""
    return ListProducer()


@pytest.fixture
def down_producer() -> DownProducer:
    """A bus that is down."""
    return DownProducer()
