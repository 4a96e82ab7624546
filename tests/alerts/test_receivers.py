"""The senders against local stand-ins of their receivers.

HTTP integrations post to a local server (tests/alerts/helpers.py: LocalReceiver) that checks
each payload against the vendor's documented schema and answers 400 when it does not conform,
as the vendors do; it can also answer 429/500/… to check how failures are classified. Email goes
to a real SMTP server on loopback (aiosmtpd), with STARTTLS on a self-signed certificate and
SMTP AUTH.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import hashlib
import hmac
import json
import re
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from pydantic import SecretStr

from inferwatch.detectors.alerts.integrations import (
    AlertmanagerConfig,
    EmailConfig,
    PagerDutyConfig,
    SlackConfig,
    WebhookConfig,
)
from inferwatch.detectors.alerts.receivers import (
    AlertmanagerSender,
    DeliveryError,
    EmailSender,
    PagerDutySender,
    SlackSender,
    WebhookSender,
    build_sender,
    notification_title,
    parse_retry_after,
    parse_smarthost,
    render_alertmanager_alerts,
    render_pagerduty_event,
    sign_webhook,
)
from tests.alerts.helpers import (
    ALERTMANAGER_POSTABLE_ALERTS,
    SLACK_MESSAGE,
    T0,
    WEBHOOK_PAYLOAD,
    LocalReceiver,
    Reply,
    fixed_clock,
    free_port,
    make_alert,
    make_notification,
    pagerduty_errors,
    schema_errors,
    signature_checker,
    webhook_signature_errors,
)

NOW = T0 + timedelta(minutes=7)
ROUTING_KEY = "R0UT1NGKEY0123456789abcdefABCDEF"  # 32 characters, as PagerDuty's integration keys
SLACK_TOKEN = "T000/B000/XXXXsecretXXXX"


def _two_firing() -> list[Any]:
    return [
        make_alert("inc-1", severity="critical", subject="principal:7f3a"),
        make_alert(
            "inc-2",
            severity="high",
            subject="principal:0b1c",
            incident_status="acknowledged",
            actor="alice",
            note="looking into it",
        ),
    ]


def _schema_checker(schema: dict[str, Any]) -> Any:
    return lambda req: schema_errors(req.json(), schema)


def _delivery_error(send: Any) -> DeliveryError:
    with pytest.raises(DeliveryError) as info:
        send()
    return info.value


# --------------------------------------------------------------------------- the schema checker


@pytest.mark.parametrize(
    ("payload", "schema", "fragment"),
    [
        ([{"annotations": {}}], ALERTMANAGER_POSTABLE_ALERTS, "missing required 'labels'"),
        ([{"labels": {"team.name": "x"}}], ALERTMANAGER_POSTABLE_ALERTS, "does not match"),
        ([{"labels": {"a": "b"}, "endsAt": "tomorrow"}], ALERTMANAGER_POSTABLE_ALERTS, "date-time"),
        ({"text": ""}, SLACK_MESSAGE, "shorter than 1"),
        ({"text": "x", "attachments": []}, SLACK_MESSAGE, "unexpected property 'attachments'"),
        ({"version": "4"}, WEBHOOK_PAYLOAD, "missing required 'alerts'"),
    ],
)
def test_schema_checker_rejects(payload: Any, schema: dict[str, Any], fragment: str) -> None:
    assert any(fragment in e for e in schema_errors(payload, schema))


def test_pagerduty_schemas_reject_what_pagerduty_rejects() -> None:
    good = {"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": "inc-1"}
    assert pagerduty_errors(good) == []
    assert pagerduty_errors({**good, "dedup_key": None})
    assert pagerduty_errors({**good, "event_action": "trigger"})  # a trigger needs a payload
    long_summary = {"summary": "x" * 1025, "source": "s", "severity": "critical"}
    assert pagerduty_errors({**good, "event_action": "trigger", "payload": long_summary})
    bad_severity = {"summary": "x", "source": "s", "severity": "high"}
    assert any(
        "severity" in e
        for e in pagerduty_errors({**good, "event_action": "trigger", "payload": bad_severity})
    )


# --------------------------------------------------------------------------- shared behaviour


def test_build_sender_picks_the_sender_of_each_kind() -> None:
    configs = [
        (AlertmanagerConfig(url="http://127.0.0.1:9093"), AlertmanagerSender),
        (PagerDutyConfig(routing_key=SecretStr(ROUTING_KEY)), PagerDutySender),
        (SlackConfig(webhook_url=SecretStr(f"https://hooks.slack.com/services/{SLACK_TOKEN}")), SlackSender),
        (WebhookConfig(url="http://127.0.0.1:1/hook"), WebhookSender),
        (
            EmailConfig.model_validate(
                {"to": ["a@example.org"], "from": "b@example.org", "smarthost": "x:25"}
            ),
            EmailSender,
        ),
    ]
    for config, cls in configs:
        sender = build_sender(config, receiver="oncall")
        assert isinstance(sender, cls)
        assert sender.kind in ("alertmanager", "pagerduty", "slack", "webhook", "email")


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        (
            AlertmanagerConfig(url="http://am:9093", basic_auth_username="u", bearer_token=SecretStr("t")),
            "not both",
        ),
        (AlertmanagerConfig(url="ftp://am:9093"), "http(s)"),
        (
            EmailConfig.model_validate({"to": ["a@x.org"], "from": "b@x.org", "smarthost": "mail.x.org"}),
            "host:port",
        ),
        (EmailConfig.model_validate({"to": [], "from": "b@x.org", "smarthost": "mail.x.org:25"}), "'to'"),
        (PagerDutyConfig(routing_key=SecretStr("")), "routing_key is empty"),
        (PagerDutyConfig(routing_key=SecretStr("   ")), "routing_key is empty"),
        (PagerDutyConfig(routing_key=SecretStr(ROUTING_KEY + "\n")), "routing_key has leading or trailing"),
        (SlackConfig(webhook_url=SecretStr("")), "webhook_url is empty"),
        (SlackConfig(webhook_url=SecretStr("https://hooks.slack.com/x\n")), "webhook_url has leading"),
        (WebhookConfig(url="https://hooks.example.org/x", secret=SecretStr("")), "secret is empty"),
        (AlertmanagerConfig(url="http://am:9093", bearer_token=SecretStr("")), "bearer_token is empty"),
        (
            EmailConfig.model_validate({"to": ["a@x.org", " "], "from": "b@x.org", "smarthost": "m:25"}),
            "an empty one",
        ),
        (EmailConfig.model_validate({"to": ["a@x.org"], "from": "", "smarthost": "m:25"}), "'from' is empty"),
        (
            EmailConfig.model_validate(
                {"to": ["a@x.org\r\nBcc: all@x.org"], "from": "b@x.org", "smarthost": "m:25"}
            ),
            "'to' contains a line break",
        ),
        (
            EmailConfig.model_validate(
                {"to": ["a@x.org"], "from": "b@x.org", "smarthost": "m:25", "hello": "h\r\nRSET"}
            ),
            "'hello' contains a line break",
        ),
    ],
)
def test_configurations_that_cannot_work_fail_when_built(config: Any, fragment: str) -> None:
    with pytest.raises(ValueError, match="receiver 'pager'") as info:
        build_sender(config, receiver="pager")
    assert fragment in str(info.value)
    for secret in (ROUTING_KEY, "hooks.slack.com/x"):
        assert secret not in str(info.value)


@pytest.mark.parametrize(
    "config",
    [
        SlackConfig(webhook_url=SecretStr(f"http://127.0.0.1:9/services/{SLACK_TOKEN} x")),
        SlackConfig(webhook_url=SecretStr(f"http://127.0.0.1:9/services/{SLACK_TOKEN}\x01")),
        WebhookConfig(url=f"http://127.0.0.1:9/hooks/{SLACK_TOKEN} x?token=abc"),
        PagerDutyConfig(routing_key=SecretStr(ROUTING_KEY), url=f"http://127.0.0.1:9/{SLACK_TOKEN}\tx"),
    ],
)
def test_a_url_with_a_space_or_control_character_fails_when_built_without_showing_it(config: Any) -> None:
    """http.client refuses such a URL on every attempt, quoting its path (a Slack webhook's
    token) in the error that was logged and kept in the notification log: refused at load."""
    with pytest.raises(ValueError, match="receiver 'pager'") as info:
        build_sender(config, receiver="pager")
    assert "space or a control character" in str(info.value)
    assert SLACK_TOKEN not in str(info.value)


def test_building_senders_touches_no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start-up and ``alerts check`` build every sender to validate the routing file, offline:
    building one resolves no name and opens no connection."""

    def no_network(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"building a sender reached for the network: {args}")

    for name in ("getaddrinfo", "create_connection"):
        monkeypatch.setattr(socket, name, no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    configs: list[Any] = [
        AlertmanagerConfig(url="http://alertmanager.invalid:9093"),
        PagerDutyConfig(routing_key=SecretStr(ROUTING_KEY), url="https://pagerduty.invalid/v2/enqueue"),
        SlackConfig(webhook_url=SecretStr(f"https://hooks.invalid/services/{SLACK_TOKEN}")),
        WebhookConfig(url="https://hooks.invalid/x", secret=SecretStr("hush")),
        EmailConfig.model_validate(
            {"to": ["a@x.org"], "from": "b@x.org", "smarthost": "smtp.invalid:587", "require_tls": True}
        ),
    ]
    kinds = [build_sender(config, receiver="oncall").kind for config in configs]
    assert kinds == ["alertmanager", "pagerduty", "slack", "webhook", "email"]
    with pytest.raises(AssertionError, match="reached for the network"):  # the guard does guard
        build_sender(configs[3], receiver="oncall").send(make_notification([make_alert()]))


def test_titles_follow_alertmanagers_default_title() -> None:
    firing = make_notification(_two_firing())
    assert notification_title(firing, firing.alerts) == "[FIRING:2] prompt_injection service=chat"
    assert (
        notification_title(firing, firing.alerts, parenthesized=True)
        == "[FIRING:2] prompt_injection (service=chat)"
    )
    resolved = make_notification([make_alert(state="resolved", incident_status="resolved")])
    assert notification_title(resolved, resolved.alerts) == "[RESOLVED] prompt_injection service=chat"
    ungrouped = make_notification(_two_firing(), group_labels={})
    assert (
        notification_title(ungrouped, ungrouped.alerts)
        == "[FIRING:2] prompt_injection model=gpt-x service=chat"
    )


def test_retry_after_takes_seconds_or_an_http_date() -> None:
    assert parse_retry_after("120", NOW) == 120.0
    assert parse_retry_after(format_datetime(NOW + timedelta(seconds=90), usegmt=True), NOW) == 90.0
    assert parse_retry_after(format_datetime(NOW - timedelta(hours=1), usegmt=True), NOW) == 0.0
    assert parse_retry_after("soon", NOW) is None
    assert parse_retry_after(None, NOW) is None


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        (500, True),
        (502, True),
        (503, True),
        (408, True),
        (429, True),
        (400, False),
        (401, False),
        (404, False),
    ],
)
def test_http_status_decides_whether_to_retry(receiver: LocalReceiver, status: int, retryable: bool) -> None:
    receiver.default = Reply(status, b'{"error": "nope"}')
    sender = WebhookSender(WebhookConfig(url=f"{receiver.url}/hook"), receiver="oncall")
    error = _delivery_error(lambda: sender.send(make_notification(_two_firing())))
    assert error.retryable is retryable
    assert str(error).startswith("receiver 'oncall' (webhook): ")
    assert f"HTTP {status}" in str(error)
    assert '{"error": "nope"}' in str(error)


