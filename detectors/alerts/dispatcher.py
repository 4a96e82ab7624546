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
  each alert carried says whether it is such news (:attr:`~.model.Alert.changed`). An
  Alertmanager integration is also posted the group again, as no news, when one of its
  incidents has a new title (it shows the annotations it was last posted) — other than in its
  numbers: a count that grows every window would otherwise re-post it at every look;
- silences and inhibition mute *firing* alerts: they are left out of notifications. An
  integration still believes what it was told, so a muted alert it knows of is not news when
  the mute ends, and its resolution is sent all the same; one it never heard of is news then.
  An alert matching both sides of an inhibit rule is not muted by others that do too;
- an alert whose labels move it to other groups is resolved in the groups it left, for the
  integrations there that were told it fires — except a PagerDuty service that a group it is
  now in pages: PagerDuty knows it by its incident id, so that would resolve the new page.

What each integration was last told is kept per *stream* (group, receiver, integration), and
comes back from the store's latest notifications on :meth:`Dispatcher.resume`: a restarted
dispatcher neither repeats what was already decided nor reuses a notification id.

Memory stays bounded by the open groups, not by every group there ever was (one per attacking
principal, say, when grouping by subject): a stream whose group is gone and which believes no
alert is firing is dropped, as are such streams read on resume. All it held was its ``seq``;
when its group comes back, the first look reads that stream's latest notification from the
store again (one store call for all the streams a flush needs), so ids are never reused. A
stream that believes an alert fires is always kept: it is owed that alert's resolution.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from inferwatch.detectors.alerts.config import AlertingConfig, InhibitRule, RouteMatch, group_key
from inferwatch.detectors.alerts.integrations import (
    AlertmanagerConfig,
    IntegrationConfig,
    PagerDutyConfig,
    sends_acknowledged,
)
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

# What an integration was told about one firing alert: its severity, incident status and title.
_Told = tuple[str, str, str]
_NUMBERS = re.compile(r"\d+(?:[.,]\d+)*")
# Per inhibit rule, its firing sources by their ``equal`` label values: (incident id, whether
# the source also matches the rule's target matchers).
_Sources = list[dict[tuple[str, ...], list[tuple[str, bool]]]]


@dataclass(frozen=True, slots=True)
class _Stream:
    """What one receiver integration of one group was last sent."""

    seq: int = 0
    last_at: datetime | None = None  # created_at of that notification
    # Firing alerts the integration believes are firing, by incident id (muted ones included:
    # it was told, and is owed their resolution). Alerts that resolve without being sent, or
    # leave the group without a resolution sent there, drop out, so they count as new should
    # they fire again.
    firing: Mapping[str, _Told] = field(default_factory=dict)
    # The last notification failed for good (found so at a restart): the integration was told
    # nothing of it, so the group's state is sent again at its next look, as news. The usual
    # cause is a receiver misconfigured (a wrong secret or URL) and fixed by a restart.
    retell: bool = False


@dataclass(slots=True)
class _Group:
    key: str
    route: RouteMatch
    labels: dict[str, str]
    next_at: datetime  # when the group is next looked at
    alert_ids: set[str] = field(default_factory=set)
    # Alerts that moved to other groups while an integration here believed them firing: a
    # resolved copy (as this group knew them) to send at the next look, then drop.
    tombstones: dict[str, Alert] = field(default_factory=dict)
    looked: bool = False  # its first look (after group_wait) has happened


@dataclass(frozen=True, slots=True)
class _Look:
    """One look at one group: what it consumed, to drop once its notifications are saved."""

    key: str
    resolved: frozenset[str]  # alerts resolved when decided (every integration was told)
    tombstones: tuple[Alert, ...]
    kept: frozenset[str] = frozenset()  # tombstones an integration is yet to be told (deferred)


