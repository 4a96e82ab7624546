"""The dispatcher: Alertmanager's grouping and timing, silences, inhibition, restarts.

Time is a fake clock and the store an in-memory one written here with the contract's semantics
(upsert by id; the highest seq per stream as latest): what is tested is the decision logic, not
storage (the real stores have their own tests).
"""

from collections.abc import Collection, Sequence
from datetime import UTC, datetime, timedelta

import pytest
import yaml

from inferwatch.detectors.alerts.config import AlertingConfig
from inferwatch.detectors.alerts.dispatcher import Dispatcher, stream_key
from inferwatch.detectors.alerts.matchers import parse_matchers
from inferwatch.detectors.alerts.model import (
    Alert,
    Notification,
    NotificationQuery,
    Silence,
    notification_id,
)

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def at(self, seconds: float) -> datetime:
        """Move to ``seconds`` after T0 and return that time."""
        self.now = T0 + timedelta(seconds=seconds)
        return self.now


class MemoryAlertStore:
    """An AlertStore in memory: notifications upserted by id, silences by id."""

    def __init__(self) -> None:
        self.notifications: dict[str, Notification] = {}
        self.silences: dict[str, Silence] = {}
        self.save_calls = 0
        self.silence_reads = 0
        self.fail_saves = 0  # the next this many saves raise, writing nothing
        self.fail_after_apply = 0  # the next this many saves write, then raise (a bulk timeout)
        self.latest_reads: list[list[str] | None] = []  # streams asked for (None: all)

    def save_silence(self, silence: Silence) -> None:
        self.silences[silence.id] = silence

    def list_silences(self, *, include_expired: bool = False, now: datetime | None = None) -> list[Silence]:
        self.silence_reads += 1
        now = now or datetime.now(UTC)
        found = [s for s in self.silences.values() if include_expired or s.ends_at > now]
        return sorted(found, key=lambda s: s.created_at, reverse=True)

    def get_silence(self, silence_id: str) -> Silence | None:
        return self.silences.get(silence_id)

    def save_notifications(self, notifications: Sequence[Notification]) -> None:
        self.save_calls += 1
        if self.fail_saves:
            self.fail_saves -= 1
            raise ConnectionError("store unavailable")
        for n in notifications:
            self.notifications[n.id] = n.model_copy(deep=True)
        if self.fail_after_apply:
            self.fail_after_apply -= 1
            raise ConnectionError("timed out waiting for the store (the write was applied)")

    def due_notifications(self, now: datetime, limit: int = 100) -> list[Notification]:
        due = [n for n in self.notifications.values() if n.status == "pending" and n.next_attempt_at <= now]
        return sorted(due, key=lambda n: (n.created_at, n.seq))[:limit]

    def latest_notifications(self, streams: Collection[str] | None = None) -> list[Notification]:
        self.latest_reads.append(None if streams is None else sorted(streams))
        latest: dict[str, Notification] = {}
        for n in self.notifications.values():
            if streams is not None and n.stream not in streams:
                continue
            if n.stream not in latest or n.seq > latest[n.stream].seq:
                latest[n.stream] = n
        return list(latest.values())

    def list_notifications(self, query: NotificationQuery) -> list[Notification]:
        found = sorted(self.notifications.values(), key=lambda n: n.created_at, reverse=True)
        return found[: query.limit]


def config_of(text: str) -> AlertingConfig:
    return AlertingConfig.model_validate(yaml.safe_load(text))


HOOK = "webhook_configs: [{url: 'http://127.0.0.1:9/hook'}]"
BASIC = f"""
route: {{receiver: team, group_by: [service], group_wait: 30s, group_interval: 5m, repeat_interval: 1h}}
receivers: [{{name: team, {HOOK}}}]
"""


def alert(
    incident_id: str,
    *,
    severity: str = "high",
    service: str = "chat",
    kind: str = "abuse",
    status: str = "open",
    at: datetime = T0,
) -> Alert:
    labels = {
        "alertname": "prompt_injection",
        "incident_id": incident_id,
        "detector": "prompt_injection",
        "kind": kind,
        "severity": severity,
        "service": service,
        "subject": "principal-1",
    }
    return Alert(
        incident_id=incident_id,
        labels=labels,
        annotations={"title": f"incident {incident_id}"},
        state="resolved" if status == "resolved" else "firing",
        incident_status=status,
        starts_at=T0,
        ends_at=at if status == "resolved" else None,
        updated_at=at,
        severity=severity,
    )


def carried(notification: Notification) -> list[tuple[str, str]]:
    return [(a.incident_id, a.state) for a in notification.alerts]


def make(text: str = BASIC) -> tuple[Dispatcher, MemoryAlertStore, Clock]:
    store, clock = MemoryAlertStore(), Clock()
    return Dispatcher(config_of(text), store, now=clock), store, clock


# --- grouping and timing -----------------------------------------------------------------------


