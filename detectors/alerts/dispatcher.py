"""Aggregation groups with Alertmanager's timing: which receiver is told what, and when.

The dispatcher holds no I/O of its own beyond the :class:`~.model.AlertStore` it is given and
reads time only from the injected clock, so every decision can be replayed in a test. It
decides; the notifier delivers what it decided (the outbox the decisions are written to).

How it follows Alertmanager:

- each alert goes to the routes it matches, and within a route to the group of its
  ``group_by`` label values;
- a new group is first looked at ``group_wait`` after its first alert arrived (so alerts
  arriving meanwhile go out together), then every ``group_interval``;
- at each look, each receiver integration is told the group's alerts when something it has
  not been told happened: an alert fires that it was not told about (or with another severity,
  or — for integrations that send acknowledgements — another status), an alert it was told
  is firing has resolved (when it wants resolved alerts), or ``repeat_interval`` has passed;
- silenced and inhibited alerts are left out, and count as new when the mute ends.

What each integration was last told is kept per *stream* (group, receiver, integration), and
comes back from the store's latest notifications on :meth:`Dispatcher.resume`: a restarted
dispatcher neither repeats what was already decided nor reuses a notification id.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from inferwatch.detectors.alerts.config import AlertingConfig, InhibitRule, RouteMatch, group_key
from inferwatch.detectors.alerts.integrations import IntegrationConfig, sends_acknowledged
from inferwatch.detectors.alerts.matchers import all_match
from inferwatch.detectors.alerts.model import (
    Alert,
    AlertStore,
    IntegrationKind,
    Notification,
    NotificationAlert,
    Silence,
    notification_id,
)

# What an integration was told about one firing alert: its severity and incident status.
_Told = tuple[str, str]


@dataclass(frozen=True, slots=True)
class _Stream:
    """What one receiver integration of one group was last sent."""

    seq: int = 0
    last_at: datetime | None = None  # created_at of that notification
    # Firing alerts the integration believes are firing, by incident id. Alerts that leave
    # the group, are muted or resolve without being sent drop out, so they count as new
    # should they fire again.
    firing: Mapping[str, _Told] = field(default_factory=dict)


@dataclass(slots=True)
class _Group:
    key: str
    route: RouteMatch
    labels: dict[str, str]
    next_at: datetime  # when the group is next looked at
    alert_ids: set[str] = field(default_factory=set)
    looked: bool = False  # its first look (after group_wait) has happened


@dataclass(frozen=True, slots=True)
class _Decision:
    notifications: list[Notification]
    streams: dict[str, _Stream]


def stream_key(group: str, receiver: str, kind: IntegrationKind, index: int) -> str:
    """The stream of notifications to one integration of one group (:attr:`Notification.stream`)."""
    return f"{group}|{receiver}|{kind}|{index}"


class Dispatcher:
    """Routes alerts into aggregation groups and decides the notifications, with ``now`` as clock.

    Not thread-safe: one loop calls :meth:`observe` and :meth:`flush`.
    """

    def __init__(self, config: AlertingConfig, store: AlertStore, *, now: Callable[[], datetime]) -> None:
        self._config = config
        self._store = store
        self._now = now
        self._receivers = {receiver.name: receiver for receiver in config.receivers}
        self._alerts: dict[str, Alert] = {}
        self._memberships: dict[str, set[str]] = {}  # incident id -> keys of the groups it is in
        self._groups: dict[str, _Group] = {}
        self._streams: dict[str, _Stream] = {}
        self._resumed = False

    def resume(self) -> None:
        """Load, for every stream, the last notification decided (saved) before a restart.

        Called by :meth:`flush` on first use if not called before: deciding without it would
        reuse the ids, and so overwrite the records, of earlier notifications.
        """
        for notification in self._store.latest_notifications():
            known = self._streams.get(notification.stream)
            if known is not None and known.seq >= notification.seq:
                continue
            self._streams[notification.stream] = _Stream(
                seq=notification.seq,
                last_at=notification.created_at,
                firing={a.incident_id: (a.severity, a.incident_status) for a in notification.firing},
            )
        self._resumed = True

    def observe(self, alerts: Sequence[Alert]) -> None:
        """Add or update alerts (by incident id: the newest replaces) and place them in groups.

        An alert whose labels changed so that it routes elsewhere moves: it leaves its old
        groups without a resolved notification there.
        """
        now = self._now()
        for alert in alerts:
            placed = {
                group_key(match, alert.labels): match for match in self._config.route.match(alert.labels)
            }
            for key in self._memberships.get(alert.incident_id, set()) - placed.keys():
                old = self._groups.get(key)
                if old is not None:
                    old.alert_ids.discard(alert.incident_id)
            for key, match in placed.items():
                group = self._groups.get(key)
                if group is None:
                    wait = timedelta(seconds=match.group_wait)
                    group = _Group(key, match, match.group_labels(alert.labels), now + wait)
                    self._groups[key] = group
                group.alert_ids.add(alert.incident_id)
            self._alerts[alert.incident_id] = alert
            self._memberships[alert.incident_id] = set(placed)

    def flush(self, now: datetime | None = None) -> list[Notification]:
        """Decide the notifications of every group due at ``now``, save them (one store call)
        and return them.

        State changes only once the save returned: if it raises, the next flush takes the same
        decisions again and yields the same ids (so the store keeps one copy of each).
        """
        now = self._now() if now is None else now
        if not self._resumed:
            self.resume()
        due = [group for _, group in sorted(self._groups.items()) if group.next_at <= now]
        if not due:
            return []
        muted = self._muted_ids(due, self._active_silences(now))
        notifications: list[Notification] = []
        streams: dict[str, _Stream] = {}
        for group in due:
            decision = self._decide(group, now, muted)
            notifications.extend(decision.notifications)
            streams.update(decision.streams)
        if notifications:
            self._store.save_notifications(notifications)
        self._streams.update(streams)
        for group in due:
            self._after_look(group, now)
        return notifications

    def next_flush_at(self) -> datetime | None:
        """The earliest time a :meth:`flush` could decide anything (``None``: no groups)."""
        return min((group.next_at for group in self._groups.values()), default=None)

    def waiting(self) -> int:
        """Groups with news not yet decided: still in their ``group_wait``, or holding a firing
        alert that no integration of theirs has been told about (it waits for the next
        ``group_interval``). Muting is not considered: a muted alert counts as news here."""
        return sum(not group.looked or self._untold(group) for group in self._groups.values())

    def _untold(self, group: _Group) -> bool:
        receiver = self._receivers[group.route.receiver]
        told: set[str] = set()
        for kind, index, _ in receiver.integrations():
            stream = self._streams.get(stream_key(group.key, receiver.name, kind, index), _Stream())
            told.update(stream.firing)
        return any(self._alerts[i].state == "firing" and i not in told for i in group.alert_ids)

    def muted_by(self, alert: Alert) -> list[str]:
        """Why ``alert`` is muted now: the ids of the silences matching it, then
        ``"inhibited by <incident id>"`` for each firing alert inhibiting it. Empty: not muted."""
        silences = self._active_silences(self._now())
        reasons = [silence.id for silence in silences if _silenced_by(alert, silence)]
        sources = self._inhibition_sources(silences)
        reasons.extend(f"inhibited by {source}" for source in dict.fromkeys(self._inhibitors(alert, sources)))
        return reasons

    # --- deciding ----------------------------------------------------------------------------

    def _decide(self, group: _Group, now: datetime, muted: set[str]) -> _Decision:
        """The notifications of one due group and the stream states they leave behind."""
        receiver = self._receivers[group.route.receiver]
        alerts = sorted((self._alerts[i] for i in group.alert_ids), key=_order)
        visible = [alert for alert in alerts if alert.incident_id not in muted]
        firing = [alert for alert in visible if alert.state == "firing"]
        resolved = [alert for alert in visible if alert.state == "resolved"]
        notifications: list[Notification] = []
        streams: dict[str, _Stream] = {}
        for kind, index, integration in receiver.integrations():
            key = stream_key(group.key, receiver.name, kind, index)
            before = self._streams.get(key, _Stream())
            repeat = timedelta(seconds=group.route.repeat_interval)
            sent, after = _next_state(before, firing, resolved, integration, repeat, now)
            if after.seq:  # streams never sent anything hold nothing worth keeping
                streams[key] = after
            if sent is not None:
                carried = [NotificationAlert.of(alert) for alert in sent]
                notifications.append(
                    Notification(
                        id=notification_id(key, after.seq, carried),
                        group_key=group.key,
                        group_labels=dict(group.labels),
                        receiver=receiver.name,
                        integration=kind,
                        integration_index=index,
                        seq=after.seq,
                        created_at=now,
                        alerts=carried,
                        status="pending",
                        next_attempt_at=now,
                    )
                )
        return _Decision(notifications, streams)

    def _after_look(self, group: _Group, now: datetime) -> None:
        """Schedule the group's next look; drop its resolved alerts (every integration that
        wanted them has just been sent them) and the group itself once empty."""
        group.next_at = now + timedelta(seconds=group.route.group_interval)
        group.looked = True
        for incident_id in [i for i in group.alert_ids if self._alerts[i].state == "resolved"]:
            group.alert_ids.discard(incident_id)
            self._leave(incident_id, group.key)
        if not group.alert_ids:
            del self._groups[group.key]

    def _leave(self, incident_id: str, key: str) -> None:
        """Forget an alert once it is in no group (memory stays bounded by the open alerts)."""
        keys = self._memberships.get(incident_id)
        if keys is None:
            return
        keys.discard(key)
        if not keys:
            del self._memberships[incident_id]
            del self._alerts[incident_id]

    # --- muting ------------------------------------------------------------------------------

    def _active_silences(self, now: datetime) -> list[Silence]:
        return [silence for silence in self._store.list_silences(now=now) if silence.active(now)]

    def _muted_ids(self, groups: Sequence[_Group], silences: Sequence[Silence]) -> set[str]:
        """Incident ids, among the alerts of ``groups``, that a silence or an inhibition mutes."""
        sources = self._inhibition_sources(silences)
        muted = set()
        for incident_id in {i for group in groups for i in group.alert_ids}:
            alert = self._alerts[incident_id]
            if any(_silenced_by(alert, s) for s in silences) or next(self._inhibitors(alert, sources), None):
                muted.add(incident_id)
        return muted

    def _inhibition_sources(self, silences: Sequence[Silence]) -> list[dict[tuple[str, ...], list[str]]]:
        """Per inhibit rule, the firing, unsilenced alerts matching its source matchers, by their
        values of the rule's ``equal`` labels."""
        indexes: list[dict[tuple[str, ...], list[str]]] = []
        for rule in self._config.inhibit_rules:
            index: dict[tuple[str, ...], list[str]] = {}
            for alert in self._alerts.values():
                if (
                    alert.state == "firing"
                    and all_match(rule.source_matchers, alert.labels)
                    and not any(_silenced_by(alert, s) for s in silences)
                ):
                    index.setdefault(_equal_values(rule, alert), []).append(alert.incident_id)
            indexes.append(index)
        return indexes

    def _inhibitors(self, alert: Alert, sources: list[dict[tuple[str, ...], list[str]]]) -> Iterator[str]:
        """The incident ids of the alerts inhibiting ``alert`` (never itself)."""
        for rule, index in zip(self._config.inhibit_rules, sources, strict=True):
            if all_match(rule.target_matchers, alert.labels):
                for source in index.get(_equal_values(rule, alert), []):
                    if source != alert.incident_id:
                        yield source


