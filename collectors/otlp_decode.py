"""OTLP/HTTP trace requests: bodies in, plain spans out; responses and error bodies back.

The OTLP/HTTP specification (``opentelemetry-proto``, ``docs/specification.md``) defines two
encodings of ``ExportTraceServiceRequest``:

* binary protobuf (``Content-Type: application/x-protobuf``), decoded with the generated classes
  of the ``opentelemetry-proto`` package (imported only when a protobuf request arrives);
* JSON (``Content-Type: application/json``), the protobuf JSON mapping with OTLP's deviations:
  trace and span ids are **hex** strings (not base64), enum values are integers (names are
  accepted too), keys are lowerCamelCase (the original snake_case names are accepted too),
  64-bit integers may be strings, and unknown fields are ignored. It is read here with the
  standard library's JSON parser: ``google.protobuf.json_format`` would take a hex id for
  base64 and silently decode it to the wrong bytes.

Either encoding may be compressed (``Content-Encoding: gzip``, or ``deflate``). Decompression is
bounded, so a small compressed body cannot expand past the size limit.

Both decoders produce :class:`OtlpSpan` objects: ids as lowercase hex, times in Unix
nanoseconds, attributes as Python values (``AnyValue`` arrays become lists, key-value lists
become dicts). A request that cannot be parsed raises :class:`OtlpDecodeError` (HTTP 400); a
span whose ids are missing or malformed is not an error for the whole request: it is counted
in :attr:`DecodedRequest.rejected` with the reason, and the server reports it as a partial
success, as the specification asks.

A small compressed body can hold hundreds of thousands of tiny spans, so the decoders do as
little as they can per span they will not use: ``max_spans`` caps how many spans of one request
are read at all (the rest are only counted, in :attr:`DecodedRequest.over_limit`), and a
:class:`SpanSelector` decides from the span's scope and a few named attributes whether a span
is worth decoding whole; the others are counted in :attr:`DecodedRequest.skipped` without their
attributes, events or resource being built.
"""

from __future__ import annotations

import base64
import collections
import importlib
import json
import re
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

Encoding = Literal["protobuf", "json"]

PROTOBUF: Final = "application/x-protobuf"
JSON: Final = "application/json"
# google.rpc.Code values used in error bodies
CODE_INVALID_ARGUMENT: Final = 3
CODE_RESOURCE_EXHAUSTED: Final = 8
CODE_INTERNAL: Final = 13
CODE_UNAVAILABLE: Final = 14

_HEX32: Final = re.compile(r"^[0-9a-fA-F]{32}$")
_HEX16: Final = re.compile(r"^[0-9a-fA-F]{16}$")
_SPAN_KINDS: Final = {
    "SPAN_KIND_UNSPECIFIED": 0,
    "SPAN_KIND_INTERNAL": 1,
    "SPAN_KIND_SERVER": 2,
    "SPAN_KIND_CLIENT": 3,
    "SPAN_KIND_PRODUCER": 4,
    "SPAN_KIND_CONSUMER": 5,
}
_STATUS_CODES: Final = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}
STATUS_ERROR: Final = 2
_MAX_REASONS: Final = 5


class OtlpDecodeError(ValueError):
    """A request body that is not an ``ExportTraceServiceRequest``; the message says why."""


class OtlpTooLarge(ValueError):
    """A request body (after decompression) over the size limit."""


class OtlpUnsupported(ValueError):
    """A content type or content encoding the receiver does not speak."""


@dataclass(slots=True)
class SpanEvent:
    """One event recorded on a span (``exception``, ``gen_ai.content.prompt``, …)."""

    name: str
    time_ns: int
    attributes: dict[str, Any]