def test_group_wait_delays_the_first_notification_and_batches_alerts_arriving_within_it():
    dispatcher, store, clock = make()
    dispatcher.observe([alert("a")])
    assert dispatcher.next_flush_at() == T0 + timedelta(seconds=30)
    assert dispatcher.flush(clock.at(10)) == []
    clock.at(20)
    dispatcher.observe([alert("b")])
    assert dispatcher.next_flush_at() == T0 + timedelta(seconds=30)  # joins the waiting group
    assert dispatcher.flush(clock.at(29)) == []

    (sent,) = dispatcher.flush(clock.at(30))
    assert carried(sent) == [("a", "firing"), ("b", "firing")]
    group = '0:{service="chat"}'
    stream = stream_key(group, "team", "webhook", 0)
    assert (sent.group_key, sent.group_labels, sent.receiver, sent.integration) == (
        group,
        {"service": "chat"},
        "team",
        "webhook",
    )
    assert (sent.stream, sent.seq, sent.id) == (stream, 1, notification_id(stream, 1, sent.alerts))
    assert (sent.status, sent.attempts, sent.created_at, sent.next_attempt_at) == (
        "pending",
        0,
        clock(),
        clock(),
    )
    assert store.notifications == {sent.id: sent}
    assert store.save_calls == 1


def test_group_by_splits_alerts_into_one_group_per_label_value():
    dispatcher, _, clock = make()
    dispatcher.observe([alert("a", service="chat"), alert("b", service="search"), alert("c", service="chat")])
    sent = dispatcher.flush(clock.at(30))
    assert sorted((n.group_key, tuple(a.incident_id for a in n.alerts)) for n in sent) == [
        ('0:{service="chat"}', ("a", "c")),
        ('0:{service="search"}', ("b",)),
    ]


def test_after_the_first_notification_a_group_is_looked_at_every_group_interval():
    dispatcher, _, clock = make()
    dispatcher.observe([alert("a")])
    assert len(dispatcher.flush(clock.at(30))) == 1
    assert dispatcher.next_flush_at() == T0 + timedelta(seconds=330)

    clock.at(40)
    dispatcher.observe([alert("b")])  # a new alert in a group that already notified waits
    assert dispatcher.flush(clock.at(60)) == []
    assert dispatcher.flush(clock.at(329)) == []
    (sent,) = dispatcher.flush(clock.at(330))
    assert (sent.seq, carried(sent)) == (2, [("a", "firing"), ("b", "firing")])


def test_nothing_new_is_not_sent_again_until_the_repeat_interval_has_passed():
    dispatcher, _, clock = make()
    dispatcher.observe([alert("a")])
    dispatcher.flush(clock.at(30))
    dispatcher.observe([alert("a", at=T0 + timedelta(seconds=100))])  # an update, same key
    for look in range(1, 12):  # every 5 minutes, up to 55 minutes after the notification
        assert dispatcher.flush(clock.at(30 + 300 * look)) == []
    (repeat,) = dispatcher.flush(clock.at(30 + 300 * 12))  # 60 minutes after: repeat_interval
    assert (repeat.seq, carried(repeat)) == (2, [("a", "firing")])
    assert dispatcher.flush(clock.at(30 + 300 * 13)) == []


def test_a_severity_change_notifies_again():
    dispatcher, _, clock = make()
    dispatcher.observe([alert("a", severity="medium")])
    dispatcher.flush(clock.at(30))
    dispatcher.observe([alert("a", severity="critical")])
    (sent,) = dispatcher.flush(clock.at(330))
    assert [a.severity for a in sent.alerts] == ["critical"]


def test_resolved_alerts_are_sent_once_to_integrations_that_want_them_then_dropped():
    dispatcher, store, clock = make(
        """
        route: {receiver: team, group_wait: 30s, group_interval: 5m}
        receivers:
          - name: team
            webhook_configs:
              - {url: "http://127.0.0.1:9/a"}
              - {url: "http://127.0.0.1:9/b", send_resolved: false}
        """
    )
    dispatcher.observe([alert("a"), alert("b")])
    assert len(dispatcher.flush(clock.at(30))) == 2
    dispatcher.observe([alert("a", status="resolved", at=clock.at(60))])
    (sent,) = dispatcher.flush(clock.at(330))
    assert (sent.integration_index, carried(sent)) == (0, [("b", "firing"), ("a", "resolved")])
    assert dispatcher.flush(clock.at(630)) == []  # sent once, then dropped from the group

    dispatcher.observe([alert("b", status="resolved", at=clock.at(700))])
    (last,) = dispatcher.flush(clock.at(930))
    assert (last.integration_index, carried(last)) == (0, [("b", "resolved")])
    assert dispatcher.next_flush_at() is None  # the empty group is gone
    assert dispatcher.flush(clock.at(5000)) == []
    assert len(store.notifications) == 4


def test_an_alert_resolved_before_anyone_was_told_it_fired_is_not_sent():
    dispatcher, store, clock = make()
    dispatcher.observe([alert("a")])
    clock.at(10)
    dispatcher.observe([alert("a", status="resolved", at=clock())])
    assert dispatcher.flush(clock.at(30)) == []
    assert dispatcher.next_flush_at() is None
    assert store.save_calls == 0


def test_an_alert_that_fires_again_after_a_silent_resolution_notifies_again():
    dispatcher, _, clock = make(
        """
        route: {receiver: team, group_wait: 0s, group_interval: 1m, repeat_interval: 1d}
        receivers: [{name: team, webhook_configs: [{url: "http://127.0.0.1:9/b", send_resolved: false}]}]
        """
    )
    dispatcher.observe([alert("a"), alert("b")])
    assert len(dispatcher.flush(clock.at(0))) == 1
    dispatcher.observe([alert("a", status="resolved", at=clock.at(10))])
    assert dispatcher.flush(clock.at(60)) == []  # not told: it does not want resolved alerts
    dispatcher.observe([alert("a", status="open", at=clock.at(70))])  # reopened
    (sent,) = dispatcher.flush(clock.at(120))
    assert carried(sent) == [("a", "firing"), ("b", "firing")]


