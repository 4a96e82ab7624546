"""Incidents in a real store, paged through the notifier to a real Alertmanager and local
receivers that check each payload against the vendor's schema: grouping, deduplication,
silences, inhibition, acknowledgement and resolution, as a user would see them.

The notifier and the incident manager share a hand-driven clock; the receivers are real HTTP
servers.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from inferwatch.cli import main
from inferwatch.collectors.settings import AlertingSettings
from inferwatch.detectors.alerts.config import load_alerting_config
from inferwatch.detectors.alerts.matchers import parse_matchers
from inferwatch.detectors.alerts.model import NotificationQuery, Silence
from inferwatch.detectors.alerts.notifier import Notifier
from inferwatch.detectors.base import Finding
from inferwatch.detectors.incidents import IncidentManager
from inferwatch.detectors.sqlite_store import SQLiteStore
from tests.alerts.helpers import (
    SLACK_MESSAGE,
    LocalReceiver,
    Received,
    pagerduty_errors,
    schema_errors,
    signature_checker,
)

SECRET = "s3cret-webhook-key"


class Clock:
    """Starts an hour before the real now and is moved by hand, so it stays behind the
    Alertmanager's clock: a resolution it stamps is in the Alertmanager's past, as in life."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


ROUTES = """
route:
  receiver: team
  group_by: [detector]
  group_wait: 30s
  group_interval: 5m
  repeat_interval: 4h
  routes:
    - matchers: ['severity=~"high|critical"']
      receiver: pager
      continue: true
    - receiver: team      # and everything (high too) to the team: a child without matchers
receivers:
  - name: team
    webhook_configs:
      - url: {webhook}/hook
        secret: ${{WEBHOOK_SECRET}}
    slack_configs:
      - webhook_url: {slack}/services/T000/B000/XXXX
  - name: pager
    pagerduty_configs:
      - routing_key: ${{PD_KEY}}
        url: {pagerduty}/v2/enqueue
    alertmanager_configs:
      - url: {alertmanager}
inhibit_rules:
  - source_matchers: ['kind="integrity"', 'severity=~"high|critical"']
    target_matchers: ['severity=~"info|low|medium"']
    equal: [service]
"""


def _pagerduty_check(req: Received) -> list[str]:
    return pagerduty_errors(json.loads(req.body))


def _slack_check(req: Received) -> list[str]:
    return schema_errors(json.loads(req.body), SLACK_MESSAGE)


@pytest.fixture
def receivers() -> Iterator[dict[str, LocalReceiver]]:
    with LocalReceiver() as webhook, LocalReceiver() as slack, LocalReceiver() as pagerduty:
        webhook.checker = signature_checker(SECRET)
        slack.checker = _slack_check
        pagerduty.checker = _pagerduty_check
        pagerduty.default.status = 202
        yield {"webhook": webhook, "slack": slack, "pagerduty": pagerduty}


def finding(clock: Clock, detector: str, subject: str, *, kind: str = "abuse", severity: str = "high",
            service: str = "chat") -> Finding:
    return Finding(detector=detector, kind=kind, severity=severity, score=0.9,  # type: ignore[arg-type]
                   title=f"{detector} on {subject}", summary="seen in a test", subject=subject,
                   time=clock.now, service=service, model="demo-chat", event_ids=[f"ev-{subject}"])


def am_alerts(url: str, incident_ids: set[str]) -> dict[str, dict[str, Any]]:
    """What the real Alertmanager holds for these incidents, by incident id."""
    with urllib.request.urlopen(f"{url}/api/v2/alerts?active=true&silenced=true&inhibited=true"
                                f"&unprocessed=true", timeout=10) as response:
        held = json.load(response)
    return {a["labels"]["incident_id"]: a for a in held if a["labels"].get("incident_id") in incident_ids}


