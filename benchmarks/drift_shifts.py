"""Drift scenarios: event streams with known shifts at known positions, for ``drift_eval.py``.

A scenario is a stream of tabular inference events cut into 60-second event-time windows of
``events_per_window`` events each (1,000 by default). The first ``reference_windows`` windows are
the reference every method compares with (our detector's warm-up, the anchors' reference frame);
the shift starts at the first event of window ``start_window`` and lasts to the end, either at
once (*abrupt*) or growing linearly over ``ramp_windows`` windows (*gradual*). Everything is seeded:
the same scenario gives the same events on every run and in every method.

Streams
-------
``synthetic``
    x ~ N(0, 1); y = 0.8 x + 0.6 N(0, 1) (correlated with x, same marginal N(0, 1)); amount ~
    lognormal(3, 0.8); items ~ Poisson(3) (integers); segment in a..e with shares 40/25/15/12/8 %;
    channel in web/app/api with shares 50/35/15 %.
``elec``
    ``elec.csv`` (the NSW/Victoria electricity market, half-hourly) from row 17,424 on, where the
    Victorian columns stop being a constant fill: numeric period, nswprice, nswdemand, vicprice,
    vicdemand, transfer; categorical ``class`` (up/down) and ``daypart`` (period in quarters).
``weather``
    ``weather.csv`` (daily weather): numeric feat_1..feat_8; categorical ``target`` (rain/dry).

The real streams are not stationary in file order (seasons, market changes), so a shift
injected into them in file order could not be told from their own drift. Each event here is a
**row drawn uniformly at random, with replacement, from the whole stretch** (a bootstrap): the
stream is stationary, and its marginals, ties, outliers and correlations are the real ones. The
injected shift is then the only change.

Shifts (``Shift.kind``), applied from the start event on with intensity w in [0, 1] (1 when
abrupt; rising linearly from 0 to 1 over the ramp when gradual):

=============  ============================================================================
mean           x + k * sd * w (sd: the feature's standard deviation in the stream)
variance       mean + (x - mean) * (1 + (s - 1) * w)
category       with probability p * w a value becomes ``target`` (moves p of the mass)
unit           with probability w a value is multiplied by the factor (a client sends g, not kg);
               gradual = the share of converted callers grows
missing        with probability r * w the feature is absent from the event
correlation    with probability w the value is replaced by an independent draw of the same
               feature (another row's value): the marginal is unchanged, the correlation with the
               other features is broken
=============  ============================================================================

Run as a script, it lists the scenarios::

    python benchmarks/drift_shifts.py
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from inferwatch.collectors.event import EventInput, InferenceEvent, Scalar

WINDOW_S = 60.0
ORIGIN = 1_767_225_600.0
"""2026-01-01T00:00:00Z: a multiple of 60 s, so scenario windows are the pipeline's windows."""
STREAMS_DIR = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "streams"
MODEL = "tabular"
ELEC_FIRST_ROW = 17_424
"""Before this row elec.csv's vicprice/vicdemand/transfer are one constant fill value."""

Columns = dict[str, npt.NDArray[np.float64] | npt.NDArray[np.object_]]
"""A window's values by feature: float64 with NaN for missing, or objects (str) with None."""
ShiftKind = Literal["mean", "variance", "category", "unit", "missing", "correlation"]
Onset = Literal["abrupt", "gradual", "none"]


