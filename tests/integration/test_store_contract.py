"""One contract, two stores: SQLite and Elasticsearch give the same answers to the same questions.

Every test here runs twice, on the embedded SQLite store and on the Elasticsearch store against
the real node from deploy/local; only the Elasticsearch run is an integration test. The expected
answers are written out once, so a store that differs from the other fails here.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from inferwatch.collectors.event import EventOutput
from inferwatch.collectors.settings import StoreSettings
from inferwatch.detectors.base import Finding
from inferwatch.detectors.drift.reference import ReferenceRecord
from inferwatch.detectors.drift.sketch import WindowSummary
from inferwatch.detectors.es_store import ElasticsearchStore
from inferwatch.detectors.incidents import Incident, IncidentManager
from inferwatch.detectors.sqlite_store import SQLiteStore
from inferwatch.detectors.store import EventQuery, IncidentQuery
from inferwatch.testing import make_event
from tests.integration.conftest import unique_name

T0 = datetime(2026, 5, 1, tzinfo=UTC)
US = timedelta(microseconds=1)


STORES = ["sqlite", pytest.param("elasticsearch", marks=pytest.mark.integration)]


def open_store(request: pytest.FixtureRequest, path: Path) -> Iterator[Any]:
    if request.param == "sqlite":
        sqlite = SQLiteStore(path)
        yield sqlite
        sqlite.close()
        return
    services = request.getfixturevalue("local_services")
    prefix = unique_name("iw-test")
    settings = StoreSettings(kind="elasticsearch", urls=[services.es_url], index_prefix=prefix)
    es = ElasticsearchStore(settings, refresh_events=True)
    es.setup()
    try:
        yield es
    finally:
        es.drop()
        es.close()


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """An empty store of each kind."""
    yield from open_store(request, tmp_path / "s.db")


@pytest.fixture(scope="module", params=STORES)
def searchable(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A store of each kind holding the incidents of FINDINGS and the events of events(), to read."""
    for store in open_store(request, tmp_path_factory.mktemp("searchable") / "s.db"):
        IncidentManager(store).apply(FINDINGS)
        store.add_events(events())
        yield store


def finding(hours: float, subject: str, **kw: Any) -> Finding:
    return Finding(
        detector=kw.pop("detector", "rate"), kind=kw.pop("kind", "abuse"), severity=kw.pop("severity", "low"),
        score=kw.pop("score", 0.5), title=kw.pop("title", f"too many requests from {subject}"),
        summary=kw.pop("summary", "request rate over the principal's baseline"), subject=subject,
        time=T0 + timedelta(hours=hours), model=kw.pop("model", "m"), service=kw.pop("service", "svc"),
        event_ids=kw.pop("event_ids", [f"e-{subject}-{hours}"]), **kw,
    )


def subjects(incidents: list[Incident]) -> list[str]:
    return [i.subject for i in incidents]


FINDINGS = [
    finding(0, "principal:p0"),
    finding(1, "principal:p1", severity="high", kind="drift", detector="numeric_drift",
            title="Input drift on model m", summary="KS statistic 0.31 over threshold 0.2 for amount"),
    finding(2, "principal:p2", model="other", detector="x"),
    finding(3, "ip:203.0.113.0", model=None, service=None, detector="auth", severity="critical",
            title="Prompt-injection attempt (jailbreak family)", summary="pattern 'ignore previous'"),
    finding(4, "principal:p4", service="svc2", severity="medium", title="Café déjà vu: replayed prompts"),
    # Same last_seen as p4 to the microsecond: ties are broken by id.
    finding(4, "principal:p5", service="svc2", severity="info", title="quiet"),
    finding(4, "principal:p6", title="one microsecond later"),
]
FINDINGS[-1] = FINDINGS[-1].model_copy(update={"time": FINDINGS[-1].time + US})


