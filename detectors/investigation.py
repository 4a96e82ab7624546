"""Investigation queries: what happened around an incident, as a timeline and an evidence bundle.

After the page, a responder asks: what did this caller send, what did the detectors make of each
request, what else happened around it, and who was told. The answers here read only the store
(:class:`~inferwatch.detectors.store.Store`), so SQLite and Elasticsearch give the same ones.

* :func:`timeline` — the incident subject's events from ``first_seen - before`` to
  ``last_seen + after``, oldest first, each scored by the per-request detectors
  (:mod:`inferwatch.detectors.scan` is the one place that scores an event) and marked when the
  incident names it.
* :func:`related` — other incidents about the same subject or the same model nearby in time.
* :func:`report` — all of it as one JSON-ready bundle, and :func:`render_report_markdown` — that
  bundle as a Markdown document to attach to a ticket.

Events are stored as the agent sent them, redacted by default: the timeline shows and scores
the stored text, which may differ from what the model saw (``[EMAIL]`` instead of an address).
"""

from __future__ import annotations

import functools
import json
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from importlib.metadata import PackageNotFoundError, metadata
from typing import Any

from inferwatch import __version__
from inferwatch.collectors.durations import format_duration
from inferwatch.collectors.event import InferenceEvent, event_to_dict
from inferwatch.collectors.ids import PSEUDONYM
from inferwatch.detectors.alerts.model import Notification, NotificationQuery
from inferwatch.detectors.base import Detector
from inferwatch.detectors.drift import split_aspect
from inferwatch.detectors.incidents import HISTORY_ORDER, Incident
from inferwatch.detectors.registry import build_detectors
from inferwatch.detectors.scan import PER_REQUEST, scan_event
from inferwatch.detectors.store import (
    EventQuery,
    EventStore,
    IncidentQuery,
    IncidentStore,
    Store,
    is_ip_address,
)

REPORT_SCHEMA = "inferwatch.report/1"
DEFAULT_BEFORE = timedelta(minutes=15)
DEFAULT_AFTER = timedelta(minutes=15)
DEFAULT_LIMIT = 200
DEFAULT_RELATED_WINDOW = timedelta(hours=1)
RUNBOOKS = "docs/runbooks"
"""Where the runbooks are in the repository (``docs/runbooks/<detector>.md``)."""
# The stores keep event time to the microsecond; a bound one tick past last_seen keeps the
# incident's own last event in a window whose end is exclusive (EventQuery.until).
_TICK = timedelta(microseconds=1)
_PAGE = 1000  # events per read when filtering by client address
_MAX_SCAN = 100_000  # events read at most for one client-address timeline
_RELATED_LIMIT = 100
_NOTIFICATION_LIMIT = 1000

Keep = Callable[[InferenceEvent], bool]  # a client-side filter, where EventQuery has none


