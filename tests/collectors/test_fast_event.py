"""Differential test of :func:`decode_view` (msgspec fast path) against :func:`decode_event` (pydantic).

The contract pinned here: for every input line, ``decode_view`` raises :class:`MalformedEvent` exactly
when ``decode_event`` does, with the same ``reason``; when both accept, every field of
:class:`~inferwatch.collectors.event.EventView` has the same value *and* the same Python type
(``1`` vs ``1.0`` vs ``True``, ``-0.0`` vs ``0.0``, dict key order). Lines with fields this reader does
not know must come back as :class:`InferenceEvent` with the extras kept.

Lines come from a seeded generator of (mostly) valid events, from mutations of those, and from a
hand-picked list of edge cases. No hypothesis: plain ``random.Random`` with fixed seeds, so a failure
is reproducible and its message prints the exact line.
"""

from __future__ import annotations

import functools
import json
import random
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Any

import msgspec
import pytest
from pydantic_core import PydanticUndefined

from inferwatch.collectors.event import (
    MAX_EVENT_BYTES,
    EventInput,
    EventOutput,
    InferenceEvent,
    MalformedEvent,
    decode_event,
)
from inferwatch.collectors.fast_event import LiteEvent, LiteInput, LiteOutput, decode_view, view_reader

# --------------------------------------------------------------------------------------------------
# Comparing the two readers
# --------------------------------------------------------------------------------------------------

_TOP_FIELDS = (
    "id",
    "ts",
    "service",
    "model",
    "model_version",
    "operation",
    "endpoint",
    "principal",
    "client_ip",
    "trace_id",
    "span_id",
    "status",
    "error",
    "duration_ms",
)
_INPUT_FIELDS = ("features", "text", "chars", "tokens")
_OUTPUT_FIELDS = (*_INPUT_FIELDS, "label", "score", "finish_reason")
_AGENT_FIELDS = ("id", "seq", "dropped")