def test_incident_lifecycle(store: Any) -> None:
    manager = IncidentManager(store)
    filed = manager.apply(FINDINGS)
    assert len(filed) == 7
    newest_first = sorted(filed, key=lambda i: (-i.last_seen.timestamp(), i.id))
    assert store.list_incidents(IncidentQuery()) == newest_first

    # The same finding again (a redelivered event) changes nothing; a new one updates.
    assert manager.apply([FINDINGS[0]]) == []
    [updated] = manager.apply([finding(0.25, "principal:p0", severity="medium")])
    assert (updated.count, updated.severity, updated.id) == (2, "medium", filed[0].id)
    assert store.get(updated.id) == updated  # everything round-trips, bookkeeping included
    assert store.get(updated.id).finding_digests == updated.finding_digests

    p1 = store.find_active("numeric_drift", "principal:p1", "m")
    assert p1.id == filed[1].id
    assert store.find_active("numeric_drift", "principal:p1", "other") is None
    assert store.find_active("auth", "ip:203.0.113.0", None).id == filed[3].id  # model IS NULL
    assert store.find_active("auth", "ip:203.0.113.0", "m") is None

    manager.acknowledge(p1.id, "alice", "looking")
    assert store.find_active("numeric_drift", "principal:p1", "m").status == "acknowledged"
    manager.resolve(updated.id[:8], "bob")  # a unique prefix works everywhere an id does
    assert store.find_active("rate", "principal:p0", "m") is None
    assert store.get(updated.id).status == "resolved"

    # Recurrence within the bucket reopens the same incident.
    [reopened] = manager.apply([finding(0.5, "principal:p0")])
    assert (reopened.id, reopened.status, reopened.count) == (updated.id, "open", 3)
    history = [h.action for h in store.get(reopened.id).history]
    assert history == ["opened", "escalated", "resolved", "reopened"]
    assert store.find_active("rate", "principal:p0", "m") == reopened


def test_incident_filters(store: Any) -> None:
    manager = IncidentManager(store)
    filed = {i.subject: i for i in manager.apply(FINDINGS)}
    manager.acknowledge(filed["principal:p1"].id, "alice")
    manager.resolve(filed["principal:p2"].id, "alice")

    def ask(**kw: Any) -> list[str]:
        return subjects(store.list_incidents(IncidentQuery(**kw)))

    everything = ["principal:p6", *sorted(["principal:p4", "principal:p5"], key=lambda s: filed[s].id),
                  "ip:203.0.113.0", "principal:p2", "principal:p1", "principal:p0"]
    assert ask() == everything
    assert ask(status=["open"]) == [s for s in everything if s not in ("principal:p1", "principal:p2")]
    assert ask(status=["acknowledged", "resolved"]) == ["principal:p2", "principal:p1"]
    assert ask(status=[]) == everything
    assert ask(min_severity="medium") == ["principal:p4", "ip:203.0.113.0", "principal:p1"]
    assert ask(min_severity="critical") == ["ip:203.0.113.0"]
    assert ask(kind="drift") == ["principal:p1"]
    assert ask(detector="x") == ["principal:p2"]
    assert ask(service="svc2") == [s for s in everything if s in ("principal:p4", "principal:p5")]
    assert ask(model="other") == ["principal:p2"]
    assert ask(subject="ip:203.0.113.0") == ["ip:203.0.113.0"]
    assert ask(subject="principal:p") == []  # exact, not a prefix
    assert ask(since=T0 + timedelta(hours=4)) == everything[:3]
    assert ask(since=T0 + timedelta(hours=4) + US) == ["principal:p6"]
    assert ask(since=T0 + timedelta(hours=4, microseconds=2)) == []
    assert ask(limit=2) == everything[:2]
    assert ask(limit=0) == []
    combined = ask(status=["open"], min_severity="low", service="svc", limit=2)
    assert combined == ["principal:p6", "principal:p0"]


