"""``inferwatch silence`` and ``inferwatch alerts`` as a user types them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from inferwatch.cli import main
from inferwatch.detectors.alerts.model import (
    Matcher,
    Notification,
    NotificationAlert,
    Silence,
    notification_id,
)
from inferwatch.detectors.sqlite_store import SQLiteStore

ROUTES = """
route:
  receiver: team
  group_by: [detector]
  routes:
    - matchers: ['severity=~"high|critical"']
      receiver: pager
      group_wait: 10s
receivers:
  - name: team
    webhook_configs: [{url: "http://127.0.0.1:9/hook"}]
  - name: pager
    pagerduty_configs: [{routing_key: "${PD_KEY:-0123456789abcdef0123456789abcdef}"}]
"""


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_silence_add_list_expire(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = str(tmp_path / "store.db")
    code, out, _ = run(capsys, "silence", "add", 'service="chat"', "detector=~request_rate|scraping",
                       "--duration", "2h", "--author", "alice", "--comment", "load test", "--store", store,
                       "--json")
    assert code == 0
    made = json.loads(out)
    assert [(m["name"], m["op"], m["value"]) for m in made["matchers"]] == [
        ("service", "=", "chat"), ("detector", "=~", "request_rate|scraping")]
    starts, ends = (datetime.fromisoformat(made[k]) for k in ("starts_at", "ends_at"))
    assert ends - starts == timedelta(hours=2)
    assert made["created_by"] == "alice"

    code, out, _ = run(capsys, "silence", "list", "--store", store)
    assert code == 0
    assert made["id"] in out
    assert "active" in out
    assert 'detector=~"request_rate|scraping"' in out
    assert "load test" in out

    assert run(capsys, "silence", "expire", made["id"][:5], "--store", store)[0] == 0  # a prefix will do
    assert run(capsys, "silence", "list", "--store", store)[1].strip() == "no silences"
    code, out, _ = run(capsys, "silence", "list", "--all", "--store", store)
    assert "expired" in out
    assert made["id"] in out
    stored = SQLiteStore(store).get_silence(made["id"])
    assert stored is not None
    assert stored.ends_at <= datetime.now(UTC)


def test_silence_errors_name_what_to_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = str(tmp_path / "store.db")
    code, _, err = run(capsys, "silence", "add", "severity=~(unclosed", "--store", store)
    assert code == 2
    assert "severity=~(unclosed" in err
    SQLiteStore(store).close()
    code, _, err = run(capsys, "silence", "expire", "nope", "--store", store)
    assert code == 1  # not found
    assert "no silence with id 'nope'" in err
    now = datetime.now(UTC)
    for sid in ("abcd00000001", "abcd00000002"):
        made_by_hand = Silence(id=sid, matchers=[Matcher(name="a", op="=", value="b")], starts_at=now,
                               ends_at=now + timedelta(hours=1), created_by="t", created_at=now)
        SQLiteStore(store).save_silence(made_by_hand)
    code, _, err = run(capsys, "silence", "expire", "ABCD", "--store", store)
    assert code == 1  # as for an incident id prefix
    assert "'ABCD' begins 2 silences' ids (" in err
    assert "give more of it" in err
    with pytest.raises(SystemExit):
        main(["silence", "add", "a=b", "--duration", "soon", "--store", store])


def test_alerts_check_validates_and_shows_routes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    routes = tmp_path / "alerts.yaml"
    routes.write_text(ROUTES)
    code, out, _ = run(capsys, "alerts", "check", "--routes", str(routes), "detector=prompt_injection",
                       "severity=high")
    assert code == 0
    assert "valid; receivers: team, pager" in out
    assert 'receiver pager  group 0.0:{detector="prompt_injection"}  (wait 10s' in out
    code, out, _ = run(capsys, "alerts", "check", "--routes", str(routes), "detector=drift", "severity=low")
    assert 'receiver team  group 0:{detector="drift"}  (wait 30s' in out
    code, out, _ = run(capsys, "alerts", "check", "--routes", str(routes), "--json", "detector=drift")
    (checked,) = [json.loads(line) for line in out.splitlines()]
    assert checked["valid"] is True
    assert checked["receivers"] == ["team", "pager"]
    assert checked["labels"] == {"detector": "drift", "alertname": "drift"}
    assert [(r["receiver"], r["group"], r["group_wait_s"]) for r in checked["routed"]] == [
        ("team", '0:{detector="drift"}', 30.0)]
    code, out, _ = run(capsys, "alerts", "check", "--routes", str(routes), "--json")
    assert json.loads(out) == {"file": str(routes), "valid": True, "receivers": ["team", "pager"],
                               "inhibit_rules": checked["inhibit_rules"]}

    routes.write_text(ROUTES.replace("receiver: pager", "receiver: pagr"))
    code, _, err = run(capsys, "alerts", "check", "--routes", str(routes))
    assert code == 2
    assert "pagr" in err
    code, _, err = run(capsys, "alerts", "check", "--store", str(tmp_path / "s.db"))
    assert code == 2
    assert "--routes FILE or set alerting.config" in err


def test_alerts_log_shows_what_was_sent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store_path = tmp_path / "store.db"
    now = datetime.now(UTC)
    alert = NotificationAlert(incident_id="inc1", labels={"alertname": "drift"}, state="firing",
                              incident_status="open", starts_at=now, updated_at=now, severity="high")
    stream = 'g|team|webhook|0'
    SQLiteStore(store_path).save_notifications([
        Notification(id=notification_id(stream, 1), group_key="g", receiver="team", integration="webhook",
                     seq=1, created_at=now, alerts=[alert], status="delivered", attempts=1,
                     next_attempt_at=now),
        Notification(id=notification_id(stream, 2), group_key="g", receiver="team", integration="webhook",
                     seq=2, created_at=now, alerts=[alert], status="failed", attempts=3,
                     next_attempt_at=now, last_error="receiver 'team' (webhook): HTTP 400 bad"),
    ])
    code, out, _ = run(capsys, "alerts", "log", "--store", str(store_path))
    assert code == 0
    assert "delivered" in out
    assert "HTTP 400 bad" in out
    code, out, _ = run(capsys, "alerts", "log", "--status", "failed", "--json", "--store", str(store_path))
    assert [json.loads(line)["seq"] for line in out.splitlines()] == [2]
    code, out, _ = run(capsys, "alerts", "log", "--incident", "other", "--store", str(store_path))
    assert out.strip() == "no notifications"


def test_a_silence_that_would_mute_everything_is_refused(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    store = str(tmp_path / "store.db")
    code, _, err = run(capsys, "silence", "add", 'kind=~".*"', "--store", store)
    assert code == 2
    assert "match every alert" in err
    assert run(capsys, "silence", "add", 'kind=~".*"', "service=chat", "--store", store)[0] == 0


def test_expiring_a_pending_silence_ends_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = str(tmp_path / "store.db")
    later = (datetime.now(UTC) + timedelta(hours=3)).isoformat()
    out = run(capsys, "silence", "add", "service=chat", "--starts", later, "--json", "--store", store)[1]
    sid = json.loads(out)["id"]
    assert "pending" in run(capsys, "silence", "list", "--store", store)[1]
    assert run(capsys, "silence", "expire", sid, "--store", store)[0] == 0
    assert run(capsys, "silence", "list", "--store", store)[1].strip() == "no silences"
    assert "expired" in run(capsys, "silence", "list", "--all", "--store", store)[1]


def test_alerts_check_reports_an_integration_that_cannot_work(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    routes = tmp_path / "alerts.yaml"
    routes.write_text("""
