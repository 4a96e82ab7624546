"""The Prometheus text exposition format (version 0.0.4), as the agent and the detector service
write their own metrics: a few families of counters and gauges, no client library needed.

>>> text = Exposition({"service": "fraud-api"})
>>> text.counter("inferwatch_agent_events_sent_total", "Events the bus accepted.", 2)
>>> text.gauge("inferwatch_agent_bus_up", "1 when the bus answers.", 1, {"zone": 'a"b'})
>>> print(text.render(), end="")
# HELP inferwatch_agent_events_sent_total Events the bus accepted.
# TYPE inferwatch_agent_events_sent_total counter
inferwatch_agent_events_sent_total{service="fraud-api"} 2
# HELP inferwatch_agent_bus_up 1 when the bus answers.
# TYPE inferwatch_agent_bus_up gauge
inferwatch_agent_bus_up{service="fraud-api",zone="a\\"b"} 1
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Final

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
Sample = tuple[Mapping[str, str], float | int]
"""One series of a family: its own labels (besides the exposition's) and its value."""


class Exposition:
    """Families of samples, each series carrying ``labels`` (e.g. the service) before its own."""

    def __init__(self, labels: Mapping[str, str] | None = None) -> None:
        self.labels = dict(labels or {})
        self._lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, samples: Sequence[Sample]) -> None:
        """A metric family (``counter`` or ``gauge``) with its series."""
        self._lines.append(f"# HELP {name} {help_text}")
        self._lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            pairs = ",".join(f'{k}="{escape(v)}"' for k, v in {**self.labels, **labels}.items())
            self._lines.append(f"{name}{{{pairs}}} {number(value)}" if pairs else f"{name} {number(value)}")

    def counter(self, name: str, help_text: str, value: float | int,
                labels: Mapping[str, str] | None = None) -> None:
        """One counter series (``name`` ends in ``_total``)."""
        self.family(name, "counter", help_text, [(labels or {}, value)])

    def gauge(self, name: str, help_text: str, value: float | int,
              labels: Mapping[str, str] | None = None) -> None:
        """One gauge series."""
        self.family(name, "gauge", help_text, [(labels or {}, value)])

    def render(self) -> str:
        """The exposition, ready to serve on ``/metrics`` with :data:`CONTENT_TYPE`."""
        return "\n".join(self._lines) + "\n"


def escape(value: str) -> str:
    """A label value as the format writes it (backslash, newline and double quote escaped)."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def number(value: float | int) -> str:
    """A sample value: integers as they are, floats as Python writes them (``NaN``, ``+Inf``)."""
    if isinstance(value, bool | int):
        return str(int(value))
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))