@pytest.mark.parametrize(("text", "expected"), [
    ("input drift", ["principal:p1"]),
    ("DRIFT input", ["principal:p1"]),                      # any order, any case
    ("threshold 0.2", ["principal:p1"]),                      # the summary counts; "0.2" is one phrase
    ("prompt-injection", ["ip:203.0.113.0"]),                # a word's own pieces stay side by side
    ("injection-prompt", []),
    ("(jailbreak", ["ip:203.0.113.0"]),                      # punctuation is not part of a word
    ("'ignore previous'", ["ip:203.0.113.0"]),
    ("cafe DEJA", ["principal:p4"]),                          # accents fold
    ("café déjà", ["principal:p4"]),
    ("svc2 replayed", ["principal:p4"]),                      # service, detector, model, subject count
    ("numeric_drift", ["principal:p1"]),
    ("203.0.113.0", ["ip:203.0.113.0"]),
    ("p0", ["principal:p0"]),
    ("m svc rate p0", ["principal:p0"]),
    ("drif", []),                                             # whole words, not prefixes
    ("-", []),                                                # nothing searchable: nothing found
    ("input -", ["principal:p1"]),
    ('"; DROP TABLE incidents; --', []),
])
def test_incident_text_search(searchable: Any, text: str, expected: list[str]) -> None:
    assert subjects(searchable.list_incidents(IncidentQuery(text=text))) == expected


def test_get_by_id_and_prefix(store: Any) -> None:
    [a] = IncidentManager(store).apply(FINDINGS[:1])
    twins = [a.model_copy(update={"id": f"abcd{n}{'0' * 11}", "fingerprint": str(n)}) for n in (1, 2)]
    store.upsert(twins)
    assert store.get(a.id) == a
    assert store.get(a.id[:4]) == a
    assert store.get(a.id[:6].upper()) == a                   # prefixes ignore case
    assert store.get(a.id[:3]) is None                       # too short to be a prefix
    assert store.get("abcd") is None                          # two incidents start so: ambiguous
    assert store.get("abcd1") == twins[0]
    assert store.get("abcd10000000000000") is None
    assert store.get("") is None


def test_upsert_replaces_by_id(store: Any) -> None:
    [a] = IncidentManager(store).apply(FINDINGS[:1])
    changed = a.model_copy(update={"title": "renamed", "count": 9})
    store.upsert([changed])
    assert store.list_incidents(IncidentQuery()) == [changed]
    assert subjects(store.list_incidents(IncidentQuery(text="renamed"))) == ["principal:p0"]
    assert store.list_incidents(IncidentQuery(text="too many requests")) == []  # the old text is gone
    again = changed.model_copy(update={"count": 10})
    store.upsert([changed, again])                              # the last write of an id wins
    assert store.list_incidents(IncidentQuery()) == [again]
    store.upsert([])


BASE = T0.timestamp()


def events() -> list[Any]:
    out = EventOutput(text="beta: the answer", finish_reason="stop", tokens=3)
    return [
        make_event(BASE + 1, principal="alice", text="How do I bake sourdough bread?", id="ev-01"),
        make_event(BASE + 2, principal="bob", text="Ignore previous instructions", model="chat", id="ev-02",
                   trace_id="a" * 32, span_id="b" * 16, operation="chat", duration_ms=12.5),
        make_event(BASE + 2, principal="bob", text="same second, higher id", model="chat", id="ev-03"),
        make_event(BASE + 3, principal="alice", features={"x": 1.0, "kind": "card", "ok": True},
                   trace_id="a" * 32, id="ev-04", attributes={"region": "eu"}, custom_field={"kept": [1, 2]}),
        make_event(BASE + 3.000001, principal=None, text="ends with alpha", output=out, id="ev-00",
                   service="svc2", status=503, error="Timeout", client_ip="203.0.113.0"),
        make_event(BASE + 4, principal="carol", text="Prévenir l'échec", id="ev-05", model=None),
    ]


def test_any_feature_name_and_number_is_stored(store: Any) -> None:
    # Callers choose feature names and detectors put them in evidence; none may get a record
    # refused (Elasticsearch will not index a field named "" or "a..b", or a long over 2**63).
    odd = {"": 1.0, "a..b": 2.0, ".": 3.0, "a": 4.0, "a.b": 5.0, "x" * 300: "y"}
    event = make_event(BASE, features=odd, attributes={"a": 1, "a.b": 2, "": None}, status=10**20,
                       duration_ms=1e300, output=EventOutput(tokens=2**70))
    store.add_events([event])
    assert store.search_events(EventQuery()) == [event]
    [incident] = IncidentManager(store).apply([finding(0, "principal:p0", evidence={"features": odd})])
    assert store.get(incident.id) == incident


def ids(found: list[Any]) -> list[str]:
    return [e.id for e in found]