@dataclass(frozen=True, slots=True)
class _Batch:
    """One flush's decisions: saved in one store call, applied once that call returned."""

    at: datetime
    notifications: list[Notification]
    streams: dict[str, _Stream]
    looks: list[_Look]


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
        # Streams of open groups, and every stream that believes an alert fires. One not here
        # believes nothing fires; its seq is in the store (read when its group is next due).
        self._streams: dict[str, _Stream] = {}
        self._read: set[str] = set()  # streams of open groups whose store state has been read
        self._unsaved: _Batch | None = None  # decided, but its save raised: retried as is
        self._resumed = False

    def resume(self) -> None:
        """Load, for every stream, the last notification decided (saved) before a restart.

        Called by :meth:`flush` on first use if not called before: deciding without it would
        reuse the ids, and so overwrite the records, of earlier notifications.
        """
        self._load(self._store.latest_notifications(), keep_idle=False)
        self._resumed = True

    def _load(self, latest: Sequence[Notification], *, keep_idle: bool) -> None:
        """Take streams' state from their latest notifications (never older than what is held);
        streams believing nothing fires only with ``keep_idle``."""
        for notification in latest:
            known = self._streams.get(notification.stream)
            if known is not None and known.seq >= notification.seq:
                continue
            failed = notification.status == "failed"
            # A failed notification told nothing: what it carried, resolved alerts included, is
            # owed again (the resolved ones as resolutions, since the receiver may know them as firing).
            carried = notification.alerts if failed else notification.firing
            stream = _Stream(
                seq=notification.seq,
                last_at=notification.created_at,
                firing={a.incident_id: _told(a) for a in carried},
                retell=failed,
            )
            if stream.firing or keep_idle:
                self._streams[notification.stream] = stream

    def observe(self, alerts: Sequence[Alert]) -> None:
        """Add or update alerts (by incident id: the newest replaces) and place them in groups.

        An alert whose labels changed so that it routes elsewhere moves. In each group it left
        whose integrations were told it fires, a resolved copy stays until the group's next
        look tells them (else an incident opened there, e.g. in a second PagerDuty service,
        would stay open for ever).
        """
        now = self._now()
        for alert in alerts:
            placed = {
                group_key(match, alert.labels): match for match in self._config.route.match(alert.labels)
            }
            for key in self._memberships.get(alert.incident_id, set()) - placed.keys():
                old = self._groups.get(key)
                if old is not None:
                    self._move_out(old, self._alerts[alert.incident_id], alert, now)
            for key, match in placed.items():
                group = self._groups.get(key)
                if group is None:
                    wait = timedelta(seconds=match.group_wait)
                    group = _Group(key, match, match.group_labels(alert.labels), now + wait)
                    self._groups[key] = group
                group.alert_ids.add(alert.incident_id)
                group.tombstones.pop(alert.incident_id, None)  # back before it was resolved here
            self._alerts[alert.incident_id] = alert
            self._memberships[alert.incident_id] = set(placed)

    def flush(self, now: datetime | None = None) -> list[Notification]:
        """Decide the notifications of every group due at ``now``, save them (one store call)
        and return them.

        State changes only once the save returned. If it raises, the decisions are kept as
        they are and the next flush first saves exactly them again (same ids) before deciding
        anything new: a save that raised may still have been written (a store timeout), and a
        decision taken anew would give the same seq another id and other alerts.
        """
        now = self._now() if now is None else now
        if not self._resumed:
            self.resume()
        retried: list[Notification] = []
        if self._unsaved is not None:
            retried = self._save(self._unsaved)
        due = [group for _, group in sorted(self._groups.items()) if group.next_at <= now]
        if not due:
            return retried
        return [*retried, *self._save(self._decide_all(due, now))]

    def next_flush_at(self) -> datetime | None:
        """The earliest time a :meth:`flush` could decide anything (``None``: no groups)."""
        return min((group.next_at for group in self._groups.values()), default=None)

    def waiting(self) -> int:
        """Groups with news not yet decided: still in their ``group_wait``, or holding a firing
        alert that no integration of theirs has been told about (it waits for the next
        ``group_interval``). Muting is not considered: a muted alert counts as news here."""
        return sum(not group.looked or self._untold(group) for group in self._groups.values())

    def held(self) -> dict[str, int]:
        """What is kept in memory: open groups, alerts in them, and streams (see the module
        docstring: bounded by the open groups, plus streams owed a resolution)."""
        return {"groups": len(self._groups), "alerts": len(self._alerts), "streams": len(self._streams)}

    def _untold(self, group: _Group) -> bool:
        told: set[str] = set()
        for key in self._stream_keys(group):
            told.update(self._streams.get(key, _Stream()).firing)
        return any(self._alerts[i].state == "firing" and i not in told for i in group.alert_ids)

    def muted_by(self, alert: Alert) -> list[str]:
        """Why ``alert`` is muted now: the ids of the silences matching it, then
        ``"inhibited by <incident id>"`` for each firing alert inhibiting it. Empty: not muted
        (only firing alerts are muted when deciding, whatever this says of a resolved one)."""
        silences = self._active_silences(self._now())
        reasons = [silence.id for silence in silences if _silenced_by(alert, silence)]
        sources = self._inhibition_sources(silences)
        reasons.extend(f"inhibited by {source}" for source in dict.fromkeys(self._inhibitors(alert, sources)))
        return reasons

    # --- moving between groups ---------------------------------------------------------------

    def _move_out(self, group: _Group, before: Alert, after: Alert, now: datetime) -> None:
        """``after`` (the new version of ``before``) no longer belongs in ``group``: leave a
        resolved copy of ``before`` (the labels that group's integrations know) if one of them
        believes it fires."""
        group.alert_ids.discard(before.incident_id)
        if self._told_in(group, before.incident_id):
            group.tombstones[before.incident_id] = before.model_copy(
                update={"state": "resolved", "ends_at": now, "updated_at": after.updated_at}
            )

    def _told_in(self, group: _Group, incident_id: str) -> bool:
        """Whether an integration of ``group`` believes ``incident_id`` fires, counting a batch
        decided but not yet saved (it is applied once saved)."""
        unsaved = self._unsaved.streams if self._unsaved is not None else {}
        for key in self._stream_keys(group):
            for stream in (self._streams.get(key), unsaved.get(key)):
                if stream is not None and incident_id in stream.firing:
                    return True
        return False

    # --- deciding ----------------------------------------------------------------------------

    def _stream_keys(self, group: _Group) -> list[str]:
        receiver = self._receivers[group.route.receiver]
        return [stream_key(group.key, receiver.name, kind, index)
                for kind, index, _ in receiver.integrations()]

    def _read_streams(self, groups: Sequence[_Group]) -> None:
        """Read from the store the streams of ``groups`` not held and not read yet (dropped
        while their group was gone): their seq continues from there."""
        unread = [key for group in groups for key in self._stream_keys(group)
                  if key not in self._streams and key not in self._read]
        if unread:
            self._load(self._store.latest_notifications(unread), keep_idle=True)
        self._read.update(unread)

    def _decide_all(self, due: Sequence[_Group], now: datetime) -> _Batch:
        self._read_streams(due)
        muted = self._muted_ids(due, self._active_silences(now))
        batch = _Batch(now, [], {}, [])
        for group in due:
            self._decide(group, now, muted, batch)
        return batch

    def _decide(self, group: _Group, now: datetime, muted: set[str], batch: _Batch) -> None:
        """Add to ``batch`` the notifications of one due group and the stream states they
        leave behind."""
        receiver = self._receivers[group.route.receiver]
        alerts = [self._alerts[i] for i in group.alert_ids]
        firing = sorted((a for a in alerts if a.state == "firing"), key=_order)
        shown = [a for a in firing if a.incident_id not in muted]
        held = {a.incident_id for a in firing if a.incident_id in muted}
        tombstones = tuple(group.tombstones.values())
        resolved = sorted([*(a for a in alerts if a.state == "resolved"), *tombstones], key=_order)
        repeat = timedelta(seconds=group.route.repeat_interval)
        kept: set[str] = set()
        for kind, index, integration in receiver.integrations():
            key = stream_key(group.key, receiver.name, kind, index)
            before = self._streams.get(key, _Stream())
            its_resolved, its_held = resolved, held
            if isinstance(integration, PagerDutyConfig) and tombstones:
                its_resolved, deferred = self._pagerduty_resolved(resolved, tombstones, integration)
                its_held, kept = held | deferred, kept | deferred
            sent, after = _next_state(before, shown, its_held, its_resolved, integration, repeat, now)
            if after.seq:  # streams never sent anything hold nothing worth keeping
                batch.streams[key] = after
            if sent is not None:
                batch.notifications.append(
                    Notification(
                        id=notification_id(key, after.seq, sent),
                        group_key=group.key,
                        group_labels=dict(group.labels),
                        receiver=receiver.name,
                        integration=kind,
                        integration_index=index,
                        seq=after.seq,
                        created_at=now,
                        alerts=sent,
                        status="pending",
                        next_attempt_at=now,
                    )
                )
        ended = frozenset(a.incident_id for a in alerts if a.state == "resolved")
        batch.looks.append(_Look(group.key, ended, tombstones, frozenset(kept)))

    def _pagerduty_resolved(
        self, resolved: list[Alert], tombstones: Sequence[Alert], integration: PagerDutyConfig
    ) -> tuple[list[Alert], set[str]]:
        """``resolved`` as a PagerDuty integration of a group is to be told it, and the
        tombstones whose telling waits (their ids).

        PagerDuty knows an incident by its id (``dedup_key``), not by its labels: an alert that
        moved to another group paging the same PagerDuty service, and still fires, must not be
        resolved by the group it left (that would resolve the page the new group triggers).
        Once that group has paged it, its tombstone here is dropped untold; until then it waits
        (it is resolved from here should it resolve before that group pages it).
        """
        moved = {t.incident_id for t in tombstones}
        out: list[Alert] = []
        deferred: set[str] = set()
        for alert in resolved:
            told = None
            if alert.incident_id in moved:
                told = self._paged_elsewhere(alert.incident_id, integration)
            if told is None:
                out.append(alert)
            elif not told:
                deferred.add(alert.incident_id)
        return out, deferred

    def _paged_elsewhere(self, incident_id: str, integration: PagerDutyConfig) -> bool | None:
        """Whether a group ``incident_id`` is now in, while it fires, pages the PagerDuty service
        of ``integration`` (``None``: none does): ``True`` once that group has told it so."""
        current = self._alerts.get(incident_id)
        if current is None or current.state != "firing":
            return None
        found: bool | None = None
        for key in self._memberships.get(incident_id, set()):
            other = self._groups.get(key)
            if other is None:
                continue
            receiver = self._receivers[other.route.receiver]
            for kind, index, config in receiver.integrations():
                if isinstance(config, PagerDutyConfig) and _same_service(config, integration):
                    stream = self._streams.get(stream_key(other.key, receiver.name, kind, index))
                    if stream is not None and incident_id in stream.firing:
                        return True
                    found = False
        return found

    def _save(self, batch: _Batch) -> list[Notification]:
        """Save ``batch`` and apply it; if the save raises, keep it for the next flush."""
        self._unsaved = batch
        if batch.notifications:
            self._store.save_notifications(batch.notifications)
        self._unsaved = None
        self._streams.update(batch.streams)
        for look in batch.looks:
            group = self._groups.get(look.key)
            if group is not None:
                self._after_look(group, look, batch.at)
        return batch.notifications

    def _after_look(self, group: _Group, look: _Look, at: datetime) -> None:
        """Schedule the group's next look; drop what it resolved (every integration that
        wanted it has just been sent it) and the group itself once empty.

        Only what was resolved when decided: an alert that resolved since (while the save was
        being retried) has not been sent as resolved yet.
        """
        group.next_at = at + timedelta(seconds=group.route.group_interval)
        group.looked = True
        for incident_id in look.resolved & group.alert_ids:
            if self._alerts[incident_id].state == "resolved":
                group.alert_ids.discard(incident_id)
                self._leave(incident_id, group.key)
        for tombstone in look.tombstones:
            held_back = tombstone.incident_id in look.kept  # a PagerDuty integration is yet to be told
            if group.tombstones.get(tombstone.incident_id) is tombstone and not held_back:
                del group.tombstones[tombstone.incident_id]
        if not group.alert_ids and not group.tombstones:
            del self._groups[group.key]
            self._forget_streams(group)

    def _forget_streams(self, group: _Group) -> None:
        """Drop the streams of a group that is gone, unless one believes an alert fires."""
        for key in self._stream_keys(group):
            self._read.discard(key)
            stream = self._streams.get(key)
            if stream is not None and not stream.firing:
                del self._streams[key]

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
        """Incident ids, among the firing alerts of ``groups``, that a silence or an inhibition
        mutes (a resolved alert is never muted: its resolution is owed to whoever was told)."""
        sources = self._inhibition_sources(silences)
        muted = set()
        for incident_id in {i for group in groups for i in group.alert_ids}:
            alert = self._alerts[incident_id]
            if alert.state != "firing":
                continue
            if any(_silenced_by(alert, s) for s in silences) or next(self._inhibitors(alert, sources), None):
                muted.add(incident_id)
        return muted

    def _inhibition_sources(self, silences: Sequence[Silence]) -> _Sources:
        """Per inhibit rule, the firing, unsilenced alerts matching its source matchers, by their
        values of the rule's ``equal`` labels, each with whether it matches the targets too."""
        indexes: _Sources = []
        for rule in self._config.inhibit_rules:
            index: dict[tuple[str, ...], list[tuple[str, bool]]] = {}
            for alert in self._alerts.values():
                if (
                    alert.state == "firing"
                    and all_match(rule.source_matchers, alert.labels)
                    and not any(_silenced_by(alert, s) for s in silences)
                ):
                    both = all_match(rule.target_matchers, alert.labels)
                    index.setdefault(_equal_values(rule, alert), []).append((alert.incident_id, both))
            indexes.append(index)
        return indexes

    def _inhibitors(self, alert: Alert, sources: _Sources) -> Iterator[str]:
        """The incident ids of the alerts inhibiting ``alert`` (never itself).

        As in Alertmanager, an alert matching both the source and the target matchers of a
        rule is not inhibited through that rule by alerts that match both too: otherwise two
        such alerts (two high-severity incidents of one service) would mute each other and
        nobody would be told of either.
        """
        for rule, index in zip(self._config.inhibit_rules, sources, strict=True):
            if not all_match(rule.target_matchers, alert.labels):
                continue
            two_sided = all_match(rule.source_matchers, alert.labels)
            for source, source_two_sided in index.get(_equal_values(rule, alert), []):
                if source != alert.incident_id and not (two_sided and source_two_sided):
                    yield source