def _typed(value: Any) -> Any:
    """A type-aware, exact projection: 1, 1.0 and True differ; so do -0.0 and 0.0; key order counts."""
    if isinstance(value, float):
        return ("float", repr(value))  # repr is exact and keeps the sign of zero
    if isinstance(value, Mapping):
        return (type(value).__name__, tuple((_typed(k), _typed(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return (type(value).__name__, tuple(_typed(v) for v in value))
    return (type(value).__name__, value)


def _project(view: Any) -> dict[str, Any]:
    out = {name: _typed(getattr(view, name)) for name in _TOP_FIELDS}
    out.update({f"input.{n}": _typed(getattr(view.input, n)) for n in _INPUT_FIELDS})
    out.update({f"output.{n}": _typed(getattr(view.output, n)) for n in _OUTPUT_FIELDS})
    agent = view.agent
    out.update({f"agent.{n}": _typed(None if agent is None else getattr(agent, n)) for n in _AGENT_FIELDS})
    return out


def _outcome(decode: Callable[..., Any], line: bytes, max_bytes: int) -> tuple[tuple[Any, ...], Any]:
    """What ``decode`` makes of ``line``, as a comparable tuple, and the view itself when accepted."""
    try:
        view = decode(line, max_bytes=max_bytes)
    except MalformedEvent as exc:
        return ("malformed", exc.reason), None
    except Exception as exc:  # anything else is itself a finding: decode_event promises MalformedEvent
        return ("raised", type(exc).__name__, str(exc)), None
    return ("accepted", _project(view)), view


class _Run:
    """Runs both readers over lines and keeps what differs, and which path the fast reader took."""

    def __init__(self) -> None:
        self.lines = 0
        self.accepted = 0
        self.fast = 0
        self.divergences: list[str] = []
        self.not_kept: list[str] = []  # unknown fields that did not come back on an InferenceEvent

    def check(self, line: bytes, *, max_bytes: int = MAX_EVENT_BYTES, unknown: bool = False) -> Any:
        self.lines += 1
        mine, view = _outcome(decode_view, line, max_bytes)
        theirs, event = _outcome(decode_event, line, max_bytes)
        if mine != theirs:
            self.divergences.append(_describe(line, max_bytes, mine, theirs, view))
            return None
        if view is None:
            return None
        self.accepted += 1
        if isinstance(view, LiteEvent):
            self.fast += 1
        if unknown and (not isinstance(view, InferenceEvent) or view.model_dump() != event.model_dump()):
            extras = (event.extra_fields, event.input.model_extra, event.output.model_extra)
            self.not_kept.append(
                f"LINE {line!r}\n    decode_view -> {type(view).__name__}; "
                f"decode_event's extras (top, input, output): {extras}"
            )
        return view

    def assert_agree(self) -> None:
        if self.divergences:
            shown = "\n".join(self.divergences[:12])
            count = len(self.divergences)
            pytest.fail(
                f"{count} of {self.lines} lines diverge (first {min(12, count)}):\n{shown}",
                pytrace=False,
            )


def _describe(line: bytes, max_bytes: int, mine: tuple[Any, ...], theirs: tuple[Any, ...], view: Any) -> str:
    head = f"LINE {line[:2000]!r}" + (f" (max_bytes={max_bytes})" if max_bytes != MAX_EVENT_BYTES else "")
    if mine[0] == theirs[0] == "accepted":
        diff = {k: (mine[1][k], theirs[1][k]) for k in mine[1] if mine[1][k] != theirs[1][k]}
        return f"{head}\n    fields differ (decode_view {type(view).__name__}, decode_event): {diff}"
    mine_s = mine if view is None else ("accepted", type(view).__name__)
    theirs_s = theirs if theirs[0] != "accepted" else ("accepted", "InferenceEvent")
    return f"{head}\n    decode_view  -> {mine_s}\n    decode_event -> {theirs_s}"


# --------------------------------------------------------------------------------------------------
# Writing JSON by hand: exact number tokens, duplicate keys, whitespace styles
# --------------------------------------------------------------------------------------------------


class Raw(str):
    """A JSON token written exactly as given (``1E2``, ``-0``, ``NaN``, ``1e999``...)."""

    __slots__ = ()


class Pairs(list):
    """A JSON object written as these (key, value) pairs, duplicates and all."""

    __slots__ = ()


_STYLES = (
    (",", ":", ""),  # what agents write
    (", ", ": ", ""),  # json.dumps default
    (" ,\t", " :\r\n", ""),
    (",\n  ", ": ", "\n"),  # pretty: newlines inside the "line"
)


def _dump(value: Any, style: tuple[str, str, str], ascii_only: bool) -> str:
    comma, colon, pad = style
    if isinstance(value, Raw):
        return str(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)  # finite floats only; NaN and friends come as Raw
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=ascii_only)
    if isinstance(value, Pairs | dict):
        items = value if isinstance(value, Pairs) else list(value.items())
        body = comma.join(
            f"{json.dumps(k, ensure_ascii=ascii_only)}{colon}{_dump(v, style, ascii_only)}" for k, v in items
        )
        return "{" + pad + body + pad + "}"
    if isinstance(value, list):
        return "[" + comma.join(_dump(v, style, ascii_only) for v in value) + "]"
    raise TypeError(type(value))


def _encode(doc: Any, rng: random.Random) -> bytes:
    style = _STYLES[0] if rng.random() < 0.6 else rng.choice(_STYLES)
    text = _dump(doc, style, ascii_only=rng.random() < 0.3)
    if rng.random() < 0.1:
        text = rng.choice((" ", "\t", "\n", "\r\n")) + text + rng.choice(("", "\n", " \r\n", "\t"))
    # surrogatepass: a str may hold a lone surrogate (written raw, as invalid UTF-8) on purpose
    return text.encode("utf-8", "surrogatepass")


# --------------------------------------------------------------------------------------------------
# A generator of (mostly) valid events
# --------------------------------------------------------------------------------------------------

_TEXT_PIECES = (
    "a",
    "Z",
    " ",
    "0",
    "fraud-api",
    "\u00e9",  # precomposed e acute
    "e\u0301",  # e + combining acute
    "n\u0303\u0323",  # two combining marks
    "\u00df",
    "\u4e2d\u6587",
    "\u0627\u0644\u0639\u0631\u0628\u064a\u0629",
    "\U0001f600",  # emoji outside the BMP
    "\U0001f469\u200d\U0001f469\u200d\U0001f467",  # ZWJ sequence
    "\U0001f1ec\U0001f1e7",  # flag
    "\u200b",
    "\u2028",
    "\ufeff",
    "\ufffd",
    "\U0010ffff",
    "\x00",
    "\x1f",
    "\x7f",
    '"',
    "\\",
    "/",
    "\n",
    "\t",
    "\r",
)
_HEX = "0123456789abcdef"
_EDGE_FLOATS = (
    0.0,
    -0.0,
    1.0,
    0.5,
    0.1,
    1 / 3,
    1e308,
    -1e308,
    1.7976931348623157e308,
    5e-324,
    -5e-324,
    2.2250738585072014e-308,
    2.225073858507201e-308,
    1e-7,
    1e16,
    9007199254740993.0,
    123456.789,
)
_EDGE_INTS = (
    0,
    1,
    -1,
    7,
    2**31,
    2**53 + 1,
    2**63 - 1,
    2**63,
    2**64 - 1,
    2**64,
    -(2**63),
    -(2**63) - 1,
    10**30,
    -(10**40),
)
_NUMBER_SPELLINGS = ("1E2", "1e+2", "100e-2", "-0", "0e0", "0.0e-5", "1.5E-3", "2.50", "1.0", "10E-1", "-0.0")
_ZONES = ("Z", "+00:00", "-00:00", "+01:00", "-05:30", "+05:45", "+14:00", "+23:59", "-23:59")
_ODD_ZONES = (
    "z",  # lowercase: pydantic's business, not the fast path's
    "+24:00",
    "+0100",
    "+01",
    "+01:00:30",
    "",  # naive: rejected
)


def _text(rng: random.Random, most: int = 8) -> str:
    return "".join(rng.choice(_TEXT_PIECES) for _ in range(rng.randint(0, most)))


def _float(rng: random.Random) -> float:
    r = rng.random()
    if r < 0.3:
        return rng.choice(_EDGE_FLOATS)
    if r < 0.6:
        return rng.uniform(-1e6, 1e6)
    if r < 0.8:
        return round(rng.uniform(0, 1000), rng.randint(0, 4))
    return rng.gauss(0, 1) * 10.0 ** rng.randint(-300, 300)


def _nonneg_float(rng: random.Random) -> Any:
    r = rng.random()
    if r < 0.15:
        return rng.choice((0, 1, 250, 0.0, -0.0, 1e308, 5e-324, 2**64, 10**30))
    if r < 0.25:
        return Raw(rng.choice(("1E2", "1e+2", "100e-2", "-0", "0e0", "12.50", "-0.0")))
    if r < 0.5:
        return rng.randint(0, 100_000)
    return abs(_float(rng))


def _scalar(rng: random.Random) -> Any:
    r = rng.random()
    if r < 0.2:
        return _text(rng, 4)
    if r < 0.35:
        return rng.randint(-1000, 1000)
    if r < 0.45:
        return rng.choice(_EDGE_INTS)
    if r < 0.7:
        return _float(rng)
    if r < 0.8:
        return rng.choice((True, False))
    if r < 0.9:
        return None
    return Raw(rng.choice(_NUMBER_SPELLINGS))


def _maybe(
    rng: random.Random, doc: dict[str, Any], key: str, make: Callable[[], Any], p: float = 0.55
) -> None:
    """Present with probability ``p``, else absent or (a third of the time) an explicit null."""
    r = rng.random()
    if r < p:
        doc[key] = make()
    elif r < p + (1 - p) / 3:
        doc[key] = None


def _id(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.1:
        return rng.choice(("a", "7", "\U0001f600", "\u00e9", " "))
    if r < 0.2:
        return rng.choice(
            (
                "x" * 128,
                "\U0001f600" * 128,  # 128 code points, 512 bytes
                "e\u0301" * 64,  # 128 code points, 64 graphemes
                "x" * 129,
                "\U0001f600" * 129,
                "e\u0301" * 64 + "e",
            )
        )
    if r < 0.21:
        return ""
    if r < 0.6:
        return "".join(rng.choice(_HEX) for _ in range(32))
    return _text(rng, 10) or "e"


def _time(rng: random.Random) -> Any:
    r = rng.random()
    if r < 0.08:  # unix seconds (or milliseconds, pydantic decides) as a JSON number
        return rng.choice(
            (0, 1_700_000_000, rng.randint(0, 2_000_000_000), rng.uniform(0, 2e9), 1.7e12, -1.5)
        )
    if r < 0.1:
        return rng.choice(("1700000000", "1700000000.5", "0"))
    if r < 0.14:
        return rng.choice(
            (
                "2024-02-29T12:00:00Z",  # leap day
                "2023-02-29T12:00:00Z",  # not a day
                "2024-04-31T00:00:00Z",
                "2024-01-01T24:00:00Z",  # hour 24
                "2016-12-31T23:59:60Z",  # leap second
                "2024-01-01T00:00:00+24:00",
                "2024-01-01",
                "2024-01-01T00:00Z",
                "20240101T000000Z",
                "2024-1-1T00:00:00Z",
                "0000-01-01T00:00:00Z",
                " 2024-01-01T00:00:00Z",
                "2024-01-01T00:00:00Z\n",
                "\uff12024-01-01T00:00:00Z",  # a full-width digit
                "",
            )
        )
    if r < 0.16:  # the ends of datetime's range, where converting to UTC may step outside it
        sign = rng.choice("+-")
        zone = f"{sign}{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}"
        if rng.random() < 0.5:
            return f"0001-01-01T{rng.randint(0, 2):02d}:{rng.randint(0, 59):02d}:00{zone}"
        return f"9999-12-31T{rng.randint(21, 23):02d}:{rng.randint(0, 59):02d}:59.5{zone}"
    y = rng.random()
    if y < 0.85:
        year = rng.randint(1970, 2099)
    elif y < 0.9:
        year = rng.randint(1, 1969)
    else:
        year = rng.choice((1, 9999, 1900, 2000, 2038))
    month = rng.randint(1, 12) if rng.random() < 0.97 else rng.choice((0, 13))
    day = rng.randint(1, 28) if rng.random() < 0.85 else rng.choice((29, 30, 31, 0, 32))
    if year in (1, 9999) and rng.random() < 0.5:  # the ends of datetime's range, where offsets overflow
        month, day = (1, 1) if year == 1 else (12, 31)
    hour = rng.randint(0, 23)
    minute = rng.randint(0, 59)
    second = rng.randint(0, 59)
    if year in (1, 9999) and rng.random() < 0.5:
        hour, minute, second = (0, 0, 0) if year == 1 else (23, 59, 59)
    text = f"{year:04d}-{month:02d}-{day:02d}"
    text += "T" if rng.random() < 0.9 else rng.choice("t _")
    text += f"{hour:02d}:{minute:02d}:{second:02d}"
    if rng.random() < 0.5:
        digits = rng.randint(1, 6) if rng.random() < 0.8 else rng.randint(7, 9)
        text += "." + "".join(rng.choice("0123456789") for _ in range(digits))
    r = rng.random()
    return text + ("Z" if r < 0.5 else rng.choice(_ZONES) if r < 0.9 else rng.choice(_ODD_ZONES))


def _schema(rng: random.Random) -> Any:
    return rng.choice(
        (
            "inferwatch.event/1",
            "inferwatch.event/1",
            "inferwatch.event/1",
            "inferwatch.event/1.3",
            "inferwatch.event/1.0",
            "inferwatch.event/01",
            "inferwatch.event/1\n",
            "inferwatch.event/\u0661",  # an Arabic-Indic one: \d without re.ASCII
            "inferwatch.event/2",
            "inferwatch.event/0",
            "inferwatch.event/1.",
            "inferwatch.event",
            "junk",
            "",
            None,
        )
    )


def _hex_id(rng: random.Random, n: int) -> Any:
    good = "".join(rng.choice(_HEX) for _ in range(n))
    r = rng.random()
    if r < 0.8:
        return good
    return rng.choice(
        (
            good.upper(),
            good[:-1],
            good + "0",
            good + "\n",  # `$` in the validators' regexes matches before a final newline
            good[:-1] + "g",
            "0" * n,
            "",
            good[:-1] + "\u0660",
        )
    )


def _part(rng: random.Random, output: bool) -> dict[str, Any]:
    part: dict[str, Any] = {}
    _maybe(rng, part, "features", lambda: {_text(rng, 3): _scalar(rng) for _ in range(rng.randint(0, 6))})
    _maybe(rng, part, "text", lambda: _text(rng, 12), p=0.4)

    def size() -> int:
        return rng.randint(0, 5000) if rng.random() < 0.9 else rng.choice(_EDGE_INTS[:10])

    _maybe(rng, part, "chars", size, p=0.4)
    _maybe(rng, part, "tokens", size, p=0.4)
    if output:
        _maybe(rng, part, "label", lambda: _scalar(rng))
        odd_scores = (0, 1, 2**64, -0.0)
        _maybe(rng, part, "score", lambda: _float(rng) if rng.random() < 0.8 else rng.choice(odd_scores))
        reasons = ("stop", "length", "tool_calls", "")
        _maybe(rng, part, "finish_reason", lambda: rng.choice(reasons) or _text(rng, 3), p=0.3)
    return part


def _event(rng: random.Random) -> dict[str, Any]:
    doc: dict[str, Any] = {"id": _id(rng), "time": _time(rng)}
    if rng.random() < 0.4:
        doc["schema"] = _schema(rng)
    if rng.random() < 0.7:
        doc["duration_ms"] = _nonneg_float(rng)
    if rng.random() < 0.7:
        doc["service"] = rng.choice(("fraud-api", "chat", _text(rng, 6)))
    for key in ("model", "model_version", "operation", "endpoint", "principal", "client_ip", "error"):
        _maybe(rng, doc, key, lambda: _text(rng, 6), p=0.45)
    _maybe(rng, doc, "trace_id", lambda: _hex_id(rng, 32), p=0.4)
    _maybe(rng, doc, "span_id", lambda: _hex_id(rng, 16), p=0.4)
    _maybe(rng, doc, "status", lambda: rng.choice((200, 200, 404, 500, 0, -1, 2**63 - 1, 2**64 - 1)), p=0.5)
    if rng.random() < 0.8:
        doc["input"] = _part(rng, output=False)
    if rng.random() < 0.8:
        doc["output"] = _part(rng, output=True)
    if rng.random() < 0.3:
        doc["attributes"] = {_text(rng, 3): _scalar(rng) for _ in range(rng.randint(0, 4))}
    r = rng.random()
    if r < 0.3:
        agent: dict[str, Any] = {"id": _text(rng, 4), "seq": rng.choice((0, 1, 41, 2**63, 2**64 - 1))}
        if rng.random() < 0.5:
            agent["version"] = rng.choice(("0.1.0", None))
        if rng.random() < 0.5:
            agent["dropped"] = rng.choice((0, 7, 2**63, 2**64 - 1, None))
        doc["agent"] = agent
    elif r < 0.35:
        doc["agent"] = None
    if rng.random() < 0.3:
        keys = list(doc)
        rng.shuffle(keys)
        doc = {k: doc[k] for k in keys}
    return doc


@functools.cache
def _valid_lines() -> tuple[bytes, ...]:
    rng = random.Random(20260301)
    return tuple(_encode(_event(rng), rng) for _ in range(2000))


@functools.cache
def _run_valid() -> _Run:
    run = _Run()
    for line in _valid_lines():
        run.check(line)
    return run


def test_generated_events_agree_with_decode_event() -> None:
    _run_valid().assert_agree()


def test_a_decent_share_of_generated_events_take_the_fast_path() -> None:
    run = _run_valid()
    assert run.lines == 2000
    assert run.accepted >= 800, f"only {run.accepted} of {run.lines} generated lines are accepted at all"
    assert run.fast >= 0.5 * run.accepted, f"only {run.fast} of {run.accepted} accepted took the fast path"
    assert run.fast < run.accepted  # and the slow path is exercised too


def test_the_fast_path_covers_every_field() -> None:
    """Every EventView field is seen set (non-default) on some LiteEvent, so each is really compared."""
    seen: set[str] = set()
    for line in _valid_lines():
        try:
            view = decode_view(line)
        except Exception:  # refusals are the other tests' business
            continue
        if not isinstance(view, LiteEvent):
            continue
        seen.update(n for n in _TOP_FIELDS if getattr(view, n) not in (None, "unknown", 0.0))
        seen.update(f"input.{n}" for n in _INPUT_FIELDS if getattr(view.input, n) is not None)
        seen.update(f"output.{n}" for n in _OUTPUT_FIELDS if getattr(view.output, n) is not None)
    every = {*_TOP_FIELDS, *(f"input.{n}" for n in _INPUT_FIELDS), *(f"output.{n}" for n in _OUTPUT_FIELDS)}
    assert every - seen == set()


# --------------------------------------------------------------------------------------------------
# Mutations of valid events
# --------------------------------------------------------------------------------------------------

_WRONG_VALUES: dict[str, tuple[Any, ...]] = {
    "id": (None, 5, 1.5, True, [], {}, ["e"], ""),
    "time": (None, True, [], {}, Raw("NaN"), Raw("1e999"), "yesterday", "2026-01-01T00:00:00"),
    "schema": (1, None, True, ["inferwatch.event/1"]),
    "duration_ms": ("12.5", "0", True, False, -1, -0.001, -(2**64), [], {}, None, Raw("1e999"), Raw("-1e9")),
    "service": (None, 5, True, [], {}),
    "model": (5, 1.0, True, [], {"a": 1}),
    "trace_id": (5, True, [], 0x4BF92F3577B34DA6A3CE929D0E0E4736),
    "span_id": (5, True, []),
    "status": ("200", 200.0, 200.5, True, False, 2**64, -(2**63) - 1, 10**30, Raw("2E2"), Raw("200.00"), []),
    "error": (5, True, [], {}),
    "input": (None, [], "x", 5, True),
    "output": (None, [], "x", 5),
    "attributes": (None, [], "x", {"a": [1]}, {"a": {"b": 1}}, {"a": Raw("NaN")}),
    "agent": ([], "x", {"id": "a"}, {"seq": 1}, {"id": "a", "seq": -1}, {"id": "a", "seq": 1.0},
              {"id": "a", "seq": 1, "dropped": -1}, {"id": "a", "seq": 1, "dropped": "3"},
              {"id": "a", "seq": 1, "dropped": 2.0}),
}
_WRONG_PART_VALUES: dict[str, tuple[Any, ...]] = {
    "features": (
        [],
        "x",
        5,
        {"a": {"b": 1}},
        {"a": [1, 2]},
        {"a": []},
        {"a": Raw("NaN")},
        {"a": Raw("Infinity")},
        {"a": Raw("-Infinity")},
        {"a": Raw("1e999")},
        {"a": Raw("-1e400")},
    ),
    "text": (5, True, [], {}),
    "chars": ("40", -1, -(2**64), 1.0, 1.5, True, Raw("1E2"), [], 2**64, 10**30),
    "tokens": ("40", -1, 1.0, 0.0, -0.0, False, Raw("1e1"), {}, 2**64, 10**30),
}
_WRONG_OUTPUT_VALUES: dict[str, tuple[Any, ...]] = {
    "label": ([], {}, [1], Raw("NaN"), Raw("1e999"), Raw("Infinity")),
    "score": ("0.5", True, False, [], {}, Raw("NaN"), Raw("Infinity"), Raw("-Infinity"), 10**400, -1),
    "finish_reason": (5, True, []),
}
_UNKNOWN_TOP = ("tenant", "ts", "Time", "ID", "time_", "input_", "", "\u00e9", "__inferwatch_ts__", "schema_")
_UNKNOWN_PART = ("lang", "ts", "Text", "")
_UNKNOWN_INPUT_ONLY = ("label", "score", "finish_reason")  # output fields, unknown under input
_TRAILERS = (b",", b"x", b"}", b"{}", b" {}", b"\x00", b"]", b"\xff", b"//", b"\n{}")
_DOCUMENTS = (
    b"",
    b" ",
    b"\n",
    b"null",
    b"[]",
    b"{}",
    b"1",
    b'"x"',
    b"true",
    b"not json",
    b"\xff\xfe",
    b'{"id":"x"',
    b'{"id":"e","time":"2026-01-01T00:00:00Z"}}',
)


def _part_key(rng: random.Random, doc: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    side = rng.choice(("input", "output"))
    part = doc.get(side)
    if not isinstance(part, dict):
        part = {}
        doc[side] = part
    return side, part


def _set_wrong_top(rng: random.Random, doc: dict[str, Any]) -> Any:
    key = rng.choice(list(_WRONG_VALUES))
    doc[key] = rng.choice(_WRONG_VALUES[key])
    return doc


def _set_wrong_part(rng: random.Random, doc: dict[str, Any]) -> Any:
    side, part = _part_key(rng, doc)
    table = dict(_WRONG_PART_VALUES)
    if side == "output":
        table.update(_WRONG_OUTPUT_VALUES)
    key = rng.choice(list(table))
    part[key] = rng.choice(table[key])
    return doc


def _drop_required(rng: random.Random, doc: dict[str, Any]) -> Any:
    del doc[rng.choice(("id", "time"))]
    return doc


def _null_part(rng: random.Random, doc: dict[str, Any]) -> Any:
    doc[rng.choice(("input", "output", "attributes", "agent", "schema", "service", "duration_ms"))] = None
    return doc


def _duplicate_key(rng: random.Random, doc: dict[str, Any]) -> Any:
    """Write one key twice; the other value is sometimes valid, sometimes not, first or last."""
    if rng.random() < 0.5 or not isinstance(doc.get("input"), dict):
        items = list(doc.items())
        key = rng.choice([*doc, "id", "time"])
        other = rng.choice(
            (
                _event(rng).get(key, "e"),
                *(_WRONG_VALUES.get(key, (None,))),
            )
        )
        pos = rng.randint(0, len(items))
        items.insert(pos, (key, other))
        return Pairs(items)
    side, part = _part_key(rng, doc)
    items = list(part.items())
    key = rng.choice([*part, "features", "text", "tokens"])
    if key == "features" and rng.random() < 0.5:
        feats = Pairs((_text(rng, 2), _scalar(rng)) for _ in range(3))
        feats.append((feats[0][0], _scalar(rng)))
        doc[side] = {**part, "features": feats}
        return doc
    items.insert(rng.randint(0, len(items)), (key, _part(rng, side == "output").get(key)))
    doc[side] = Pairs(items)
    return doc


def _raw_number(rng: random.Random, doc: dict[str, Any]) -> Any:
    tokens = ("NaN", "Infinity", "-Infinity", "1e999", "-1e999", "nan", "inf", "+1", "01", ".5", "1.", "1e")
    token = Raw(rng.choice(tokens))
    where = rng.random()
    if where < 0.3:
        doc["duration_ms"] = token
    elif where < 0.5:
        doc["output"] = {"score": token}
    elif where < 0.7:
        doc["output"] = {"label": token}
    elif where < 0.9:
        doc["input"] = {"features": {"x": token}}
    else:
        doc["attributes"] = {"a": token}
    return doc


def _bad_string(rng: random.Random, doc: dict[str, Any]) -> Any:
    """A lone surrogate (as an escape or raw), or a raw control character, in some string."""
    bad = rng.choice(("\ud800", "\udc00", "a\udfffb", "\ud83d"))
    key = rng.choice(("id", "service", "error", "model", "time"))
    doc[key] = (doc.get(key) if isinstance(doc.get(key), str) else "x") + bad
    return doc


def _byte_level(rng: random.Random, line: bytes) -> bytes:
    r = rng.random()
    if r < 0.25:  # truncated
        return line[: rng.randint(0, max(0, len(line) - 1))]
    if r < 0.4:
        return line + rng.choice(_TRAILERS)
    if r < 0.5:
        return b"\xef\xbb\xbf" + line  # a UTF-8 BOM
    if r < 0.7:  # an invalid UTF-8 sequence inside a string value
        quote = [i for i, b in enumerate(line) if b == ord('"')]
        at = rng.choice(quote) + 1 if quote else 0
        junk = rng.choice(
            (b"\xff", b"\xc3", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80", b"\xe2\x82")
        )
        return line[:at] + junk + line[at:]
    if r < 0.8:  # a raw control character inside a string value
        at = line.find(b'"', 1) + 1
        return line[:at] + bytes([rng.choice((0, 1, 9, 10, 13, 31))]) + line[at:]
    if r < 0.9:  # a stray byte anywhere
        at = rng.randint(0, len(line))
        return line[:at] + bytes([rng.randrange(256)]) + line[at:]
    return rng.choice(_DOCUMENTS)


_DOC_MUTATIONS: tuple[Callable[[random.Random, dict[str, Any]], Any], ...] = (
    _set_wrong_top,
    _set_wrong_top,
    _set_wrong_part,
    _set_wrong_part,
    _drop_required,
    _null_part,
    _duplicate_key,
    _duplicate_key,
    _raw_number,
    _bad_string,
)


def _mutated_lines() -> Iterator[bytes]:
    rng = random.Random(7)
    for _ in range(3000):
        doc = _event(rng)
        if rng.random() < 0.75:
            yield _encode(rng.choice(_DOC_MUTATIONS)(rng, doc), rng)
        else:
            yield _byte_level(rng, _encode(doc, rng))


def test_mutated_events_agree_with_decode_event() -> None:
    run = _Run()
    for line in _mutated_lines():
        run.check(line)
    run.assert_agree()
    assert run.lines == 3000
    assert run.accepted > 100  # duplicate keys and the like are accepted...
    assert run.fast > 50  # ...and some of them on the fast path


def _unknown_field_lines() -> Iterator[bytes]:
    rng = random.Random(11)
    for i in range(600):
        doc = _event(rng)
        doc["id"], doc["time"], doc["schema"] = "e", "2026-01-01T00:00:00Z", "inferwatch.event/1"
        for key in ("trace_id", "span_id"):
            doc.pop(key, None)
        level = i % 4
        if level == 0:
            doc[_UNKNOWN_TOP[(i // 4) % len(_UNKNOWN_TOP)]] = _scalar(rng)
        elif level in (1, 2):
            side = "input" if level == 1 else "output"
            part = doc.get(side) if isinstance(doc.get(side), dict) else {}
            names = _UNKNOWN_PART + (_UNKNOWN_INPUT_ONLY if side == "input" else ())
            part[names[(i // 4) % len(names)]] = rng.choice((_scalar(rng), [1], {"k": "v"}))
            doc[side] = part
        else:
            doc["agent"] = {"id": "a", "seq": 1, "host": rng.choice(("h", 1, None, [1]))}
        yield _encode(doc, rng)


def test_unknown_fields_go_to_decode_event_and_are_kept() -> None:
    run = _Run()
    for line in _unknown_field_lines():
        run.check(line, unknown=b"schema_" not in line)  # schema_ is pydantic's name for schema, not an extra
    run.assert_agree()
    assert run.accepted > 300
    lost = "\n".join(run.not_kept[:5])
    assert not run.not_kept, f"{len(run.not_kept)} lines lost their unknown fields:\n{lost}"


def test_over_long_lines_are_refused_alike() -> None:
    run = _Run()
    rng = random.Random(3)
    for line in _valid_lines()[:300]:
        for max_bytes in (len(line) - 1, len(line), len(line) + 1, rng.randint(0, len(line)), 0):
            run.check(line, max_bytes=max_bytes)
    head, tail = b'{"id":"e","time":"2026-01-01T00:00:00Z","input":{"text":"', b'"}}'
    at_limit = head + b"x" * (MAX_EVENT_BYTES - len(head) - len(tail)) + tail
    huge = at_limit[:-len(tail)] + b"x" + tail
    assert (len(at_limit), len(huge)) == (MAX_EVENT_BYTES, MAX_EVENT_BYTES + 1)
    run.check(at_limit)
    run.check(huge)
    run.assert_agree()
    assert isinstance(decode_view(at_limit), LiteEvent)
    with pytest.raises(MalformedEvent, match="over the 1048576-byte limit"):
        decode_view(huge)


# --------------------------------------------------------------------------------------------------
# Hand-picked lines
# --------------------------------------------------------------------------------------------------

_BASE = '"id":"e","time":"2026-01-01T00:00:00Z"'


def _with(rest: str) -> str:
    """A minimal event with ``rest`` (more members) after its id and time."""
    return "{" + _BASE + "," + rest + "}"


_EDGE_LINES = {
    "plain": "{" + _BASE + "}",
    "all fields": (
        '{"schema":"inferwatch.event/1.3","id":"01890a5d","time":"2026-03-01T12:00:00.250+01:00",'
        '"duration_ms":12.5,"service":"fraud-api","model":"m","model_version":"7","operation":"predict",'
        '"endpoint":"/v1","principal":"p","client_ip":"10.1.2.0","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736",'
        '"span_id":"00f067aa0ba902b7","status":200,"error":null,'
        '"input":{"features":{"a":1,"b":1.0,"c":true,"d":null,"e":"x"},"text":"t","chars":4,"tokens":1},'
        '"output":{"features":{},"text":"o","chars":1,"tokens":2,"label":1,"score":0,"finish_reason":"stop"},'
        '"attributes":{"r":"eu"},"agent":{"id":"a1","seq":41,"version":"0.1.0"}}'
    ),
    "duration -0": _with('"duration_ms":-0'),
    "duration -0.0": _with('"duration_ms":-0.0'),
    "duration 5e-324": _with('"duration_ms":5e-324'),
    "duration int": _with('"duration_ms":7'),
    "duration big int": _with('"duration_ms":18446744073709551616'),
    "score int": _with('"output":{"score":1}'),
    "score max float": _with('"output":{"score":1.7976931348623157e308}'),
    "score rounds to inf": _with('"output":{"score":1.7976931348623159e308}'),
    "score 1e400 digits": _with('"output":{"score":1' + "0" * 400 + "}"),
    "label 1 / 1.0 / true": _with('"output":{"label":1},"input":{"features":{"a":1.0,"b":true,"c":1}}'),
    "label 2**64": _with('"output":{"label":18446744073709551616}'),
    "feature -2**63-1": _with('"input":{"features":{"x":-9223372036854775809}}'),
    "feature 1e-400": _with('"input":{"features":{"x":-1e-400}}'),
    "feature 0e999999": _with('"input":{"features":{"x":0e999999}}'),
    "feature long mantissa": _with('"input":{"features":{"x":0.' + "1" * 800 + "}}"),
    "duplicate feature": _with('"input":{"features":{"a":1,"b":2,"a":"3"}}'),
    "duplicate input": _with('"input":{"text":"a"},"input":{"tokens":1}'),
    "duplicate id": _with('"id":"z"'),
    "duplicate schema": '{"schema":"inferwatch.event/2",' + _BASE + ',"schema":"inferwatch.event/1"}',
    "schema_ by name": _with('"schema_":"inferwatch.event/2"'),
    "id 128 emoji": '{"id":"' + "\\ud83d\\ude00" * 128 + '","time":"2026-01-01T00:00:00Z"}',
    "id 129 emoji": '{"id":"' + "\U0001f600" * 129 + '","time":"2026-01-01T00:00:00Z"}',
    "escaped NUL": _with('"service":"x\\u0000y"'),
    "lone surrogate": _with('"error":"\\ud800"'),
    "trace id newline": _with('"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736\\n"'),
    "span id newline": _with('"span_id":"00f067aa0ba902b7\\n"'),
    "schema newline": _with('"schema":"inferwatch.event/1\\n"'),
    "time +23:59": '{"id":"e","time":"2024-01-01T00:00:00+23:59"}',
    "time 6 digits": '{"id":"e","time":"2024-01-01T00:00:00.999999-05:30"}',
    "time 7 digits": '{"id":"e","time":"2024-01-01T00:00:00.9999995Z"}',
    "time 1969": '{"id":"e","time":"1969-12-31T23:59:59.5Z"}',
    "time year 1 minus": '{"id":"e","time":"0001-01-01T00:00:00-01:00"}',
    "time year 9999 plus": '{"id":"e","time":"9999-12-31T23:59:59+01:00"}',
    # decode_event refuses these: in UTC they fall outside datetime's range (its `_utc` validator's
    # astimezone overflows). The fast path's fromisoformat(...).timestamp() never converts, so it accepts.
    "time year 1 plus": '{"id":"e","time":"0001-01-01T00:00:00+01:00"}',
    "time year 9999 minus": '{"id":"e","time":"9999-12-31T23:59:59-01:00"}',
    "whitespace": ' \t\r\n{ "id" : "e" ,\n"time":"2026-01-01T00:00:00Z"\t}\r\n',
    "form feed": '\x0c{' + _BASE + '}',
    "NBSP": '\u00a0{' + _BASE + '}',
    "BOM": '\ufeff{' + _BASE + '}',
    "input null": _with('"input":null'),
    "features null": _with('"input":{"features":null},"output":{"features":null}'),
    "agent null": _with('"agent":null'),
    "agent extra": _with('"agent":{"id":"a","seq":1,"host":"h"}'),
}


@pytest.mark.parametrize("line", list(_EDGE_LINES.values()), ids=list(_EDGE_LINES))
def test_edge_lines_agree(line: str) -> None:
    run = _Run()
    run.check(line.encode("utf-8", "surrogatepass"))
    run.assert_agree()


def test_the_internal_ts_name_is_an_unknown_field_like_any_other() -> None:
    """``LiteEvent.ts`` is a struct field named ``__inferwatch_ts__`` in JSON, so msgspec takes that key
    as known: the line must still go to decode_event, which keeps it as an extra."""
    line = b'{"id":"e","time":"2026-01-01T00:00:00Z","__inferwatch_ts__":5}'
    event = decode_event(line)
    assert event.extra_fields == {"__inferwatch_ts__": 5}
    view = decode_view(line)
    assert isinstance(view, InferenceEvent), f"decode_view gave {view!r}: the extra is lost"
    assert view.extra_fields == event.extra_fields


@pytest.mark.parametrize(("lite", "model"), [
    (LiteEvent, InferenceEvent), (LiteInput, EventInput), (LiteOutput, EventOutput)])
def test_the_fast_structs_declare_what_the_event_model_declares(lite: Any, model: Any) -> None:
    """A field or default added to the pydantic model must be added to the fast reader too (or
    every line carrying it would silently lose it, or be read with another default)."""
    fields = {f.encode_name: f for f in msgspec.structs.fields(lite) if f.encode_name != "__inferwatch_ts__"}
    declared = {(f.alias or name): f for name, f in model.model_fields.items()}
    assert set(fields) == set(declared)
    for name, field in declared.items():
        default = field.get_default(call_default_factory=True)
        ours = fields[name].default if fields[name].default is not msgspec.NODEFAULT else (
            fields[name].default_factory() if fields[name].default_factory is not msgspec.NODEFAULT
            else PydanticUndefined)
        if isinstance(default, EventInput | EventOutput):
            assert type(ours).__name__ == "Lite" + type(default).__name__[len("Event"):]
        else:
            assert ours == default, name


# --------------------------------------------------------------------------------------------------
# The per-second cache of UTC times
# --------------------------------------------------------------------------------------------------

_HEADS = ("2026-11-26T07:59:59", "2024-02-29T23:00:00", "1970-01-01T00:00:00", "2038-01-19T03:14:07")
_TAILS = (
    "Z", ".5Z", ".05Z", ".123456Z", ".000001Z", ".999999Z", ".1Z",  # accepted forms
    ".Z", ".1234567Z", ".123456789Z", "z", ".5z", ".1_0Z", ". 1Z", ".+1Z", ".-1Z", ".\uff11Z",
    ".\u0661Z", "Z ", ".5Zx", "+00:00", ".5+00:00", ".5-01:30", ":00Z", "", ".", ".5",
)


def test_times_in_a_second_already_read_agree_with_decode_event() -> None:
    """Once a second has been read the long way, later times in it skip the regex: every tail,
    valid or not, must still get decode_event's answer, and the very same float."""
    run = _Run()
    for head in _HEADS:
        run.check(json.dumps({"id": "warm", "time": head + ".25Z"}).encode())  # now the second is known
        for tail in _TAILS:
            run.check(json.dumps({"id": "e", "time": head + tail}).encode())
    run.assert_agree()
    assert run.fast >= len(_HEADS) * 7  # the accepted forms took the fast path


def test_the_cached_time_is_the_float_datetime_gives() -> None:
    rng = random.Random(7)
    for _ in range(3000):
        head = f"{rng.randint(1970, 2099)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T" \
               f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 6)))
        first = decode_view(json.dumps({"id": "a", "time": head + "Z"}).encode())
        second = decode_view(json.dumps({"id": "b", "time": f"{head}.{digits}Z"}).encode())
        assert isinstance(first, LiteEvent)
        assert isinstance(second, LiteEvent)
        expected = datetime.fromisoformat(f"{head}.{digits}+00:00").timestamp()
        assert repr(second.ts) == repr(expected), f"{head}.{digits}Z"
        assert first.ts == datetime.fromisoformat(head + "+00:00").timestamp()


def test_view_reader_hands_only_the_lines_off_the_fast_path_to_its_slow_reader() -> None:
    slow: list[bytes] = []

    def noting(data: bytes) -> InferenceEvent:
        slow.append(data)
        return decode_event(data)

    read = view_reader(noting)
    plain = b'{"id":"a","time":"2026-01-01T00:00:00Z","input":{"text":"hi"}}'
    extra = b'{"id":"b","time":"2026-01-01T00:00:00Z","input":{"prompt":"hi"}}'
    assert isinstance(read(plain), LiteEvent)
    assert slow == []
    view = read(extra)
    assert isinstance(view, InferenceEvent)
    assert view.input.model_extra == {"prompt": "hi"}
    assert slow == [extra]
    with pytest.raises(MalformedEvent, match="time: Field required"):
        read(b'{"id":"c"}')
