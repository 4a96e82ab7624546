"""The per-caller features of ``behaviour_anomaly``: running sums per caller, and rows of them.

:class:`CallerRows` keeps each caller's running sums in flat arrays (13 single-precision
numbers and a 128-bit bitmap, 68 bytes), keyed through a
:class:`~inferwatch.detectors.state.RowIndex` (LRU and event-time TTL), so that a request
costs a few array updates and a set of callers becomes a feature matrix with a handful of
vectorised operations (:func:`row_features`). A caller's sums make a *row* once they hold
``min_requests`` requests: a heavy caller gives a row every window, a light one after as many
windows as it needs (within ``max_span_s``). Heavy-tailed amounts are ``log1p``-scaled so that
the forest's random splits are spread over orders of magnitude, not over the one outlier.
:mod:`.behaviour_explain` turns a row back into the units an on-call engineer reads.

>>> from inferwatch.detectors.behaviour_explain import hours_of
>>> from inferwatch.testing import make_event
>>> rows = CallerRows(max_callers=10, ttl_s=3600.0, sample_from=1)
>>> for i in range(4):
...     _ = rows.add(make_event(3600.0 * 14 + i, principal="p1", text=f"question {i % 2}"))
>>> ready = rows.complete(min_requests=4)
>>> x = row_features(rows, ready, end_ts=3600.0 * 14 + 60)[0]
>>> round(float(np.expm1(x[0])), 1), round(float(x[6]), 2), hours_of(x[None, :]).tolist()
(4.0, 0.5, [14])
"""

from __future__ import annotations

import math
import zlib
from array import array
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from inferwatch.collectors.event import EventInput, InferenceEvent
from inferwatch.detectors.prompt_injection import scan_text
from inferwatch.detectors.state import MAX_MODELS_NOTED, RowIndex, subject_of
from inferwatch.detectors.token_abuse import CHARS_PER_TOKEN

FloatArray = npt.NDArray[np.float64]

# Columns of a caller's sums.
(REQ, ERR, TRUNC, IN_CHARS, IN_MAX, OUT_CHARS, IN_TOK, OUT_TOK, INJ_SUM, SCANNED, TEXTS, HASHED,
 FIRST_TS) = range(13)
_N = 13
# Single precision: counts are exact to 16 million, sums keep 7 digits, and FIRST_TS is held as
# seconds since the UTC midnight before the first event (to the second for half a year). When the
# caller was last seen (for the LRU/TTL) is kept by the RowIndex, and survives a row's reset.
_ZERO_ROW = array("f", bytes(4 * _N))
_BITMAP_WORDS = 2
_BITMAP_BITS = 64 * _BITMAP_WORDS
_ZERO_BITS = array("Q", bytes(8 * _BITMAP_WORDS))
DISTINCT_SAMPLE = _BITMAP_BITS
"""Requests per row whose input is hashed for the distinct-input ratio (linear counting)."""
SCAN_BUDGET = 2
"""Texts scanned for injection patterns per row before scanning thins out on a doubling stride."""
SCAN_CHARS = 1_000
"""Characters scanned per text (half at the head, half at the tail, where injected text sits)."""
HASH_CHARS = 1_024
TEMPLATE_TOKENS = 32
"""Input tokens added per request in the output/input token ratio: a template's worth, so that a
greeting answered with a paragraph reads as ordinary (it is), a short prompt answered with
thousands of tokens does not."""
MIN_SPAN_S = 60.0
"""Shortest span a request rate is measured over."""
MAX_NAMES = 1_000


@dataclass(frozen=True)
class Feature:
    """One column of the feature matrix: its name in evidence, its label for people, its scale."""

    name: str
    label: str
    log: bool
    """Stored as ``log1p(value)``."""
    decimals: int
    """Decimals shown to people (0: a whole number with thousands separators)."""
    floor: float
    """Smallest robust scale, in stored units, so a constant feature does not give infinite z."""