# -- the timeline ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """One stored event with the per-request detectors' verdicts on it."""

    event: InferenceEvent
    # Detector name -> {"score", "flagged", "reasons"}, exactly as ``inferwatch scan`` gives them.
    scores: dict[str, dict[str, Any]]
    in_incident: bool  # the incident names this event among its sample event ids

    @property
    def flagged_by(self) -> list[str]:
        """The detectors that would flag this event on its own."""
        return [name for name, verdict in self.scores.items() if verdict.get("flagged")]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: the marks and scores, and the event as stored."""
        return {
            "time": _iso(self.event.time),
            "id": self.event.id,
            "in_incident": self.in_incident,
            "flagged_by": self.flagged_by,
            "scores": self.scores,
            "event": event_to_dict(self.event),
        }


@dataclass(frozen=True, slots=True)
class Timeline:
    """The events of an incident's subject around it, oldest first."""

    incident_id: str
    subject: str
    scope: str  # which events were read, in words ("principal p_1", "client address 10.0.0.1")
    since: datetime
    until: datetime  # inclusive: last_seen + after
    detectors: list[str]
    entries: list[TimelineEntry]
    trace_ids: list[str]  # the incident's sample trace ids, to look the requests up in tracing
    # More events matched than the limit: the earliest were left out (the latest are kept).
    truncated: bool
    # Events the incident names that are not among the entries: never stored (a replay without
    # --store) or past retention.
    missing_event_ids: list[str]
    # Of the entries, the incident's sample events added from outside the latest ``limit``.
    samples_added: int = 0
    # Input features the incident's evidence names (a drift incident's drifted ones): previews of
    # tabular calls show these first.
    features_first: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, entries included."""
        return {
            "incident_id": self.incident_id,
            "subject": self.subject,
            "scope": self.scope,
            "since": _iso(self.since),
            "until": _iso(self.until),
            "detectors": list(self.detectors),
            "truncated": self.truncated,
            "samples_added": self.samples_added,
            "features_first": list(self.features_first),
            "trace_ids": list(self.trace_ids),
            "missing_event_ids": list(self.missing_event_ids),
            "entries": [e.as_dict() for e in self.entries],
        }


def per_request_detectors(
    names: Sequence[str] | None = None, options: Mapping[str, Mapping[str, Any]] | None = None
) -> list[Detector]:
    """The detectors that judge one request on its own (``scan.PER_REQUEST`` unless ``names``),
    built with their ``detect.options`` so a timeline scores as the service would."""
    chosen = list(names) if names else list(PER_REQUEST)
    options = options or {}
    return build_detectors(chosen, {n: o for n, o in options.items() if n in chosen})


def scored_by(names: Sequence[str], escape: Callable[[str], str] = str) -> str:
    """How a timeline says what scored its events (``names``: those that had text to read)."""
    return f"scored by {escape(', '.join(names))}" if names else "no text to score (tabular calls)"


def score_event(event: InferenceEvent, detectors: Sequence[Detector]) -> dict[str, dict[str, Any]]:
    """Each detector's verdict on ``event`` alone.

    Scoring has one home, :func:`inferwatch.detectors.scan.scan_event` (what ``inferwatch
    scan`` runs on each line), so the timeline and ``scan`` cannot disagree about an event.
    """
    return scan_event(event, 0, detectors).detectors


def timeline(
    store: EventStore,
    incident: Incident,
    *,
    before: timedelta = DEFAULT_BEFORE,
    after: timedelta = DEFAULT_AFTER,
    limit: int = DEFAULT_LIMIT,
    detectors: Sequence[Detector] | None = None,
) -> Timeline:
    """The subject's events from ``first_seen - before`` to ``last_seen + after``, oldest first.

    The subject decides which events: ``principal:<id>`` that caller's, ``model:<name>`` and
    ``service:<name>`` everyone's calls to it, ``ip:<addr>`` those from that client address.
    Any other subject falls back to the incident's model, then its service. When more than
    ``limit`` events match, the latest ``limit`` are kept and ``truncated`` says so; the
    incident's sample events (``event_ids``) are added wherever they are, and those the store
    does not hold are listed in ``missing_event_ids``.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    if before < timedelta(0) or after < timedelta(0):
        raise ValueError("before and after must not be negative")
    since, until = _observed_from(incident) - before, incident.last_seen + after
    base, keep, scope = _selection(incident)
    query = replace(base, since=since, until=until + _TICK, limit=limit + 1)
    newest_first = _read(store, query, keep) if keep is not None else store.search_events(query)
    shown = newest_first[:limit][::-1]
    seen = {e.id for e in shown}
    # The incident's own sample events are shown even when the latest ``limit`` left them out
    # (a long flood keeps only its end): they are what its evidence speaks of.
    left_out = tuple(i for i in dict.fromkeys(incident.event_ids) if i not in seen)
    if left_out:
        named_events = store.search_events(EventQuery(ids=left_out, limit=len(left_out)))
        shown = sorted([*shown, *named_events], key=lambda e: (e.ts, e.id))
        seen.update(e.id for e in named_events)
    scorers = list(detectors) if detectors is not None else per_request_detectors()
    named = set(incident.event_ids)
    entries = [TimelineEntry(e, score_event(e, scorers), e.id in named) for e in shown]
    return Timeline(
        incident_id=incident.id,
        subject=incident.subject,
        scope=scope,
        since=since,
        until=until,
        # Only the detectors that had something to read in these events: a tabular model's
        # timeline is not "scored by prompt_injection, output_leak" (walk-through)
        detectors=[d.name for d in scorers
                   if not entries or any(e.scores.get(d.name, {}).get("inspected", True) for e in entries)],
        entries=entries,
        trace_ids=list(incident.trace_ids),
        truncated=len(newest_first) > limit,
        samples_added=len(shown) - min(len(newest_first), limit),
        missing_event_ids=[i for i in incident.event_ids if i not in seen],
        features_first=named_features(incident.evidence),
    )