def test_429_carries_retry_after(receiver: LocalReceiver) -> None:
    receiver.default = Reply(429, b"slow down", {"Retry-After": "7"})
    sender = AlertmanagerSender(AlertmanagerConfig(url=receiver.url), receiver="am", clock=fixed_clock(NOW))
    error = _delivery_error(lambda: sender.send(make_notification(_two_firing())))
    assert error.retryable
    assert error.retry_after_s == 7.0


def test_503_retry_after_as_a_date(receiver: LocalReceiver) -> None:
    later = format_datetime(NOW + timedelta(seconds=30), usegmt=True)
    receiver.default = Reply(503, b"", {"Retry-After": later})
    sender = WebhookSender(WebhookConfig(url=receiver.url), receiver="hook", clock=fixed_clock(NOW))
    error = _delivery_error(lambda: sender.send(make_notification(_two_firing())))
    assert error.retryable
    assert error.retry_after_s == 30.0


def test_an_error_body_is_cut_short(receiver: LocalReceiver) -> None:
    receiver.default = Reply(400, b"E" * 5000)
    sender = WebhookSender(WebhookConfig(url=receiver.url), receiver="hook")
    error = _delivery_error(lambda: sender.send(make_notification(_two_firing())))
    assert not error.retryable
    assert 250 <= str(error).count("E") <= 310


