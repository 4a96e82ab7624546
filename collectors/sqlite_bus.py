"""The embedded bus: an append-only SQLite log (WAL) with per-consumer-group offsets.

Several processes on one host may append and read at once: SQLite serialises writers, and
because a writer holds the write lock from insert to commit, offsets become visible in
increasing order, so a reader never skips a row that commits later. One topic is one
partition (partition ``0``); the offset is the row id.

>>> import tempfile, pathlib
>>> bus = SQLiteBus(pathlib.Path(tempfile.mkdtemp()) / "bus.db")
>>> producer = bus.producer()
>>> producer.send(b'{"hello": 1}', key="p1")
>>> consumer = bus.consumer("readers")
>>> [r.value for r in consumer.poll(timeout=0)]
[b'{"hello": 1}']
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from inferwatch.collectors.bus import EVENTS_TOPIC, BusRecord, BusUnavailable

_log = logging.getLogger("inferwatch.bus")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS log (
    offset INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    key TEXT,
    value BLOB NOT NULL,
    appended_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS log_topic_offset ON log(topic, offset);
CREATE TABLE IF NOT EXISTS consumer_offsets (
    grp TEXT NOT NULL,
    topic TEXT NOT NULL,
    next_offset INTEGER NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (grp, topic)
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    source_offset INTEGER,
    key TEXT,
    value BLOB NOT NULL,
    reason TEXT NOT NULL,
    at REAL NOT NULL
);
"""


def connect(path: Path | str, *, timeout: float = 30.0) -> sqlite3.Connection:
    """Open a SQLite database for concurrent use by several processes (WAL, busy timeout)."""
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=timeout, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
    return conn


class SQLiteBus:
    """A bus in one SQLite file; hands out producers, consumers and a dead-letter sink."""

    def __init__(self, path: Path | str, *, topic: str = EVENTS_TOPIC) -> None:
        self.path = Path(path)
        self.topic = topic
        try:
            with _open(self.path) as conn:
                conn.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:  # OSError: its folder cannot be made (a file is in the way)
            raise BusUnavailable(f"cannot open the embedded bus at {self.path} (bus.path, "
                                 f"INFERWATCH_BUS__PATH): {exc}") from exc

    def producer(self, topic: str | None = None) -> SQLiteProducer:
        """A producer appending to ``topic`` (default: the bus's topic)."""
        return SQLiteProducer(self.path, topic or self.topic)

    def consumer(self, group: str, topic: str | None = None, *, instance_id: str | None = None,
                 session_timeout_s: float | None = None) -> SQLiteConsumer:
        """A consumer reading ``topic`` from ``group``'s committed position (one process reads the
        embedded bus, so there is no membership to keep: ``instance_id`` and
        ``session_timeout_s`` are accepted and have nothing to do)."""
        return SQLiteConsumer(self.path, group, topic or self.topic)

    def dead_letters(self) -> SQLiteDeadLetters:
        """The dead-letter table, for malformed records."""
        return SQLiteDeadLetters(self.path)

    def end_offset(self, topic: str | None = None) -> int:
        """The offset the next appended record will get (``0`` for an empty topic)."""
        with _open(self.path) as conn:
            row = conn.execute(
                "SELECT COALESCE(MAX(offset), -1) FROM log WHERE topic = ?", (topic or self.topic,)
            ).fetchone()
        return int(row[0]) + 1


@contextmanager
def _open(path: Path) -> Iterator[sqlite3.Connection]:
    conn = connect(path)
    try:
        yield conn
    finally:
        conn.close()


