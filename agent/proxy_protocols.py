"""Which model-server protocol a proxied call spoke, and what its bodies say.

The sidecar proxy (:mod:`inferwatch.agent.proxy`) sees only HTTP. :func:`route_for` names the
protocol from the path, with the model name and version where the protocol puts them there:

========================  ==============================================================
protocol                  paths
========================  ==============================================================
``openai``                ``…/chat/completions``, ``…/completions``, ``…/embeddings``
``kserve_v2``             ``/v2/models/{name}[/versions/{v}]/infer`` (KServe v2, Triton)
``tf_serving``            ``/v1/models/{name}[/versions/{v}|/labels/{l}]:predict``
                          (also ``:classify``, ``:regress``; KServe v1 uses the same paths)
``torchserve``            ``/predictions/{name}[/{version}]``
``generic``               anything else (JSON bodies read as :mod:`~inferwatch.agent.extract` does)
========================  ==============================================================

:func:`extract_call` turns the bodies into :class:`~inferwatch.agent.content.CallContent`,
reusing :func:`~inferwatch.agent.extract.extract_http` for every protocol but KServe v2, whose
tensors (``{"name", "shape", "datatype", "data"}``) it reads itself: the first dimension of each
input tensor is the batch, one event per row; a tensor of width one gives a feature named after
the tensor, a wider one gives features ``"0"``, ``"1"``, … (or ``"{tensor}_{j}"`` when the
request has several tensors). Tensors of more than
:data:`~inferwatch.agent.content.MAX_FEATURES` values per row (images, embeddings) are not kept
as features. Output tensors give each row's ``label`` (a one-value output, preferring names such
as ``label``, ``class`` or ``predict``) and ``score`` (the top class of a probability output).

>>> route_for("/v2/models/iris/versions/3/infer")
Route(protocol='kserve_v2', endpoint='/v2/models/{name}/versions/{version}/infer', model='iris', version='3')
>>> route_for("/v1/chat/completions").protocol, route_for("/predictions/resnet").model
('openai', 'resnet')
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final
from urllib.parse import unquote

from inferwatch.agent.content import MAX_FEATURES, CallContent, as_scalar, features_from
from inferwatch.agent.extract import HttpExchange, extract_http, parse_json
from inferwatch.agent.tabular import FeatureRow, pair_rows, prediction, request_rows
from inferwatch.collectors.event import EventOutput, Scalar
from inferwatch.collectors.settings import CaptureMode

_KSERVE_V2: Final = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?/infer$")
_TF_SERVING: Final = re.compile(
    r"^/v1/models/([^/:]+)(?:/versions/([^/:]+)|/labels/([^/:]+))?:(predict|classify|regress)$"
)
_TORCHSERVE: Final = re.compile(r"^/predictions/([^/]+)(?:/([^/]+))?$")
_OPENAI_SUFFIXES: Final = ("/chat/completions", "/completions", "/embeddings")
_LABEL_HINTS: Final = ("label", "class", "predict", "output")
_SCORE_HINTS: Final = ("prob", "score", "confidence")


@dataclass(frozen=True, slots=True)
class Route:
    """What the path says: the protocol, the endpoint template, the model and its version."""

    protocol: str
    endpoint: str
    model: str | None = None
    version: str | None = None


def route_for(path: str) -> Route:
    """The protocol of a request to ``path`` (without its query string)."""
    if path.startswith("/v2/models/"):
        match = _KSERVE_V2.match(path)
        if match:
            version = match.group(2)
            endpoint = "/v2/models/{name}/versions/{version}/infer" if version else "/v2/models/{name}/infer"
            return Route("kserve_v2", endpoint, unquote(match.group(1)), _unquote(version))
    elif path.startswith("/v1/models/"):
        match = _TF_SERVING.match(path)
        if match:
            version, label, verb = match.group(2), match.group(3), match.group(4)
            middle = "/versions/{version}" if version else "/labels/{label}" if label else ""
            return Route("tf_serving", f"/v1/models/{{name}}{middle}:{verb}", unquote(match.group(1)),
                         _unquote(version or label))
    elif path.startswith("/predictions/"):
        match = _TORCHSERVE.match(path)
        if match:
            version = match.group(2)
            endpoint = "/predictions/{name}/{version}" if version else "/predictions/{name}"
            return Route("torchserve", endpoint, unquote(match.group(1)), _unquote(version))
    if path.endswith(_OPENAI_SUFFIXES):
        return Route("openai", path)
    return Route("generic", path)


def extract_call(route: Route, exchange: HttpExchange, mode: CaptureMode) -> CallContent:
    """The call's content, read the way its protocol lays out the bodies; never raises."""
    if route.protocol == "kserve_v2":
        content = _guarded(_kserve_v2, exchange, mode)
    elif route.protocol == "tf_serving":
        content = _guarded(_tf_serving, exchange, mode)
    else:
        content = extract_http(exchange, mode)
    if route.protocol in ("kserve_v2", "tf_serving", "torchserve"):
        content.operation = content.operation or "predict"
    content.attributes["protocol"] = route.protocol
    if route.version is not None:
        content.attributes["path_model_version"] = route.version
    return content