def test_redirects_are_not_followed(receiver: LocalReceiver) -> None:
    receiver.default = Reply(302, b"", {"Location": f"{receiver.url}/elsewhere"})
    sender = WebhookSender(WebhookConfig(url=receiver.url), receiver="hook")
    error = _delivery_error(lambda: sender.send(make_notification(_two_firing())))
    assert not error.retryable
    assert "redirects are not followed" in str(error)
    assert [r.path for r in receiver.received] == ["/"]


def test_connection_refused_is_retryable() -> None:
    sender = WebhookSender(WebhookConfig(url=f"http://127.0.0.1:{free_port()}/hook"), receiver="hook")
    error = _delivery_error(lambda: sender.send(make_notification(_two_firing())))
    assert error.retryable
    assert "cannot reach http://127.0.0.1:" in str(error)


def test_a_receiver_that_does_not_answer_times_out_retryably(receiver: LocalReceiver) -> None:
    receiver.hold.set()
    sender = WebhookSender(WebhookConfig(url=receiver.url, timeout_s=0.3), receiver="hook")
    error = _delivery_error(lambda: sender.send(make_notification(_two_firing())))
    assert error.retryable
    assert "timed out" in str(error)


# --------------------------------------------------------------------------- Alertmanager


def test_alertmanager_posts_postable_alerts(receiver: LocalReceiver) -> None:
    receiver.checker = _schema_checker(ALERTMANAGER_POSTABLE_ALERTS)
    config = AlertmanagerConfig(url=receiver.url + "/", ends_at_after_s=3600)
    sender = AlertmanagerSender(config, receiver="am", clock=fixed_clock(NOW))
    resolved = make_alert("inc-3", state="resolved", incident_status="resolved", actor="bob", note="fixed")
    sender.send(make_notification([*_two_firing(), resolved], integration="alertmanager"))

    [request] = receiver.received
    assert request.errors == []
    assert request.path == "/api/v2/alerts"
    assert request.headers["Content-Type"] == "application/json"
    alerts = {a["labels"]["incident_id"]: a for a in request.json()}
    assert alerts["inc-1"]["labels"] == make_alert("inc-1", severity="critical").labels
    assert alerts["inc-1"]["startsAt"] == "2026-03-01T12:00:00.000Z"
    assert alerts["inc-1"]["endsAt"] == "2026-03-01T13:07:00.000Z"  # now + 1 h
    assert alerts["inc-3"]["endsAt"] == "2026-03-01T12:30:00.000Z"  # the alert's own end
    assert alerts["inc-2"]["annotations"] == {
        "title": "Prompt injection attempts",
        "summary": "Prompt injection attempts from principal:0b1c",
        "incident_status": "acknowledged",
        "actor": "alice",
        "note": "looking into it",
    }
    assert alerts["inc-3"]["annotations"]["actor"] == "bob"


def test_alertmanager_reposts_unchanged_firing_alerts(receiver: LocalReceiver) -> None:
    """Re-posting is what renews their endsAt: an alert left out would lapse in Alertmanager."""
    sender = AlertmanagerSender(AlertmanagerConfig(url=receiver.url), receiver="am", clock=fixed_clock(NOW))
    alerts = [make_alert("inc-1", changed=False), make_alert("inc-2")]
    sender.send(make_notification(alerts, integration="alertmanager"))
    posted = [a for a in receiver.bodies()[0] if "superseded_by" not in a["annotations"]]
    assert [a["labels"]["incident_id"] for a in posted] == ["inc-1", "inc-2"]


def test_alertmanager_label_names_are_made_valid() -> None:
    alert = make_alert(extra_labels={"team.name": "ml-platform", "9lives": "x", "empty": ""})
    *_, posted = render_alertmanager_alerts([alert], now=NOW, ends_at_after_s=60)
    assert posted["labels"]["team_name"] == "ml-platform"
    assert posted["labels"]["_9lives"] == "x"
    assert "empty" not in posted["labels"]
    assert schema_errors([posted], ALERTMANAGER_POSTABLE_ALERTS) == []