ACK_CONFIG = """
route: {receiver: oncall, group_wait: 0s, group_interval: 1m}
receivers:
  - name: oncall
    alertmanager_configs: [{url: "http://127.0.0.1:9093"}]
    pagerduty_configs: [{routing_key: key}]
    slack_configs: [{webhook_url: "https://hooks.slack.invalid/x"}]
    email_configs: [{to: [oncall@example.com], from: iw@example.com, smarthost: "localhost:25"}]
"""


def test_an_acknowledgement_notifies_only_integrations_that_send_acknowledgements():
    dispatcher, _, clock = make(ACK_CONFIG)
    dispatcher.observe([alert("a")])
    assert sorted(n.integration for n in dispatcher.flush(clock.at(0))) == [
        "alertmanager",
        "email",
        "pagerduty",
        "slack",
    ]
    dispatcher.observe([alert("a", status="acknowledged", at=clock.at(10))])
    sent = dispatcher.flush(clock.at(60))
    # Alertmanager too: its incident_status annotation said "open" after an ack (walk-through)
    assert sorted(n.integration for n in sent) == ["alertmanager", "pagerduty", "slack"]
    assert all(n.seq == 2 and n.alerts[0].incident_status == "acknowledged" for n in sent)
    assert dispatcher.flush(clock.at(120)) == []



def test_a_retitled_incident_is_posted_again_to_alertmanager_only_and_as_no_news():
    # An integrity silence "is back after 14m": the same incident, a new title. Alertmanager
    # shows the annotations it was last posted, so it is posted again (as a repeat: it pages
    # nobody); the integrations that message people are not.
    dispatcher, store, clock = make(ACK_CONFIG)
    dispatcher.observe([alert("a")])
    dispatcher.flush(clock.at(0))
    back = alert("a", at=clock.at(10))
    back.annotations["title"] = "service chat is back after 14m"
    dispatcher.observe([back])
    (sent,) = dispatcher.flush(clock.at(60))
    assert sent.integration == "alertmanager"
    assert [(a.annotations["title"], a.changed) for a in sent.alerts] == [
        ("service chat is back after 14m", False)]
    assert dispatcher.flush(clock.at(120)) == []  # told: not again
    later = alert("a", at=clock.at(130))
    later.annotations["title"] = "service chat is back after 15m"  # only its numbers moved on
    dispatcher.observe([later])
    assert dispatcher.flush(clock.at(180)) == []  # not a post a minute for a count

    # A restarted dispatcher knows what title it posted last.
    again = Dispatcher(config_of(ACK_CONFIG), store, now=clock)
    again.resume()
    again.observe([back])
    assert again.flush(clock.at(240)) == []

# --- routing into groups ---------------------------------------------------------------------

ROUTED = """
route:
  receiver: team
  group_by: [service]
  group_wait: 30s
  routes:
    - matchers: ['severity=~"high|critical"']
      receiver: pager
      group_wait: 10s
    - matchers: ['kind="integrity"']
      receiver: audit
      continue: true
    - matchers: ['kind="integrity"']
      receiver: team
receivers:
  - {name: team, webhook_configs: [{url: "http://127.0.0.1:9/team"}]}
  - {name: pager, pagerduty_configs: [{routing_key: key}]}
  - {name: audit, webhook_configs: [{url: "http://127.0.0.1:9/audit"}]}
"""


def test_each_matched_route_gets_its_own_group_and_timing():
    dispatcher, _, clock = make(ROUTED)
    dispatcher.observe([alert("a", severity="high"), alert("b", severity="low", kind="integrity")])
    (paged,) = dispatcher.flush(clock.at(10))
    assert (paged.receiver, paged.group_key, carried(paged)) == (
        "pager",
        '0.0:{service="chat"}',
        [("a", "firing")],
    )
    later = dispatcher.flush(clock.at(30))
    assert sorted((n.receiver, n.group_key) for n in later) == [
        ("audit", '0.1:{service="chat"}'),
        ("team", '0.2:{service="chat"}'),
    ]


def test_an_alert_whose_labels_change_moves_to_its_new_group_and_resolves_in_its_old_one():
    dispatcher, _, clock = make(ROUTED)
    dispatcher.observe([alert("a", severity="low"), alert("b", severity="low")])
    (first,) = dispatcher.flush(clock.at(30))
    assert first.receiver == "team"

    dispatcher.observe([alert("a", severity="critical", at=clock.at(100))])  # escalated: the pager's
    (paged,) = dispatcher.flush(clock.at(110))
    assert (paged.receiver, carried(paged)) == ("pager", [("a", "firing")])
    # The team was told a fires: its group's next look tells it a resolved there, as the team
    # knew it (its labels then), while a fires on in the pager's group.
    (left,) = dispatcher.flush(clock.at(330))
    assert (left.receiver, left.seq, carried(left)) == ("team", 2, [("b", "firing"), ("a", "resolved")])
    tombstone = left.alerts[1]
    moved_at = T0 + timedelta(seconds=100)
    assert (tombstone.labels["severity"], tombstone.ends_at, tombstone.changed) == ("low", moved_at, True)
    assert dispatcher.flush(clock.at(630)) == []  # sent once, then dropped (the pager's look too)

    dispatcher.observe([alert("b", severity="critical", at=clock.at(700))])
    both = dispatcher.flush(clock.at(930))  # both groups' look: b left the team's too
    assert sorted((n.receiver, tuple(carried(n))) for n in both) == [
        ("pager", (("a", "firing"), ("b", "firing"))),
        ("team", (("b", "resolved"),)),
    ]
    assert dispatcher.next_flush_at() == T0 + timedelta(seconds=1230)  # the pager's; the team's is gone


