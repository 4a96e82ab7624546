"""The notifier over both stores: incidents filed, acknowledged (from the CLI) and resolved reach a
webhook once each, and a notifier restarted on the same store repeats nothing — on SQLite and on
real Elasticsearch alike."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from inferwatch.cli import main
from inferwatch.collectors.settings import AlertingSettings, StoreSettings
from inferwatch.detectors.alerts.config import load_alerting_config
from inferwatch.detectors.alerts.model import NotificationQuery
from inferwatch.detectors.alerts.notifier import Notifier
from inferwatch.detectors.base import Finding
from inferwatch.detectors.es_store import ElasticsearchStore
from inferwatch.detectors.incidents import IncidentManager
from inferwatch.detectors.sqlite_store import SQLiteStore
from tests.alerts.helpers import LocalReceiver, signature_checker
from tests.integration.conftest import unique_name

SECRET = "both-stores"


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(params=["sqlite", pytest.param("elasticsearch", marks=pytest.mark.integration)])
def store_and_flags(request: pytest.FixtureRequest, tmp_path: Path,
                    monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, list[str]]]:
    if request.param == "sqlite":
        sqlite = SQLiteStore(tmp_path / "store.db")
        yield sqlite, ["--store", str(tmp_path / "store.db")]
        sqlite.close()
        return
    services = request.getfixturevalue("local_services")
    prefix = unique_name("iw-alerts")
    es = ElasticsearchStore(StoreSettings(kind="elasticsearch", urls=[services.es_url], index_prefix=prefix))
    es.setup()
    monkeypatch.setenv("INFERWATCH_STORE__KIND", "elasticsearch")
    monkeypatch.setenv("INFERWATCH_STORE__URLS", services.es_url)
    monkeypatch.setenv("INFERWATCH_STORE__INDEX_PREFIX", prefix)
    try:
        yield es, []
    finally:
        es.drop()
        es.close()


def test_file_ack_resolve_restart_on_either_store(
    store_and_flags: tuple[Any, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    store, flags = store_and_flags
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with LocalReceiver() as hook:
        hook.checker = signature_checker(SECRET)
        routes = tmp_path / "alerts.yaml"
        routes.write_text(f"""
route: {{receiver: team, group_by: [subject], group_wait: 5s, group_interval: 1m}}
receivers:
  - name: team
    webhook_configs: [{{url: "{hook.url}/hook", secret: "{SECRET}"}}]
""")
        config = load_alerting_config(routes)
        clock = Clock()
        manager = IncidentManager(store, clock=clock)
        notifier = Notifier(config, store, AlertingSettings(), clock=clock)

        (incident,) = manager.apply([Finding(
            detector="prompt_injection", kind="abuse", severity="high", score=0.97, title="Injection",
            summary="ignore previous instructions", subject="principal:p_mallory", time=clock.now,
            service="chat", model="m", event_ids=["ev-1"])])
        notifier.tick()
        clock.now += timedelta(seconds=6)
        notifier.tick()
        assert [a["status"] for b in hook.bodies() for a in b["alerts"]] == ["firing"]

        # Acknowledged from the CLI, as the person on call does it.
        assert main(["incidents", "ack", incident.id, "--actor", "alice", "--note", "on it", *flags]) == 0
        clock.now += timedelta(minutes=1)
        notifier.tick()
        acked = hook.bodies()[-1]["alerts"][0]
        assert (acked["incident_status"], acked["actor"], acked["note"]) == ("acknowledged", "alice", "on it")

        # A restarted notifier (a new process) resumes: nothing is sent again.
        sent = len(hook.received)
        restarted = Notifier(config, store, AlertingSettings(), clock=clock)
        for _ in range(3):
            clock.now += timedelta(minutes=1)
            restarted.tick()
        assert len(hook.received) == sent

        manager.resolve(incident.id, "bob", "blocked")
        clock.now += timedelta(minutes=1)
        restarted.tick()
        assert hook.bodies()[-1]["status"] == "resolved"
        assert len(hook.received) == sent + 1

        log = store.list_notifications(NotificationQuery(incident_id=incident.id, limit=-1))
        assert [n.seq for n in log] == [3, 2, 1]
        assert all(n.status == "delivered" for n in log)
        assert len({r.headers["X-Inferwatch-Notification-Id"] for r in hook.received}) == 3