@pytest.mark.parametrize(
    ("config", "header"),
    [
        (
            {"basic_auth_username": "am", "basic_auth_password": SecretStr("pw")},
            "Basic YW06cHc=",  # base64("am:pw")
        ),
        ({"bearer_token": SecretStr("tok")}, "Bearer tok"),
    ],
)
def test_alertmanager_authenticates(receiver: LocalReceiver, config: dict[str, Any], header: str) -> None:
    sender = AlertmanagerSender(AlertmanagerConfig(url=receiver.url, **config), receiver="am")
    sender.send(make_notification(_two_firing()))
    assert receiver.received[0].headers["Authorization"] == header


def test_alertmanager_error_hides_credentials(receiver: LocalReceiver) -> None:
    receiver.default = Reply(401, b"bad token tok-secret-1")
    config = AlertmanagerConfig(url=receiver.url, bearer_token=SecretStr("tok-secret-1"))
    error = _delivery_error(
        lambda: AlertmanagerSender(config, receiver="am").send(make_notification(_two_firing()))
    )
    assert "tok-secret-1" not in str(error)
    assert "HTTP 401" in str(error)
    assert "receiver 'am' refused the credentials: check its secret, token or key" in str(error)


def test_an_escalated_alert_resolves_its_copies_at_lower_severities() -> None:
    """Alertmanager tells alerts apart by labels, severity among them: without these the alert
    of an incident's earlier severity stayed firing beside the new one until its endsAt."""
    escalated = make_alert("inc-1", severity="high")
    posted = render_alertmanager_alerts([escalated, make_alert("inc-2", changed=False)], now=NOW,
                                        ends_at_after_s=3600)
    assert [(a["labels"]["incident_id"], a["labels"]["severity"], a["endsAt"]) for a in posted] == [
        ("inc-1", "info", "2026-03-01T12:07:00.000Z"), ("inc-1", "low", "2026-03-01T12:07:00.000Z"),
        ("inc-1", "medium", "2026-03-01T12:07:00.000Z"), ("inc-1", "high", "2026-03-01T13:07:00.000Z"),
        ("inc-2", "high", "2026-03-01T13:07:00.000Z")]  # unchanged: nothing to supersede
    assert posted[0]["annotations"] == {"superseded_by": "high"}
    assert {k: v for k, v in posted[0]["labels"].items() if k != "severity"} == {
        k: v for k, v in escalated.labels.items() if k != "severity"}
    assert schema_errors(posted, ALERTMANAGER_POSTABLE_ALERTS) == []


def test_send_resolved_false_leaves_resolved_alerts_out(receiver: LocalReceiver) -> None:
    config = AlertmanagerConfig(url=receiver.url, send_resolved=False)
    sender = AlertmanagerSender(config, receiver="am")
    resolved = make_alert("inc-3", state="resolved", incident_status="resolved")
    sender.send(make_notification([resolved]))
    assert receiver.received == []
    sender.send(make_notification([make_alert("inc-1"), resolved]))
    assert [a["labels"]["incident_id"] for a in receiver.received[0].json()] == ["inc-1"]


# --------------------------------------------------------------------------- PagerDuty


def _pagerduty(receiver: LocalReceiver, **config: Any) -> PagerDutySender:
    receiver.checker = lambda req: pagerduty_errors(req.json())
    receiver.default = Reply(202, b'{"status":"success","message":"Event processed"}')
    settings = PagerDutyConfig(routing_key=SecretStr(ROUTING_KEY), url=f"{receiver.url}/v2/enqueue", **config)
    return PagerDutySender(settings, receiver="pager", clock=fixed_clock(NOW))


def test_pagerduty_triggers_with_the_incident_as_dedup_key(receiver: LocalReceiver) -> None:
    sender = _pagerduty(receiver, component="chat-api", client_url="https://console.example.org/incidents")
    sender.send(make_notification([make_alert("inc-1", severity="critical")], integration="pagerduty"))
    [request] = receiver.received
    assert request.errors == []
    assert request.path == "/v2/enqueue"
    event = request.json()
    assert event["routing_key"] == ROUTING_KEY
    assert event["event_action"] == "trigger"
    assert event["dedup_key"] == "inc-1"
    payload = event["payload"]
    assert payload["summary"] == "Prompt injection attempts (subject=principal:7f3a, service=chat)"
    assert payload["source"] == "inferwatch"
    assert payload["severity"] == "critical"
    assert payload["timestamp"] == "2026-03-01T12:00:00.000Z"
    assert (payload["component"], payload["group"], payload["class"]) == ("chat-api", "chat", "abuse")
    details = payload["custom_details"]
    assert details["labels"]["incident_id"] == "inc-1"
    assert (details["count"], details["score"], details["incident_status"]) == (4, 0.93, "open")
    assert event["links"] == [{"href": "https://console.example.org/incidents", "text": "inferwatch"}]


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [("critical", "critical"), ("high", "error"), ("medium", "warning"), ("low", "info"), ("info", "info")],
)
def test_pagerduty_severity_mapping(ours: str, theirs: str) -> None:
    config = PagerDutyConfig(routing_key=SecretStr(ROUTING_KEY))
    event = render_pagerduty_event(make_alert(severity=ours), config, routing_key=ROUTING_KEY)
    assert event["payload"]["severity"] == theirs
    assert pagerduty_errors(event) == []


def test_pagerduty_summary_is_cut_to_1024_characters() -> None:
    config = PagerDutyConfig(routing_key=SecretStr(ROUTING_KEY))
    event = render_pagerduty_event(make_alert(title="T" * 3000), config, routing_key=ROUTING_KEY)
    assert len(event["payload"]["summary"]) == 1024
    assert pagerduty_errors(event) == []


