"""Routes, inhibition rules and silences that could never match are refused, saying what to write.

A typo in a label name or value (``sevrity``, ``critcal``, ``drfit``), a pseudonym cut short or
without its ``principal:``, a detector spelt with a dash: each would make a pager route, an
inhibition rule or a silence silently never apply. ``inferwatch alerts check``, every command that
loads a routing file, and ``inferwatch silence add`` refuse them with the place and the fix.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from inferwatch.cli import main
from inferwatch.detectors import registry
from inferwatch.detectors.alerts.config import (
    AlertingConfig,
    AlertingConfigError,
    format_duration,
    label_problems,
    load_alerting_config,
)
from inferwatch.detectors.alerts.matchers import (
    UNREGISTERED_DETECTORS,
    _alternatives,
    check_labels,
    known_detectors,
    label_name_problem,
    matcher_notes,
    matcher_problem,
    parse_matcher,
    parse_matchers,
)
from inferwatch.detectors.sqlite_store import SQLiteStore

ROUTES = """
route:
  receiver: team
  group_by: [detector, service]
  repeat_interval: 4h
  routes:
    - matchers: ['severity=~"high|critical"', 'kind!="drift"']
      receiver: pager
    - matchers: ['kind="drift"']
      receiver: team
      group_by: [model]
receivers:
  - name: team
    webhook_configs: [{url: "http://127.0.0.1:9/hook"}]
  - name: pager
    alertmanager_configs: [{url: "http://127.0.0.1:9093"}]
inhibit_rules:
  - source_matchers: ['kind="integrity"', 'severity=~"high|critical"']
    target_matchers: ['severity=~"info|low|medium"']
    equal: [service]
