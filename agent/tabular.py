"""Features and predictions of tabular models, from JSON bodies or Python values.

Requests (one row unless noted):

* a flat object of scalars: ``{"age": 41, "plan": "pro"}``;
* ``{"features": {...}}`` or ``{"inputs": {...}}``; a list of scalars there gives features
  named ``"0"``, ``"1"``, …; a list of rows there, or a dict of equal-length columns, is a batch;
* batches: ``{"instances": [...]}`` (TF Serving, KServe v1), ``{"dataframe_records": [...]}``
  and ``{"dataframe_split": {"columns": [...], "data": [[...]]}}`` (MLflow), or a top-level
  list of rows.

Responses: ``{"label"|"prediction"|"class": …, "score"|"probability"|"confidence": …}``, a bare
scalar, a list of class probabilities, or a batch of those under ``predictions``, ``outputs``,
``results`` or as a top-level list.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from inferwatch.agent.content import Row, as_scalar, features_from, mapping_features
from inferwatch.collectors.event import EventInput, EventOutput, Scalar
from inferwatch.collectors.settings import CaptureMode

_ROW_KEYS: Final = ("features", "inputs")
_BATCH_KEYS: Final = ("instances", "dataframe_records")
_OUTPUT_BATCH_KEYS: Final = ("predictions", "outputs", "results")
_LABEL_KEYS: Final = ("label", "prediction", "predicted_label", "class", "predicted_class")
_SCORE_KEYS: Final = ("score", "probability", "confidence", "probabilities", "scores", "prob")

FeatureRow = dict[str, Scalar]


def request_rows(body: Any, mode: CaptureMode) -> list[FeatureRow] | None:
    """Feature rows of a tabular request body, or ``None`` if it does not look tabular."""
    if isinstance(body, list):
        return _rows(body, mode)
    if not isinstance(body, Mapping):
        return None
    for key in _BATCH_KEYS:
        if isinstance(body.get(key), list):
            return _rows(body[key], mode)
    split = body.get("dataframe_split")
    if isinstance(split, Mapping):
        return _split_rows(split, mode)
    for key in _ROW_KEYS:
        value = body.get(key)
        if isinstance(value, Mapping):
            return _columns(value, mode) or [mapping_features(value, mode)]
        if isinstance(value, list):
            return _rows(value, mode) if value and _is_row(value[0]) else [_indexed(value, mode)]
    flat = mapping_features(body, mode)
    return [flat] if flat else None


def row_features(value: Any, mode: CaptureMode) -> FeatureRow:
    """Features of one row: a mapping by name, a sequence by position, a scalar as ``"0"``."""
    if isinstance(value, Mapping):
        return mapping_features(value, mode)
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return _indexed(value, mode)
    return features_from([("0", value)], mode)


def response_outputs(body: Any) -> list[EventOutput] | None:
    """One output per prediction in a response body, or ``None`` if none is recognised."""
    if isinstance(body, list):
        return [prediction(item) for item in body]
    if isinstance(body, Mapping):
        for key in _OUTPUT_BATCH_KEYS:
            if isinstance(body.get(key), list):
                return [prediction(item) for item in body[key]]
    output = prediction(body)
    return [output] if output.label is not None or output.score is not None else None


def prediction(value: Any) -> EventOutput:
    """The label and score of one prediction (a scalar, a mapping, or class probabilities).

    >>> prediction({"label": "churn", "probability": 0.83}).score
    0.83
    >>> prediction([0.1, 0.7, 0.2]).label
    1
    """
    ok, scalar = as_scalar(value)
    if ok:
        return EventOutput(label=scalar)
    if isinstance(value, Mapping):
        return _mapping_prediction(value)
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return _probabilities(value)
    return EventOutput()


def pair_rows(inputs: list[FeatureRow] | None, outputs: list[EventOutput] | None) -> list[Row]:
    """Rows pairing inputs with outputs by position; outputs are dropped if the counts differ."""
    count = len(inputs) if inputs else len(outputs or [])
    matched = outputs is not None and len(outputs) == count
    rows = []
    for i in range(count):
        features = inputs[i] if inputs else None
        rows.append(
            Row(
                input=EventInput(features=features or None),
                output=outputs[i] if matched and outputs is not None else EventOutput(),
            )
        )
    return rows


def _is_row(value: Any) -> bool:
    return isinstance(value, Mapping) or (isinstance(value, Sequence) and not isinstance(value, str | bytes))


def _rows(items: Sequence[Any], mode: CaptureMode) -> list[FeatureRow]:
    return [row_features(item, mode) for item in items]


def _indexed(values: Sequence[Any], mode: CaptureMode) -> FeatureRow:
    return features_from(((str(i), v) for i, v in enumerate(values)), mode)


def _columns(columns: Mapping[Any, Any], mode: CaptureMode) -> list[FeatureRow] | None:
    # {"inputs": {"age": [41, 52], "plan": ["pro", "free"]}} is two rows, column by column.
    lists = [v for v in columns.values() if isinstance(v, list)]
    if not lists or len(lists) != len(columns) or len({len(v) for v in lists}) != 1:
        return None
    return [
        features_from(((name, col[i]) for name, col in columns.items()), mode) for i in range(len(lists[0]))
    ]


def _split_rows(split: Mapping[str, Any], mode: CaptureMode) -> list[FeatureRow] | None:
    columns, data = split.get("columns"), split.get("data")
    if not isinstance(data, list):
        return None
    if not isinstance(columns, list):
        return _rows(data, mode)
    return [features_from(zip(columns, row, strict=False), mode) for row in data if isinstance(row, list)]


def _mapping_prediction(value: Mapping[str, Any]) -> EventOutput:
    label: Scalar = None
    for key in _LABEL_KEYS:
        ok, scalar = as_scalar(value.get(key))
        if ok and scalar is not None:
            label = scalar
            break
    for key in _SCORE_KEYS:
        if key not in value:
            continue
        ok, scalar = as_scalar(value[key])
        if ok and isinstance(scalar, int | float) and not isinstance(scalar, bool):
            return EventOutput(label=label, score=float(scalar))
        probs = _probabilities(value[key]) if not ok else EventOutput()
        if probs.score is not None:
            return EventOutput(label=label if label is not None else probs.label, score=probs.score)
    return EventOutput(label=label)


def _probabilities(values: Any) -> EventOutput:
    # Class probabilities (a list of two or more numbers in [0, 1], or a class -> probability
    # mapping): the top class and its probability. Other lists (multi-output regression) say
    # nothing about a label.
    pairs = list(values.items()) if isinstance(values, Mapping) else list(enumerate(values))
    numbers = [(k, float(v)) for k, v in pairs if isinstance(v, int | float) and not isinstance(v, bool)]
    if len(numbers) < 2 or len(numbers) != len(pairs) or not all(0.0 <= v <= 1.0 for _, v in numbers):
        return EventOutput()
    best_label, best_score = max(numbers, key=lambda kv: kv[1])
    ok, label = as_scalar(best_label)
    return EventOutput(label=label if ok else None, score=best_score)
