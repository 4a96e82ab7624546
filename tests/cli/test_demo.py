import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def _inferwatch() -> list[str]:
    script = Path(sys.executable).with_name("inferwatch")
    return [str(script)] if script.exists() else [shutil.which("inferwatch") or "inferwatch"]


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    run = subprocess.run([*_inferwatch(), "demo", "--home", str(tmp_path)], capture_output=True,
                         text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "incident filed" in run.stdout
    assert "all 5 expected kinds of incident were filed" in run.stdout
    # Both commands of the closing hint read the store the demo wrote.
    assert f"`INFERWATCH_STORE__PATH={tmp_path / 'store.db'} inferwatch incidents show ID`" in run.stdout
    listed = subprocess.run(
        [*_inferwatch(), "incidents", "list", "--store", str(tmp_path / "store.db"), "--json"],
        capture_output=True, text=True, timeout=60, check=True,
    )
    incidents = [json.loads(line) for line in listed.stdout.splitlines()]
    detectors = {i["detector"] for i in incidents}
    assert {"drift", "request_rate", "prompt_injection", "model_extraction", "integrity"} <= detectors
    # The demo is paced by the wall clock, so on a loaded machine its 2-second windows can bunch
    # an ordinary caller's requests; that no benign caller is flagged is pinned where event time
    # is fixed (tests/detectors/test_caller_scenarios.py), not here.
    assert len({i["subject"] for i in incidents if i["kind"] == "abuse"}) >= 3
    kinds = {i["kind"] for i in incidents}
    assert {"drift", "abuse", "integrity"} <= kinds
    # The second the agent was cut off its bus: the events it dropped, as it counted them.
    (lost,) = [i for i in incidents if i["detector"] == "integrity"]
    assert lost["subject"].startswith("agent:")
    assert lost["evidence"]["dropped_by_agent"] > 0
    assert lost["evidence"]["lost_after_agent"] == 0
    chat = [i for i in incidents if i["detector"] == "prompt_injection"]
    assert all(i["model"] == "demo-chat" for i in chat)
    # The events behind an incident can be found again.
    flood = next(i for i in incidents if i["detector"] == "request_rate")
    principal = flood["subject"].split(":", 1)[1]
    events = subprocess.run(
        [*_inferwatch(), "events", "search", "--store", str(tmp_path / "store.db"), "--principal",
         principal, "--limit", "5", "--json"],
        capture_output=True, text=True, timeout=60, check=True,
    )
    assert len(events.stdout.splitlines()) == 5


def test_the_demo_announces_each_incident_once_a_run_including_those_of_earlier_runs():
    from datetime import UTC, datetime, timedelta

    from inferwatch.demo.scenario import announcement
    from inferwatch.detectors.base import Finding
    from inferwatch.detectors.incidents import IncidentManager
    from inferwatch.testing import memory_store

    t0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    manager = IncidentManager(memory_store(), bucket_s=3600)

    def flood(minutes: float) -> Finding:
        return Finding(detector="request_rate", kind="abuse", severity="medium", score=0.6, title="flood",
                       summary="s", subject="principal:p1", time=t0 + timedelta(minutes=minutes),
                       event_ids=[f"e{minutes}"])

    first_run: set[str] = set()
    (opened,) = manager.apply([flood(0), flood(0.5)])  # a held finding reported with the next
    assert opened.count == 2
    assert announcement(opened, first_run, t0) == "  >> incident filed: [medium] flood (principal:p1)"
    (again,) = manager.apply([flood(1)])
    assert announcement(again, first_run, t0) is None
    second_run: set[str] = set()
    (updated,) = manager.apply([flood(2)])
    assert announcement(updated, second_run, t0 + timedelta(minutes=2)) == (
        "  >> incident updated (filed by an earlier run; 4 findings so far): [medium] flood (principal:p1)")
    manager.resolve(updated.id, actor="me")
    third_run: set[str] = set()
    (reopened,) = manager.apply([flood(3)])
    line = announcement(reopened, third_run, t0 + timedelta(minutes=3))
    assert line is not None
    assert line.startswith("  >> incident reopened (filed by an earlier run and resolved since)")


def test_the_closing_hint_reads_the_store_the_demo_wrote() -> None:
    from inferwatch.collectors.settings import load_settings
    from inferwatch.demo.scenario import _again, demo_settings

    user = load_settings(store={"urls": ["http://elastic:s3cret@es.example:9200"]})
    es_prefix = "INFERWATCH_STORE__KIND=elasticsearch INFERWATCH_STORE__URLS=http://es.example:9200 "
    assert _again(demo_settings(user, None, distributed=True), user) == es_prefix
    # `make demo-distributed` gives the addresses to the demo's process only: the shell reading
    # the hint has none, so the hint names them even when the settings came from the environment.
    assert _again(demo_settings(user, None), user) == es_prefix
    other = load_settings(store={"urls": ["http://es.example:9200"], "index_prefix": "demo3"})
    assert _again(demo_settings(other, None), other) == es_prefix + "INFERWATCH_STORE__INDEX_PREFIX=demo3 "
    plain = load_settings()
    home = demo_settings(plain, "/tmp/demo-home")
    assert _again(home, plain) == "INFERWATCH_STORE__PATH=/tmp/demo-home/store.db "
    assert _again(demo_settings(plain, None), plain) == ""


def test_each_demo_run_starts_its_detectors_afresh() -> None:
    """A run restored from the last run's checkpoint learnt the earlier floods as the flooding
    caller's usual rate, and after a few runs on the same home the demo failed; the store (and
    with it the incidents a run updates or reopens) is kept."""
    from inferwatch.collectors.settings import load_settings
    from inferwatch.demo.scenario import demo_settings

    user = load_settings(detect={"checkpoint_interval_s": 30})
    assert demo_settings(user, "/tmp/demo-home").detect.checkpoint_interval_s == 0