def test_pagerduty_acknowledges_and_resolves(receiver: LocalReceiver) -> None:
    sender = _pagerduty(receiver)
    acknowledged = make_alert("inc-2", incident_status="acknowledged", actor="alice", note="on it")
    resolved = make_alert("inc-3", state="resolved", incident_status="resolved", actor="bob")
    sender.send(make_notification([make_alert("inc-1"), acknowledged, resolved], integration="pagerduty"))
    assert [r.errors for r in receiver.received] == [[], [], []]
    events = receiver.bodies()
    assert [(e["event_action"], e["dedup_key"]) for e in events] == [
        ("trigger", "inc-1"),
        ("acknowledge", "inc-2"),
        ("resolve", "inc-3"),
    ]


def test_pagerduty_sends_only_the_alerts_that_changed(receiver: LocalReceiver) -> None:
    """A new incident in a group of 200 open ones is one event, not 201."""
    sender = _pagerduty(receiver)
    carried = [make_alert(f"inc-{i}", changed=False) for i in range(200)]
    new = make_alert("inc-new", severity="critical")
    acknowledged = make_alert("inc-ack", incident_status="acknowledged", actor="alice")
    resolved = make_alert("inc-done", state="resolved", incident_status="resolved")
    sender.send(make_notification([*carried, new, acknowledged, resolved], integration="pagerduty"))
    assert [r.errors for r in receiver.received] == [[], [], []]
    assert [(e["event_action"], e["dedup_key"]) for e in receiver.bodies()] == [
        ("trigger", "inc-new"),
        ("acknowledge", "inc-ack"),
        ("resolve", "inc-done"),
    ]


def test_pagerduty_with_nothing_changed_sends_nothing(receiver: LocalReceiver) -> None:
    sender = _pagerduty(receiver)
    receiver.default = Reply(500, b"no request was expected")
    sender.send(make_notification([make_alert("inc-1", changed=False)], integration="pagerduty"))
    assert receiver.received == []


def test_pagerduty_without_send_acknowledged_keeps_triggering(receiver: LocalReceiver) -> None:
    sender = _pagerduty(receiver, send_acknowledged=False)
    acknowledged = make_alert("inc-2", incident_status="acknowledged", actor="alice", note="on it")
    sender.send(make_notification([acknowledged], integration="pagerduty"))
    [event] = receiver.bodies()
    assert event["event_action"] == "trigger"
    assert event["payload"]["custom_details"]["incident_status"] == "acknowledged"
    assert (event["payload"]["custom_details"]["actor"], event["payload"]["custom_details"]["note"]) == (
        "alice",
        "on it",
    )


def test_pagerduty_429_is_retryable(receiver: LocalReceiver) -> None:
    sender = _pagerduty(receiver)
    receiver.replies = [Reply(429, b'{"status":"throttle event"}')]
    error = _delivery_error(lambda: sender.send(make_notification([make_alert()])))
    assert error.retryable
    assert "HTTP 429" in str(error)


def test_pagerduty_rejection_never_shows_the_routing_key(receiver: LocalReceiver) -> None:
    sender = _pagerduty(receiver)
    receiver.replies = [
        Reply(400, json.dumps({"status": "invalid event", "routing_key": ROUTING_KEY}).encode())
    ]
    error = _delivery_error(lambda: sender.send(make_notification([make_alert()])))
    assert not error.retryable
    assert ROUTING_KEY not in str(error)
    assert "invalid event" in str(error)


def test_pagerduty_names_the_event_that_failed(receiver: LocalReceiver) -> None:
    sender = _pagerduty(receiver)
    receiver.replies = [Reply(202, b"{}"), Reply(500, b"oops")]
    error = _delivery_error(lambda: sender.send(make_notification(_two_firing())))
    assert error.retryable
    assert "event for incident inc-2 (1 of 2 sent before it)" in str(error)


# --------------------------------------------------------------------------- Slack


def _slack(receiver: LocalReceiver, **config: Any) -> SlackSender:
    receiver.checker = _schema_checker(SLACK_MESSAGE)
    url = SecretStr(f"{receiver.url}/services/{SLACK_TOKEN}")
    return SlackSender(SlackConfig(webhook_url=url, **config), receiver="chat-ops")


def test_slack_message_lists_the_alerts(receiver: LocalReceiver) -> None:
    sender = _slack(receiver, channel="#oncall")
    sender.send(make_notification(_two_firing(), integration="slack"))
    [request] = receiver.received
    assert request.errors == []
    assert request.path == f"/services/{SLACK_TOKEN}"
    message = request.json()
    assert (message["channel"], message["username"]) == ("#oncall", "inferwatch")
    lines = message["text"].splitlines()
    assert lines[0] == "*[FIRING:2] prompt_injection service=chat*"
    assert lines[1] == "• *critical* `principal:7f3a` — Prompt injection attempts"
    assert (
        lines[2]
        == "• *high* `principal:0b1c` — Prompt injection attempts _(acknowledged by alice: looking into it)_"
    )


def test_slack_resolved_and_escaped(receiver: LocalReceiver) -> None:
    sender = _slack(receiver)
    alert = make_alert(state="resolved", incident_status="resolved", title="<script> & co")
    sender.send(make_notification([alert]))
    text = receiver.bodies()[0]["text"]
    assert text.splitlines()[0] == "*[RESOLVED] prompt_injection service=chat*"
    assert "&lt;script&gt; &amp; co" in text
    assert "~resolved~" in text