def test_incidents_page_grouped_deduplicated_silenced_inhibited_acknowledged_resolved(
    tmp_path: Path, receivers: dict[str, LocalReceiver], alertmanager_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("PD_KEY", "R0UT1NGKEY0123456789012345678901")
    routes = tmp_path / "alerts.yaml"
    routes.write_text(ROUTES.format(webhook=receivers["webhook"].url, slack=receivers["slack"].url,
                                    pagerduty=receivers["pagerduty"].url, alertmanager=alertmanager_url))
    clock = Clock()
    store = SQLiteStore(tmp_path / "store.db")
    manager = IncidentManager(store, clock=clock)
    notifier = Notifier(load_alerting_config(routes), store, AlertingSettings(), clock=clock)
    suffix = clock.now.strftime("%H%M%S%f")  # the Alertmanager is shared by the session's tests

    # A silence for one caller, made before its incident exists.
    store.save_silence(Silence(id="quiet-d", matchers=parse_matchers([f'subject="principal:d{suffix}"']),
                               starts_at=clock.now, ends_at=clock.now + timedelta(hours=2),
                               created_by="alice", comment="known load test", created_at=clock.now))
    filed = {i.subject.split(":")[1].rstrip("0123456789"): i for i in manager.apply([
        finding(clock, "prompt_injection", f"principal:a{suffix}"),
        finding(clock, "prompt_injection", f"principal:b{suffix}"),
        finding(clock, "request_rate", f"principal:c{suffix}", severity="low"),
        finding(clock, "request_rate", f"principal:d{suffix}", severity="low", service="search"),
        finding(clock, "request_rate", f"principal:e{suffix}", severity="low", service="search"),
        finding(clock, "output_leak", f"principal:f{suffix}", kind="integrity"),
    ])}
    ids = {name: incident.id for name, incident in filed.items()}

    notifier.tick()
    assert not any(r.received for r in receivers.values())        # group_wait: nothing yet
    clock.advance(31)
    notifier.tick()

    # The webhook (team): one signed notification per detector group; silenced d and
    # inhibited c (a low alert of service chat, where an integrity incident fires) left out.
    hooks = {b["groupLabels"]["detector"]: b for b in receivers["webhook"].bodies()}
    assert all(not r.errors for r in receivers["webhook"].received)
    assert set(hooks) == {"prompt_injection", "request_rate", "output_leak"}
    assert {a["labels"]["incident_id"] for a in hooks["prompt_injection"]["alerts"]} == {ids["a"], ids["b"]}
    assert [a["labels"]["incident_id"] for a in hooks["request_rate"]["alerts"]] == [ids["e"]]
    assert len(receivers["slack"].received) == 3
    # PagerDuty (pager, high only): a trigger per incident, deduplicated by incident id.
    events = receivers["pagerduty"].bodies()
    assert sorted((e["event_action"], e["dedup_key"]) for e in events) == sorted(
        ("trigger", ids[n]) for n in ("a", "b", "f"))
    held = am_alerts(alertmanager_url, set(ids.values()))
    assert set(held) == {ids["a"], ids["b"], ids["f"]}
    assert all(a["status"]["state"] in ("active", "unprocessed") for a in held.values())

    # Nothing changed: however often it ticks, nobody is paged again.
    counts = {name: len(r.received) for name, r in receivers.items()}
    for _ in range(3):
        clock.advance(60)
        notifier.tick()
    assert {name: len(r.received) for name, r in receivers.items()} == counts

    # Acknowledged from the CLI: PagerDuty and the webhook hear it at the next group interval.
    assert main(["incidents", "ack", ids["a"], "--actor", "alice", "--note", "on it",
                 "--store", str(tmp_path / "store.db")]) == 0
    clock.advance(300)
    notifier.tick()
    after = receivers["pagerduty"].bodies()[len(events):]
    assert [e["dedup_key"] for e in after if e["event_action"] == "acknowledge"] == [ids["a"]]
    # The group's other alert is sent along as it stands: a trigger PagerDuty folds into the
    # incident it already has (same dedup_key), not a new page.
    assert {e["dedup_key"] for e in after if e["event_action"] == "trigger"} <= {ids["b"]}
    latest = receivers["webhook"].bodies()[-1]
    acked = next(a for a in latest["alerts"] if a["labels"]["incident_id"] == ids["a"])
    assert (acked["incident_status"], acked["actor"], acked["note"]) == ("acknowledged", "alice", "on it")

    # Resolved: resolve events, and the Alertmanager's alert ends.
    manager.resolve(ids["b"], "bob", "caller blocked")
    clock.advance(300)
    notifier.tick()
    resolves = [e for e in receivers["pagerduty"].bodies() if e["event_action"] == "resolve"]
    assert [e["dedup_key"] for e in resolves] == [ids["b"]]
    held = am_alerts(alertmanager_url, set(ids.values()))
    assert ids["b"] not in held
    assert {ids["a"], ids["f"]} <= set(held)

    # Every page is in the log, delivered once; the Alertmanager payloads were valid.
    log = store.list_notifications(NotificationQuery(limit=-1))
    assert log
    assert all((n.status, n.attempts) == ("delivered", 1) for n in log)
    assert len({n.id for n in log}) == len(log)
    assert len(receivers["webhook"].received) == len(
        [n for n in log if n.integration == "webhook"])
    assert {n.integration for n in log} == {"webhook", "slack", "pagerduty", "alertmanager"}


def test_a_receiver_outage_is_retried_then_delivered_once(
    tmp_path: Path, receivers: dict[str, LocalReceiver], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WEBHOOK_SECRET", SECRET)
    routes = tmp_path / "alerts.yaml"
    routes.write_text(f"""
route: {{receiver: team, group_by: [detector], group_wait: 0s, group_interval: 1m}}
receivers:
  - name: team
    webhook_configs: [{{url: "{receivers['webhook'].url}/hook", secret: "${{WEBHOOK_SECRET}}"}}]
""")
    clock = Clock()
    store = SQLiteStore(tmp_path / "store.db")
    manager = IncidentManager(store, clock=clock)
    settings = AlertingSettings(retry_initial_s=2, retry_max_s=8)
    notifier = Notifier(load_alerting_config(routes), store, settings, clock=clock)
    hook = receivers["webhook"]
    hook.replies = [_reply(503), _reply(503), _reply(429, {"Retry-After": "7"})]

    manager.apply([finding(clock, "prompt_injection", "principal:a")])
    tick_at: Callable[[float], None] = lambda s: (clock.advance(s), notifier.tick())  # noqa: E731
    tick_at(0)
    assert len(hook.received) == 1                              # 503: retry in 2 s
    tick_at(1)
    assert len(hook.received) == 1
    tick_at(1)
    assert len(hook.received) == 2                              # 503: retry in 4 s
    tick_at(4)
    assert len(hook.received) == 3                              # 429: backoff 8 s (Retry-After 7 is shorter)
    tick_at(7)
    assert len(hook.received) == 3
    tick_at(1)
    assert len(hook.received) == 4                              # delivered
    for _ in range(5):
        tick_at(30)
    assert len(hook.received) == 4
    ids = {r.headers["X-Inferwatch-Notification-Id"] for r in hook.received}
    assert len(ids) == 1                                        # the same notification each time
    (sent,) = store.list_notifications(NotificationQuery())
    assert (sent.status, sent.attempts, sent.last_error) == ("delivered", 4, None)


def _reply(status: int, headers: dict[str, str] | None = None) -> Any:
    from tests.alerts.helpers import Reply

    return Reply(status, b"busy", headers or {})