def test_an_alert_that_moves_out_of_a_one_alert_group_resolves_there_and_the_group_ends():
    dispatcher, _, clock = make(ROUTED)
    dispatcher.observe([alert("a", severity="medium")])
    dispatcher.flush(clock.at(30))
    dispatcher.observe([alert("a", severity="high", at=clock.at(100))])
    (paged,) = dispatcher.flush(clock.at(110))
    (left,) = dispatcher.flush(clock.at(330))
    assert [(n.receiver, carried(n)) for n in (paged, left)] == [
        ("pager", [("a", "firing")]),
        ("team", [("a", "resolved")]),
    ]
    dispatcher.observe([alert("a", severity="high", status="resolved", at=clock.at(400))])
    (resolved,) = dispatcher.flush(clock.at(410))
    assert (resolved.receiver, carried(resolved)) == ("pager", [("a", "resolved")])
    assert dispatcher.next_flush_at() is None


def test_an_alert_that_moves_back_before_its_old_group_is_looked_at_is_not_resolved_there():
    dispatcher, _, clock = make(ROUTED)
    dispatcher.observe([alert("a", severity="low")])
    dispatcher.flush(clock.at(30))
    dispatcher.observe([alert("a", severity="critical", at=clock.at(100))])
    dispatcher.observe([alert("a", severity="low", at=clock.at(105))])  # back before any look
    assert dispatcher.flush(clock.at(330)) == []  # the team still knows it fires; the pager never did


def test_an_alert_that_moves_before_its_group_notified_leaves_nothing_behind():
    dispatcher, _, clock = make(ROUTED)
    dispatcher.observe([alert("a", severity="low")])
    dispatcher.observe([alert("a", severity="critical", at=clock.at(5))])  # during the group_wait
    (paged,) = dispatcher.flush(clock.at(30))
    assert (paged.receiver, carried(paged)) == ("pager", [("a", "firing")])
    assert dispatcher.next_flush_at() == T0 + timedelta(seconds=330)  # only the pager's group is left


PD_KEY = "R0UT1NGKEY0123456789abcdefABCDEF"
BY_EVERY_LABEL = f"""
route: {{receiver: pager, group_by: ['...'], group_wait: 30s, group_interval: 5m, repeat_interval: 1h}}
receivers: [{{name: pager, pagerduty_configs: [{{routing_key: {PD_KEY}}}], {HOOK}}}]
"""


def _sent(notifications: list[Notification], kind: str) -> list[tuple[str, str, str, bool]]:
    return [(a.incident_id, a.state, a.severity, a.changed)
            for n in notifications if n.integration == kind for a in n.alerts]


def test_an_alert_that_escalates_into_another_group_of_the_same_pagerduty_service_is_not_resolved_there():
    """PagerDuty knows an incident by its id (dedup_key), not by its labels: when escalation moves
    it to another group paging the same service, resolving it in the group it left resolved
    the page the new group had just triggered, while the incident still fired."""
    dispatcher, _, clock = make(BY_EVERY_LABEL)
    dispatcher.observe([alert("a", severity="low")])
    assert _sent(dispatcher.flush(clock.at(30)), "pagerduty") == [("a", "firing", "low", True)]
    dispatcher.observe([alert("a", severity="medium", at=clock.at(60))])  # escalated: a new group
    assert _sent(dispatcher.flush(clock.at(90)), "pagerduty") == [("a", "firing", "medium", True)]
    left = dispatcher.flush(clock.at(330))  # the old group's look
    assert _sent(left, "pagerduty") == []  # not a resolve of the page that fires
    assert _sent(left, "webhook") == [("a", "resolved", "low", True)]  # told by labels, as before
    dispatcher.observe([alert("a", severity="medium", status="resolved", at=clock.at(400))])
    assert _sent(dispatcher.flush(clock.at(400)), "pagerduty") == [("a", "resolved", "medium", True)]
    assert dispatcher.next_flush_at() is None


def test_an_escalated_alert_resolved_before_its_new_group_paged_is_resolved_by_the_group_it_left():
    dispatcher, _, clock = make(BY_EVERY_LABEL.replace("group_wait: 30s", "group_wait: 10m"))
    dispatcher.observe([alert("a", severity="low")])
    dispatcher.flush(clock.at(600))
    dispatcher.observe([alert("a", severity="medium", at=clock.at(610))])  # its new group waits 10m
    assert _sent(dispatcher.flush(clock.at(900)), "pagerduty") == []  # the new group pages it soon
    dispatcher.observe([alert("a", severity="medium", status="resolved", at=clock.at(950))])
    # The new group never paged it: the group it left, which did, resolves it.
    assert _sent(dispatcher.flush(clock.at(1200)), "pagerduty") == [("a", "resolved", "low", True)]
    assert _sent(dispatcher.flush(clock.at(1210)), "pagerduty") == []
    assert dispatcher.next_flush_at() is None