def _next_state(
    before: _Stream,
    shown: list[Alert],
    held: set[str],
    resolved: list[Alert],
    integration: IntegrationConfig,
    repeat_interval: timedelta,
    now: datetime,
) -> tuple[list[NotificationAlert] | None, _Stream]:
    """Whether one integration needs an update (the alerts to send, or ``None``) and what it
    will then believe is firing.

    ``shown``: the group's firing alerts not muted; ``held``: its muted firing ones (the
    integration goes on believing what it was told of them); ``resolved``: its resolved ones.
    """
    with_status = sends_acknowledged(integration)

    def key(told: _Told) -> tuple[str, ...]:
        return told[:2] if with_status else told[:1]

    told = before.firing
    new = {
        a.incident_id for a in shown if a.incident_id not in told or key(told[a.incident_id]) != key(_told(a))
    }
    ended = [a for a in resolved if a.incident_id in told] if integration.send_resolved else []
    repeat = bool(shown) and before.last_at is not None and now - before.last_at >= repeat_interval
    if isinstance(integration, AlertmanagerConfig) and not repeat:
        # Alertmanager shows the annotations it was last posted: a retitled incident ("… is back
        # after 14m") is posted again, as a repeat (it pages nobody: its labels are the same);
        # one whose title only counts on ("130 requests in one window") waits for the next post.
        repeat = any(told[a.incident_id][2] != _told(a)[2] for a in shown if a.incident_id in told)
    still = {incident_id: value for incident_id, value in told.items() if incident_id in held}
    if before.retell and (shown or ended):
        new |= {a.incident_id for a in shown}  # never delivered: news again
    if new or ended or repeat:
        believed = still | {a.incident_id: _told(a) for a in shown}
        # A repeat re-sends the group but is not news: integrations that act per alert
        # (PagerDuty: its incidents stay open) send nothing for it, and a big group's
        # repeat cannot run into a rate limit.
        sent = [_carried(a, a.incident_id in new) for a in shown]
        sent.extend(_carried(a, True) for a in ended)
        return sent, _Stream(seq=before.seq + 1, last_at=now, firing=believed)
    still.update((a.incident_id, told[a.incident_id]) for a in shown)  # all told, unchanged
    return None, _Stream(seq=before.seq, last_at=before.last_at, firing=still)


