"""OTLP request decoding (protobuf and JSON), decompression limits and the response bodies."""

from __future__ import annotations

import base64
import gzip
import json
import zlib
from typing import Any

import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from inferwatch.collectors.otlp_decode import (
    OtlpDecodeError,
    OtlpTooLarge,
    OtlpUnsupported,
    decode_request,
    decompress,
    encode_response,
    encode_status,
    media_type,
)

TRACE = "5b8efff798038103d269b633813fc60c"
SPAN = "eee19b7ec3c1b174"


def _protobuf_request() -> bytes:
    request = trace_service_pb2.ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    kv = resource_spans.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", "svc"
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = "lib"
    span = scope_spans.spans.add()
    span.trace_id, span.span_id, span.parent_span_id = bytes.fromhex(TRACE), bytes.fromhex(SPAN), b"\x01" * 8
    span.name, span.kind = "chat m", 3
    span.start_time_unix_nano, span.end_time_unix_nano = 10**18, 10**18 + 5
    span.status.code, span.status.message = 2, "boom"
    values: list[tuple[str, str, Any]] = [("s", "string_value", "x"), ("i", "int_value", -3),
                                          ("d", "double_value", 0.5), ("b", "bool_value", True),
                                          ("raw", "bytes_value", b"\x00\x01")]
    for key, field, value in values:
        kv = span.attributes.add()
        kv.key = key
        setattr(kv.value, field, value)
    kv = span.attributes.add()
    kv.key = "arr"
    kv.value.array_value.values.add().string_value = "a"
    kv.value.array_value.values.add().int_value = 2
    kv = span.attributes.add()
    kv.key = "map"
    inner = kv.value.kvlist_value.values.add()
    inner.key, inner.value.string_value = "k", "v"
    event = span.events.add()
    event.name, event.time_unix_nano = "exception", 7
    kv = event.attributes.add()
    kv.key, kv.value.string_value = "exception.type", "ValueError"
    return request.SerializeToString()


def test_protobuf_decoding_every_value_kind() -> None:
    decoded = decode_request(_protobuf_request(), "protobuf")
    assert decoded.rejected == 0
    [span] = decoded.spans
    assert (span.trace_id, span.span_id, span.parent_span_id) == (TRACE, SPAN, "01" * 8)
    assert (span.name, span.kind, span.start_ns, span.end_ns) == ("chat m", 3, 10**18, 10**18 + 5)
    assert (span.status_code, span.status_message) == (2, "boom")
    assert span.attributes == {"s": "x", "i": -3, "d": 0.5, "b": True, "raw": b"\x00\x01",
                               "arr": ["a", 2], "map": {"k": "v"}}
    assert span.resource == {"service.name": "svc"}
    assert span.scope == "lib"
    assert [(e.name, e.time_ns, e.attributes) for e in span.events] == [
        ("exception", 7, {"exception.type": "ValueError"})]


def test_json_decoding_accepts_spec_variants() -> None:
    document = {
        "resource_spans": [{  # snake_case keys, as protobuf JSON parsers also accept
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}],
                         "droppedAttributesCount": 0},
            "scopeSpans": [{"scope": {"name": "lib"}, "spans": [{
                "traceId": TRACE.upper(),  # hex is case-insensitive
                "span_id": SPAN,
                "name": "n",
                "kind": "SPAN_KIND_CLIENT",
                "startTimeUnixNano": 1000,
                "end_time_unix_nano": "2000",
                "status": {"code": "STATUS_CODE_ERROR", "message": "m"},
                "attributes": [
                    {"key": "i", "value": {"intValue": "-7"}},
                    {"key": "d", "value": {"doubleValue": "NaN"}},
                    {"key": "raw", "value": {"bytesValue": base64.b64encode(b"ab").decode()}},
                    {"key": "arr", "value": {"arrayValue": {"values": [{"boolValue": False}, {}]}}},
                    {"key": "map", "value": {"kvlistValue": {"values": [{"key": "k",
                                                                         "value": {"stringValue": "v"}}]}}},
                    {"key": "empty", "value": {}},
                ],
                "events": [{"timeUnixNano": "5", "name": "e", "attributes": []}],
                "futureField": {"ignored": True},
            }]}],
        }],
    }
    [span] = decode_request(json.dumps(document).encode(), "json").spans
    assert (span.trace_id, span.span_id, span.kind, span.status_code) == (TRACE, SPAN, 3, 2)
    assert (span.start_ns, span.end_ns) == (1000, 2000)
    assert span.attributes["i"] == -7
    assert span.attributes["d"] != span.attributes["d"]  # NaN
    assert span.attributes["raw"] == b"ab"
    assert span.attributes["arr"] == [False, None]
    assert span.attributes["map"] == {"k": "v"}
    assert span.attributes["empty"] is None
    assert span.events[0].time_ns == 5