def _file_identity(path: Path) -> tuple[int, int] | None:
    """The file's device and inode (``None`` when it is not there): one ``stat`` a batch."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino


class SQLiteProducer:
    """Appends records; each :meth:`send` is durable once it returns (one small transaction).

    The agent's shipper calls :meth:`send_many` with a batch so a batch costs one commit.
    """

    def __init__(self, path: Path, topic: str) -> None:
        self._path = path
        self._topic = topic
        self._local = threading.local()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and _file_identity(self._path) != self._local.identity:
            # The file was deleted or replaced under us (a reset of .inferwatch/, say): writing
            # on would append to an unlinked file no reader ever opens. Open the path again.
            _log.warning("event=bus_file_replaced path=%s: the embedded bus file was removed or replaced "
                         "while in use; writing to the file now at that path", self._path)
            conn.close()
            conn = None
        if conn is None:
            conn = connect(self._path, timeout=5.0)
            conn.executescript(_SCHEMA)  # a file made anew has no tables yet
            self._local.conn = conn
            self._local.identity = _file_identity(self._path)
        return conn

    def send(self, value: bytes, key: str | None = None) -> None:
        """Append one record."""
        self.send_many([(value, key)])

    def send_many(self, records: Sequence[tuple[bytes, str | None]]) -> None:
        """Append several records in one transaction."""
        now = time.time()
        try:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT INTO log(topic, key, value, appended_at) VALUES (?, ?, ?, ?)",
                    [(self._topic, key, value, now) for value, key in records],
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise BusUnavailable(f"embedded bus {self._path} refused the write: {exc}") from exc

    def flush(self, timeout: float | None = None) -> None:
        """Nothing to do: every send is committed before it returns."""

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


class SQLiteConsumer:
    """Reads a topic in offset order from a consumer group's committed position."""

    def __init__(self, path: Path, group: str, topic: str) -> None:
        self._conn = connect(path)
        self._group = group
        self._topic = topic
        self._position = self.committed()

    def committed(self) -> int:
        """The group's committed position: the offset of the next record to read."""
        row = self._conn.execute(
            "SELECT next_offset FROM consumer_offsets WHERE grp = ? AND topic = ?",
            (self._group, self._topic),
        ).fetchone()
        return int(row[0]) if row else 0

    def poll(self, max_records: int = 500, timeout: float = 1.0) -> Sequence[BusRecord]:
        """Return up to ``max_records`` records after the current position, waiting up to ``timeout``."""
        deadline = time.monotonic() + timeout
        delay = 0.01
        while True:
            rows = self._conn.execute(
                "SELECT offset, key, value FROM log WHERE topic = ? AND offset >= ? ORDER BY offset LIMIT ?",
                (self._topic, self._position, max_records),
            ).fetchall()
            if rows:
                self._position = int(rows[-1][0]) + 1
                return [BusRecord(self._topic, 0, int(o), k, bytes(v)) for o, k, v in rows]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.2)

    def seek(self, offset: int) -> None:
        """Move the read position (not the committed one)."""
        self._position = offset

    def commit(self, positions: Mapping[int, int]) -> None:
        """Store the next offset to read for partition ``0``."""
        if 0 not in positions:
            return
        self._conn.execute(
            "INSERT INTO consumer_offsets(grp, topic, next_offset, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(grp, topic) DO UPDATE SET next_offset = excluded.next_offset, "
            "updated_at = excluded.updated_at",
            (self._group, self._topic, int(positions[0]), time.time()),
        )

    def lag(self) -> int:
        """Records appended after the group's committed position."""
        row = self._conn.execute(
            "SELECT COUNT(*) FROM log WHERE topic = ? AND offset >= ?", (self._topic, self.committed())
        ).fetchone()
        return int(row[0])

    def close(self) -> None:
        """Close the connection; uncommitted progress is forgotten."""
        self._conn.close()


class SQLiteDeadLetters:
    """Malformed records with their reasons, in the bus file."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def dead_letter(self, record: BusRecord, reason: str) -> None:
        """Keep ``record`` and why it was rejected."""
        with _open(self._path) as conn:
            conn.execute(
                "INSERT INTO dead_letters(topic, source_offset, key, value, reason, at) VALUES (?,?,?,?,?,?)",
                (record.topic, record.offset, record.key, record.value, reason, time.time()),
            )

    def list(self, limit: int = 100) -> list[tuple[int, str, str, bytes]]:
        """The newest dead letters as ``(source_offset, topic, reason, value)``."""
        with _open(self._path) as conn:
            rows = conn.execute(
                "SELECT source_offset, topic, reason, value FROM dead_letters ORDER BY id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [(int(o), t, r, bytes(v)) for o, t, r, v in rows]

    def count(self) -> int:
        """How many records were dead-lettered."""
        with _open(self._path) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0])