def _told(alert: Alert) -> _Told:
    """What an integration is told of a firing alert, to compare with what it was told: its
    severity, status and the shape of its title (numbers left out: a count that grows each window,
    "120 requests in one window", is no new title; "is back after 14m" is)."""
    return alert.severity, alert.incident_status, _NUMBERS.sub("#", alert.annotations.get("title", ""))


def _carried(alert: Alert, changed: bool) -> NotificationAlert:
    """``alert`` as a notification carries it, marked as news to the integration or not."""
    carried = NotificationAlert.of(alert)
    carried.changed = changed
    return carried


def _silenced_by(alert: Alert, silence: Silence) -> bool:
    # A silence without matchers mutes nothing (Alertmanager refuses to create one).
    return bool(silence.matchers) and all_match(silence.matchers, alert.labels)


def _same_service(a: PagerDutyConfig, b: PagerDutyConfig) -> bool:
    """Whether two PagerDuty integrations send to one service (one set of dedup keys)."""
    return a.url == b.url and a.routing_key.get_secret_value() == b.routing_key.get_secret_value()


def _equal_values(rule: InhibitRule, alert: Alert) -> tuple[str, ...]:
    return tuple(alert.labels.get(name, "") for name in rule.equal)


def _order(alert: Alert) -> tuple[bool, datetime, str]:
    """Firing first, then oldest first: the order receivers show alerts in."""
    return (alert.state != "firing", alert.starts_at, alert.incident_id)
