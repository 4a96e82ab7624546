"""The Alertmanager sender against a real Alertmanager (Debian's 0.25, started by deploy/local).

What Alertmanager holds is read back from its own API (``GET /api/v2/alerts``): firing alerts
are there and active with their labels intact, an acknowledgement updates their annotations, and
a resolved alert is no longer listed. Each test uses incident ids of its own, so runs and other
sessions sharing the Alertmanager do not see each other's alerts.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from inferwatch.detectors.alerts.integrations import AlertmanagerConfig
from inferwatch.detectors.alerts.receivers import AlertmanagerSender, DeliveryError
from tests.alerts.helpers import make_alert, make_notification

pytestmark = pytest.mark.integration

WAIT_S = 15.0  # an upper bound for Alertmanager to process a POST; tests do not depend on speed


def _alerts(base: str, incident_ids: list[str]) -> dict[str, dict[str, Any]]:
    """What Alertmanager lists (active, silenced, inhibited or unprocessed) for these incidents."""
    regex = "|".join(incident_ids)
    query = urllib.parse.urlencode({"filter": f'incident_id=~"{regex}"', "unprocessed": "true"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{base}/api/v2/alerts?{query}", timeout=10) as response:
        return {a["labels"]["incident_id"]: a for a in json.load(response)}


def _until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"Alertmanager did not show {what} within {WAIT_S:.0f} s")
        time.sleep(0.1)


def test_firing_acknowledged_then_resolved(alertmanager_url: str) -> None:
    run = uuid.uuid4().hex[:8]
    one, two = f"am-{run}-1", f"am-{run}-2"
    now = datetime.now(UTC)
    sender = AlertmanagerSender(AlertmanagerConfig(url=alertmanager_url, ends_at_after_s=3600), receiver="am")
    first = make_alert(one, severity="critical", extra_labels={"team.name": "ml-platform"})
    second = make_alert(two, subject="principal:0b1c")
    sender.send(make_notification([first, second], integration="alertmanager"))

    def both_active() -> bool:
        held = _alerts(alertmanager_url, [one, two])
        return len(held) == 2 and all(a["status"]["state"] == "active" for a in held.values())

    _until(both_active, "both alerts active")
    held = _alerts(alertmanager_url, [one, two])
    expected_labels = {**first.labels, "team_name": "ml-platform"}
    del expected_labels["team.name"]
    assert held[one]["labels"] == expected_labels
    assert held[two]["labels"] == second.labels
    assert held[one]["annotations"] == {
        "title": "Prompt injection attempts",
        "summary": "Prompt injection attempts from principal:7f3a",
        "incident_status": "open",
    }
    assert held[one]["receivers"] == [{"name": "null"}]
    assert held[one]["startsAt"].startswith(first.starts_at.strftime("%Y-%m-%dT%H:%M:%S"))
    ends = datetime.fromisoformat(held[one]["endsAt"].replace("Z", "+00:00"))
    assert now + timedelta(minutes=59) < ends < now + timedelta(minutes=61, seconds=30)

    acknowledged = second.model_copy(
        update={"incident_status": "acknowledged", "actor": "alice", "note": "on it"}
    )
    sender.send(make_notification([first, acknowledged], integration="alertmanager", seq=2))
    _until(
        lambda: _alerts(alertmanager_url, [two])[two]["annotations"].get("actor") == "alice",
        "the acknowledgement",
    )
    updated = _alerts(alertmanager_url, [two])[two]
    assert updated["annotations"]["incident_status"] == "acknowledged"
    assert updated["annotations"]["note"] == "on it"
    assert updated["fingerprint"] == held[two]["fingerprint"]  # the same alert, updated
    assert updated["status"]["state"] == "active"

    resolved = first.model_copy(
        update={"state": "resolved", "incident_status": "resolved", "ends_at": datetime.now(UTC)}
    )
    sender.send(make_notification([resolved, acknowledged], integration="alertmanager", seq=3))
    _until(lambda: one not in _alerts(alertmanager_url, [one, two]), "the first alert resolved")
    assert set(_alerts(alertmanager_url, [one, two])) == {two}

    finished = acknowledged.model_copy(
        update={"state": "resolved", "incident_status": "resolved", "ends_at": datetime.now(UTC)}
    )
    sender.send(make_notification([finished], integration="alertmanager", seq=4))
    _until(lambda: _alerts(alertmanager_url, [one, two]) == {}, "both alerts resolved")


def test_a_wrong_path_is_a_permanent_error(alertmanager_url: str) -> None:
    sender = AlertmanagerSender(AlertmanagerConfig(url=f"{alertmanager_url}/no-such-prefix"), receiver="am")
    with pytest.raises(DeliveryError) as info:
        sender.send(make_notification([make_alert(f"am-{uuid.uuid4().hex[:8]}")]))
    assert not info.value.retryable
    assert "HTTP 404" in str(info.value)
    assert "/no-such-prefix/api/v2/alerts" in str(info.value)


def test_an_escalation_leaves_one_alert_for_the_incident(alertmanager_url: str) -> None:
    """Severity is a label: the alert of the earlier severity is resolved, not left firing."""
    incident = f"am-{uuid.uuid4().hex[:8]}-esc"
    sender = AlertmanagerSender(AlertmanagerConfig(url=alertmanager_url, ends_at_after_s=3600), receiver="am")
    query = urllib.parse.urlencode({"filter": f'incident_id="{incident}"', "unprocessed": "true"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def severities() -> list[str]:
        with opener.open(f"{alertmanager_url}/api/v2/alerts?{query}", timeout=10) as response:
            return sorted(a["labels"]["severity"] for a in json.load(response))

    sender.send(make_notification([make_alert(incident, severity="low")], integration="alertmanager"))
    _until(lambda: severities() == ["low"], "the low alert")
    for seq, severity in ((2, "medium"), (3, "high")):
        alert = make_alert(incident, severity=severity)
        sender.send(make_notification([alert], integration="alertmanager", seq=seq))
        _until(lambda severity=severity: severities() == [severity], f"only the {severity} alert")
    assert severities() == ["high"]
    resolved = make_alert(incident, severity="high", state="resolved", incident_status="resolved",
                          ends_at=datetime.now(UTC))
    sender.send(make_notification([resolved], integration="alertmanager", seq=4))
    _until(lambda: severities() == [], "nothing")


def test_an_inferwatch_silence_is_mirrored_to_the_alertmanager_and_expired_there(
        alertmanager_url: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """An on-call walk-through: `inferwatch silence add` muted inferwatch, but the alert already in
    Alertmanager stayed active and Alertmanager kept paging for the muted caller."""
    from inferwatch.cli import main

    incident = f"am-{uuid.uuid4().hex[:8]}-silenced"
    subject = f"principal:p_{uuid.uuid4().hex[:24]}"
    routes = tmp_path / "alerts.yaml"
    routes.write_text(f"""