def test_a_receiver_without_integrations_drops_alerts_and_its_groups_are_cleaned_up():
    dispatcher, store, clock = make(
        "route: {receiver: nobody, group_wait: 0s}\nreceivers: [{name: nobody}]\n"
    )
    dispatcher.observe([alert("a")])
    assert dispatcher.flush(clock.at(0)) == []
    dispatcher.observe([alert("a", status="resolved", at=clock.at(1))])
    dispatcher.flush(clock.at(300))
    assert dispatcher.next_flush_at() is None
    assert store.save_calls == 0


# --- silences and inhibition -------------------------------------------------------------------


def silence(silence_id: str, matchers: str, start: float, end: float) -> Silence:
    return Silence(
        id=silence_id,
        matchers=parse_matchers(matchers),
        starts_at=T0 + timedelta(seconds=start),
        ends_at=T0 + timedelta(seconds=end),
        created_by="sam",
        comment="maintenance",
        created_at=T0,
    )


def test_a_silence_mutes_while_active_and_its_expiry_makes_the_alert_new():
    dispatcher, store, clock = make()
    store.save_silence(silence("s1", 'incident_id="a"', start=0, end=600))
    store.save_silence(silence("later", 'incident_id="b"', start=10_000, end=20_000))  # not yet in force
    dispatcher.observe([alert("a"), alert("b")])
    (sent,) = dispatcher.flush(clock.at(30))
    assert carried(sent) == [("b", "firing")]
    assert store.silence_reads == 1  # one read per flush
    assert dispatcher.muted_by(alert("a")) == ["s1"]
    assert dispatcher.muted_by(alert("b")) == []

    assert dispatcher.flush(clock.at(330)) == []  # still silenced
    (after,) = dispatcher.flush(clock.at(630))  # silence ended at 600
    assert (after.seq, carried(after)) == (2, [("a", "firing"), ("b", "firing")])
    assert dispatcher.muted_by(alert("a")) == []


def test_an_alert_notified_before_its_silence_is_not_notified_again_when_it_ends():
    dispatcher, store, clock = make()
    dispatcher.observe([alert("a"), alert("b")])
    dispatcher.flush(clock.at(30))
    store.save_silence(silence("s1", "{incident_id=a}", start=100, end=400))
    dispatcher.observe([alert("c", at=clock.at(200))])
    (during,) = dispatcher.flush(clock.at(330))  # c is new; a is muted, so left out
    assert carried(during) == [("b", "firing"), ("c", "firing")]
    # The receiver was told a fires and nothing about it changed: nothing to say once unmuted.
    assert dispatcher.flush(clock.at(630)) == []
    dispatcher.observe([alert("a", severity="critical", at=clock.at(700))])
    (escalated,) = dispatcher.flush(clock.at(930))
    assert [(x.incident_id, x.severity, x.changed) for x in escalated.alerts] == [
        ("a", "critical", True),
        ("b", "high", False),
        ("c", "high", False),
    ]


def test_an_alert_resolved_while_silenced_has_its_resolution_sent():
    dispatcher, store, clock = make()
    dispatcher.observe([alert("a"), alert("b")])
    dispatcher.flush(clock.at(30))
    store.save_silence(silence("s1", 'incident_id="a"', start=100, end=10_000))
    assert dispatcher.flush(clock.at(330)) == []
    dispatcher.observe([alert("a", status="resolved", at=clock.at(400))])
    (sent,) = dispatcher.flush(clock.at(630))
    assert (sent.seq, carried(sent)) == (2, [("b", "firing"), ("a", "resolved")])
    assert dispatcher.flush(clock.at(930)) == []


def test_an_alert_silenced_from_the_start_and_resolved_under_the_silence_is_never_sent():
    dispatcher, store, clock = make()
    store.save_silence(silence("s1", 'incident_id="a"', start=0, end=10_000))
    dispatcher.observe([alert("a"), alert("b")])
    (first,) = dispatcher.flush(clock.at(30))
    dispatcher.observe([alert("a", status="resolved", at=clock.at(100))])
    assert dispatcher.flush(clock.at(330)) == []  # the receiver never heard of a
    assert carried(first) == [("b", "firing")]


def test_a_silence_without_matchers_mutes_nothing():
    dispatcher, store, clock = make()
    store.save_silence(silence("empty", "{}", start=0, end=600))
    dispatcher.observe([alert("a")])
    assert len(dispatcher.flush(clock.at(30))) == 1


INHIBIT = f"""
route: {{receiver: team, group_wait: 0s, group_interval: 1m}}
receivers: [{{name: team, {HOOK}}}]
inhibit_rules:
  - source_matchers: ['kind="integrity"', 'severity=~"high|critical"']
    target_matchers: ['severity=~"low|medium"']
    equal: [service]
"""


