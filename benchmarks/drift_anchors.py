"""The anchors ``drift_eval.py`` compares our drift detector with, each behind one small interface.

Every method sees the same windows of a scenario (:class:`drift_shifts.Window`) in order and
returns, for each window after the reference windows, one :class:`Verdict` per variant: did it
alarm, and on which features. Each variant's time is measured around its own work only.

* **Evidently** ``DataDriftPreset`` (evidently 0.7): ``Report([DataDriftPreset()]).run(current,
  reference)`` on pandas frames, reference = the reference windows' rows. Its own defaults pick
  the test per column from the data (with over 1,000 reference rows: normed Wasserstein >= 0.1 for
  numbers, Jensen-Shannon >= 0.1 for categories). Two verdicts from one run: *dataset drift* (the
  preset's headline: at least half of the columns drifted) and *any column* drifted.
* **Alibi Detect** ``TabularDrift`` (KS for numbers, chi-squared for categories, Bonferroni across
  features, ``p_val=0.05``), on the same frames as numbers (categories as integer codes). It takes
  no missing values, so rows with one are dropped. For benchmarking only: its licence (Business
  Source License) does not allow it in production without a commercial licence.
* **River** ``ADWIN``, ``PageHinkley`` and ``KSWIN`` at their defaults, one detector per feature
  fed every event's value in event order (a category as one 0/1 indicator per reference category
  for ADWIN and PageHinkley; KSWIN only on numbers). A window alarms when any detector signalled
  drift on any of its events. River's detectors need no reference; they also see the reference
  windows (their alarms there are not counted).

Run as a script, it says which anchors are installed.
"""

from __future__ import annotations

import importlib.util
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from drift_shifts import Columns, Schema, Window

ANCHOR_PACKAGES = {"evidently": "evidently", "alibi": "alibi_detect", "river": "river"}


@dataclass(frozen=True)
class Verdict:
    """One method's decision on one window."""

    alarm: bool
    features: tuple[str, ...] = ()
    scores: dict[str, float] = field(default_factory=dict, compare=False)
    """Per feature, how strongly the method saw a change (larger is stronger; ``drift_matched.py``
    sets its own thresholds on them): Evidently's distance (or -log10 of its p-value), Alibi
    Detect's -log10 p-value."""


@dataclass
class Timer:
    """Seconds spent in one variant's own work."""

    seconds: float = 0.0
    started: float = field(default=0.0, repr=False)

    def __enter__(self) -> Timer:
        self.started = time.perf_counter()
        return self

    def __exit__(self, *_: object) -> None:
        self.seconds += time.perf_counter() - self.started


def missing_anchors() -> list[str]:
    """Anchor packages that cannot be imported here."""
    return [pkg for pkg in ANCHOR_PACKAGES.values() if importlib.util.find_spec(pkg) is None]


class Method:
    """A drift method run over a scenario's windows; ``variants`` name its verdict streams."""

    variants: tuple[str, ...] = ()
    slow = False
    """Too slow for a million events: judged on fewer windows of the stationary streams."""

    def __init__(self) -> None:
        self.timers = {v: Timer() for v in self.variants}

    def start(self, schema: Schema) -> None:
        """Forget everything: a new scenario begins."""

    def window(self, window: Window) -> dict[str, Verdict] | None:
        """Take one window; verdicts per variant once past the reference windows, else None."""
        raise NotImplementedError


def _minus_log10(p: float) -> float:
    return -float(np.log10(max(p, 1e-300)))


def _concat(parts: list[Columns]) -> Columns:
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


class _ReferenceFrame(Method):
    """Collects the reference windows' rows, then compares each window with them."""

    def start(self, schema: Schema) -> None:
        self.schema = schema
        self._parts: list[Columns] = []
        self._ready = False

    def window(self, window: Window) -> dict[str, Verdict] | None:
        if window.reference:
            self._parts.append(window.columns)
            return None
        if not self._ready:
            self._prepare(_concat(self._parts))
            self._parts, self._ready = [], True
        return self._compare(window.columns)

    def _prepare(self, reference: Columns) -> None:
        raise NotImplementedError

    def _compare(self, current: Columns) -> dict[str, Verdict]:
        raise NotImplementedError


