"""Plain-text rendering of incidents and events for a terminal."""

from __future__ import annotations

import io
import json
import shutil
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TextIO

from inferwatch.collectors.event import InferenceEvent
from inferwatch.detectors.base import SEVERITY_ORDER
from inferwatch.detectors.incidents import HISTORY_ORDER, Incident
from inferwatch.detectors.investigation import input_preview, readable_json, visible


def _time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def last_column_width(rows: Sequence[Sequence[str]], headers: Sequence[str], least: int) -> int:
    """Characters left for a table's last column in the terminal (``COLUMNS`` if set), given its
    other columns (``rows`` and ``headers`` without the last); ``least`` when that is less or when
    the width is unknown (output piped)."""
    columns = shutil.get_terminal_size((0, 0)).columns
    widths = [len(h) for h in headers[:-1]]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=False)]
    return max(least, columns - sum(w + 2 for w in widths) - 1)


def event_preview(event: InferenceEvent, limit: int, first: Sequence[str] = ()) -> str:
    """What the caller sent (:func:`input_preview`), and for a tabular call the model's answer:
    ``a=1, b=2 → yes``."""
    shown = input_preview(event.input.text, event.input.features, limit, first)
    label = event.output.label
    if shown and not event.input.text and label is not None:
        shown += f" → {label}"
    return shown


def table(rows: Sequence[Sequence[str]], headers: Sequence[str], out: TextIO | None = None) -> None:
    """Print an aligned table; the last column is left unpadded (it is usually long text)."""
    out = out or sys.stdout
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    for row in [list(headers), *rows]:
        cells = [c.ljust(w) for c, w in zip(row[:-1], widths[:-1], strict=True)]
        out.write("  ".join([*cells, row[-1]]).rstrip() + "\n")


def incidents_table(incidents: Sequence[Incident], out: TextIO | None = None) -> None:
    """One line per incident."""
    out = out or sys.stdout
    if not incidents:
        out.write("no incidents\n")
        return
    rows = [
        [i.id, i.severity, i.status, i.kind, i.detector, i.subject, str(i.count),
         _time(i.first_seen), _time(i.last_seen), i.title]
        for i in incidents
    ]
    headers = ["ID", "SEVERITY", "STATUS", "KIND", "DETECTOR", "SUBJECT", "COUNT", "FIRST SEEN (UTC)",
               "LAST SEEN (UTC)", "TITLE"]
    table(rows, headers, out)


def incident_detail(incident: Incident, out: TextIO | None = None) -> None:
    """Everything about one incident, evidence included, for a person at 3 a.m."""
    out = out or sys.stdout
    i = incident
    # The score is the highest of all the findings, the title the most severe one's (then the
    # highest scored); summary and evidence are the latest's.
    latest = " (latest finding)" if i.count > 1 else ""
    titled = ["  (the title is the most severe finding's; the summary below the latest's)"] * (i.count > 1)
    score = f"highest score: {i.score:.2f}" if i.count > 1 else f"score: {i.score:.2f}"
    lines = [
        f"{i.title}",
        *titled,
        f"  id:         {i.id}",
        f"  status:     {i.status}    severity: {i.severity}{_escalated(i)}    {score}    kind: {i.kind}",
        f"  detector:   {i.detector}",
        f"  subject:    {i.subject}",
        f"  service:    {i.service or '-'}    model: {i.model or '-'}",
        f"  seen:       {i.count} time(s), {_time(i.first_seen)} .. {_time(i.last_seen)} UTC",
        "",
        f"summary{latest}:",
        *("  " + line for line in i.summary.splitlines()),
        "",
        *_drift_lines(i.evidence, latest),
        f"evidence{latest}:",
        *("  " + line for line in readable_json(i.evidence).splitlines()),
        "",
        f"sample events: {', '.join(i.event_ids) or '-'}",
        f"sample traces: {', '.join(i.trace_ids) or '-'}",
        "",
        f"history ({HISTORY_ORDER}):",
    ]
    for h in i.history:
        lines.append(f"  {_time(h.at)}  {h.action:<12} by {h.actor}{(': ' + h.note) if h.note else ''}")
    out.write("\n".join(lines) + "\n")


