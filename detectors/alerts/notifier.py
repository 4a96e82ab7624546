"""The notifier: follows incident changes in the store, decides notifications, delivers them.

One loop, three steps per tick:

1. **Follow**: incidents changed since the last tick (``Incident.updated_at``, with a minute's
   overlap so a write that became searchable late, or one stamped by a clock a little behind,
   is not missed, and never ahead of the notifier's own clock) become
   :class:`~.model.Alert` objects for the dispatcher.
2. **Decide**: the :class:`~.dispatcher.Dispatcher` groups, waits, silences and inhibits as
   Alertmanager does, and writes each decided notification to the store *before* anything is sent
   (the outbox). Ids are deterministic, so a decision taken again after a crash is the same row.
3. **Deliver**: due outbox rows are sent, newest of each stream first; a failure is retried with
   exponential backoff (and a receiver's ``Retry-After``) until ``give_up_after_s``; a success is
   recorded at once (the notification log). An older row of a stream still waiting on a retry is
   marked ``superseded`` when a newer one is sent: each notification carries its group's whole
   state, and the receiver must not get a stale "firing" after a fresh "resolved".

A restart resumes from the store: the notification log tells the dispatcher what each stream last
carried, so nothing already sent is sent again, and pending rows are still delivered. What a
restart can repeat is only a delivery whose success the receiver confirmed but the store never
recorded (a crash in between); every payload carries the notification id so receivers can drop
that repeat (PagerDuty by ``dedup_key``, Alertmanager by its alert identity, webhooks by
``X-Inferwatch-Notification-Id``, email by ``Message-ID``).

Several notifiers may run on one store (one per detector process, for instance): they elect one
through a lease in the store (:data:`LEASE_S`, renewed every :data:`RENEW_S`), and only its holder
follows, decides and delivers. The others stand by, asking every :data:`RENEW_S`, and take the
lease over, resuming from the store as a restart does, once it has not been renewed for
:data:`LEASE_S` (the holder was killed, hung or lost the store) or its holder gave it up at a clean
stop. Their clocks must agree to within ``LEASE_S - RENEW_S``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from inferwatch.collectors.settings import AlertingSettings
from inferwatch.detectors.alerts.config import AlertingConfig, AlertingConfigError
from inferwatch.detectors.alerts.dispatcher import Dispatcher
from inferwatch.detectors.alerts.integrations import IntegrationConfig
from inferwatch.detectors.alerts.model import (
    AlertStore,
    Notification,
    NotificationQuery,
    alert_from_incident,
)
from inferwatch.detectors.alerts.receivers import DeliveryError, Sender, build_sender
from inferwatch.detectors.incidents import ACTIVE, Incident
from inferwatch.detectors.store import IncidentQuery, IncidentStore

log = logging.getLogger("inferwatch.alerts")

# Re-read this much before the newest change seen: a write that became searchable late, or
# one stamped by a process whose clock is a little behind ours, is still found.
OVERLAP = timedelta(seconds=60)
_CHANGES_LIMIT = 10_000  # incidents read per tick (Elasticsearch's default result window)
_DELIVERY_WORKERS = 4
# An incident's version as the notifier last saw it: updated_at, history length, status,
# severity, count.
_Version = tuple[datetime, int, str, str, int]
RECONCILE_S = 60.0  # how often every live incident is read again, whatever its updated_at
PRUNE_S = 3600.0  # how often notifications and silences past alerting.retention_days are forgotten
MAX_RETRY_S = 60.0  # the longest wait between ticks while they fail (the store is down)
LEASE = "notifier"
LEASE_S = 30.0
"""How long a notifier's lease lasts unrenewed: a standby takes over this long after the holder
last renewed it."""
RENEW_S = 10.0
"""How often the holder renews its lease, and a standby asks for it (on the monotonic clock); the
holder sends nothing new past ``LEASE_S - RENEW_S`` after its last renewal."""


class NotifierStore(IncidentStore, AlertStore, Protocol):
    """What the notifier reads and writes: incidents, silences and the outbox."""


@dataclass
class NotifierStats:
    """Counters for logs, metrics and tests."""

    incidents_seen: int = 0
    decided: int = 0
    delivered: int = 0
    retried: int = 0
    failed: int = 0
    superseded: int = 0
    by_receiver: dict[str, int] = field(default_factory=dict)
    tick_errors: int = 0
    """Ticks that raised (``event=notifier_error``): the store unreachable, a bug."""
    failing_ticks: int = 0
    """Ticks that raised in a row until now; 0 once one succeeds."""
    leading: bool = False
    """Whether this notifier holds the paging lease (only the holder pages)."""


class Notifier:
    """Follows incident changes in ``store`` and pages as ``config`` routes them."""

    def __init__(
        self,
        config: AlertingConfig,
        store: NotifierStore,
        settings: AlertingSettings | None = None,
        *,
        clock: Callable[[], datetime] | None = None,
        senders: Callable[[IntegrationConfig, str], Sender] | None = None,
        holder: str | None = None,
        monotonic: Callable[[], float] | None = None,
    ) -> None:
        self.config = config
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        """This notifier's name in the store's lease: host, process id and a random part, unique
        to this process (two processes must never share one)."""
        self.leading = False
        """Whether this notifier holds the lease: it pages; the others on the store stand by."""
        # The lease's own schedule runs on a monotonic clock (a wall clock stepped back or ahead
        # must not stretch a lease or stop a standby from asking); the store keeps wall times.
        # A given clock (tests) drives both.
        self._monotonic = monotonic or ((lambda: clock().timestamp()) if clock is not None  # type: ignore[misc]
                                        else time.monotonic)
        clock = clock or (lambda: datetime.now(UTC))
        self._next_ask = float("-inf")  # when to renew (holder) or ask again (standby)
        self._valid_until = float("-inf")  # past this, unrenewed, the holder sends nothing new
        self._standby_said = False
        self.store = store
        self.settings = settings or AlertingSettings()
        self.clock = clock
        self.dispatcher = Dispatcher(config, store, now=clock)
        self.stats = NotifierStats()
        make = senders or (lambda cfg, receiver: build_sender(cfg, receiver=receiver))
        # Every integration's sender is built now: a setting that cannot work (an empty
        # routing key, a smarthost without a port) fails at start, not at the first page.
        self._senders: dict[tuple[str, str, int], Sender] = build_senders(config, make)
        self._seen: dict[str, _Version] = {}  # incident id -> the version already observed
        # The same, for what reconcile() read: kept until the next reconcile replaces it.
        self._known: dict[str, _Version] = {}
        self._cursor: datetime | None = None
        self._reconciled = datetime.min.replace(tzinfo=UTC)
        self._pruned = datetime.min.replace(tzinfo=UTC)
        self._stop = threading.Event()
        # Read by other threads (the demo waits on them); written only by run().
        self.ticks = 0
        self.is_settled = False
        self._pool = ThreadPoolExecutor(max_workers=_DELIVERY_WORKERS, thread_name_prefix="inferwatch-notify")

    # -- the loop ------------------------------------------------------------------------------

    def start(self) -> None:
        """Resume from the store: what each stream last carried, and the incidents still live."""
        self.dispatcher.resume()
        now = self.clock()
        self.reconcile()
        self._cursor = now - OVERLAP

    def reconcile(self) -> None:
        """Read every live incident, and those resolved within ``lookback_s``, whatever their
        ``updated_at``: a change stamped by a clock running far behind ours (which following
        by ``updated_at`` cannot see) is found here, at start and every ``RECONCILE_S``."""
        now = self.clock()
        live = self._list(IncidentQuery(status=ACTIVE, limit=_CHANGES_LIMIT))
        since = now - timedelta(seconds=self.settings.lookback_s)
        recent = self._list(IncidentQuery(status=["resolved"], updated_since=since, limit=_CHANGES_LIMIT))
        self._observe([*live, *recent], known=self._known)
        self._reconciled = now

    def tick(self) -> None:
        """Follow, decide and deliver once, if this notifier holds the store's lease."""
        if not self._lead():
            return
        if self._cursor is None:
            self.start()
        elif (self.clock() - self._reconciled).total_seconds() >= RECONCILE_S:
            self.reconcile()
        self.follow()
        self.decide()
        self.deliver()
        self.prune()

    def _lead(self) -> bool:
        """Renew the lease when it is due (or try to take it); whether this notifier pages now.

        The holder renews every ``RENEW_S`` and acts only within ``LEASE_S - RENEW_S`` of its last
        renewal, so it has stopped sending anything new well before a standby can take over; a
        standby asks every ``RENEW_S`` (a lease given up at a clean stop is taken at once)."""
        mono = self._monotonic()
        if mono < self._next_ask:
            return self.leading and mono < self._valid_until
        lease = self.store.acquire_lease(LEASE, self.holder, self.clock(), LEASE_S)
        self._next_ask, self._valid_until = mono + RENEW_S, mono + LEASE_S - RENEW_S
        mine = lease.holder == self.holder
        if mine and not self.leading:
            log.info("event=notifier_leader holder=%s: this notifier pages for the store", self.holder)
            # Whatever this one knew from an earlier lease is stale: resume as a restart does.
            self.dispatcher = Dispatcher(self.config, self.store, now=self.clock)
            self._seen, self._known, self._cursor = {}, {}, None
        elif not mine and (self.leading or not self._standby_said):
            self._standby_said = True
            log.info("event=notifier_standby holder=%s leader=%s until=%s: another notifier pages for "
                     "this store; this one takes over if the lease is not renewed", self.holder,
                     lease.holder, lease.expires_at.isoformat(timespec="seconds"))
        self.leading = self.stats.leading = mine
        return mine

    def prune(self) -> None:
        """Hourly, forget what ``alerting.retention_days`` no longer keeps (see the store's
        ``prune_alerting``); the log stays for that many days, each stream's latest for ever."""
        now = self.clock()
        days = self.settings.retention_days
        if not days or (now - self._pruned).total_seconds() < PRUNE_S:
            return
        self._pruned = now
        gone = self.store.prune_alerting(now - timedelta(days=days))
        if gone:
            log.info("event=alerting_pruned forgot %d notifications and silences older than %g days",
                     gone, days)

    def run(self, stop: threading.Event | None = None) -> None:
        """Tick until :meth:`stop` (or ``stop`` is set); a failing tick is logged and retried.

        Failures back off (the poll interval, doubling up to :data:`MAX_RETRY_S`): a group due
        to flush is due again at once after a failed tick, so without it an outage of the store
        made the loop spin, logging a traceback a few hundred times a second. The first failure
        is logged with its traceback, the next ones in one line each, the recovery once.
        """
        stop = stop or self._stop
        failures = 0
        while not stop.is_set() and not self._stop.is_set():
            try:
                self.tick()
                self.ticks += 1
                self.is_settled = self.settled()
            except Exception as exc:
                failures += 1
                self.stats.tick_errors += 1
                self.stats.failing_ticks = failures
                wait = backoff_s(failures, self.settings.poll_interval_s, MAX_RETRY_S)
                if failures == 1:
                    log.exception("event=notifier_error the notifier will retry in %.1fs", wait)
                else:
                    log.warning("event=notifier_error failures=%d retry_in_s=%.1f error=%s: %s",
                                failures, wait, type(exc).__name__, exc)
            else:
                if failures:
                    log.info("event=notifier_recovered after %d failed tick(s)", failures)
                failures = self.stats.failing_ticks = 0
                wait = self._sleep_s()
                if self.leading:  # renew in time whatever the poll interval (failing ticks back off)
                    wait = min(wait, RENEW_S / 2)
            stop.wait(wait)

    def stop(self) -> None:
        """Ask :meth:`run` to return after the current tick."""
        self._stop.set()

    def close(self) -> None:
        """Stop, wait for deliveries in flight, and give up the lease if this notifier holds it,
        so another (or this one restarted) pages at once rather than after ``LEASE_S``."""
        self.stop()
        self._pool.shutdown(wait=True)
        if self.leading:
            self.leading = self.stats.leading = False
            try:
                self.store.acquire_lease(LEASE, self.holder, self.clock(), 0.0)  # expires now
            except Exception as exc:  # the store is gone: the lease runs out by itself
                log.warning("event=notifier_lease_kept holder=%s error=%s: it runs out within %.0f s",
                            self.holder, exc, LEASE_S)

    def settled(self) -> bool:
        """Nothing waiting: no group in its ``group_wait`` and no delivery pending."""
        if self.dispatcher.waiting():
            return False
        return not self.store.list_notifications(NotificationQuery(status=["pending"], limit=1))

    def _sleep_s(self) -> float:
        wake = self.dispatcher.next_flush_at()
        poll = self.settings.poll_interval_s
        if wake is None:
            return poll
        return max(0.0, min(poll, (wake - self.clock()).total_seconds()))

    # -- follow --------------------------------------------------------------------------------

    def follow(self) -> None:
        """Give the dispatcher every incident changed since the last look."""
        assert self._cursor is not None
        changed = self._list(IncidentQuery(updated_since=self._cursor, limit=_CHANGES_LIMIT))
        newest = self._observe(changed)
        if newest is not None:
            # Never past our own clock: one change stamped by a clock running ahead (a laptop's
            # `incidents ack`) must not make us skip changes stamped by the others.
            self._cursor = max(self._cursor, min(newest, self.clock()) - OVERLAP)
        # What was seen before the overlap cannot come back: forget it (bounded memory).
        self._seen = {k: v for k, v in self._seen.items() if v[0] >= self._cursor}

    def _observe(self, incidents: Iterable[Incident], *,
                 known: dict[str, _Version] | None = None) -> datetime | None:
        """Give the dispatcher what changed; with ``known`` (a reconcile), what the last
        reconcile read is not given again and ``known`` becomes what this one read."""
        fresh = []
        newest: datetime | None = None
        read: dict[str, _Version] = {}
        for incident in incidents:
            updated = incident.updated_at or incident.last_seen
            newest = updated if newest is None else max(newest, updated)
            # Two changes within one tick of a coarse clock share updated_at: what changed
            # is told apart by the history's length and the fields alerts carry.
            version = (updated, len(incident.history), incident.status, incident.severity, incident.count)
            read[incident.id] = version
            if self._seen.get(incident.id) == version:
                continue
            if known is not None and known.get(incident.id) == version:
                continue
            self._seen[incident.id] = version
            fresh.append(alert_from_incident(incident))
        if known is not None:
            self._known = read
        if fresh:
            self.stats.incidents_seen += len(fresh)
            self.dispatcher.observe(fresh)
        return newest

    def _list(self, query: IncidentQuery) -> list[Incident]:
        found = self.store.list_incidents(query)
        if len(found) >= query.limit:
            log.warning("event=notifier_backlog more than %d incidents changed at once; "
                        "the rest are read on the next ticks", query.limit)
        return found

    # -- decide --------------------------------------------------------------------------------

    def decide(self) -> list[Notification]:
        """Let the dispatcher flush the groups that are due (it writes the outbox)."""
        decided = self.dispatcher.flush(self.clock())
        self.stats.decided += len(decided)
        for n in decided:
            log.info("event=notification_decided id=%s receiver=%s integration=%s group=%s seq=%d "
                     "firing=%d resolved=%d", n.id, n.receiver, n.integration, n.group_key, n.seq,
                     len(n.firing), len(n.resolved))
        return decided

    # -- deliver -------------------------------------------------------------------------------

    def deliver(self, limit: int = 200) -> None:
        """Send the due outbox rows: per stream the newest pending one, streams in parallel."""
        now = self.clock()
        due = self.store.due_notifications(now, limit=limit)
        streams = {n.stream for n in due}
        batch = [n for n in (self._newest_pending(s, now) for s in sorted(streams)) if n is not None]
        # Each result is recorded as soon as it is known, so one failure cannot leave the
        # others' deliveries unrecorded (and sent again). A chunk at a time, the lease checked
        # (and renewed when due) before each: a holder slowed by slow receivers must not go on
        # sending after a standby may have taken over.
        for start in range(0, len(batch), _DELIVERY_WORKERS):
            if not self._lead():
                return
            chunk = batch[start:start + _DELIVERY_WORKERS]
            for future in as_completed([self._pool.submit(self._attempt, n) for n in chunk]):
                self.store.save_notifications([future.result()])

    def _newest_pending(self, stream: str, now: datetime) -> Notification | None:
        query = NotificationQuery(stream=stream, status=["pending"], limit=1000)
        pending = self.store.list_notifications(query)
        if not pending:
            return None
        # The newest decision wins; a row with the same seq (a decision saved twice with
        # different content after a failed write) counts as older.
        newest = max(pending, key=lambda n: (n.seq, n.created_at, n.id))
        older = sorted((n for n in pending if n is not newest), key=lambda n: (n.seq, n.created_at))
        if not older:
            return newest if newest.next_attempt_at <= now else None
        # A notification carries every firing alert of its group, but a resolution only once:
        # the newest one takes over the resolutions the older ones were to deliver.
        # Nor is news repeated: what an older one had as news (a trigger) and the newest
        # carries as already known stays news.
        news = {a.incident_id for n in older for a in n.alerts if a.changed}
        alerts = [a.model_copy(update={"changed": True}) if a.incident_id in news and not a.changed else a
                  for a in newest.alerts]
        carried = {a.incident_id for a in alerts}
        for n in reversed(older):
            for alert in n.resolved:
                if alert.incident_id not in carried:
                    carried.add(alert.incident_id)
                    alerts.append(alert)
        newest = newest.model_copy(update={"alerts": alerts})
        superseded = [
            n.model_copy(update={"status": "superseded", "last_error": f"superseded by seq {newest.seq}"})
            for n in older
        ]
        self.store.save_notifications([newest, *superseded])  # one write: nothing lost between
        self.stats.superseded += len(superseded)
        return newest if newest.next_attempt_at <= now else None

    def _attempt(self, n: Notification) -> Notification:
        sender = self._sender(n)
        now = self.clock()
        attempts = n.attempts + 1
        if sender is None:
            return n.model_copy(update={
                "status": "failed", "attempts": attempts,
                "last_error": f"receiver {n.receiver!r} has no {n.integration} #{n.integration_index} "
                              "in the routing file any more"})
        try:
            sender.send(n)
        except DeliveryError as exc:
            return self._failed(n, attempts, now, exc)
        except Exception as exc:  # a sender bug must not stop the loop: retry like an outage
            # Its type only: an unexpected error's message may quote a URL, a token or a body, and
            # last_error is logged and shown by `alerts log`.
            error = DeliveryError(f"{type(exc).__name__} in the {n.integration} sender (an unexpected "
                                  "error; its message is not kept, as it may hold a secret)", retryable=True)
            return self._failed(n, attempts, now, error)
        self.stats.delivered += 1
        self.stats.by_receiver[n.receiver] = self.stats.by_receiver.get(n.receiver, 0) + 1
        log.info("event=notification_delivered id=%s receiver=%s integration=%s seq=%d attempts=%d",
                 n.id, n.receiver, n.integration, n.seq, attempts)
        return n.model_copy(update={"status": "delivered", "attempts": attempts, "delivered_at": now,
                                    "last_error": None})

    def _failed(self, n: Notification, attempts: int, now: datetime, exc: DeliveryError) -> Notification:
        age = (now - n.created_at).total_seconds()
        if not exc.retryable or age >= self.settings.give_up_after_s:
            self.stats.failed += 1
            log.error("event=notification_failed id=%s receiver=%s integration=%s attempts=%d error=%s",
                      n.id, n.receiver, n.integration, attempts, exc)
            return n.model_copy(update={"status": "failed", "attempts": attempts, "last_error": str(exc)})
        wait = backoff_s(attempts, self.settings.retry_initial_s, self.settings.retry_max_s)
        if exc.retry_after_s is not None:
            wait = max(wait, min(exc.retry_after_s, self.settings.retry_max_s))
        self.stats.retried += 1
        log.warning("event=notification_retry id=%s receiver=%s integration=%s attempts=%d "
                    "retry_in_s=%.1f error=%s", n.id, n.receiver, n.integration, attempts, wait, exc)
        return n.model_copy(update={"attempts": attempts, "last_error": str(exc),
                                    "next_attempt_at": now + timedelta(seconds=wait)})

    def _sender(self, n: Notification) -> Sender | None:
        return self._senders.get((n.receiver, n.integration, n.integration_index))