def test_empty_requests() -> None:
    assert decode_request(b"{}", "json").spans == []
    assert decode_request(b"", "protobuf").spans == []
    assert decode_request(b'{"resourceSpans": []}', "json").spans == []


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"[]", "the request must be an object"),
        (b'{"resourceSpans": [1]}', "resourceSpans[0] must be an object"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": {}}]}]}', "spans must be an array"),
        (b'{"resourceSpans": [{"resource": {"attributes": [{"key": 1}]}}]}', "key must be a string"),
        (b"\xff", "not valid JSON"),
    ],
)
def test_json_structure_errors(body: bytes, words: str) -> None:
    with pytest.raises(OtlpDecodeError, match=words.replace("[", r"\[").replace("]", r"\]")):
        decode_request(body, "json")


def test_bad_span_fields_reject_that_span_only() -> None:
    good = {"traceId": TRACE, "spanId": SPAN, "name": "ok", "startTimeUnixNano": "1"}
    spans = [good,
             dict(good, startTimeUnixNano="soon"),
             dict(good, kind="SPAN_KIND_SIDEWAYS"),
             dict(good, attributes=[{"key": "x", "value": {"intValue": "1.5e3x"}}]),
             dict(good, traceId="abc")]
    document = {"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}
    decoded = decode_request(json.dumps(document).encode(), "json")
    assert [s.name for s in decoded.spans] == ["ok"]
    assert decoded.rejected == 4
    assert any("startTimeUnixNano" in r for r in decoded.reasons)
    assert any("traceId must be 32 hex digits" in r for r in decoded.reasons)


def test_garbage_protobuf() -> None:
    with pytest.raises(OtlpDecodeError, match="not a protobuf"):
        decode_request(b"\x0a\xff\xff\xff\xff\x0f", "protobuf")


def test_decompression() -> None:
    data = b"x" * 5000
    assert decompress(gzip.compress(data), "gzip", 5000) == data
    assert decompress(zlib.compress(data), "deflate", 5000) == data
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    assert decompress(raw.compress(data) + raw.flush(), "deflate", 5000) == data
    assert decompress(data, None, 10) == data  # identity: the caller limits the raw body
    with pytest.raises(OtlpTooLarge):
        decompress(gzip.compress(data), "gzip", 4999)
    with pytest.raises(OtlpDecodeError, match="truncated"):
        decompress(gzip.compress(data)[:-12], "gzip", 5000)
    with pytest.raises(OtlpUnsupported, match="zstd"):
        decompress(data, "zstd", 5000)


def test_media_types() -> None:
    assert media_type("application/x-protobuf") == "protobuf"
    assert media_type("Application/JSON; charset=UTF-8") == "json"
    assert media_type(None) is None
    assert media_type("application/grpc") is None


def test_response_bodies_decode_with_the_generated_classes() -> None:
    assert encode_response("protobuf") == trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
    body = encode_response("protobuf", 300, "é" * 200)
    parsed = trace_service_pb2.ExportTraceServiceResponse.FromString(body)
    assert parsed.partial_success.rejected_spans == 300
    assert parsed.partial_success.error_message == "é" * 200
    status = status_pb2.Status.FromString(encode_status("protobuf", 3, "bad body"))
    assert (status.code, status.message) == (3, "bad body")
    assert json.loads(encode_status("json", 14, "later")) == {"code": 14, "message": "later"}


@pytest.mark.parametrize(
    "name",
    ["inferwatch.collectors.otlp", "inferwatch.collectors.otlp_decode", "inferwatch.collectors.otlp_map"],
)
def test_docstring_examples(name: str) -> None:
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_the_receiver_does_not_depend_on_the_agent() -> None:
    """collectors is the bottom layer: the receiver imports neither the agent nor a web framework."""
    import subprocess
    import sys

    code = ("import sys, inferwatch.collectors.otlp; "
            "print(sorted(m for m in sys.modules if m.startswith(('inferwatch.agent', "
            "'inferwatch.detectors', 'starlette', 'uvicorn', 'google.protobuf', 'opentelemetry.proto'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"  # protobuf too is loaded only when a protobuf request arrives
