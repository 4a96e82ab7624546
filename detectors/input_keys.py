"""What an input counts as, for counting distinct inputs: a normalised key and its template.

Two requests carry the same input when their prompt texts are equal once case-folded with
whitespace collapsed, or, with no text, when their tabular features are equal. The *template*
of a text masks every word holding a digit, so ``customer 1001`` and ``customer 1002`` share
one: many distinct inputs over few templates is a walk over ids or numbers. Keys are hashed with
:func:`inferwatch.detectors.hyperloglog.hash64` by the detectors that count them.

>>> input_key(EventInput(text="Tell me about  Customer 1001"))
('tell me about customer 1001', 'tell me about customer #')
"""

from __future__ import annotations

import re
from array import array

from inferwatch.collectors.event import EventInput, Scalar

# A word holding an ASCII digit, matched from its start (possessive, so nothing backtracks): ASCII
# classes run several times faster than Unicode ones, and ids are ASCII.
_NUMBERED = re.compile(r"(?a)\b[^\W\d]*+\d\w*")


def normalise_text(text: str, max_chars: int = 4000) -> str:
    """Prompt text as it is counted: case-folded, whitespace collapsed; long texts by head and tail.

    >>> normalise_text("  Tell me about\\tCustomer  1001 ")
    'tell me about customer 1001'
    """
    if len(text) > max_chars:
        half = max_chars // 2
        text = f"{text[:half]} \x00{len(text)} {text[-half:]}"
    return " ".join(text.casefold().split())


def template_of(normalised: str) -> str:
    """The input with every word holding an ASCII digit masked, so enumerated ids share a template.

    >>> template_of("tell me about customer 1001, order a7f3-22")
    'tell me about customer #, order #-#'
    """
    return _NUMBERED.sub("#", normalised)


def input_key(part: EventInput, max_chars: int = 4000) -> tuple[str | bytes, str | None] | None:
    """``(what is hashed, its template)`` for an input; tabular inputs have no template; ``None``
    when the event carries neither text nor features.

    >>> input_key(EventInput(text="Order  A17")), input_key(EventInput())
    (('order a17', 'order #'), None)
    >>> tabular = input_key(EventInput(features={"b": 2, "a": 1.5}))
    >>> tabular == input_key(EventInput(features={"a": 1.5, "b": 2.0})), tabular[1]
    (True, None)
    """
    if part.text is not None:
        normalised = normalise_text(part.text, max_chars)
        return normalised, template_of(normalised)
    if part.features:
        return features_key(part.features), None
    return None


def features_key(features: dict[str, Scalar]) -> bytes:
    """Tabular features as hashed: names in order, then the values packed as doubles when they are
    all numbers (formatting floats costs several times more), else their ``repr``. A leading
    0xFF byte, which UTF-8 never produces, keeps them apart from texts."""
    names = sorted(features)
    values = [features[name] for name in names]
    try:
        packed = array("d", values).tobytes()  # type: ignore[type-var]  # non-numbers raise
    except (TypeError, OverflowError):
        packed = repr(values).encode("utf-8", "surrogatepass")
    return b"\xff" + "\x1f".join(names).encode("utf-8", "surrogatepass") + b"\x00" + packed
