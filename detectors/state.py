"""Per-key detector state: an LRU map with an event-time TTL, an id sample, subjects and times.

Detectors keep state per principal, per address or per model. An attacker controls how many
principals and addresses there are, so every such map is bounded twice: by size (least recently
used keys go first) and by idleness in event time (keys not seen for ``ttl_s`` seconds go). Both
evictions are counted, so the service can expose them; a silent bound would hide lost state.
"""

from __future__ import annotations

import math
import sys
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import numpy as np

from inferwatch.collectors.event import InferenceEvent
from inferwatch.detectors.base import MAX_SAMPLE_IDS, Finding, Severity

K = TypeVar("K")
V = TypeVar("V")


def _check_bounds(max_keys: int, ttl_s: float | None) -> None:
    if max_keys < 1:
        raise ValueError(f"max_keys must be at least 1, got {max_keys}")
    if ttl_s is not None and ttl_s <= 0:
        raise ValueError(f"ttl_s must be positive (or None for no expiry), got {ttl_s}")


class BoundedState(Generic[K, V]):
    """A map from key to state, bounded by ``max_keys`` (LRU) and by ``ttl_s`` of event time.

    ``ts`` arguments are event times (Unix seconds); the wall clock is never read. Touching a
    key moves it to the most-recent end, so with events in roughly event-time order the
    least recently seen keys sit at the front and expiry only looks there.

    >>> s: BoundedState[str, int] = BoundedState(max_keys=2, ttl_s=60.0)
    >>> s.get_or_create("a", 0.0, int), s.get_or_create("b", 10.0, int)
    (0, 0)
    >>> _ = s.get_or_create("c", 20.0, int)   # over max_keys: "a" (least recent) goes
    >>> sorted(s.keys()), s.evicted
    (['b', 'c'], 1)
    >>> s.expire(75.0)                        # "b" idle 65 s > 60 s
    1
    >>> sorted(s.keys())
    ['c']
    """

    def __init__(self, max_keys: int, ttl_s: float | None = None) -> None:
        _check_bounds(max_keys, ttl_s)
        self.max_keys = max_keys
        self.ttl_s = ttl_s
        self.evicted = 0
        """Keys dropped because the map was full."""
        self.expired = 0
        """Keys dropped because they were idle for longer than ``ttl_s``."""
        self._items: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def keys(self) -> Iterator[K]:
        """Keys from least to most recently seen."""
        return iter(self._items)

    __iter__ = keys

    def __getitem__(self, key: K) -> V:
        """The state for ``key`` without touching it; ``KeyError`` if it is not held."""
        return self._items[key][1]

    def items(self) -> Iterator[tuple[K, V]]:
        """``(key, state)`` pairs from least to most recently seen."""
        return ((key, value) for key, (_, value) in self._items.items())

    def get(self, key: K) -> V | None:
        """The state for ``key`` without touching it, or ``None``."""
        entry = self._items.get(key)
        return None if entry is None else entry[1]

    def last_seen(self, key: K) -> float | None:
        """Event time ``key`` was last touched, or ``None`` if it is not held."""
        entry = self._items.get(key)
        return None if entry is None else entry[0]

    def get_or_create(self, key: K, ts: float, factory: Callable[[], V]) -> V:
        """The state for ``key``, created with ``factory()`` if absent; marks it seen at ``ts``."""
        entry = self._items.get(key)
        if entry is None:
            value = factory()
            self._items[key] = (ts, value)
            if len(self._items) > self.max_keys:
                self._items.popitem(last=False)
                self.evicted += 1
            return value
        self._items[key] = (max(entry[0], ts), entry[1])
        self._items.move_to_end(key)
        return entry[1]

    def pop(self, key: K) -> V | None:
        """Remove ``key`` and return its state, or ``None`` if it was not held."""
        entry = self._items.pop(key, None)
        return None if entry is None else entry[1]

    def expire(self, now: float) -> int:
        """Drop keys idle for more than ``ttl_s`` at event time ``now``; return how many."""
        if self.ttl_s is None:
            return 0
        cutoff = now - self.ttl_s
        dropped = 0
        while self._items:
            key, (seen, _) = next(iter(self._items.items()))
            if seen >= cutoff:
                break
            del self._items[key]
            dropped += 1
        self.expired += dropped
        return dropped


