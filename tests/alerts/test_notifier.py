"""The notifier's own rules, over the real SQLite store with recording senders and a hand clock:
changes stamped by clocks behind or ahead are still followed, a bad integration fails at start,
one failing delivery never makes the others repeat, and a newer page supersedes an older one
still waiting on a retry while keeping the resolutions it was to deliver."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from inferwatch.collectors.settings import AlertingSettings
from inferwatch.detectors.alerts.config import AlertingConfig, AlertingConfigError
from inferwatch.detectors.alerts.model import Notification, NotificationQuery
from inferwatch.detectors.alerts.notifier import LEASE_S, RENEW_S, Notifier, backoff_s
from inferwatch.detectors.alerts.receivers import DeliveryError, build_sender
from inferwatch.detectors.base import Finding
from inferwatch.detectors.incidents import IncidentManager
from inferwatch.detectors.sqlite_store import SQLiteStore

T0 = datetime.now(UTC).replace(microsecond=0)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Recorder:
    """A sender that records what it is given, and fails while ``failing`` says so."""

    kind = "recorder"

    def __init__(self, name: str, sent: list[tuple[str, Notification]]) -> None:
        self.name, self.sent = name, sent
        self.failing: Exception | None = None

    def send(self, notification: Notification) -> None:
        if self.failing is not None:
            raise self.failing
        self.sent.append((self.name, notification))


def finding(subject: str, when: datetime, event: str = "e1", **kw: Any) -> Finding:
    return Finding(detector=kw.pop("detector", "prompt_injection"), kind="abuse",
                   severity=kw.pop("severity", "high"), score=0.9, title="t", summary="s",
                   subject=subject, time=when, service="chat", event_ids=[event], **kw)


def setup(tmp_path: Path, routes: str, clock: Clock) -> tuple[Notifier, SQLiteStore, IncidentManager,
                                                                list[tuple[str, Notification]],
                                                                dict[str, Recorder]]:
    config = AlertingConfig.model_validate(yaml.safe_load(routes))
    store = SQLiteStore(tmp_path / "store.db")
    sent: list[tuple[str, Notification]] = []
    recorders: dict[str, Recorder] = {}

    def make(cfg: Any, receiver: str) -> Recorder:
        build_sender(cfg, receiver=receiver)   # the real validation
        recorders[receiver] = Recorder(receiver, sent)
        return recorders[receiver]

    notifier = Notifier(config, store, AlertingSettings(retry_initial_s=5, retry_max_s=5), clock=clock,
                        senders=make)
    return notifier, store, IncidentManager(store, clock=clock), sent, recorders


ONE_PAGER = """
route: {receiver: pager, group_by: [subject], group_wait: 0s, group_interval: 10s}
receivers:
  - {name: pager, webhook_configs: [{url: "http://127.0.0.1:9/hook"}]}
"""


@pytest.mark.parametrize("skew_s", [-600, -90, 0, 3600])
def test_a_change_stamped_by_a_skewed_clock_is_still_paged(tmp_path: Path, skew_s: int) -> None:
    clock = Clock()
    notifier, store, manager, sent, _ = setup(tmp_path, ONE_PAGER, clock)
    (watched,) = manager.apply([finding("principal:a", T0)])
    notifier.tick()
    # Live traffic keeps the cursor moving while someone resolves from a skewed laptop.
    laptop = IncidentManager(store, clock=lambda: clock() + timedelta(seconds=skew_s))
    for i in range(8):
        clock.advance(11)
        manager.apply([finding("principal:b", clock.now, event=f"b{i}")])
        if i == 2:
            laptop.resolve(watched.id, "alice", "done")
        notifier.tick()
    pages = [n for _, n in sent if n.alerts[0].incident_id == watched.id]
    assert [(n.seq, n.alerts[0].state) for n in pages] == [(1, "firing"), (2, "resolved")]


def test_an_integration_that_cannot_work_fails_at_start(tmp_path: Path) -> None:
    with pytest.raises(AlertingConfigError, match=r"receivers: pager: pagerduty_configs\[0\]"):
        setup(tmp_path, """
route: {receiver: pager}
receivers:
  - {name: pager, pagerduty_configs: [{routing_key: ""}]}