def _next_state(
    before: _Stream,
    firing: list[Alert],
    resolved: list[Alert],
    integration: IntegrationConfig,
    repeat_interval: timedelta,
    now: datetime,
) -> tuple[list[Alert] | None, _Stream]:
    """Whether one integration needs an update (the alerts to send, or ``None``) and what it
    will then believe is firing."""
    with_status = sends_acknowledged(integration)

    def key(told: _Told) -> _Told | tuple[str]:
        return told if with_status else (told[0],)

    told = before.firing
    new = any(
        a.incident_id not in told or key(told[a.incident_id]) != key((a.severity, a.incident_status))
        for a in firing
    )
    ended = [a for a in resolved if a.incident_id in told] if integration.send_resolved else []
    repeat = bool(firing) and before.last_at is not None and now - before.last_at >= repeat_interval
    if new or ended or repeat:
        believed = {a.incident_id: (a.severity, a.incident_status) for a in firing}
        return [*firing, *ended], _Stream(seq=before.seq + 1, last_at=now, firing=believed)
    still = {a.incident_id for a in firing}
    kept = {incident_id: value for incident_id, value in told.items() if incident_id in still}
    return None, _Stream(seq=before.seq, last_at=before.last_at, firing=kept)


def _silenced_by(alert: Alert, silence: Silence) -> bool:
    # A silence without matchers mutes nothing (Alertmanager refuses to create one).
    return bool(silence.matchers) and all_match(silence.matchers, alert.labels)


def _equal_values(rule: InhibitRule, alert: Alert) -> tuple[str, ...]:
    return tuple(alert.labels.get(name, "") for name in rule.equal)


def _order(alert: Alert) -> tuple[bool, datetime, str]:
    """Firing first, then oldest first: the order receivers show alerts in."""
    return (alert.state != "firing", alert.starts_at, alert.incident_id)
