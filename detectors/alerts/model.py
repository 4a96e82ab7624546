"""The alerting contract: alerts derived from incidents, silences, and notifications.

An :class:`Alert` is how routing, silences, inhibition and receivers see an incident: a set of
string labels (what matchers test and ``group_by`` picks) plus annotations and times, as in
Prometheus' Alertmanager. A :class:`Notification` is one delivery to one receiver integration
(one entry of a receiver's ``*_configs`` list); it is written to the store before it is sent
(the outbox) and kept after (the notification log), so a restart neither drops nor repeats it.
:class:`AlertStore` is what both stores (SQLite and Elasticsearch) keep for alerting.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args

from pydantic import BaseModel, Field

from inferwatch.detectors.base import Kind, Severity

if TYPE_CHECKING:
    from inferwatch.detectors.incidents import Incident

AlertState = Literal["firing", "resolved"]
# ``superseded``: a newer notification of the same stream was sent first; it carries the
# group's whole state, so the older one (still waiting on a retry) has nothing left to say.
DeliveryStatus = Literal["pending", "delivered", "failed", "superseded"]
IntegrationKind = Literal["alertmanager", "pagerduty", "slack", "webhook", "email"]

# Labels every alert carries, from its incident. ``alertname`` is the detector's name, as
# Alertmanager users expect; ``incident_id`` makes each incident its own alert.
LABEL_NAMES = ("alertname", "incident_id", "detector", "kind", "severity", "service", "model", "subject")
LABEL_VALUES: dict[str, tuple[str, ...]] = {"severity": get_args(Severity), "kind": get_args(Kind)}
"""The values the labels with a fixed set take (``severity=hgh`` can never match)."""


class Alert(BaseModel):
    """An incident as alerting sees it.

    ``labels`` identify and route it; ``state`` is ``firing`` while the incident is open or
    acknowledged and ``resolved`` once it is resolved; ``incident_status`` says which of the
    three it is, so receivers that know acknowledgement (PagerDuty, webhooks) can pass it on.
    ``updated_at`` is when the incident last changed (wall clock): a change a receiver has not
    been told about yet has a newer ``updated_at`` than the last notification that carried it.
    """

    incident_id: str
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    state: AlertState
    incident_status: Literal["open", "acknowledged", "resolved"]
    starts_at: datetime
    ends_at: datetime | None = None
    updated_at: datetime
    # Who acknowledged or resolved it, and their note (the incident's latest such history entry).
    actor: str | None = None
    note: str | None = None
    severity: str
    score: float = 0.0
    count: int = 1
    # In a notification: whether this alert is news for the receiver (new, changed or
    # resolved; a repeat_interval repeat is not); integrations that act per alert (PagerDuty)
    # send only these.
    changed: bool = True


def alert_from_incident(incident: Incident) -> Alert:
    """The :class:`Alert` for ``incident``: labels from its fields, annotations from its text."""
    labels = {
        "alertname": incident.detector,
        "incident_id": incident.id,
        "detector": incident.detector,
        "kind": incident.kind,
        "severity": incident.severity,
        "subject": incident.subject,
    }
    if incident.service:
        labels["service"] = incident.service
    if incident.model:
        labels["model"] = incident.model
    for key, value in incident.labels.items():
        labels.setdefault(key, value)
    actor = note = None
    ends_at = None
    for entry in reversed(incident.history):
        if entry.action in ("acknowledged", "resolved", "reopened"):
            if entry.action != "reopened":
                actor, note = entry.actor, entry.note
            if entry.action == "resolved" and incident.status == "resolved":
                ends_at = entry.at
            break
    state: AlertState = "resolved" if incident.status == "resolved" else "firing"
    if state == "resolved" and ends_at is None:
        ends_at = incident.updated_at or incident.last_seen
    return Alert(
        incident_id=incident.id,
        labels=labels,
        annotations={"title": incident.title, "summary": incident.summary},
        state=state,
        incident_status=incident.status,
        starts_at=incident.first_seen,
        ends_at=ends_at,
        updated_at=incident.updated_at or incident.last_seen,
        actor=actor if incident.status != "open" else None,
        note=note if incident.status != "open" else None,
        severity=incident.severity,
        score=incident.score,
        count=incident.count,
    )


class Matcher(BaseModel):
    """``name op value`` with Alertmanager's four operators: ``=``, ``!=``, ``=~``, ``!~``.

    Regular expressions are anchored (the whole value must match), as in Alertmanager. A label
    an alert does not have matches as the empty string.
    """

    name: str
    op: Literal["=", "!=", "=~", "!~"]
    value: str

    def __str__(self) -> str:
        return f'{self.name}{self.op}"{self.value}"'


class Silence(BaseModel):
    """Mutes every alert all of whose ``matchers`` match, from ``starts_at`` until ``ends_at``.

    Expiring a silence sets ``ends_at`` to now; expired silences are kept for the record.
    """

    id: str
    matchers: list[Matcher]
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str = ""
    created_at: datetime

    def active(self, now: datetime) -> bool:
        """In force at ``now``."""
        return self.starts_at <= now < self.ends_at


class NotificationAlert(Alert):
    """One alert as a notification carried it: a snapshot (the incident may have moved on)."""

    @classmethod
    def of(cls, alert: Alert) -> NotificationAlert:
        return cls.model_validate(alert.model_dump())


class Notification(BaseModel):
    """One delivery of one aggregation group's alerts to one receiver integration.

    Written ``pending`` before any attempt (the outbox); ``attempts``, ``next_attempt_at`` and
    ``last_error`` follow the retries; ``delivered`` or ``failed`` (given up after the
    retry limit) once settled. Its ``id`` is deterministic: a decision taken twice (after a
    crash between deciding and recording) yields the same id and therefore one delivery.
    """

    id: str
    group_key: str  # route path + the group_by label values, as Alertmanager's group key
    group_labels: dict[str, str] = Field(default_factory=dict)
    receiver: str
    integration: IntegrationKind
    integration_index: int = 0  # which entry of the receiver's list of that kind
    seq: int  # 1, 2, … per (group_key, receiver, integration, integration_index)
    created_at: datetime
    alerts: list[NotificationAlert]
    status: DeliveryStatus = "pending"
    attempts: int = 0
    next_attempt_at: datetime
    last_error: str | None = None
    delivered_at: datetime | None = None

    @property
    def firing(self) -> list[NotificationAlert]:
        return [a for a in self.alerts if a.state == "firing"]

    @property
    def resolved(self) -> list[NotificationAlert]:
        return [a for a in self.alerts if a.state == "resolved"]

    @property
    def stream(self) -> str:
        """What notifications share a sequence: one group, one receiver integration."""
        return f"{self.group_key}|{self.receiver}|{self.integration}|{self.integration_index}"


def notification_id(stream: str, seq: int, alerts: Sequence[NotificationAlert] = ()) -> str:
    """The deterministic id of the ``seq``-th notification of ``stream`` carrying ``alerts``.

    The same decision taken twice (after a crash before it was recorded) yields the same id,
    so the store keeps one row. The alerts' change times are part of it, so another
    installation, or this one after its store was wiped and its sequence restarted, never
    reuses an id that a receiver may have seen (and would drop as a repeat).
    """
    raw = f"{stream}#{seq}" + "".join(
        f"|{a.incident_id}:{a.state}:{a.updated_at.isoformat()}" for a in alerts)
    return hashlib.blake2b(raw.encode(), digest_size=12).hexdigest()


class NotificationQuery(BaseModel):
    """Filters for the notification log; ``None`` means any. Newest ``created_at`` first."""

    status: Sequence[DeliveryStatus] | None = None
    receiver: str | None = None
    incident_id: str | None = None  # notifications that carried this incident
    stream: str | None = None  # one stream (Notification.stream): group, receiver, integration
    since: datetime | None = None
    limit: int = 100


class AlertStore(Protocol):
    """What a store keeps for alerting: silences and the notification outbox/log."""

    def save_silence(self, silence: Silence) -> None:
        """Insert or replace a silence by id; readable on return."""

    def list_silences(self, *, include_expired: bool = False, now: datetime | None = None) -> list[Silence]:
        """Silences, newest ``created_at`` first; only those not yet ended at ``now`` unless
        ``include_expired``."""

    def get_silence(self, silence_id: str) -> Silence | None:
        """One silence by id, or ``None``."""

    def save_notifications(self, notifications: Sequence[Notification]) -> None:
        """Insert or replace notifications by id; readable on return (the outbox write)."""

    def due_notifications(self, now: datetime, limit: int = 100) -> list[Notification]:
        """``pending`` notifications whose ``next_attempt_at`` is at or before ``now``,
        oldest ``created_at`` first (then ``seq``)."""

    def latest_notifications(self, streams: Collection[str] | None = None) -> list[Notification]:
        """For every stream (group, receiver, integration), or only those in ``streams``, its
        notification with the highest ``seq``: what a restarted notifier resumes from."""

    def list_notifications(self, query: NotificationQuery) -> list[Notification]:
        """The notification log, newest ``created_at`` first."""

    def prune_alerting(self, before: datetime) -> int:
        """Forget notifications created before ``before`` that are no longer pending, except each
        stream's latest (what a restarted notifier resumes from), and silences that ended before
        it; return how many were forgotten."""

    def acquire_lease(self, name: str, holder: str, now: datetime, ttl_s: float) -> Lease:
        """Take or renew the lease ``name`` for ``holder`` until ``now + ttl_s`` if nobody else
        holds it past ``now``, atomically across processes; return who holds it afterwards."""


class Lease(BaseModel):
    """Who holds a named lease (the notifier's: one process pages for a store), and until when."""

    name: str
    holder: str
    expires_at: datetime


def dump(model: BaseModel) -> dict[str, Any]:
    """JSON-ready data of a model (how stores keep these documents)."""
    return model.model_dump(mode="json")
