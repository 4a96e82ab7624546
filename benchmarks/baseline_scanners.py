"""Public baselines beside inferwatch's detectors, on the same data.

Two kinds of baseline, for the two kinds of evaluation:

* **Per prompt** — public prompt-injection scanners that install from PyPI and run offline with no
  model download, flagging one text at a time like ``scan_text``. :func:`available` returns those
  that import here, as ``name -> flag(text)``:

  - ``rebuff-heuristic``: Rebuff's heuristic check (``rebuff`` 0.1.1, Apache-2.0,
    ``rebuff/detect_pi_heuristics.py``), flagged when its score exceeds 0.75, the default
    ``max_heuristic_score`` of ``RebuffSdk.detect_injection``. Install with ``pip install --no-deps
    rebuff==0.1.1``: its declared dependencies (langchain, openai, pinecone-client, tiktoken) serve
    only the LLM and vector checks, and the package ``__init__`` imports them, so the heuristic
    module is loaded from the installed file on its own. As shipped it compares ~8,800 keyword
    phrases with every window of the prompt through ``difflib.SequenceMatcher`` (70-100 s per
    1,000 characters), so :func:`rebuff_score` / :func:`rebuff_flag` compute the *same* score and
    decision with Rebuff's own functions and keyword list, scoring only the windows that can hold
    the maximum; ``--verify-rebuff N`` checks equality with the shipped function on N prompts.
  - ``last_layer``: ``last_layer`` 0.1.33 (MIT wrapper around a closed, bundled ``.so`` with a
    pruned model inside; no network). Flagged when ``scan_prompt(text)`` does not pass, its
    documented use; ``last_layer-exploit`` counts only its ``ExploitClassifier`` marker (the
    injection/jailbreak one), leaving out PII, secrets, profanity, code and the rest.
  - ``pi-defense``: ``prompt-injection-defense`` 0.10.7 (MIT, pure-stdlib rules), flagged when
    ``detect_prompt_injection(text)["label"]`` is not ``"benign"`` (score ≥ 2, its default).
    Install with ``--no-deps``: its one dependency, ``datasets``, is only imported by its
    Hugging Face evaluation helper. It takes seconds per prompt, so the table runs it on a seeded
    sample of ``--slow-rows`` rows per group.

  ``main`` prints, per source of ``shared/datasets/prompts`` (attack sources split by category)
  and per category of ``benchmarks/data/ordinary_prompts.jsonl``, the flag rate (recall on attack
  rows, false-positive rate on benign rows) of each baseline and of inferwatch's patterns
  (``scan_text(text).score >= 0.5``), then the latency per prompt, p50 / p95, pinned to one core.
  docs/detectors/baselines.md records a run and the candidates that were turned down.

* **Per caller** — :func:`fixed_threshold_rule`, the hand-written "N events per principal per
  window" alert that a team without inferwatch would put in ElastAlert, for scenario evaluations.

    python benchmarks/baseline_scanners.py                      # the table (~45 min, 2 shared cores)
    python benchmarks/baseline_scanners.py --external           # the same on the external rows
    python benchmarks/baseline_scanners.py --verify-rebuff 20 --no-table   # check rebuff_score (~20 min)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import random
import sys
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from difflib import SequenceMatcher
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from inferwatch.collectors.event import InferenceEvent
from inferwatch.detectors.auth_abuse import AUTH_FAILURE_STATUSES

HERE = Path(__file__).resolve().parent
# shared/ sits beside the repository (as in CI); INFERWATCH_DATASETS points elsewhere.
_SHARED = HERE.parents[1] / "shared" / "datasets"
DATA_DIR = Path(os.environ.get("INFERWATCH_DATASETS", str(_SHARED))) / "prompts"
ORDINARY = HERE / "data" / "ordinary_prompts.jsonl"
PATTERN_THRESHOLD = 0.5
REBUFF_THRESHOLD = 0.75
"""``RebuffSdk.detect_injection``'s default ``max_heuristic_score``; it flags a score above it."""
_REBUFF_MAX_MATCHED_WORDS = 5  # the constant inside detect_prompt_injection_using_heuristic_on_input

Flag = Callable[[str], bool]


# --------------------------------------------------------------------------- per-prompt baselines


