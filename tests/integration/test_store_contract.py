"""One contract, two stores: SQLite and Elasticsearch give the same answers to the same questions.

Every test here runs twice, on the embedded SQLite store and on the Elasticsearch store against
the real node from deploy/local; only the Elasticsearch run is an integration test. The expected
answers are written out once, so a store that differs from the other fails here.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from inferwatch.collectors.event import EventOutput
from inferwatch.collectors.settings import StoreSettings
from inferwatch.detectors import es_store, sqlite_store
from inferwatch.detectors.alerts.model import (
    Lease,
    Matcher,
    Notification,
    NotificationAlert,
    NotificationQuery,
    Silence,
    notification_id,
)
from inferwatch.detectors.base import Finding
from inferwatch.detectors.drift.reference import ReferenceRecord
from inferwatch.detectors.drift.sketch import WindowSummary
from inferwatch.detectors.es_store import ElasticsearchStore
from inferwatch.detectors.incidents import Incident, IncidentManager, NoSuchIncident
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


def test_a_person_reopens_and_annotates_an_incident(store: Any) -> None:
    manager = IncidentManager(store)
    [filed] = manager.apply([finding(0, "principal:p0")])
    manager.resolve(filed.id, "alice", "blocked")
    reopened = manager.reopen(filed.id[:6], "bob", "not over")
    assert store.get(filed.id) == reopened
    assert store.find_active("rate", "principal:p0", "m") == reopened  # active again: findings join it
    assert subjects(store.list_incidents(IncidentQuery(status=["open"]))) == ["principal:p0"]
    noted = manager.add_note(filed.id, "carol", "customer told")
    assert store.get(filed.id) == noted
    assert [(h.action, h.actor, h.note) for h in noted.history] == [
        ("opened", "inferwatch", filed.history[0].note), ("resolved", "alice", "blocked"),
        ("reopened", "bob", "not over"), ("noted", "carol", "customer told")]
    assert noted.status == "open"

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
    twins = [a.model_copy(update={"id": f"abcd{n}{'0' * 11}", "fingerprint": str(n)}).at_revision(None)
             for n in (1, 2)]  # new incidents: a's revision does not apply to them
    store.upsert(twins)
    assert store.get(a.id) == a
    assert store.get(a.id[:4]) == a
    assert store.get(a.id[:6].upper()) == a                   # prefixes ignore case
    assert store.get(a.id[:3]) is None                       # too short to be a prefix
    with pytest.raises(NoSuchIncident, match=r"id prefix 'abcd' is shared by several incidents "
                                             r"\(abcd10{11}, abcd20{11}\): give more of the id"):
        store.get("abcd")                                     # two incidents start so: ambiguous
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


def test_a_write_based_on_a_stale_read_is_refused(store: Any) -> None:
    [new] = IncidentManager(store).apply(FINDINGS[:1])
    assert new.revision is not None  # written: it now carries the store's revision
    mine, theirs = store.get(new.id), store.get(new.id)
    assert mine.revision == theirs.revision == new.revision
    theirs.status = "acknowledged"
    assert store.upsert([theirs]) == []
    assert theirs.revision != mine.revision  # the object written moved on with the store
    mine.count = 7
    assert store.upsert([mine]) == [new.id]  # read before their change: refused, not written
    assert (store.get(new.id).status, store.get(new.id).count) == ("acknowledged", 1)
    again = store.get(new.id)
    again.count = 7
    assert store.upsert([again]) == []  # read again: written
    assert (store.get(new.id).status, store.get(new.id).count) == ("acknowledged", 7)
    # In one batch, only the stale one is left out.
    [other] = IncidentManager(store).apply(FINDINGS[2:3])
    stale, fresh = store.get(new.id), store.get(other.id)
    store.upsert([store.get(new.id)])
    assert store.upsert([stale, fresh]) == [new.id]
    # An incident never read (no revision) is written as it is.
    blind = new.model_copy(update={"title": "blind write"}).at_revision(None)
    assert store.upsert([blind]) == []
    assert store.get(new.id).title == "blind write"


def test_a_person_and_a_detector_changing_one_incident_keep_both_changes(store: Any) -> None:
    """The detector reads an incident, a person acknowledges it, the detector writes its update:
    the update is applied again on the acknowledged incident instead of overwriting the ack; and
    the other way round."""
    detector, person = IncidentManager(store), IncidentManager(store)
    [incident] = detector.apply(FINDINGS[:1])

    class AckWhileReading:
        def __init__(self) -> None:
            self.armed = True

        def __getattr__(self, name: str) -> Any:
            return getattr(store, name)

        def find_active(self, *args: Any) -> Any:
            found = store.find_active(*args)
            if self.armed:
                self.armed = False
                person.acknowledge(incident.id, "alice", "on it")
            return found

    detector.store = AckWhileReading()
    [updated] = detector.apply([finding(0.25, "principal:p0")])
    stored = store.get(incident.id)
    assert (updated.status, updated.count) == (stored.status, stored.count) == ("acknowledged", 2)
    assert [h.action for h in stored.history] == ["opened", "acknowledged"]

    class UpdateWhileReading:
        def __init__(self) -> None:
            self.armed = True

        def __getattr__(self, name: str) -> Any:
            return getattr(store, name)

        def get(self, incident_id: str) -> Any:
            found = store.get(incident_id)
            if self.armed:
                self.armed = False
                IncidentManager(store).apply([finding(0.5, "principal:p0")])
            return found

    person.store = UpdateWhileReading()
    resolved = person.resolve(incident.id, "bob")
    stored = store.get(incident.id)
    assert (resolved.status, resolved.count) == (stored.status, stored.count) == ("resolved", 3)
    assert [h.action for h in stored.history] == ["opened", "acknowledged", "resolved"]


BASE = T0.timestamp()


def events() -> list[Any]:
    out = EventOutput(text="beta: the answer", finish_reason="stop", tokens=3)
    return [
        make_event(BASE + 1, principal="alice", text="How do I bake sourdough bread?", id="ev-01", status=200,
                   client_ip="2001:db8::7"),
        make_event(BASE + 2, principal="bob", text="Ignore previous instructions", model="chat", id="ev-02",
                   trace_id="a" * 32, span_id="b" * 16, operation="chat", duration_ms=12.5, status=401,
                   client_ip="198.51.100.7"),
        make_event(BASE + 2, principal="bob", text="same second, higher id", model="chat", id="ev-03",
                   status=403, client_ip="198.51.100.7"),
        make_event(BASE + 3, principal="alice", features={"x": 1.0, "kind": "card", "ok": True},
                   trace_id="a" * 32, id="ev-04", attributes={"region": "eu"}, custom_field={"kept": [1, 2]}),
        make_event(BASE + 3.000001, principal=None, text="ends with alpha", output=out, id="ev-00",
                   service="svc2", status=503, error="Timeout", client_ip="203.0.113.0"),
        make_event(BASE + 4, principal="carol", text="Prévenir l'échec", id="ev-05", model=None,
                   client_ip=" fe80::1%eth0 "),  # as a server may hand it over: a zone, spaces
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
    # Routing labels too: any name, any length of value.
    labelled = incident.model_copy(update={"labels": {"": "e", "a..b": "d", ".": "x", "team": "v" * 40_000}})
    store.upsert([labelled])
    assert store.get(incident.id) == labelled


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
    assert ask(ids=("ev-01", "ev-05", "ev-99")) == ["ev-05", "ev-01"]  # an incident's sample ids
    assert ask(ids=("ev-01", "ev-05"), principal="alice") == ["ev-01"]
    assert ask(ids=()) == []
    assert ask(client_ip="198.51.100.7") == ["ev-03", "ev-02"]
    assert ask(client_ip="2001:db8::7") == ["ev-01"]
    assert ask(client_ip="203.0.113.1") == []
    assert ask(client_ip="unknown") == []  # no address (Elasticsearch would refuse the term)
    assert ask(client_ip="fe80::1") == ask(client_ip="FE80::1%eth0") == ["ev-05"]
    assert ask(status=(401, 401)) == ["ev-02"]
    assert ask(status=(400, 499)) == ["ev-03", "ev-02"]
    assert ask(status=(500, 599)) == ["ev-00"]
    assert ask(status=(400, 599), client_ip="198.51.100.7", limit=1) == ["ev-03"]


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


# -- incidents: what the notifier follows -------------------------------------------------------


def test_incidents_updated_since(store: Any) -> None:
    filed = {i.subject: i for i in IncidentManager(store).apply(FINDINGS)}
    changed = {
        "principal:p0": T0 + timedelta(hours=1),
        "principal:p1": T0 + timedelta(hours=1) + US,
        "principal:p4": T0 + timedelta(hours=2),
    }
    # The others, as stored before updated_at was kept: never recorded, never matched.
    store.upsert([i.model_copy(update={"updated_at": changed.get(s), "labels": {"team": "fraud"}})
                  for s, i in filed.items()])
    assert store.get(filed["principal:p1"].id).updated_at == T0 + timedelta(hours=1) + US
    assert store.get(filed["principal:p1"].id).labels == {"team": "fraud"}

    def ask(**kw: Any) -> list[str]:
        return subjects(store.list_incidents(IncidentQuery(**kw)))

    everything = ["principal:p4", "principal:p1", "principal:p0"]   # newest last_seen first
    assert ask(updated_since=T0 - timedelta(days=365)) == everything
    assert ask(updated_since=T0 + timedelta(hours=1)) == everything   # inclusive
    assert ask(updated_since=T0 + timedelta(hours=1) + US) == ["principal:p4", "principal:p1"]
    assert ask(updated_since=T0 + timedelta(hours=2) + US) == []
    assert ask(updated_since=T0, limit=2) == everything[:2]
    assert ask(updated_since=T0, subject="principal:p0") == ["principal:p0"]
    assert ask(updated_since=T0, status=["resolved"]) == []
    assert len(ask()) == 7                                            # no filter: every incident
    # Quiet incidents to auto-resolve: last seen strictly before a time.
    assert ask(last_seen_before=T0 + timedelta(hours=2)) == ["principal:p1", "principal:p0"]
    assert ask(last_seen_before=T0 + timedelta(hours=4)) == [
        "ip:203.0.113.0", "principal:p2", "principal:p1", "principal:p0"]
    assert ask(last_seen_before=T0) == []
    # Written again without updated_at: it no longer matches.
    store.upsert([store.get(filed["principal:p4"].id).model_copy(update={"updated_at": None})])
    assert ask(updated_since=T0) == ["principal:p1", "principal:p0"]


# -- silences ---------------------------------------------------------------------------------


def silence(sid: str, created: float, ends: float, *, starts: float | None = None, **kw: Any) -> Silence:
    """A silence created ``created`` hours after T0, in force from ``starts`` (default: created)
    until ``ends`` hours."""
    at = lambda h: T0 + timedelta(hours=h)  # noqa: E731
    return Silence(id=sid, matchers=[Matcher(name="service", op="=", value="svc"),
                                     Matcher(name="severity", op="=~", value="low|medium")],
                   starts_at=at(created if starts is None else starts), ends_at=at(ends),
                   created_by=kw.pop("created_by", "alice"), comment=kw.pop("comment", "maintenance"),
                   created_at=at(created), **kw)


def silence_ids(found: list[Silence]) -> list[str]:
    return [s.id for s in found]


def test_silences(store: Any) -> None:
    assert store.list_silences(include_expired=True) == []
    assert store.get_silence("nope") is None
    ended = silence("s-ended", 0.5, 1)
    current = silence("s-current", 0, 2)
    future = silence("s-future", 1, 4, starts=3)               # not yet in force, not ended either
    twin = silence("s-a-twin", 1, 3)                           # same created_at as s-future: by id
    for s in (ended, current, future, twin):
        store.save_silence(s)
    assert store.get_silence("s-current") == current          # everything round-trips
    hour = T0 + timedelta(hours=1)

    def listed(**kw: Any) -> list[str]:
        return silence_ids(store.list_silences(**kw))

    assert listed(now=hour) == ["s-a-twin", "s-future", "s-current"]  # newest created_at first
    assert listed(now=hour - US) == ["s-a-twin", "s-future", "s-ended", "s-current"]
    assert listed(now=hour, include_expired=True) == ["s-a-twin", "s-future", "s-ended", "s-current"]
    assert listed(include_expired=True) == listed(now=hour, include_expired=True)
    assert listed(now=T0 + timedelta(hours=4)) == []
    assert listed() == []                                      # now: every one of them has ended

    # Expiring is saving again with ends_at = now: replaced by id, kept for the record.
    expired = current.model_copy(update={"ends_at": hour, "comment": "done early"})
    store.save_silence(expired)
    assert store.get_silence("s-current") == expired
    assert listed(now=hour) == ["s-a-twin", "s-future"]
    assert listed(include_expired=True) == ["s-a-twin", "s-future", "s-ended", "s-current"]
    lasting = silence("s-lasting", 2, 24 * 365 * 100)
    store.save_silence(lasting)
    assert listed() == ["s-lasting"]                           # now is the current time


# -- notifications ----------------------------------------------------------------------------


def note(group: str, seq: int, minutes: float, *, receiver: str = "pager", integration: str = "webhook",
         index: int = 0, incidents: tuple[str, ...] = ("inc-a",), **kw: Any) -> Notification:
    """The ``seq``-th notification of a stream, created ``minutes`` after T0 and due then."""
    created = T0 + timedelta(minutes=minutes)
    alerts = [NotificationAlert(incident_id=i, labels={"alertname": "rate", "incident_id": i, "": "odd",
                                                       "a..b": "dots"},
                                annotations={"title": "too many requests"}, state="firing",
                                incident_status="open", starts_at=T0, updated_at=created, severity="high")
              for i in incidents]
    stream = f"{group}|{receiver}|{integration}|{index}"
    fields: dict[str, Any] = {
        "id": notification_id(stream, seq), "group_key": group, "group_labels": {"service": "svc"},
        "receiver": receiver, "integration": integration, "integration_index": index, "seq": seq,
        "created_at": created, "alerts": alerts, "next_attempt_at": created,
    }
    return Notification(**(fields | kw))


def seqs(found: list[Notification]) -> list[tuple[str, int]]:
    return [(n.group_key[:8], n.seq) for n in found]


def test_notifications_are_upserted_and_due_in_order(store: Any) -> None:
    assert store.due_notifications(T0 + timedelta(days=1)) == []
    first = note("g1", 1, 0)
    later = note("g1", 2, 5, next_attempt_at=T0 + timedelta(minutes=15))
    tied = [note("g2", 3, 0, next_attempt_at=T0 + timedelta(minutes=1)),
            note("g3", 3, 0, receiver="slack", integration="slack")]
    settled = [note("g4", 1, 0, status="delivered", delivered_at=T0 + US), note("g5", 1, 0, status="failed",
                                                                               attempts=5, last_error="503")]
    store.save_notifications([later, *tied, *settled, first])
    store.save_notifications([])
    by_id = sorted(tied, key=lambda n: n.id)

    ten = T0 + timedelta(minutes=10)
    assert store.due_notifications(ten) == [first, *by_id]    # oldest created_at, then seq, then id
    assert store.due_notifications(ten, limit=2) == [first, by_id[0]]
    assert store.due_notifications(ten, limit=0) == []
    assert store.due_notifications(T0 + timedelta(minutes=15)) == [first, *by_id, later]  # inclusive
    assert store.due_notifications(T0 + timedelta(minutes=15) - US) == [first, *by_id]
    assert store.due_notifications(T0 - US) == []

    # A retry scheduled, then a delivery: each save replaces the notification by id.
    retry = first.model_copy(update={"attempts": 1, "last_error": "timeout",
                                     "next_attempt_at": T0 + timedelta(minutes=20)})
    store.save_notifications([retry])
    assert store.due_notifications(ten) == by_id
    done = retry.model_copy(update={"status": "delivered", "attempts": 2, "last_error": None,
                                    "delivered_at": T0 + timedelta(minutes=20)})
    store.save_notifications([retry, done])                    # the same id twice: the last one wins
    assert store.due_notifications(T0 + timedelta(hours=1)) == [*by_id, later]
    logged = store.list_notifications(NotificationQuery(limit=-1))
    assert len(logged) == 6
    assert done in logged
    assert retry not in logged


def test_latest_notification_of_every_stream(store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(es_store, "PAGE_SIZE", 2)              # Elasticsearch pages through streams
    assert store.latest_notifications() == []
    long_group = "route/0|" + "service=svc," * 1000           # a group key longer than a keyword holds
    a = [note("ga", seq, seq) for seq in (1, 2, 3)]
    b = [note("gb", 1, 0, status="delivered")]
    c = [note(long_group, 2, 9), note(long_group, 1, 1)]
    d = [note("ga", 1, 2, receiver="slack", integration="slack")]       # same group, other receiver
    e = [note("ga", 7, 2, integration_index=1)]                         # other entry of the receiver
    store.save_notifications([*a[:2], *b, *c, *d])
    store.save_notifications([a[2], *e])
    latest = store.latest_notifications()
    assert latest == sorted([a[2], b[0], c[0], d[0], e[0]], key=lambda n: n.stream)
    assert [n.stream for n in latest] == sorted(n.stream for n in latest)
    a4 = note("ga", 4, 30, status="failed")
    store.save_notifications([a4])
    assert sorted(seqs(store.latest_notifications())) == sorted(
        [("ga", 4), ("gb", 1), (long_group[:8], 2), ("ga", 1), ("ga", 7)])

    # Only the streams asked for (the dispatcher reads back a group's streams when it returns),
    # paged like the rest; a stream never written is simply absent.
    asked = [c[0].stream, a4.stream, e[0].stream, "never|team|webhook|0"]
    assert store.latest_notifications(asked) == sorted([c[0], a4, e[0]], key=lambda n: n.stream)
    assert store.latest_notifications([]) == []
    monkeypatch.setattr(sqlite_store, "_IN_CHUNK", 2)             # SQLite binds the list in chunks
    assert store.latest_notifications(asked) == sorted([c[0], a4, e[0]], key=lambda n: n.stream)


def test_notification_log_filters(store: Any) -> None:
    log = [
        note("g1", 1, 0, incidents=("inc-a",), status="delivered"),
        note("g1", 2, 10, incidents=("inc-a", "inc-b"), status="failed"),
        note("g2", 1, 10, incidents=("inc-b",), receiver="slack", integration="slack"),
        note("g2", 2, 20, incidents=("inc-c",), receiver="slack", integration="slack", status="delivered"),
        note("g3", 5, 10, incidents=("inc-a",)),
    ]
    store.save_notifications(log)

    def ask(**kw: Any) -> list[tuple[str, int]]:
        return seqs(store.list_notifications(NotificationQuery(**kw)))

    everything = [("g2", 2), ("g3", 5), ("g1", 2), ("g2", 1), ("g1", 1)]  # newest created_at, then seq
    assert ask() == everything
    assert store.list_notifications(NotificationQuery())[0] == log[3]      # everything round-trips
    assert ask(status=[]) == everything
    assert ask(status=["pending"]) == [("g3", 5), ("g2", 1)]
    assert ask(status=["failed", "delivered"]) == [("g2", 2), ("g1", 2), ("g1", 1)]
    assert ask(receiver="slack") == [("g2", 2), ("g2", 1)]
    assert ask(receiver="slac") == []
    assert ask(incident_id="inc-a") == [("g3", 5), ("g1", 2), ("g1", 1)]
    assert ask(incident_id="inc-b") == [("g1", 2), ("g2", 1)]
    assert ask(incident_id="inc") == []
    assert ask(since=T0 + timedelta(minutes=10)) == everything[:4]          # inclusive
    assert ask(since=T0 + timedelta(minutes=10) + US) == [("g2", 2)]
    assert ask(limit=2) == everything[:2]
    assert ask(limit=0) == []
    assert ask(status=["delivered", "failed"], receiver="pager", incident_id="inc-a", limit=1) == [("g1", 2)]
    assert ask(stream=log[2].stream) == [("g2", 2), ("g2", 1)]              # one stream: its seqs
    assert ask(stream="g1|pager|webhook|0") == [("g1", 2), ("g1", 1)]
    assert ask(stream="g1|pager|webhook|1") == []

    # A notification saved again with other alerts is found by its new incidents only.
    store.save_notifications([log[1].model_copy(update={"alerts": log[3].alerts})])
    assert ask(incident_id="inc-b") == [("g2", 1)]
    assert ask(incident_id="inc-c") == [("g2", 2), ("g1", 2)]


def test_old_notifications_and_ended_silences_are_forgotten(store: Any) -> None:
    log = [
        note("g1", 1, 0, status="delivered"),                   # old, settled: forgotten
        note("g1", 2, 5, status="failed"),                      # old, settled: forgotten
        note("g1", 3, 10, status="superseded"),                 # old but its stream's latest: kept
        note("g2", 1, 0),                                       # old but pending: kept
        note("g2", 2, 90, status="delivered"),                  # new: kept
        note("g3", 1, 0, status="delivered", incidents=("inc-z",)),  # old, g3's latest: kept
    ]
    store.save_notifications(log)
    for s in (silence("s-ended", 0, 0.5), silence("s-current", 0, 48)):
        store.save_silence(s)
    cutoff = T0 + timedelta(hours=1)
    assert store.prune_alerting(cutoff) == 3                    # two notifications, one silence
    assert sorted(seqs(store.list_notifications(NotificationQuery(limit=-1)))) == [
        ("g1", 3), ("g2", 1), ("g2", 2), ("g3", 1)]
    assert seqs(store.list_notifications(NotificationQuery(incident_id="inc-a", status=["delivered"]))) == [
        ("g2", 2)]
    assert silence_ids(store.list_silences(include_expired=True)) == ["s-current"]
    assert sorted(seqs(store.latest_notifications())) == [("g1", 3), ("g2", 2), ("g3", 1)]
    assert store.prune_alerting(cutoff) == 0                    # nothing more to forget


def test_checkpoints_are_kept_per_key_and_replaced(store: Any) -> None:
    assert store.load_checkpoint("g:events:0,1") is None
    blob = bytes(range(256)) * 4_000  # about 1 MB of every byte value
    store.save_checkpoint("g:events:0,1", blob)
    store.save_checkpoint("g:events:2", b"other")
    assert store.load_checkpoint("g:events:0,1") == blob
    store.save_checkpoint("g:events:0,1", b"newer")
    assert store.load_checkpoint("g:events:0,1") == b"newer"
    assert store.load_checkpoint("g:events:2") == b"other"


def test_a_lease_has_one_holder_at_a_time(store: Any) -> None:
    """The notifiers' election: a lease is taken, renewed by its holder, refused to others until it
    runs out, then taken over; of several processes racing for it, exactly one gets it."""
    s = lambda seconds: T0 + timedelta(seconds=seconds)  # noqa: E731
    held = lambda holder, until: Lease(name="notifier", holder=holder, expires_at=s(until))  # noqa: E731
    assert store.acquire_lease("notifier", "a", s(0), 30) == held("a", 30)
    assert store.acquire_lease("notifier", "b", s(29), 30) == held("a", 30)
    assert store.acquire_lease("notifier", "a", s(20), 30) == held("a", 50)  # renewed
    assert store.acquire_lease("notifier", "b", s(49), 30) == held("a", 50)
    assert store.acquire_lease("other", "b", s(49), 30).holder == "b"  # leases are by name
    assert store.acquire_lease("notifier", "b", s(50), 30) == held("b", 80)  # ran out: taken over
    assert store.acquire_lease("notifier", "a", s(60), 30) == held("b", 80)

    racers = 6
    handles = [SQLiteStore(store.path) if isinstance(store, SQLiteStore)
               else ElasticsearchStore(store.settings) for _ in range(racers)]
    start = threading.Barrier(racers)

    def race(i: int) -> Lease:
        start.wait()
        return handles[i].acquire_lease("notifier", f"racer{i}", s(200), 30)

    try:
        with ThreadPoolExecutor(racers) as pool:
            seen = list(pool.map(race, range(racers)))
    finally:
        for handle in handles:
            handle.close()
    winners = {lease.holder for lease in seen}
    assert len(winners) == 1, seen
    assert winners <= {f"racer{i}" for i in range(racers)}
    assert store.acquire_lease("notifier", "a", s(201), 30).holder in winners