""", Clock())


def test_one_failing_delivery_does_not_make_the_others_repeat(tmp_path: Path) -> None:
    clock = Clock()
    notifier, store, manager, sent, recorders = setup(tmp_path, """
route:
  receiver: a
  group_wait: 0s
  routes: [{receiver: a, continue: true}, {receiver: b, continue: true}, {receiver: c}]
receivers:
  - {name: a, webhook_configs: [{url: "http://127.0.0.1:9/a"}]}
  - {name: b, webhook_configs: [{url: "http://127.0.0.1:9/b"}]}
  - {name: c, webhook_configs: [{url: "http://127.0.0.1:9/c"}]}
""", clock)
    recorders["b"].failing = RuntimeError("a bug in a sender at https://hooks.example/T0/s3cret")
    manager.apply([finding("principal:a", T0)])
    for _ in range(4):
        notifier.tick()
        clock.advance(1)
    assert sorted(name for name, _ in sent) == ["a", "c"]            # once each, not per tick
    (waiting,) = store.list_notifications(NotificationQuery(receiver="b"))
    assert (waiting.status, waiting.attempts) == ("pending", 1)       # retried after its backoff
    assert "RuntimeError in the webhook sender" in (waiting.last_error or "")
    assert "s3cret" not in (waiting.last_error or "")  # an unexpected message may quote a secret
    recorders["b"].failing = None
    clock.advance(5)
    notifier.tick()
    assert sorted(name for name, _ in sent) == ["a", "b", "c"]


def test_a_newer_page_supersedes_an_older_one_and_keeps_its_resolutions(tmp_path: Path) -> None:
    clock = Clock()
    notifier, store, manager, sent, recorders = setup(tmp_path, """
route: {receiver: pager, group_by: [detector], group_wait: 0s, group_interval: 10s}
receivers:
  - {name: pager, webhook_configs: [{url: "http://127.0.0.1:9/hook"}]}
""", clock)
    (a,) = manager.apply([finding("principal:a", T0)])
    notifier.tick()                                                     # seq 1: A firing, sent
    recorders["pager"].failing = DeliveryError("down", retryable=True, retry_after_s=60)
    manager.resolve(a.id, "alice", "done")
    manager.apply([finding("principal:b", T0)])
    clock.advance(10)
    notifier.tick()                                                     # seq 2: A resolved, B firing: fails
    clock.advance(10)
    manager.apply([finding("principal:c", T0)])
    notifier.tick()                                                     # seq 3 decided; 2 still waits
    recorders["pager"].failing = None
    clock.advance(60)
    notifier.tick()
    delivered = [n for _, n in sent]
    assert [n.seq for n in delivered] == [1, 3]
    assert {(x.incident_id, x.state) for x in delivered[1].alerts} >= {(a.id, "resolved")}
    log = {n.seq: n.status for n in store.list_notifications(NotificationQuery(limit=-1))}
    assert log == {1: "delivered", 2: "superseded", 3: "delivered"}


def test_backoff_doubles_up_to_its_ceiling() -> None:
    assert [backoff_s(n, 2.0, 30.0) for n in range(1, 7)] == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_a_superseded_page_passes_on_its_news(tmp_path: Path) -> None:
    """A's trigger waits on a retry; the next page carries A as already known (B is its news).
    Superseding the first must not lose A's trigger for integrations that act per alert."""
    clock = Clock()
    notifier, _, manager, sent, recorders = setup(tmp_path, """
route: {receiver: pager, group_by: [detector], group_wait: 0s, group_interval: 10s}
receivers:
  - {name: pager, webhook_configs: [{url: "http://127.0.0.1:9/hook"}]}
""", clock)
    recorders["pager"].failing = DeliveryError("down", retryable=True)
    (a,) = manager.apply([finding("principal:a", T0)])
    notifier.tick()                                                     # seq 1: A (news), fails
    clock.advance(10)
    (b,) = manager.apply([finding("principal:b", T0)])
    notifier.tick()                                                     # seq 2: A known, B news
    recorders["pager"].failing = None
    clock.advance(10)
    notifier.tick()
    ((_, delivered),) = sent
    assert delivered.seq == 2
    assert {x.incident_id: x.changed for x in delivered.alerts} == {a.id: True, b.id: True}