def _observed_from(incident: Incident) -> datetime:
    """When what the incident judged began: ``first_seen`` is a window finding's window *end*
    (a drift or rate incident), so its first window's events lie before it; the span of the
    latest finding's ``window_start``..``window_end`` is taken back from it."""
    evidence = incident.evidence
    try:
        span = (datetime.fromisoformat(str(evidence["window_end"]))
                - datetime.fromisoformat(str(evidence["window_start"])))
    except (KeyError, ValueError, TypeError):
        return incident.first_seen
    return incident.first_seen - span if span > timedelta(0) else incident.first_seen


def named_features(evidence: Mapping[str, Any]) -> list[str]:
    """The input features an incident's evidence names as drifted (``input.c (location)`` -> ``c``).

    >>> named_features({"drifted": ["input.c (location)", "text.language", "input.c", "input.size (cm)"]})
    ['c', 'size (cm)']
    """
    drifted = evidence.get("drifted")
    if not isinstance(drifted, list):
        return []
    names = (split_aspect(str(name))[0] for name in drifted)
    return list(dict.fromkeys(n.removeprefix("input.") for n in names if n.startswith("input.")))


def _selection(incident: Incident) -> tuple[EventQuery, Keep | None, str]:
    """The store query for the subject's events, a client-side filter when the query cannot say
    it, and the scope in words."""
    kind, _, value = incident.subject.partition(":")
    if kind == "principal" and value:
        return EventQuery(principal=value), None, f"principal {value}"
    if kind == "model" and value:
        return EventQuery(model=value), None, f"model {value}"
    if kind == "service" and value:
        return EventQuery(service=value), None, f"service {value}"
    if kind == "ip" and value:
        if is_ip_address(value):
            return EventQuery(client_ip=value), None, f"client address {value}"
        # Events may carry any string as client_ip, and Elasticsearch indexes only addresses
        # (client.ip): read the time window and keep that value's events here.
        return EventQuery(), (lambda e: e.client_ip == value), f"client address {value}"
    if incident.model:
        return EventQuery(model=incident.model), None, f"model {incident.model} (subject {incident.subject})"
    if incident.service:
        return (EventQuery(service=incident.service), None,
                f"service {incident.service} (subject {incident.subject})")
    return EventQuery(), None, f"all events (subject {incident.subject} names no caller or model)"


def _read(store: EventStore, query: EventQuery, keep: Keep) -> list[InferenceEvent]:
    """Up to ``query.limit`` events that ``keep`` accepts, newest first, read page by page.

    Each next page ends one tick past the oldest event read, so events sharing its time are
    read again and skipped by id rather than lost; a full page with nothing new (more events
    at one instant than a page holds) is read again twice as large. At most ``_MAX_SCAN``
    events are read.
    """
    out: list[InferenceEvent] = []
    seen: set[str] = set()
    until, size = query.until, _PAGE
    while len(out) < query.limit and len(seen) < _MAX_SCAN:
        page = store.search_events(replace(query, until=until, limit=size))
        fresh = [e for e in page if e.id not in seen]
        seen.update(e.id for e in fresh)
        out.extend(e for e in fresh if keep(e))
        if len(page) < size:
            break
        if fresh:
            until = page[-1].time + _TICK
        else:
            size *= 2
    return out[: query.limit]


# -- related incidents ----------------------------------------------------------------------------


def related(
    store: IncidentStore, incident: Incident, window: timedelta = DEFAULT_RELATED_WINDOW
) -> list[Incident]:
    """Other incidents about the same subject or the same model that were active within
    ``window`` of this one (they overlap ``first_seen - window .. last_seen + window``), oldest
    first: what else the caller did, and what else went wrong with the model meanwhile.

    For an incident about one caller (``principal:`` or ``ip:``), other callers' incidents on the
    same model are left out (on a busy model they would bury the rest; :func:`other_callers`
    counts them); for an incident about the model itself (drift, errors), every caller's is in.
    """
    return _related(store, incident, window)[0]


def other_callers(
    store: IncidentStore, incident: Incident, window: timedelta = DEFAULT_RELATED_WINDOW
) -> list[Incident]:
    """Incidents about *other* callers on the same model within ``window`` of a caller's incident,
    which :func:`related` leaves out (empty for an incident about a model)."""
    return _related(store, incident, window)[1]