def test_an_integrity_incident_mutes_lower_severity_alerts_of_its_service_only():
    dispatcher, _, clock = make(INHIBIT)
    source = alert("integrity", kind="integrity", severity="high", service="chat")
    dispatcher.observe(
        [
            source,
            alert("low-chat", severity="low", service="chat"),
            alert("low-search", severity="low", service="search"),
            alert("high-chat", severity="high", service="chat"),
        ]
    )
    (sent,) = dispatcher.flush(clock.at(0))
    assert {a.incident_id for a in sent.alerts} == {"integrity", "low-search", "high-chat"}
    assert dispatcher.muted_by(alert("low-chat", severity="low", service="chat")) == [
        "inhibited by integrity"
    ]
    assert dispatcher.muted_by(alert("low-search", severity="low", service="search")) == []

    dispatcher.observe(
        [alert("integrity", kind="integrity", severity="high", status="resolved", at=clock.at(10))]
    )
    (after,) = dispatcher.flush(clock.at(60))
    assert {(a.incident_id, a.state) for a in after.alerts} == {
        ("integrity", "resolved"),
        ("low-chat", "firing"),  # no longer inhibited: new to the receiver
        ("low-search", "firing"),
        ("high-chat", "firing"),
    }


def test_a_silenced_source_does_not_inhibit_and_an_alert_never_inhibits_itself():
    config = INHIBIT.replace("target_matchers: ['severity=~\"low|medium\"']", "target_matchers: []")
    dispatcher, store, clock = make(config)
    store.save_silence(silence("s1", 'incident_id="integrity"', start=0, end=600))
    dispatcher.observe(
        [alert("integrity", kind="integrity", severity="critical"), alert("low", severity="low")]
    )
    (sent,) = dispatcher.flush(clock.at(0))
    assert carried(sent) == [("low", "firing")]
    assert dispatcher.muted_by(alert("integrity", kind="integrity", severity="critical")) == ["s1"]
    store.silences.clear()
    (after,) = dispatcher.flush(clock.at(60))
    # The source is no longer silenced: it fires and mutes "low", but not itself.
    assert carried(after) == [("integrity", "firing")]
    assert dispatcher.muted_by(alert("low", severity="low")) == ["inhibited by integrity"]


def test_an_alert_resolved_while_inhibited_has_its_resolution_sent():
    dispatcher, _, clock = make(INHIBIT)
    dispatcher.observe([alert("low", severity="low")])
    (told,) = dispatcher.flush(clock.at(0))
    dispatcher.observe([alert("integrity", kind="integrity", severity="high", at=clock.at(10))])
    (inhibited,) = dispatcher.flush(clock.at(60))
    dispatcher.observe([alert("low", severity="low", status="resolved", at=clock.at(70))])
    (resolved,) = dispatcher.flush(clock.at(120))
    assert [carried(n) for n in (told, inhibited, resolved)] == [
        [("low", "firing")],
        [("integrity", "firing")],  # low is inhibited: left out, but the receiver knows it fires
        [("integrity", "firing"), ("low", "resolved")],
    ]


MUTUAL = f"""
route: {{receiver: team, group_by: [incident_id], group_wait: 0s, group_interval: 1m}}
receivers: [{{name: team, {HOOK}}}]
inhibit_rules:  # a high abuse incident mutes the other abuse alerts of its service
  - source_matchers: ['kind="abuse"', 'severity=~"high|critical"']
    target_matchers: ['kind="abuse"']
    equal: [service]
"""


def test_alerts_matching_both_sides_of_an_inhibit_rule_do_not_inhibit_each_other():
    dispatcher, _, clock = make(MUTUAL)
    x, y = alert("x", severity="high"), alert("y", severity="critical")
    noise = alert("noise", severity="medium")
    dispatcher.observe([x, y, noise])
    sent = dispatcher.flush(clock.at(0))
    assert sorted(a.incident_id for n in sent for a in n.alerts) == ["x", "y"]
    assert (dispatcher.muted_by(x), dispatcher.muted_by(y)) == ([], [])
    assert dispatcher.muted_by(noise) == ["inhibited by x", "inhibited by y"]


def test_an_alert_matching_both_sides_is_still_inhibited_by_a_source_only_alert():
    dispatcher, _, clock = make(
        MUTUAL.replace("""['kind="abuse"', 'severity=~"high|critical"']""", """['severity="critical"']""")
    )
    source_only = alert("integrity", kind="integrity", severity="critical")
    both = alert("abuse", severity="critical")
    dispatcher.observe([source_only, both])
    (sent,) = dispatcher.flush(clock.at(0))
    assert carried(sent) == [("integrity", "firing")]
    assert dispatcher.muted_by(both) == ["inhibited by integrity"]


# --- restart and failures ----------------------------------------------------------------------


def test_a_restarted_dispatcher_repeats_nothing_saved_and_continues_the_sequence():
    first, store, clock = make()
    first.observe([alert("a"), alert("b", service="search")])
    assert len(first.flush(clock.at(30))) == 2

    clock.at(200)  # restart: a new dispatcher over the same store
    second = Dispatcher(config_of(BASIC), store, now=clock)
    second.resume()
    second.observe([alert("a"), alert("b", service="search")])
    assert second.flush(clock.at(230)) == []  # the last notifications already carried these
    second.observe([alert("c")])
    (sent,) = second.flush(clock.at(530))
    stream = stream_key('0:{service="chat"}', "team", "webhook", 0)
    assert (sent.stream, sent.seq, sent.id) == (stream, 2, notification_id(stream, 2, sent.alerts))
    assert carried(sent) == [("a", "firing"), ("c", "firing")]
    assert len(store.notifications) == 3

    # repeat_interval (1h) counts from the saved notification's created_at (T0+30s).
    # Its group (new in this process) is looked at 230 s after T0, then every 300 s.
    assert second.flush(clock.at(230 + 300 * 11)) == []  # 3500 s after the notification
    (repeated,) = second.flush(clock.at(230 + 300 * 12))  # 3800 s after it
    assert (repeated.group_key, repeated.seq) == ('0:{service="search"}', 2)