FEATURES: tuple[Feature, ...] = (
    Feature("requests_per_minute", "requests per minute", True, 1, 0.05),
    Feature("input_chars_mean", "input chars mean", True, 0, 0.05),
    Feature("input_chars_max", "input chars max", True, 0, 0.05),
    Feature("output_chars_mean", "output chars mean", True, 0, 0.05),
    # Ratios of 20-odd requests move in steps of 0.05: a floor below that reads noise as news.
    Feature("error_ratio", "error ratio", False, 2, 0.03),
    Feature("token_ratio", "output/input token ratio", True, 2, 0.05),
    Feature("distinct_input_ratio", "distinct input ratio", False, 2, 0.03),
    Feature("injection_score", "mean injection score", False, 2, 0.03),
    Feature("truncated_ratio", "share of outputs cut at max length", False, 2, 0.03),
)
HOUR_COLUMNS = ("hour_sin", "hour_cos")
WIDTH = len(FEATURES) + len(HOUR_COLUMNS)


def scan_due(k: int, budget: int = SCAN_BUDGET) -> bool:
    """Whether a row's ``k``-th text (from 1) is scanned: all of the first ``budget``, then on a
    stride that doubles, so a row costs ``budget / 2`` more scans per doubling of its texts.

    >>> [k for k in range(1, 65) if scan_due(k, 4)]
    [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64]
    >>> [k for k in range(1, 1001) if scan_due(k)]
    [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
    """
    if k <= budget:
        return True
    stride = 1 << ((k - 1) // budget).bit_length()
    return k % stride == 0


def fingerprint(part: EventInput) -> int | None:
    """A stable 32-bit hash of a request's input: its text (the head and tail of a long one),
    else its features. Stable across processes, unlike ``hash()``, so replays agree.

    >>> fingerprint(EventInput(text="hello")) == fingerprint(EventInput(text="hello"))
    True
    >>> a, b = EventInput(features={"a": 1, "b": 2}), EventInput(features={"b": 2, "a": 1})
    >>> fingerprint(a) == fingerprint(b)
    True
    """
    if part.text:
        text = part.text
        if len(text) > 2 * HASH_CHARS:
            text = text[:HASH_CHARS] + text[-HASH_CHARS:]
        return zlib.crc32(text.encode("utf-8", "surrogatepass"))
    if part.features:
        return zlib.crc32(repr(sorted(part.features.items())).encode("utf-8", "surrogatepass"))
    return None


class _Exemplars:
    """Three sample events of a row by what they show, as bare id references (no tuples)."""

    __slots__ = ("error_id", "error_trace", "injection", "injection_id", "injection_trace", "longest",
                 "longest_id", "longest_trace")

    def __init__(self) -> None:
        self.longest_id: str | None = None
        self.longest_trace: str | None = None
        self.error_id: str | None = None
        self.error_trace: str | None = None
        self.injection_id: str | None = None
        self.injection_trace: str | None = None
        self.injection = 0.0
        self.longest = -1


class CallerRows:
    """Running sums per caller, at most ``max_callers`` (least recently seen evicted first) and
    dropped after ``ttl_s`` of event-time idleness; both are counted (``evicted``, ``expired``).

    Event and trace ids are only kept from a row's ``sample_from``-th request on (or its first
    injection-like text), and only three (the longest input, the last error, the most
    injection-like scanned text): callers too light to be judged hold none.
    """

    def __init__(self, max_callers: int, ttl_s: float, sample_from: int) -> None:
        self.max_callers = max_callers
        self.sample_from = sample_from
        self.ttl_s = ttl_s
        self.index = RowIndex(max_callers, ttl_s, extend=self._extend, reset=self._release)
        """Callers to rows; it counts the callers ``evicted`` and ``expired``."""
        self._services: list[str] = []
        self._model: list[str | None] = []
        self._more_models: dict[int, list[str]] = {}
        self.base: float | None = None
        """UTC midnight before the first event: ``FIRST_TS`` is held relative to it."""
        self._sums = array("f")
        self._bits = array("Q")
        self._exemplars: dict[int, _Exemplars] = {}
        self._names: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self.index)

    def add(self, event: InferenceEvent) -> bool:
        """Count the request against its caller; ``False`` when it has neither principal nor address."""
        subject = subject_of(event)
        if subject is None:
            return False
        ts = event.ts
        if self.base is None:
            self.base = math.floor(ts / 86_400.0) * 86_400.0
        row = self.index.row(subject, ts)
        s, b = self._sums, row * _N
        n = s[b + REQ] + 1.0
        s[b + REQ] = n
        if n == 1.0:
            s[b + FIRST_TS] = ts - self.base
            self._services[row] = self._name(event.service)
        self._note_model(row, event.model)
        inp, out = event.input, event.output
        error = (event.status or 0) >= 400
        if error:
            s[b + ERR] += 1.0
        if out.finish_reason == "length":
            s[b + TRUNC] += 1.0
        chars = inp.chars if inp.chars is not None else len(inp.text or "")
        s[b + IN_CHARS] += chars
        if chars > s[b + IN_MAX]:
            s[b + IN_MAX] = chars
        out_chars = out.chars if out.chars is not None else len(out.text or "")
        s[b + OUT_CHARS] += out_chars
        # token_abuse's rule, on the characters already counted: the tokens, else chars / 4.
        s[b + IN_TOK] += inp.tokens if inp.tokens is not None else -(-chars // CHARS_PER_TOKEN)
        s[b + OUT_TOK] += out.tokens if out.tokens is not None else -(-out_chars // CHARS_PER_TOKEN)
        if n <= DISTINCT_SAMPLE:
            h = fingerprint(inp)
            if h is not None:
                s[b + HASHED] += 1.0
                self._bits[row * _BITMAP_WORDS + ((h >> 6) & 1)] |= 1 << (h & 63)
        injection = self._scan(b, inp.text)
        if n >= self.sample_from or injection:  # an injection-like text is worth an id at once
            self._sample(row, event, chars, error, injection)
        return True

    def _extend(self) -> None:
        self._sums.extend(_ZERO_ROW)
        self._bits.extend(_ZERO_BITS)
        self._services.append("")
        self._model.append(None)

    def _release(self, row: int) -> None:
        self.reset([row])

    def expire(self, now: float) -> None:
        """Forget callers idle for longer than the TTL at event time ``now``."""
        self.index.expire(now)

    def _name(self, name: str) -> str:
        # One copy of each service and model name, not one per caller (bounded: names are few).
        if len(self._names) < MAX_NAMES:
            return self._names.setdefault(name, name)
        return self._names.get(name, name)

    def _note_model(self, row: int, model: str | None) -> None:
        first = self._model[row]
        if model is None or model == first:
            return
        if first is None:
            self._model[row] = self._name(model)
            return
        more = self._more_models.setdefault(row, [])  # a second model is rare: a list only then
        if model not in more and len(more) < MAX_MODELS_NOTED - 1:
            more.append(self._name(model))

    def _scan(self, b: int, text: str | None) -> float | None:
        """Scan the row's ``k``-th text for injection patterns when the stride says so."""
        if not text:
            return None
        s = self._sums
        k = s[b + TEXTS] + 1.0
        s[b + TEXTS] = k
        if not scan_due(int(k)):
            return None
        score = scan_text(text, SCAN_CHARS).score
        s[b + INJ_SUM] += score
        s[b + SCANNED] += 1.0
        return score

    def _sample(self, row: int, event: InferenceEvent, chars: int, error: bool,
                injection: float | None) -> None:
        """Exemplar ids, for callers heavy enough to be judged."""
        ex = self._exemplars.get(row)
        if ex is None:
            ex = self._exemplars[row] = _Exemplars()
        if chars > ex.longest:
            ex.longest_id, ex.longest_trace, ex.longest = event.id, event.trace_id, chars
        if error:
            ex.error_id, ex.error_trace = event.id, event.trace_id
        if injection and injection > ex.injection:
            ex.injection_id, ex.injection_trace, ex.injection = event.id, event.trace_id, injection

    def matrix(self) -> npt.NDArray[np.float32]:
        """The sums (single precision), one row per allocated row (a view: drop it before the next
        :meth:`add`)."""
        return np.frombuffer(self._sums, dtype=np.float32).reshape(-1, _N)

    def bitmaps(self) -> npt.NDArray[np.uint64]:
        """The distinct-input bitmaps, one row of 64-bit words per allocated row (a view)."""
        return np.frombuffer(self._bits, dtype=np.uint64).reshape(-1, _BITMAP_WORDS)

    def complete(self, min_requests: int) -> list[int]:
        """Rows holding at least ``min_requests`` requests, in row order."""
        if not self._services:
            return []
        return [int(i) for i in np.flatnonzero(self.matrix()[:, REQ] >= min_requests)]

    def stale(self, before: float) -> list[int]:
        """Rows started before ``before`` (and not complete): too sparse to judge in time."""
        if not self._services:
            return []
        sums = self.matrix()
        started = sums[:, FIRST_TS].astype(np.float64) + (self.base or 0.0)
        return [int(i) for i in np.flatnonzero((sums[:, REQ] > 0) & (started < before))]

    def reset(self, rows: list[int]) -> None:
        """Start new rows for these callers (after they were judged, or went stale)."""
        for row in rows:
            self._sums[row * _N:(row + 1) * _N] = _ZERO_ROW
            self._bits[row * _BITMAP_WORDS:(row + 1) * _BITMAP_WORDS] = _ZERO_BITS
            self._model[row] = None
            self._more_models.pop(row, None)
            self._exemplars.pop(row, None)

    def subject(self, row: int) -> str:
        """The caller a row belongs to."""
        return self.index.key_of(row) or "unknown"

    def service(self, row: int) -> str:
        """The service of the row's first request."""
        return self._services[row]

    def models(self, row: int) -> list[str] | None:
        """Models the row's requests named (up to five), ``None`` when none did."""
        first = self._model[row]
        return None if first is None else [first, *self._more_models.get(row, ())]

    def requests(self, row: int) -> int:
        """Requests in the row."""
        return int(self._sums[row * _N + REQ])

    def first_ts(self, row: int) -> float:
        """Event time of the row's first request."""
        return float(self._sums[row * _N + FIRST_TS]) + (self.base or 0.0)

    def exemplar_roles(self, row: int) -> dict[str, str]:
        """Sample event ids by what they show: the longest input, the most injection-like scanned
        text, the last error (only events from the ``sample_from``-th on are considered)."""
        ex = self._exemplars.get(row)
        if ex is None:
            return {}
        roles = {"longest_input": ex.longest_id, "highest_injection_score": ex.injection_id,
                 "last_error": ex.error_id}
        return {role: event_id for role, event_id in roles.items() if event_id is not None}

    def exemplar_ids(self, row: int) -> list[tuple[str, str | None]]:
        """The exemplars as ``(event id, trace id)`` pairs, without repeats."""
        ex = self._exemplars.get(row)
        if ex is None:
            return []
        pairs = [(ex.longest_id, ex.longest_trace), (ex.injection_id, ex.injection_trace),
                 (ex.error_id, ex.error_trace)]
        return list(dict.fromkeys((i, t) for i, t in pairs if i is not None))


def row_features(rows: CallerRows, which: list[int], end_ts: float) -> FloatArray:
    """The feature matrix of rows ``which``, judged at ``end_ts``: :data:`WIDTH` columns each."""
    out = np.zeros((len(which), WIDTH), dtype=np.float64)
    if not which:
        return out
    s = rows.matrix()[which].astype(np.float64)
    req = s[:, REQ]
    span_min = np.maximum(end_ts - (rows.base or 0.0) - s[:, FIRST_TS], MIN_SPAN_S) / 60.0
    out[:, 0] = np.log1p(req / span_min)
    out[:, 1] = np.log1p(s[:, IN_CHARS] / req)
    out[:, 2] = np.log1p(s[:, IN_MAX])
    out[:, 3] = np.log1p(s[:, OUT_CHARS] / req)
    out[:, 4] = s[:, ERR] / req
    # A template's worth of tokens per request, so that "hi" answered with a paragraph is not x100.
    out[:, 5] = np.log1p(s[:, OUT_TOK] / (s[:, IN_TOK] + TEMPLATE_TOKENS * req))
    ones = np.unpackbits(rows.bitmaps()[which].view(np.uint8), axis=1).sum(axis=1)
    zeros = np.maximum(_BITMAP_BITS - ones, 1)  # linear counting; a full bitmap reads as saturated
    distinct = -_BITMAP_BITS * np.log(zeros / _BITMAP_BITS)
    hashed = s[:, HASHED]
    out[:, 6] = np.where(hashed > 0, np.minimum(distinct / np.maximum(hashed, 1.0), 1.0), 1.0)
    out[:, 7] = np.where(s[:, SCANNED] > 0, s[:, INJ_SUM] / np.maximum(s[:, SCANNED], 1.0), 0.0)
    out[:, 8] = s[:, TRUNC] / req
    # Whole hours: rows within an hour share the value, so the newest rows are not always at
    # the edge of the training range the way a continuous time of day would put them. The base
    # is a UTC midnight, so the time of day is FIRST_TS modulo a day.
    angle = 2.0 * math.pi * np.floor((s[:, FIRST_TS] % 86_400.0) / 3_600.0) / 24.0
    out[:, 9] = np.sin(angle)
    out[:, 10] = np.cos(angle)
    return out
