"""Per-window summaries of a model's traffic that merge exactly, whatever process saw which event.

A drift verdict must not depend on how many detector processes share the events topic: with
three processes each sees a third of a model's events, and the three partial summaries of a
window must merge into the summary one process would have built. Everything here is chosen so
that merging is exact and order-free:

* counts and sums add (``events``, ``errors``, latency and token totals; float sums may differ
  in the last bits, which no verdict looks at);
* the sample is **bottom-k by a hash of the event id** (:class:`Sample`): an event is in the
  sample when its hash is among the ``k`` smallest of the window, which is a property of the
  event, not of the process, so the bottom-k of the union of partial samples is the sample of
  the whole. A sampled event keeps all its feature values, so every feature's values, category
  counts, missing share and the rows for the domain classifier come from the same events.

:func:`features_of` names what is measured in an event (``input.<name>``, ``text.*``,
``output.*``, ``ops.*``; see docs/detectors/drift.md); :func:`summarise_rows` builds a summary
from a baseline file's rows. ``to_dict``/``from_dict`` carry a summary over the bus (the
summaries topic) and into the store (persisted references).

>>> a, b, whole = (WindowSummary("m", k=3) for _ in range(3))
>>> for i in range(10):
...     e = make_probe(f"e{i}", float(i))
...     (a if i % 2 else b).add(e)
...     whole.add(e)
>>> merged = WindowSummary.from_dict(a.seal().to_dict()).merge(b.seal())
>>> _ = whole.seal()
>>> merged.to_dict() == whole.to_dict()
True
"""

from __future__ import annotations

import hashlib
import heapq
import math
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from itertools import chain, islice
from typing import Any, ClassVar, Final, TypeVar, cast

import numpy as np

from inferwatch.collectors.event import EventView, InferenceEvent, Scalar
from inferwatch.detectors.stats import FloatArray

T = TypeVar("T")
SAMPLE_SIZE = 2_000
"""Events whose feature values are kept per window (bottom-k); KS on 2,000 values resolves D of 0.05."""
REFERENCE_SAMPLE_SIZE = 5_000
"""Events kept in a reference (warm-up, rolling or file): more than a window's sample, so the
comparison's noise comes mostly from the window (1 false alarm in 97 stationary 10,000-event
windows with a 2,000-event reference, none with 5,000)."""
ROW_SAMPLE_SIZE = 1_000
"""Prompts whose hashed n-grams are kept per window for the text domain classifier."""
ID_SAMPLE_SIZE = 20
MAX_INPUT_FEATURES = 200
"""Input features read per event (the first 200 by name order given); the rest are ignored."""
REFUSAL_MARKERS = (
    "i can't help", "i cannot help", "i can't assist", "i cannot assist", "i'm sorry, but i can",
    "i am sorry, but i can", "i won't be able", "i'm unable to", "i am unable to", "as an ai",
    "i can't provide", "i cannot provide", "i must decline",
)
_MASK = (1 << 64) - 1


def event_hash(event_id: str) -> int:
    """A 64-bit hash of an event id, the same in every process (not Python's salted ``hash``)."""
    return event_hashes((event_id,))[0]


def event_hashes(event_ids: Iterable[str]) -> list[int]:
    """:func:`event_hash` of each id (one list comprehension: about half the cost of a call per id)."""
    blake2b, from_bytes = hashlib.blake2b, int.from_bytes
    return [from_bytes(blake2b(key.encode(), digest_size=8).digest(), "little") for key in event_ids]


def _name_hash(name: str) -> int:
    digest = hashlib.blake2b(name.encode(), digest_size=8, person=b"category").digest()
    return int.from_bytes(digest, "little")


BULK_OFFER = 256
"""Runs offering more pairs than this to a :class:`Sample` are selected at once (one sort)."""


