"""Opening the files ``inferwatch replay`` and ``inferwatch scan`` read: plain or compressed, or stdin.

Logs are kept compressed: a file whose first bytes are gzip's, bzip2's or xz's magic number is
read through the matching decompressor (whatever its name ends with), anything else as it is, and
``-`` is standard input (compressed or not, told the same way).

>>> import gzip, tempfile, pathlib
>>> with tempfile.TemporaryDirectory() as tmp:
...     path = pathlib.Path(tmp) / "events.log"
...     _ = path.write_bytes(gzip.compress(b'{"a": 1}\\n{"a": 2}\\n'))
...     with open_source(path) as source:
...         (source.compression, source.stream.readline(), source.position() == source.size)
('gzip', b'{"a": 1}\\n', True)
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import shutil
import sys
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Final, cast

__all__ = ["STDIN", "UNREADABLE", "Source", "open_source", "spooled_stdin", "stored_size"]

STDIN: Final = "-"
UNREADABLE: Final = (EOFError, OSError, zlib.error, lzma.LZMAError)
"""What reading a compressed stream that ends early or is corrupt raises (gzip's BadGzipFile is an
OSError; bz2 raises OSError or EOFError)."""
_MAGIC: Final = ((b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"))


@dataclass
class Source:
    """One opened input: ``stream`` gives its (decompressed) bytes, line by line."""

    name: str
    stream: IO[bytes]
    raw: IO[bytes]
    size: int
    """Bytes of the file as stored (compressed), 0 for a pipe."""
    compression: str | None = None

    def position(self) -> int:
        """Bytes of the stored file read so far (for a progress bar; 0 for a pipe)."""
        if not self.size:
            return 0
        try:
            return min(self.raw.tell(), self.size)
        except (OSError, ValueError):
            return 0

    def close(self) -> None:
        try:
            if self.stream is not self.raw:
                self.stream.close()
        finally:
            if self.name != STDIN:
                self.raw.close()

    def __enter__(self) -> Source:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _stdin() -> IO[bytes]:
    stream = getattr(sys.stdin, "buffer", None)
    if stream is None:
        raise OSError("standard input cannot be read as bytes")
    return cast(IO[bytes], stream)


def open_source(path: os.PathLike[str] | str) -> Source:
    """Open ``path`` (``-``: standard input) for reading, decompressing it when its first bytes
    say it is gzip, bzip2 or xz. Raises :class:`OSError` when it cannot be opened."""
    name = os.fspath(path)
    raw = _stdin() if name == STDIN else open(name, "rb")  # noqa: SIM115 (closed by Source.close)
    size = stored_size(name)
    try:
        head = _peek(raw)
        kind = next((kind for magic, kind in _MAGIC if head.startswith(magic)), None)
        stream: IO[bytes]
        if kind == "gzip":
            stream = cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb"))
        elif kind == "bzip2":
            stream = bz2.BZ2File(raw, mode="rb")
        elif kind == "xz":
            stream = lzma.LZMAFile(raw, mode="rb")  # noqa: SIM115 (closed by Source.close)
        else:
            stream = raw
    except BaseException:
        if name != STDIN:
            raw.close()
        raise
    return Source(name, stream, raw, size, kind)


def stored_size(path: os.PathLike[str] | str) -> int:
    """Bytes of ``path`` as stored (compressed, if it is): 0 for standard input or a file that
    cannot be read (its error comes when it is opened)."""
    name = os.fspath(path)
    if name == STDIN:
        return 0
    try:
        return os.stat(name).st_size
    except OSError:
        return 0


def _peek(raw: IO[bytes]) -> bytes:
    peek = getattr(raw, "peek", None)
    if peek is not None:
        return bytes(peek(6)[:6])
    if raw.seekable():
        head = raw.read(6)
        raw.seek(0)
        return head
    return b""


def spooled_stdin(directory: str | None = None) -> Path:
    """Copy standard input to a temporary file (for readers that must read it twice) and return
    its path; the caller removes it."""
    handle, name = tempfile.mkstemp(prefix="inferwatch-stdin-", suffix=".log", dir=directory)
    with os.fdopen(handle, "wb") as out:
        shutil.copyfileobj(_stdin(), out, 1 << 20)
    return Path(name)