def test_slack_long_groups_are_summarised(receiver: LocalReceiver) -> None:
    sender = _slack(receiver)
    sender.send(make_notification([make_alert(f"inc-{i}") for i in range(25)]))
    lines = receiver.bodies()[0]["text"].splitlines()
    assert len(lines) == 1 + 20 + 1
    assert lines[-1] == "… and 5 more"


def test_slack_errors_never_show_the_webhook_url(receiver: LocalReceiver) -> None:
    sender = _slack(receiver)
    receiver.replies = [Reply(404, b"no_service")]
    error = _delivery_error(lambda: sender.send(make_notification(_two_firing())))
    assert not error.retryable
    assert "no_service" in str(error)
    assert SLACK_TOKEN not in str(error)
    assert "/services" not in str(error)


# --------------------------------------------------------------------------- webhook


def test_webhook_payload_headers_and_signature(receiver: LocalReceiver) -> None:
    receiver.checker = signature_checker("hush")
    config = WebhookConfig(url=f"{receiver.url}/hook?token=abc", secret=SecretStr("hush"))
    notification = make_notification(_two_firing(), integration="webhook", seq=3)
    WebhookSender(config, receiver="oncall", clock=fixed_clock(NOW)).send(notification)

    [request] = receiver.received
    assert request.errors == []
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Inferwatch-Notification-Id"] == notification.id
    timestamp = str(int(NOW.timestamp()))
    assert request.headers["X-Inferwatch-Timestamp"] == timestamp
    signed = f"{timestamp}.".encode() + request.body
    expected = "sha256=" + hmac.new(b"hush", signed, hashlib.sha256).hexdigest()
    assert request.headers["X-Inferwatch-Signature"] == expected
    body = request.json()
    assert (body["notification_id"], body["seq"], body["receiver"]) == (notification.id, 3, "oncall")
    assert body["status"] == "firing"
    assert body["groupLabels"] == {"alertname": "prompt_injection", "service": "chat"}
    assert body["commonLabels"]["service"] == "chat"
    assert "incident_id" not in body["commonLabels"]
    assert body["groupKey"] == notification.group_key
    second = body["alerts"][1]
    assert (second["incident_status"], second["actor"], second["note"]) == (
        "acknowledged",
        "alice",
        "looking into it",
    )
    assert second["endsAt"] == "0001-01-01T00:00:00Z"


def test_webhook_signature_covers_the_timestamp(receiver: LocalReceiver) -> None:
    """A captured request replayed with a fresh timestamp fails verification; replayed as it was,
    it is refused as too old."""
    receiver.checker = signature_checker("hush", now=fixed_clock(NOW))
    config = WebhookConfig(url=receiver.url, secret=SecretStr("hush"))
    WebhookSender(config, receiver="oncall", clock=fixed_clock(NOW)).send(make_notification(_two_firing()))
    [captured] = receiver.received
    assert captured.errors == []

    later = NOW + timedelta(hours=1)
    fresh = {**captured.headers, "X-Inferwatch-Timestamp": str(int(later.timestamp()))}
    assert webhook_signature_errors("hush", fresh, captured.body, now=later) == [
        "X-Inferwatch-Signature does not match the timestamp and body"
    ]
    assert webhook_signature_errors("hush", captured.headers, captured.body, now=later) == [
        f"X-Inferwatch-Timestamp {int(NOW.timestamp())} is more than 300 s from now"
    ]
    assert sign_webhook("1", captured.body, "hush") != sign_webhook("2", captured.body, "hush")


def _documented_verifier() -> Callable[..., bool]:
    """The ``verify_inferwatch`` function that docs/alerting.md gives receivers."""
    text = (Path(__file__).parents[2] / "docs" / "alerting.md").read_text()
    section = text[text.index("**Verifying a webhook.**") :]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, "docs/alerting.md: no Python block after 'Verifying a webhook'"
    namespace: dict[str, Any] = {}
    exec(compile(match.group(1), "docs/alerting.md", "exec"), namespace)  # our own documentation
    verify: Callable[..., bool] = namespace["verify_inferwatch"]
    return verify


def test_the_documented_verification_works(receiver: LocalReceiver) -> None:
    verify = _documented_verifier()
    config = WebhookConfig(url=receiver.url, secret=SecretStr("hush"))
    WebhookSender(config, receiver="oncall").send(make_notification(_two_firing()))  # the real clock
    [request] = receiver.received
    assert verify(b"hush", request.headers, request.body)
    assert not verify(b"other", request.headers, request.body)
    assert not verify(b"hush", request.headers, request.body.replace(b"firing", b"resolved"))
    stamp = int(request.headers["X-Inferwatch-Timestamp"])
    assert not verify(b"hush", {**request.headers, "X-Inferwatch-Timestamp": str(stamp + 1)}, request.body)
    assert not verify(b"hush", {**request.headers, "X-Inferwatch-Signature": "sha256=\u00e9"}, request.body)
    assert not verify(b"hush", {**request.headers, "X-Inferwatch-Timestamp": "\u00b2"}, request.body)
    assert not verify(b"hush", {}, request.body)

    stale = datetime.now(UTC) - timedelta(minutes=6)
    WebhookSender(config, receiver="oncall", clock=lambda: stale).send(make_notification(_two_firing()))
    old = receiver.received[1]
    assert not verify(b"hush", old.headers, old.body)
    assert verify(b"hush", old.headers, old.body, max_age_s=600)


def test_webhook_with_the_wrong_secret_is_rejected(receiver: LocalReceiver) -> None:
    receiver.checker = signature_checker("the-receivers-secret")
    config = WebhookConfig(url=receiver.url, secret=SecretStr("another-secret"))
    error = _delivery_error(
        lambda: WebhookSender(config, receiver="oncall").send(make_notification(_two_firing()))
    )
    assert not error.retryable
    assert "does not match" in str(error)
    assert "another-secret" not in str(error)