def test_the_notification_log_is_kept_for_retention_days_and_each_streams_latest_for_ever(
        tmp_path: Path) -> None:
    clock = Clock()
    notifier, store, manager, sent, _ = setup(tmp_path, ONE_PAGER, clock)
    notifier.settings = notifier.settings.model_copy(update={"retention_days": 1.0})
    (first,) = manager.apply([finding("principal:a", T0)])
    notifier.tick()
    clock.advance(60)
    manager.resolve(first.id, "alice")
    notifier.tick()
    clock.advance(11)
    notifier.tick()
    assert [n.seq for n in store.list_notifications(NotificationQuery())] == [2, 1]
    clock.advance(86_400)   # a day on: the first page is past retention, the second is the stream's latest
    notifier.tick()
    assert [n.seq for n in store.list_notifications(NotificationQuery())] == [2]
    assert len(sent) == 2   # a restarted notifier resumes from the latest: nothing is sent again
    again = Notifier(notifier.config, store, notifier.settings, clock=clock,
                     senders=lambda cfg, receiver: Recorder(receiver, sent))
    again.tick()
    assert len(sent) == 2


def test_retention_zero_keeps_everything(tmp_path: Path) -> None:
    clock = Clock()
    notifier, store, manager, _, _ = setup(tmp_path, ONE_PAGER, clock)
    notifier.settings = notifier.settings.model_copy(update={"retention_days": 0.0})
    manager.apply([finding("principal:a", T0)])
    notifier.tick()
    clock.advance(400 * 86_400)
    manager.apply([finding("principal:a", clock.now, event="e2")])
    notifier.tick()
    clock.advance(11)
    notifier.tick()
    assert len(store.list_notifications(NotificationQuery())) == 2


class _Waits:
    """A stop event that records each wait instead of sleeping, and stops after ``calls`` waits."""

    def __init__(self, calls: int, watch: Callable[[], Any] = lambda: None) -> None:
        self.waits: list[float] = []
        self.seen: list[Any] = []  # what ``watch`` said at each wait
        self.calls = calls
        self.watch = watch

    def is_set(self) -> bool:
        return len(self.waits) >= self.calls

    def wait(self, timeout: float) -> bool:
        self.waits.append(timeout)
        self.seen.append(self.watch())
        return self.is_set()