route: {receiver: mail}
receivers:
  - name: mail
    email_configs: [{to: [a@example.com], from: b@example.com, smarthost: "smtp.example.com"}]
""")
    code, _, err = run(capsys, "alerts", "check", "--routes", str(routes))
    assert code == 2
    assert f"{routes}: receivers: mail: email_configs[0]" in err
    code, _, err = run(capsys, "detect", "--routes", str(routes), "--store", str(tmp_path / "s.db"),
                       "--bus", str(tmp_path / "b.db"), "--exit-when-idle", "0.1")
    assert code == 2
    assert f"{routes}: receivers: mail: email_configs[0]" in err


def test_alerts_check_routes_labels_as_real_alerts_carry_them(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    routes = tmp_path / "alerts.yaml"
    routes.write_text(ROUTES.replace("""matchers: ['severity=~"high|critical"']""",
                                     """matchers: ['alertname="prompt_injection"']"""))
    # Every alert's alertname is its detector: a dry run without one must route as the real alert.
    code, out, _ = run(capsys, "alerts", "check", "--routes", str(routes), "detector=prompt_injection",
                       "severity=high")
    assert code == 0
    assert "-> receiver pager" in out
    code, _, err = run(capsys, "alerts", "check", "--routes", str(routes), "severty=high")
    assert code == 2
    assert "no alert has a label 'severty' (did you mean 'severity'?)" in err


@pytest.mark.parametrize(("flags", "message"), [
    (["sevrity=high"], "no alert has a label 'sevrity' (did you mean 'severity'?)"),
    (["severity=hgh"], "severity is never 'hgh': it is one of info, low, medium, high, critical"),
    (["kind!=drfit"], "kind is never 'drfit'"),
    (["service=chat", "--starts", "2020-01-01T00:00:00Z"], "already past"),
])
def test_a_silence_that_could_never_mute_anything_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str) -> None:
    store = tmp_path / "store.db"
    code, _, err = run(capsys, "silence", "add", *flags, "--store", str(store))
    assert code == 2
    assert message in err
    with pytest.raises(SystemExit):
        main(["silence", "add", "service=chat", "--duration", "0", "--store", str(store)])
    assert "a silence needs a duration above 0" in capsys.readouterr().err


def test_alerts_log_takes_an_incident_id_prefix(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                events_file: Path) -> None:
    store_path = tmp_path / "store.db"
    assert main(["replay", str(events_file), "--store", str(store_path), "--json"]) == 0
    incident_id = json.loads(capsys.readouterr().out.splitlines()[0])["id"]
    now = datetime.now(UTC)
    alert = NotificationAlert(incident_id=incident_id, labels={"alertname": "drift"}, state="firing",
                              incident_status="open", starts_at=now, updated_at=now, severity="high")
    SQLiteStore(store_path).save_notifications([
        Notification(id=notification_id("g|team|webhook|0", 1), group_key="g", receiver="team",
                     integration="webhook", seq=1, created_at=now, alerts=[alert], status="delivered",
                     attempts=1, next_attempt_at=now)])
    code, out, _ = run(capsys, "alerts", "log", "--incident", incident_id[:5], "--store", str(store_path))
    assert code == 0
    assert "delivered" in out


def test_a_silence_starting_in_a_while_starts_from_now_forward(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    store = str(tmp_path / "store.db")
    before = datetime.now(UTC)
    out = run(capsys, "silence", "add", "service=chat", "--starts", "2h", "--duration", "90m", "--json",
              "--store", store)[1]
    made = json.loads(out)
    starts, ends = (datetime.fromisoformat(made[k]) for k in ("starts_at", "ends_at"))
    assert before + timedelta(hours=2) <= starts <= datetime.now(UTC) + timedelta(hours=2)  # not 2 h ago
    assert ends - starts == timedelta(minutes=90)
    out = run(capsys, "silence", "add", "service=chat", "--starts", "1h", "--store", store)[1]
    assert f"mutes {{service=\"chat\"}} from {(before + timedelta(hours=1)):%Y-%m-%d %H}" in out  # pending
    run(capsys, "silence", "add", "service=chat", "--comment", "watching", "--store", store)
    header, *rows = run(capsys, "silence", "list", "--store", store)[1].splitlines()
    column = header.index("COMMENT")
    assert all(row[column:].strip() in ("", "watching") for row in rows)  # every comment under its header
    with pytest.raises(SystemExit):
        main(["silence", "add", "service=chat", "--starts", "soonish", "--store", store])
    assert "a time from now (30m, 2h)" in capsys.readouterr().err


def test_a_silence_starting_at_a_time_with_an_offset_is_shown_in_utc(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Times are printed under "UTC": one given as 10:00+02:00 is 08:00 UTC, not 10:00."""
    store = str(tmp_path / "store.db")
    year = datetime.now(UTC).year + 1
    out = run(capsys, "silence", "add", "service=chat", "--starts", f"{year}-06-01T10:00:00+02:00",
              "--duration", "1h", "--store", store)[1]
    assert f"from {year}-06-01 08:00:00 until {year}-06-01 09:00:00 UTC" in out
    listed = run(capsys, "silence", "list", "--store", store)[1]
    assert f"{year}-06-01 08:00:00" in listed
    assert f"{year}-06-01 10:00:00" not in listed