def test_webhook_without_secret_is_unsigned(receiver: LocalReceiver) -> None:
    receiver.checker = signature_checker(None)
    WebhookSender(WebhookConfig(url=receiver.url), receiver="oncall").send(make_notification(_two_firing()))
    [request] = receiver.received
    assert request.errors == []
    assert "X-Inferwatch-Signature" not in request.headers
    assert "X-Inferwatch-Timestamp" not in request.headers
    assert request.headers["X-Inferwatch-Notification-Id"]


def test_webhook_max_alerts_truncates(receiver: LocalReceiver) -> None:
    receiver.checker = signature_checker(None)
    alerts = [make_alert(f"inc-{i}") for i in range(3)]
    WebhookSender(WebhookConfig(url=receiver.url, max_alerts=1), receiver="oncall").send(
        make_notification(alerts)
    )
    body = receiver.bodies()[0]
    assert [a["incident_id"] for a in body["alerts"]] == ["inc-0"]
    assert body["truncatedAlerts"] == 2


def test_webhook_resolved_group(receiver: LocalReceiver) -> None:
    receiver.checker = signature_checker(None)
    alert = make_alert(state="resolved", incident_status="resolved", actor="bob", note="false positive")
    WebhookSender(WebhookConfig(url=receiver.url), receiver="oncall").send(make_notification([alert]))
    body = receiver.bodies()[0]
    assert body["status"] == "resolved"
    assert body["alerts"][0]["endsAt"] == "2026-03-01T12:30:00.000Z"
    assert body["alerts"][0]["note"] == "false positive"


def test_a_repeat_carries_the_same_notification_id(receiver: LocalReceiver) -> None:
    receiver.checker = signature_checker(None)
    notification = make_notification(_two_firing())
    sender = WebhookSender(WebhookConfig(url=receiver.url), receiver="oncall")
    sender.send(notification)
    sender.send(notification)
    ids = [r.headers["X-Inferwatch-Notification-Id"] for r in receiver.received]
    assert ids == [notification.id, notification.id]
    assert receiver.received[0].body == receiver.received[1].body


# --------------------------------------------------------------------------- email (real SMTP)


class Inbox:
    """An aiosmtpd handler that keeps what it accepts and refuses recipients it is told to."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], EmailMessage, bool, bool]] = []
        self.refuse: dict[str, str] = {}
        self.logins: list[tuple[bytes, bytes]] = []

    async def handle_RCPT(  # noqa: N802 (aiosmtpd's hook name)
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802 (aiosmtpd's hook name)
        self, server: Any, session: Any, envelope: Any
    ) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(
            (
                envelope.mail_from,
                list(envelope.rcpt_tos),
                message,
                session.ssl is not None,
                session.authenticated,
            )
        )
        return "250 Message accepted for delivery"

    def authenticator(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        self.logins.append((data.login, data.password))
        return AuthResult(success=(data.login, data.password) == (b"alerts", b"s3cret-pass"), handled=False)


@contextlib.contextmanager
def smtp_server(**params: Any) -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    if params.pop("auth", False):
        params["authenticator"] = inbox.authenticator
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, **params)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    try:
        _certificate_with_cryptography(cert, key)
    except ImportError:
        openssl = shutil.which("openssl")
        if openssl is None:
            pytest.fail("the STARTTLS tests need the cryptography package or the openssl command")
        subprocess.run(
            [
                openssl,
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=IP:127.0.0.1,DNS:localhost",
                "-keyout",
                str(key),
                "-out",
                str(cert),
            ],
            check=True,
            capture_output=True,
        )
    return cert, key


def _certificate_with_cryptography(cert: Path, key: Path) -> None:
    import ipaddress
    from datetime import UTC, datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


def _email_config(port: int, **overrides: Any) -> EmailConfig:
    values: dict[str, Any] = {
        "to": ["oncall@example.org", "sre@example.org"],
        "from": "inferwatch@alerts.example.org",
        "smarthost": f"127.0.0.1:{port}",
        "require_tls": False,
        "hello": "inferwatch.test",
        "timeout_s": 10,
    }
    return EmailConfig.model_validate({**values, **overrides})


def test_email_is_delivered_with_subject_recipients_and_message_id() -> None:
    notification = make_notification(_two_firing(), integration="email")
    with smtp_server() as (inbox, port):
        EmailSender(_email_config(port), receiver="mail", clock=fixed_clock(NOW)).send(notification)
    [(mail_from, rcpts, message, tls, _)] = inbox.messages
    assert mail_from == "inferwatch@alerts.example.org"
    assert rcpts == ["oncall@example.org", "sre@example.org"]
    assert not tls
    assert message["Subject"] == "[FIRING:2] prompt_injection (service=chat)"
    assert message["To"] == "oncall@example.org, sre@example.org"
    assert message["Message-ID"] == f"<{notification.id}@alerts.example.org>"
    assert message["X-Inferwatch-Notification-Id"] == notification.id
    assert message["Auto-Submitted"] == "auto-generated"
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None
    assert html is not None
    body = text.get_content()
    assert "Firing (2):" in body
    assert "- [critical] principal:7f3a: Prompt injection attempts" in body
    assert "acknowledged by alice: looking into it" in body
    assert "incident inc-2, status acknowledged" in body
    assert "&lt;" not in body
    assert "<li>[high] principal:0b1c: Prompt injection attempts" in html.get_content()


def test_email_requires_starttls_when_told_to() -> None:
    with smtp_server() as (inbox, port):
        sender = EmailSender(_email_config(port, require_tls=True), receiver="mail")
        error = _delivery_error(lambda: sender.send(make_notification(_two_firing())))
    assert not error.retryable
    assert "does not offer STARTTLS" in str(error)
    assert inbox.messages == []


def test_email_over_starttls_with_auth(tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    client_tls = ssl.create_default_context(cafile=str(cert))
    with smtp_server(tls_context=server_tls, require_starttls=True, auth=True) as (inbox, port):
        config = _email_config(port, require_tls=True, auth_username="alerts", auth_password="s3cret-pass")
        EmailSender(config, receiver="mail", ssl_context=client_tls).send(make_notification(_two_firing()))
    [(_, _, message, tls, authenticated)] = inbox.messages
    assert tls
    assert authenticated
    assert inbox.logins == [(b"alerts", b"s3cret-pass")]
    assert message["Subject"].startswith("[FIRING:2]")


def test_email_with_a_wrong_password_is_not_retried(tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    client_tls = ssl.create_default_context(cafile=str(cert))
    with smtp_server(tls_context=server_tls, require_starttls=True, auth=True) as (inbox, port):
        config = _email_config(port, require_tls=True, auth_username="alerts", auth_password="wrong-pass")
        sender = EmailSender(config, receiver="mail", ssl_context=client_tls)
        error = _delivery_error(lambda: sender.send(make_notification(_two_firing())))
    assert not error.retryable
    assert "SMTP 535" in str(error)
    assert "wrong-pass" not in str(error)
    assert inbox.messages == []


def test_email_to_a_server_with_an_untrusted_certificate_fails(tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    with smtp_server(tls_context=server_tls, require_starttls=True) as (inbox, port):
        sender = EmailSender(_email_config(port, require_tls=True), receiver="mail")  # system CAs only
        error = _delivery_error(lambda: sender.send(make_notification(_two_firing())))
    assert not error.retryable
    assert "TLS with 127.0.0.1:" in str(error)
    assert "certificate is not trusted" in str(error)
    assert inbox.messages == []


@contextlib.contextmanager
def smtp_that_drops_tls_handshakes() -> Iterator[int]:
    """An SMTP server on loopback that offers STARTTLS, accepts it, reads the client's TLS hello
    and closes the connection: a handshake cut short, as by a restarting server or a middlebox."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with conn, conn.makefile("rb") as lines:
                conn.sendall(b"220 flaky.test ESMTP\r\n")
                while (line := lines.readline()) and not line.upper().startswith(b"STARTTLS"):
                    conn.sendall(b"250-flaky.test\r\n250 STARTTLS\r\n")
                conn.sendall(b"220 go ahead\r\n")
                header = lines.read(5)  # the TLS record carrying the ClientHello: read it all,
                lines.read(int.from_bytes(header[3:5], "big"))  # so closing sends FIN, not RST
                conn.shutdown(socket.SHUT_RDWR)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        listener.close()
        thread.join(10)


