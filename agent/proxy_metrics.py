"""The proxy's counters, in the Prometheus text exposition format (version 0.0.4).

Written by hand: a few counters and one histogram do not need a client library, and updating
them is a dict increment on the proxy's event loop (one thread, so no locks).

>>> metrics = ProxyMetrics()
>>> metrics.observe("openai", 200, 0.012)
>>> text = metrics.render()
>>> 'inferwatch_proxy_requests_total{protocol="openai",code="200"} 1' in text
True
"""

from __future__ import annotations

import bisect
from collections import Counter
from typing import Any, Final

from inferwatch.collectors.prometheus import CONTENT_TYPE

__all__ = ["BUCKETS", "CONTENT_TYPE", "ProxyMetrics"]

BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                  30.0, 60.0, 120.0, 300.0)


class _Histogram:
    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.sum += seconds


class ProxyMetrics:
    """What the proxy counts; :meth:`render` adds the agent's own counters."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, int]] = Counter()
        self.upstream_errors: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.retries = 0
        self.record_errors = 0
        self.client_connections = 0
        self.upstream_connections = 0
        self.upstream_idle = 0
        self.in_flight = 0
        self._durations: dict[str, _Histogram] = {}

    def observe(self, protocol: str, status: int, seconds: float) -> None:
        """Count one proxied request and its duration (request received to last byte sent)."""
        self.requests[(protocol, status)] += 1
        histogram = self._durations.get(protocol)
        if histogram is None:
            histogram = self._durations[protocol] = _Histogram()
        histogram.observe(seconds)

    def render(self, recorder: Any = None) -> str:
        """All metrics as exposition text, the recorder's agent counters included."""
        lines: list[str] = []
        _family(lines, "inferwatch_proxy_requests_total", "counter",
                "Requests answered, by model-server protocol and HTTP status (the proxy's own errors too).")
        for (protocol, code), n in sorted(self.requests.items()):
            lines.append(f'inferwatch_proxy_requests_total{{protocol="{protocol}",code="{code}"}} {n}')
        _family(lines, "inferwatch_proxy_request_duration_seconds", "histogram",
                "From the request fully received to the last response byte written.")
        for protocol, histogram in sorted(self._durations.items()):
            cumulative = 0
            for bound, count in zip((*BUCKETS, float("inf")), histogram.counts, strict=True):
                cumulative += count
                le = "+Inf" if bound == float("inf") else repr(bound)
                lines.append(
                    f'inferwatch_proxy_request_duration_seconds_bucket{{protocol="{protocol}",le="{le}"}} '
                    f"{cumulative}"
                )
            label = f'{{protocol="{protocol}"}}'
            lines.append(f"inferwatch_proxy_request_duration_seconds_sum{label} {histogram.sum}")
            lines.append(f"inferwatch_proxy_request_duration_seconds_count{label} {cumulative}")
        _family(lines, "inferwatch_proxy_upstream_errors_total", "counter",
                "Upstream failures: unreachable (502), timeout (504), protocol errors, resets.")
        for kind, n in sorted(self.upstream_errors.items()):
            lines.append(f'inferwatch_proxy_upstream_errors_total{{kind="{kind}"}} {n}')
        _family(lines, "inferwatch_proxy_rejected_total", "counter",
                "Requests the proxy answered itself without forwarding them (413, 400, 405, 501).")
        for reason, n in sorted(self.rejected.items()):
            lines.append(f'inferwatch_proxy_rejected_total{{reason="{reason}"}} {n}')
        _family(lines, "inferwatch_proxy_upstream_retries_total", "counter",
                "Requests sent again because a reused upstream connection closed before answering.")
        lines.append(f"inferwatch_proxy_upstream_retries_total {self.retries}")
        _family(lines, "inferwatch_proxy_in_flight_requests", "gauge", "Requests being proxied now.")
        lines.append(f"inferwatch_proxy_in_flight_requests {self.in_flight}")
        _family(lines, "inferwatch_proxy_connections", "gauge", "Open connections, by side.")
        lines.append(f'inferwatch_proxy_connections{{side="client"}} {self.client_connections}')
        lines.append(f'inferwatch_proxy_connections{{side="upstream"}} {self.upstream_connections}')
        lines.append(f'inferwatch_proxy_connections{{side="upstream_idle"}} {self.upstream_idle}')
        if recorder is not None:
            _recorder_lines(lines, recorder)
        _family(lines, "inferwatch_proxy_record_errors_total", "counter",
                "Calls the proxy failed to hand to its recorder (a bug; the traffic was not affected).")
        lines.append(f"inferwatch_proxy_record_errors_total {self.record_errors}")
        text = "\n".join(lines) + "\n"
        return text + recorder.metrics_text() if recorder is not None else text


def _recorder_lines(lines: list[str], recorder: Any) -> None:
    busy, down = getattr(recorder, "dropped_busy", None), getattr(recorder, "dropped_down", None)
    if busy is not None and down is not None:
        _family(lines, "inferwatch_proxy_calls_dropped_total", "counter",
                "Calls not recorded because the event worker was behind (busy) or not running (down).")
        lines.append(f'inferwatch_proxy_calls_dropped_total{{reason="worker_busy"}} {busy}')
        lines.append(f'inferwatch_proxy_calls_dropped_total{{reason="worker_down"}} {down}')
    restarts = getattr(recorder, "restarts", None)
    if restarts is not None:
        _family(lines, "inferwatch_proxy_event_worker_restarts_total", "counter",
                "Times the event worker process was started again after it exited.")
        lines.append(f"inferwatch_proxy_event_worker_restarts_total {restarts}")


def _family(lines: list[str], name: str, kind: str, help_text: str) -> None:
    lines.append(f"# HELP {name} {help_text}")
    lines.append(f"# TYPE {name} {kind}")