@cache
def _rebuff_heuristics() -> ModuleType | None:
    """``rebuff/detect_pi_heuristics.py`` from the installed wheel, without the package ``__init__``."""
    spec = importlib.util.find_spec("rebuff")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "detect_pi_heuristics.py"
    file_spec = importlib.util.spec_from_file_location("_rebuff_detect_pi_heuristics", path)
    if file_spec is None or file_spec.loader is None or not path.is_file():
        return None
    module = importlib.util.module_from_spec(file_spec)
    file_spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class _RebuffKeywords:
    """Rebuff's keyword phrases, normalised as it does, with their words as ids, by word count."""

    phrases: tuple[str, ...]
    parts: tuple[tuple[str, ...], ...]
    vocabulary: dict[str, int]
    by_length: dict[int, tuple[np.ndarray, np.ndarray]]
    """word count -> (indices into ``phrases``, their word ids as an (m, length) matrix)"""


@cache
def _rebuff_keywords() -> _RebuffKeywords:
    heuristics = _rebuff_heuristics()
    assert heuristics is not None
    phrases = tuple(heuristics.normalize_string(k) for k in heuristics.generate_injection_keywords())
    parts = tuple(tuple(p.split(" ")) for p in phrases)
    vocabulary = {w: i for i, w in enumerate(sorted({w for ws in parts for w in ws}))}
    by_length: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for length in sorted({len(ws) for ws in parts}):
        index = np.array([i for i, ws in enumerate(parts) if len(ws) == length])
        by_length[length] = index, np.array([[vocabulary[w] for w in parts[i]] for i in index])
    return _RebuffKeywords(phrases, parts, vocabulary, by_length)


def _rebuff_best_windows(text: str) -> tuple[int, Iterator[tuple[str, tuple[str, ...], str]]]:
    """The highest number of keyword words in place (capped at 5) over all windows, and the
    (window, keyword words, phrase) triples that reach it, lazily."""
    heuristics = _rebuff_heuristics()
    if heuristics is None:
        raise RuntimeError("rebuff is not installed: pip install --no-deps rebuff==0.1.1")
    table = _rebuff_keywords()
    words = heuristics.normalize_string(text).split(" ")
    ids = np.array([table.vocabulary.get(w, -1) for w in words])
    in_place: list[tuple[int, np.ndarray, np.ndarray]] = []
    best = 0
    for length, (index, matrix) in table.by_length.items():
        if len(words) < length:
            continue
        windows = np.lib.stride_tricks.sliding_window_view(ids, length)
        for lo in range(0, len(index), 256):  # bounded memory on long prompts
            k = np.minimum((windows[None, :, :] == matrix[lo:lo + 256, None, :]).sum(axis=2),
                           _REBUFF_MAX_MATCHED_WORDS)
            top = int(k.max())
            if top > best:
                best, in_place = top, []
            if top == best and top > 0:
                rows, starts = np.nonzero(k == best)
                in_place.append((length, index[lo:lo + 256][rows], starts))
    triples = ((" ".join(words[s:s + length]), table.parts[i], table.phrases[i])
               for length, kws, starts in in_place
               for i, s in zip(kws.tolist(), starts.tolist(), strict=True))
    return best, triples


def _rebuff_adjusted(window: str, parts: tuple[str, ...], phrase: str) -> float:
    """One window's score, computed as the shipped loop does, with Rebuff's own function."""
    heuristics = _rebuff_heuristics()
    assert heuristics is not None
    word_score: float = heuristics.get_matched_words_score(window, list(parts), _REBUFF_MAX_MATCHED_WORDS)
    similarity = SequenceMatcher(None, window, phrase).ratio()
    return word_score - similarity * (1 / (_REBUFF_MAX_MATCHED_WORDS * 2))


def rebuff_score(text: str) -> float:
    """Rebuff's heuristic score of ``text``, equal to the shipped function's, computed faster.

    The shipped ``detect_prompt_injection_using_heuristic_on_input`` scores every window of the
    normalised text against every keyword phrase (~8,800) as ``word_score - ratio / 10``, where
    ``word_score`` is 0 with no keyword word in place and ``0.5 + 0.5 * min(k / 5, 1)`` with ``k``
    words in place, ``ratio`` is ``SequenceMatcher(None, window, phrase).ratio()`` in [0, 1], and
    keeps the maximum, from 0. Each step of ``k`` (up to 5) adds 0.1 to ``word_score`` and the
    ratio takes off at most 0.1, so the maximum is reached among the windows with the highest
    capped ``k``: those are found with numpy, then scored with Rebuff's own functions.
    """
    top, triples = _rebuff_best_windows(text)
    if top == 0:
        return 0.0
    return max(_rebuff_adjusted(*t) for t in triples)