class EvidentlyMethod(_ReferenceFrame):
    variants = ("Evidently (dataset drift)", "Evidently (any column)")

    def __init__(self) -> None:
        super().__init__()
        import pandas as pd
        from evidently import DataDefinition, Dataset, Report
        from evidently.presets import DataDriftPreset

        self._pd, self._dataset, self._report, self._preset = pd, Dataset, Report, DataDriftPreset
        self._definition_cls = DataDefinition

    def _frame(self, columns: Columns) -> Any:
        return self._dataset.from_pandas(self._pd.DataFrame(columns), data_definition=self._definition)

    def _prepare(self, reference: Columns) -> None:
        with self.timers[self.variants[0]]:
            self._definition = self._definition_cls(numerical_columns=list(self.schema.numeric),
                                                    categorical_columns=list(self.schema.categorical))
            self._reference = self._frame(reference)

    def _compare(self, current: Columns) -> dict[str, Verdict]:
        with self.timers[self.variants[0]], warnings.catch_warnings():
            warnings.simplefilter("ignore")
            snapshot = self._report([self._preset()], include_tests=True).run(self._frame(current),
                                                                               self._reference)
            result = snapshot.dict()
        scores = {}
        for metric in result["metrics"]:
            config = metric["config"]
            if config.get("type", "").endswith("ValueDrift"):
                value = float(metric["value"])
                scores[config["column"]] = _minus_log10(value) if "p_value" in config["method"] else value
        drifted, dataset = [], False
        for test in result["tests"]:
            params = test["metric_config"]["params"]
            failed = test["status"] == "FAIL"
            if "column" in params and failed:
                drifted.append(params["column"])
            elif params.get("type", "").endswith("DriftedColumnsCount"):
                dataset = failed
        # One run gives both verdicts; its time is booked once, to the headline variant.
        self.timers[self.variants[1]].seconds = self.timers[self.variants[0]].seconds
        names = tuple(drifted)
        # The per-column scores go with the per-column verdict (the headline counts columns).
        return {self.variants[0]: Verdict(dataset, names if dataset else ()),
                self.variants[1]: Verdict(bool(names), names, scores)}


class AlibiMethod(_ReferenceFrame):
    variants = ("Alibi Detect TabularDrift",)

    def __init__(self) -> None:
        super().__init__()
        # transformers (imported by alibi_detect) would announce that PyTorch is missing: not needed here.
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        from alibi_detect.cd import TabularDrift

        self._cls = TabularDrift

    def _matrix(self, columns: Columns) -> np.ndarray[Any, np.dtype[np.float64]]:
        out = np.empty((len(next(iter(columns.values()))), len(self._names)), dtype=np.float64)
        for j, name in enumerate(self._names):
            values = columns[name]
            if name in self._codes:
                codes = self._codes[name]
                out[:, j] = [np.nan if v is None else float(codes.setdefault(v, len(codes))) for v in values]
            else:
                out[:, j] = values
        return out[~np.isnan(out).any(axis=1)]  # TabularDrift takes no missing values

    def _prepare(self, reference: Columns) -> None:
        with self.timers[self.variants[0]], warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._names = list(self.schema.features)
            self._codes: dict[str, dict[str, int]] = {name: {} for name in self.schema.categorical}
            categorical = {j: None for j, name in enumerate(self._names) if name in self._codes}
            self._detector = self._cls(self._matrix(reference), p_val=0.05,
                                       categories_per_feature=categorical)

    def _compare(self, current: Columns) -> dict[str, Verdict]:
        with self.timers[self.variants[0]], warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = self._detector.predict(self._matrix(current))["data"]
        p_values = [float(p) for p in result["p_val"]]
        names = tuple(n for n, p in zip(self._names, p_values, strict=True) if p < result["threshold"])
        scores = {n: _minus_log10(p) for n, p in zip(self._names, p_values, strict=True)}
        return {self.variants[0]: Verdict(bool(result["is_drift"]), names, scores)}


