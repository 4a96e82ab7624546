"""The demo as a user runs it with a routing file: its incidents reach a real Alertmanager and
local receivers (webhook, Slack, PagerDuty, each checking the vendor's schema), grouped as
configured and each paged once."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from tests.alerts.helpers import (
    SLACK_MESSAGE,
    LocalReceiver,
    pagerduty_errors,
    schema_errors,
    signature_checker,
)

SECRET = "demo-secret"


def _inferwatch() -> list[str]:
    script = Path(sys.executable).with_name("inferwatch")
    return [str(script)] if script.exists() else [shutil.which("inferwatch") or "inferwatch"]


@pytest.mark.slow
def test_demo_pages_through_alertmanager_and_receivers(tmp_path: Path, alertmanager_url: str) -> None:
    with LocalReceiver() as hook, LocalReceiver() as slack, LocalReceiver() as pagerduty:
        hook.checker = signature_checker(SECRET)
        slack.checker = lambda req: schema_errors(json.loads(req.body), SLACK_MESSAGE)
        pagerduty.checker = lambda req: pagerduty_errors(json.loads(req.body))
        pagerduty.default.status = 202
        routes = tmp_path / "alerts.yaml"
        routes.write_text(f"""
route:
  receiver: team
  group_by: [detector]
  group_wait: 3s
  group_interval: 2s
  routes:
    - matchers: ['kind="abuse"', 'severity=~"medium|high|critical"']
      receiver: pager
      continue: true
    - receiver: team
receivers:
  - name: team
    webhook_configs: [{{url: "{hook.url}/hook", secret: "{SECRET}"}}]
    slack_configs: [{{webhook_url: "{slack.url}/services/T/B/X"}}]
  - name: pager
    pagerduty_configs: [{{routing_key: "0123456789abcdef0123456789abcdef", url: "{pagerduty.url}/enqueue"}}]
    alertmanager_configs: [{{url: "{alertmanager_url}"}}]
""")
        run = subprocess.run([*_inferwatch(), "demo", "--home", str(tmp_path), "--routes", str(routes)],
                             capture_output=True, text=True, timeout=400, cwd=tmp_path,
                             env={**os.environ, "NO_PROXY": "127.0.0.1,localhost"})
        assert run.returncode == 0, run.stdout + run.stderr
        assert "paging with" in run.stdout
        assert "0 failed" in run.stdout, run.stdout

    listed = subprocess.run([*_inferwatch(), "incidents", "list", "--store", str(tmp_path / "store.db"),
                             "--json", "--limit", "1000"], capture_output=True, text=True, check=True)
    incidents = {i["id"]: i for i in map(json.loads, listed.stdout.splitlines())}
    for receiver in (hook, slack, pagerduty):
        assert receiver.received
        assert not [r.errors for r in receiver.received if r.errors]

    # Grouped by detector: the first notification of each detector's group carries the
    # incidents of its first burst together; later incidents of a detector join its group.
    payloads = hook.bodies()
    first = [p for p in payloads if p["seq"] == 1]
    assert sorted(p["groupLabels"]["detector"] for p in first) == sorted(
        {i["detector"] for i in incidents.values()})
    by_detector = Counter(i["detector"] for i in incidents.values())
    for detector, count in by_detector.items():   # the group's latest page carries all of them
        group = [p for p in payloads if p["groupLabels"]["detector"] == detector]
        latest = max(group, key=lambda p: p["seq"])
        assert len(latest["alerts"]) == count
    for p in payloads:
        assert {a["labels"]["detector"] for a in p["alerts"]} == {p["groupLabels"]["detector"]}
    assert {a["labels"]["incident_id"] for p in payloads for a in p["alerts"]} == set(incidents)
    # Deduplicated: no notification twice, and no group paged again without news.
    assert len({p["notification_id"] for p in payloads}) == len(payloads)
    news = Counter(p["groupKey"] for p in payloads)
    for key, pages in news.items():
        states = {tuple(sorted((a["labels"]["incident_id"], a["labels"]["severity"], a["status"])
                               for a in p["alerts"])) for p in payloads if p["groupKey"] == key}
        assert len(states) == pages                                    # every page says something new

    # The abuse incidents of medium severity or more went to PagerDuty and the Alertmanager.
    serious = {k for k, i in incidents.items() if i["kind"] == "abuse" and i["severity"] != "low"}
    assert serious
    triggered = {e["dedup_key"] for e in pagerduty.bodies() if e["event_action"] == "trigger"}
    assert triggered == serious
    with urllib.request.urlopen(f"{alertmanager_url}/api/v2/alerts", timeout=10) as response:
        held = {a["labels"].get("incident_id") for a in json.load(response)}
    assert serious <= held