def rebuff_flag(text: str, threshold: float = REBUFF_THRESHOLD) -> bool:
    """``rebuff_score(text) > threshold``, stopping as soon as the answer is known.

    With ``k`` capped words in place a window scores in ``[0.5 + 0.1 k - 0.1, 0.5 + 0.1 k]``, so
    at the default threshold 0.75 only ``k = 3`` needs similarity ratios.
    """
    top, triples = _rebuff_best_windows(text)
    if top == 0:
        return threshold < 0.0
    upper = 0.5 + 0.5 * min(top / _REBUFF_MAX_MATCHED_WORDS, 1)
    if upper <= threshold:
        return False
    if upper - 1 / (_REBUFF_MAX_MATCHED_WORDS * 2) > threshold:
        return True
    return any(_rebuff_adjusted(*t) > threshold for t in triples)


def rebuff_score_as_shipped(text: str) -> float:
    """The shipped heuristic itself (slow: for verification and its latency)."""
    heuristics = _rebuff_heuristics()
    if heuristics is None:
        raise RuntimeError("rebuff is not installed: pip install --no-deps rebuff==0.1.1")
    return float(heuristics.detect_prompt_injection_using_heuristic_on_input(text))


def _last_layer_flags() -> dict[str, Flag]:
    try:
        from last_layer import scan_prompt  # type: ignore[import-not-found, unused-ignore]
    except (ImportError, OSError):  # OSError: the bundled .so does not load on this platform
        return {}

    def any_marker(text: str) -> bool:
        return not scan_prompt(text).passed

    def exploit(text: str) -> bool:
        return "ExploitClassifier" in scan_prompt(text).markers

    return {"last_layer": any_marker, "last_layer-exploit": exploit}


def _pi_defense_flags() -> dict[str, Flag]:
    try:
        from prompt_injection_defense import (  # type: ignore[import-not-found, unused-ignore]
            detect_prompt_injection,
        )
    except ImportError:
        return {}

    def flag(text: str) -> bool:
        return bool(detect_prompt_injection(text)["label"] != "benign")

    return {"pi-defense": flag}


def available() -> dict[str, Flag]:
    """The per-prompt baselines that import here, as ``name -> flag(text)``; see the module doc."""
    flags: dict[str, Flag] = {}
    if _rebuff_heuristics() is not None:
        flags["rebuff-heuristic"] = rebuff_flag
    flags.update(_last_layer_flags())
    flags.update(_pi_defense_flags())
    return flags


# --------------------------------------------------------------------------- per-caller baseline


def fixed_threshold_rule(events: Iterable[InferenceEvent], *, window_s: float = 60, max_requests: int = 100,
                         max_tokens: int = 50_000, max_refusals: int = 20, sliding: bool = False) -> set[str]:
    """Principals a hand-written fixed-threshold alert would fire on: more than ``max_requests``
    requests, ``max_tokens`` tokens (input + output) or ``max_refusals`` refused requests (status
    401, 403 or 429) from one principal in one window of ``window_s`` seconds of event time.

    It mirrors ElastAlert 2's ``type: frequency`` rule with ``query_key: principal``,
    ``timeframe: window_s`` and ``num_events: max_requests + 1`` (ElastAlert's ``num_events`` is
    inclusive, "at least"), plus the same rule filtered to refused statuses for
    ``max_refusals``; the token threshold is what its ``type: metric_aggregation`` rule does with
    ``metric_agg_type: sum`` over the token fields and ``max_threshold: max_tokens`` (exceeded,
    not reached). Windows are fixed, aligned to multiples of ``window_s``, as the counts come out
    when the rule queries Elasticsearch once per window (``use_terms_query`` / ``use_count_query``,
    or ``bucket_interval`` for the metric rule); ``sliding=True`` instead counts the events less
    than ``window_s`` before each event, as ElastAlert's ``EventWindow`` does for a rule fed whole
    documents. Events without a principal are skipped: the rule keys on that field.

    >>> from inferwatch.testing import make_event
    >>> burst = [make_event(ts=55.0 + i * 0.05, principal="p1") for i in range(101)]
    >>> sorted(fixed_threshold_rule(burst)), sorted(fixed_threshold_rule(burst, sliding=True))
    ([], ['p1'])
    """
    for option, value in (("window_s", window_s), ("max_requests", max_requests),
                          ("max_tokens", max_tokens), ("max_refusals", max_refusals)):
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise ValueError(f"{option} must be a positive number, got {value!r}")
    limits = (max_requests, max_tokens, max_refusals)
    alerted: set[str] = set()
    if sliding:
        recent: dict[str, deque[tuple[float, int, int]]] = defaultdict(deque)
        totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
        for ev in sorted((e for e in events if e.principal is not None), key=lambda e: e.ts):
            p = ev.principal
            assert p is not None
            tokens, refused = _tokens(ev), int(ev.status in AUTH_FAILURE_STATUSES)
            recent[p].append((ev.ts, tokens, refused))
            total = totals[p]
            total[0], total[1], total[2] = total[0] + 1, total[1] + tokens, total[2] + refused
            while ev.ts - recent[p][0][0] >= window_s:
                _, old_tokens, old_refused = recent[p].popleft()
                total[0], total[1], total[2] = total[0] - 1, total[1] - old_tokens, total[2] - old_refused
            if any(n > limit for n, limit in zip(total, limits, strict=True)):
                alerted.add(p)
        return alerted
    counts: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0, 0])
    for ev in events:
        if ev.principal is None:
            continue
        count = counts[(ev.principal, math.floor(ev.ts / window_s))]
        count[0] += 1
        count[1] += _tokens(ev)
        count[2] += ev.status in AUTH_FAILURE_STATUSES
    for (principal, _), count in counts.items():
        if any(n > limit for n, limit in zip(count, limits, strict=True)):
            alerted.add(principal)
    return alerted