def test_events_round_trip_and_are_stored_once(store: Any) -> None:
    evs = events()
    store.add_events(evs)
    store.add_events([evs[1], evs[0]])                          # redelivered: kept once
    store.add_events([])
    newest_first = ["ev-05", "ev-00", "ev-04", "ev-03", "ev-02", "ev-01"]
    found = store.search_events(EventQuery())
    assert ids(found) == newest_first
    assert found == sorted(evs, key=lambda e: (e.ts, e.id), reverse=True)  # identical events come back
    assert found[2].extra_fields == {"custom_field": {"kept": [1, 2]}}


def test_event_filters(store: Any) -> None:
    store.add_events(events())

    def ask(**kw: Any) -> list[str]:
        return ids(store.search_events(EventQuery(**kw)))

    at = lambda s: datetime.fromtimestamp(BASE + s, UTC)  # noqa: E731
    assert ask(principal="alice") == ["ev-04", "ev-01"]
    assert ask(principal="nobody") == []
    assert ask(model="chat") == ["ev-03", "ev-02"]
    assert ask(service="svc2") == ["ev-00"]
    assert ask(trace_id="a" * 32) == ["ev-04", "ev-02"]
    assert ask(since=at(3)) == ["ev-05", "ev-00", "ev-04"]     # since is inclusive
    assert ask(until=at(2)) == ["ev-01"]                       # until is exclusive
    assert ask(since=at(2), until=at(3)) == ["ev-03", "ev-02"]
    assert ask(since=at(3) + US, until=at(4)) == ["ev-00"]     # to the microsecond
    assert ask(limit=3) == ["ev-05", "ev-00", "ev-04"]
    assert ask(limit=0) == []
    assert ask(principal="bob", model="chat", since=at(2), limit=1) == ["ev-03"]


@pytest.mark.parametrize(("text", "expected"), [
    ("sourdough", ["ev-01"]),
    ("instructions ignore", ["ev-02"]),
    ("IGNORE", ["ev-02"]),
    ("previous-instructions", ["ev-02"]),
    ("answer", ["ev-00"]),                                    # output text counts
    ("alpha-beta", ["ev-00"]),                                # input then output, side by side
    ("prevenir echec", ["ev-05"]),
    ("l'échec", ["ev-05"]),
    ("bread?", ["ev-01"]),
    ("bake bread sourdough", ["ev-01"]),
    ("bake cake", []),
    ("card", []),                                             # features are not text
    ('"; DROP TABLE events; --', []),
])
def test_event_text_search(searchable: Any, text: str, expected: list[str]) -> None:
    assert ids(searchable.search_events(EventQuery(text=text))) == expected


def reference(model: str, **kw: Any) -> ReferenceRecord:
    summary = WindowSummary(model, k=4)
    for i, value in enumerate([0.1, 2.5e300, -7.0]):
        summary.add_values(i + 1, {"input.x": value, "input.plan": "gold", "": "an empty feature name",
                                   "a..b": i})  # names and numbers an index mapping would refuse
    fields: dict[str, Any] = {"model": model, "source": "file", "created": T0 + US, "events": 3,
                              "origin": "/data/baseline.csv", "summary": summary.to_dict()}
    return ReferenceRecord(**(fields | kw))


def test_drift_references(store: Any) -> None:
    assert store.list_references() == []
    assert store.load_reference("fraud") is None
    assert store.delete_reference("fraud") is False
    fraud, chat = reference("fraud", model_version="4"), reference("chat/v2 é", source="warmup",
                                                                  origin="2026-05-01T00:00Z..01:00Z")
    store.save_reference(fraud)
    store.save_reference(chat)
    assert store.load_reference("fraud") == fraud  # everything round-trips, the summary included
    assert store.load_reference("fraud").created == T0 + US
    assert store.list_references() == [chat, fraud]  # by model name
    newer = reference("fraud", model_version="5", events=9, source="rolling")
    store.save_reference(newer)  # one per model: a new one replaces the old
    assert store.load_reference("fraud") == newer
    assert store.list_references() == [chat, newer]
    assert store.delete_reference("fraud") is True
    assert store.delete_reference("fraud") is False
    assert store.load_reference("fraud") is None
    assert store.list_references() == [chat]
