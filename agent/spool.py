"""A size-capped, append-only disk spool for encoded events while the bus is unreachable.

The shipper thread (never the request path) writes here what the bus refused, and everything
after it, then replays the spool oldest first when the bus answers again, before any newer
event, so ``agent.seq`` reaches the bus gap-free and in order.

On disk, under ``agent.spool_dir``::

    <spool_dir>/
      0197a3c2-...-7e41/          one folder per agent process (a UUIDv7: sorts by creation)
        lock                      held (flock) while that process lives
        000000000001.seg          segments, appended to, never rewritten
        000000000002.seg
        cursor                    "<segment> <offset>": the next record to send

A segment starts with the 8 bytes ``IWSPOOL1``, then frames: payload length (4 bytes,
big-endian), CRC-32 of the payload (4 bytes), payload = key length (4 bytes, ``0xFFFFFFFF`` for
no key), key (UTF-8), the encoded event. Only encoded events are spooled: they are already
redacted and pseudonymised, exactly what the bus would have received.

* **Size cap**: ``max_bytes`` counts every segment file this process holds (its own and those it
  took over). A batch that does not fit is cut where it stops fitting; the caller counts the
  rest as dropped. Segments roll at ``segment_bytes``; a segment is deleted once all of it was
  sent.
* **Durability**: with ``fsync`` (the default) each written batch is ``fsync``-ed before it
  counts as spooled, and so is the folder when a segment is created, so a spooled event survives
  a power cut; without it, the OS writes it back when it likes (it survives a crash of the
  process, not of the host). The cursor is written after each batch the bus accepted, without
  ``fsync``: after a crash at the wrong moment a batch can be sent twice (at-least-once; each
  event keeps its ``id`` and ``agent.seq``, so a reader can drop the repeat), never lost.
* **Restart**: :meth:`Spool.open` takes over the folders of processes that are gone (their lock
  is free), oldest first, and replays them before this process's own events. A torn write (the
  process died mid-frame) or a damaged frame ends that segment: what follows is counted in
  :attr:`Spool.corrupt` and skipped, and the spool carries on with the next segment. So does a
  segment that cannot be read back (deleted under the spool, an I/O error): its unsent records
  are counted in :attr:`Spool.corrupt`.
* **Permissions**: folders are made ``0700`` and files ``0600`` (owner only); what is inside is
  what the bus would get, after redaction and pseudonyms (docs/privacy.md).
* Several processes (gunicorn workers) may share one ``spool_dir``: each writes its own folder
  and a folder is taken over only once its owner has exited. After ``os.fork()`` the child calls
  :meth:`Spool.forget` and opens a folder of its own. Locking needs POSIX ``flock``; without it
  (Windows) a process never takes over another's folder.

>>> import tempfile
>>> spool = Spool(tempfile.mkdtemp(), max_bytes=1 << 20, fsync=False)
>>> spool.open()
>>> spool.append([(b'{"id": "e1"}', "p_1"), (b'{"id": "e2"}', None)]).written
2
>>> spool.peek(10)
[(b'{"id": "e1"}', 'p_1'), (b'{"id": "e2"}', None)]
>>> spool.commit(); spool.pending
0
>>> spool.close()
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import shutil
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

from inferwatch.collectors.ids import uuid7

try:
    import fcntl
except ImportError:  # Windows: no flock, so no taking over another process's folder
    fcntl = None  # type: ignore[assignment]

_log = logging.getLogger("inferwatch.agent")

Record = tuple[bytes, str | None]

MAGIC: Final = b"IWSPOOL1"
SEGMENT_SUFFIX: Final = ".seg"
DEFAULT_SEGMENT_BYTES: Final = 4 << 20
MAX_FRAME_BYTES: Final = 16 << 20
_HEADER = struct.Struct(">II")
_KEY_LENGTH = struct.Struct(">I")
_NO_KEY: Final = 0xFFFFFFFF
_LOCK = "lock"
_CURSOR = "cursor"


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What became of a batch handed to :meth:`Spool.append`."""

    written: int
    """Records now on disk."""
    full: int = 0
    """Records refused because the spool reached ``max_bytes``."""
    failed: int = 0
    """Records lost to a write error (disk full, I/O error)."""


class _Folder:
    """One process's folder: ours, or one taken over from a process that is gone."""

    __slots__ = ("lock_fd", "own", "path", "segments")

    def __init__(self, path: Path, lock_fd: int | None, *, own: bool) -> None:
        self.path = path
        self.lock_fd = lock_fd
        self.own = own
        self.segments = 0  # segments of this folder still in the spool

    def release(self, *, remove: bool) -> None:
        if remove:
            shutil.rmtree(self.path, ignore_errors=True)
        if self.lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.lock_fd)  # closing releases the flock
            self.lock_fd = None