def test_a_failing_store_is_retried_with_a_growing_pause_not_in_a_tight_loop(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from inferwatch.detectors.alerts import notifier as notifier_module
    from inferwatch.detectors.store import StoreUnavailable

    clock = Clock()
    notifier, store, manager, sent, _ = setup(tmp_path, ONE_PAGER, clock)
    manager.apply([finding("principal:a", T0)])
    notifier.tick()  # paged; the group is due again in group_interval
    assert len(sent) == 1
    clock.advance(3600)  # long past the group's next flush: a failed tick must not make it "due now"

    real = store.list_incidents
    failed = []

    def down_for_a_while(*args: Any, **kwargs: Any) -> Any:
        if len(failed) < 10:
            failed.append(1)
            raise StoreUnavailable("Elasticsearch at http://127.0.0.1:9200 is not reachable")
        return real(*args, **kwargs)

    store.list_incidents = down_for_a_while  # type: ignore[method-assign]
    stats = notifier.stats
    stop = _Waits(calls=11, watch=lambda: (stats.tick_errors, stats.failing_ticks, stats.leading))
    with caplog.at_level("INFO", logger=notifier_module.log.name):
        notifier.run(stop)  # type: ignore[arg-type]
    poll = notifier.settings.poll_interval_s
    assert stop.waits[:10] == [min(poll * 2 ** i, notifier_module.MAX_RETRY_S) for i in range(10)]
    assert stop.waits[10] <= poll  # back to polling once a tick works
    errors = [r for r in caplog.records if "notifier_error" in r.getMessage()]
    assert len(errors) == 10
    assert errors[0].exc_info is not None  # the traceback once
    assert all(r.exc_info is None for r in errors[1:])
    assert "is not reachable" in errors[-1].getMessage()
    assert "notifier_recovered after 10 failed tick(s)" in caplog.text
    # What /metrics serves (inferwatch_notify_tick_errors_total, _failing, _leading).
    assert stop.seen == [(i, i, True) for i in range(1, 11)] + [(10, 0, True)]


def test_notifiers_sharing_a_store_page_once_and_a_standby_takes_over_from_a_dead_one(tmp_path: Path) -> None:
    """One notifier per detector process on one store: the lease lets one page; when it stops
    renewing (crashed), another takes over after LEASE_S, resuming from the notification log
    (nothing paged twice), and the first one, back, stands by."""
    clock = Clock()
    config = AlertingConfig.model_validate(yaml.safe_load(ONE_PAGER))
    sent: list[tuple[str, Notification]] = []

    def notifier(name: str) -> Notifier:
        return Notifier(config, SQLiteStore(tmp_path / "store.db"), AlertingSettings(), clock=clock,
                        senders=lambda cfg, receiver: Recorder(name, sent), holder=name)

    first, second = notifier("first"), notifier("second")
    manager = IncidentManager(SQLiteStore(tmp_path / "store.db"), clock=clock)
    (x,) = manager.apply([finding("principal:x", T0)])
    for _ in range(30):  # two minutes of ticks: the holder renews, the other never takes over
        first.tick()
        second.tick()
        clock.advance(4)
    assert (first.leading, second.leading) == (True, False)
    assert [(who, n.alerts[0].incident_id) for who, n in sent] == [("first", x.id)]

    # The first stops (SIGKILL): its lease runs out LEASE_S after its last renewal at the latest.
    (y,) = manager.apply([finding("principal:y", clock.now, event="e2")])
    second.tick()
    assert not second.leading  # the lease has not run out yet
    clock.advance(LEASE_S)
    second.tick()
    assert second.leading
    clock.advance(1)
    second.tick()
    assert [(who, n.alerts[0].incident_id) for who, n in sent] == [("first", x.id), ("second", y.id)]

    first.tick()  # back: the lease is the second's now
    assert not first.leading
    assert len(sent) == 2

    # A clean stop gives the lease up: a standby takes it at its next ask, not LEASE_S later.
    second.close()
    clock.advance(RENEW_S)
    (z,) = manager.apply([finding("principal:z", clock.now, event="e3")])
    first.tick()
    assert first.leading
    clock.advance(1)
    first.tick()
    assert [(who, n.alerts[0].incident_id) for who, n in sent][2:] == [("first", z.id)]


def test_a_holder_slowed_by_its_receivers_stops_sending_once_another_may_have_taken_over(
        tmp_path: Path) -> None:
    """Deliveries go a few at a time, the lease checked before each few: a holder whose sends
    took longer than the lease (a receiver hanging) sends nothing more once another took it."""
    from inferwatch.detectors.alerts.notifier import _DELIVERY_WORKERS, LEASE

    clock = Clock()
    config = AlertingConfig.model_validate(yaml.safe_load(ONE_PAGER))
    sent: list[tuple[str, Notification]] = []

    class Hanging(Recorder):
        def send(self, notification: Notification) -> None:
            if not sent:  # the first send hangs past the lease, and meanwhile another takes it
                clock.advance(LEASE_S + 1)
                taker = SQLiteStore(tmp_path / "store.db")  # a connection of this thread's own
                assert taker.acquire_lease(LEASE, "other", clock(), LEASE_S).holder == "other"
                taker.close()
            super().send(notification)

    holder = Notifier(config, SQLiteStore(tmp_path / "store.db"), AlertingSettings(), clock=clock,
                      senders=lambda cfg, receiver: Hanging("holder", sent), holder="holder")
    manager = IncidentManager(SQLiteStore(tmp_path / "store.db"), clock=clock)
    manager.apply([finding(f"principal:p{i}", T0, event=f"e{i}") for i in range(3 * _DELIVERY_WORKERS)])
    holder.tick()
    assert len(sent) == _DELIVERY_WORKERS  # the few already under way, and no more
    assert not holder.leading
    pending = holder.store.list_notifications(NotificationQuery(status=["pending"], limit=100))
    assert len(pending) == 2 * _DELIVERY_WORKERS  # left for the new holder, which resumes from the outbox