def test_groups_that_end_leave_nothing_behind_and_their_sequence_continues_when_they_return():
    dispatcher, store, clock = make()
    t = 0.0
    for k in range(50):  # fifty services, one incident each, opened and resolved
        dispatcher.observe([alert(f"i{k}", service=f"svc{k}", at=clock.at(t))])
        dispatcher.flush(clock.at(t + 30))
        dispatcher.observe([alert(f"i{k}", service=f"svc{k}", status="resolved", at=clock.at(t + 40))])
        dispatcher.flush(clock.at(t + 330))
        t += 400
    assert len(store.notifications) == 100
    assert dispatcher.held() == {"groups": 0, "alerts": 0, "streams": 0}

    # svc3 fires again: its stream is read back from the store and continues at seq 3.
    reads = len(store.latest_reads)
    dispatcher.observe([alert("again", service="svc3", at=clock.at(t))])
    (sent,) = dispatcher.flush(clock.at(t + 30))
    stream = stream_key('0:{service="svc3"}', "team", "webhook", 0)
    assert store.latest_reads[reads:] == [[stream]]  # one read, of that stream only
    assert (sent.stream, sent.seq) == (stream, 3)
    assert len(store.notifications) == 101  # a new record, none overwritten
    dispatcher.observe([alert("more", service="svc3", at=clock.at(t + 60))])
    (next_,) = dispatcher.flush(clock.at(t + 330))
    assert next_.seq == 4
    assert store.latest_reads[reads:] == [[stream]]  # held while its group is open: not read again


def test_a_restart_holds_only_streams_owed_a_resolution():
    first, store, clock = make()
    first.observe([alert("quiet", service="a"), alert("firing", service="b")])
    first.flush(clock.at(30))
    first.observe([alert("quiet", service="a", status="resolved", at=clock.at(40))])
    first.flush(clock.at(330))

    second = Dispatcher(config_of(BASIC), store, now=clock)
    second.resume()
    assert second.held()["streams"] == 1  # b's: it believes "firing" fires
    second.observe([alert("firing", service="b", status="resolved", at=clock.at(400))])
    second.observe([alert("back", service="a", at=clock.at(400))])
    sent = {n.group_key: n for n in second.flush(clock.at(430))}
    assert (sent['0:{service="b"}'].seq, carried(sent['0:{service="b"}'])) == (2, [("firing", "resolved")])
    assert (sent['0:{service="a"}'].seq, carried(sent['0:{service="a"}'])) == (3, [("back", "firing")])


def test_a_restart_sends_the_resolution_of_an_alert_notified_before_it():
    first, store, clock = make()
    first.observe([alert("a")])
    first.flush(clock.at(30))
    second = Dispatcher(config_of(BASIC), store, now=clock)  # flush resumes by itself
    second.observe([alert("a", status="resolved", at=clock.at(100))])
    (sent,) = second.flush(clock.at(130))
    assert (sent.seq, carried(sent)) == (2, [("a", "resolved")])


def test_a_restart_tells_again_what_a_notification_that_failed_for_good_carried():
    """A receiver misconfigured (a wrong secret: HTTP 401, failed for good) and fixed by a
    restart: the page it never got is sent again at the group's first look, as news."""
    first, store, clock = make()
    first.observe([alert("a"), alert("b")])
    (lost,) = first.flush(clock.at(30))
    store.notifications[lost.id] = lost.model_copy(update={"status": "failed", "last_error": "HTTP 401"})

    second = Dispatcher(config_of(BASIC), store, now=clock)
    second.resume()
    second.observe([alert("a"), alert("b")])
    (again,) = second.flush(clock.at(100))
    assert (again.seq, carried(again)) == (2, [("a", "firing"), ("b", "firing")])
    assert all(a.changed for a in again.alerts)  # news to the receiver, not a repeat
    second.observe([alert("a"), alert("b")])
    assert second.flush(clock.at(400)) == []  # told now: nothing more until something changes


def test_a_restart_tells_again_a_resolution_that_failed_for_good():
    first, store, clock = make()
    first.observe([alert("a")])
    first.flush(clock.at(30))
    first.observe([alert("a", status="resolved", at=clock.at(40))])
    (lost,) = first.flush(clock.at(330))
    assert carried(lost) == [("a", "resolved")]
    store.notifications[lost.id] = lost.model_copy(update={"status": "failed"})

    second = Dispatcher(config_of(BASIC), store, now=clock)
    second.resume()
    second.observe([alert("a", status="resolved", at=clock.at(40))])
    (again,) = second.flush(clock.at(400))
    assert (again.seq, carried(again)) == (3, [("a", "resolved")])


def test_a_failed_save_leaves_the_decision_to_be_taken_again_with_the_same_ids():
    dispatcher, store, clock = make(ACK_CONFIG)
    dispatcher.observe([alert("a")])
    store.fail_saves = 1
    with pytest.raises(ConnectionError):
        dispatcher.flush(clock.at(0))
    assert store.notifications == {}
    assert dispatcher.next_flush_at() == T0  # still due

    retried = dispatcher.flush(clock.at(5))
    assert len(retried) == 4
    assert all(n.seq == 1 and n.id == notification_id(n.stream, 1, n.alerts) for n in retried)
    assert sorted(store.notifications) == sorted(n.id for n in retried)
    assert store.save_calls == 2  # one per flush, all notifications together

    dispatcher.observe([alert("a", status="acknowledged", at=clock.at(10))])
    store.fail_saves = 1
    with pytest.raises(ConnectionError):
        dispatcher.flush(clock.at(65))  # the group's next look: 60 s after the decision at 0 s
    again = dispatcher.flush(clock.at(66))
    assert sorted(n.integration for n in again) == ["alertmanager", "pagerduty", "slack"]
    assert all(n.seq == 2 for n in again)
    assert len(store.notifications) == 7