@dataclass(slots=True)
class _Segment:
    path: Path
    folder: _Folder
    start: int  # offset of the next record to send
    end: int  # end of the last whole frame
    size: int  # bytes on disk (a torn tail makes it more than ``end``)
    records: int  # records between start and end


class Spool:
    """Append encoded records to segment files; read them back oldest first.

    Not thread-safe: the shipper thread is its only user. :meth:`open` must run before the rest.
    """

    def __init__(
        self,
        directory: Path | str,
        *,
        max_bytes: int,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        fsync: bool = True,
    ) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self.corrupt = 0
        """Records lost to torn or damaged frames or unreadable segments, counted when found."""
        self.recovered = 0
        """Records found at :meth:`open` in folders left by earlier processes."""
        self._reset()

    def _reset(self) -> None:
        self._segments: collections.deque[_Segment] = collections.deque()
        self._own: _Folder | None = None
        self._writer: BinaryIO | None = None
        self._writing: _Segment | None = None
        self._reader: BinaryIO | None = None
        self._reading: Path | None = None
        self._peeked: tuple[_Segment, int, int] | None = None
        self._next_index = 1
        self._bytes = 0
        self._records = 0

    @property
    def pending(self) -> int:
        """Records on disk not yet sent."""
        return self._records

    @property
    def size_bytes(self) -> int:
        """Bytes of segment files held (what ``max_bytes`` caps)."""
        return self._bytes

    @property
    def path(self) -> Path | None:
        """This process's folder, once open."""
        return self._own.path if self._own is not None else None

    def open(self) -> None:
        """Make this process's folder and take over the folders of processes that are gone."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        name = uuid7()
        staging = self.directory / f".new-{name}"
        staging.mkdir(mode=0o700)  # events may hold redacted text and features: owner only
        lock_fd = os.open(staging / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        _lock(lock_fd)
        # Renamed only once locked, so no other process can mistake it for a folder left behind.
        final = self.directory / name
        staging.rename(final)
        self._own = _Folder(final, lock_fd, own=True)
        if fcntl is not None:
            for path in sorted(self.directory.iterdir()):
                if path != final and path.is_dir():
                    self._take_over(path)

    def append(self, records: Sequence[Record]) -> AppendResult:
        """Write ``records`` in order, as many as fit under ``max_bytes``."""
        if self._own is None:
            raise RuntimeError("Spool.open() must run first")
        chunk = bytearray()
        written = 0
        for index, (value, key) in enumerate(records):
            frame = _frame(value, key)
            base = self._writing.size if self._writing is not None else len(MAGIC)
            if base + len(chunk) + len(frame) > self.segment_bytes and base + len(chunk) > len(MAGIC):
                if not self._flush(chunk, index - written):
                    return AppendResult(written=written, failed=len(records) - written)
                written = index
                chunk.clear()
                self._close_writer()  # the next write starts a new segment
            opening = 0 if self._writing is not None else len(MAGIC)
            if self._bytes + opening + len(chunk) + len(frame) > self.max_bytes:
                if not self._flush(chunk, index - written):
                    return AppendResult(written=written, failed=len(records) - written)
                return AppendResult(written=index, full=len(records) - index)
            chunk += frame
        if not self._flush(chunk, len(records) - written):
            return AppendResult(written=written, failed=len(records) - written)
        return AppendResult(written=len(records))

    def peek(self, limit: int) -> list[Record]:
        """Up to ``limit`` of the oldest records, left in place until :meth:`commit`."""
        self._peeked = None
        while self._segments:
            segment = self._segments[0]
            if segment.records == 0:
                if segment is self._writing:
                    return []
                self._drop_head()
                continue
            records, offset = self._read(segment, limit)
            if records:
                self._peeked = (segment, len(records), offset)
                return records
        return []

    def commit(self) -> None:
        """Forget what the last :meth:`peek` returned: it reached the bus."""
        if self._peeked is None:
            return
        segment, count, offset = self._peeked
        self._peeked = None
        segment.start = offset
        segment.records -= count
        self._records -= count
        if segment.records == 0:
            self._drop_head()  # the segment being written too: the next write starts a new one
        else:
            self._write_cursor(segment)

    def close(self) -> None:
        """Close files and release locks; what is not sent stays on disk for the next process."""
        self._close_writer()
        self._close_reader()
        folders = {id(s.folder): s.folder for s in self._segments if s.records}
        if self._own is not None:
            self._own.release(remove=id(self._own) not in folders)
        for segment in self._segments:
            if not segment.folder.own:
                segment.folder.release(remove=id(segment.folder) not in folders)
        self._reset()

    def forget(self) -> None:
        """In a forked child: drop the parent's files and locks without touching them."""
        for handle in (self._writer, self._reader):
            if handle is not None:
                with contextlib.suppress(OSError):
                    handle.close()  # nothing is buffered: every write was flushed
        folders = [self._own] + [s.folder for s in self._segments]
        for folder in folders:
            if folder is not None and folder.lock_fd is not None:
                with contextlib.suppress(OSError):
                    os.close(folder.lock_fd)  # the parent's lock stays held: same open file
                folder.lock_fd = None
        self._reset()
        self.corrupt = self.recovered = 0

    # -- writing -----------------------------------------------------------------------------

    def _flush(self, chunk: bytearray, count: int) -> bool:
        """Write ``count`` records framed in ``chunk``; ``False`` (logged) if the disk refused."""
        if not count:
            return True
        segment = self._writing
        try:
            if segment is None:
                segment = self._new_segment()
            writer = self._writer
            assert writer is not None
            writer.write(chunk)
            writer.flush()
            if self.fsync:
                os.fsync(writer.fileno())
        except OSError as exc:
            _log.warning("event=spool_write_failed error=%s detail=%s", type(exc).__name__, exc)
            if segment is not None:
                self._undo_write(segment)
            return False
        segment.end += len(chunk)
        segment.size = segment.end
        segment.records += count
        self._bytes += len(chunk)
        self._records += count
        return True

    def _undo_write(self, segment: _Segment) -> None:
        # Cut the segment back to its last whole frame and start a new one for what follows.
        writer = self._writer
        with contextlib.suppress(OSError, ValueError):
            if writer is not None:
                writer.truncate(segment.end)
        self._close_writer()

    def _new_segment(self) -> _Segment:
        assert self._own is not None
        path = self._own.path / f"{self._next_index:012d}{SEGMENT_SUFFIX}"
        self._next_index += 1
        writer = os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb")
        try:
            writer.write(MAGIC)
            writer.flush()
            if self.fsync:
                os.fsync(writer.fileno())
                _fsync_folder(self._own.path)
        except OSError:
            writer.close()
            path.unlink(missing_ok=True)
            raise
        segment = _Segment(path, self._own, start=len(MAGIC), end=len(MAGIC), size=len(MAGIC), records=0)
        self._own.segments += 1
        self._segments.append(segment)
        self._bytes += len(MAGIC)
        self._writer, self._writing = writer, segment
        return segment

    def _close_writer(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(OSError):
                self._writer.close()
        self._writer = None
        self._writing = None

    # -- reading -----------------------------------------------------------------------------

    def _read(self, segment: _Segment, limit: int) -> tuple[list[Record], int]:
        offset = segment.start
        records: list[Record] = []
        try:
            reader = self._open_reader(segment.path)
            reader.seek(offset)
            while len(records) < limit and offset < segment.end:
                record, size = _read_frame(reader, segment.end - offset)
                if record is None:
                    _log.warning(
                        "event=spool_frame_damaged segment=%s offset=%d lost=%d",
                        segment.path, offset, segment.records - len(records),
                    )
                    self._cut(segment, offset, len(records))
                    break
                records.append(record)
                offset += size
        except OSError as exc:  # deleted by a cleaner, an I/O error: the rest of the segment is lost
            _log.warning(
                "event=spool_segment_unreadable segment=%s offset=%d lost=%d error=%s",
                segment.path, offset, segment.records - len(records), type(exc).__name__,
            )
            self._close_reader()
            self._cut(segment, offset, len(records))
        return records, offset

    def _cut(self, segment: _Segment, offset: int, kept: int) -> None:
        """End ``segment`` at ``offset``, after ``kept`` records: what followed is counted corrupt."""
        lost = segment.records - kept
        self.corrupt += lost
        self._records -= lost
        segment.records = kept
        segment.end = offset
        if segment is self._writing:
            self._close_writer()  # write what follows to a new segment, not after the damage

    def _open_reader(self, path: Path) -> BinaryIO:
        if self._reader is None or self._reading != path:
            self._close_reader()
            self._reader = path.open("rb")
            self._reading = path
        return self._reader

    def _close_reader(self) -> None:
        if self._reader is not None:
            with contextlib.suppress(OSError):
                self._reader.close()
        self._reader = None
        self._reading = None

    def _drop_head(self) -> None:
        segment = self._segments.popleft()
        if segment is self._writing:
            self._close_writer()
        if self._reading == segment.path:
            self._close_reader()
        try:
            segment.path.unlink(missing_ok=True)
        except OSError as exc:  # left on disk: a later process may send it again (a repeat, never a loss)
            _log.debug("event=spool_delete_failed segment=%s error=%s", segment.path, type(exc).__name__)
        self._bytes -= segment.size
        folder = segment.folder
        folder.segments -= 1
        if folder.segments == 0 and not folder.own:
            folder.release(remove=True)

    def _write_cursor(self, segment: _Segment) -> None:
        cursor = segment.folder.path / _CURSOR
        staging = cursor.with_suffix(".new")
        try:
            staging.write_text(f"{segment.path.name} {segment.start}\n")
            staging.replace(cursor)
        except OSError as exc:  # at worst this batch is sent again after a restart
            _log.debug("event=spool_cursor_failed error=%s", type(exc).__name__)

    # -- taking over ----------------------------------------------------------------------------

    def _take_over(self, path: Path) -> None:
        try:
            lock_fd = os.open(path / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            return
        if not _try_lock(lock_fd):
            os.close(lock_fd)  # its process is alive
            return
        folder = _Folder(path, lock_fd, own=False)
        if path.name.startswith("."):  # a folder whose creation was interrupted: never has data
            folder.release(remove=True)
            return
        cursor_name, cursor_offset = _read_cursor(path / _CURSOR)
        found = 0
        for segment_path in sorted(path.glob(f"*{SEGMENT_SUFFIX}")):
            if cursor_name is not None and segment_path.name < cursor_name:
                segment_path.unlink(missing_ok=True)  # sent before that process stopped
                continue
            start = cursor_offset if segment_path.name == cursor_name else len(MAGIC)
            segment = self._scan(segment_path, folder, start)
            if segment is None:
                continue
            found += segment.records
            folder.segments += 1
            self._segments.append(segment)
            self._bytes += segment.size
            self._records += segment.records
        if folder.segments == 0:
            folder.release(remove=True)
            return
        self.recovered += found
        _log.info("event=spool_recovered folder=%s records=%d", path.name, found)

    def _scan(self, path: Path, folder: _Folder, start: int) -> _Segment | None:
        """Count the whole frames of a segment left by another process; ``None`` if unusable."""
        try:
            size = path.stat().st_size
            with path.open("rb") as reader:
                if reader.read(len(MAGIC)) != MAGIC:
                    self.corrupt += 1 if size > len(MAGIC) else 0
                    _log.warning("event=spool_segment_unreadable segment=%s", path)
                    path.unlink(missing_ok=True)
                    return None
                offset = max(start, len(MAGIC))
                reader.seek(offset)
                records = 0
                while offset < size:
                    record, frame_size = _read_frame(reader, size - offset)
                    if record is None:  # a torn write or a damaged frame: the rest is lost
                        self.corrupt += 1
                        _log.warning("event=spool_torn_tail segment=%s offset=%d", path, offset)
                        break
                    records += 1
                    offset += frame_size
        except OSError as exc:
            _log.warning("event=spool_segment_unreadable segment=%s error=%s", path, type(exc).__name__)
            return None
        return _Segment(path, folder, start=max(start, len(MAGIC)), end=offset, size=size, records=records)


def _frame(value: bytes, key: str | None) -> bytes:
    key_bytes = b"" if key is None else key.encode()
    payload = _KEY_LENGTH.pack(_NO_KEY if key is None else len(key_bytes)) + key_bytes + value
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def _read_frame(reader: BinaryIO, room: int) -> tuple[Record | None, int]:
    """The next frame's record and size, or ``(None, 0)`` if it is torn or damaged."""
    if room < _HEADER.size:
        return None, 0
    header = reader.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None, 0
    length, crc = _HEADER.unpack(header)
    if length < _KEY_LENGTH.size or length > MAX_FRAME_BYTES or _HEADER.size + length > room:
        return None, 0
    payload = reader.read(length)
    if len(payload) < length or zlib.crc32(payload) != crc:
        return None, 0
    (key_length,) = _KEY_LENGTH.unpack_from(payload)
    if key_length == _NO_KEY:
        return (payload[_KEY_LENGTH.size :], None), _HEADER.size + length
    key_end = _KEY_LENGTH.size + key_length
    if key_end > length:
        return None, 0
    try:
        key = payload[_KEY_LENGTH.size : key_end].decode()
    except UnicodeDecodeError:
        return None, 0
    return (payload[key_end:], key), _HEADER.size + length


def _read_cursor(path: Path) -> tuple[str | None, int]:
    try:
        name, _, offset = path.read_text().strip().partition(" ")
        return name, int(offset)
    except (OSError, ValueError):
        return None, 0


def _lock(fd: int) -> None:
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _try_lock(fd: int) -> bool:
    if fcntl is None:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _fsync_folder(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