def _tokens(ev: InferenceEvent) -> int:
    return (ev.input.tokens or 0) + (ev.output.tokens or 0)


# --------------------------------------------------------------------------- the side-by-side table


@dataclass(frozen=True)
class Group:
    """Rows measured together: one source (and category) of attacks or of benign prompts."""

    name: str
    is_attack: bool
    texts: list[str]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def _groups(rows: Iterable[tuple[bool, str, str]]) -> list[Group]:
    """(is attack, group name, text) rows as groups, attack groups first, each kind by name (descending)."""
    by_key: dict[tuple[bool, str], list[str]] = defaultdict(list)
    for attack, name, text in rows:
        by_key[(attack, name)].append(text)
    return [Group(name, attack, texts) for (attack, name), texts in sorted(by_key.items(), reverse=True)]


def load_groups(data_dir: Path = DATA_DIR, ordinary: Path = ORDINARY) -> list[Group]:
    """Attack rows by source and category, benign rows by source, ordinary prompts by category."""
    rows = read_jsonl(data_dir / "attacks.jsonl") + read_jsonl(data_dir / "benign.jsonl")
    attack = [r["label"] == "attack" for r in rows]
    groups = _groups((a, f"{r['source']} / {r['category']}" if a else r["source"], r["text"])
                     for a, r in zip(attack, rows, strict=True))
    extra = read_jsonl(ordinary)
    by_category: dict[str, list[str]] = defaultdict(list)
    for r in extra:
        by_category[r["category"]].append(r["text"])
    groups += [Group(f"ordinary / {c}", False, t) for c, t in sorted(by_category.items())]
    return [*groups, Group("ordinary / all", False, [r["text"] for r in extra])]


def load_external_groups() -> list[Group]:
    """One group per source of the external rows (``benchmarks/external_prompts.py``): prompts from
    six public packages that neither inferwatch's patterns nor these scanners were tuned on here."""
    from external_prompts import load

    return _groups((row.label == "attack", row.source, row.text) for row in load())


def ours() -> Flag:
    """inferwatch's pattern families at the threshold the evaluation uses everywhere."""
    from inferwatch.detectors.prompt_injection import scan_text

    return lambda text: scan_text(text).score >= PATTERN_THRESHOLD


def measure(flag: Flag, texts: list[str]) -> tuple[list[bool], list[float]]:
    """The flag of each text and the seconds its call took."""
    flags, seconds = [], []
    for text in texts:
        start = time.perf_counter()
        flags.append(bool(flag(text)))
        seconds.append(time.perf_counter() - start)
    return flags, seconds


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile, as numpy's default (kept stdlib-only here)."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


SLOW = frozenset({"pi-defense"})
"""Baselines too slow for every row (seconds per prompt): measured on a sample of each group."""


