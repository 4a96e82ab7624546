"""Investigation on real Elasticsearch: the same scenario as tests/cli/test_investigate.py, and the
same answers as the SQLite store gives, through the same ``inferwatch incidents`` handlers.

Both stores are filled from one file of events by the same detectors; every incident's timeline
(JSON and table) and report (JSON and Markdown) must then read the same on both.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from inferwatch.collectors.settings import StoreSettings
from inferwatch.detectors import investigation
from inferwatch.detectors.es_store import ElasticsearchStore
from inferwatch.detectors.incidents import Incident
from inferwatch.detectors.sqlite_store import SQLiteStore
from inferwatch.detectors.store import IncidentQuery
from tests.cli.test_investigate import (
    INJECTION,
    STUFFED_IP,
    add_notifications,
    find,
    json_lines,
    populate,
    run_cli,
    write_events,
)
from tests.integration.conftest import LocalServices, unique_name

pytestmark = pytest.mark.integration


@dataclass
class Stores:
    sqlite_path: str
    es_url: str
    prefix: str
    incidents: list[Incident]  # as the SQLite store has them


@pytest.fixture(scope="module")
def stores(local_services: LocalServices, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stores]:
    """The scenario in a SQLite file and under a fresh Elasticsearch prefix, with notifications."""
    where = tmp_path_factory.mktemp("investigate-es")
    events_file, _ = write_events(where / "events.jsonl")
    sqlite = SQLiteStore(where / "store.db")
    prefix = unique_name("iw-investigate")
    es = ElasticsearchStore(StoreSettings(kind="elasticsearch", urls=[local_services.es_url],
                                          index_prefix=prefix), refresh_events=True)
    es.setup()
    try:
        for store in (sqlite, es):
            populate(store, events_file)
            add_notifications(store, find(store, "prompt_injection"), find(store, "request_rate"))
        incidents = sqlite.list_incidents(IncidentQuery(limit=1000))
        yield Stores(str(where / "store.db"), local_services.es_url, prefix, incidents)
    finally:
        sqlite.close()
        es.drop()
        es.close()


def open_es(stores: Stores) -> ElasticsearchStore:
    settings = StoreSettings(kind="elasticsearch", urls=[stores.es_url], index_prefix=stores.prefix)
    return ElasticsearchStore(settings)


def on_sqlite(capsys: pytest.CaptureFixture[str], stores: Stores, *argv: str) -> tuple[int, str, str]:
    code = run_cli(*argv, "--store", stores.sqlite_path)
    out = capsys.readouterr()
    return code, out.out, out.err


def on_es(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, stores: Stores,
          *argv: str) -> tuple[int, str, str]:
    """The same command with the store configured as a user would: through the environment."""
    with monkeypatch.context() as env:
        env.setenv("INFERWATCH_STORE__KIND", "elasticsearch")
        env.setenv("INFERWATCH_STORE__URLS", stores.es_url)
        env.setenv("INFERWATCH_STORE__INDEX_PREFIX", stores.prefix)
        code = run_cli(*argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def comparable(incident: dict[str, Any]) -> dict[str, Any]:
    """An incident without ``updated_at``: the wall clock of the write, which differs between
    two stores filled one after the other (everything else comes from the events)."""
    return {k: v for k, v in incident.items() if k != "updated_at"}


def without_clocks(bundle: dict[str, Any]) -> dict[str, Any]:
    """A report without what the wall clock decides: when it was made, when the incident was written."""
    out = {k: v for k, v in bundle.items() if k != "generated_at"}
    return {**out, "incident": comparable(out["incident"])}


def without_generated_line(md: str) -> str:
    return "\n".join(line for line in md.splitlines() if not line.startswith("Generated "))


def test_both_stores_hold_the_same_incidents(stores: Stores) -> None:
    es = open_es(stores)
    try:
        on_es_side = es.list_incidents(IncidentQuery(limit=1000))
    finally:
        es.close()
    assert [comparable(i.public_dict()) for i in on_es_side] == [comparable(i.public_dict())
                                                                 for i in stores.incidents]
    assert {i.detector for i in stores.incidents} >= {"prompt_injection", "request_rate", "scraping", "drift",
                                                       "auth_abuse"}


def test_timelines_read_the_same(capsys, monkeypatch, stores: Stores) -> None:
    for incident in stores.incidents:
        for flags in (["--json"], [], ["--json", "--limit", "5", "--before", "2m"]):
            sqlite = on_sqlite(capsys, stores, "timeline", incident.id, *flags)
            es = on_es(capsys, monkeypatch, stores, "timeline", incident.id, *flags)
            assert sqlite[0] == 0
            assert es == sqlite, (incident.detector, incident.subject, flags)


def test_the_injection_timeline_on_elasticsearch(capsys, monkeypatch, stores: Stores) -> None:
    incident = next(i for i in stores.incidents if i.detector == "prompt_injection")
    code, out, _ = on_es(capsys, monkeypatch, stores, "timeline", incident.id, "--json")
    assert code == 0
    lines = json_lines(out)
    assert {x["event"]["principal"] for x in lines} == {"p_mallory"}
    assert [x["time"] for x in lines] == sorted(x["time"] for x in lines)
    injected = next(x for x in lines if x["event"]["input"]["text"] == INJECTION)
    assert injected["scores"]["prompt_injection"]["score"] >= 0.9
    assert injected["in_incident"] is True


def test_address_timeline_pages_the_same_on_elasticsearch(monkeypatch, stores: Stores) -> None:
    """The client-address filter reads page by page: small pages give the same answer."""
    incident = next(i for i in stores.incidents if i.subject == f"ip:{STUFFED_IP}")
    sqlite = SQLiteStore(stores.sqlite_path)
    es = open_es(stores)
    try:
        want = [e.as_dict() for e in investigation.timeline(sqlite, incident).entries]
        assert len(want) == 33
        for page in (1000, 7, 2):
            monkeypatch.setattr(investigation, "_PAGE", page)
            assert [e.as_dict() for e in investigation.timeline(es, incident).entries] == want
    finally:
        sqlite.close()
        es.close()


def test_reports_read_the_same(capsys, monkeypatch, stores: Stores) -> None:
    for incident in stores.incidents:
        sqlite = on_sqlite(capsys, stores, "report", incident.id, "--format", "json")
        es = on_es(capsys, monkeypatch, stores, "report", incident.id, "--format", "json")
        assert sqlite[0] == es[0] == 0
        assert without_clocks(json.loads(es[1])) == without_clocks(json.loads(sqlite[1]))
        sqlite_md = on_sqlite(capsys, stores, "report", incident.id)
        es_md = on_es(capsys, monkeypatch, stores, "report", incident.id)
        # The SQLite report was made with --store, which its suggested commands carry; the
        # Elasticsearch one from the settings, which they need not.
        store_flag = f" --store {shlex.quote(str(stores.sqlite_path))}"
        assert store_flag in sqlite_md[1]
        sqlite_text = sqlite_md[1].replace(store_flag, "")
        assert without_generated_line(es_md[1]) == without_generated_line(sqlite_text)
    flood = json.loads(on_es(capsys, monkeypatch, stores, "report",
                             next(i.id for i in stores.incidents if i.detector == "request_rate"),
                             "--json")[1])
    assert [r["detector"] for r in flood["related"]] == ["drift", "scraping"]
    assert [n["id"] for n in flood["notifications"]] == ["n2", "n3"]


def test_unknown_id_on_elasticsearch(capsys, monkeypatch, stores: Stores) -> None:
    code, _, err = on_es(capsys, monkeypatch, stores, "report", "doesnotexist")
    assert code == 1  # not found
    assert "inferwatch incidents list" in err


def test_an_incidents_sample_events_are_found_by_id(capsys, monkeypatch, stores: Stores) -> None:
    from inferwatch.cli import main

    incident = find_incident(stores, "prompt_injection")
    with monkeypatch.context() as env:
        env.setenv("INFERWATCH_STORE__KIND", "elasticsearch")
        env.setenv("INFERWATCH_STORE__URLS", stores.es_url)
        env.setenv("INFERWATCH_STORE__INDEX_PREFIX", stores.prefix)
        assert main(["events", "search", "--incident", incident.id[:6], "--json"]) == 0
    found = json_lines(capsys.readouterr().out)
    assert sorted(e["id"] for e in found) == sorted(incident.event_ids)


@pytest.mark.parametrize("command", [["incidents", "list"], ["events", "search"], ["alerts", "log"],
                                     ["incidents", "show", "abcd"], ["silence", "list"]])
def test_reading_a_store_never_set_up_says_so_and_sets_nothing_up(
        capsys, monkeypatch, local_services: LocalServices, command: list[str]) -> None:
    from elasticsearch import Elasticsearch

    from inferwatch.cli import main

    prefix = unique_name("iw-never-set-up")
    with monkeypatch.context() as env:
        env.setenv("INFERWATCH_STORE__KIND", "elasticsearch")
        env.setenv("INFERWATCH_STORE__URLS", local_services.es_url)
        env.setenv("INFERWATCH_STORE__INDEX_PREFIX", prefix)
        assert main(command) == 1
    expected = f"no inferwatch store at {local_services.es_url} with index prefix {prefix!r}"
    assert expected in capsys.readouterr().err
    client = Elasticsearch(local_services.es_url)
    try:  # a reader's key may not manage templates: reading must not try to
        assert not client.indices.exists_index_template(name=f"{prefix}-incidents")
        assert not client.indices.exists(index=f"{prefix}-*", allow_no_indices=False)
    finally:
        client.close()


def find_incident(stores: Stores, detector: str) -> Incident:
    return next(i for i in stores.incidents if i.detector == detector)
