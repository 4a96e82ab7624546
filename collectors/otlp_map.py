"""OTLP spans to inference events: the OpenTelemetry GenAI and OpenInference conventions.

A span becomes an event when it describes a model call:

* **OTel GenAI** (``gen_ai.*``; OpenLLMetry, the official OpenTelemetry instrumentations and
  most vendors): ``gen_ai.operation.name``, ``gen_ai.request.model``, ``gen_ai.response.model``,
  ``gen_ai.usage.input_tokens``/``output_tokens`` (and the older ``prompt_tokens``/
  ``completion_tokens``), ``gen_ai.request.max_tokens``, ``gen_ai.response.finish_reasons``;
  content from ``gen_ai.input.messages``/``gen_ai.output.messages``/``gen_ai.system_instructions``
  (current conventions, on the span or on a ``gen_ai.client.inference.operation.details`` event),
  from ``gen_ai.prompt.{i}.role|content`` and ``gen_ai.completion.{i}.content|finish_reason``
  (OpenLLMetry's indexed attributes), or from the ``gen_ai.content.prompt``/``completion`` span
  events of older conventions. Agent, tool and workflow spans (``invoke_agent``,
  ``execute_tool``, …) are not model calls and are skipped.
* **OpenInference** (``openinference.span.kind`` ``LLM`` or ``EMBEDDING``; Arize Phoenix's
  instrumentations): ``llm.model_name``, ``llm.token_count.prompt``/``completion``,
  ``llm.invocation_parameters``, ``llm.input_messages.{i}.message.role|content|contents``,
  ``llm.output_messages.{i}.…``, ``llm.finish_reason``, ``llm.prompts``/``llm.choices``,
  ``embedding.embeddings.{i}.embedding.text``, and ``input.value``/``output.value`` when they
  are plain text. ``CHAIN``, ``TOOL``, ``AGENT``, ``RETRIEVER``… spans are skipped.

Spans with neither are skipped (the receiver counts them). Where a span carries both
conventions, GenAI attributes are read first.

What the event keeps follows the agent's rules (``docs/agent.md``): ``input.text`` is the last
user message plus any tool results after it, ``input.chars`` counts all message text including
the system prompt; ``output.text`` is the first choice, ``output.chars`` counts all choices;
the capture mode decides whether text is dropped, redacted (``collectors/redaction.py``) or kept.
The principal is the first configured attribute present (default ``enduser.id``, ``user.id``,
``gen_ai.user``, ``llm.user``, then the ``user`` key of ``llm.invocation_parameters`` or, on an
embeddings span, ``embedding.invocation_parameters``),
pseudonymised with the keyed HMAC the caller passes in; the raw value never reaches the event.
``status`` is ``http.response.status_code`` when the span has one; otherwise, for a span with
status ERROR, the code in an OpenAI client's ``Error code: NNN`` message or 500; else 200.
``error`` is a type name only: ``error.type``, else the ``exception`` event's ``exception.type``,
else ``"error"``; never the status message or ``exception.message``, which are
``str(exception)`` and can quote the prompt.

This module is standard library plus ``inferwatch.collectors``: the collectors package does not
depend on the agent; the capture rule it shares with the agent lives in
:func:`inferwatch.collectors.redaction.capture_text`, and the pseudonymiser is passed in
(``inferwatch collect otlp`` passes the agent's).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from inferwatch.collectors.event import EventInput, EventOutput, InferenceEvent, Scalar
from inferwatch.collectors.ids import uuid7
from inferwatch.collectors.otlp_decode import STATUS_ERROR, OtlpSpan, SpanSelector
from inferwatch.collectors.redaction import capture_text
from inferwatch.collectors.settings import CaptureMode
from inferwatch.collectors.turns import Turn as CallerTurn
from inferwatch.collectors.turns import caller_text, tool_results_only

Convention = Literal["gen_ai", "openinference"]

# enduser.id (OTel), user.id (OpenInference), the OpenAI request's `user` field as OpenLLMetry and
# OpenInference record it.
DEFAULT_PRINCIPAL_ATTRIBUTES: Final = (
    "enduser.id", "user.id", "gen_ai.user", "llm.user", "llm.invocation_parameters.user")
_PARAMETERS_PREFIX: Final = "llm.invocation_parameters."
# GenAI operations that are not a model call: an agent run spans many calls (each has its own
# span), a tool call none. Mapping them too would count the same tokens twice.
NON_INFERENCE_OPERATIONS: Final = frozenset(
    {"execute_tool", "create_agent", "invoke_agent", "invoke_workflow", "embed_agent"}
)
# An event's `error` is a type name (error.type, exception.type), never the status message.
MAX_ERROR_TYPE_CHARS: Final = 128
_OPENINFERENCE_MODEL_KINDS: Final = frozenset({"LLM", "EMBEDDING"})
# The agent's own spans (middleware, @monitor, proxy) carry gen_ai.* too, but their calls were
# already captured as events by the agent: mapping them again would count each call twice.
INFERWATCH_SCOPE: Final = "inferwatch.agent"
_GENAI_MARKERS: Final = (
    "gen_ai.operation.name",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "gen_ai.system",
    "gen_ai.provider.name",
    "llm.request.type",
)
_REQUEST_TYPES: Final = {"chat": "chat", "completion": "text_completion", "embedding": "embeddings"}
_DETAILS_EVENT: Final = "gen_ai.client.inference.operation.details"
_ERROR_CODE: Final = re.compile(r"\bError code: ([1-5]\d\d)\b")
_JSON_MIME: Final = "application/json"

Turn = CallerTurn
Choice = tuple[str | None, str | None]  # (text, finish_reason)


class SpanRejected(ValueError):
    """A span that claims to be a model call but cannot become an event (the message says why)."""


@dataclass(frozen=True, slots=True)
class MappingOptions:
    """How spans become events.

    ``pseudonymize`` turns a user id into the pseudonym (``p_`` + 24 hex) the agent would give
    it; without one, spans give no principal (raw user ids are never copied). ``service`` is the
    service for spans whose resource has no ``service.name``.
    """

    capture: CaptureMode = CaptureMode.REDACTED
    principal_attributes: tuple[str, ...] = DEFAULT_PRINCIPAL_ATTRIBUTES
    pseudonymize: Callable[[str], str] | None = None
    service: str = "unknown"


def convention(span: OtlpSpan) -> tuple[Convention | None, str | None]:
    """Which convention makes ``span`` a model call, or ``(None, reason)`` for a skipped span.

    Reasons: ``not_genai`` (neither convention), ``not_a_model_call`` (an agent, tool, chain or
    retriever span), ``inferwatch_agent`` (a span of inferwatch's own agent, whose event exists).
    """
    return convention_of(span.scope, span.attributes)


def convention_of(scope: str, attrs: Mapping[str, Any]) -> tuple[Convention | None, str | None]:
    """:func:`convention` from the scope name and the attributes: only those in
    :data:`CONVENTION_KEYS` are read, so the decoder can judge a span before building it."""
    if scope == INFERWATCH_SCOPE:
        return None, "inferwatch_agent"
    kind = attrs.get("openinference.span.kind")
    operation = attrs.get("gen_ai.operation.name")
    if isinstance(operation, str) and operation in NON_INFERENCE_OPERATIONS:
        return None, "not_a_model_call"
    if any(marker in attrs for marker in _GENAI_MARKERS):
        if isinstance(kind, str) and kind.upper() not in _OPENINFERENCE_MODEL_KINDS:
            return None, "not_a_model_call"
        return "gen_ai", None
    if isinstance(kind, str):
        if kind.upper() in _OPENINFERENCE_MODEL_KINDS:
            return "openinference", None
        return None, "not_a_model_call"
    return None, "not_genai"


CONVENTION_KEYS: Final = frozenset({"openinference.span.kind", "gen_ai.operation.name", *_GENAI_MARKERS})


def _skip_reason(scope: str, attrs: Mapping[str, Any]) -> str | None:
    return convention_of(scope, attrs)[1]


MODEL_CALLS: Final = SpanSelector(CONVENTION_KEYS, _skip_reason)
"""For :func:`~inferwatch.collectors.otlp_decode.decode_request`: decode only model-call spans."""


_UINT64 = 1 << 64
"""OTLP's times are fixed64 nanoseconds: a JSON number past it is no time (nor a datetime)."""


def span_to_event(span: OtlpSpan, conv: Convention, options: MappingOptions) -> InferenceEvent:
    """The event for a model-call span (without ``agent``: the receiver numbers the events)."""
    if span.start_ns <= 0:
        missing = ("no startTimeUnixNano" if span.start_ns == 0
                   else f"a negative startTimeUnixNano ({span.start_ns})")
        raise SpanRejected(f"span {span.span_id} ({span.name!r}) has {missing}")
    if span.start_ns >= _UINT64 or span.end_ns >= _UINT64 or span.end_ns < 0:
        raise SpanRejected(f"span {span.span_id} ({span.name!r}) has a time outside uint64 nanoseconds "
                           f"(startTimeUnixNano {span.start_ns}, endTimeUnixNano {span.end_ns})"[:300])
    attrs = _with_detail_events(span)
    turns, system_chars = _input_turns(attrs, span)
    choices, tool_calls = _choices(attrs, span)
    params = _invocation_parameters(attrs)
    operation = _operation(attrs, conv, turns)
    request_model = _first_str(attrs, "gen_ai.request.model", "llm.request.model_name", "llm.model_name",
                               "embedding.model_name") or _str(params.get("model"))
    response_model = _first_str(attrs, "gen_ai.response.model", "llm.response.model_name", "llm.model_name")
    input_tokens = _first_int(attrs, "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens",
                              "llm.token_count.prompt", "llm.usage.prompt_tokens")
    output_tokens = _first_int(attrs, "gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens",
                               "llm.token_count.completion", "llm.usage.completion_tokens")
    finish_reasons = _finish_reasons(attrs, choices)

    mode = options.capture
    if operation == "embeddings" or turns is None:
        texts = [turn.text for turn in turns or []]
        text = "\n\n".join(t for t in texts if t) or None
        chars = sum(len(t) for t in texts) + system_chars if texts else None
    else:
        text, chars = caller_text(turns)
        chars += system_chars
    first_text, first_reason = choices[0] if choices else (None, None)
    out_chars = sum(len(t) for t, _ in choices if t) if any(t for t, _ in choices) else None

    attributes: dict[str, Scalar] = {"source": "otlp", "convention": conv, "span_name": span.name}
    _put(attributes, "instrumentation", span.scope or None)
    _put(attributes, "provider", _first_str(attrs, "gen_ai.provider.name", "gen_ai.system", "llm.provider",
                                            "llm.system"))
    _put(attributes, "parent_span_id", span.parent_span_id)
    _put(attributes, "request_model", request_model)
    _put(attributes, "response_model", response_model)
    max_tokens = _first_int(attrs, "gen_ai.request.max_tokens", "gen_ai.request.max_completion_tokens")
    if max_tokens is None:
        max_tokens = next((v for k in ("max_tokens", "max_completion_tokens", "max_new_tokens")
                           if (v := _int(params.get(k))) is not None), None)
    _put(attributes, "max_tokens", max_tokens)
    temperature = _first_number(attrs, "gen_ai.request.temperature")
    if temperature is None:
        temperature = _number(params.get("temperature"))
    _put(attributes, "temperature", temperature)
    _put(attributes, "n", _first_int(attrs, "gen_ai.request.n", "gen_ai.request.choice.count")
         or _int(params.get("n")))
    stream = _first_bool(attrs, "gen_ai.is_streaming", "llm.is_streaming", "gen_ai.request.stream")
    _put(attributes, "stream", stream if stream is not None else _bool(params.get("stream")))
    if turns is not None and operation != "embeddings":
        attributes["messages"] = len(turns)
    _put(attributes, "tool_calls", tool_calls)

    status, error = _status(span, attrs)
    return InferenceEvent(
        id=uuid7(),
        time=datetime.fromtimestamp(span.start_ns / 1e9, UTC),
        duration_ms=max(0, span.end_ns - span.start_ns) / 1e6 if span.end_ns else 0.0,
        service=_str(span.resource.get("service.name")) or options.service,
        model=request_model or response_model,
        operation=operation,
        endpoint=_first_str(attrs, "http.route", "url.path"),
        principal=_principal(span, options),
        trace_id=span.trace_id,
        span_id=span.span_id,
        status=status,
        error=error,
        input=EventInput(text=capture_text(text, mode), chars=chars, tokens=input_tokens),
        output=EventOutput(text=capture_text(first_text, mode), chars=out_chars, tokens=output_tokens,
                           finish_reason=first_reason or (finish_reasons[0] if finish_reasons else None)),
        attributes=attributes,
    )




# --- what went in --------------------------------------------------------------------------




def _input_turns(attrs: Mapping[str, Any], span: OtlpSpan) -> tuple[list[Turn] | None, int]:
    """The prompt as (role, text) turns, or ``None`` when the span carries none; and system chars."""
    system_chars = sum(len(t) for t in _parts_texts(_json_list(attrs.get("gen_ai.system_instructions"))))
    messages = _json_list(attrs.get("gen_ai.input.messages"))
    if messages:
        return [_message_turn(m) for m in messages if isinstance(m, Mapping)], system_chars
    indexed = _indexed(attrs, "gen_ai.prompt.")
    if indexed:
        turns = [CallerTurn(_str(f.get("role")) or "user", _content_text(f.get("content"))) for f in indexed]
        return turns, system_chars
    indexed = _indexed(attrs, "llm.input_messages.")
    if indexed:
        turns = [CallerTurn(_str(f.get("message.role")) or "user", _openinference_text(f)) for f in indexed]
        return turns, system_chars
    legacy = _json_list(attrs.get("gen_ai.prompt")) or _event_list(
        span, "gen_ai.content.prompt", "gen_ai.prompt")
    if legacy:
        return [_message_turn(m) for m in legacy if isinstance(m, Mapping)], system_chars
    prompts = _openinference_list(attrs, "llm.prompts", "prompt.text")
    if prompts:
        return [CallerTurn("user", p) for p in prompts], system_chars
    embedded = [_str(f.get("embedding.text")) or "" for f in _indexed(attrs, "embedding.embeddings.")]
    if any(embedded):
        return [CallerTurn("user", t) for t in embedded], system_chars
    plain = _plain_value(attrs, "input")
    if plain is not None:
        return [CallerTurn("user", plain)], system_chars
    return None, system_chars


def _message_turn(message: Mapping[str, Any]) -> Turn:
    return CallerTurn(_str(message.get("role")) or "user", _message_text(message),
                      tool_results_only(message.get("content")))


def _message_text(message: Mapping[str, Any]) -> str:
    """Text of a message in either shape: GenAI ``parts`` or OpenAI-style ``content``."""
    parts = message.get("parts")
    if isinstance(parts, list):
        return "\n".join(_parts_texts(parts))
    return _content_text(message.get("content"))


def _parts_texts(parts: Iterable[Any]) -> list[str]:
    texts = []
    for part in parts:
        if isinstance(part, str):
            texts.append(part)
            continue
        if not isinstance(part, Mapping):
            continue
        kind = part.get("type")
        if kind in (None, "text", "input_text", "output_text"):
            text = part.get("content", part.get("text"))
            if isinstance(text, str):
                texts.append(text)
        elif kind == "tool_call_response":  # a tool's result: where indirect injection arrives
            texts.append(_as_text(part.get("response", part.get("result"))))
        elif kind == "tool_result":  # the same, Anthropic-style
            texts.append(_content_text(part.get("content")))
    return [t for t in texts if t]


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        # OpenLLMetry writes list-valued content (text parts) as a JSON string
        if content.startswith("[{") and content.endswith("}]"):
            try:
                parts = json.loads(content)
            except ValueError:
                return content
            if isinstance(parts, list) and all(isinstance(p, Mapping) and "type" in p for p in parts):
                return "\n".join(_parts_texts(parts))
        return content
    if isinstance(content, list):
        return "\n".join(_parts_texts(content))
    return ""


def _openinference_text(fields: Mapping[str, Any]) -> str:
    content = fields.get("message.content")
    if isinstance(content, str):
        return content
    parts = _indexed(fields, "message.contents.")
    return "\n".join(t for f in parts if (t := _str(f.get("message_content.text"))))


def _openinference_list(attrs: Mapping[str, Any], key: str, field: str) -> list[str]:
    """``llm.prompts`` / ``llm.choices``: a string list, or indexed ``{i}.prompt.text`` attributes."""
    value = attrs.get(key)
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return [t for f in _indexed(attrs, key + ".") if (t := _str(f.get(field))) is not None]


def _plain_value(attrs: Mapping[str, Any], which: str) -> str | None:
    """OpenInference ``input.value``/``output.value`` when it is text, not a JSON body."""
    value = attrs.get(f"{which}.value")
    mime = _str(attrs.get(f"{which}.mime_type")) or ""
    if isinstance(value, str) and value and not mime.startswith(_JSON_MIME):
        return value
    return None


# --- what came out -------------------------------------------------------------------------


def _choices(attrs: Mapping[str, Any], span: OtlpSpan) -> tuple[list[Choice], int | None]:
    """The choices as (text, finish reason), and the number of tool calls the first one made."""
    messages = _json_list(attrs.get("gen_ai.output.messages"))
    if messages:
        first = messages[0] if isinstance(messages[0], Mapping) else {}
        parts = first.get("parts")
        calls = sum(1 for p in parts if isinstance(p, Mapping) and p.get("type") == "tool_call") \
            if isinstance(parts, list) else 0
        if not calls and isinstance(first.get("tool_calls"), list):
            calls = len(first["tool_calls"])
        choices = [(_message_text(m) or None, _str(m.get("finish_reason")))
                   for m in messages if isinstance(m, Mapping)]
        return choices, calls or None
    indexed = _indexed(attrs, "gen_ai.completion.")
    if indexed:
        choices = [(_content_text(f.get("content")) or None, _str(f.get("finish_reason"))) for f in indexed]
        return choices, len(_indexed(indexed[0], "tool_calls.")) or None
    indexed = _indexed(attrs, "llm.output_messages.")
    if indexed:
        return [(_openinference_text(f) or None, None) for f in indexed], \
            len(_indexed(indexed[0], "message.tool_calls.")) or None
    legacy = _json_list(attrs.get("gen_ai.completion")) or _event_list(
        span, "gen_ai.content.completion", "gen_ai.completion")
    if legacy:
        return [_legacy_choice(c) for c in legacy if isinstance(c, Mapping)], None
    texts = _openinference_list(attrs, "llm.choices", "completion.text")
    if texts:
        return [(t or None, None) for t in texts], None
    plain = _plain_value(attrs, "output")
    return ([(plain, None)] if plain is not None else []), None


def _legacy_choice(choice: Mapping[str, Any]) -> Choice:
    message = choice.get("message")
    text = _message_text(message) if isinstance(message, Mapping) else _message_text(choice)
    return text or None, _str(choice.get("finish_reason"))


def _finish_reasons(attrs: Mapping[str, Any], choices: list[Choice]) -> list[str]:
    value = attrs.get("gen_ai.response.finish_reasons")
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    if isinstance(value, str):
        return [value]
    reasons = [r for _, r in choices if r]
    if reasons:
        return reasons
    single = _first_str(attrs, "llm.finish_reason", "gen_ai.response.finish_reason")
    return [single] if single else []


# --- the rest of the span ------------------------------------------------------------------


def _operation(attrs: Mapping[str, Any], conv: Convention, turns: list[Turn] | None) -> str:
    operation = _str(attrs.get("gen_ai.operation.name"))
    if operation:
        return operation
    request_type = _str(attrs.get("llm.request.type"))
    if request_type:
        return _REQUEST_TYPES.get(request_type, request_type)
    kind = _str(attrs.get("openinference.span.kind")) or ""
    if kind.upper() == "EMBEDDING":
        return "embeddings"
    if "llm.input_messages.0.message.role" in attrs or "gen_ai.input.messages" in attrs:
        return "chat"
    if turns is not None and any(turn.role != "user" for turn in turns):
        return "chat"
    return "text_completion" if _openinference_list(attrs, "llm.prompts", "prompt.text") else "chat"


def _status(span: OtlpSpan, attrs: Mapping[str, Any]) -> tuple[int, str | None]:
    http = _first_int(attrs, "http.response.status_code", "http.status_code")
    if span.status_code != STATUS_ERROR:
        error = _type_name(attrs.get("error.type")) if http is not None and http >= 400 else None
        return http if http is not None else 200, error
    exception = next((e.attributes for e in span.events if e.name == "exception"), {})
    # The message is read for an HTTP code only: it is str(exception), which can quote the
    # prompt, an e-mail address or a key, so it never reaches the event.
    message = _str(exception.get("exception.message")) or span.status_message
    if http is None and message:
        found = _ERROR_CODE.search(message)
        http = int(found.group(1)) if found else None
    error = _type_name(attrs.get("error.type")) or _type_name(exception.get("exception.type")) or "error"
    return http if http is not None else 500, error


def _type_name(value: Any) -> str | None:
    """``value`` if it reads as an error type name (``openai.RateLimitError``, ``timeout``,
    ``500``): a string of 1 to :data:`MAX_ERROR_TYPE_CHARS` characters without whitespace.

    >>> _type_name("openai.AuthenticationError"), _type_name("Prompt rejected for bob@example.com")
    ('openai.AuthenticationError', None)
    """
    text = _str(value)
    if not text or len(text) > MAX_ERROR_TYPE_CHARS or any(c.isspace() for c in text):
        return None
    return text


def _principal(span: OtlpSpan, options: MappingOptions) -> str | None:
    if options.pseudonymize is None:
        return None
    params: Mapping[str, Any] | None = None
    for name in options.principal_attributes:
        sources: tuple[Mapping[str, Any], ...] = (span.attributes, span.resource)
        if name.startswith(_PARAMETERS_PREFIX) and name not in span.attributes:
            params = _invocation_parameters(span.attributes) if params is None else params
            sources, name = (params,), name[len(_PARAMETERS_PREFIX):]
        for source in sources:
            value = source.get(name)
            if isinstance(value, str | int) and not isinstance(value, bool) and str(value).strip():
                return options.pseudonymize(str(value).strip())
    return None


def _with_detail_events(span: OtlpSpan) -> Mapping[str, Any]:
    """Span attributes, plus those of an inference-details event (the span's own win)."""
    details = [e.attributes for e in span.events if e.name == _DETAILS_EVENT]
    if not details:
        return span.attributes
    merged: dict[str, Any] = {}
    for attributes in details:
        merged.update(attributes)
    merged.update(span.attributes)
    return merged


def _invocation_parameters(attrs: Mapping[str, Any]) -> Mapping[str, Any]:
    """OpenInference's request parameters: ``llm.invocation_parameters``, or for an EMBEDDING
    span ``embedding.invocation_parameters`` (where the OpenAI request's ``user`` is)."""
    value = attrs.get("llm.invocation_parameters", attrs.get("embedding.invocation_parameters"))
    if isinstance(value, str) and value.startswith("{"):
        try:
            parsed = json.loads(value)
        except ValueError:
            return {}
        return parsed if isinstance(parsed, Mapping) else {}
    return value if isinstance(value, Mapping) else {}


def _event_list(span: OtlpSpan, event: str, attribute: str) -> list[Any]:
    for e in span.events:
        if e.name == event:
            return _json_list(e.attributes.get(attribute))
    return []


def _indexed(attrs: Mapping[str, Any], prefix: str) -> list[dict[str, Any]]:
    """``{prefix}{i}.{field}`` attributes as a list of field dicts, in index order."""
    found: dict[int, dict[str, Any]] = {}
    size = len(prefix)
    for key, value in attrs.items():
        if key.startswith(prefix):
            index, _, name = key[size:].partition(".")
            if name and index.isdigit():
                found.setdefault(int(index), {})[name] = value
    return [found[i] for i in sorted(found)]


def _json_list(value: Any) -> list[Any]:
    if isinstance(value, list):
        return value
    if isinstance(value, str) and value.startswith("["):
        try:
            parsed = json.loads(value)
        except ValueError:
            return []
        return parsed if isinstance(parsed, list) else []
    return []


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except ValueError:
        return str(value)


def _put(attributes: dict[str, Scalar], name: str, value: Scalar) -> None:
    if value is not None:
        attributes[name] = value


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value == value:  # not NaN
        return float(value) if abs(value) != float("inf") else None
    return None


def _bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _first_str(attrs: Mapping[str, Any], *names: str) -> str | None:
    return next((v for n in names if (v := _str(attrs.get(n))) is not None), None)


def _first_int(attrs: Mapping[str, Any], *names: str) -> int | None:
    return next((v for n in names if (v := _int(attrs.get(n))) is not None), None)


def _first_number(attrs: Mapping[str, Any], *names: str) -> float | None:
    return next((v for n in names if (v := _number(attrs.get(n))) is not None), None)


def _first_bool(attrs: Mapping[str, Any], *names: str) -> bool | None:
    return next((v for n in names if (v := _bool(attrs.get(n))) is not None), None)
