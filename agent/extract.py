"""From the bytes of an HTTP exchange to the content of the call's events.

:func:`extract_http` decides what kind of call it was (generative, see
:mod:`inferwatch.agent.genai`; otherwise tabular, see :mod:`inferwatch.agent.tabular`) and
never raises: request and response bodies come from anyone, and a body it cannot read still
gives an event (status, timing, sizes), with ``extract_error`` naming what went wrong.

A body larger than ``limit`` bytes is not parsed (only its first ``limit`` bytes were kept);
the event says so with ``request_truncated`` / ``response_truncated``. A streamed response
(``text/event-stream``) is the exception: its captured part is read chunk by chunk, so the
text up to the cut is kept. ``request_bytes`` and ``response_bytes`` always give the full sizes.
A compressed response (``Content-Encoding: gzip`` or ``deflate``, from compression inside the
middleware or from the model server behind the proxy) is decompressed when it was captured whole
and unpacks to at most ``limit`` bytes; other encodings (``br``, ``zstd``) are not read, and the
event keeps the sizes and ``response_encoding``.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from typing import Any

from inferwatch.agent.content import CallContent
from inferwatch.agent.genai import assemble_stream, detect_operation, genai_content
from inferwatch.agent.tabular import pair_rows, request_rows, response_outputs
from inferwatch.collectors.event import Scalar
from inferwatch.collectors.settings import CaptureMode


@dataclass(frozen=True, slots=True)
class HttpExchange:
    """What the middleware saw of one request and its response."""

    path: str = ""
    request_body: bytes = b""
    request_bytes: int = 0
    response_body: bytes = b""
    response_bytes: int = 0
    response_content_type: str = ""
    response_encoding: str = ""
    limit: int = 1 << 20


def extract_http(exchange: HttpExchange, mode: CaptureMode) -> CallContent:
    """The call's content from its HTTP exchange; on any failure, content with sizes only."""
    sizes = _size_attributes(exchange)
    try:
        content = _extract(exchange, mode)
    except Exception as exc:  # a surprising body costs the content, never the event
        content = CallContent(attributes={"extract_error": type(exc).__name__})
    content.attributes.update(sizes)
    return content


def _extract(exchange: HttpExchange, mode: CaptureMode) -> CallContent:
    request = None if exchange.request_bytes > exchange.limit else parse_json(exchange.request_body)
    response = _response(exchange)
    operation = detect_operation(request, response, exchange.path)
    if operation is not None:
        return genai_content(request, response, operation, mode)
    return CallContent(rows=pair_rows(request_rows(request, mode), response_outputs(response)))


def _response(exchange: HttpExchange) -> Any:
    body = exchange.response_body
    if exchange.response_encoding not in ("", "identity"):
        if exchange.response_bytes > exchange.limit:
            return None  # a compressed stream cut short does not unpack
        unpacked = decompressed(body, exchange.response_encoding, exchange.limit)
        if unpacked is None:
            return None
        body = unpacked
    elif exchange.response_bytes > exchange.limit and not exchange.response_content_type.startswith(
            "text/event-stream"):
        return None
    if exchange.response_content_type.startswith("text/event-stream"):
        return assemble_stream(body)
    return parse_json(body)


_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def decompressed(body: bytes, encoding: str, limit: int) -> bytes | None:
    """``body`` unpacked from ``gzip`` or ``deflate``; ``None`` for another encoding, a broken
    body, or one that unpacks to more than ``limit`` bytes (never more is held in memory).

    >>> import gzip
    >>> decompressed(gzip.compress(b'{"a": 1}'), "gzip", 100)
    b'{"a": 1}'
    >>> decompressed(gzip.compress(b"x" * 1000), "gzip", 100) is None
    True
    """
    wbits = _WBITS.get(encoding.strip().lower())
    if wbits is None:
        return None
    try:
        unpacker = zlib.decompressobj(wbits)
        out = unpacker.decompress(body, limit + 1)
        if len(out) > limit or unpacker.unconsumed_tail:
            return None
        out += unpacker.flush()
    except zlib.error:
        if wbits == zlib.MAX_WBITS:  # "deflate" sent as a raw stream, as some servers do
            return _raw_deflate(body, limit)
        return None
    return out if len(out) <= limit else None


def _raw_deflate(body: bytes, limit: int) -> bytes | None:
    try:
        unpacker = zlib.decompressobj(-zlib.MAX_WBITS)
        out = unpacker.decompress(body, limit + 1)
        if len(out) > limit or unpacker.unconsumed_tail:
            return None
        out += unpacker.flush()
    except zlib.error:
        return None
    return out if len(out) <= limit else None


def parse_json(body: bytes) -> Any:
    """The JSON value of ``body``, or ``None`` if it is empty or not a JSON object or array.

    >>> parse_json(b' {"a": 1}'), parse_json(b"plain text")
    ({'a': 1}, None)
    """
    start = body[:64].lstrip()[:1]
    if start not in (b"{", b"["):
        return None
    try:
        return json.loads(body)
    except ValueError:  # not JSON after all (or not UTF-8): nothing to read
        return None


def _size_attributes(exchange: HttpExchange) -> dict[str, Scalar]:
    attributes: dict[str, Scalar] = {
        "request_bytes": exchange.request_bytes,
        "response_bytes": exchange.response_bytes,
    }
    if exchange.request_bytes > exchange.limit:
        attributes["request_truncated"] = True
    if exchange.response_bytes > exchange.limit:
        attributes["response_truncated"] = True
    if exchange.response_encoding not in ("", "identity"):
        attributes["response_encoding"] = exchange.response_encoding
    return attributes