def _related(store: IncidentStore, incident: Incident,
             window: timedelta) -> tuple[list[Incident], list[Incident]]:
    lo, hi = incident.first_seen - window, incident.last_seen + window
    queries = [IncidentQuery(subject=incident.subject, since=lo, limit=_RELATED_LIMIT)]
    # The callers its evidence names (the keys that worked from a stuffing address, the senders
    # of values outside a drift's range): their own incidents belong with it.
    queries += [IncidentQuery(subject=f"principal:{p}", since=lo, limit=_RELATED_LIMIT)
                for p in named_principals(incident.evidence) if f"principal:{p}" != incident.subject]
    model = incident.model or _subject_model(incident.subject)
    if model:
        queries.append(IncidentQuery(model=model, since=lo, limit=_RELATED_LIMIT))
        queries.append(IncidentQuery(subject=f"model:{model}", since=lo, limit=_RELATED_LIMIT))
    about_caller = _is_caller(incident.subject)
    named = {f"principal:{p}" for p in named_principals(incident.evidence)}
    found: dict[str, Incident] = {}
    others: dict[str, Incident] = {}
    for query in queries:
        for other in store.list_incidents(query):
            if other.id != incident.id and other.first_seen <= hi:
                mine = (not about_caller or other.subject == incident.subject or not _is_caller(other.subject)
                        or other.subject in named)
                (found if mine else others)[other.id] = other
    def order(incidents: dict[str, Incident]) -> list[Incident]:
        return sorted(incidents.values(), key=lambda i: (i.first_seen, i.id))
    return order(found), order(others)


_NAMED_MOST = 20


def named_principals(evidence: Any) -> list[str]:
    """The pseudonyms (``p_`` + 24 hex) an incident's evidence names, in its order, at most 20:
    in lists (``attack_accepted_principals``), as keys (``outside_range_callers``) or values.

    >>> named_principals({"accepted": ["p_" + "a" * 24, "x"], "f": {"callers": {"p_" + "b" * 24: 3}}})
    ['p_aaaaaaaaaaaaaaaaaaaaaaaa', 'p_bbbbbbbbbbbbbbbbbbbbbbbb']
    """
    found: dict[str, None] = {}

    def walk(value: Any) -> None:
        if len(found) >= _NAMED_MOST:
            return
        if isinstance(value, str):
            if PSEUDONYM.fullmatch(value.removeprefix("principal:")):
                found[value.removeprefix("principal:")] = None
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(key)
                walk(item)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)

    walk(evidence)
    return list(found)[:_NAMED_MOST]


def _is_caller(subject: str) -> bool:
    return subject.startswith(("principal:", "ip:"))


def _subject_model(subject: str) -> str | None:
    kind, _, value = subject.partition(":")
    return value if kind == "model" and value else None


# -- the evidence bundle --------------------------------------------------------------------------


