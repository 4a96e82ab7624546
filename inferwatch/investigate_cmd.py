"""``inferwatch incidents timeline ID`` and ``inferwatch incidents report ID``: investigation.

The queries live in :mod:`inferwatch.detectors.investigation`; this module parses the flags,
opens the configured store (SQLite or Elasticsearch, the same answers from both) and prints.
:func:`add_incident_parsers` adds both actions to the ``incidents`` sub-parser of
:mod:`inferwatch.cli`.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from inferwatch import render
from inferwatch.collectors.settings import Settings
from inferwatch.detectors.incidents import Incident, no_such_incident
from inferwatch.detectors.investigation import (
    DEFAULT_AFTER,
    DEFAULT_BEFORE,
    DEFAULT_LIMIT,
    DEFAULT_RELATED_WINDOW,
    Timeline,
    TimelineEntry,
    per_request_detectors,
    render_report_markdown,
    report,
    scored_by,
    timeline,
    visible,
)
from inferwatch.detectors.store import Store
from inferwatch.runtime import open_store

_TEXT = 50  # characters of input text in the timeline table


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of at least 1")
    return number


def add_incident_parsers(isub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``timeline`` and ``report`` to the ``incidents`` sub-parsers ``isub``; ``common`` adds
    the flags every command takes (``--config``, ``--store``, ``--json``, …)."""
    from inferwatch.cli import ID_HELP, length_of_time

    q = isub.add_parser("timeline", help="the subject's events around an incident, with per-event scores")
    common(q)
    q.add_argument("id", help=ID_HELP)
    _window_flags(q)
    q.set_defaults(handler=incidents_timeline)
    q = isub.add_parser("report", help="an evidence bundle (Markdown or JSON) to attach to a ticket")
    common(q)
    q.add_argument("id", help=ID_HELP)
    q.add_argument("--format", choices=["md", "json"], default=None,
                   help="md or json (default: json for an --output ending in .json, else md); --json means "
                        "--format json")
    q.add_argument("--output", "-o", type=Path, metavar="FILE", help="write the report here (default stdout)")
    _window_flags(q)
    q.add_argument("--related-window", type=length_of_time("--related-window", "h"),
                   default=DEFAULT_RELATED_WINDOW, metavar="AGE",
                   help="how far around the incident related incidents are looked for (default 1h)")
    q.set_defaults(handler=incidents_report)


def _window_flags(q: argparse.ArgumentParser) -> None:
    from inferwatch.cli import length_of_time

    # Lengths of time with their unit (15m, 2h; 0 alone is 0), as --since takes them.
    q.add_argument("--before", type=length_of_time("--before", "m"), default=DEFAULT_BEFORE, metavar="AGE",
                   help="from this long before the incident's first event (default 15m)")
    q.add_argument("--after", type=length_of_time("--after", "m"), default=DEFAULT_AFTER, metavar="AGE",
                   help="to this long after its last event (default 15m)")
    q.add_argument("--limit", type=_positive_int, default=DEFAULT_LIMIT, metavar="N",
                   help=f"at most N events, the latest if more match (default {DEFAULT_LIMIT})")
    q.add_argument("--detectors", metavar="NAMES",
                   help="comma-separated per-request detectors to score with "
                        "(default: prompt_injection,output_leak)")


def incidents_timeline(args: argparse.Namespace, settings: Settings) -> int:
    """Print the events of an incident's subject around it, each with the detectors' scores."""
    with _store(settings) as store:
        incident = _incident(store, args.id)
        if incident is None:
            return 1
        line = timeline(store, incident, before=args.before, after=args.after, limit=args.limit,
                        detectors=_detectors(args, settings))
    if args.json:
        for entry in line.entries:
            render.json_line(entry.as_dict())
        for note in _notes(line):
            print(f"note: {note}", file=sys.stderr)
        return 0
    _print_timeline(incident, line)
    return 0