@dataclass(slots=True)
class OtlpSpan:
    """One span, as plain Python values; ``resource`` is shared by the spans of one resource."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: int
    start_ns: int
    end_ns: int
    status_code: int
    status_message: str
    attributes: dict[str, Any]
    events: list[SpanEvent]
    resource: dict[str, Any]
    scope: str


@dataclass(slots=True)
class DecodedRequest:
    """The spans of one request; those rejected (with up to five reasons), skipped (by reason)
    and, past the ``max_spans`` limit, not read at all."""

    spans: list[OtlpSpan] = field(default_factory=list)
    rejected: int = 0
    reasons: list[str] = field(default_factory=list)
    skipped: collections.Counter[str] = field(default_factory=collections.Counter)
    over_limit: int = 0

    def reject(self, reason: str, count: int = 1) -> None:
        """Count ``count`` rejected spans and keep the reason (the first few distinct ones only)."""
        self.rejected += count
        if len(self.reasons) < _MAX_REASONS and reason not in self.reasons:
            self.reasons.append(reason)


@dataclass(frozen=True, slots=True)
class SpanSelector:
    """Which spans are worth decoding whole, judged before they are.

    ``skip(scope, attributes)`` gets the span's instrumentation scope name and only its
    attributes named in ``keys``, and returns the reason to skip it, or ``None`` to decode it.
    """

    keys: frozenset[str]
    skip: Callable[[str, Mapping[str, Any]], str | None]


def media_type(content_type: str | None) -> Encoding | None:
    """``"protobuf"`` or ``"json"`` for a ``Content-Type`` header value, else ``None``.

    >>> media_type("application/json; charset=utf-8"), media_type("application/x-protobuf")
    ('json', 'protobuf')
    >>> media_type("text/plain") is None
    True
    """
    essence = (content_type or "").split(";", 1)[0].strip().lower()
    if essence in (PROTOBUF, "application/protobuf"):
        return "protobuf"
    if essence == JSON:
        return "json"
    return None


def decompress(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    """``body`` without its ``Content-Encoding`` (gzip, deflate or identity), at most ``limit`` bytes.

    >>> import gzip
    >>> decompress(gzip.compress(b"abc"), "gzip", 10)
    b'abc'
    """
    encoding = (content_encoding or "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding in ("gzip", "x-gzip"):
        wbits = 16 + zlib.MAX_WBITS
    elif encoding == "deflate":
        wbits = zlib.MAX_WBITS if body[:1] == b"\x78" else -zlib.MAX_WBITS  # zlib-wrapped or raw
    else:
        raise OtlpUnsupported(
            f"Content-Encoding {content_encoding!r} is not supported: send gzip, deflate or no encoding"
        )
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise OtlpDecodeError(f"the body is not valid {encoding} data: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise OtlpTooLarge(f"the decompressed body is over the {limit}-byte limit")
    if not inflater.eof:
        raise OtlpDecodeError(f"the {encoding} body is truncated")
    return out


def decode_request(
    body: bytes, encoding: Encoding, *, max_spans: int | None = None, select: SpanSelector | None = None
) -> DecodedRequest:
    """The spans of an ``ExportTraceServiceRequest`` body (already decompressed).

    At most ``max_spans`` spans are read, in order; the rest are counted in ``over_limit``.
    With ``select``, the spans it skips are counted in ``skipped``, not decoded.
    """
    if max_spans is not None and max_spans < 1:
        raise ValueError("max_spans must be at least 1")
    if encoding == "protobuf":
        return _decode_protobuf(body, max_spans, select)
    return _decode_json(body, max_spans, select)


class _Budget:
    """How many more spans of the request may be read."""

    __slots__ = ("left",)

    def __init__(self, max_spans: int | None) -> None:
        self.left = max_spans

    def take(self, count: int, out: DecodedRequest) -> int:
        """How many of the next ``count`` spans to read; the others are counted as over the limit."""
        if self.left is None:
            return count
        taken = min(count, self.left)
        self.left -= taken
        out.over_limit += count - taken
        return taken


# --- protobuf -----------------------------------------------------------------------------


def _trace_service() -> Any:
    try:  # imported by name: the generated module's types need protobuf stubs mypy does not have
        return importlib.import_module("opentelemetry.proto.collector.trace.v1.trace_service_pb2")
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise OtlpUnsupported(
            "this receiver cannot read protobuf: install opentelemetry-proto "
            "(pip install 'inferwatch[otlp]') or send application/json"
        ) from exc


def _decode_protobuf(body: bytes, max_spans: int | None, select: SpanSelector | None) -> DecodedRequest:
    request = _trace_service().ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except Exception as exc:  # google.protobuf.message.DecodeError (or a RuntimeWarning-turned-error)
        raise OtlpDecodeError(f"the body is not a protobuf ExportTraceServiceRequest: {exc}") from None
    out = DecodedRequest()
    budget = _Budget(max_spans)
    for resource_spans in request.resource_spans:
        resource: dict[str, Any] | None = None  # decoded for the first span that needs it
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope.name
            spans = scope_spans.spans
            for index in range(budget.take(len(spans), out)):
                span = spans[index]
                trace_id, span_id = span.trace_id.hex(), span.span_id.hex()
                problem = _id_problem(trace_id, span_id, "bytes")
                if problem:
                    out.reject(f"span {span.name!r}: {problem}")
                    continue
                if select is not None:
                    head = {kv.key: _pb_value(kv.value) for kv in span.attributes if kv.key in select.keys}
                    reason = select.skip(scope, head)
                    if reason is not None:
                        out.skipped[reason] += 1
                        continue
                if resource is None:
                    resource = _pb_attributes(resource_spans.resource.attributes)
                parent = span.parent_span_id.hex() or None
                out.spans.append(
                    OtlpSpan(
                        trace_id=trace_id,
                        span_id=span_id,
                        parent_span_id=parent if parent and len(parent) == 16 else None,
                        name=span.name,
                        kind=int(span.kind),
                        start_ns=int(span.start_time_unix_nano),
                        end_ns=int(span.end_time_unix_nano),
                        status_code=int(span.status.code),
                        status_message=span.status.message,
                        attributes=_pb_attributes(span.attributes),
                        events=[
                            SpanEvent(e.name, int(e.time_unix_nano), _pb_attributes(e.attributes))
                            for e in span.events
                        ],
                        resource=resource,
                        scope=scope,
                    )
                )
    return out


def _pb_attributes(pairs: Iterable[Any]) -> dict[str, Any]:
    return {kv.key: _pb_value(kv.value) for kv in pairs}


def _pb_value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return int(value.int_value)
    if kind == "double_value":
        return float(value.double_value)
    if kind == "bool_value":
        return bool(value.bool_value)
    if kind == "array_value":
        return [_pb_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return _pb_attributes(value.kvlist_value.values)
    if kind == "bytes_value":
        return bytes(value.bytes_value)
    return None


def _id_problem(trace_id: str, span_id: str, form: str) -> str | None:
    if len(trace_id) != 32 or trace_id == "0" * 32:
        return f"traceId must be 16 non-zero {form}" if form == "bytes" else (
            "traceId must be 32 hex digits, not all zero (OTLP/JSON writes ids as hex, not base64)")
    if len(span_id) != 16 or span_id == "0" * 16:
        return f"spanId must be 8 non-zero {form}" if form == "bytes" else (
            "spanId must be 16 hex digits, not all zero (OTLP/JSON writes ids as hex, not base64)")
    return None


# --- JSON ---------------------------------------------------------------------------------


def _get(obj: Mapping[str, Any], camel: str, snake: str) -> Any:
    value = obj.get(camel)
    return obj.get(snake) if value is None else value


def _list(obj: Mapping[str, Any], camel: str, snake: str, where: str) -> list[Any]:
    value = _get(obj, camel, snake)
    if value is None:
        return []
    if not isinstance(value, list):
        raise OtlpDecodeError(f"{where}.{camel} must be an array, got {type(value).__name__}")
    return value


def _object(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise OtlpDecodeError(f"{where} must be an object, got {type(value).__name__}")
    return value


def _decode_json(body: bytes, max_spans: int | None, select: SpanSelector | None) -> DecodedRequest:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise OtlpDecodeError(f"the body is not valid JSON: {exc}") from None
    root = _object(document, "the request")
    out = DecodedRequest()
    budget = _Budget(max_spans)
    for r, resource_spans in enumerate(_list(root, "resourceSpans", "resource_spans", "request")):
        where = f"resourceSpans[{r}]"
        resource_spans = _object(resource_spans, where)
        resource_obj = _object(resource_spans.get("resource"), f"{where}.resource")
        resource = _json_attributes(resource_obj, f"{where}.resource")
        for s, scope_spans in enumerate(_list(resource_spans, "scopeSpans", "scope_spans", where)):
            swhere = f"{where}.scopeSpans[{s}]"
            scope_spans = _object(scope_spans, swhere)
            scope_name = _object(scope_spans.get("scope"), f"{swhere}.scope").get("name")
            scope = scope_name if isinstance(scope_name, str) else ""
            spans = _list(scope_spans, "spans", "spans", swhere)
            for i in range(budget.take(len(spans), out)):
                where_span = f"{swhere}.spans[{i}]"
                _json_span(_object(spans[i], where_span), where_span, resource, scope, out, select)
    return out


def _json_span(
    span: Mapping[str, Any], where: str, resource: dict[str, Any], scope: str, out: DecodedRequest,
    select: SpanSelector | None = None,
) -> None:
    name = span.get("name")
    name = name if isinstance(name, str) else ""
    trace_id = _get(span, "traceId", "trace_id")
    span_id = _get(span, "spanId", "span_id")
    if not (isinstance(trace_id, str) and _HEX32.match(trace_id)):
        trace_id = ""
    if not (isinstance(span_id, str) and _HEX16.match(span_id)):
        span_id = ""
    problem = _id_problem(trace_id.lower(), span_id.lower(), "hex")
    if problem:
        out.reject(f"{where} ({name!r}): {problem}")
        return
    if select is not None:
        try:
            reason = select.skip(scope, _json_head(span, where, select.keys))
        except OtlpDecodeError as exc:
            out.reject(str(exc))
            return
        if reason is not None:
            out.skipped[reason] += 1
            return
    parent = _get(span, "parentSpanId", "parent_span_id")
    status = _object(span.get("status"), f"{where}.status")
    try:
        kind = _enum(span.get("kind"), _SPAN_KINDS, f"{where}.kind")
        status_code = _enum(status.get("code"), _STATUS_CODES, f"{where}.status.code")
        start_ns = _int(_get(span, "startTimeUnixNano", "start_time_unix_nano"), f"{where}.startTimeUnixNano")
        end_ns = _int(_get(span, "endTimeUnixNano", "end_time_unix_nano"), f"{where}.endTimeUnixNano")
        attributes = _json_attributes(span, where)
        events = [_json_event(_object(e, f"{where}.events[{j}]"), f"{where}.events[{j}]")
                  for j, e in enumerate(_list(span, "events", "events", where))]
    except OtlpDecodeError as exc:
        out.reject(str(exc))
        return
    message = status.get("message")
    out.spans.append(
        OtlpSpan(
            trace_id=trace_id.lower(),
            span_id=span_id.lower(),
            parent_span_id=parent.lower() if isinstance(parent, str) and _HEX16.match(parent) else None,
            name=name,
            kind=kind,
            start_ns=start_ns,
            end_ns=end_ns,
            status_code=status_code,
            status_message=message if isinstance(message, str) else "",
            attributes=attributes,
            events=events,
            resource=resource,
            scope=scope,
        )
    )


def _json_event(event: Mapping[str, Any], where: str) -> SpanEvent:
    name = event.get("name")
    return SpanEvent(
        name if isinstance(name, str) else "",
        _int(_get(event, "timeUnixNano", "time_unix_nano"), f"{where}.timeUnixNano"),
        _json_attributes(event, where),
    )


def _json_head(span: Mapping[str, Any], where: str, keys: frozenset[str]) -> dict[str, Any]:
    """The span's attributes named in ``keys`` (the last of a repeated key wins, as in a full read)."""
    head: dict[str, Any] = {}
    for i, pair in enumerate(_list(span, "attributes", "attributes", where)):
        key = pair.get("key") if isinstance(pair, Mapping) else None
        if isinstance(key, str) and key in keys:
            head[key] = _json_value(pair.get("value"), f"{where}.attributes[{i}].value")
    return head