def check_senders(config: AlertingConfig, source: str | Path | None = None) -> None:
    """Build every integration's sender once (no network): :class:`AlertingConfigError`
    naming the receiver (and the routing file ``source``, when given) when a setting cannot
    work. ``alerts check`` and start-up call it."""
    try:
        build_senders(config, lambda cfg, receiver: build_sender(cfg, receiver=receiver))
    except AlertingConfigError as exc:
        if source is None:
            raise
        raise AlertingConfigError(f"{source}: {exc}") from None


def build_senders(
    config: AlertingConfig, make: Callable[[IntegrationConfig, str], Sender]
) -> dict[tuple[str, str, int], Sender]:
    """A sender for every integration of every receiver, by (receiver, kind, index).

    Raises :class:`AlertingConfigError` naming the receiver when one cannot work.
    """
    out: dict[tuple[str, str, int], Sender] = {}
    for receiver in config.receivers:
        for kind, index, integration in receiver.integrations():
            try:
                out[(receiver.name, kind, index)] = make(integration, receiver.name)
            except ValueError as exc:
                where = f"receivers: {receiver.name}: {kind}_configs[{index}]"
                raise AlertingConfigError(f"{where}: {exc}") from None
    return out


def backoff_s(attempts: int, initial: float, ceiling: float) -> float:
    """Wait before attempt ``attempts + 1``: ``initial`` doubling per attempt, at most ``ceiling``.

    >>> [backoff_s(n, 1.0, 60.0) for n in (1, 2, 3, 8)]
    [1.0, 2.0, 4.0, 60.0]
    """
    return float(min(ceiling, initial * 2 ** min(max(0, attempts - 1), 64)))  # no float overflow
