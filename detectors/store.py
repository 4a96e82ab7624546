"""The store seam: where incidents, searchable events and drift references live.

Two implementations sit behind these protocols: SQLite (embedded, with FTS5 text search) and
Elasticsearch (distributed). Queries are plain dataclasses so that every ``inferwatch incidents``
and ``inferwatch events`` command asks both stores the same question.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from inferwatch.collectors.event import InferenceEvent
from inferwatch.detectors.alerts.model import AlertStore

if TYPE_CHECKING:
    from inferwatch.detectors.drift.reference import ReferenceRecord
    from inferwatch.detectors.incidents import Incident


class StoreUnavailable(RuntimeError):
    """The store cannot be reached or refused a write; nothing was committed past it."""


@dataclass(frozen=True, slots=True)
class IncidentQuery:
    """Filters for listing incidents; ``None`` means "any". Newest ``last_seen`` first."""

    status: Sequence[str] | None = None
    min_severity: str | None = None
    kind: str | None = None
    detector: str | None = None
    service: str | None = None
    model: str | None = None
    subject: str | None = None
    since: datetime | None = None
    text: str | None = None
    limit: int = 100
    # Changed (``Incident.updated_at``) at or after this time: how the notifier follows changes.
    updated_since: datetime | None = None
    # Last seen before this time: how quiet incidents are found to auto-resolve.
    last_seen_before: datetime | None = None


def canonical_ip(value: str) -> str:
    """``value`` as the stores compare client addresses: an IP address in its compressed form,
    one carried in IPv6 (``::ffff:a.b.c.d``) as the IPv4 address it is (Elasticsearch's ``ip``
    type compares them so); anything that is no address as it is.

    >>> canonical_ip("2001:DB8:0:0::7"), canonical_ip("::ffff:203.0.113.7"), canonical_ip("unknown")
    ('2001:db8::7', '203.0.113.7', 'unknown')
    """
    ip = _address(value)
    if ip is None:
        return value
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def is_ip_address(value: str) -> bool:
    """Whether ``value`` is an IPv4 or IPv6 address (what ``client.ip`` in Elasticsearch holds).

    >>> is_ip_address("203.0.113.9"), is_ip_address("2001:db8::7"), is_ip_address("unknown")
    (True, True, False)
    """
    return _address(value) is not None


def _address(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``value`` parsed as an IP address (spaces and an IPv6 zone dropped, as Elasticsearch does)."""
    try:
        return ipaddress.ip_address(value.strip().partition("%")[0])
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class EventQuery:
    """Filters for searching stored events; newest first. ``text`` is a full-text match."""

    principal: str | None = None
    model: str | None = None
    service: str | None = None
    trace_id: str | None = None
    client_ip: str | None = None
    """The caller's address, as the event records it (``client_ip``)."""
    status: tuple[int, int] | None = None
    """HTTP status codes from the first to the second, both included (``(401, 401)``, ``(400, 499)``)."""
    since: datetime | None = None
    until: datetime | None = None
    text: str | None = None
    ids: tuple[str, ...] | None = None
    """Only these event ids (an incident's sample ``event_ids``); ``()`` matches nothing."""
    limit: int = 100


class IncidentStore(Protocol):
    """Keeps incidents; ``upsert`` by id makes a second write an update."""

    def upsert(self, incidents: Sequence[Incident]) -> list[str] | None:
        """Insert or replace these incidents (by id); raise :class:`StoreUnavailable` on failure.

        An incident read from this store carries its revision (``Incident.revision``): it is
        written only if the stored incident is still at that revision, else left out and its
        id returned — someone changed it since it was read; read it again and redo the change.
        An incident without a revision (a new one) is written as it is. Every incident written
        gets its new revision. (``None`` from a store that does not check: nothing left out.)
        """

    def get(self, incident_id: str) -> Incident | None:
        """One incident by id, or ``None``."""

    def find_active(self, detector: str, subject: str, model: str | None) -> Incident | None:
        """The open or acknowledged incident for this detector, subject and model, if any."""

    def list_incidents(self, query: IncidentQuery) -> list[Incident]:
        """Incidents matching ``query``, newest ``last_seen`` first."""


class EventStore(Protocol):
    """Keeps events for investigation; adding an event twice keeps one copy."""

    def add_events(self, events: Sequence[InferenceEvent]) -> None:
        """Store events (idempotent by event id); raise :class:`StoreUnavailable` on failure."""

    def search_events(self, query: EventQuery) -> list[InferenceEvent]:
        """Events matching ``query``, newest first."""


class ReferenceStore(Protocol):
    """Keeps each model's drift reference (one per model), so a restart compares with the same one."""

    def save_reference(self, record: ReferenceRecord) -> None:
        """Keep ``record`` as its model's reference, replacing any before it; readable on return."""

    def load_reference(self, model: str) -> ReferenceRecord | None:
        """The reference of ``model``, or ``None``."""

    def list_references(self) -> list[ReferenceRecord]:
        """Every model's reference, by model name."""

    def delete_reference(self, model: str) -> bool:
        """Forget the reference of ``model``; ``False`` when there was none."""


class CheckpointStore(Protocol):
    """Keeps the detector service's checkpoints (detector state and the offsets it covers), one
    per key, so that a restarted service carries on with what its detectors had learnt."""

    def save_checkpoint(self, key: str, data: bytes) -> None:
        """Keep ``data`` under ``key``, replacing what was there; readable on return."""

    def load_checkpoint(self, key: str) -> bytes | None:
        """What was saved under ``key``, or ``None``."""


class Store(IncidentStore, EventStore, ReferenceStore, AlertStore, CheckpointStore, Protocol):
    """A store that keeps incidents, events and drift references, as both implementations do."""