def incidents_report(args: argparse.Namespace, settings: Settings) -> int:
    """Write an incident's evidence bundle as Markdown or JSON, to a file or stdout."""
    with _store(settings) as store:
        incident = _incident(store, args.id)
        if incident is None:
            return 1
        bundle = report(store, incident, before=args.before, after=args.after, limit=args.limit,
                        detectors=_detectors(args, settings), window=args.related_window)
    # The report's commands name the store (and settings) it was made from, to be pasted as they are.
    options = " ".join(f"--{name} {shlex.quote(str(value))}" for name in ("config", "store")
                       if (value := getattr(args, name, None)))
    by_name = "json" if args.output is not None and args.output.suffix.lower() == ".json" else "md"
    fmt = args.format or ("json" if args.json else by_name)
    text = json.dumps(bundle, indent=2) + "\n" if fmt == "json" else render_report_markdown(bundle, options)
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        args.output.write_text(text, encoding="utf-8")
    except OSError as exc:
        print(f"inferwatch: cannot write the report to {args.output}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(f"report on incident {incident.id} written to {args.output}", file=sys.stderr)
    return 0


@contextmanager
def _store(settings: Settings) -> Iterator[Store]:
    """The configured store, closed again (an Elasticsearch client holds connections)."""
    store = open_store(settings, existing=True)
    try:
        yield store
    finally:
        close = getattr(store, "close", None)
        if callable(close):
            close()


def _incident(store: Store, incident_id: str) -> Incident | None:
    incident = store.get(incident_id)
    if incident is None:
        print(f"inferwatch: {no_such_incident(incident_id)}",
              file=sys.stderr)
    return incident


def _detectors(args: argparse.Namespace, settings: Settings) -> list[Any]:
    names = [n.strip() for n in args.detectors.split(",") if n.strip()] if args.detectors else None
    return per_request_detectors(names, settings.detect.options)


def _notes(line: Timeline) -> list[str]:
    notes = []
    if line.truncated:
        added = (f", with {render.count(line.samples_added, 'earlier event')} the incident names"
                 if line.samples_added else "")
        notes.append(f"more events matched: only the latest {len(line.entries) - line.samples_added} are "
                     f"shown{added} (raise --limit or narrow --before/--after)")
    if line.missing_event_ids:
        missing = line.missing_event_ids
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        notes.append(f"the incident names {len(missing)} event(s) not shown here: {shown}")
    return notes


def _print_timeline(incident: Incident, line: Timeline) -> None:
    print(f"incident {incident.id} [{incident.severity}] {incident.subject}: {incident.title}")
    shown = (f"{len(line.entries)} event(s) (more matched: the latest, and those the incident names; see "
             "the note below)" if line.truncated else f"{len(line.entries)} event(s)")
    print(f"{shown} of {line.scope}, {_when(line)} UTC, "
          f"{scored_by(line.detectors)}; * = named by the incident\n")
    if line.entries:
        # Several callers (an address's, a model's timeline): which one made each call matters
        # (a credential-stuffing address's keys are the point).
        callers = len({entry.event.principal for entry in line.entries}) > 1
        headers = ["TIME (UTC)", "EVENT", *(["PRINCIPAL"] if callers else []), "STATUS", "MS", "TOKENS",
                   "SCORES", "FLAGS", "TEXT"]
        rows = [_row(entry, callers=callers) for entry in line.entries]
        limit = render.last_column_width(rows, headers, _TEXT)
        render.table([[*row, _text(render.event_preview(entry.event, limit, line.features_first))]
                      for row, entry in zip(rows, line.entries, strict=True)], headers)
    else:
        print("no stored events in the window (are events kept? `inferwatch events search`)")
    if line.trace_ids:
        print(f"\ntraces: {', '.join(line.trace_ids)}")
    for note in _notes(line):
        print(f"note: {note}")


def _when(line: Timeline) -> str:
    return f"{line.since:%Y-%m-%d %H:%M:%S} .. {line.until:%Y-%m-%d %H:%M:%S}"


def _row(entry: TimelineEntry, *, callers: bool = False) -> list[str]:
    """The columns before the text (with the caller's, when the timeline has several)."""
    e = entry.event
    tokens = f"{_num(e.input.tokens)}/{_num(e.output.tokens)}"
    scores = " ".join(f"{name}={v['score']:.2f}" for name, v in entry.scores.items() if v["score"] > 0) or "-"
    flags = ",".join((["*"] if entry.in_incident else []) + entry.flagged_by) or "-"
    status = "-" if e.status is None else str(e.status)
    caller = [e.principal or "-"] if callers else []
    return [f"{e.time:%Y-%m-%d %H:%M:%S.%f}"[:-3], _short(e.id), *caller, status, f"{e.duration_ms:.1f}",
            tokens, scores, flags]


def _short(event_id: str) -> str:
    """Time-sortable ids share their leading digits in a short window: the tail tells them apart."""
    return event_id if len(event_id) <= 14 else "…" + event_id[-12:]


def _num(value: int | None) -> str:
    return "-" if value is None else str(value)


def _text(text: str) -> str:
    """An excerpt of what the caller sent, safe for a terminal: control characters (escape
    sequences that could move the cursor or retitle the window) and invisible ones are spelt
    ``<U+001B>`` (:func:`~inferwatch.detectors.investigation.visible`)."""
    return visible(text) or "-"
