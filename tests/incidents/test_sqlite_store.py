import sqlite3
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


# The incidents table as inferwatch wrote it before ``updated_at`` had a column.
_OLD_INCIDENTS = """
CREATE TABLE incidents (
    id TEXT PRIMARY KEY, detector TEXT NOT NULL, kind TEXT NOT NULL, severity_rank INTEGER NOT NULL,
    status TEXT NOT NULL, service TEXT, model TEXT, subject TEXT NOT NULL, first_seen REAL NOT NULL,
    last_seen REAL NOT NULL, doc TEXT NOT NULL
);
CREATE INDEX incidents_active ON incidents(detector, subject, status);
CREATE INDEX incidents_last_seen ON incidents(last_seen);
CREATE VIRTUAL TABLE incidents_fts USING fts5(id UNINDEXED, body);
"""


def _old_store_file(path, incidents):
    db = sqlite3.connect(path)
    db.executescript(_OLD_INCIDENTS)
    for i in incidents:
        # An older inferwatch's document: without updated_at, unless it already kept it there.
        doc = i.model_dump_json(exclude=None if i.updated_at else {"updated_at", "labels"})
        db.execute("INSERT INTO incidents VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                   (i.id, i.detector, i.kind, 1, i.status, i.service, i.model, i.subject,
                    i.first_seen.timestamp(), i.last_seen.timestamp(), doc))
        db.execute("INSERT INTO incidents_fts VALUES (?, ?)", (i.id, i.title))
    db.commit()
    db.close()


def test_an_old_store_file_gains_updated_at_and_keeps_its_incidents(tmp_path):
    path = tmp_path / "old.db"
    made = IncidentManager(SQLiteStore(":memory:")).apply([_finding(0), _finding(1), _finding(2)])
    changed_at = T0 + timedelta(days=1, microseconds=7)
    old, kept_it, other = made[0].model_copy(update={"updated_at": None}), \
        made[1].model_copy(update={"updated_at": changed_at}), made[2].model_copy(update={"updated_at": None})
    _old_store_file(path, [old, kept_it, other])

    store = SQLiteStore(path)
    columns = [r[1] for r in store._conn.execute("PRAGMA table_info(incidents)")]
    assert columns[-2:] == ["updated_at", "rev"]
    indexes = {r[1] for r in store._conn.execute("PRAGMA index_list(incidents)")}
    assert "incidents_updated_at" in indexes
    assert [i.id for i in store.list_incidents(IncidentQuery())] == [other.id, kept_it.id, old.id]
    assert store.get(old.id).updated_at is None
    # Filled from the document that already had it; the others never match.
    assert [i.model_dump() for i in store.list_incidents(IncidentQuery(updated_since=changed_at))] == [
        kept_it.model_dump()]
    assert store.list_incidents(IncidentQuery(updated_since=changed_at + timedelta(microseconds=1))) == []
    assert [i.subject for i in store.list_incidents(IncidentQuery(text="problem"))] == [
        "principal:p2", "principal:p1", "principal:p0"]

    # Writes after the migration fill the new column; the file opens again without change.
    rewritten = store.get(old.id).model_copy(update={"updated_at": changed_at + timedelta(hours=1)})
    assert store.upsert([rewritten]) == []
    store.close()
    again = SQLiteStore(path)
    since = again.list_incidents(IncidentQuery(updated_since=changed_at))
    assert [i.id for i in since] == [kept_it.id, old.id]
    assert [r[1] for r in again._conn.execute("PRAGMA table_info(incidents)")].count("updated_at") == 1
    again.close()



def test_events_stored_by_an_older_version_are_found_by_address_and_status(tmp_path):
    """The events table gained client_ip and status columns (events search --client-ip/--status);
    an older file's events get them from their documents when it is opened."""
    from inferwatch.collectors.event import encode_event

    path = tmp_path / "old.db"
    stored = [make_event(T0.timestamp() + i, principal=f"p{i}", id=f"e{i}", status=status, client_ip=ip)
              for i, (status, ip) in enumerate([(200, "198.51.100.7"), (401, "::ffff:198.51.100.7"),
                                                (None, None)])]
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE events (id TEXT PRIMARY KEY, ts REAL NOT NULL, principal TEXT, model TEXT, "
               "service TEXT, trace_id TEXT, doc BLOB NOT NULL)")
    db.executemany("INSERT INTO events VALUES (?,?,?,?,?,?,?)",
                   [(e.id, e.ts, e.principal, e.model, e.service, e.trace_id, encode_event(e))
                    for e in stored])
    db.commit()
    db.close()

    store = SQLiteStore(path)
    assert [e.id for e in store.search_events(EventQuery(client_ip="198.51.100.7"))] == ["e1", "e0"]
    assert [e.id for e in store.search_events(EventQuery(status=(400, 499)))] == ["e1"]
    assert store.search_events(EventQuery()) == sorted(stored, key=lambda e: e.ts, reverse=True)
    store.add_events([make_event(T0.timestamp() + 9, id="e9", status=403, client_ip="198.51.100.7")])
    assert [e.id for e in store.search_events(EventQuery(status=(401, 403)))] == ["e9", "e1"]
    store.close()
    again = SQLiteStore(path)  # opens again without change
    assert [r[1] for r in again._conn.execute("PRAGMA table_info(events)")][-2:] == ["client_ip", "status"]
    assert "events_client_ip" in {r[1] for r in again._conn.execute("PRAGMA index_list(events)")}
    again.close()