def _guarded(reader: Any, exchange: HttpExchange, mode: CaptureMode) -> CallContent:
    # sizes and truncation flags, the same as every other protocol's
    content = extract_http(replace(exchange, request_body=b"", response_body=b""), mode)
    try:
        request = None if exchange.request_bytes > exchange.limit else parse_json(exchange.request_body)
        response = None if exchange.response_bytes > exchange.limit else parse_json(exchange.response_body)
        read: CallContent = reader(request, response, mode)
    except Exception as exc:  # a surprising body costs the content, never the event
        content.attributes["extract_error"] = type(exc).__name__
        return content
    read.attributes.update(content.attributes)
    return read


def _kserve_v2(request: Any, response: Any, mode: CaptureMode) -> CallContent:
    inputs = tensor_rows(request.get("inputs") if isinstance(request, Mapping) else None, mode)
    outputs = tensor_outputs(response.get("outputs") if isinstance(response, Mapping) else None)
    content = CallContent(operation="predict", rows=pair_rows(inputs, outputs))
    if isinstance(response, Mapping):
        if isinstance(response.get("model_name"), str):
            content.response_model = response["model_name"]
        if isinstance(response.get("error"), str):
            content.attributes["upstream_error"] = response["error"][:256]
    return content


def _tf_serving(request: Any, response: Any, mode: CaptureMode) -> CallContent:
    if isinstance(request, Mapping) and isinstance(request.get("examples"), list):  # :classify, :regress
        request = {"instances": request["examples"]}
    inputs = request_rows(request, mode)
    outputs: list[EventOutput] | None = None
    if isinstance(response, Mapping):
        columns = response.get("outputs")
        if isinstance(columns, Mapping):  # the columnar ("outputs": {name: [per row]}) answer
            outputs = [prediction(row) for row in _column_rows(columns)]
        elif isinstance(response.get("predictions"), list):
            outputs = [prediction(item) for item in response["predictions"]]
        elif isinstance(columns, list):
            outputs = [prediction(item) for item in columns]
        if isinstance(response.get("error"), str):
            content = CallContent(operation="predict", rows=pair_rows(inputs, None))
            content.attributes["upstream_error"] = response["error"][:256]
            return content
    return CallContent(operation="predict", rows=pair_rows(inputs, outputs))


def _column_rows(columns: Mapping[str, Any]) -> list[dict[str, Any]]:
    lists = {name: value for name, value in columns.items() if isinstance(value, list)}
    if not lists or len({len(v) for v in lists.values()}) != 1:
        return []
    count = len(next(iter(lists.values())))
    return [{name: col[i] for name, col in lists.items()} for i in range(count)]


@dataclass(frozen=True, slots=True)
class _Tensor:
    name: str
    batch: int
    width: int
    values: list[Any]


