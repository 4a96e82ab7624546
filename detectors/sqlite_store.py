"""The embedded store: incidents, events, drift references, silences and notifications in one
SQLite file, with FTS5 text search.

A file written by an older inferwatch is brought up to this schema when it is opened (columns
are added, never dropped), so upgrading keeps every incident.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from inferwatch.collectors.event import InferenceEvent, decode_event, encode_event
from inferwatch.collectors.sqlite_bus import connect
from inferwatch.detectors.alerts.model import Lease, Notification, NotificationQuery, Silence
from inferwatch.detectors.base import SEVERITY_ORDER
from inferwatch.detectors.drift.reference import ReferenceRecord
from inferwatch.detectors.incidents import (
    ACTIVE,
    AMBIGUOUS_SHOWN,
    ID_LENGTH,
    MIN_ID_PREFIX,
    Incident,
    ambiguous_prefix,
)
from inferwatch.detectors.store import EventQuery, IncidentQuery, StoreUnavailable, canonical_ip

_IN_CHUNK = 500
"""Values bound in one ``IN (...)`` list (SQLite caps the parameters of a statement)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS incidents (
    id TEXT PRIMARY KEY,
    detector TEXT NOT NULL,
    kind TEXT NOT NULL,
    severity_rank INTEGER NOT NULL,
    status TEXT NOT NULL,
    service TEXT,
    model TEXT,
    subject TEXT NOT NULL,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    doc TEXT NOT NULL,
    updated_at REAL,
    rev INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS incidents_active ON incidents(detector, subject, status);
CREATE INDEX IF NOT EXISTS incidents_last_seen ON incidents(last_seen);
CREATE VIRTUAL TABLE IF NOT EXISTS incidents_fts USING fts5(id UNINDEXED, body);
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY,
    ts REAL NOT NULL,
    principal TEXT,
    model TEXT,
    service TEXT,
    trace_id TEXT,
    doc BLOB NOT NULL,
    client_ip TEXT,
    status INTEGER
);
CREATE INDEX IF NOT EXISTS events_ts ON events(ts);
CREATE INDEX IF NOT EXISTS events_principal ON events(principal, ts);
CREATE INDEX IF NOT EXISTS events_trace ON events(trace_id);
CREATE VIRTUAL TABLE IF NOT EXISTS events_fts USING fts5(id UNINDEXED, body);
CREATE TABLE IF NOT EXISTS drift_references (
    model TEXT PRIMARY KEY,
    doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    key TEXT PRIMARY KEY,
    saved_at REAL NOT NULL,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS silences (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    ends_at REAL NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS silences_created ON silences(created_at);
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS notifications (
    id TEXT PRIMARY KEY,
    stream TEXT NOT NULL,
    seq INTEGER NOT NULL,
    status TEXT NOT NULL,
    receiver TEXT NOT NULL,
    created_at REAL NOT NULL,
    next_attempt_at REAL NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS notifications_due ON notifications(status, next_attempt_at);
CREATE INDEX IF NOT EXISTS notifications_stream ON notifications(stream, seq);
CREATE INDEX IF NOT EXISTS notifications_created ON notifications(created_at);
CREATE TABLE IF NOT EXISTS notification_incidents (
    notification_id TEXT NOT NULL,
    incident_id TEXT NOT NULL,
    PRIMARY KEY (notification_id, incident_id)
);
CREATE INDEX IF NOT EXISTS notification_incidents_incident ON notification_incidents(incident_id);
"""

# Indexes on columns that a migration adds: created only once the column is there.
_MIGRATED_INDEXES = """
CREATE INDEX IF NOT EXISTS incidents_updated_at ON incidents(updated_at);
CREATE INDEX IF NOT EXISTS events_client_ip ON events(client_ip, ts);
"""

_INCIDENT_COLUMNS = ("id", "detector", "kind", "severity_rank", "status", "service", "model", "subject",
                     "first_seen", "last_seen", "doc", "updated_at", "rev")
_INSERT_INCIDENT = (f"INSERT OR REPLACE INTO incidents ({', '.join(_INCIDENT_COLUMNS)}) "
                    f"VALUES ({', '.join('?' * len(_INCIDENT_COLUMNS))})")


class SQLiteStore:
    """Incidents, events, drift references and alerting state in a SQLite file (``":memory:"``
    for a throw-away store)."""

    def __init__(self, path: Path | str) -> None:
        self.path = path
        # Marks the revisions this store object hands out (see upsert): a revision read
        # through another store object, or another store, does not make a write conditional.
        self._tag = uuid.uuid4().hex
        try:
            self._conn = connect(path)
            self._conn.executescript(_SCHEMA)
            self._migrate()
        except (sqlite3.Error, OSError) as exc:  # OSError: its folder cannot be made (a file is in the way)
            raise StoreUnavailable(f"cannot open the incident store at {path} (store.path, "
                                   f"INFERWATCH_STORE__PATH): {exc}") from exc

    def _migrate(self) -> None:
        """Add what an older store file lacks: the ``incidents.updated_at`` column, filled from
        the incidents that already carry it, and its index; the ``incidents.rev`` column; the
        ``events.client_ip`` and ``events.status`` columns, filled from the stored events.

        The check is repeated inside the write transaction so that two processes opening the
        same old file do not both add the column; a file that is already current is not written.
        """
        if not ({"updated_at", "rev"} <= self._columns("incidents")
                and {"client_ip", "status"} <= self._columns("events")):
            with self._write():
                if "updated_at" not in self._columns("incidents"):
                    self._conn.execute("ALTER TABLE incidents ADD COLUMN updated_at REAL")
                    self._backfill_updated_at()
                if "rev" not in self._columns("incidents"):
                    self._conn.execute("ALTER TABLE incidents ADD COLUMN rev INTEGER NOT NULL DEFAULT 0")
                if "client_ip" not in self._columns("events"):  # events stored before 2026-11-28
                    self._conn.execute("ALTER TABLE events ADD COLUMN client_ip TEXT")
                    self._conn.execute("UPDATE events SET client_ip = json_extract(CAST(doc AS TEXT), "
                                       "'$.client_ip')")
                    rows = self._conn.execute("SELECT id, client_ip FROM events WHERE client_ip IS NOT NULL")
                    self._conn.executemany("UPDATE events SET client_ip = ? WHERE id = ?",
                                           [(canonical_ip(ip), i) for i, ip in rows.fetchall()
                                            if canonical_ip(ip) != ip])
                if "status" not in self._columns("events"):
                    self._conn.execute("ALTER TABLE events ADD COLUMN status INTEGER")
                    # a status past 64 bits is a REAL in JSON: left out, as add_events leaves it
                    self._conn.execute("UPDATE events SET status = CASE WHEN json_type(CAST(doc AS TEXT), "
                                       "'$.status') = 'integer' THEN json_extract(CAST(doc AS TEXT), "
                                       "'$.status') END")
        self._conn.executescript(_MIGRATED_INDEXES)

    def _columns(self, table: str) -> set[str]:
        return {row[1] for row in self._conn.execute(f"PRAGMA table_info({table})")}

    def _backfill_updated_at(self) -> None:
        rows = self._conn.execute(
            "SELECT doc FROM incidents WHERE json_extract(doc, '$.updated_at') IS NOT NULL").fetchall()
        incidents = [Incident.model_validate_json(r[0]) for r in rows]
        self._conn.executemany("UPDATE incidents SET updated_at = ? WHERE id = ?",
                               [(_seconds(i.updated_at), i.id) for i in incidents])

    def close(self) -> None:
        """Close the database."""
        self._conn.close()

    # -- incidents ---------------------------------------------------------------------------

    def upsert(self, incidents: Sequence[Incident]) -> list[str]:
        """Insert or replace incidents by id, in one transaction; an incident read from the
        store only while the stored one is at the revision it was read at (see
        :meth:`IncidentStore.upsert <inferwatch.detectors.store.IncidentStore.upsert>`); returns
        the ids left out because they changed meanwhile."""
        latest = {i.id: i for i in incidents}  # the same id twice in a batch: the last one wins
        conflicts: list[str] = []
        written: list[tuple[Incident, int]] = []
        with self._write():
            # Inside BEGIN IMMEDIATE: no other writer between reading the revisions and writing.
            stored = dict(self._conn.execute(
                f"SELECT id, rev FROM incidents WHERE id IN ({', '.join('?' * len(latest))})",
                list(latest)).fetchall()) if latest else {}
            for incident in latest.values():
                current = stored.get(incident.id)
                read = incident.revision_in(self._tag)
                if read is not None and read != (current,):
                    conflicts.append(incident.id)
                else:
                    written.append((incident, (current or 0) + 1))
            rows = [_incident_row(i, rev) for i, rev in written]
            self._conn.executemany(_INSERT_INCIDENT, [r[0] for r in rows])
            self._conn.executemany("DELETE FROM incidents_fts WHERE id = ?", [(i.id,) for i, _ in written])
            self._conn.executemany("INSERT INTO incidents_fts VALUES (?, ?)", [r[1] for r in rows])
        for incident, rev in written:
            incident.at_revision((self._tag, rev))
        return conflicts

    def get(self, incident_id: str) -> Incident | None:
        """One incident by id (a unique prefix of at least 4 characters also works)."""
        row = self._conn.execute("SELECT doc, rev FROM incidents WHERE id = ?", (incident_id,)).fetchone()
        if row is None and MIN_ID_PREFIX <= len(incident_id) < ID_LENGTH:
            rows = self._conn.execute(  # substr, not LIKE: "_" and "%" are not wildcards here
                "SELECT doc, rev, id FROM incidents WHERE substr(lower(id), 1, ?) = lower(?) LIMIT ?",
                (len(incident_id), incident_id, AMBIGUOUS_SHOWN + 1),
            ).fetchall()
            if len(rows) > 1:
                raise ambiguous_prefix(incident_id, [r[2] for r in rows])
            row = (rows[0][0], rows[0][1]) if rows else None
        return _incident(row, self._tag) if row else None

    def find_active(self, detector: str, subject: str, model: str | None) -> Incident | None:
        """The newest open or acknowledged incident for this detector, subject and model."""
        row = self._conn.execute(
            "SELECT doc, rev FROM incidents WHERE detector = ? AND subject = ? AND model IS ? "
            "AND status IN (?, ?) ORDER BY last_seen DESC LIMIT 1",
            (detector, subject, model, *ACTIVE),
        ).fetchone()
        return _incident(row, self._tag) if row else None

    def list_incidents(self, query: IncidentQuery) -> list[Incident]:
        """Incidents matching ``query``, newest ``last_seen`` first."""
        sql, args = _incident_filter(query).select(
            "SELECT doc, rev FROM incidents", "last_seen DESC, id", query.limit
        )
        return [_incident(r, self._tag) for r in self._conn.execute(sql, args).fetchall()]

    # -- events ------------------------------------------------------------------------------

    def add_events(self, events: Sequence[InferenceEvent]) -> None:
        """Store events; one already stored (same id) is left as it is."""
        with self._write():
            for event in events:
                cur = self._conn.execute(
                    "INSERT OR IGNORE INTO events (id, ts, principal, model, service, trace_id, doc, "
                    "client_ip, status) VALUES (?,?,?,?,?,?,?,?,?)",
                    (event.id, event.ts, event.principal, event.model, event.service, event.trace_id,
                     encode_event(event), event.client_ip and canonical_ip(event.client_ip),
                     _int64(event.status)),
                )
                body = _event_text(event)
                if cur.rowcount and body:
                    self._conn.execute("INSERT INTO events_fts VALUES (?, ?)", (event.id, body))

    def search_events(self, query: EventQuery) -> list[InferenceEvent]:
        """Events matching ``query``, newest first."""
        f = _Filter()
        for column, value in (("principal", query.principal), ("model", query.model),
                              ("service", query.service), ("trace_id", query.trace_id),
                              ("client_ip", query.client_ip and canonical_ip(query.client_ip))):
            f.add(f"{column} = ?", value)
        if query.status is not None:
            f.add("status >= ?", query.status[0])
            f.add("status <= ?", query.status[1])
        f.add("ts >= ?", query.since.timestamp() if query.since else None)
        f.add("ts < ?", query.until.timestamp() if query.until else None)
        f.text("events_fts", query.text)
        if query.ids is not None:
            f.clauses.append(f"id IN ({', '.join('?' * len(query.ids))})" if query.ids else "0")
            f.args.extend(query.ids)
        sql, args = f.select("SELECT doc FROM events", "ts DESC, id DESC", query.limit)
        return [decode_event(bytes(r[0])) for r in self._conn.execute(sql, args).fetchall()]

    # -- checkpoints ---------------------------------------------------------------------------

    def save_checkpoint(self, key: str, data: bytes) -> None:
        """Keep ``data`` under ``key``, replacing what was there."""
        with self._write():
            self._conn.execute("INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?)",
                               (key, time.time(), data))

    def load_checkpoint(self, key: str) -> bytes | None:
        """What was saved under ``key``, or ``None``."""
        row = self._conn.execute("SELECT data FROM checkpoints WHERE key = ?", (key,)).fetchone()
        return bytes(row[0]) if row else None

    # -- drift references --------------------------------------------------------------------

    def save_reference(self, record: ReferenceRecord) -> None:
        """Keep ``record`` as its model's reference, replacing any before it."""
        with self._write():
            self._conn.execute("INSERT OR REPLACE INTO drift_references VALUES (?, ?)",
                               (record.model, record.model_dump_json()))

    def load_reference(self, model: str) -> ReferenceRecord | None:
        """The reference of ``model``, or ``None``."""
        row = self._conn.execute("SELECT doc FROM drift_references WHERE model = ?", (model,)).fetchone()
        return ReferenceRecord.model_validate_json(row[0]) if row else None

    def list_references(self) -> list[ReferenceRecord]:
        """Every model's reference, by model name."""
        rows = self._conn.execute("SELECT doc FROM drift_references ORDER BY model").fetchall()
        return [ReferenceRecord.model_validate_json(r[0]) for r in rows]

    def delete_reference(self, model: str) -> bool:
        """Forget the reference of ``model``; ``False`` when there was none."""
        with self._write():
            cur = self._conn.execute("DELETE FROM drift_references WHERE model = ?", (model,))
        return cur.rowcount > 0

    # -- alerting: the notifier's lease ---------------------------------------------------------

    def acquire_lease(self, name: str, holder: str, now: datetime, ttl_s: float) -> Lease:
        """Take or renew lease ``name`` for ``holder`` unless another holds it past ``now``; who
        holds it afterwards (one write transaction, so two processes cannot both take it)."""
        with self._write():
            row = self._conn.execute("SELECT holder, expires_at FROM leases WHERE name = ?",
                                     (name,)).fetchone()
            if row is None or row[0] == holder or row[1] <= now.timestamp():
                row = (holder, now.timestamp() + ttl_s)
                self._conn.execute("INSERT OR REPLACE INTO leases VALUES (?, ?, ?)", (name, *row))
        return Lease(name=name, holder=row[0], expires_at=datetime.fromtimestamp(row[1], UTC))

    # -- alerting: silences -------------------------------------------------------------------

    def save_silence(self, silence: Silence) -> None:
        """Insert or replace a silence by id."""
        with self._write():
            self._conn.execute("INSERT OR REPLACE INTO silences VALUES (?, ?, ?, ?)",
                               (silence.id, silence.created_at.timestamp(), silence.ends_at.timestamp(),
                                silence.model_dump_json()))

    def list_silences(self, *, include_expired: bool = False, now: datetime | None = None) -> list[Silence]:
        """Silences, newest ``created_at`` first (then by id); only those not yet ended at ``now``
        (default: the current time) unless ``include_expired``."""
        f = _Filter()
        if not include_expired:
            f.add("ends_at > ?", (now or datetime.now(UTC)).timestamp())
        sql, args = f.select("SELECT doc FROM silences", "created_at DESC, id", -1)
        return [Silence.model_validate_json(r[0]) for r in self._conn.execute(sql, args).fetchall()]

    def get_silence(self, silence_id: str) -> Silence | None:
        """One silence by id, or ``None``."""
        row = self._conn.execute("SELECT doc FROM silences WHERE id = ?", (silence_id,)).fetchone()
        return Silence.model_validate_json(row[0]) if row else None

    # -- alerting: notifications ---------------------------------------------------------------

    def save_notifications(self, notifications: Sequence[Notification]) -> None:
        """Insert or replace notifications by id, with the incidents they carry, in one transaction."""
        latest = list({n.id: n for n in notifications}.values())  # the same id twice: the last wins
        carried = [(n.id, incident_id) for n in latest for incident_id in {a.incident_id for a in n.alerts}]
        with self._write():
            self._conn.executemany("INSERT OR REPLACE INTO notifications VALUES (?,?,?,?,?,?,?,?)",
                                   [_notification_row(n) for n in latest])
            self._conn.executemany("DELETE FROM notification_incidents WHERE notification_id = ?",
                                   [(n.id,) for n in latest])
            self._conn.executemany("INSERT INTO notification_incidents VALUES (?, ?)", carried)

    def due_notifications(self, now: datetime, limit: int = 100) -> list[Notification]:
        """``pending`` notifications due at ``now``, oldest ``created_at`` first (then ``seq``, id)."""
        rows = self._conn.execute(
            "SELECT doc FROM notifications WHERE status = 'pending' AND next_attempt_at <= ? "
            "ORDER BY created_at, seq, id LIMIT ?", (now.timestamp(), limit)).fetchall()
        return [Notification.model_validate_json(r[0]) for r in rows]

    def latest_notifications(self, streams: Collection[str] | None = None) -> list[Notification]:
        """Each stream's notification with the highest ``seq`` (the lowest id on a tie), by
        stream; only the streams in ``streams`` when given."""
        latest = ("SELECT doc FROM (SELECT doc, stream, row_number() OVER "
                  "(PARTITION BY stream ORDER BY seq DESC, id) AS rank FROM notifications{}) "
                  "WHERE rank = 1 ORDER BY stream")
        if streams is None:
            rows = self._conn.execute(latest.format("")).fetchall()
        else:
            wanted, rows = sorted(set(streams)), []
            for start in range(0, len(wanted), _IN_CHUNK):
                chunk = wanted[start:start + _IN_CHUNK]
                where = f" WHERE stream IN ({','.join('?' * len(chunk))})"
                rows += self._conn.execute(latest.format(where), chunk).fetchall()
        return [Notification.model_validate_json(r[0]) for r in rows]

    def list_notifications(self, query: NotificationQuery) -> list[Notification]:
        """The notification log, newest ``created_at`` first (then highest ``seq``, then id)."""
        f = _Filter()
        if query.status:
            f.clauses.append(f"status IN ({','.join('?' * len(query.status))})")
            f.args.extend(query.status)
        f.add("receiver = ?", query.receiver)
        f.add("stream = ?", query.stream)
        f.add("id IN (SELECT notification_id FROM notification_incidents WHERE incident_id = ?)",
              query.incident_id)
        f.add("created_at >= ?", query.since.timestamp() if query.since else None)
        sql, args = f.select("SELECT doc FROM notifications", "created_at DESC, seq DESC, id", query.limit)
        return [Notification.model_validate_json(r[0]) for r in self._conn.execute(sql, args).fetchall()]

    def prune_alerting(self, before: datetime) -> int:
        """Forget old notifications (not pending, not their stream's latest) and ended silences."""
        cutoff = before.timestamp()
        with self._write():
            gone = self._conn.execute(
                "DELETE FROM notifications WHERE created_at < ? AND status != 'pending' AND id NOT IN "
                "(SELECT id FROM (SELECT id, row_number() OVER (PARTITION BY stream ORDER BY seq DESC, id) "
                "AS rank FROM notifications) WHERE rank = 1)", (cutoff,)).rowcount
            self._conn.execute("DELETE FROM notification_incidents WHERE notification_id NOT IN "
                               "(SELECT id FROM notifications)")
            gone += self._conn.execute("DELETE FROM silences WHERE ends_at < ?", (cutoff,)).rowcount
        return gone

    def _write(self) -> _Transaction:
        return _Transaction(self._conn, self.path)


class _Transaction:
    def __init__(self, conn: sqlite3.Connection, path: Path | str) -> None:
        self._conn = conn
        self._path = path

    def __enter__(self) -> None:
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"incident store {self._path} is not writable: {exc}") from exc

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            try:
                self._conn.execute("COMMIT")
                return
            except sqlite3.Error as err:
                self._conn.execute("ROLLBACK")
                raise StoreUnavailable(f"incident store {self._path} refused the write: {err}") from err
        self._conn.execute("ROLLBACK")


def fts_phrase(text: str) -> str:
    """Quote user text as FTS5 phrases (one per word, all required) so punctuation is literal."""
    words = [w.replace('"', '""') for w in text.split()]
    return " ".join(f'"{w}"' for w in words)


def _incident(row: tuple[str, int], tag: str) -> Incident:
    return Incident.model_validate_json(row[0]).at_revision((tag, row[1]))


def _incident_row(i: Incident, rev: int) -> tuple[tuple[Any, ...], tuple[str, str]]:
    doc = i.model_dump_json()
    row = (i.id, i.detector, i.kind, SEVERITY_ORDER[i.severity], i.status, i.service, i.model, i.subject,
           i.first_seen.timestamp(), i.last_seen.timestamp(), doc, _seconds(i.updated_at), rev)
    body = " ".join(filter(None, (i.title, i.summary, i.subject, i.detector, i.model, i.service)))
    return row, (i.id, body)


def _notification_row(n: Notification) -> tuple[Any, ...]:
    return (n.id, n.stream, n.seq, n.status, n.receiver, n.created_at.timestamp(),
            n.next_attempt_at.timestamp(), n.model_dump_json())


def _seconds(when: datetime | None) -> float | None:
    return when.timestamp() if when is not None else None


def _int64(value: int | None) -> int | None:
    """``value`` if SQLite can keep it as an integer (an event may carry any status number)."""
    return value if value is not None and -(2**63) <= value < 2**63 else None


class _Filter:
    """WHERE clauses and their arguments, built from optional filters."""

    def __init__(self) -> None:
        self.clauses: list[str] = []
        self.args: list[Any] = []

    def add(self, clause: str, value: Any) -> None:
        if value is not None:
            self.clauses.append(clause)
            self.args.append(value)

    def text(self, fts_table: str, text: str | None) -> None:
        if text is not None and not text.strip():
            self.clauses.append("0")  # no words to look for: nothing matches (as in Elasticsearch)
        elif text:
            self.add(f"id IN (SELECT id FROM {fts_table} WHERE {fts_table} MATCH ?)", fts_phrase(text))

    def select(self, base: str, order: str, limit: int) -> tuple[str, list[Any]]:
        where = f" WHERE {' AND '.join(self.clauses)}" if self.clauses else ""
        return f"{base}{where} ORDER BY {order} LIMIT ?", [*self.args, limit]


def _incident_filter(q: IncidentQuery) -> _Filter:
    f = _Filter()
    if q.status:
        f.clauses.append(f"status IN ({','.join('?' * len(q.status))})")
        f.args.extend(q.status)
    f.add("severity_rank >= ?", SEVERITY_ORDER[q.min_severity] if q.min_severity else None)
    for column, value in (("kind", q.kind), ("detector", q.detector), ("service", q.service),
                          ("model", q.model), ("subject", q.subject)):
        f.add(f"{column} = ?", value)
    f.add("last_seen >= ?", q.since.timestamp() if q.since else None)
    f.add("updated_at >= ?", _seconds(q.updated_since))  # NULL (never recorded) matches nothing
    f.add("last_seen < ?", _seconds(q.last_seen_before))
    f.text("incidents_fts", q.text)
    return f


def _event_text(event: InferenceEvent) -> str:
    parts = [event.input.text, event.output.text]
    return "\n".join(p for p in parts if p)