def print_table(groups: list[Group], scanners: dict[str, Flag], slow_rows: int = 40) -> None:
    """Flag rate of each scanner on each group, then latency; ``SLOW`` scanners on at most
    ``slow_rows`` rows of each group (the same seeded sample every run; 0 = all rows)."""
    names = list(scanners)
    seconds: dict[str, list[float]] = {n: [] for n in names}
    ordinary: dict[str, list[bool]] = {n: [] for n in names}
    sampled = False
    print(f"{'group':<64} {'rows':>5} {'metric':>6} " + " ".join(f"{n[:18]:>18}" for n in names))
    for group in groups:
        cells = []
        for name in names:
            texts = group.texts
            if name in SLOW and 0 < slow_rows < len(texts) and group.name != "ordinary / all":
                texts = random.Random(group.name).sample(texts, slow_rows)
            if group.name == "ordinary / all":  # its rows were measured in their categories
                flags = ordinary[name]
            else:
                flags, took = measure(scanners[name], texts)
                seconds[name] += took
                if group.name.startswith("ordinary / "):
                    ordinary[name] += flags
            mark = "*" if len(flags) < len(group.texts) else " "
            sampled |= mark == "*"
            cells.append(f"{sum(flags) / len(flags):>17.1%}{mark}")
        metric = "recall" if group.is_attack else "FPR"
        print(f"{group.name[:64]:<64} {len(group.texts):>5} {metric:>6} " + " ".join(cells), flush=True)
    print(f"{'latency measured on (prompts)':<64} {'':>5} {'':>6} "
          + " ".join(f"{len(seconds[n]):>18}" for n in names))
    for q in (50, 95):
        print(f"{f'latency p{q} ms':<64} {'':>5} {'':>6} "
              + " ".join(f"{percentile(seconds[n], q) * 1e3:>18.3f}" for n in names))
    if sampled:
        print(f"* measured on a seeded random sample of {slow_rows} rows of the group")
    if "rebuff-heuristic" in names:
        print("rebuff-heuristic latency is rebuff_flag's, not the shipped function's (see --verify-rebuff)")


def verify_rebuff(n: int, groups: list[Group], max_chars: int) -> None:
    """Check :func:`rebuff_score` and :func:`rebuff_flag` against the shipped function on ``n``
    prompts of at most ``max_chars`` characters (the shipped function takes minutes on longer
    ones), and time it. Half are drawn from the prompts with 3 or more keyword words in place,
    where the decision at 0.75 is made, the rest at random."""
    rng = random.Random(0)
    pool = sorted({t for g in groups if g.name != "ordinary / all" for t in g.texts if len(t) <= max_chars})
    near = [t for t in pool if _rebuff_best_windows(t)[0] >= 3]
    sample = rng.sample(near, min(n // 2, len(near)))
    chosen = set(sample)
    rest = [t for t in pool if t not in chosen]
    sample += rng.sample(rest, min(n - len(sample), len(rest)))
    times, score_diffs, flag_diffs, flagged = [], 0, 0, 0
    for text in sample:
        start = time.perf_counter()
        shipped = rebuff_score_as_shipped(text)
        times.append(time.perf_counter() - start)
        score_diffs += shipped != rebuff_score(text)
        flag_diffs += (shipped > REBUFF_THRESHOLD) != rebuff_flag(text)
        flagged += shipped > REBUFF_THRESHOLD
    chars = sum(len(t) for t in sample)
    print(f"\nrebuff check on {len(sample)} prompts of <= {max_chars} chars ({len(chosen)} with >= 3 keyword "
          f"words in place, {flagged} flagged): {score_diffs} scores and {flag_diffs} flags differ from the "
          "shipped function")
    print(f"shipped function latency: p50 {percentile(times, 50):.1f} s, p95 {percentile(times, 95):.1f} s "
          f"per prompt, {sum(times) / chars * 1e3:.0f} s per 1,000 chars")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verify-rebuff", type=int, default=0, metavar="N",
                        help="compare rebuff_score with the shipped function on N prompts (slow)")
    parser.add_argument("--verify-max-chars", type=int, default=600,
                        help="only prompts up to this length in the verification (default 600)")
    parser.add_argument("--no-table", action="store_true", help="skip the table (with --verify-rebuff)")
    parser.add_argument("--external", action="store_true",
                        help="the external rows (benchmarks/external_prompts.py), not the shared datasets")
    parser.add_argument("--slow-rows", type=int, default=40, metavar="N",
                        help=f"rows per group for {', '.join(sorted(SLOW))} (default 40; 0 = all, hours)")
    args = parser.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    baselines = available()
    if not baselines:
        print("no baseline scanner is installed; see the module docstring", file=sys.stderr)
    groups = load_external_groups() if args.external else load_groups()
    scanners = {"inferwatch patterns": ours(), **baselines}
    for flag in scanners.values():  # warm up: imports, compiled patterns, keyword lists
        flag(groups[0].texts[0])
    if not args.no_table:
        print_table(groups, scanners, args.slow_rows)
    if args.verify_rebuff:
        verify_rebuff(args.verify_rebuff, groups, args.verify_max_chars)
    return 0


if __name__ == "__main__":
    sys.exit(main())