def _tensors(items: Any) -> list[_Tensor]:
    if not isinstance(items, list):
        return []
    tensors = []
    for item in items:
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            continue
        shape = item.get("shape")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            continue
        batch = shape[0] if shape else 1
        width = math.prod(shape[1:]) if len(shape) > 1 else 1
        values = _flatten(item.get("data"), batch * width)
        if values is not None and len(values) == batch * width:
            tensors.append(_Tensor(item["name"], batch, width, values))
    return tensors


def _flatten(data: Any, expected: int) -> list[Any] | None:
    if not isinstance(data, list):
        return None
    if not any(isinstance(v, list) for v in data[:1]):
        return data
    flat: list[Any] = []
    stack: list[Any] = [iter(data)]
    while stack:
        for value in stack[-1]:
            if isinstance(value, list):
                stack.append(iter(value))
                break
            flat.append(value)
            if len(flat) > expected:
                return None
        else:
            stack.pop()
    return flat


def tensor_rows(items: Any, mode: CaptureMode) -> list[FeatureRow] | None:
    """Feature rows from KServe v2 input tensors, or ``None`` if there are none to read.

    >>> tensor_rows([{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}],
    ...             CaptureMode.REDACTED)
    [{'0': 1, '1': 2}, {'0': 3, '1': 4}]
    """
    tensors = [t for t in _tensors(items) if t.width <= MAX_FEATURES]
    if not tensors:
        return None
    batch = tensors[0].batch
    tensors = [t for t in tensors if t.batch == batch]
    several = len(tensors) > 1
    rows: list[FeatureRow] = []
    for i in range(batch):
        pairs: list[tuple[object, object]] = []
        for t in tensors:
            row = t.values[i * t.width : (i + 1) * t.width]
            if t.width == 1:
                pairs.append((t.name, row[0]))
            else:
                pairs.extend(((f"{t.name}_{j}" if several else str(j)), v) for j, v in enumerate(row))
        rows.append(features_from(pairs, mode))
    return rows


def tensor_outputs(items: Any) -> list[EventOutput] | None:
    """One output per row from KServe v2 output tensors (label and score), or ``None``.

    >>> out = tensor_outputs([
    ...     {"name": "predict", "shape": [1], "datatype": "INT64", "data": [2]},
    ...     {"name": "proba", "shape": [1, 3], "datatype": "FP32", "data": [0.1, 0.2, 0.7]}])
    >>> out[0].label, out[0].score
    (2, 0.7)
    """
    tensors = _tensors(items)
    if not tensors:
        return None
    batch = tensors[0].batch
    tensors = [t for t in tensors if t.batch == batch]
    scalars = sorted((t for t in tensors if t.width == 1), key=_label_rank)
    wide = [t for t in tensors if t.width > 1]
    outputs = []
    for i in range(batch):
        label: Scalar = None
        score: float | None = None
        for t in scalars:
            ok, value = as_scalar(t.values[i])
            if not ok:
                continue
            numeric = isinstance(value, int | float) and not isinstance(value, bool)
            if numeric and _hinted(t.name, _SCORE_HINTS):
                score = float(value) if score is None else score  # type: ignore[arg-type]
            elif label is None:
                label = value
        for t in wide:
            probs = prediction(t.values[i * t.width : (i + 1) * t.width])
            if probs.score is not None:
                score = probs.score if score is None else score
                label = probs.label if label is None else label
                break
        outputs.append(EventOutput(label=label, score=score))
    return outputs


def _label_rank(tensor: _Tensor) -> int:
    return 0 if _hinted(tensor.name, _LABEL_HINTS) and not _hinted(tensor.name, _SCORE_HINTS) else 1


def _hinted(name: str, hints: Sequence[str]) -> bool:
    lowered = name.lower()
    return any(h in lowered for h in hints)


def _unquote(value: str | None) -> str | None:
    return unquote(value) if value is not None else None
