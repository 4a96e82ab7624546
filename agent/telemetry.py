"""OpenTelemetry wiring: one span per inference call, named and tagged per the GenAI conventions.

The agent uses the application's global tracer provider when it has set one, so inferwatch's
spans land in the same traces (and exporters) as the rest of the service. Otherwise it builds
a private SDK provider with a ``service.name`` resource and does *not* install it globally (a
library must not take that decision for the application); its spans still get real trace and
span ids, which the events carry so they can be joined with upstream traces (the caller's
``traceparent`` is honoured). Configure the agent after your own OpenTelemetry set-up.

A span is named ``"{operation} {model}"`` (``"chat gpt-4o"``, ``"predict churn"``) and carries,
where known: ``gen_ai.operation.name``, ``gen_ai.request.model``, ``gen_ai.response.model``,
``gen_ai.request.max_tokens``, ``gen_ai.usage.input_tokens``, ``gen_ai.usage.output_tokens``,
``gen_ai.response.finish_reasons``, ``http.response.status_code`` and ``error.type``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider as SDKTracerProvider
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TracerProvider
from opentelemetry.util.types import AttributeValue

INSTRUMENTATION_NAME = "inferwatch.agent"
_UNKNOWN_SERVICE = "unknown"


def resolve_tracer_provider(service: str, provider: TracerProvider | None = None) -> TracerProvider:
    """The provider to use: ``provider`` if given, the global one if the app set it, else a new one."""
    if provider is not None:
        return provider
    current = trace.get_tracer_provider()
    if not isinstance(current, trace.ProxyTracerProvider):
        return current
    # An unset service keeps OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES from the environment.
    attributes = {} if service == _UNKNOWN_SERVICE else {"service.name": service}
    return SDKTracerProvider(resource=Resource.create(attributes))


@dataclass(frozen=True, slots=True)
class CallFacts:
    """What the span of one call reports, known once the call is over."""

    operation: str
    request_model: str | None = None
    response_model: str | None = None
    max_tokens: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    finish_reasons: Sequence[str] = ()
    status: int | None = None
    error: str | None = None


def span_name(operation: str, model: str | None) -> str:
    """``"{operation} {model}"``, or just the operation when the model is unknown."""
    return f"{operation} {model}" if model else operation


def genai_attributes(facts: CallFacts) -> dict[str, AttributeValue]:
    """Span attributes for ``facts``, leaving out the ones that are unknown."""
    candidates: dict[str, AttributeValue | None] = {
        "gen_ai.operation.name": facts.operation,
        "gen_ai.request.model": facts.request_model,
        "gen_ai.response.model": facts.response_model,
        "gen_ai.request.max_tokens": facts.max_tokens,
        "gen_ai.usage.input_tokens": facts.input_tokens,
        "gen_ai.usage.output_tokens": facts.output_tokens,
        "gen_ai.response.finish_reasons": list(facts.finish_reasons) or None,
        "http.response.status_code": facts.status,
        "error.type": facts.error,
    }
    return {key: value for key, value in candidates.items() if value is not None}


def span_ids(span: Span) -> tuple[str | None, str | None]:
    """The span's trace id and span id as lowercase hex (32 and 16 digits), or ``None``s."""
    context = span.get_span_context()
    if not context.is_valid:
        return None, None
    return trace.format_trace_id(context.trace_id), trace.format_span_id(context.span_id)


class CallTracer:
    """Starts and finishes the span of each inference call."""

    def __init__(self, provider: TracerProvider, version: str | None = None) -> None:
        self._tracer = provider.get_tracer(INSTRUMENTATION_NAME, version)

    def start(
        self,
        operation: str,
        model: str | None,
        *,
        kind: SpanKind = SpanKind.INTERNAL,
        carrier: Mapping[str, str] | None = None,
        start_ns: int | None = None,
        attributes: Mapping[str, AttributeValue] | None = None,
    ) -> Span:
        """Start a span; ``carrier`` (request headers) supplies a remote parent if none is active."""
        return self._tracer.start_span(
            span_name(operation, model),
            context=_parent(carrier),
            kind=kind,
            start_time=start_ns,
            attributes=attributes,
        )

    def finish(
        self,
        span: Span,
        facts: CallFacts,
        end_ns: int | None = None,
        attributes: Mapping[str, AttributeValue] | None = None,
    ) -> tuple[str | None, str | None]:
        """Name and tag the span from ``facts`` (and ``attributes``), end it, return (trace id, span id)."""
        span.update_name(span_name(facts.operation, facts.request_model))
        tags = genai_attributes(facts)
        if attributes:
            tags = {**attributes, **tags}
        span.set_attributes(tags)
        if facts.error is not None or (facts.status or 0) >= 500:
            span.set_status(Status(StatusCode.ERROR, facts.error))
        span.end(end_time=end_ns)
        return span_ids(span)


def _parent(carrier: Mapping[str, str] | None) -> Context | None:
    # An active local span (e.g. from an outer instrumentation) already carries the caller's
    # trace; only without one does the incoming traceparent header decide the parent.
    if carrier is None or trace.get_current_span().get_span_context().is_valid:
        return None
    return propagate.extract(carrier)
