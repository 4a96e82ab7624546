"""A fast reader of ``inferwatch.event/1`` lines, for bulk work (``inferwatch replay``).

:func:`decode_event` validates with pydantic, about 25 µs a line: a replay of a million events
would spend half a minute there. :func:`decode_view` reads a line with msgspec into a
:class:`LiteEvent` (a few µs) when the line has the plain shape almost every agent writes, and
hands **anything else** to :func:`decode_event`, whose answer (an :class:`InferenceEvent`, or
:class:`MalformedEvent` with its message) is then the answer. So the fast path never decides
what is accepted or how it is reported; it only takes lines both readers accept, and gives the
same values for every field of :class:`EventView` (pinned by ``tests/collectors/test_fast_event.py``,
which runs both readers over thousands of generated and mutated lines).

What goes to :func:`decode_event`: fields this reader does not know (kept there as extras), a
``time`` that is not ``YYYY-MM-DDTHH:MM:SS[.ffffff](Z|±HH:MM)``, numbers given as strings or
integers given as ``2.0`` (pydantic's lax conversions), numbers out of range, invalid UTF-8,
anything pydantic would reject. A :class:`LiteEvent` has no ``time`` datetime (``time`` is the
string as written, ``ts`` its Unix seconds), keeps no unknown fields and is not an
:class:`InferenceEvent`: use it where :class:`EventView` is enough (detectors that take views,
see :meth:`inferwatch.detectors.pipeline.Pipeline.detect_views`).

>>> line = b'{"id":"e1","time":"2026-01-01T00:00:01.5+01:00","model":"m","input":{"features":{"x":1}}}'
>>> view = decode_view(line)
>>> type(view).__name__, view.ts, view.input.features, view.output.label
('LiteEvent', 1767222001.5, {'x': 1}, None)
>>> type(decode_view(b'{"id":"e1","time":0,"future_field":1}')).__name__
'InferenceEvent'
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Final

import msgspec

from inferwatch.collectors.event import (
    MAX_EVENT_BYTES,
    SCHEMA,
    EventView,
    InferenceEvent,
    Scalar,
    check_ids,
    check_schema,
    decode_event,
)

__all__ = ["LiteEvent", "LiteInput", "LiteOutput", "decode_view", "view_reader"]

# RFC 3339 with at most microseconds: pydantic and datetime.fromisoformat agree on all of these
# (other forms, e.g. 7-9 fraction digits or minutes without seconds, go the slow way).
_TIME_RE: Final = re.compile(
    r"\d{4}-\d{2}-\d{2}T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d(?:\.\d{1,6})?(?:Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)",
    re.ASCII,
)
_NonNegative = Annotated[int, msgspec.Meta(ge=0)]
_SECONDS: dict[str, int] = {}
"""``YYYY-MM-DDTHH:MM:SS`` (UTC) -> Unix seconds, for times already read the long way."""
_SECONDS_KEPT: Final = 4096


def _utc_seconds(time: str) -> float | None:
    """``time``'s Unix seconds when it is ``YYYY-MM-DDTHH:MM:SS[.f{1,6}]Z`` in a second already
    read the long way (regex, ``fromisoformat``) — else ``None``.

    Events come in time order, many to a second: this skips the regex and the datetime for
    almost all of them (about 0.7 of the 2.8 µs a line costs). The result is the very float
    ``datetime.timestamp()`` gives: ``(seconds * 10**6 + microseconds) / 10**6`` in integers, which
    is how it computes it.
    """
    size = len(time)
    if size == 20:
        if time[19] != "Z":
            return None
        seconds = _SECONDS.get(time[:19])
        return None if seconds is None else float(seconds)
    if not 22 <= size <= 27 or time[19] != "." or time[-1] != "Z":
        return None
    fraction = time[20:-1]
    if not (fraction.isdigit() and fraction.isascii()):  # int() would also take "1_0" or " 1"
        return None
    seconds = _SECONDS.get(time[:19])
    if seconds is None:
        return None
    return (seconds * 1_000_000 + int(fraction.ljust(6, "0"))) / 1_000_000


def _remember_second(head: str, parsed: datetime) -> None:
    if len(_SECONDS) >= _SECONDS_KEPT:
        _SECONDS.clear()
    _SECONDS[head] = int(parsed.replace(microsecond=0).timestamp())


class LiteInput(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """``input`` of a :class:`LiteEvent` (fields as :class:`~inferwatch.collectors.event.EventInput`)."""

    features: dict[str, Scalar] | None = None
    text: str | None = None
    chars: _NonNegative | None = None
    tokens: _NonNegative | None = None


class LiteOutput(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """``output`` of a :class:`LiteEvent` (fields as :class:`~inferwatch.collectors.event.EventOutput`)."""

    features: dict[str, Scalar] | None = None
    text: str | None = None
    chars: _NonNegative | None = None
    tokens: _NonNegative | None = None
    label: str | int | float | bool | None = None
    score: float | None = None
    finish_reason: str | None = None


class _LiteAgent(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    id: str
    seq: _NonNegative
    version: str | None = None
    dropped: _NonNegative | None = None


class LiteEvent(msgspec.Struct, forbid_unknown_fields=True, gc=False, rename={"schema_": "schema"}):
    """One event as :func:`decode_view` reads it: an :class:`EventView`, decoded in a few µs."""

    id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    time: str
    schema_: str = SCHEMA
    duration_ms: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    service: str = "unknown"
    model: str | None = None
    model_version: str | None = None
    operation: str | None = None
    endpoint: str | None = None
    principal: str | None = None
    client_ip: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    status: int | None = None
    error: str | None = None
    input: LiteInput = msgspec.field(default_factory=LiteInput)
    output: LiteOutput = msgspec.field(default_factory=LiteOutput)
    attributes: dict[str, Scalar] = msgspec.field(default_factory=dict)
    agent: _LiteAgent | None = None
    # Set from ``time`` after decoding. A line that carries this key (an unknown field to
    # pydantic, kept as an extra) gives it a number, never NaN, and goes the slow way.
    ts: float = msgspec.field(default=math.nan, name="__inferwatch_ts__")
    """Event time as Unix seconds (``time`` parsed)."""

    def __post_init__(self) -> None:
        # Checks pydantic makes in Python validators; a failure here sends the line to decode_event.
        if not math.isnan(self.ts):
            raise ValueError("a field named like the parsed time")
        time = self.time
        ts = _utc_seconds(time)
        if ts is None:
            if not _TIME_RE.fullmatch(time):
                raise ValueError("time in an uncommon form")
            parsed = datetime.fromisoformat(time)
            if time.startswith(("0001", "9999")):  # rare: let pydantic refuse (or accept) these
                raise ValueError("time near the ends of the range")
            ts = parsed.timestamp()
            if time[-1] == "Z":
                _remember_second(time[:19], parsed)
        self.ts = ts
        if self.schema_ != SCHEMA:
            check_schema(self.schema_)
        if self.trace_id is not None or self.span_id is not None:
            check_ids(self.trace_id, self.span_id)


_DECODER: Final = msgspec.json.Decoder(LiteEvent)


def decode_view(data: bytes, *, max_bytes: int = MAX_EVENT_BYTES) -> EventView:
    """Read one event line: a :class:`LiteEvent` on the fast path, else :func:`decode_event`'s answer.

    Raises :class:`~inferwatch.collectors.event.MalformedEvent` exactly when
    :func:`decode_event` would, with the same reason.
    """
    if len(data) <= max_bytes:
        try:
            return _DECODER.decode(data)
        except (msgspec.MsgspecError, ValueError, OverflowError):
            pass
    event: InferenceEvent = decode_event(data, max_bytes=max_bytes)
    return event


def view_reader(slow: Callable[[bytes], InferenceEvent]) -> Callable[[bytes], EventView]:
    """:func:`decode_view` that hands the lines leaving the fast path to ``slow`` — a function that
    calls :func:`decode_event` and looks at what it gave, e.g. at the unknown fields only those
    lines can carry — at no cost to the lines the fast path takes.

    >>> slow = []
    >>> read = view_reader(lambda data: slow.append(data) or decode_event(data))
    >>> type(read(b'{"id":"e1","time":"2026-01-01T00:00:00Z"}')).__name__, slow
    ('LiteEvent', [])
    >>> read(b'{"id":"e2","time":"2026-01-01T00:00:00Z","input":{"prompt":"hi"}}').input.model_extra
    {'prompt': 'hi'}
    """
    decode = _DECODER.decode

    def read(data: bytes) -> EventView:
        if len(data) <= MAX_EVENT_BYTES:
            try:
                return decode(data)
            except (msgspec.MsgspecError, ValueError, OverflowError):
                pass
        return slow(data)

    return read