def _json_attributes(obj: Mapping[str, Any], where: str) -> dict[str, Any]:
    return _json_kvlist(_list(obj, "attributes", "attributes", where), f"{where}.attributes")


def _json_kvlist(pairs: list[Any], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for i, pair in enumerate(pairs):
        pair = _object(pair, f"{where}[{i}]")
        key = pair.get("key")
        if not isinstance(key, str):
            raise OtlpDecodeError(f"{where}[{i}].key must be a string")
        out[key] = _json_value(pair.get("value"), f"{where}[{i}].value")
    return out


def _json_value(value: Any, where: str) -> Any:
    if value is None:
        return None
    value = _object(value, where)
    for name, reader in _JSON_VALUE_READERS:
        if name in value:
            return reader(value[name], f"{where}.{name}")
    return None  # an empty AnyValue, or a kind added after this reader


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise OtlpDecodeError(f"{where} must be a string")
    return value


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise OtlpDecodeError(f"{where} must be true or false")
    return value


def _int(value: Any, where: str) -> int:
    """An int64 field: a JSON number or a decimal string (0 when absent)."""
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise OtlpDecodeError(f"{where} must be an integer or a decimal string, got {value!r}"[:200])


def _double(value: Any, where: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if value in ("NaN", "Infinity", "-Infinity"):
        return float(value)
    raise OtlpDecodeError(f"{where} must be a number")


def _bytes(value: Any, where: str) -> bytes:
    try:
        return base64.b64decode(_string(value, where), validate=True)
    except ValueError:
        raise OtlpDecodeError(f"{where} must be base64") from None


def _array(value: Any, where: str) -> list[Any]:
    values = _object(value, where).get("values") or []
    if not isinstance(values, list):
        raise OtlpDecodeError(f"{where}.values must be an array")
    return [_json_value(v, f"{where}.values[{i}]") for i, v in enumerate(values)]


def _kvlist(value: Any, where: str) -> dict[str, Any]:
    values = _object(value, where).get("values") or []
    if not isinstance(values, list):
        raise OtlpDecodeError(f"{where}.values must be an array")
    return _json_kvlist(values, f"{where}.values")


_JSON_VALUE_READERS: Final = (
    ("stringValue", _string),
    ("intValue", _int),
    ("doubleValue", _double),
    ("boolValue", _bool),
    ("arrayValue", _array),
    ("kvlistValue", _kvlist),
    ("bytesValue", _bytes),
    ("string_value", _string),
    ("int_value", _int),
    ("double_value", _double),
    ("bool_value", _bool),
    ("array_value", _array),
    ("kvlist_value", _kvlist),
    ("bytes_value", _bytes),
)


def _enum(value: Any, names: Mapping[str, int], where: str) -> int:
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value in names:
        return names[value]
    raise OtlpDecodeError(f"{where} must be an integer or one of {', '.join(names)}")


# --- responses ----------------------------------------------------------------------------


def encode_response(encoding: Encoding, rejected: int = 0, message: str = "") -> bytes:
    """An ``ExportTraceServiceResponse``; with ``partial_success`` when spans were rejected.

    >>> encode_response("json", 2, "bad ids")
    b'{"partialSuccess":{"rejectedSpans":"2","errorMessage":"bad ids"}}'
    >>> encode_response("json")
    b'{}'
    """
    if encoding == "json":
        if not rejected and not message:
            return b"{}"
        partial = {"rejectedSpans": str(rejected), "errorMessage": message}
        return json.dumps({"partialSuccess": partial}, separators=(",", ":")).encode()
    # Hand-encoded: field 1 partial_success {1: rejected_spans (varint), 2: error_message}.
    if not rejected and not message:
        return b""
    inner = b""
    if rejected:
        inner += b"\x08" + _varint(rejected)
    if message:
        raw = message.encode()
        inner += b"\x12" + _varint(len(raw)) + raw
    return b"\x0a" + _varint(len(inner)) + inner


def encode_status(encoding: Encoding, code: int, message: str) -> bytes:
    """A ``google.rpc.Status`` body for a 4xx/5xx response, in the request's encoding.

    >>> encode_status("json", 3, "bad")
    b'{"code":3,"message":"bad"}'
    >>> encode_status("protobuf", 3, "bad")
    b'\\x08\\x03\\x12\\x03bad'
    """
    if encoding == "json":
        return json.dumps({"code": code, "message": message}, separators=(",", ":")).encode()
    raw = message.encode()
    return b"\x08" + _varint(code) + b"\x12" + _varint(len(raw)) + raw


def _varint(number: int) -> bytes:
    out = bytearray()
    while True:
        byte = number & 0x7F
        number >>= 7
        if number:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