def test_a_silence_stands_when_its_alertmanager_cannot_be_told(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    routes = tmp_path / "alerts.yaml"
    routes.write_text('route: {receiver: am}\nreceivers:\n'
                      '  - {name: am, alertmanager_configs: [{url: "http://127.0.0.1:9", timeout_s: 2}]}\n')
    monkeypatch.setenv("INFERWATCH_ALERTING__CONFIG", str(routes))
    store = str(tmp_path / "store.db")
    code, out, err = run(capsys, "silence", "add", 'service="chat"', "--duration", "1h", "--store", store)
    assert code == 0
    assert "not created in an Alertmanager: receiver 'am' (alertmanager): cannot reach http://127.0.0.1:9" \
        in err
    assert "silence them in it too (amtool silence add" in err
    silence_id = out.split()[1]
    code, _, err = run(capsys, "silence", "expire", silence_id, "--store", store)
    assert code == 0
    assert "its copy in an Alertmanager may still be in force" in err
    routes.write_text("route: {receiver: nobody}\n")  # broken: the silence is inferwatch's all the same
    code, _, err = run(capsys, "silence", "add", 'service="chat"', "--duration", "1h", "--store", store)
    assert code == 0
    assert "the routing file cannot be read, so no Alertmanager it names was told" in err


def test_a_silence_says_when_no_routing_file_told_an_alertmanager_and_takes_routes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A security walk-through: a responder's shell without INFERWATCH_ALERTING__CONFIG created
    the silence in inferwatch only, silently, and Alertmanager kept paging."""
    monkeypatch.delenv("INFERWATCH_ALERTING__CONFIG", raising=False)
    store = str(tmp_path / "store.db")
    code, out, err = run(capsys, "silence", "add", 'service="chat"', "--duration", "1h", "--store", store)
    assert code == 0
    assert "no routing file (--routes FILE, alerting.config or INFERWATCH_ALERTING__CONFIG), so no " \
           "Alertmanager was told" in err
    routes = tmp_path / "alerts.yaml"
    routes.write_text('route: {receiver: am}\nreceivers:\n'
                      '  - {name: am, alertmanager_configs: [{url: "http://127.0.0.1:9", timeout_s: 2}]}\n')
    code, out, err = run(capsys, "silence", "add", 'service="chat"', "--duration", "1h", "--store", store,
                         "--routes", str(routes))
    assert code == 0
    assert "no routing file" not in err
    assert "not created in an Alertmanager: receiver 'am' (alertmanager): cannot reach http://127.0.0.1:9" \
        in err
    code, _, err = run(capsys, "silence", "expire", out.split()[1], "--store", store, "--routes", str(routes))
    assert code == 0
    assert "its copy in an Alertmanager may still be in force" in err
