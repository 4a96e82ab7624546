"""Lengths of time as people write them: ``30s``, ``5m``, ``1h30m``, ``1.5h``, ``90``.

One grammar for the settings (``window_s: 30s``), the command line (``--since 2h``,
``--window 5m``) and the alerting file (Prometheus durations, as Alertmanager reads them).
"""

from __future__ import annotations

import math
import re
from datetime import timedelta

__all__ = ["format_duration", "parse_duration"]

_UNITS = (("y", 365 * 86_400_000), ("w", 7 * 86_400_000), ("d", 86_400_000), ("h", 3_600_000),
          ("m", 60_000), ("s", 1000), ("ms", 1))
# Units from largest to smallest, each at most once (Prometheus's form): 1h30m, 1d12h, 250ms.
_COMPOUND = re.compile("".join(rf"(?:(\d+){unit})?" for unit, _ in _UNITS))
# One decimal number and one unit: 1.5h, 0.5s.
_FRACTION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(y|w|d|h|ms|m|s)")
_MILLIS = dict(_UNITS)


def parse_duration(value: object, *, unitless: bool = True, fractions: bool = True) -> float:
    """A length of time as seconds: units from largest to smallest (``30s``, ``5m``, ``4h``,
    ``1d``, ``1h30m``, ``250ms``; units y w d h m s ms), a number of seconds, or a ``timedelta``.

    ``unitless`` also takes a number written as text (``"90"``, as environment variables give
    it); ``fractions`` takes one decimal number with a unit (``1.5h``). Alertmanager's files take
    neither, so the alerting file turns both off. Negative, infinite and empty values are refused
    with the accepted forms.

    >>> parse_duration("1h30m"), parse_duration(90), parse_duration("1m500ms"), parse_duration("1.5h")
    (5400.0, 90.0, 60.5, 5400.0)
    >>> parse_duration("90"), parse_duration(" 2d ")
    (90.0, 172800.0)
    """
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, int | float) and not isinstance(value, bool):
        if math.isfinite(value) and value >= 0:
            return float(value)
    elif isinstance(value, str):
        text = value.strip()
        if text == "0":
            return 0.0
        found = _COMPOUND.fullmatch(text)
        single = _FRACTION.fullmatch(text) if fractions and found is None else None
        try:
            if text and found is not None:
                counts = zip(found.groups(), _UNITS, strict=True)
                millis = sum(int(count) * size for count, (_, size) in counts if count)
                seconds = millis / 1000
            elif single is not None:
                seconds = float(single.group(1)) * _MILLIS[single.group(2)] / 1000
            else:
                seconds = math.nan
        except OverflowError:
            seconds = math.inf
        if math.isfinite(seconds):
            return seconds
        if unitless:
            try:
                seconds = float(text)
            except ValueError:
                pass
            else:
                if math.isfinite(seconds) and seconds >= 0:
                    return seconds
    forms = "a number of seconds or " if unitless else ""
    raise ValueError(
        f"invalid duration {value!r}: use {forms}units from largest to smallest "
        "such as 30s, 5m, 4h, 1d or 1h30m (units: y w d h m s ms)"
    )


def format_duration(seconds: float) -> str:
    """``seconds`` as a duration is written: ``4h``, ``1h30m``, ``90s``, ``2.5s``.

    >>> format_duration(14400), format_duration(5400), format_duration(14700), format_duration(2.5)
    ('4h', '1h30m', '4h5m', '2.5s')
    """
    if seconds != int(seconds):
        return f"{seconds:g}s"
    rest, out = int(seconds), ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            out += f"{rest // size}{unit}"
            rest %= size
    return out or "0s"