class RiverMethod(Method):
    variants = ("River ADWIN", "River PageHinkley", "River KSWIN")

    def __init__(self, variants: tuple[str, ...] | None = None,
                 factories: dict[str, Callable[[], Any]] | None = None) -> None:
        """``factories`` (variant name -> a new detector) replaces the three defaults.

        A detector with a ``take_peak()`` method also gives each key's peak statistic over the
        window as its score (``drift_matched.py``'s Page-Hinkley that never resets).
        """
        if factories is not None:
            variants = tuple(factories)
        if variants is not None:
            self.variants = variants
        self.slow = "River KSWIN" in self.variants  # scipy's KS test on every event
        super().__init__()
        from river import drift

        self._factories = factories or {"River ADWIN": drift.ADWIN, "River PageHinkley": drift.PageHinkley,
                                        "River KSWIN": lambda: drift.KSWIN(seed=42)}

    def start(self, schema: Schema) -> None:
        self.schema = schema
        self._categories: dict[str, list[str]] | None = None
        self._detectors: dict[str, dict[str, Any]] = {v: {} for v in self.variants}

    def _streams(self, columns: Columns, numeric_only: bool) -> dict[str, list[float]]:
        streams: dict[str, list[float]] = {}
        for name in self.schema.numeric:
            streams[name] = [v for v in columns[name].tolist() if v == v]
        if numeric_only or self._categories is None:
            return streams
        for name, levels in self._categories.items():
            values = [v for v in columns[name].tolist() if v is not None]
            for level in levels:
                streams[f"{name}={level}"] = [1.0 if v == level else 0.0 for v in values]
        return streams

    def window(self, window: Window) -> dict[str, Verdict] | None:
        if self._categories is None:
            self._categories = {name: sorted({v for v in window.columns[name].tolist() if v is not None})
                                for name in self.schema.categorical}
        verdicts = {}
        for variant in self.variants:
            with self.timers[variant]:
                streams = self._streams(window.columns, numeric_only=variant == "River KSWIN")
                fired = []
                scores: dict[str, float] = {}
                detectors = self._detectors[variant]
                for key, values in streams.items():
                    detector = detectors.get(key)
                    if detector is None:
                        detector = detectors[key] = self._factories[variant]()
                    update, hit = detector.update, False
                    for value in values:
                        update(value)
                        if detector.drift_detected:
                            hit = True
                    if hit:
                        fired.append(key.split("=")[0])
                    peak = getattr(detector, "take_peak", None)
                    if peak is not None:
                        scores[key] = peak()
            verdicts[variant] = Verdict(bool(fired), tuple(dict.fromkeys(fired)), scores)
        return None if window.reference else verdicts


def build_anchors(names: set[str]) -> tuple[list[Method], list[str]]:
    """The anchor methods among ``names`` that are installed, and notes for those that are not."""
    methods: list[Method] = []
    notes = []
    missing = set(missing_anchors())
    if "evidently" in names:
        if "evidently" in missing:
            notes.append("Evidently skipped: `evidently` is not installed")
        else:
            methods.append(EvidentlyMethod())
    if "alibi" in names:
        if "alibi_detect" in missing:
            notes.append("Alibi Detect skipped: `alibi-detect` is not installed")
        else:
            methods.append(AlibiMethod())
    fast = tuple(f"River {v}" for v, key in (("ADWIN", "adwin"), ("PageHinkley", "pagehinkley"))
                 if key in names)
    for river in (fast, ("River KSWIN",) if "kswin" in names else ()):
        if not river:
            continue
        if "river" in missing:
            notes.append(f"{', '.join(river)} skipped: `river` is not installed")
        else:
            methods.append(RiverMethod(river))
    return methods, notes


def main() -> None:
    missing = missing_anchors()
    for key, package in ANCHOR_PACKAGES.items():
        print(f"{key}: {'missing' if package in missing else 'installed'}")
    if missing:
        print("install the anchors as drift_eval.py's docstring says (a separate venv)")


if __name__ == "__main__":
    main()