class Sample:
    """The values of the ``k`` events with the smallest hashes (bottom-k), plus how many were seen.

    >>> s = Sample(2)
    >>> for h, v in [(5, 0.5), (1, 0.1), (9, 0.9), (3, 0.3)]:
    ...     s.add(h, v)
    >>> sorted(s.values().tolist()), s.seen
    ([0.1, 0.3], 4)
    """

    __slots__ = ("_heap", "_keys", "k", "seen")

    def __init__(self, k: int) -> None:
        self.k = k
        self.seen = 0
        self._heap: list[tuple[int, Any]] = []  # max-heap by hash: (-hash, value)
        self._keys: set[int] = set()

    def would_keep(self, h: int) -> bool:
        """Whether an event with hash ``h`` would enter the sample (lets callers skip costly values)."""
        return len(self._heap) < self.k or h < -self._heap[0][0]

    def add(self, h: int, value: Any) -> None:
        """Count one value; keep it when its event hash is among the ``k`` smallest."""
        self.seen += 1
        self.offer(h, value)

    def offer(self, h: int, value: Any) -> None:
        """Keep ``value`` if its hash is among the ``k`` smallest (does not count it as seen)."""
        if h in self._keys:
            return
        if len(self._heap) < self.k:
            heapq.heappush(self._heap, (-h, value))
            self._keys.add(h)
        elif h < -self._heap[0][0]:
            dropped = heapq.heapreplace(self._heap, (-h, value))
            self._keys.discard(-dropped[0])
            self._keys.add(h)

    def offer_run(self, hashes: Sequence[int], values: Sequence[Any]) -> bool:
        """:meth:`offer` each ``(hash, value)`` pair in order; whether any could enter.

        Once the sample is full only hashes below the largest kept can enter: those are picked
        out in one pass, and only they are offered (the same sample as offering every pair)."""
        heap = self._heap
        if len(heap) >= self.k:
            cut = -heap[0][0]
            pairs = [(h, value) for h, value in zip(hashes, values, strict=True) if h < cut]
        else:
            pairs = list(zip(hashes, values, strict=True))
        if len(pairs) > BULK_OFFER:
            self._select(pairs)
        else:
            offer = self.offer
            for h, value in pairs:
                offer(h, value)
        return bool(pairs)

    def _select(self, pairs: list[tuple[int, Any]]) -> None:
        # Offering many pairs one by one pays a heap operation each (a fresh window's first
        # run offers all of its events). The bottom-k of what is kept and what is offered is
        # the same set, whatever the order: a hash among the k smallest always enters when
        # offered, one evicted never returns. A repeated hash keeps the value it was first
        # offered (or kept) with, as :meth:`offer` does.
        kept = dict(reversed(pairs))  # the first of repeated hashes wins
        kept.update((-negative, value) for negative, value in self._heap)
        chosen = sorted(kept)[: self.k]
        # Descending hashes are ascending keys: already a heap.
        self._heap = [(-h, kept[h]) for h in reversed(chosen)]
        self._keys = set(chosen)

    def replace_all(self, pairs: list[tuple[int, Any]]) -> None:
        """Swap every kept value (same hashes) for another: ``pairs`` from :meth:`items`, changed."""
        self._heap = [(-h, value) for h, value in pairs]
        heapq.heapify(self._heap)

    def update_values(self, change: Callable[[int, Any], Any]) -> None:
        """Swap every kept value for ``change(hash, value)``, in place and in no particular order.

        The hashes stay where they are, so the heap needs neither a sort nor a heapify (what
        :meth:`items` then :meth:`replace_all` would pay for every value)."""
        heap = self._heap
        for i, (negative, value) in enumerate(heap):
            heap[i] = (negative, change(-negative, value))

    def items(self) -> list[tuple[int, Any]]:
        """``(hash, value)`` pairs, smallest hash first."""
        return sorted((-negative, value) for negative, value in self._heap)

    def raw(self) -> list[Any]:
        """The kept values, in hash order."""
        return [value for _, value in self.items()]

    def values(self) -> FloatArray:
        """The kept values as a float array (for numeric samples)."""
        return np.asarray([value for _, value in self._heap], dtype=np.float64)

    def merge(self, other: Sample) -> None:
        """Fold ``other`` in: the bottom-k of the union, and the sum of the counts."""
        self.seen += other.seen
        for negative, value in other._heap:
            self.offer(-negative, value)

    def to_list(self) -> list[Any]:
        return [self.seen, [[h, value] for h, value in self.items()]]

    @classmethod
    def from_list(cls, k: int, data: list[Any]) -> Sample:
        sample = cls(k)
        sample.seen = int(data[0])
        for h, value in data[1]:
            sample.offer(int(h), value)
        return sample


