"""The event bus seam: what producers and consumers of events need, whatever carries them.

Two implementations sit behind these protocols: the embedded SQLite log
(:mod:`inferwatch.collectors.sqlite_bus`) and Kafka (the distributed path). Code above the bus
only sees :class:`EventProducer`, :class:`EventConsumer` and :class:`DeadLetterSink`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

EVENTS_TOPIC = "inferwatch.events"
DEAD_LETTER_TOPIC = "inferwatch.events.dlq"


class BusUnavailable(RuntimeError):
    """The bus cannot take or give records right now (down, locked, unreachable)."""


class DuplicateInstance(RuntimeError):
    """Another consumer joined the group with this one's ``instance_id``, and Kafka fenced this one
    off: retrying cannot help, two processes are configured with the same name."""

    def __init__(self, group: str, instance_id: str | None) -> None:
        which = f"consumer group {group!r}"
        if group.endswith(".drift"):
            which += f" (the drift summaries' group of detect.group {group.removesuffix('.drift')!r})"
        super().__init__(
            f"another detector process joined {which} with the same instance_id "
            f"{instance_id!r}, and Kafka gave this one's partitions to it; give every process in a group "
            "its own INFERWATCH_DETECT__INSTANCE_ID (e.g. its pod or host name), or leave it unset")
        self.group, self.instance_id = group, instance_id


@dataclass(frozen=True, slots=True)
class BusRecord:
    """One record read from the bus; ``offset`` is its position within ``partition``."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes


class EventProducer(Protocol):
    """Appends encoded events to a topic, keyed (by principal) for partition locality."""

    def send(self, value: bytes, key: str | None = None) -> None:
        """Queue one record; may raise :class:`BusUnavailable`."""

    def flush(self, timeout: float | None = None) -> None:
        """Block until queued records are durable or ``timeout`` passes."""

    def close(self) -> None:
        """Flush and release resources."""


class EventConsumer(Protocol):
    """Reads records in order and commits how far a consumer group has processed."""

    def poll(self, max_records: int = 500, timeout: float = 1.0) -> Sequence[BusRecord]:
        """Return up to ``max_records`` after the group's position; ``[]`` after ``timeout``."""

    def commit(self, positions: Mapping[int, int]) -> None:
        """Record, per partition, the offset of the next record to read."""

    def close(self) -> None:
        """Release resources without committing."""


class DeadLetterSink(Protocol):
    """Keeps records that failed validation, with the reason, for a person to inspect."""

    def dead_letter(self, record: BusRecord, reason: str) -> None:
        """Store ``record`` with ``reason``; must not raise for a bad record."""


class DeadLetterLog(DeadLetterSink, Protocol):
    """A dead-letter sink that can also list what it holds."""

    def list(self, limit: int = 100) -> list[tuple[int, str, str, bytes]]:
        """The newest dead letters as ``(source_offset, source, reason, value)``: ``source`` is
        the topic the record came from, with ``/partition`` after it on Kafka (topic names hold
        no ``/``)."""
        ...


class EventBus(Protocol):
    """A bus: hands out producers, consumers (by group) and the dead-letter sink."""

    def producer(self, topic: str | None = None) -> EventProducer:
        """A producer for ``topic`` (default: the events topic)."""
        ...

    def consumer(self, group: str, topic: str | None = None, *, instance_id: str | None = None,
                 session_timeout_s: float | None = None) -> EventConsumer:
        """A consumer in ``group`` reading ``topic`` from the group's committed position;
        ``instance_id`` makes it a static member of the group (``detect.instance_id``), and
        ``session_timeout_s`` is how long the group waits for it when it falls silent."""
        ...

    def dead_letters(self) -> DeadLetterLog:
        """Where malformed records go, and where a person reads them back."""
        ...