def report(
    store: Store,
    incident: Incident,
    *,
    before: timedelta = DEFAULT_BEFORE,
    after: timedelta = DEFAULT_AFTER,
    limit: int = DEFAULT_LIMIT,
    detectors: Sequence[Detector] | None = None,
    window: timedelta = DEFAULT_RELATED_WINDOW,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Everything a responder attaches to a ticket, as JSON-ready data (``json.loads`` of its
    ``json.dumps`` gives it back): the incident, its history and evidence, the timeline,
    related incidents and the notifications that carried it (from the store's notification log).
    """
    line = timeline(store, incident, before=before, after=after, limit=limit, detectors=detectors)
    mine, others = _related(store, incident, window)
    public = incident.public_dict()
    bundle: dict[str, Any] = {
        "schema": REPORT_SCHEMA,
        "generated_at": _iso(now or datetime.now(UTC)),
        "inferwatch_version": __version__,
        "incident": public,
        "history": public["history"],
        "evidence": public["evidence"],
        "timeline": line.as_dict(),
        "related": [_related_dict(i) for i in mine],
        "related_window_s": window.total_seconds(),
        "other_callers": _other_callers_dict(others, incident, window),
        "notifications": _notifications(store, incident.id),
        "runbook": f"{RUNBOOKS}/{incident.detector}.md",
        "runbook_url": runbook_url(incident.detector),
    }
    return bundle


@functools.cache
def docs_url() -> str | None:
    """Where this project's ``docs/`` folder is published: the ``Documentation`` URL the installed
    distribution declares (``[project.urls]`` in pyproject.toml), or ``None`` when it declares none
    (or is not installed)."""
    try:
        urls: list[str] = metadata("inferwatch").get_all("Project-URL") or []
    except PackageNotFoundError:
        return None
    for entry in urls:
        label, _, url = entry.partition(",")
        if label.strip().casefold() == "documentation" and url.strip():
            return url.strip().rstrip("/")
    return None


def runbook_url(detector: str) -> str | None:
    """The absolute address of ``detector``'s runbook under :func:`docs_url`, so a report made by an
    installed copy (where ``docs/runbooks/…`` is no file) links somewhere; ``None`` without one.

    >>> docs_url.cache_clear()
    >>> runbook_url("drift") in (None, f"{docs_url()}/runbooks/drift.md")
    True
    """
    base = docs_url()
    return f"{base}/{RUNBOOKS.removeprefix('docs/')}/{detector}.md" if base else None


def _notifications(store: Store, incident_id: str) -> list[dict[str, Any]]:
    """The notifications that carried the incident (the notification log), oldest first."""
    found = store.list_notifications(NotificationQuery(incident_id=incident_id, limit=_NOTIFICATION_LIMIT))
    found.sort(key=lambda n: (n.created_at, n.seq, n.id))
    return [_notification_dict(n, incident_id) for n in found]


def _notification_dict(n: Notification, incident_id: str) -> dict[str, Any]:
    carried = next((a for a in n.alerts if a.incident_id == incident_id), None)
    return {
        "id": n.id,
        "receiver": n.receiver,
        "integration": n.integration,
        "status": n.status,
        "created_at": _iso(n.created_at),
        "delivered_at": _iso(n.delivered_at) if n.delivered_at else None,
        "attempts": n.attempts,
        "last_error": n.last_error,
        "alert_state": carried.state if carried else None,
        "incident_status": carried.incident_status if carried else None,
    }


def _other_callers_dict(others: Sequence[Incident], incident: Incident, window: timedelta) -> dict[str, Any]:
    """How many other callers' incidents the report leaves out, and how to list them."""
    model = incident.model or _subject_model(incident.subject)
    since = _iso(incident.first_seen - window)
    return {
        "incidents": len(others),
        "subjects": len({i.subject for i in others}),
        "capped": len(others) >= _RELATED_LIMIT,
        "list_with": f"inferwatch incidents list --model {model} --since {since}" if others else None,
    }


def _related_dict(i: Incident) -> dict[str, Any]:
    return {
        "id": i.id, "detector": i.detector, "kind": i.kind, "severity": i.severity, "status": i.status,
        "subject": i.subject, "service": i.service, "model": i.model, "first_seen": _iso(i.first_seen),
        "last_seen": _iso(i.last_seen), "count": i.count, "title": i.title,
    }


def _iso(moment: datetime) -> str:
    """RFC 3339 UTC with ``Z``, as the incident's own fields are written."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# -- Markdown -------------------------------------------------------------------------------------
#
# Event text is what callers sent: an attacker's prompt must not become a link, an image or a
# broken table in the ticket. Free text goes into code spans (inert), other values are escaped.

_EXCERPT = 60
_MD_SPECIAL = "\\`*_{}[]<>#+!|~"  # "(" needs no escape once "[" and "]" have one


def render_report_markdown(bundle: Mapping[str, Any], cli_options: str = "") -> str:
    """The bundle from :func:`report` (or its JSON read back) as a Markdown document;
    ``cli_options`` (``--store PATH``) go into the commands it suggests."""
    inc = bundle["incident"]
    parts = [
        f"# Incident {_esc(inc['id'])}: {_esc(inc['title'])}",
        f"Generated {_esc(bundle['generated_at'])} by inferwatch {_esc(bundle['inferwatch_version'])}. "
        "Times are UTC.",
        _summary_table(inc),
        "## What happened\n\n" + ("The latest of its findings:\n\n" if inc["count"] > 1 else "")
        + _esc_block(inc["summary"]),
        _evidence_section(inc),
        _history_section(bundle["history"]),
        _timeline_section(bundle["timeline"]),
        _related_section(bundle["related"], bundle.get("related_window_s"), bundle.get("other_callers"),
                         cli_options),
        _notifications_section(bundle.get("notifications") or []),
        _next_steps(inc, bundle.get("runbook") or f"{RUNBOOKS}/{inc['detector']}.md",
                    bundle.get("runbook_url"), cli_options),
    ]
    return "\n\n".join(parts) + "\n"


def _summary_table(inc: Mapping[str, Any]) -> str:
    rows = [
        ("ID", inc["id"]), ("Detector", inc["detector"]), ("Kind", inc["kind"]),
        ("Severity", f"{inc['severity']} ({'highest ' if inc['count'] > 1 else ''}score "
                     f"{float(inc['score']):.2f})"), ("Status", inc["status"]),
        ("Subject", inc["subject"]), ("Service", inc.get("service") or "-"),
        ("Model", inc.get("model") or "-"), ("First seen", inc["first_seen"]),
        ("Last seen", inc["last_seen"]), ("Count", str(inc["count"])),
    ]
    return "## Summary\n\n" + _table(["Field", "Value"], [[k, _esc(v)] for k, v in rows])


def _evidence_section(inc: Mapping[str, Any]) -> str:
    evidence = inc.get("evidence") or {}
    facts = [f"- **{_esc(k)}**: {_fact(v)}" for k, v in evidence.items()]
    facts.append(f"- **sample events**: {_ids(inc.get('event_ids') or [])}")
    facts.append(f"- **sample traces**: {_ids(inc.get('trace_ids') or [])}")
    latest = "The latest finding's.\n\n" if inc["count"] > 1 else ""
    return "## Evidence\n\n" + latest + _drifted(evidence) + "\n".join(facts) + "\n\n" + _json_block(evidence)


def _drifted(evidence: Mapping[str, Any]) -> str:
    """A drift finding's drifted tests as a table, and its histograms, ahead of the facts."""
    from inferwatch.detectors.drift.readable import HEADERS, HISTOGRAMS, drifted_rows, histogram_lines

    rows = drifted_rows(evidence)
    if not rows:
        return ""
    text = _table([h.capitalize() for h in HEADERS], [[_esc(cell) for cell in row] for row in rows]) + "\n\n"
    lines = histogram_lines(evidence)
    if lines:
        text += f"{HISTOGRAMS.capitalize()}\n\n```text\n" + "\n".join(lines) + "\n```\n\n"
    return text


def _fact(value: Any) -> str:
    """A readable one-liner for one evidence value; nested data is in the JSON block."""
    if isinstance(value, dict):
        return f"{len(value)} fields (see the JSON below)"
    if isinstance(value, list):
        if all(not isinstance(v, dict | list) for v in value):
            shown = ", ".join(_esc(_plain(v)) for v in value[:10])
            return shown + (f", … ({len(value)} in all)" if len(value) > 10 else "") if value else "none"
        return f"{len(value)} items (see the JSON below)"
    return _esc(_plain(value))


def _plain(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def _ids(ids: Sequence[str]) -> str:
    return ", ".join(_code(i, in_table=False) for i in ids) if ids else "none"


def _history_section(history: Sequence[Mapping[str, Any]]) -> str:
    rows = [[_esc(h["at"]), _esc(h["action"]), _esc(h["actor"]), _code(h["note"]) if h.get("note") else "-"]
            for h in history]
    if not rows:
        return "## History\n\nNo history."
    return f"## History\n\n{HISTORY_ORDER[0].upper()}{HISTORY_ORDER[1:]}.\n\n" + _table(
        ["Time", "Action", "By", "Note"], rows)


def _timeline_section(line: Mapping[str, Any]) -> str:
    entries = line["entries"]
    head = (f"## Timeline\n\n{_count(len(entries), 'event')} of {_esc(line['scope'])} "
            f"from {_esc(line['since'])} to {_esc(line['until'])}, oldest first, "
            f"{scored_by(line['detectors'], _esc)}. "
            "**◆** marks events the incident names.")
    if line.get("truncated"):
        head += " More events matched: the earliest were left out (raise the limit or narrow the window)"
        added = line.get("samples_added") or 0
        head += f", except {_count(added, 'sample event')} the incident names." if added else "."
    if line.get("missing_event_ids"):
        head += f" Named by the incident but not shown: {_ids(line['missing_event_ids'])}."
    if line.get("trace_ids"):
        head += f" Trace ids: {_ids(line['trace_ids'])}."
    if not entries:
        return head + "\n\nNo stored events in the window."
    callers = len({e["event"].get("principal") for e in entries}) > 1  # an address's, a model's
    # Tabular calls give the text detectors nothing to read: a column saying so on every row is noise.
    scored = any(v.get("inspected", True) for e in entries for v in e["scores"].values())
    rows = []
    for e in entries:
        event = e["event"]
        scores = ", ".join(f"{_esc(n)} {float(v['score']):.2f}" if v.get("inspected", True)
                           else f"{_esc(n)} - (nothing to inspect)" for n, v in e["scores"].items()) or "-"
        marks = ["◆"] if e["in_incident"] else []
        flags = " ".join(marks + [f"flagged: {_esc(n)}" for n in e["flagged_by"]])
        caller = [_code(event.get("principal") or "-")] if callers else []
        rows.append([_esc(e["time"]), _code(e["id"]), *caller, _esc(_plain(event.get("status"))),
                     _esc(event.get("model") or "-"), *([scores] if scored else []), flags or "-",
                     _excerpt(event, line.get("features_first") or ())])
    headers = ["Time", "Event", *(["Principal"] if callers else []), "Status", "Model",
               *(["Scores"] if scored else []), "Flags", "Input"]
    return head + "\n\n" + _table(headers, rows)


def _excerpt(event: Mapping[str, Any], first: Sequence[str] = ()) -> str:
    given = event.get("input") or {}
    shown = input_preview(given.get("text"), given.get("features"), _EXCERPT, first)
    return _code(shown) if shown else "-"


def visible(text: str) -> str:
    """``text`` with invisible characters (Unicode formats and controls: zero-width spaces and
    joiners, bidirectional overrides, tag characters) spelt ``<U+200B>``: a prompt hiding an
    injection behind them reads as plain words otherwise.

    >>> visible("ig\u200bnore \u202eabc"), visible("plain text")
    ('ig<U+200B>nore <U+202E>abc', 'plain text')
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == " " else f"<U+{ord(c):04X}>" for c in text)


def input_preview(text: str | None, features: Mapping[str, Any] | None, limit: int,
                  first: Sequence[str] = ()) -> str:
    r"""What a caller sent, on one line: the prompt (at most ``limit`` characters, ``…`` when cut),
    else as many features as ``name=value`` as fit in about ``limit`` characters, those named in
    ``first`` (e.g. the ones that drifted) before the others (a tabular call); ``""`` when neither.

    >>> input_preview("  Ignore   all\nprevious instructions ", None, 20)
    'Ignore all previous…'
    >>> input_preview(None, {"a": 1.5, "b": "x", "c": 3, "d": 4, "e": 5}, 60)
    'a=1.5, b=x, c=3, d=4, e=5'
    >>> input_preview(None, {"a": 1.5, "b": "x", "c": 3, "d": 4, "e": 5}, 12, first=["e"])
    'e=5, a=1.5, … (5 features)'
    >>> input_preview(None, {"note": "x" * 100, "n": 1}, 12)
    'note=xxxxxx…, … (2 features)'
    >>> input_preview("i\u200bg\u200bnore", None, 40)  # invisible characters are shown
    'i<U+200B>g<U+200B>nore'
    """
    flat = visible(" ".join((text or "").split()))
    if flat:
        return flat[:limit].rstrip() + "…" if len(flat) > limit else flat
    if not features:
        return ""
    order = [n for n in dict.fromkeys(first) if n in features] + [n for n in features if n not in first]
    parts: list[str] = []
    width = 0
    for name in order:
        part = f"{name}={features[name]}"
        if parts and width + len(part) > limit:
            break
        if len(part) > limit:
            part = part[: max(limit - 1, 1)] + "…"
        parts.append(part)
        width += len(part) + 2
    cut = len(parts) < len(features)
    return ", ".join(parts) + (f", … ({len(features)} features)" if cut else "")


def _related_section(found: Sequence[Mapping[str, Any]], window_s: float | None,
                     others: Mapping[str, Any] | None = None, cli_options: str = "") -> str:
    around = f" within {format_duration(window_s)}" if window_s else ""
    head = f"## Related incidents\n\nSame subject or same model{around}."
    if others and others.get("incidents"):
        count = f"{others['incidents']}{'+' if others.get('capped') else ''}"
        head += (f" Not listed: {count} incident(s) of {others['subjects']} other caller(s) on the same model"
                 + (f" (`{others['list_with']}{' ' + cli_options if cli_options else ''}`)"
                    if others.get("list_with") else "") + ".")
    if not found:
        return head + "\n\nNone."
    rows = [[_code(i["id"]), _esc(i["detector"]), _esc(i["severity"]), _esc(i["status"]), _esc(i["subject"]),
             _esc(i["first_seen"]), _esc(i["last_seen"]), _esc(i["title"])] for i in found]
    return head + "\n\n" + _table(
        ["ID", "Detector", "Severity", "Status", "Subject", "First seen", "Last seen", "Title"], rows)


def _notifications_section(sent: Sequence[Mapping[str, Any]]) -> str:
    head = "## Notifications sent"
    if not sent:
        return f"{head}\n\nNone: no receiver has been notified of this incident."
    rows = [[_esc(n["created_at"]), _esc(n["receiver"]), _esc(n["integration"]), _esc(n["status"]),
             _esc(n.get("alert_state") or "-"), str(n["attempts"]),
             _esc(n.get("delivered_at") or "-"), _code(n["last_error"]) if n.get("last_error") else "-"]
            for n in sent]
    headers = ["Created", "Receiver", "Integration", "Delivery", "Alert", "Attempts", "Delivered",
               "Last error"]
    return f"{head}\n\n" + _table(headers, rows)


def _next_steps(inc: Mapping[str, Any], runbook: str, url: str | None = None, options: str = "") -> str:
    """The runbook is shown by its path in the repository and linked at ``url`` when the published
    documentation is known. ``options`` (``--store PATH``, ``--config FILE``) the report was made
    with go into every command, so that each can be pasted as it is."""
    ident = inc["id"]
    more = f" {options}" if options else ""
    steps = [
        f"- Read the runbook for this detector: [{_esc(runbook)}]({url or runbook}) — what it means, how to "
        "confirm it, what to do.",
        f"- Look further around it: `inferwatch incidents timeline {ident} --before 1h --after 1h{more}`.",
        f"- {_search_step(inc, more)}",
    ]
    if inc["status"] == "open":
        steps.append(f"- Take it: `inferwatch incidents ack {ident} --note \"…\"{more}`; once over: "
                     f"`inferwatch incidents resolve {ident} --note \"…\"{more}`.")
    elif inc["status"] == "acknowledged":
        steps.append(f"- Once over: `inferwatch incidents resolve {ident} --note \"…\"{more}`.")
    else:
        steps.append("- It is resolved; it reopens by itself if the same problem recurs within its time "
                     f"bucket. Not over after all: `inferwatch incidents reopen {ident} --note \"…\"{more}`.")
    return "## How to confirm / what to do\n\n" + "\n".join(steps)


def _search_step(inc: Mapping[str, Any], more: str = "") -> str:
    """The ``inferwatch events search`` that finds everything else the subject did."""
    kind, _, value = str(inc["subject"]).partition(":")
    flag = {"principal": "--principal", "model": "--model", "service": "--service"}.get(kind)
    if flag is None or not value:
        return (f"Search the stored events (`inferwatch events search --help`) for subject "
                f"{_code(inc['subject'], in_table=False)}.")
    command = f"inferwatch events search {flag} {shlex.quote(value)} --since {inc['first_seen']}{more}"
    return f"Everything else the {kind} did since: {_code(command, in_table=False)}."


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _esc(value: Any) -> str:
    """``value`` as inert Markdown text on one line: every character Markdown acts on escaped."""
    text = " ".join(str(value).split())
    return "".join("\\" + c if c in _MD_SPECIAL else c for c in text)


def _esc_block(text: str) -> str:
    """Multi-line text as inert Markdown, its line breaks kept."""
    return "  \n".join(_esc(line) for line in text.splitlines() if line.strip()) or "-"


def _code(text: str, *, in_table: bool = True) -> str:
    """``text`` as a code span (nothing inside is Markdown), delimited by more backticks than it
    holds; in a table cell ``|`` is escaped, which GitHub-flavoured tables read as ``|``."""
    text = " ".join(str(text).split())
    if in_table:
        text = text.replace("|", "\\|")
    fence = "`" * (_longest_run(text, "`") + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def readable_json(value: Any, *, sort_keys: bool = False) -> str:
    r"""Indented JSON that shows printable characters as they are (``AKIA…4VYD``, not
    ``AKIA\u20264VYD``) and escapes the rest, control characters of any kind included.

    >>> print(readable_json({"masked": "[SECRET:aws_access_key:AKIA…4VYD]", "x": "\x1b[2J\x9b"}))
    {
      "masked": "[SECRET:aws_access_key:AKIA…4VYD]",
      "x": "\u001b[2J\u009b"
    }
    """
    text = json.dumps(value, indent=2, default=str, ensure_ascii=False, sort_keys=sort_keys)
    return "".join(c if c.isprintable() or c == "\n" else json.dumps(c)[1:-1] for c in text)


def _json_block(data: Any) -> str:
    body = readable_json(data, sort_keys=True)
    fence = "`" * max(3, _longest_run(body, "`") + 1)
    return f"{fence}json\n{body}\n{fence}"


def _longest_run(text: str, char: str) -> int:
    longest = run = 0
    for c in text:
        run = run + 1 if c == char else 0
        longest = max(longest, run)
    return longest