def _escalated(incident: Incident) -> str:
    """`` (escalated: 7 findings)`` when the severity is above the most severe finding's own: raised
    by repetition (``escalated_severity``), which the score beside it does not explain."""
    peak = incident.peak_severity
    if peak is None or SEVERITY_ORDER[incident.severity] <= SEVERITY_ORDER[peak]:
        return ""
    return f" (escalated: {incident.count} findings, each at most {peak})"


def _drift_lines(evidence: dict[str, Any], latest: str) -> list[str]:
    """A drift finding's drifted tests as a table, and its histograms, ahead of the raw JSON."""
    from inferwatch.detectors.drift.readable import HEADERS, HISTOGRAMS, drifted_rows, histogram_lines

    rows = drifted_rows(evidence)
    if not rows:
        return []
    buffer = io.StringIO()
    table(rows, HEADERS, buffer)
    lines = [f"drifted{latest}:", *("  " + line for line in buffer.getvalue().splitlines())]
    bars = histogram_lines(evidence)
    if bars:
        lines += ["  " + HISTOGRAMS, *("    " + line for line in bars)]
    return [*lines, ""]


def events_table(events: Sequence[InferenceEvent], out: TextIO | None = None) -> None:
    """One line per event."""
    out = out or sys.stdout
    if not events:
        out.write("no events\n")
        return
    headers = ["TIME (UTC)", "ID", "PRINCIPAL", "MODEL", "STATUS", "MS", "INPUT"]
    rows = [[_time(e.time), e.id, e.principal or "-", e.model or "-", str(e.status or "-"),
             f"{e.duration_ms:.1f}"] for e in events]
    limit = last_column_width(rows, headers, 80)
    table([[*row, event_preview(e, limit) or "-"] for row, e in zip(rows, events, strict=True)], headers, out)


def scan_table(results: Sequence[Any], out: TextIO | None = None) -> None:
    """One line per scanned input: verdict, score, the detectors that flagged it and why."""
    from inferwatch.detectors.scan import READS_OUTPUT

    out = out or sys.stdout
    rows = []
    skipped: dict[str, int] = {}
    for r in results:
        if r.error:
            rows.append([str(r.line), "error", "-", "-", r.error])
            continue
        why = "; ".join(f"{name}: {', '.join(d['reasons']) or 'flagged'}"
                        for name, d in r.detectors.items() if d["flagged"])
        unread = [name for name, d in r.detectors.items() if d.get("inspected") is False]
        for name in unread:
            skipped[name] = skipped.get(name, 0) + 1
        # Not inspected is not clean: a prompt under input.prompt, say, was never read. A line
        # without an output (a file of prompts) is counted in the last line instead.
        shown = [name for name in unread if name not in READS_OUTPUT]
        if shown:
            why = f"{why}; " if why else ""
            why += f"not inspected (nothing to read): {', '.join(shown)}"
        why = why or "-"
        text = visible(" ".join(r.text.split()))
        preview = text[:60] + ("..." if len(text) > 60 else "")
        rows.append([str(r.line), r.verdict, f"{r.score:.2f}", why, preview])
    table(rows, ["LINE", "VERDICT", "SCORE", "REASONS", "TEXT"], out)
    flagged = sum(r.verdict == "flagged" for r in results if not r.error)
    errors = sum(bool(r.error) for r in results)
    not_scanned = f", {errors:,} not scanned (their reasons are above)" if errors else ""
    idle = "".join(f"; {name} had nothing to read on {count(n, 'line')}"
                   + (" (no output)" if name in READS_OUTPUT else "") for name, n in skipped.items())
    out.write(f"\n{count(len(results), 'line')}, {flagged} flagged{not_scanned}{idle}\n")


def count(n: int, noun: str) -> str:
    """``n`` and the noun, plural unless ``n`` is 1: ``count(1, "line")`` is ``'1 line'``."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def json_line(obj: Any, out: TextIO | None = None) -> None:
    """Write one compact JSON object and a newline."""
    out = out or sys.stdout
    out.write(json.dumps(obj, separators=(",", ":"), default=str) + "\n")


ProgressFn = Callable[[int, int], None]