route: {{receiver: am}}
receivers:
  - name: am
    alertmanager_configs: [{{url: "{alertmanager_url}", ends_at_after_s: 86400}}]
""")
    monkeypatch.setenv("INFERWATCH_ALERTING__CONFIG", str(routes))
    monkeypatch.setenv("INFERWATCH_STORE__PATH", str(tmp_path / "store.db"))
    sender = AlertmanagerSender(AlertmanagerConfig(url=alertmanager_url, ends_at_after_s=3600), receiver="am")
    sender.send(make_notification([make_alert(incident, subject=subject)], integration="alertmanager"))
    _until(lambda: incident in _alerts(alertmanager_url, [incident]), "the alert")

    assert main(["silence", "add", f'subject="{subject}"', "--duration", "2h", "--comment", "key rotated",
                 "--json"]) == 0
    captured = capsys.readouterr()
    silence_id = json.loads(captured.out)["id"]
    assert f"also created in the Alertmanager at {alertmanager_url}" in captured.err
    _until(lambda: _alerts(alertmanager_url, [incident])[incident]["status"]["state"] == "suppressed",
           "the alert silenced")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def copies() -> list[dict[str, Any]]:
        with opener.open(f"{alertmanager_url}/api/v2/silences", timeout=10) as response:
            return [s for s in json.load(response) if f"[inferwatch silence {silence_id}]" in s["comment"]]

    (copy,) = copies()
    assert copy["matchers"] == [{"name": "subject", "value": subject, "isRegex": False, "isEqual": True}]
    assert copy["comment"] == f"key rotated [inferwatch silence {silence_id}]"
    assert copy["status"]["state"] == "active"

    assert main(["silence", "expire", silence_id]) == 0
    assert "its copy expired in 1 Alertmanager" in capsys.readouterr().err
    _until(lambda: copies()[0]["status"]["state"] == "expired", "the copy expired")
    _until(lambda: _alerts(alertmanager_url, [incident])[incident]["status"]["state"] == "active",
           "the alert active again")