"""


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def check(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str,
          *labels: str) -> tuple[int, str, str]:
    path = tmp_path / "alerts.yaml"
    path.write_text(textwrap.dedent(text))
    return run(capsys, "alerts", "check", "--routes", str(path), *labels)


def test_the_reference_routing_file_is_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = check(tmp_path, capsys, ROUTES)
    assert code == 0, err
    assert "valid" in out
    assert err == ""


@pytest.mark.parametrize(("old", "new", "expected"), [
    # a matcher on a label no alert carries, in a route and in both sides of an inhibition rule
    ("""- matchers: ['severity=~"high|critical"', 'kind!="drift"']""",
     """- matchers: ['sevrity=~"high|critical"', 'kind!="drift"']""",
     """route.routes[0].matchers: sevrity=~"high|critical": no alert has a label 'sevrity' """
     "(did you mean 'severity'?)"),
    ("""source_matchers: ['kind="integrity"', 'severity=~"high|critical"']""",
     """source_matchers: ['kind="integrity"', 'sevrity=~"high|critical"']""",
     "inhibit_rules[0].source_matchers: sevrity=~\"high|critical\": no alert has a label 'sevrity' "
     "(did you mean 'severity'?)"),
    ("""target_matchers: ['severity=~"info|low|medium"']""",
     """target_matchers: ['severty=~"info|low|medium"']""",
     "inhibit_rules[0].target_matchers: severty=~\"info|low|medium\": no alert has a label 'severty' "
     "(did you mean 'severity'?)"),
    # an alternative of a regular expression that matches no severity
    ("""'severity=~"high|critical"', 'kind!="drift"'""", """'severity=~"high|critcal"', 'kind!="drift"'""",
     """route.routes[0].matchers: severity=~"high|critcal": 'critcal' matches no severity: it is one of """
     """info, low, medium, high, critical (did you mean severity=~"high|critical"?)"""),
    ("""target_matchers: ['severity=~"info|low|medium"']""", """target_matchers: ['severity!~"info|lwo"']""",
     """inhibit_rules[0].target_matchers: severity!~"info|lwo": 'lwo' matches no severity"""),
    # an = / != value a closed label never takes
    ("""matchers: ['kind="drift"']""", """matchers: ['kind="drfit"']""",
     """route.routes[1].matchers: kind="drfit": kind is never 'drfit': it is one of drift, abuse, """
     """operational, integrity (did you mean kind="drift"?)"""),
    ("""'kind!="drift"'""", """'kind!="drfit"'""",
     """route.routes[0].matchers: kind!="drfit": kind is never 'drfit': it is one of drift, abuse, """
     """operational, integrity (did you mean kind!="drift"?)"""),
    # labels no alert carries in group_by and equal
    ("group_by: [model]", "group_by: [principal]",
     "route.routes[1].group_by: no alert has a label 'principal' (did you mean 'subject'?); alerts carry "),
    ("group_by: [detector, service]", "group_by: [detector, servce]",
     "route.group_by: no alert has a label 'servce' (did you mean 'service'?)"),
    ("equal: [service]", "equal: [servce]",
     "inhibit_rules[0].equal: no alert has a label 'servce' (did you mean 'service'?)"),
    # values written otherwise than incidents carry them
    ("""matchers: ['kind="drift"']""", """matchers: ['detector="output-leak"']""",
     """route.routes[1].matchers: detector="output-leak": no detector is called 'output-leak' """
     """(did you mean detector="output_leak"?)"""),
    ("""matchers: ['kind="drift"']""", """matchers: ['subject="principal:p_9bc4d0d85dae67f8"']""",
     """route.routes[1].matchers: subject="principal:p_9bc4d0d85dae67f8": a subject is principal:p_ and """
     "24 hex digits; 'principal:p_9bc4d0d85dae67f8' has 16"),
])
def test_alerts_check_refuses_a_label_typo_naming_the_field_and_the_fix(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], old: str, new: str, expected: str) -> None:
    assert old in ROUTES
    code, out, err = check(tmp_path, capsys, ROUTES.replace(old, new))
    assert code == 2
    assert "valid" not in out
    assert f"alerts.yaml: {expected}" in err


def test_every_typo_of_a_file_is_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "alerts.yaml"
    path.write_text(ROUTES.replace("sever", "sevr").replace("[service]", "[servce]"))
    with pytest.raises(AlertingConfigError) as info:
        load_alerting_config(path)
    lines = str(info.value).splitlines()
    assert all(line.startswith(f"{path}: ") for line in lines)
    assert [line.split(": ")[1] for line in lines] == [
        "route.routes[0].matchers", "inhibit_rules[0].source_matchers", "inhibit_rules[0].target_matchers",
        "inhibit_rules[0].equal"]


def test_the_notifier_refuses_a_file_with_a_label_typo_too(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "alerts.yaml"
    path.write_text(ROUTES.replace("""'kind="drift"'""", """'kind="drfit"'"""))
    code, _, err = run(capsys, "detect", "--routes", str(path), "--store", str(tmp_path / "s.db"),
                       "--bus", str(tmp_path / "b.db"), "--exit-when-idle", "0.1")
    assert code == 2
    assert "route.routes[1].matchers: kind=\"drfit\": kind is never 'drfit'" in err


@pytest.mark.parametrize("group_by", ["['...']", "[...]", '["..."]'])
def test_group_by_all_labels_stays_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         group_by: str) -> None:
    code, _, err = check(tmp_path, capsys, ROUTES.replace("[detector, service]", group_by))
    assert code == 0, err


@pytest.mark.parametrize("matchers", [
    """['severity=~"hi.*|crit.+"']""",  # regular expressions that match some severity
    """['severity=~"(?:high|critical)"', 'kind=~".*"']""",
    """['severity!~"info|low"', 'subject=~"principal:p_9bc4.*"']""",  # a pseudonym's start
    """['subject="principal:p_9bc4d0d85dae67f82782800e"', 'incident_id="9c1e0f7a2b3d4c5e"']""",
    """['subject="principal:svc-batch"', 'subject!="model:iris"', 'subject!="ip:10.1.2.0"']""",
    """['alertname="drift_ops"', 'detector=~"request_rate|scraping"', 'service="anything"']""",
    """['{service="chat", model=~"gpt-.*"}']""",
])
def test_documented_matchers_stay_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        matchers: str) -> None:
    text = ROUTES.replace("""['kind="drift"']""", matchers)
    code, _, err = check(tmp_path, capsys, text)
    assert code == 0, err


def test_a_detector_no_installed_package_registers_is_a_note_not_an_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A plug-in installed only where the detectors run: accepted, with a note in case it is a typo.
    text = ROUTES.replace("""['kind="drift"']""", "['detector=outptu_leak']")
    code, out, err = check(tmp_path, capsys, text)
    assert code == 0
    assert "valid" in out
    assert "note: route.routes[1].matchers: detector=\"outptu_leak\": no detector named 'outptu_leak' is " \
           "installed here (did you mean 'output_leak'?)" in err


def test_a_plug_in_detector_installed_here_is_known(monkeypatch: pytest.MonkeyPatch) -> None:
    installed = dict(registry.available())
    monkeypatch.setattr(registry, "available", lambda: {**installed, "pii_leak": None})
    assert "pii_leak" in known_detectors()
    assert check_labels(parse_matchers("detector=pii_leak")) == []
    with pytest.raises(ValueError, match=r'did you mean detector="pii_leak"\?'):
        check_labels(parse_matchers("detector=pii-leak"))


def test_the_unregistered_detector_names_are_those_detectors_file_under() -> None:
    from inferwatch.detectors.drift.detector import OPS_DETECTOR

    assert OPS_DETECTOR in UNREGISTERED_DETECTORS
    assert set(registry.available()) <= set(known_detectors())


# --- Alertmanager's endsAt against the repeat interval ------------------------------------------


def test_ends_at_after_s_not_longer_than_the_repeat_interval_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    short = ROUTES.replace('alertmanager_configs: [{url: "http://127.0.0.1:9093"}]',
                           'alertmanager_configs: [{url: "http://127.0.0.1:9093", ends_at_after_s: 3600}]')
    code, out, err = check(tmp_path, capsys, short)
    assert code == 2
    assert "valid" not in out
    assert ("alerts.yaml: receivers[1].alertmanager_configs[0].ends_at_after_s: 3600 (1h) is not longer "
            "than the repeat_interval (4h) plus group_interval (5m) of route.routes[0], which sends to "
            "'pager'") in err
    assert "set it above 14700 (4h5m)" in err
    # Just what a repeat needs (repeat_interval + group_interval) is still too short; more is fine.
    assert check(tmp_path, capsys, short.replace("ends_at_after_s: 3600", "ends_at_after_s: 14700"))[0] == 2
    assert check(tmp_path, capsys, short.replace("ends_at_after_s: 3600", "ends_at_after_s: 90000"))[0] == 0


def test_ends_at_is_checked_against_every_route_that_sends_to_the_receiver() -> None:
    config = {
        "route": {"receiver": "am", "repeat_interval": "1h",
                  "routes": [{"matchers": ["kind=drift"], "repeat_interval": "1d"},  # inherits "am"
                             {"matchers": ["kind=abuse"], "receiver": "other", "repeat_interval": "2d"}]},
        "receivers": [{"name": "am", "alertmanager_configs": [{"url": "http://a", "ends_at_after_s": 7200}]},
                      {"name": "other"}],
    }
    with pytest.raises(ValueError, match=re.escape(
            "receivers[0].alertmanager_configs[0].ends_at_after_s: 7200 (2h) is not longer than the "
            "repeat_interval (1d) plus group_interval (5m) of route.routes[0], which sends to 'am'")):
        AlertingConfig.model_validate(config)
    config["route"]["routes"][0]["repeat_interval"] = "1h"  # type: ignore[index]
    AlertingConfig.model_validate(config)  # 2h > 1h5m; route 0.1's 2d goes to another receiver


def test_format_duration_writes_durations_as_the_file_does() -> None:
    assert [format_duration(s) for s in (14400, 300, 5400, 86400 + 60, 0, 0.25)] == [
        "4h", "5m", "1h30m", "1d1m", "0s", "0.25s"]


# --- silences -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("matcher", "message"), [
    ('subject="principal:p_9bc4d0d85dae67f8"',
     "a subject is principal:p_ and 24 hex digits; 'principal:p_9bc4d0d85dae67f8' has 16 (cut short? copy "
     "the whole subject from `inferwatch incidents list`, or match its start with "
     'subject=~"principal:p_9bc4d0d85dae67f8.*")'),
    ("subject=p_9bc4d0d85dae67f82782800e",
     "no subject is 'p_9bc4d0d85dae67f82782800e': incidents' subjects are principal:p_…, ip:…, model:…; "
     'did you mean subject="principal:p_9bc4d0d85dae67f82782800e"?'),
    ('detector="output-leak"',
     'no detector is called \'output-leak\' (did you mean detector="output_leak"?)'),
    ('alertname="Request_Rate"', 'did you mean alertname="request_rate"?'),
    ('detector=~"output-leak|scraping"', 'did you mean detector=~"output_leak|scraping"?'),
    ("subject=10.1.2.0", 'did you mean subject="ip:10.1.2.0"?'),
    ("subject=principal:p_9BC4D0D85DAE67F82782800E",
     'did you mean subject="principal:p_9bc4d0d85dae67f82782800e"?'),
    ("incident_id=9c1e0f7a", "an incident id is 16 hex digits; '9c1e0f7a' has 8 (a prefix?"),
    ('severity=~"high|critcal"', "'critcal' matches no severity"),
    ('kind="drfit"', "kind is never 'drfit'"),
])
def test_silence_add_refuses_a_silence_that_could_never_match(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], matcher: str, message: str) -> None:
    store = tmp_path / "store.db"
    code, out, err = run(capsys, "silence", "add", matcher, "--store", str(store))
    assert code == 2
    assert out == ""
    assert err.startswith("inferwatch: silence: ")
    assert message in err
    assert SQLiteStore(store).list_silences(include_expired=True) == []


@pytest.mark.parametrize("matchers", [
    ['service="chat"'],  # nothing to check it against: taken as written
    ['subject="principal:p_9bc4d0d85dae67f82782800e"'],
    ['subject=~"principal:p_9bc4.*"'],
    ["subject=model:iris", "detector=drift_ops"],
    ['detector=~"request_rate|scraping"', "incident_id=9c1e0f7a2b3d4c5e"],
])
def test_silence_add_accepts_what_can_match(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            matchers: list[str]) -> None:
    code, _, err = run(capsys, "silence", "add", *matchers, "--store", str(tmp_path / "store.db"))
    assert code == 0, err
    # no note on the matchers (only that no routing file named an Alertmanager to tell)
    assert [line for line in err.splitlines() if "no routing file" not in line] == []


def test_silence_add_takes_an_unknown_detector_with_a_note(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "store.db"
    code, out, err = run(capsys, "silence", "add", "detector=pii_leak", "--store", str(store))
    assert code == 0
    assert out.startswith("silence ")
    assert "silence: note: no detector named 'pii_leak' is installed here" in err
    assert len(SQLiteStore(store).list_silences()) == 1


def test_alerts_check_labels_get_the_same_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = check(tmp_path, capsys, ROUTES, "subject=p_9bc4d0d85dae67f82782800e")
    assert code == 2
    assert 'did you mean subject="principal:p_9bc4d0d85dae67f82782800e"?' in err
    code, _, err = check(tmp_path, capsys, ROUTES, "detector=output-leak")
    assert code == 2
    assert 'did you mean detector="output_leak"?' in err


# --- the one home of these checks ---------------------------------------------------------------


@pytest.mark.parametrize(("name", "expected"), [
    ("severity", None), ("alertname", None), ("incident_id", None),
    ("sevrity", "no alert has a label 'sevrity' (did you mean 'severity'?)"),
    ("principal", "(did you mean 'subject'?)"),
    ("status", "no alert has a label 'status'; alerts carry alertname, incident_id, detector, kind, "),
])
def test_label_name_problem(name: str, expected: str | None) -> None:
    problem = label_name_problem(name)
    if expected is None:
        assert problem is None
    else:
        assert problem is not None
        assert expected in problem


@pytest.mark.parametrize("text", [
    'severity=~"(high|critical)"', 'severity=~"[hc].*"', 'severity=~"info|low|medium|high|critical"',
    'kind=~"abuse|integrity"', 'severity!~"info"', 'model="x"',
    'subject=~"(principal:p_9bc4.*|ip:10\\..*)"', 'detector=~"drift.*"',
])
def test_matchers_that_can_match_have_no_problem(text: str) -> None:
    assert matcher_problem(parse_matcher(text), ["drift", "drift_ops", "scraping"]) is None


def test_notes_name_detectors_not_installed_here() -> None:
    assert matcher_notes(parse_matcher("detector=drift"), ["drift"]) == []
    assert matcher_notes(parse_matcher("service=drfit"), ["drift"]) == []
    [note] = matcher_notes(parse_matcher('alertname=~"drift|drfit_ops.*|drfit"'), ["drift", "drift_ops"])
    assert note.startswith("no detector named 'drfit' is installed here (did you mean 'drift'?)")


def test_regular_expressions_split_into_their_top_level_alternatives() -> None:
    assert _alternatives("high|critical") == ["high", "critical"]
    assert _alternatives("(?:high|critical)") == ["high", "critical"]
    assert _alternatives("(high|crit)ical|low") == ["(high|crit)ical", "low"]
    assert _alternatives("[|x]|y") == ["[|x]", "y"]
    assert _alternatives("[]|]|y") == ["[]|]", "y"]
    assert _alternatives(r"a\|b|c") == [r"a\|b", "c"]
    assert _alternatives("(?=x)") == ["(?=x)"]


def test_a_config_built_in_code_checks_its_labels_only_when_asked() -> None:
    data = {"route": {"receiver": "team", "group_by": ["team"],
                      "routes": [{"matchers": ["tier=gold"]}]},
            "receivers": [{"name": "team"}]}
    config = AlertingConfig.model_validate(data)  # the shape only: labels of tests and tools pass
    errors, notes = label_problems(config, detectors=[])
    assert errors == ["route.group_by: no alert has a label 'team'; alerts carry alertname, incident_id, "
                      "detector, kind, severity, service, model, subject",
                      "route.routes[0].matchers: tier=\"gold\": no alert has a label 'tier'; alerts carry "
                      "alertname, incident_id, detector, kind, severity, service, model, subject"]
    assert notes == []
    with pytest.raises(ValueError, match="no alert has a label 'team'"):
        AlertingConfig.model_validate(data, context={"detectors": []})
