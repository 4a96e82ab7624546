"""Which protocol a proxied path speaks, and how tensor bodies become rows."""

from __future__ import annotations

import json

import pytest

from inferwatch.agent.extract import HttpExchange
from inferwatch.agent.proxy import ProxyError, Upstream, parse_listen
from inferwatch.agent.proxy_protocols import Route, extract_call, route_for, tensor_outputs, tensor_rows
from inferwatch.collectors.settings import CaptureMode


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/v1/chat/completions", Route("openai", "/v1/chat/completions")),
        ("/deployments/gpt/chat/completions", Route("openai", "/deployments/gpt/chat/completions")),
        ("/v1/embeddings", Route("openai", "/v1/embeddings")),
        ("/v2/models/iris/infer", Route("kserve_v2", "/v2/models/{name}/infer", "iris")),
        ("/v2/models/my%20model/versions/2/infer",
         Route("kserve_v2", "/v2/models/{name}/versions/{version}/infer", "my model", "2")),
        ("/v1/models/churn:predict", Route("tf_serving", "/v1/models/{name}:predict", "churn")),
        ("/v1/models/churn/versions/7:classify",
         Route("tf_serving", "/v1/models/{name}/versions/{version}:classify", "churn", "7")),
        ("/v1/models/churn/labels/stable:predict",
         Route("tf_serving", "/v1/models/{name}/labels/{label}:predict", "churn", "stable")),
        ("/predictions/resnet", Route("torchserve", "/predictions/{name}", "resnet")),
        ("/predictions/resnet/2.0", Route("torchserve", "/predictions/{name}/{version}", "resnet", "2.0")),
        ("/v1/models", Route("generic", "/v1/models")),
        ("/v2/models/iris", Route("generic", "/v2/models/iris")),
        ("/score", Route("generic", "/score")),
    ],
)
def test_route_for(path: str, route: Route) -> None:
    assert route_for(path) == route


def test_tensor_rows_several_tensors_and_nested_data() -> None:
    rows = tensor_rows([
        {"name": "age", "shape": [2, 1], "datatype": "INT32", "data": [[41], [23]]},
        {"name": "emb", "shape": [2, 2], "datatype": "FP32", "data": [[0.1, 0.2], [0.3, 0.4]]},
        {"name": "bad", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3]},  # wrong size: skipped
    ], CaptureMode.REDACTED)
    assert rows == [{"age": 41, "emb_0": 0.1, "emb_1": 0.2}, {"age": 23, "emb_0": 0.3, "emb_1": 0.4}]


def test_wide_tensors_are_not_features_and_strings_are_redacted() -> None:
    image = {"name": "pixels", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": [0.0] * 3072}
    assert tensor_rows([image], CaptureMode.REDACTED) is None
    text = {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["mail bob@example.com"]}
    assert tensor_rows([text], CaptureMode.REDACTED) == [{"text": "mail [EMAIL]"}]
    assert tensor_rows([text], CaptureMode.FULL) == [{"text": "mail bob@example.com"}]


def test_tensor_outputs_label_and_score() -> None:
    outputs = tensor_outputs([
        {"name": "probabilities", "shape": [2, 3], "datatype": "FP32",
         "data": [0.1, 0.2, 0.7, 0.6, 0.3, 0.1]},
    ])
    assert outputs is not None
    assert [(o.label, o.score) for o in outputs] == [(2, 0.7), (0, 0.6)]
    outputs = tensor_outputs([
        {"name": "score", "shape": [1], "datatype": "FP32", "data": [0.42]},
        {"name": "class_label", "shape": [1], "datatype": "BYTES", "data": ["fraud"]},
    ])
    assert outputs is not None
    assert (outputs[0].label, outputs[0].score) == ("fraud", 0.42)


def _exchange(path: str, request: object, response: object, **options: object) -> HttpExchange:
    req, resp = json.dumps(request).encode(), json.dumps(response).encode()
    return HttpExchange(path=path, request_body=req, request_bytes=len(req), response_body=resp,
                        response_bytes=len(resp), response_content_type="application/json", **options)  # type: ignore[arg-type]


def test_tf_serving_columnar_inputs_and_outputs() -> None:
    exchange = _exchange("/v1/models/m:predict", {"inputs": {"a": [1, 2], "b": ["x", "y"]}},
                         {"outputs": {"label": ["no", "yes"], "probability": [0.2, 0.9]}})
    content = extract_call(route_for("/v1/models/m:predict"), exchange, CaptureMode.REDACTED)
    assert [r.input.features for r in content.rows] == [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]
    assert [(r.output.label, r.output.score) for r in content.rows] == [("no", 0.2), ("yes", 0.9)]
    assert content.operation == "predict"


def test_unreadable_kserve_body_still_gives_sizes() -> None:
    exchange = _exchange("/v2/models/m/infer", {"inputs": "not tensors"}, {"outputs": 3})
    content = extract_call(route_for("/v2/models/m/infer"), exchange, CaptureMode.REDACTED)
    assert content.rows == []
    assert content.attributes["request_bytes"] == exchange.request_bytes
    assert content.attributes["protocol"] == "kserve_v2"


def test_oversized_kserve_body_is_not_parsed() -> None:
    exchange = _exchange("/v2/models/m/infer", {"inputs": []}, {}, limit=4)
    content = extract_call(route_for("/v2/models/m/infer"), exchange, CaptureMode.REDACTED)
    assert content.attributes["request_truncated"] is True


def test_upstream_and_listen_parsing() -> None:
    upstream = Upstream.parse("http://127.0.0.1:8000/base/")
    assert (upstream.host, upstream.port, upstream.base_path, upstream.host_header) == (
        "127.0.0.1", 8000, "/base", b"127.0.0.1:8000")
    assert Upstream.parse("https://model.internal").port == 443
    assert Upstream.parse("http://[::1]:9000").host_header == b"[::1]:9000"
    for bad in ("ftp://x", "127.0.0.1:8000", "http://x:8000/?q=1", "http://user:pw@x"):
        with pytest.raises(ProxyError):
            Upstream.parse(bad)
    assert parse_listen("0.0.0.0:8080") == ("0.0.0.0", 8080)
    assert parse_listen(":8080") == ("0.0.0.0", 8080)
    assert parse_listen("[::1]:8080") == ("::1", 8080)
    with pytest.raises(ProxyError):
        parse_listen("8080")


@pytest.mark.parametrize("name", ["inferwatch.agent.proxy_protocols", "inferwatch.agent.proxy_metrics",
                                  "inferwatch.agent.proxy_record"])
def test_docstring_examples(name: str) -> None:
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name))
    assert result.failed == 0
    assert result.attempted > 0