@dataclass(frozen=True)
class Schema:
    """Which features a stream has, by type."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]

    @property
    def features(self) -> tuple[str, ...]:
        return self.numeric + self.categorical


class Stream(Protocol):
    """A stationary source of rows."""

    name: str
    schema: Schema

    def draw(self, rng: np.random.Generator, n: int) -> Columns:
        """``n`` independent rows."""

    def marginal(self, feature: str, rng: np.random.Generator, n: int) -> npt.NDArray[np.float64]:
        """``n`` values of one numeric feature drawn independently of everything else."""

    def spread(self, feature: str) -> tuple[float, float]:
        """Mean and standard deviation of a numeric feature."""


class SyntheticStream:
    """Gaussian, correlated Gaussian, lognormal, Poisson and two categorical features."""

    name = "synthetic"
    schema = Schema(numeric=("x", "y", "amount", "items"), categorical=("segment", "channel"))
    SEGMENTS = (("a", "b", "c", "d", "e"), (0.40, 0.25, 0.15, 0.12, 0.08))
    CHANNELS = (("web", "app", "api"), (0.50, 0.35, 0.15))

    def draw(self, rng: np.random.Generator, n: int) -> Columns:
        x = rng.standard_normal(n)
        return {
            "x": x,
            "y": 0.8 * x + 0.6 * rng.standard_normal(n),
            "amount": rng.lognormal(3.0, 0.8, n),
            "items": rng.poisson(3.0, n).astype(np.float64),
            "segment": rng.choice(np.array(self.SEGMENTS[0], dtype=object), n, p=self.SEGMENTS[1]),
            "channel": rng.choice(np.array(self.CHANNELS[0], dtype=object), n, p=self.CHANNELS[1]),
        }

    def marginal(self, feature: str, rng: np.random.Generator, n: int) -> npt.NDArray[np.float64]:
        if feature == "y":
            return rng.standard_normal(n)  # 0.8 N + 0.6 N is N(0, 1)
        values = self.draw(rng, n)[feature]
        return np.asarray(values, dtype=np.float64)

    def spread(self, feature: str) -> tuple[float, float]:
        if feature in ("x", "y"):
            return 0.0, 1.0
        if feature == "amount":
            mean = math.exp(3.0 + 0.8**2 / 2)
            return mean, mean * math.sqrt(math.exp(0.8**2) - 1)
        if feature == "items":
            return 3.0, math.sqrt(3.0)
        raise KeyError(feature)


class PoolStream:
    """Rows drawn uniformly with replacement from a fixed table (see the module docstring)."""

    def __init__(self, name: str, schema: Schema, table: Columns) -> None:
        self.name = name
        self.schema = schema
        self.table = table
        self.rows = len(next(iter(table.values())))

    def draw(self, rng: np.random.Generator, n: int) -> Columns:
        index = rng.integers(0, self.rows, n)
        return {name: values[index] for name, values in self.table.items()}

    def marginal(self, feature: str, rng: np.random.Generator, n: int) -> npt.NDArray[np.float64]:
        values = self.table[feature]
        return np.asarray(values[rng.integers(0, self.rows, n)], dtype=np.float64)

    def spread(self, feature: str) -> tuple[float, float]:
        values = np.asarray(self.table[feature], dtype=np.float64)
        return float(values.mean()), float(values.std())


def _read_csv(path: Path) -> dict[str, npt.NDArray[np.float64]]:
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: the real streams come from shared/datasets/streams "
                                "(pass --streams DIR, or run only the synthetic scenarios)")
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        data = np.array([[float(cell) for cell in row] for row in reader], dtype=np.float64)
    return {name: data[:, i] for i, name in enumerate(header)}


def elec_stream(directory: Path = STREAMS_DIR) -> PoolStream:
    """elec.csv from :data:`ELEC_FIRST_ROW` on, with ``class`` and ``daypart`` as categories."""
    raw = {k: v[ELEC_FIRST_ROW:] for k, v in _read_csv(directory / "elec.csv").items()}
    numeric = ("period", "nswprice", "nswdemand", "vicprice", "vicdemand", "transfer")
    quarters = np.array(["night", "morning", "afternoon", "evening"], dtype=object)
    table: Columns = {name: raw[name] for name in numeric}
    table["class"] = np.where(raw["class"] > 0.5, "up", "down").astype(object)
    table["daypart"] = quarters[np.minimum((raw["period"] * 4).astype(int), 3)]
    return PoolStream("elec", Schema(numeric=numeric, categorical=("class", "daypart")), table)


def weather_stream(directory: Path = STREAMS_DIR) -> PoolStream:
    """weather.csv, all rows, with ``target`` as the category rain/dry."""
    raw = _read_csv(directory / "weather.csv")
    numeric = tuple(f"feat_{i}" for i in range(1, 9))
    table: Columns = {name: raw[name] for name in numeric}
    table["target"] = np.where(raw["target"] > 0.5, "rain", "dry").astype(object)
    return PoolStream("weather", Schema(numeric=numeric, categorical=("target",)), table)


@cache
def load_stream(name: str, directory: Path = STREAMS_DIR) -> Stream:
    """The stream called ``name`` (``synthetic``, ``elec`` or ``weather``)."""
    if name == "synthetic":
        return SyntheticStream()
    if name == "elec":
        return elec_stream(directory)
    if name == "weather":
        return weather_stream(directory)
    raise ValueError(f"unknown stream {name!r}: use synthetic, elec or weather")


@dataclass(frozen=True)
class Shift:
    """One injected change to one feature; see the module docstring for each kind."""

    kind: ShiftKind
    feature: str
    magnitude: float
    target: str | None = None
    """The category that gains mass (kind ``category``)."""

    def describe(self) -> str:
        m = self.magnitude
        return {
            "mean": f"{self.feature} mean +{m:g} sd",
            "variance": f"{self.feature} spread x{m:g}",
            "category": f"{self.feature}: {m:.0%} of values become {self.target!r}",
            "unit": f"{self.feature} x{m:g} (unit change)",
            "missing": f"{self.feature} missing in {m:.0%} of events",
            "correlation": f"{self.feature} decorrelated (marginal unchanged)",
        }[self.kind]

    def apply(self, columns: Columns, w: npt.NDArray[np.float64], rng: np.random.Generator,
              stream: Stream) -> None:
        """Change ``columns`` in place; ``w`` is the intensity of each row (0 = untouched)."""
        values = columns[self.feature]
        n = len(w)
        if self.kind == "mean":
            _, std = stream.spread(self.feature)
            columns[self.feature] = values + self.magnitude * std * w
        elif self.kind == "variance":
            mean, _ = stream.spread(self.feature)
            columns[self.feature] = mean + (values - mean) * (1.0 + (self.magnitude - 1.0) * w)
        elif self.kind == "category":
            hit = rng.random(n) < self.magnitude * w
            changed = values.copy()
            changed[hit] = self.target
            columns[self.feature] = changed
        elif self.kind == "unit":
            hit = rng.random(n) < w
            columns[self.feature] = np.where(hit, values * self.magnitude, values)
        elif self.kind == "missing":
            hit = rng.random(n) < self.magnitude * w
            changed = values.copy()
            changed[hit] = None if changed.dtype == object else np.nan
            columns[self.feature] = changed
        elif self.kind == "correlation":
            hit = rng.random(n) < w
            columns[self.feature] = np.where(hit, stream.marginal(self.feature, rng, n), values)


@dataclass(frozen=True)
class Scenario:
    """A stream, a shift (or none), where it starts and how fast it comes."""

    name: str
    stream: str
    shift: Shift | None
    onset: Onset
    start_window: int
    windows: int
    events_per_window: int = 1_000
    ramp_windows: int = 10
    reference_windows: int = 3
    seed: int = 0

    @property
    def affected(self) -> tuple[str, ...]:
        return () if self.shift is None else (self.shift.feature,)

    @property
    def start_event(self) -> int:
        return self.start_window * self.events_per_window

    @property
    def events(self) -> int:
        return self.windows * self.events_per_window

    def describe(self) -> str:
        if self.shift is None:
            return "stationary"
        ramp = f", ramp over {self.ramp_windows} windows" if self.onset == "gradual" else ""
        return f"{self.shift.describe()}, {self.onset}{ramp}"


@dataclass
class Window:
    """One 60-second window of a scenario: its rows as columns, and where it sits."""

    scenario: Scenario
    index: int
    columns: Columns
    intensity: float
    """Mean shift intensity over the window's events (0 before the shift)."""
    schema: Schema
    _rows: list[dict[str, Scalar]] | None = field(default=None, repr=False)

    @property
    def n(self) -> int:
        return self.scenario.events_per_window

    @property
    def start(self) -> float:
        return ORIGIN + self.index * WINDOW_S

    @property
    def end(self) -> float:
        return self.start + WINDOW_S

    @property
    def end_time(self) -> datetime:
        return datetime.fromtimestamp(self.end, UTC)

    @property
    def reference(self) -> bool:
        return self.index < self.scenario.reference_windows

    @property
    def first_event(self) -> int:
        return self.index * self.n

    def rows(self) -> list[dict[str, Scalar]]:
        """Each event's features; a missing value is left out of the event, as an agent would."""
        if self._rows is None:
            names = list(self.columns)
            lists = [self.columns[name].tolist() for name in names]
            rows: list[dict[str, Scalar]] = []
            for values in zip(*lists, strict=True):
                rows.append({k: v for k, v in zip(names, values, strict=True)
                             if v is not None and v == v})  # v == v drops NaN
            self._rows = rows
        return self._rows

    def events(self) -> list[InferenceEvent]:
        """The window's events, evenly spaced in event time inside it."""
        step = WINDOW_S / self.n
        latency = np.random.default_rng((self.scenario.seed, self.index, 7)).gamma(4.0, 30.0, self.n)
        out = []
        prefix = f"{self.scenario.name}-{self.index}-"
        for j, row in enumerate(self.rows()):
            out.append(InferenceEvent(
                id=f"{prefix}{j}",
                time=datetime.fromtimestamp(self.start + (j + 0.5) * step, UTC),
                duration_ms=float(latency[j]),
                service="bench",
                model=MODEL,
                principal=f"p{j % 500:03d}",
                status=200,
                input=EventInput(features=row),
            ))
        return out


