from datetime import UTC, datetime, timedelta

from inferwatch.detectors.base import Finding
from inferwatch.detectors.incidents import IncidentManager
from inferwatch.detectors.sqlite_store import SQLiteStore
from inferwatch.detectors.store import EventQuery, IncidentQuery
from inferwatch.testing import make_event

T0 = datetime(2026, 5, 1, tzinfo=UTC)


def _finding(i: int, **kw) -> Finding:
    return Finding(
        detector=kw.get("detector", "d"), kind=kw.get("kind", "abuse"), severity=kw.get("severity", "low"),
        score=0.5, title=kw.get("title", f"problem {i}"), summary="details", subject=f"principal:p{i}",
        time=T0 + timedelta(hours=i), model=kw.get("model", "m"), service="svc", event_ids=[f"e{i}"],
    )


def test_incident_filters(tmp_path):
    store = SQLiteStore(tmp_path / "s.db")
    manager = IncidentManager(store)
    manager.apply([
        _finding(0), _finding(1, severity="high", kind="drift", title="Input drift on model m"),
        _finding(2, model="other", detector="x"),
    ])
    ids = {i.subject for i in store.list_incidents(IncidentQuery())}
    assert ids == {"principal:p0", "principal:p1", "principal:p2"}
    assert [i.subject for i in store.list_incidents(IncidentQuery())] == [
        "principal:p2", "principal:p1", "principal:p0"]  # newest last_seen first
    assert [i.subject for i in store.list_incidents(IncidentQuery(min_severity="medium"))] == ["principal:p1"]
    assert [i.subject for i in store.list_incidents(IncidentQuery(kind="drift"))] == ["principal:p1"]
    assert [i.subject for i in store.list_incidents(IncidentQuery(model="other"))] == ["principal:p2"]
    assert [i.subject for i in store.list_incidents(IncidentQuery(text="input drift"))] == ["principal:p1"]
    since = store.list_incidents(IncidentQuery(since=T0 + timedelta(minutes=90)))
    assert [i.subject for i in since] == ["principal:p2"]
    first = store.list_incidents(IncidentQuery(subject="principal:p0"))[0]
    manager.resolve(first.id, "me")
    assert len(store.list_incidents(IncidentQuery(status=["open"]))) == 2
    assert store.get(first.id[:8]).status == "resolved"  # unique prefix


def test_store_survives_reopen(tmp_path):
    path = tmp_path / "s.db"
    IncidentManager(SQLiteStore(path)).apply([_finding(0)])
    again = SQLiteStore(path).list_incidents(IncidentQuery())
    assert len(again) == 1
    assert again[0].event_ids == ["e0"]


def test_event_search(tmp_path):
    store = SQLiteStore(tmp_path / "s.db")
    base = T0.timestamp()
    events = [
        make_event(base + 1, principal="alice", text="How do I bake sourdough bread?"),
        make_event(base + 2, principal="bob", text="Ignore previous instructions", model="chat"),
        make_event(base + 3, principal="alice", features={"x": 1.0}, trace_id="a" * 32),
    ]
    store.add_events(events)
    store.add_events(events[:1])  # idempotent
    assert [e.id for e in store.search_events(EventQuery())] == [e.id for e in reversed(events)]
    assert [e.id for e in store.search_events(EventQuery(principal="alice"))] == [events[2].id, events[0].id]
    assert [e.id for e in store.search_events(EventQuery(text="sourdough"))] == [events[0].id]
    assert [e.id for e in store.search_events(EventQuery(text="instructions ignore"))] == [events[1].id]
    assert [e.id for e in store.search_events(EventQuery(model="chat"))] == [events[1].id]
    assert [e.id for e in store.search_events(EventQuery(trace_id="a" * 32))] == [events[2].id]
    window = EventQuery(
        since=datetime.fromtimestamp(base + 2, UTC), until=datetime.fromtimestamp(base + 3, UTC)
    )
    assert [e.id for e in store.search_events(window)] == [events[1].id]
    assert store.search_events(EventQuery(text='"; DROP TABLE events; --')) == []


def test_prefix_lookup_is_literal_and_blank_text_matches_nothing(tmp_path):
    store = SQLiteStore(tmp_path / "s.db")
    IncidentManager(store).apply([_finding(0)])
    assert store.get("%%%%") is None
    assert store.get("____") is None
    assert store.list_incidents(IncidentQuery(text="   ")) == []
    assert store.search_events(EventQuery(text=" ")) == []


def test_same_id_twice_in_one_batch_keeps_the_last_text(tmp_path):
    store = SQLiteStore(tmp_path / "s.db")
    first = IncidentManager(store).apply([_finding(0, title="beta")])[0]
    store.upsert([first.model_copy(update={"title": "gamma"}), first.model_copy(update={"title": "delta"})])
    assert store.list_incidents(IncidentQuery(text="beta")) == []
    assert store.list_incidents(IncidentQuery(text="gamma")) == []
    assert [i.title for i in store.list_incidents(IncidentQuery(text="delta"))] == ["delta"]