EVICT_SHARE = 64
"""A full :class:`RowIndex` makes room for a new key by evicting this share of its keys at once."""


class RowIndex:
    """Keys mapped to the row numbers of a detector's flat per-key arrays, bounded like
    :class:`BoundedState`: by ``max_keys`` (least recently seen keys go first) and by ``ttl_s``
    of event-time idleness, both counted.

    For state held per caller, a million of them: a plain ``dict`` (about 60 bytes a key with
    its row number, against about 105 for an ``OrderedDict`` entry) and each row's last-seen
    event time in an array, so touching a key moves nothing. A full index makes room for a new
    key by evicting the least recently seen ``1/64`` of its keys in one partial sort (sparing keys
    seen at the new one's very time; at least one goes), which keeps key rotation at amortised
    constant cost;
    expiry is one vectorised comparison. The owner keeps its columns in step through ``extend``
    (append a zero row) and ``reset`` (zero a released row); row numbers are reused.

    >>> index = RowIndex(max_keys=2, ttl_s=60.0)
    >>> index.row("a", 0.0), index.row("b", 10.0), index.row("a", 5.0)
    (0, 1, 0)
    >>> index.row("c", 20.0), sorted(index.keys()), index.evicted   # "a" was seen least recently
    (0, ['b', 'c'], 1)
    >>> index.expire(75.0), sorted(index.keys()), index.expired     # "b" idle 65 s > 60 s
    (1, ['c'], 1)
    """

    def __init__(self, max_keys: int, ttl_s: float | None = None, *, extend: Callable[[], None] | None = None,
                 reset: Callable[[int], None] | None = None) -> None:
        _check_bounds(max_keys, ttl_s)
        self.max_keys = max_keys
        self.ttl_s = ttl_s
        self.evicted = 0
        """Keys dropped because the index was full."""
        self.expired = 0
        """Keys dropped because they were idle for longer than ``ttl_s``."""
        self._extend = extend
        self._reset = reset
        self._index: dict[str, int] = {}
        self._keys: list[str | None] = []
        self._seen = array("d")
        self._free: list[int] = []

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def keys(self) -> Iterator[str]:
        """The keys held (in no particular order)."""
        return iter(self._index)

    def get(self, key: str) -> int | None:
        """The row of ``key`` without touching it, or ``None``."""
        return self._index.get(key)

    def key_of(self, row: int) -> str | None:
        """The key a row belongs to, ``None`` for a free row."""
        return self._keys[row]

    def row(self, key: str, ts: float) -> int:
        """The row of ``key``, allocated if absent (the owner's columns start at zero there);
        marks it seen at event time ``ts``."""
        row = self._index.get(key)
        if row is not None:
            if ts > self._seen[row]:
                self._seen[row] = ts
            return row
        if len(self._index) >= self.max_keys:
            self._evict(ts)
        if self._free:
            row = self._free.pop()
        else:
            row = len(self._keys)
            self._keys.append(None)
            self._seen.append(0.0)
            if self._extend is not None:
                self._extend()
        self._index[key] = row
        self._keys[row] = key
        self._seen[row] = ts
        return row

    def _evict(self, ts: float) -> None:
        seen = np.frombuffer(self._seen, dtype=np.float64)  # free rows hold +inf: never picked
        n = min(max(1, self.max_keys // EVICT_SHARE), len(self._index))
        if n < len(seen):
            # The n smallest times; among keys tied at the largest of them the lowest rows, so the
            # choice never depends on how the partial sort broke ties (replays must agree).
            last = seen[np.argpartition(seen, n - 1)[n - 1]]
            below = np.flatnonzero(seen < last)
            picked = np.concatenate([below, np.flatnonzero(seen == last)[: n - len(below)]])
        else:
            picked = np.arange(len(seen))
        order = picked[np.argsort(seen[picked], kind="stable")]
        # Keys seen at the newcomer's very time are spared (a detector loading a window's keys
        # marks them all with its end); otherwise the whole batch goes, even when event time ran
        # backwards and every key held is newer than the newcomer.
        doomed = [int(order[0])] + [int(r) for r in order[1:] if seen[r] != ts]
        del seen  # a buffer view stops the array from growing
        for row in doomed:
            self._release(row)
        self.evicted += len(doomed)

    def _release(self, row: int) -> None:
        key = self._keys[row]
        if key is None:
            return
        del self._index[key]
        self._keys[row] = None
        self._seen[row] = math.inf
        self._free.append(row)
        if self._reset is not None:
            self._reset(row)

    def expire(self, now: float) -> int:
        """Drop keys idle for more than ``ttl_s`` at event time ``now``; return how many."""
        if self.ttl_s is None or not self._index:
            return 0
        seen = np.frombuffer(self._seen, dtype=np.float64)
        stale = np.flatnonzero(seen < now - self.ttl_s).tolist()
        del seen
        for row in stale:
            self._release(row)
        self.expired += len(stale)
        return len(stale)


class IdSample:
    """The first ``limit`` event ids and trace ids seen, for a finding's evidence.

    Window tallies hold one per caller, so it is small: no lists until an id arrives.

    >>> sample = IdSample(limit=2)
    >>> for i in range(3):
    ...     sample.add_ids(f"e{i}", None)
    >>> sample.event_ids, sample.trace_ids
    (['e0', 'e1'], [])
    """

    __slots__ = ("_event_ids", "_trace_ids", "limit")

    def __init__(self, limit: int = MAX_SAMPLE_IDS, event_ids: list[str] | None = None,
                 trace_ids: list[str] | None = None) -> None:
        self.limit = limit
        self._event_ids = event_ids or None
        self._trace_ids = trace_ids or None

    @property
    def event_ids(self) -> list[str]:
        return self._event_ids if self._event_ids is not None else []

    @property
    def trace_ids(self) -> list[str]:
        return self._trace_ids if self._trace_ids is not None else []

    def add(self, event: InferenceEvent) -> None:
        """Record the event's id and trace id, while there is room."""
        self.add_ids(event.id, event.trace_id)

    def add_ids(self, event_id: str, trace_id: str | None) -> None:
        """Record one id pair, while there is room; a trace shared by a batch is kept once."""
        if self._event_ids is None:
            self._event_ids = []
        if len(self._event_ids) < self.limit:
            self._event_ids.append(event_id)
        if trace_id is None:
            return
        if self._trace_ids is None:
            self._trace_ids = []
        if len(self._trace_ids) < self.limit and trace_id not in self._trace_ids:
            self._trace_ids.append(trace_id)

    def clear(self) -> None:
        """Forget the sample (a new window starts)."""
        self._event_ids = self._trace_ids = None


MAX_MODELS_NOTED = 5
"""Distinct models a window tally remembers per caller, for the evidence."""


def note_model(models: list[str], model: str | None, limit: int = MAX_MODELS_NOTED) -> None:
    """Remember ``model`` among a window's first ``limit`` distinct models (a small list: a
    window tally per caller must stay small).

    >>> models: list[str] = []
    >>> for m in ("a", "b", "a", None):
    ...     note_model(models, m)
    >>> models
    ['a', 'b']
    """
    if model is not None and len(models) < limit and model not in models:
        models.append(model)


REFUSED: frozenset[int] = frozenset({401, 403})
"""Statuses of requests refused as unauthenticated or forbidden: they reached no model, so the
per-caller volume detectors (request_rate, token_abuse, scraping) do not count them; a burst of
them is auth_abuse's finding (bad or revoked keys, credential stuffing). A 429 is counted: a
caller that keeps going past its rate limit is flooding."""


def subject_of(event: InferenceEvent) -> str | None:
    """Who an event is attributed to: ``principal:<id>``, else ``ip:<addr>``, else ``None``.

    >>> from datetime import UTC, datetime
    >>> ev = InferenceEvent(id="e", time=datetime(2026, 1, 1, tzinfo=UTC), client_ip="10.0.0.1")
    >>> subject_of(ev)
    'ip:10.0.0.1'
    """
    # Interned: every detector keys its state by the same string, held once per caller.
    if event.principal is not None:
        return sys.intern(f"principal:{event.principal}")
    if event.client_ip is not None:
        return sys.intern(f"ip:{event.client_ip}")
    return None


class WindowBounds:
    """Works out where a closed window started, from the ends the service closes windows at.

    The service closes tumbling windows; after a silence it skips the empty ones, so the
    previous end is not always the start. The window length is learnt as the smallest gap
    between consecutive ends; before two ends are known, the first event's time stands in.

    >>> bounds = WindowBounds()
    >>> bounds.close(60.0, first_event=12.0), bounds.close(120.0, first_event=61.0)
    (12.0, 60.0)
    >>> bounds.close(1020.0, first_event=990.0)   # after a silence: not 120.0
    960.0
    """

    def __init__(self) -> None:
        self.last_end: float | None = None
        self.length: float | None = None

    def close(self, end: float, first_event: float | None) -> float:
        """Record a window closed at ``end``; return its start (event time, Unix seconds)."""
        start = first_event if first_event is not None else end
        if self.last_end is not None and end > self.last_end:
            gap = end - self.last_end
            self.length = gap if self.length is None else min(self.length, gap)
            start = max(self.last_end, end - self.length)
        self.last_end = end
        return min(start, end)


def iso_utc(ts: float) -> str:
    """Unix seconds as an RFC 3339 UTC string, the form evidence carries window bounds in.

    >>> iso_utc(0.0)
    '1970-01-01T00:00:00Z'
    """
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


@dataclass(slots=True)
class WindowBaseline:
    """A principal's usual per-window amount: an EWMA over the windows in which it was active.

    Used by ``request_rate`` and ``token_abuse``: the first window starts the EWMA (capped at
    ``first_cap``), an ordinary window moves it by ``alpha``, a flagged one only towards
    ``flagged_cap`` (the own threshold) by ``flagged_alpha``, so a flood is not learned at once.
    """

    ewma: float = 0.0
    windows: int = 0

    def own(self, floor: float) -> float:
        """The baseline to compare against: the EWMA floored at ``floor``, the floor when new."""
        return max(self.ewma, floor) if self.windows else floor

    def learn(self, value: float, *, first_cap: float, flagged_cap: float | None,
              alpha: float, flagged_alpha: float) -> None:
        """Fold one window in; ``flagged_cap`` is the own threshold when the window was flagged."""
        if self.windows == 0:
            self.ewma = min(value, first_cap)
        elif flagged_cap is not None:
            self.ewma += flagged_alpha * (min(value, flagged_cap) - self.ewma)
        else:
            self.ewma += alpha * (value - self.ewma)
        self.windows += 1


class BaselineTable:
    """A :class:`WindowBaseline` per principal, held in flat arrays behind a :class:`RowIndex`
    (same bounds and counters): about 90 bytes a principal, key excepted, where an object per
    principal in an ``OrderedDict`` took about 190.

    :meth:`load` gives a principal's baseline as a fresh object; :meth:`store` writes it back.

    >>> table = BaselineTable(max_keys=10, ttl_s=60.0)
    >>> row, baseline = table.load("principal:p1", 0.0)
    >>> baseline.learn(12.0, first_cap=100.0, flagged_cap=None, alpha=0.1, flagged_alpha=0.05)
    >>> table.store(row, baseline)
    >>> table.load("principal:p1", 30.0)[1]
    WindowBaseline(ewma=12.0, windows=1)
    >>> table.expire(100.0), len(table)
    (1, 0)
    """

    def __init__(self, max_keys: int, ttl_s: float | None = None) -> None:
        self._ewma = array("d")
        self._windows = array("L")
        self._rows = RowIndex(max_keys, ttl_s, extend=self._extend, reset=self._reset)

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, key: object) -> bool:
        return key in self._rows

    @property
    def evicted(self) -> int:
        return self._rows.evicted

    @property
    def expired(self) -> int:
        return self._rows.expired

    def load(self, key: str, ts: float) -> tuple[int, WindowBaseline]:
        """``(row, baseline)`` of ``key`` (new: no windows yet), marked seen at ``ts``."""
        row = self._rows.row(key, ts)
        return row, WindowBaseline(self._ewma[row], self._windows[row])

    def store(self, row: int, baseline: WindowBaseline) -> None:
        """Write back a baseline :meth:`load` gave for ``row``."""
        self._ewma[row] = baseline.ewma
        self._windows[row] = baseline.windows

    def expire(self, now: float) -> int:
        """Drop principals idle for more than the TTL at event time ``now``; return how many."""
        return self._rows.expire(now)

    def _extend(self) -> None:
        self._ewma.append(0.0)
        self._windows.append(0)

    def _reset(self, row: int) -> None:
        self._ewma[row] = 0.0
        self._windows[row] = 0


@dataclass(frozen=True)
class FloodRule:
    """When an amount (requests, tokens) in a window is a flood, and how the baseline learns.

    A flood is at least ``minimum``, at least ``own_factor`` x the principal's own baseline
    (floored at ``baseline_floor``) and at least ``population_factor`` x the window's median.
    """

    minimum: float
    own_factor: float
    population_factor: float
    baseline_floor: float
    ewma_alpha: float
    flagged_alpha: float

    def assess(self, amount: float, baseline: WindowBaseline, population: Population,
               judging: bool) -> tuple[bool, float]:
        """``(flagged, own baseline)``; nothing is flagged while only ``judging`` is false.
        ``population`` is the principal's (:meth:`Population.seen_by`)."""
        _per_principal(population)
        own = baseline.own(self.baseline_floor)
        flagged = judging and (amount >= self.minimum and amount >= self.own_factor * own
                               and amount >= self.population_factor * population.median)
        return flagged, own

    def learn(self, amount: float, baseline: WindowBaseline, population: Population, own: float,
              flagged: bool, judging: bool) -> None:
        """Fold the window into the baseline (after its finding was built from the old one)."""
        # A newcomer after warm-up starts from at most what a typical caller does, then learns as
        # any window does: a flood from a new key stays flagged for several windows, as one from a
        # known key does, instead of becoming its own baseline at once. Unflagged too: a new key's
        # first window is often the start of a burst cut by the window's end (too few calls to
        # flag), and the burst's first part as its baseline let the rest through. In warm-up,
        # where every caller is new, up to population_factor x the window's own median (not the
        # others' in a thin window: a backend beside one person is no flood): steady heavy users
        # stay quiet.
        _per_principal(population)
        first_cap = population.median if judging else self.population_factor * population.own_median
        baseline.learn(amount, first_cap=first_cap,
                       flagged_cap=self.own_factor * own if flagged else None,
                       alpha=self.ewma_alpha, flagged_alpha=self.flagged_alpha)


def _per_principal(population: Population) -> None:
    if population.thin:
        raise ValueError("a thin window's population is per principal: pass population.seen_by(amount)")


def ratio_severity(ratio: float) -> Severity:
    """Severity of a flood from how far it exceeds its baselines (the weaker of own and
    population), one scale for every volume detector so that 10x ranks alike everywhere."""
    if ratio >= 100:
        return "critical"
    if ratio >= 25:
        return "high"
    if ratio >= 10:
        return "medium"
    return "low"


@dataclass(frozen=True)
class Population:
    """The principals active in one window: the median and p95 of what each did (median >= 1).

    ``basis`` says what ``median`` is: ``"window"``, this window's; or, for a window with too few
    principals to say (see :class:`PopulationReference`), per principal (:meth:`seen_by`):
    ``"others"``, the median of the other principals in the window, or ``"recent"``, recent busy
    windows', whichever is lower (a pack of keys flooding together, or heavy companions, must not
    set one another's bar); ``"none"``, alone with no recent window to go by: the principal
    itself, as any window's median was before (no population flags it). ``window_median`` is the
    window's own median whatever the basis (a warm-up learns against it); ``p95`` is None where
    the window's would include the principal itself.
    """

    median: float
    p95: float | None
    active: int
    basis: str = "window"
    thin: tuple[float, ...] = ()
    """A thin window's amounts, until :meth:`seen_by` picks a principal's population from them."""
    recent: float = 0.0
    """Recent busy windows' median, for a thin window's principals (0: none recent enough)."""
    window_median: float = 0.0
    """The window's own median (0: ``median`` is it)."""
    newcomers: Population | None = None
    """What a principal without history is judged against, when the window has principals with one
    (:meth:`PopulationReference.of`'s ``known``): new keys flooding together must not set their bar."""

    @classmethod
    def of(cls, amounts: Sequence[float]) -> Population:
        """Summarise per-principal amounts (requests, tokens, ...) of one window."""
        values = np.asarray(amounts, dtype=np.float64)
        return cls(median=max(float(np.median(values)), 1.0), p95=float(np.percentile(values, 95)),
                   active=len(values))

    @property
    def own_median(self) -> float:
        """The window's own median (as :meth:`of` gave it), whatever the basis."""
        return self.window_median or self.median

    def seen_by(self, amount: float, *, newcomer: bool = False) -> Population:
        """The population one principal, whose own amount is ``amount``, is judged against: the
        window's, or in a thin window the others' or recent windows' (the lower), else its own
        (see the class); a ``newcomer`` (no history), the principals' with a history when the
        window has some (:attr:`newcomers`).

        >>> thin = Population(3.0, 129.0, 3, thin=(2.0, 129.0, 3.0), recent=7.0)
        >>> thin.seen_by(129.0).median, thin.seen_by(129.0).basis
        (2.5, 'others')
        >>> pack = Population(300.0, 300.0, 3, thin=(300.0, 300.0, 300.0), recent=7.0)
        >>> pack.seen_by(300.0).median, pack.seen_by(300.0).basis  # the pack does not set its own bar
        (7.0, 'recent')
        >>> alone = Population(129.0, 129.0, 1, thin=(129.0,))
        >>> alone.seen_by(129.0).median, alone.seen_by(129.0).basis
        (129.0, 'none')
        """
        if newcomer and self.newcomers is not None:
            return self.newcomers
        if not self.thin:
            return self
        others = list(self.thin)
        others.remove(amount)
        p95: float | None = None
        if others and (not self.recent or float(np.median(others)) <= self.recent):
            median, basis = float(np.median(others)), "others"
            p95 = float(np.percentile(others, 95))
        elif self.recent:
            median, basis = self.recent, "recent"
        else:
            median, basis = amount, "none"
        return replace(self, median=max(median, 1.0), p95=p95, basis=basis, thin=(), recent=0.0,
                       window_median=self.median, newcomers=None)

    def described(self, spec: str = "g", noun: str = "principal") -> str:
        """What a flood's ``Nx the median …`` compares with, for a finding's summary.

        >>> Population(7.0, 9.0, 12).described()
        'the median of 12 active principals (7; p95 9)'
        >>> Population(7.0, 150.0, 1, basis="recent").described()
        'the median of recent windows (7; this window had 1 active principal)'
        >>> Population(3.0, 150.0, 3, basis="others").described(noun="caller")
        'the median of the 2 other active callers (3)'
        >>> Population(9.0, 12.0, 14, basis="known").described(noun="caller")
        'the median of the callers with a history (9; this window had 14 active callers)'
        """
        def active(n: int, other: str = "") -> str:
            return f"{n} {other}active {noun}{'' if n == 1 else 's'}"

        median = f"{self.median:{spec}}"
        if self.basis == "others":
            return f"the median of the {active(self.active - 1, 'other ')} ({median})"
        if self.basis == "recent":
            return f"the median of recent windows ({median}; this window had {active(self.active)})"
        if self.basis == "known":
            window = active(self.active)
            return f"the median of the {noun}s with a history ({median}; this window had {window})"
        if self.basis == "none":
            return f"its own amount ({median}: alone in its window, no recent window of enough {noun}s)"
        p95 = "" if self.p95 is None else f"; p95 {self.p95:{spec}}"
        return f"the median of {active(self.active)} ({median}{p95})"


POPULATION_RISE = 1.5
"""Most a recent-windows median may rise in one window (x): five keys flooding together make a
busy window whose median is theirs, and must not lift the bar for the lone key after them."""


@dataclass(slots=True)
class PopulationReference:
    """What a typical principal does in a window, also when a window has too few to say.

    A window with at least ``min_active`` active principals (0: every window) is its own
    population, and its median moves an EWMA (weight ``alpha``, rising at most
    :data:`POPULATION_RISE` x a window) of such windows' medians. In a window with fewer, the
    window's median is the callers themselves — a flood alone in its window (the rest of a burst
    cut by the window's end, a key at night) set its own bar at five times itself, and keys
    flooding together each other's — so each principal is judged against the lower of the median
    of the *others* in the window and the EWMA, when a window with enough came within ``ttl_s``
    (event time; else the EWMA is forgotten and starts afresh); one alone with neither, against
    itself (:meth:`Population.seen_by`).

    >>> reference = PopulationReference()
    >>> reference.of([7.0] * 12, 0.0).median
    7.0
    >>> reference.of([129.0], 60.0).seen_by(129.0).median
    7.0
    >>> reference.of([40.0] * 12, 120.0).median, reference.median  # the bar rises 1.5x a window at most
    (40.0, 10.5)
    """

    min_active: int = 5
    alpha: float = 0.3
    ttl_s: float = 86_400.0
    median: float = 0.0
    """The EWMA of the medians of windows with enough principals; 0 until there was one."""
    at: float = 0.0
    """When (event time) the last window with enough principals ended."""

    def of(self, amounts: Sequence[float], end_ts: float, known: Sequence[float] | None = None) -> Population:
        """The population of a window ending at ``end_ts`` (see the class); a thin window's must be
        resolved per principal with :meth:`Population.seen_by`.

        ``known`` are the amounts of the principals with a history (a baseline), when the caller
        tells them apart. A principal without one is then judged against those: their median
        when there are at least ``min_active`` of them, else the lower of their median and the
        recent one; when none has one, the lower of the window's median and the recent one — a pack
        of new keys flooding together, the window's majority, made its median and so set its own
        bar. None of it when ``min_active`` is 0 (the window's, always).

        >>> reference = PopulationReference()
        >>> reference.of([7.0] * 6, 0.0).median
        7.0
        >>> pack = reference.of([7.0] * 6 + [200.0] * 8, 60.0, known=[7.0] * 6)
        >>> pack.median, pack.seen_by(200.0, newcomer=True).median, pack.seen_by(200.0).median
        (200.0, 7.0, 200.0)
        """
        window = Population.of(amounts)
        if self.median and end_ts - self.at > self.ttl_s:
            self.median = 0.0  # forgotten: the next busy window starts it afresh
        recent = self.median
        if known is not None and len(known) < window.active and self.min_active:
            window = replace(window, newcomers=self._of_newcomers(window, known, recent))
        if window.active >= self.min_active:
            if self.median:
                moved = self.median + self.alpha * (window.median - self.median)
                self.median = min(moved, POPULATION_RISE * self.median)
            else:
                self.median = window.median
            self.at = end_ts
            return window
        return replace(window, thin=tuple(float(a) for a in amounts), recent=recent)

    def _of_newcomers(self, window: Population, known: Sequence[float], recent: float) -> Population | None:
        if known:
            settled = Population.of(known)
            if len(known) >= self.min_active or not recent or recent >= settled.median:
                return replace(settled, basis="known", active=window.active, window_median=window.median)
        elif not recent or recent >= window.median:
            return None
        return replace(window, median=max(recent, 1.0), p95=None, basis="recent", window_median=window.median)


def own_history(own: float, has_history: bool, spec: str = ".1f") -> str:
    """What a flood's ``Nx …`` compares with: the caller's own baseline, or the floor that stands
    in for one when it has no history.

    >>> own_history(5.0, True), own_history(1000.0, False, ",.0f")
    ('its baseline 5.0', 'the floor of a caller with no history (1,000)')
    """
    if has_history:
        return f"its baseline {own:{spec}}"
    return f"the floor of a caller with no history ({own:{spec}})"


POPULATION_BASES = {"window": "this window", "others": "the other callers in this window",
                    "recent": "recent windows", "none": "itself (alone, nothing recent)",
                    "known": "the callers with a history in this window"}
"""What a flood finding's ``population_median`` is, by :attr:`Population.basis`."""


def flood_comparison(amount: float, own: float, baseline: WindowBaseline,
                     population: Population) -> dict[str, Any]:
    """The evidence every flood finding carries: ``amount`` against the principal's own
    baseline and against the window's population."""
    return {
        "own_baseline": round(own, 3),
        "own_ewma": round(baseline.ewma, 3) if baseline.windows else None,
        "own_windows_seen": baseline.windows,
        "population_median": round(population.median, 3),
        "population_p95": population.p95,
        "population_active": population.active,
        "population_basis": POPULATION_BASES[population.basis],
        "ratio_own": round(amount / own, 2),
        "ratio_population": round(amount / population.median, 2),
    }


def window_finding(
    detector: str,
    *,
    subject: str,
    bounds: tuple[float, float],
    service: str | None,
    models: Iterable[str] | None,
    ids: IdSample,
    severity: Severity,
    score: float,
    title: str,
    summary: str,
    evidence: dict[str, Any],
) -> Finding:
    """A per-caller ``abuse`` finding about one closed window: timed at the window's end, with the
    window (and the models used, when given) in the evidence and the summary, the model named when
    there was just one, and the sample of event and trace ids."""
    named = sorted(models) if models is not None else None
    evidence = {**evidence, "window_start": iso_utc(bounds[0]), "window_end": iso_utc(bounds[1])}
    if named is not None:
        evidence["models"] = named
    return Finding(
        detector=detector,
        kind="abuse",
        severity=severity,
        score=score,
        title=title,
        summary=summary + (f"; models: {', '.join(named)}" if named else ""),
        subject=subject,
        time=datetime.fromtimestamp(bounds[1], UTC),
        service=service,
        model=named[0] if named and len(named) == 1 else None,
        evidence=evidence,
        event_ids=list(ids.event_ids),
        trace_ids=list(ids.trace_ids),
    )


def about_event(event: InferenceEvent) -> dict[str, Any]:
    """The fields of a per-request finding that come from its event: when, where, which ids."""
    return {
        "time": event.time,
        "service": event.service,
        "model": event.model,
        "event_ids": [event.id],
        "trace_ids": [event.trace_id] if event.trace_id else [],
    }


@dataclass(slots=True)
class _Held:
    pending: Finding | None = None
    open_until: float = float("-inf")


class RepeatGate:
    """Per-request findings per subject: a confident one goes through, a lone doubtful one waits.

    A per-request detector scores every request on its own; one doubtful match from a caller is
    more often an odd but innocent prompt than an attack, while an attacker probing a model tries
    again. So a finding with ``score >= confident`` is passed on at once; a doubtful one is held
    until the same subject produces another finding within ``within_s`` seconds of event time,
    when both go through (the incident then counts both, and escalates with them). After a
    finding has gone through, the subject's further findings pass at once for ``within_s``.
    A held finding nobody repeats is forgotten once its subject has been idle for ``within_s``
    (``held - released`` counts those, and those still waiting). Subjects are held in an LRU map
    of ``max_subjects`` keys.

    >>> from datetime import UTC, datetime
    >>> def f(ts: float, score: float) -> Finding:
    ...     return Finding(detector="d", kind="abuse", severity="low", score=score, title="t",
    ...                    summary="s", subject="principal:p", time=datetime.fromtimestamp(ts, UTC))
    >>> gate = RepeatGate(confident=0.9, within_s=3600.0)
    >>> gate.admit(f(0, 0.6)), gate.held
    ([], 1)
    >>> [x.score for x in gate.admit(f(60, 0.7))]      # it repeats: both go through
    [0.6, 0.7]
    >>> [x.score for x in gate.admit(f(120, 0.5))]     # and later ones pass at once
    [0.5]
    >>> [x.score for x in RepeatGate(0.9, 3600.0).admit(f(0, 0.95))]   # confident: at once
    [0.95]
    """

    def __init__(self, confident: float, within_s: float, max_subjects: int = 50_000) -> None:
        if not 0.0 <= confident <= 1.0:
            raise ValueError(f"confident must be in [0, 1], got {confident}")
        if within_s <= 0:
            raise ValueError(f"within_s must be positive, got {within_s}")
        self.confident = confident
        self.within_s = within_s
        self.held = 0
        """Doubtful findings held back, waiting for a repeat."""
        self.released = 0
        """Held findings passed on later, when their subject repeated."""
        self._subjects: BoundedState[str, _Held] = BoundedState(max_subjects, within_s)

    def admit(self, finding: Finding) -> list[Finding]:
        """The findings to pass on now: none, this one, or a held one and this one."""
        ts = finding.time.timestamp()
        self._subjects.expire(ts)
        held = self._subjects.get_or_create(finding.subject, ts, _Held)
        if finding.score >= self.confident or ts <= held.open_until or held.pending is not None:
            out = [finding] if held.pending is None else [held.pending, finding]
            self.released += held.pending is not None
            held.pending, held.open_until = None, ts + self.within_s
            return out
        held.pending = finding
        self.held += 1
        return []