def windows(scenario: Scenario, directory: Path = STREAMS_DIR) -> Iterator[Window]:
    """The scenario's windows, generated one at a time (a million events never sit in memory)."""
    stream = load_stream(scenario.stream, directory)
    n = scenario.events_per_window
    for index in range(scenario.windows):
        rng = np.random.default_rng((scenario.seed, index))
        columns = stream.draw(rng, n)
        intensity = 0.0
        if scenario.shift is not None and index >= scenario.start_window:
            position = index * n + np.arange(n) - scenario.start_event
            if scenario.onset == "gradual":
                w = np.clip((position + 1) / (scenario.ramp_windows * n), 0.0, 1.0)
            else:
                w = np.ones(n)
            scenario.shift.apply(columns, w, rng, stream)
            intensity = float(w.mean())
        yield Window(scenario, index, columns, intensity, stream.schema)


def scenarios(*, pre_windows: int = 5, post_windows: int = 15, seed: int = 11) -> list[Scenario]:
    """Every injected-shift scenario: each kind on each stream, abrupt, and gradual for some.

    The shift starts after ``reference_windows`` (3) reference windows and ``pre_windows``
    monitored windows without a shift (where any alarm is a false alarm), and runs for
    ``post_windows`` windows (long enough for the 10-window ramps to finish).
    """
    start = 3 + pre_windows
    total = start + post_windows
    specs: list[tuple[str, Shift, tuple[Onset, ...]]] = [
        ("synthetic", Shift("mean", "x", 0.5), ("abrupt", "gradual")),
        ("synthetic", Shift("mean", "x", 0.2), ("abrupt",)),
        ("synthetic", Shift("mean", "amount", 0.3), ("abrupt",)),
        ("synthetic", Shift("variance", "x", 1.5), ("abrupt", "gradual")),
        ("synthetic", Shift("category", "segment", 0.15, target="e"), ("abrupt", "gradual")),
        ("synthetic", Shift("category", "channel", 0.05, target="api"), ("abrupt",)),
        ("synthetic", Shift("unit", "amount", 1000.0), ("abrupt", "gradual")),
        ("synthetic", Shift("missing", "amount", 0.3), ("abrupt", "gradual")),
        ("synthetic", Shift("correlation", "y", 1.0), ("abrupt", "gradual")),
        ("elec", Shift("mean", "nswdemand", 0.5), ("abrupt", "gradual")),
        ("elec", Shift("variance", "nswprice", 1.5), ("abrupt",)),
        ("elec", Shift("category", "class", 0.15, target="up"), ("abrupt",)),
        ("elec", Shift("unit", "vicdemand", 1000.0), ("abrupt",)),
        ("elec", Shift("missing", "transfer", 0.3), ("abrupt",)),
        ("elec", Shift("correlation", "vicdemand", 1.0), ("abrupt",)),
        ("weather", Shift("mean", "feat_1", 0.5), ("abrupt", "gradual")),
        ("weather", Shift("variance", "feat_4", 1.5), ("abrupt",)),
        ("weather", Shift("category", "target", 0.15, target="rain"), ("abrupt",)),
        ("weather", Shift("unit", "feat_3", 1000.0), ("abrupt",)),
        ("weather", Shift("missing", "feat_5", 0.3), ("abrupt",)),
        ("weather", Shift("correlation", "feat_8", 1.0), ("abrupt",)),
    ]
    out = []
    for number, (stream, shift, onsets) in enumerate(specs):
        for onset in onsets:
            label = f"{stream}/{shift.kind}-{shift.feature}-{shift.magnitude:g}/{onset}"
            out.append(Scenario(label, stream, shift, onset, start, total, seed=seed + number))
    return out


def stationary(stream: str, events: int, *, events_per_window: int = 1_000, seed: int = 5) -> Scenario:
    """A long shift-free stream: every alarm after the reference windows is a false alarm."""
    windows_ = max(4, events // events_per_window)
    size = f"{events_per_window // 1000}k" if events_per_window >= 1_000 else str(events_per_window)
    suffix = "" if events_per_window == 1_000 else f"@{size}"
    return Scenario(f"{stream}/stationary{suffix}", stream, None, "none", windows_, windows_,
                    events_per_window=events_per_window, seed=seed)


def main() -> None:
    print("| scenario | stream | shift | start window | windows | events |")
    print("|---|---|---|---:|---:|---:|")
    for s in scenarios():
        print(f"| `{s.name}` | {s.stream} | {s.describe()} | {s.start_window} | {s.windows} | {s.events:,} |")


if __name__ == "__main__":
    main()