def test_a_save_that_raised_after_writing_is_retried_as_is_before_deciding_again():
    dispatcher, store, clock = make()
    dispatcher.observe([alert("a")])
    dispatcher.flush(clock.at(30))
    dispatcher.observe([alert("b", at=clock.at(100))])
    store.fail_after_apply = 1
    with pytest.raises(ConnectionError):
        dispatcher.flush(clock.at(330))
    (written,) = [n for n in store.notifications.values() if n.seq == 2]
    assert carried(written) == [("a", "firing"), ("b", "firing")]

    dispatcher.observe([alert("a", status="resolved", at=clock.at(340))])  # before the retry
    retried = dispatcher.flush(clock.at(350))
    assert [n.id for n in retried] == [written.id]  # the same batch, not a new decision
    assert dispatcher.next_flush_at() == T0 + timedelta(seconds=630)  # 300 s after that decision
    (after,) = dispatcher.flush(clock.at(630))
    assert (after.seq, carried(after)) == (3, [("b", "firing"), ("a", "resolved")])
    assert sorted(n.seq for n in store.notifications.values()) == [1, 2, 3]


def test_a_batch_whose_save_keeps_failing_is_kept_until_it_is_saved():
    dispatcher, store, clock = make()
    dispatcher.observe([alert("a")])
    store.fail_saves = 2
    for at in (30, 40):
        with pytest.raises(ConnectionError):
            dispatcher.flush(clock.at(at))
    assert dispatcher.next_flush_at() == T0 + timedelta(seconds=30)  # still due
    dispatcher.observe([alert("b", at=clock.at(50))])
    (saved,) = dispatcher.flush(clock.at(60))
    assert (saved.seq, saved.created_at, carried(saved)) == (1, T0 + timedelta(seconds=30), [("a", "firing")])
    assert store.save_calls == 3
    (later,) = dispatcher.flush(clock.at(330))
    assert (later.seq, carried(later)) == (2, [("a", "firing"), ("b", "firing")])


def test_an_alert_that_moves_while_its_first_notification_awaits_its_save_is_resolved_there():
    dispatcher, store, clock = make(ROUTED)
    dispatcher.observe([alert("a", severity="low")])
    store.fail_after_apply = 1
    with pytest.raises(ConnectionError):
        dispatcher.flush(clock.at(30))  # the team was in fact told a fires
    dispatcher.observe([alert("a", severity="critical", at=clock.at(40))])
    retried, paged = dispatcher.flush(clock.at(50))
    (left,) = dispatcher.flush(clock.at(330))
    assert [(n.receiver, n.seq, carried(n)) for n in (retried, paged, left)] == [
        ("team", 1, [("a", "firing")]),
        ("pager", 1, [("a", "firing")]),
        ("team", 2, [("a", "resolved")]),
    ]


# --- what is news to each integration ----------------------------------------------------------

PAGER = """
route: {receiver: oncall, group_wait: 0s, group_interval: 1m, repeat_interval: 1h}
receivers: [{name: oncall, pagerduty_configs: [{routing_key: key}]}]
"""


def changes(notification: Notification) -> list[tuple[str, str, bool]]:
    return [(a.incident_id, a.state, a.changed) for a in notification.alerts]


def test_only_alerts_that_are_news_to_the_integration_are_marked_changed():
    dispatcher, _, clock = make(PAGER)
    dispatcher.observe([alert("a"), alert("b")])
    (first,) = dispatcher.flush(clock.at(0))
    assert changes(first) == [("a", "firing", True), ("b", "firing", True)]

    dispatcher.observe([alert("c", at=clock.at(10))])
    (new,) = dispatcher.flush(clock.at(60))
    assert changes(new) == [("a", "firing", False), ("b", "firing", False), ("c", "firing", True)]

    dispatcher.observe([alert("b", status="acknowledged", at=clock.at(70))])
    (acked,) = dispatcher.flush(clock.at(120))
    assert changes(acked) == [("a", "firing", False), ("b", "firing", True), ("c", "firing", False)]

    dispatcher.observe([alert("a", status="resolved", at=clock.at(130))])
    (resolved,) = dispatcher.flush(clock.at(180))
    assert changes(resolved) == [("b", "firing", False), ("c", "firing", False), ("a", "resolved", True)]

    assert dispatcher.flush(clock.at(180 + 3540)) == []
    (repeat,) = dispatcher.flush(clock.at(180 + 3600))  # repeat_interval: everything again,
    assert changes(repeat) == [("b", "firing", False), ("c", "firing", False)]  # but not news


def test_stream_key_is_the_notification_stream():
    dispatcher, _, clock = make(ACK_CONFIG)
    dispatcher.observe([alert("a")])
    for n in dispatcher.flush(clock.at(0)):
        assert n.stream == stream_key(n.group_key, n.receiver, n.integration, n.integration_index)
