"""What one call carried, as the integrations hand it to the agent, and the capture policy.

:class:`CallContent` is the common result of reading a call, whether from HTTP bodies
(:mod:`inferwatch.agent.extract`) or from a function's arguments and return value
(:mod:`inferwatch.agent.decorator`). It holds one :class:`Row` per event: a batched request
gives several rows that share the call's trace.

The capture mode (``agent.capture``) governs text only:

* ``none``: no prompt or completion text leaves the process; ``chars`` and ``tokens`` still do;
* ``redacted`` (default): text passes through :func:`inferwatch.collectors.redaction.redact`;
* ``full``: text is kept as it was.

Tabular ``features`` (and the application's string attributes) are kept in every mode, because
drift detection needs them, but their string values follow the mode (:func:`scalar_value`):
``full`` keeps them, ``redacted`` redacts them, and ``none`` keeps only category-like values
(:func:`is_category`: at most :data:`MAX_CATEGORY_CHARS` characters, no whitespace, then
redacted) and replaces any other string by :data:`TEXT_PLACEHOLDER`, so no free text leaves
the process under ``none``. Captured text is cut to
:data:`MAX_TEXT_CHARS` so an event stays well under the 1 MiB event limit (``chars`` still
counts all of it).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from inferwatch.collectors.event import EventInput, EventOutput, Scalar
from inferwatch.collectors.redaction import capture_text, redact, redact_cut
from inferwatch.collectors.settings import CaptureMode

MAX_FEATURES: Final = 512
MAX_FEATURE_CHARS: Final = 1024
MAX_CATEGORY_CHARS: Final = 32
"""Longest string value ``capture: none`` keeps (as a category) in features and attributes."""
TEXT_PLACEHOLDER: Final = "[TEXT]"
"""What ``capture: none`` ships in place of a string value that is not category-like."""


@dataclass(slots=True)
class Row:
    """One event's worth of a call: what went in and what came out."""

    input: EventInput = field(default_factory=EventInput)
    output: EventOutput = field(default_factory=EventOutput)


@dataclass(slots=True)
class CallContent:
    """Everything read from one call; ``rows`` empty means one event with no content."""

    operation: str | None = None
    request_model: str | None = None
    response_model: str | None = None
    max_tokens: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    finish_reasons: tuple[str, ...] = ()
    rows: list[Row] = field(default_factory=list)
    attributes: dict[str, Scalar] = field(default_factory=dict)




def text_input(text: str | None, mode: CaptureMode, *, chars: int | None = None) -> EventInput:
    """An :class:`EventInput` for ``text``; ``chars`` defaults to its length."""
    size = chars if chars is not None else (len(text) if text is not None else None)
    return EventInput(text=capture_text(text, mode), chars=size)


def text_output(
    text: str | None, mode: CaptureMode, *, chars: int | None = None, finish_reason: str | None = None
) -> EventOutput:
    """An :class:`EventOutput` for generated ``text``."""
    size = chars if chars is not None else (len(text) if text is not None else None)
    return EventOutput(text=capture_text(text, mode), chars=size, finish_reason=finish_reason)


def as_scalar(value: object) -> tuple[bool, Scalar]:
    """``(True, value)`` for a JSON scalar (NumPy scalars unwrapped), else ``(False, None)``.

    NaN and ±Infinity (which an event, being JSON, cannot carry) are ``None``: a missing value,
    which drift counts as one, rather than an event that fails to build and loses every other
    feature with it (an ML engineer's walk-through: one NaN emptied the whole event).

    >>> as_scalar(float("nan")), as_scalar(float("-inf")), as_scalar(0.5), as_scalar([1])
    ((True, None), (True, None), (True, 0.5), (False, None))
    """
    if value is None or isinstance(value, str | bool | int):
        return True, value
    if isinstance(value, float):
        return True, value if math.isfinite(value) else None
    item = getattr(value, "item", None)  # numpy.float64(0.5).item() -> 0.5, without importing numpy
    if callable(item) and getattr(value, "ndim", None) == 0:
        try:
            unwrapped = item()
        except Exception:
            return False, None
        if unwrapped is None or isinstance(unwrapped, str | bool | int | float):
            return as_scalar(unwrapped)
    return False, None


def is_category(value: str) -> bool:
    """Whether ``capture: none`` keeps a string value: at most 32 characters, no whitespace.

    >>> is_category("pro"), is_category("en-US"), is_category("a" * 33), is_category("I want out")
    (True, True, False, False)
    """
    return len(value) <= MAX_CATEGORY_CHARS and (not value or not any(c.isspace() for c in value))


def scalar_value(value: str, mode: CaptureMode) -> str:
    """A string feature, attribute or label as ``mode`` lets it leave the process.

    ``full``: cut to :data:`MAX_FEATURE_CHARS`; ``redacted``: redacted and cut; ``none``:
    redacted if :func:`is_category`, else :data:`TEXT_PLACEHOLDER` (no part of it is kept);
    a secret's placeholder then names its kind only, not which secret it was.

    >>> scalar_value("pro", CaptureMode.NONE), scalar_value("bob@example.com", CaptureMode.NONE)
    ('pro', '[EMAIL]')
    >>> scalar_value("AKIAZ3MXQ7R2LPWN4VYD", CaptureMode.NONE)
    '[SECRET:aws_access_key]'
    >>> scalar_value("call me on 0161 496 0000", CaptureMode.NONE)
    '[TEXT]'
    >>> scalar_value("call me on 0161 496 0000", CaptureMode.REDACTED)
    'call me on [PHONE]'
    """
    if mode is CaptureMode.FULL:
        return value[:MAX_FEATURE_CHARS]
    if mode is CaptureMode.NONE:
        return redact(value, identify=False) if is_category(value) else TEXT_PLACEHOLDER
    return redact_cut(value, MAX_FEATURE_CHARS)


def features_from(items: Iterable[tuple[object, object]], mode: CaptureMode) -> dict[str, Scalar]:
    """Features from name/value pairs: scalars only, strings as :func:`scalar_value` keeps them."""
    features: dict[str, Scalar] = {}
    for name, value in items:
        if len(features) >= MAX_FEATURES:
            break
        ok, scalar = as_scalar(value)
        if not ok:
            continue
        if isinstance(scalar, str):
            scalar = scalar_value(scalar, mode)
        features[str(name)] = scalar
    return features


def mapping_features(row: Mapping[object, object], mode: CaptureMode) -> dict[str, Scalar]:
    """Features from a mapping of name to value."""
    return features_from(row.items(), mode)