def _category(value: Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def is_refusal(text: str) -> bool:
    """Whether a model's reply opens like a refusal ("I can't help with that ...")."""
    head = text[:200].lower().replace("\u2019", "'")
    return any(marker in head for marker in REFUSAL_MARKERS)


def input_features(features: Mapping[str, Scalar] | None) -> dict[str, float | str]:
    """``input.<name>`` values of a tabular input: finite numbers, and categories as text."""
    out: dict[str, float | str] = {}
    if not features:
        return out
    items: Iterable[tuple[str, Scalar]] = features.items()
    if len(features) > MAX_INPUT_FEATURES:
        items = islice(items, MAX_INPUT_FEATURES)
    # Exact types first (what a decoded event holds; faster than the isinstance chain), then
    # the general case for subclasses and other mappings' values.
    for name, value in items:
        kind = type(value)
        if kind is float:
            if math.isfinite(value):  # type: ignore[arg-type]
                out["input." + name] = value  # type: ignore[assignment]
        elif kind is str:
            out["input." + name] = value  # type: ignore[assignment]
        elif value is None:
            continue
        elif isinstance(value, bool | str):
            out["input." + name] = _category(value)
        elif isinstance(value, int | float):
            try:
                number = float(value)
            except OverflowError:  # an integer beyond any float (JSON allows 10**400)
                continue
            if math.isfinite(number):
                out["input." + name] = number
    return out


def features_of(event: EventView, text_features: Callable[[str], tuple[str, str]] | None = None
                ) -> dict[str, float | str]:
    """Everything the drift detector measures in one event, by feature key.

    ``text_features(text) -> (script, language)`` is given by the detector (it lives in
    :mod:`.textstats`); without it, ``text.script``/``text.language`` are not measured.
    """
    out = input_features(event.input.features)
    text = event.input.text
    if text is not None:
        out["text.chars"] = float(len(text))
        if text_features is not None and text:
            out["text.script"], out["text.language"] = text_features(text)
    elif event.input.chars is not None:
        out["text.chars"] = float(event.input.chars)
    output = event.output
    if output.label is not None:
        out["output.label"] = _category(output.label)
    if output.score is not None and math.isfinite(output.score):
        out["output.score"] = float(output.score)
    if output.finish_reason is not None:
        out["output.finish_reason"] = output.finish_reason
    if output.text is not None:
        out["output.chars"] = float(len(output.text))
        out["output.refusal"] = "true" if is_refusal(output.text) else "false"
    elif output.chars is not None:
        out["output.chars"] = float(output.chars)
    out["ops.latency_ms"] = float(event.duration_ms)
    out["ops.error"] = "true" if (event.error is not None or (event.status or 0) >= 500) else "false"
    if event.input.tokens is not None:
        out["ops.input_tokens"] = float(event.input.tokens)
    if event.output.tokens is not None:
        out["ops.output_tokens"] = float(event.output.tokens)
    return out


class _RowIndex:
    """Per feature key, what the drift judge reads from a summary's rows, each computed once.

    Scanning the whole sample once per key and per question (values, counts, value types,
    missing share) cost the judge about a tenth of a second per window. Here each key's column
    is read once, with list comprehensions rather than a Python loop per value, and every table
    is kept: the same values in the same order as the per-key scans gave. ``memo`` holds
    whatever else callers derive from these rows (:meth:`WindowSummary.memo`).
    """

    __slots__ = ("_categories", "_columns", "_numbers", "_present", "_tabular_rows", "_types", "kinds",
                 "memo", "rows")

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.memo: dict[Hashable, Any] = {}
        order = dict.fromkeys(chain.from_iterable(rows))  # every key, in first-seen order
        self.kinds: dict[str, str] = {}
        """Feature key -> ``numeric``/``categorical``, by its first value (``_`` keys left out)."""
        for key in order:
            if not key.startswith("_"):
                first = next(row[key] for row in rows if key in row)
                self.kinds[key] = "numeric" if isinstance(first, float) else "categorical"
        inputs = [key for key in order if key.startswith("input.")]
        self._tabular_rows = [row for row in rows if not row.keys().isdisjoint(inputs)] if inputs else []
        self._present: dict[str, int] = {}
        self._columns: dict[str, list[Any]] = {}
        self._numbers: dict[str, list[float]] = {}
        self._categories: dict[str, dict[str, int]] = {}
        self._types: dict[str, dict[str, int]] = {}

    @property
    def tabular(self) -> int:
        """Rows with at least one ``input.*`` key."""
        return len(self._tabular_rows)

    def column(self, key: str) -> list[Any]:
        """``key``'s value in each row (``None`` where it is missing)."""
        found = self._columns.get(key)
        if found is None:
            found = self._columns[key] = [row.get(key) for row in self.rows]
        return found

    def present(self, key: str) -> int:
        """Tabular rows holding ``key``."""
        found = self._present.get(key)
        if found is None:
            found = self._present[key] = len([True for row in self._tabular_rows if key in row])
        return found

    def numbers(self, key: str) -> list[float]:
        """``key``'s float values, in row order."""
        found = self._numbers.get(key)
        if found is None:
            found = self._numbers[key] = [value for value in self.column(key) if isinstance(value, float)]
        return found

    def categories(self, key: str) -> dict[str, int]:
        """Counts of ``key``'s text values, in first-seen order."""
        found = self._categories.get(key)
        if found is None:
            found = self._categories[key] = dict(
                Counter([value for value in self.column(key) if isinstance(value, str)]))
        return found

    def types(self, key: str) -> dict[str, int]:
        """How many of ``key``'s values are numbers and how many text, in first-seen order."""
        found = self._types.get(key)
        if found is None:
            column = self.column(key)
            values = len(column) - column.count(None)
            numbers = len(self.numbers(key))
            kinds = [("number", numbers), ("text", values - numbers)]
            if values and not isinstance(next(v for v in column if v is not None), float):
                kinds.reverse()
            found = self._types[key] = {kind: n for kind, n in kinds if n}
        return found


class WindowSummary:
    """One model's traffic in one window (or a reference): mergeable, serialisable.

    Exact counts: ``events``, ``errors``, ``tabular`` (events with input features), the latency
    and token totals, the model versions. Everything else comes from ``sample``: the ``k`` events
    with the smallest hashes. While the window is open the sample holds the events themselves;
    :meth:`seal` (at window close) turns the survivors into feature rows (:func:`features_of`,
    plus ``_id``/``_trace`` for evidence and, for the first ``text_k`` prompts in hash order,
    their hashed n-grams ``_ngrams``). So only the ``k`` sampled events pay for feature
    extraction, and adding an event costs about a microsecond. Keys starting with ``_`` are not
    features.
    """

    CHECKPOINT_SKIP: ClassVar[tuple[str, ...]] = ("_rows", "_index")  # caches, rebuilt when read


    def __init__(self, model: str, *, service: str = "unknown", start: float | None = None,
                 end: float | None = None, k: int = SAMPLE_SIZE, text_k: int = ROW_SAMPLE_SIZE) -> None:
        self.model = model
        self.service = service
        self.start = start
        self.end = end
        self.k = k
        self.text_k = text_k
        self.events = 0
        self.errors = 0
        self.tabular = 0
        self.latency_total = 0.0
        self.tokens = [0, 0, 0]
        """Requests that reported tokens, input tokens, output tokens."""
        self.versions: dict[str, int] = {}
        self.sample = Sample(k)
        self.partitions: set[int] = set()
        self._rows: list[dict[str, Any]] | None = None
        self._index: _RowIndex | None = None

    def add(self, event: EventView, *, h: int | None = None) -> None:
        """Fold one event in (kept whole if it enters the sample; see :meth:`seal`).

        The live service's path, event by event (about 1 µs); :meth:`add_run` does the same for
        many events at once, and ``tests/detectors/drift/test_sketch.py`` holds the two to the
        same summary, bit for bit.
        """
        h = event_hash(event.id) if h is None else h
        self.events += 1
        ts = event.ts
        if self.start is None or ts < self.start:
            self.start = ts
        if event.error is not None or (event.status or 0) >= 500:
            self.errors += 1
        if event.input.features:
            self.tabular += 1
        self.latency_total += event.duration_ms
        if event.input.tokens is not None or event.output.tokens is not None:
            tokens = self.tokens
            tokens[0] += 1
            tokens[1] += event.input.tokens or 0
            tokens[2] += event.output.tokens or 0
        if event.model_version is not None:
            self.versions[event.model_version] = self.versions.get(event.model_version, 0) + 1
        sample = self.sample
        sample.seen += 1
        if sample.would_keep(h):
            sample.offer(h, event)
            self._rows = None

    def add_run(self, events: Sequence[EventView], hashes: Sequence[int] | None = None) -> None:
        """Fold events of this model in, in order: the same summary as :meth:`add` one by one.

        ``hashes`` are the events' :func:`event_hash` values (computed here when ``None``).
        Written as a few passes of comprehensions over the run rather than one Python loop per
        event: about 1 µs an event instead of 2.5-3 (replay hands runs of thousands).
        """
        if len(events) < 2:  # passes over a list pay off from a few events
            for i, event in enumerate(events):
                self.add(event, h=None if hashes is None else hashes[i])
            return
        if hashes is None:
            hashes = event_hashes([event.id for event in events])
        self.events += len(events)
        first = min([event.ts for event in events])
        if self.start is None or first < self.start:
            self.start = first
        self.errors += len([True for event in events
                            if event.error is not None or (event.status or 0) >= 500])
        self.tabular += len([True for event in events if event.input.features])
        total = self.latency_total
        for latency in [event.duration_ms for event in events]:  # in order: the same float sum
            total += latency
        self.latency_total = total
        counted = [(event.input.tokens, event.output.tokens) for event in events
                   if event.input.tokens is not None or event.output.tokens is not None]
        if counted:
            tokens = self.tokens
            tokens[0] += len(counted)
            tokens[1] += sum([pair[0] or 0 for pair in counted])
            tokens[2] += sum([pair[1] or 0 for pair in counted])
        named = [event.model_version for event in events if event.model_version is not None]
        if named:
            versions = self.versions
            for version, count in Counter(named).items():  # first-seen order, as one by one
                versions[version] = versions.get(version, 0) + count
        self.sample.seen += len(events)
        if self.sample.offer_run(hashes, events):
            self._rows = None

    def seal(self, text_features: Callable[[str], tuple[str, str]] | None = None,
             ngrams: Callable[[str], list[int]] | None = None) -> WindowSummary:
        """Turn the sampled events into feature rows (idempotent); returns ``self``.

        The first ``text_k`` prompts in hash order (rows already holding n-grams included) get
        their hashed n-grams; only the rows with a prompt are put in that order.
        """
        # Sampled events are kept whole until now; rows are dicts (so is a reference's sample).
        sealed = False
        prompts: list[tuple[int, dict[str, Any], str | None]] = []  # (hash, row, text; None: has n-grams)

        def row_of(h: int, value: Any) -> dict[str, Any]:
            nonlocal sealed
            if isinstance(value, dict):
                if "_ngrams" in value:
                    prompts.append((h, value, None))
                return value
            sealed = True
            row: dict[str, Any] = features_of(value, text_features)  # a new dict: no copy
            row["_id"] = value.id
            if value.trace_id:
                row["_trace"] = value.trace_id
            if value.principal:
                row["_principal"] = value.principal
            text = value.input.text
            if ngrams is not None and text:
                prompts.append((h, row, text))
            return row

        self.sample.update_values(row_of)
        if not sealed:
            return self
        texts = 0
        for _, row, text in sorted(prompts, key=lambda item: item[0]):
            if text is None:
                texts += 1
            elif texts < self.text_k:
                assert ngrams is not None
                row["_ngrams"] = ngrams(text)
                texts += 1
        self._rows = None
        return self

    def add_values(self, h: int, values: dict[str, float | str]) -> None:
        """Fold one baseline row's feature values in (no operations figures)."""
        self.events += 1
        if any(key.startswith("input.") for key in values):
            self.tabular += 1
        self.sample.add(h, values)
        self._rows = None

    def merge(self, other: WindowSummary) -> WindowSummary:
        """Fold ``other`` (a summary of the same model) in; returns ``self``."""
        return self.merge_all((other,))

    def merge_all(self, others: Iterable[WindowSummary], *, trim_texts: bool = True) -> WindowSummary:
        """:meth:`merge` each of ``others`` in turn (the same summary), trimming the texts once.

        With ``trim_texts=False`` rows past the first ``text_k`` prompts keep their n-grams
        (:meth:`ngram_rows` is unchanged; only the memory and a serialised summary are larger):
        for a transient merge, where trimming would copy every such row.
        """
        for other in others:
            self._fold(other)
        if trim_texts:
            self._trim_texts()
        return self

    def _fold(self, other: WindowSummary) -> None:
        self.events += other.events
        self.errors += other.errors
        self.tabular += other.tabular
        self.latency_total += other.latency_total
        self.tokens = [a + b for a, b in zip(self.tokens, other.tokens, strict=True)]
        if other.start is not None:
            self.start = other.start if self.start is None else min(self.start, other.start)
        if other.end is not None:
            self.end = other.end if self.end is None else max(self.end, other.end)
        if self.service == "unknown":
            self.service = other.service
        for version, count in other.versions.items():
            self.versions[version] = self.versions.get(version, 0) + count
        self.sample.merge(other.sample)
        self.partitions |= other.partitions
        self._rows = None

    def _trim_texts(self) -> None:
        # Each partial kept n-grams for its first text_k prompts; the merged sample keeps them
        # for its own first text_k, exactly those a single summary would have (they are among
        # the first text_k of whichever partial they came from).
        pairs = self.sample.items()
        texts = 0
        trimmed = []
        changed = False
        for h, row in pairs:
            if isinstance(row, dict) and "_ngrams" in row:
                texts += 1
                if texts > self.text_k:
                    row = {key: value for key, value in row.items() if key != "_ngrams"}
                    changed = True
            trimmed.append((h, row))
        if changed:
            self.sample.replace_all(trimmed)

    def rows(self) -> list[dict[str, Any]]:
        """The sampled events' feature rows, in hash order (the summary must be sealed)."""
        if self._rows is None:
            rows = self.sample.raw()
            if not all(isinstance(row, dict) for row in rows):
                raise RuntimeError("WindowSummary.seal() must run before its rows are read")
            self._rows = rows
        return self._rows

    def _indexed(self) -> _RowIndex:
        # Rebuilt whenever rows() is: every change to the sample drops the cached rows, so an
        # index (and everything memoised on it) never outlives the rows it was built from.
        rows = self.rows()
        index = self._index
        if index is None or index.rows is not rows:
            index = self._index = _RowIndex(rows)
        return index

    def memo(self, key: Hashable, compute: Callable[[], T]) -> T:
        """``compute()``, computed once for the sample as it is now (dropped when it changes).

        A reference summary is compared with window after window unchanged: the detector keeps
        what it derives from it here (statistics of its values, its rows as a matrix) instead of
        recomputing it every window. ``key`` names what is computed; the caller must not change
        the result.
        """
        memo = self._indexed().memo
        if key not in memo:
            memo[key] = compute()
        return cast(T, memo[key])

    def keys(self) -> dict[str, str]:
        """Feature keys seen in the sample and their type (``numeric`` or ``categorical``)."""
        return dict(self._indexed().kinds)

    def values(self, key: str) -> FloatArray:
        """The sampled numeric values of ``key``."""
        return np.asarray(self._indexed().numbers(key), dtype=np.float64)

    def counts(self, key: str) -> dict[str, int]:
        """Category counts of ``key`` in the sample."""
        return dict(self._indexed().categories(key))

    def value_types(self, key: str) -> dict[str, int]:
        """How many sampled values of ``key`` are numbers and how many text (or booleans)."""
        return dict(self._indexed().types(key))

    def with_inputs(self) -> tuple[int, int]:
        """``(rows with an input feature, rows)`` of the sample: events whose features were all
        missing (null, NaN) or absent count as rows without."""
        index = self._indexed()
        return index.tabular, len(index.rows)

    def presence(self, key: str) -> tuple[int, int]:
        """``(present, tabular rows)`` of an ``input.*`` key in the sample: its missing share."""
        index = self._indexed()
        return index.present(key), index.tabular

    def matrix(self, keys: list[str]) -> FloatArray:
        """Sampled rows that have every numeric key in ``keys``, as an ``(n, len(keys))`` array."""
        index = self._indexed()
        n = len(index.rows)
        out = np.zeros((n, len(keys)), dtype=np.float64)
        complete = np.ones(n, dtype=bool)
        for j, key in enumerate(keys):
            column = index.column(key)
            has = np.fromiter((isinstance(value, float) for value in column), dtype=bool, count=n)
            out[has, j] = index.numbers(key)
            complete &= has
        return out[complete]

    def ngram_rows(self) -> list[list[int]]:
        """Hashed n-grams of the first ``text_k`` sampled prompts, in hash order."""
        return [row["_ngrams"] for row in self.rows() if "_ngrams" in row][: self.text_k]

    def event_ids(self, limit: int = ID_SAMPLE_SIZE) -> tuple[list[str], list[str]]:
        """A deterministic sample of the window's event ids and trace ids, for evidence."""
        rows = [row for row in self.rows() if "_id" in row][:limit]
        return [str(row["_id"]) for row in rows], [str(row["_trace"]) for row in rows if "_trace" in row]

    def dominant_version(self) -> str | None:
        if not self.versions:
            return None
        return max(sorted(self.versions), key=self.versions.__getitem__)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (the summary must be sealed), the inverse of :meth:`from_dict`."""
        self.rows()
        return {
            "model": self.model, "service": self.service, "start": self.start, "end": self.end,
            "k": self.k, "text_k": self.text_k, "events": self.events, "errors": self.errors,
            "tabular": self.tabular, "latency_total": self.latency_total, "tokens": list(self.tokens),
            "versions": dict(sorted(self.versions.items())),
            "sample": _columns(self.sample), "partitions": sorted(self.partitions),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WindowSummary:
        """Rebuild a summary sent over the bus or read from the store; ``KeyError`` if malformed."""
        summary = cls(str(data["model"]), service=str(data["service"]), start=data["start"],
                      end=data["end"], k=int(data["k"]), text_k=int(data["text_k"]))
        summary.events, summary.errors = int(data["events"]), int(data["errors"])
        summary.tabular, summary.latency_total = int(data["tabular"]), float(data["latency_total"])
        summary.tokens = [int(t) for t in data["tokens"]]
        summary.versions = {str(v): int(c) for v, c in data["versions"].items()}
        summary.sample = _from_columns(summary.k, data["sample"])
        summary.partitions = {int(p) for p in data["partitions"]}
        return summary


def _columns(sample: Sample) -> dict[str, Any]:
    """A row sample in columns (keys once, not once per row): a third of the bytes on the bus."""
    items = sample.items()
    keys = sorted({key for _, row in items for key in row})
    return {"seen": sample.seen, "hashes": [h for h, _ in items],
            "columns": {key: [row.get(key) for _, row in items] for key in keys}}


def _from_columns(k: int, data: Mapping[str, Any]) -> Sample:
    sample = Sample(k)
    sample.seen = int(data["seen"])
    columns = data["columns"]
    for i, h in enumerate(data["hashes"]):
        row: dict[str, Any] = {}
        for key, column in columns.items():
            value = column[i]
            if value is None:
                continue
            if key.startswith("_"):
                row[key] = [int(n) for n in value] if key == "_ngrams" else str(value)
            else:
                row[key] = float(value) if isinstance(value, int | float) else str(value)
        sample.offer(int(h), row)
    return sample


CATEGORY_KEYS: Final = frozenset({"output.label", "output.finish_reason", "output.refusal", "ops.error",
                                   "text.script", "text.language"})
"""Keys :func:`features_of` always measures as categories (a label of ``1`` is the category "1")."""


def summarise_rows(rows: Iterable[Mapping[str, Scalar]], model: str, *, k: int = REFERENCE_SAMPLE_SIZE
                   ) -> WindowSummary:
    """A reference summary from a baseline file's rows (feature name -> value).

    Rows are plain tabular inputs: each column becomes ``input.<column>``, except columns
    already named with a known prefix (``text.``, ``output.``, ``ops.``), which are taken as
    they are, so a baseline can also describe outputs (``output.label``) and operations.
    Those of :data:`CATEGORY_KEYS` are categories whatever they look like, as in live events
    (a CSV's ``output.label`` of ``0``/``1`` compared as numbers with the events' categories
    "0"/"1" was a change of value type in every window). Rows are hashed by their position, so
    the same file always gives the same sample.

    >>> summary = summarise_rows([{"x": 1.5, "output.label": 1}], "m")
    >>> sorted(summary.keys().items())
    [('input.x', 'numeric'), ('output.label', 'categorical')]
    """
    summary = WindowSummary(model, k=k)
    for i, row in enumerate(rows):
        values: dict[str, float | str] = {}
        inputs: dict[str, Scalar] = {}
        for name, value in row.items():
            if name.split(".", 1)[0] in ("text", "output", "ops") and "." in name:
                if value is None:
                    continue
                if name in CATEGORY_KEYS:
                    values[name] = _category(value)
                elif isinstance(value, int | float) and not isinstance(value, bool):
                    if math.isfinite(value):
                        values[name] = float(value)
                else:
                    values[name] = _category(value)
            else:
                inputs[name] = value
        values.update(input_features(inputs))
        summary.add_values(event_hash(f"row:{i}"), values)
    return summary


def make_probe(event_id: str, value: float) -> InferenceEvent:
    """A minimal tabular event (used by this module's doctests)."""
    from datetime import UTC, datetime

    from inferwatch.collectors.event import EventInput

    return InferenceEvent(id=event_id, time=datetime(2026, 1, 1, tzinfo=UTC), model="m",
                          input=EventInput(features={"x": value}))