def test_email_tls_handshake_cut_short_is_retryable() -> None:
    with smtp_that_drops_tls_handshakes() as port:
        sender = EmailSender(_email_config(port, require_tls=True), receiver="mail")
        error = _delivery_error(lambda: sender.send(make_notification(_two_firing())))
    assert error.retryable
    assert "TLS with 127.0.0.1:" in str(error)
    assert "certificate" not in str(error)


def test_email_auth_not_offered_is_a_configuration_error() -> None:
    with smtp_server() as (inbox, port):
        config = _email_config(port, auth_username="alerts", auth_password="s3cret-pass")
        error = _delivery_error(
            lambda: EmailSender(config, receiver="mail").send(make_notification(_two_firing()))
        )
    assert not error.retryable
    assert "does not offer SMTP AUTH" in str(error)
    assert inbox.messages == []


@pytest.mark.parametrize(
    ("refusals", "retryable", "delivered_to"),
    [
        (
            {"oncall@example.org": "451 4.3.0 try later", "sre@example.org": "452 4.2.2 mailbox full"},
            True,
            None,
        ),
        (
            {"oncall@example.org": "550 5.1.1 no such user", "sre@example.org": "550 5.1.1 no such user"},
            False,
            None,
        ),
        ({"oncall@example.org": "550 5.1.1 no such user"}, False, ["sre@example.org"]),
        ({"oncall@example.org": "451 4.3.0 try later"}, True, ["sre@example.org"]),
    ],
)
def test_email_refused_recipients(
    refusals: dict[str, str], retryable: bool, delivered_to: list[str] | None
) -> None:
    with smtp_server() as (inbox, port):
        inbox.refuse = refusals
        sender = EmailSender(_email_config(port), receiver="mail")
        error = _delivery_error(lambda: sender.send(make_notification(_two_firing())))
    assert error.retryable is retryable
    for address, reply in refusals.items():
        assert f"{address}: {reply}" in str(error)
    assert [m[1] for m in inbox.messages] == ([delivered_to] if delivered_to else [])


def test_email_connection_refused_is_retryable() -> None:
    sender = EmailSender(_email_config(free_port()), receiver="mail")
    error = _delivery_error(lambda: sender.send(make_notification(_two_firing())))
    assert error.retryable
    assert str(error).startswith("receiver 'mail' (email): cannot deliver to 127.0.0.1:")


def test_smarthost_forms() -> None:
    assert parse_smarthost("smtp.example.org:587") == ("smtp.example.org", 587)
    assert parse_smarthost("[::1]:25") == ("::1", 25)
    for bad in ("smtp.example.org", "host:0", "host:99999", ":25"):
        with pytest.raises(ValueError, match="smarthost"):
            parse_smarthost(bad)
