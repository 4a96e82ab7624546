"""Incidents: findings grouped under a deterministic fingerprint, with a lifecycle.

The same problem seen again updates the open incident (count, last seen, evidence) instead of
filing a second one; a resolved incident that recurs within its fingerprint's time bucket is
reopened. Fingerprints and ids derive only from the finding (detector, subject, model, event-time
bucket), so a replay of the same events yields the same incidents, and an event redelivered
after a crash updates, never duplicates.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, PrivateAttr

from inferwatch.detectors.base import MAX_SAMPLE_IDS, SEVERITY_ORDER, Finding, Kind, Severity
from inferwatch.detectors.store import IncidentQuery, IncidentStore, StoreUnavailable

Status = Literal["open", "acknowledged", "resolved"]
ACTIVE: tuple[Status, ...] = ("open", "acknowledged")
SYSTEM_ACTOR = "inferwatch"
ID_LENGTH = 16  # hex digits of the fingerprint that make an incident's id
MIN_ID_PREFIX = 4  # the shortest id prefix the stores look an incident up by
_MAX_DIGESTS = 256
_RESOLVE_PAGE = 500
_HELD_LOOKBACK = 5  # latest incidents of a detector, subject and model searched for a finding seen again
_MAX_ATTEMPTS = 5  # writes refused because the incident changed meanwhile, before giving up
log = logging.getLogger(__name__)


class IncidentError(ValueError):
    """A lifecycle request that cannot be carried out (unknown id, wrong state)."""


class NoSuchIncident(IncidentError):
    """No incident has this id, nor is it the prefix of exactly one (the CLI exits 1: not found)."""


class AlreadyInState(IncidentError):
    """The incident is already in the state asked for: nothing was changed (the CLI says so and
    succeeds, so resolving what someone else just resolved is no error)."""

    def __init__(self, incident: Incident) -> None:
        super().__init__(f"incident {incident.id} is already {incident.status}; nothing changed")
        self.incident = incident


AMBIGUOUS_SHOWN = 5
"""Incidents an ambiguous id prefix names in its error."""


def ambiguous_prefix(prefix: str, ids: Sequence[str]) -> NoSuchIncident:
    """The error for an id prefix shared by several incidents, naming them (a store's ``get``
    raises it: "not found" would send the reader looking for an incident that is there)."""
    shown = ", ".join(sorted(ids)[:AMBIGUOUS_SHOWN]) + (", ..." if len(ids) > AMBIGUOUS_SHOWN else "")
    return NoSuchIncident(f"id prefix {prefix!r} is shared by several incidents ({shown}): give more "
                          "of the id")


HISTORY_ORDER = ("in the order the changes were made; inferwatch's entries carry the event time of the "
                 "finding or window behind them, a person's the time they acted")
"""How an incident's history reads (``incidents show``, the report): its entries stand in the
order they were made, which their times need not follow (a replayed log's events are older than a
person's resolve, a late finding older than the change before it)."""


Action = Literal["opened", "acknowledged", "resolved", "reopened", "escalated", "noted"]
"""What a history entry records; ``noted`` is a person's note (``incidents note``), no change of status."""


class HistoryEntry(BaseModel):
    """One change in an incident's life: who did what, when, and why. ``at`` is event time for
    the changes inferwatch makes (``SYSTEM_ACTOR``), the wall clock for a person's."""

    at: datetime
    actor: str
    action: Action
    note: str | None = None


class Incident(BaseModel):
    """A problem a person should look at, with its evidence and its history."""

    id: str
    fingerprint: str
    detector: str
    kind: Kind
    severity: Severity
    score: float
    status: Status = "open"
    title: str
    summary: str
    service: str | None = None
    model: str | None = None
    subject: str
    evidence: dict[str, Any] = Field(default_factory=dict)
    event_ids: list[str] = Field(default_factory=list)
    trace_ids: list[str] = Field(default_factory=list)
    first_seen: datetime
    last_seen: datetime
    count: int = 1
    history: list[HistoryEntry] = Field(default_factory=list)
    finding_digests: list[str] = Field(default_factory=list, exclude=False, repr=False)
    # Findings at or before this event time were counted and their digests have since been
    # forgotten: one seen again (a redelivery after a crash) must not count a second time.
    digest_floor: datetime | None = Field(default=None, repr=False)
    # The highest severity any single finding had: what escalation by count and confidence
    # starts from (None in incidents stored before it was kept: the severity stands in).
    peak_severity: Severity | None = Field(default=None, repr=False)
    # The score of the finding whose title the incident carries: the most severe one (of
    # ``peak_severity``), of those the highest scored, the latest on a tie (see ``_merge``; None
    # in incidents stored before it was kept: the next finding as severe gives its title).
    title_score: float | None = Field(default=None, repr=False)
    # Extra labels for routing alerts (the detector's or the finding's), beside the fields.
    labels: dict[str, str] = Field(default_factory=dict)
    # When the incident last changed, by the wall clock of the process that changed it: what
    # the notifier follows to see changes (None in incidents stored before it was kept).
    updated_at: datetime | None = None
    # The store's revision of this incident when it was read or last written (None: it never
    # was). A store writes an incident that has one only while the stored incident is still at
    # that revision, so a change made meanwhile by another process (a person's `incidents ack`,
    # another detector) is never overwritten; see IncidentStore.upsert.
    _revision: Any = PrivateAttr(default=None)

    @property
    def revision(self) -> Any:
        """The store's revision of this incident when read or written (``None``: never was)."""
        return self._revision

    def at_revision(self, revision: Any) -> Incident:
        """Record the store's revision of this incident (for stores); returns ``self``.

        Stores record ``(tag, *parts)``, ``tag`` naming the store object (see :meth:`revision_in`)."""
        self._revision = revision
        return self

    def revision_in(self, tag: str) -> tuple[Any, ...] | None:
        """The parts of the revision recorded by the store object tagged ``tag``; ``None`` when
        it was never read through that object (new, or read elsewhere: written as it is)."""
        revision = self._revision
        if isinstance(revision, tuple) and revision and revision[0] == tag:
            return revision[1:]
        return None

    def public_dict(self) -> dict[str, Any]:
        """The incident as JSON-ready data for people and receivers (no bookkeeping fields)."""
        return self.model_dump(mode="json",
                               exclude={"finding_digests", "digest_floor", "peak_severity", "title_score"})


ESCALATING_KINDS: frozenset[str] = frozenset({"abuse", "integrity"})
COUNT_STEPS = (5, 50)  # findings absorbed: one severity step at each
CONFIDENT_SCORE = 0.9  # a repeated finding at least this confident is one step more
_SEVERITIES: tuple[Severity, ...] = ("info", "low", "medium", "high", "critical")


def escalated_severity(kind: str, peak: Severity, count: int, score: float, *,
                       escalates: bool = True) -> Severity:
    """The severity of an incident that has absorbed ``count`` findings, the most severe of
    them ``peak`` and the most confident ``score``, the newest one's ``escalates`` (see
    :attr:`Finding.escalates <inferwatch.detectors.base.Finding.escalates>`).

    Repeated abuse from one subject is worse than one attempt: for ``abuse`` and ``integrity``
    incidents the severity rises one step at 5 findings and another at 50, and one more from the
    second finding when the most confident of them scored at least 0.9 (any one of them: the
    incident keeps its peak score, not a count per score). Escalation alone stops at
    ``high``; ``critical`` comes only from a finding that says so. Drift and operational
    incidents repeat every window while a condition lasts, so they keep the peak finding's
    severity; so does an incident whose newest finding says it is such a condition
    (``escalates=False``): a finding that does escalate raises it again, counting them all.

    >>> escalated_severity("abuse", "low", 1, 0.95), escalated_severity("abuse", "low", 5, 0.6)
    ('low', 'medium')
    >>> escalated_severity("abuse", "low", 50, 0.95), escalated_severity("drift", "low", 50, 0.95)
    ('high', 'low')
    >>> escalated_severity("abuse", "low", 50, 0.95, escalates=False)
    'low'
    """
    level = SEVERITY_ORDER[peak]
    if not escalates or kind not in ESCALATING_KINDS or level >= SEVERITY_ORDER["high"]:
        return peak
    steps = sum(count >= n for n in COUNT_STEPS) + (count >= 2 and score >= CONFIDENT_SCORE)
    return _SEVERITIES[min(level + steps, SEVERITY_ORDER["high"])]


def fingerprint(detector: str, subject: str, model: str | None, bucket: int) -> str:
    """Deterministic identity of "this problem, about this subject, in this time bucket"."""
    raw = "\x1f".join((detector, subject, model or "", str(bucket)))
    return hashlib.sha256(raw.encode()).hexdigest()


_MODELS_MATCHED = 8


def models_to_match(finding: Finding) -> list[str | None]:
    """The models whose active incident ``finding`` belongs to, the first match winning: its own,
    then, for a per-caller window finding (``models`` in its evidence), the models it spans.

    Such a finding names the model only when the caller used one in that window (``None`` when
    several), so a caller moving between one model and several would otherwise split one
    continuing problem into two incidents. A finding of several models joins the open incident
    of any of them; a finding of one model joins an open incident of several.
    """
    models = finding.evidence.get("models")
    if not isinstance(models, list):
        return [finding.model]
    if finding.model is not None:
        return [finding.model, None]
    named = [m for m in models[:_MODELS_MATCHED] if isinstance(m, str)]
    return [None, *named]


def finding_digest(finding: Finding) -> str:
    """``<event time>:<hash>``: identity of one finding, with its time so that a digest
    forgotten to keep the list short still leaves a floor below which findings are known."""
    return f"{finding.time.timestamp():.6f}:{_finding_hash(finding)}"


def _finding_hash(finding: Finding) -> str:
    """Identity of one finding, so a redelivered event does not count twice."""
    raw = "\x1f".join(
        (finding.detector, finding.subject, finding.time.isoformat(), ",".join(finding.event_ids))
    )
    return hashlib.blake2b(raw.encode(), digest_size=12).hexdigest()


class IncidentManager:
    """Turns findings into stored incidents and carries out lifecycle changes.

    ``bucket_s`` is how long a problem may go unseen before a recurrence counts as a new
    incident (default one hour).
    """

    def __init__(
        self,
        store: IncidentStore,
        *,
        bucket_s: float = 3600.0,
        resolve_after_s: float | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.bucket_s = bucket_s
        self.resolve_after_s = resolve_after_s
        self.clock = clock

    def apply(self, findings: Iterable[Finding]) -> list[Incident]:
        """File or update incidents for ``findings``; store and return the changed ones.

        An incident someone else changed between our read and our write (a person's ack, a
        second detector process) is not overwritten: the store refuses the write, and the
        findings that went into it are applied again to the incident as it is now.
        """
        todo = list(findings)
        written: dict[str, Incident] = {}
        for _ in range(_MAX_ATTEMPTS):
            changed: dict[str, Incident] = {}
            sources: dict[str, list[Finding]] = {}
            for finding in todo:
                incident = self._absorb(finding, changed)
                if incident is not None:
                    changed[incident.id] = incident
                    sources.setdefault(incident.id, []).append(finding)
            if not changed:
                break
            now = self.clock()
            for incident in changed.values():
                incident.updated_at = now
            refused = set(self.store.upsert(list(changed.values())) or ())
            written.update((i, incident) for i, incident in changed.items() if i not in refused)
            if not refused:
                break
            log.info("incidents %s changed while being updated; applying their findings again",
                     ", ".join(sorted(refused)))
            todo = [f for i in changed if i in refused for f in sources[i]]
        else:
            raise StoreUnavailable(f"incidents kept changing while being updated ({_MAX_ATTEMPTS} tries)")
        return list(written.values())

    def resolve_quiet(self, now: datetime) -> list[Incident]:
        """Resolve active incidents not seen for ``resolve_after_s`` of event time before ``now``.

        ``now`` is event time (the end of the window just closed), so a replay resolves the same
        incidents as the live service did. A quiet incident that recurs later is reopened within
        its bucket, or filed anew after it. One a person reopened (``incidents reopen``) is left
        open for ``resolve_after_s`` after that, by the wall clock: its findings are as old as they
        were when it was resolved, and it would otherwise be resolved again at the next window.
        """
        if self.resolve_after_s is None:
            return []
        cutoff = datetime.fromtimestamp(now.timestamp() - self.resolve_after_s, UTC)
        query = IncidentQuery(status=ACTIVE, last_seen_before=cutoff, limit=_RESOLVE_PAGE)
        out: list[Incident] = []
        refused: set[str] = set()
        while True:  # each page resolved leaves the active set, so the next query pages on
            page = [i for i in self.store.list_incidents(query) if i.id not in refused]
            held = {i.id for i in page if self._reopened_by_a_person(i)}
            refused |= held  # not asked about again in this pass
            quiet = [self._quiet_resolved(i, now) for i in page if i.id not in held]
            if not quiet:
                return out
            # One changed meanwhile (seen again, or by a person) is left to the next pass.
            refused.update(self.store.upsert(quiet) or ())
            out.extend(i for i in quiet if i.id not in refused)
            if len(page) < _RESOLVE_PAGE:
                return out

    def _reopened_by_a_person(self, incident: Incident) -> bool:
        """Whether a person reopened ``incident`` less than ``resolve_after_s`` ago (wall clock)
        and nothing but notes has changed it since."""
        for entry in reversed(incident.history):
            if entry.action != "noted":
                return (entry.action == "reopened" and entry.actor != SYSTEM_ACTOR
                        and _seconds(self.clock() - entry.at) < (self.resolve_after_s or 0.0))
        return False

    def _quiet_resolved(self, incident: Incident, now: datetime) -> Incident:
        out = incident.model_copy(deep=True)
        out.status = "resolved"
        quiet_for = _age(self.resolve_after_s or 0.0)
        out.history.append(
            HistoryEntry(at=now, actor=SYSTEM_ACTOR, action="resolved", note=f"auto: quiet for {quiet_for}")
        )
        out.updated_at = self.clock()
        return out

    def _absorb(self, finding: Finding, pending: dict[str, Incident]) -> Incident | None:
        active = self._active_for(finding, pending)
        if active is not None and _seconds(finding.time - active.last_seen) <= self.bucket_s:
            return _merge(active, finding)
        if self._held_already(finding):
            return None  # a finding a resolved incident holds, seen again (a file replayed after a resolve)
        bucket = math.floor(finding.time.timestamp() / self.bucket_s)
        fp = fingerprint(finding.detector, finding.subject, finding.model, bucket)
        existing = pending.get(fp[:ID_LENGTH]) or self.store.get(fp[:ID_LENGTH])
        if existing is None:
            return _new_incident(fp, finding)
        if existing.status == "resolved":
            existing = existing.model_copy(deep=True)
            if self._reopens(existing, finding):
                existing.status = "open"
                existing.history.append(HistoryEntry(at=finding.time, actor=SYSTEM_ACTOR, action="reopened",
                                                     note=_what(finding)))
        return _merge(existing, finding)

    def _reopens(self, incident: Incident, finding: Finding) -> bool:
        """Whether ``finding`` reopens the resolved ``incident``: not when it is about events from
        before the resolve (a window that closed after it, findings a lagging detector process
        files late); it is then counted in the resolved incident, which stays resolved.

        A finding's time is event time. So is an automatic resolve's (the window end it ran at),
        while a person's carries the wall clock of their ``incidents resolve``; the two are
        compared only when the incident's newest finding was then within ``bucket_s`` (or
        ``resolve_after_s``) of it: live traffic, whose event times follow the wall clock. An
        incident of a replayed old log resolved since is on another clock (its events all happened
        long before the resolve): a finding of the same log reopens it, as one after the resolve.
        """
        resolved = next((h for h in reversed(incident.history) if h.action == "resolved"), None)
        if resolved is None:
            return True
        if resolved.actor != SYSTEM_ACTOR:
            current = max(self.bucket_s, self.resolve_after_s or 0.0)
            if abs(_seconds(resolved.at - incident.last_seen)) > current:
                return True
        return finding.time > resolved.at

    def _held_already(self, finding: Finding) -> bool:
        """Whether one of the latest incidents of the finding's detector, subject and model, in
        any state, already holds it: the incident its fingerprint names is only the one of the
        hour it starts, and an incident of several hours holds findings of later hours too."""
        digest = finding_digest(finding)
        query = IncidentQuery(detector=finding.detector, subject=finding.subject, model=finding.model,
                              limit=_HELD_LOOKBACK)
        for incident in self.store.list_incidents(query):
            floor = incident.digest_floor
            if incident.model == finding.model and (
                    digest in incident.finding_digests or (floor is not None and finding.time <= floor)):
                return True
        return False

    def _active_for(self, finding: Finding, pending: dict[str, Incident]) -> Incident | None:
        for model in models_to_match(finding):
            for incident in reversed(pending.values()):
                if (incident.detector, incident.subject, incident.model) == (
                    finding.detector,
                    finding.subject,
                    model,
                ) and incident.status in ACTIVE:
                    return incident
            found = self.store.find_active(finding.detector, finding.subject, model)
            if found is not None:
                return found
        return None

    def acknowledge(self, incident_id: str, actor: str, note: str | None = None) -> Incident:
        """Mark an open incident as being handled by ``actor``."""
        return self._transition(incident_id, "acknowledged", actor, note, allowed=("open",))

    def resolve(self, incident_id: str, actor: str, note: str | None = None) -> Incident:
        """Close an incident; it reopens if the same problem recurs within its bucket."""
        return self._transition(incident_id, "resolved", actor, note, allowed=ACTIVE)

    def reopen(self, incident_id: str, actor: str, note: str | None = None) -> Incident:
        """Open a resolved or acknowledged incident again (resolved too soon, or nobody is on it
        after all): it is recorded as ``reopened`` by ``actor``, as a recurrence is by inferwatch."""
        return self._transition(incident_id, "open", actor, note, allowed=("acknowledged", "resolved"))

    def add_note(self, incident_id: str, actor: str, note: str) -> Incident:
        """Keep ``note`` by ``actor`` in the incident's history (``noted``); its status stays."""
        return self._change(incident_id, "while a note was being added", lambda i: ("noted", i.status),
                            actor, note)

    def _transition(
        self, incident_id: str, status: Status, actor: str, note: str | None, allowed: Sequence[Status]
    ) -> Incident:
        def change(incident: Incident) -> tuple[Action, Status]:
            if incident.status == status:
                raise AlreadyInState(incident)
            if incident.status not in allowed:
                raise IncidentError(wrong_state(incident, status))
            return _ACTION_OF[status], status

        return self._change(incident_id, f"while being marked {status}", change, actor, note)

    def _change(self, incident_id: str, when: str, change: Callable[[Incident], tuple[Action, Status]],
                actor: str, note: str | None) -> Incident:
        """Read the incident, give it the status ``change`` says and a history entry of its action by
        ``actor``, and write it, again when the detector updated it between the read and the write
        (both stores refuse a write of an incident changed since it was read)."""
        for _ in range(_MAX_ATTEMPTS):
            incident = self.store.get(incident_id)
            if incident is None:
                raise NoSuchIncident(no_such_incident(incident_id))
            action, status = change(incident)
            incident = incident.model_copy(deep=True)
            incident.status = status
            now = self.clock()
            incident.history.append(HistoryEntry(at=now, actor=actor, action=action, note=note))
            incident.updated_at = now
            if not self.store.upsert([incident]):
                return incident
        raise IncidentError(f"incident {incident_id} kept changing {when}; try again")


_ACTION_OF: dict[Status, Action] = {
    "open": "reopened", "acknowledged": "acknowledged", "resolved": "resolved"}
"""The history action of a person's change to each status."""


def wrong_state(incident: Incident, status: Status) -> str:
    """Why ``incident`` cannot be given ``status`` (an acknowledge of a resolved incident), naming
    it by its full id, not the prefix typed, and what to do instead.

    >>> wrong_state(Incident.model_construct(id="2fc8a1b2c3d4e5f6", status="resolved"), "acknowledged")
    'incident 2fc8a1b2c3d4e5f6 is resolved; cannot mark it acknowledged: reopen it first (...)'
    """
    out = f"incident {incident.id} is {incident.status}; cannot mark it {status}"
    if incident.status == "resolved":
        out += f": reopen it first (`inferwatch incidents reopen {incident.id}`)"
    return out


def _age(seconds: float) -> str:
    """``90`` → ``1m30s``; ``7200`` → ``2h``."""
    rest = int(seconds)
    parts = []
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts) or "0s"


def _seconds(delta: Any) -> float:
    return float(delta.total_seconds())


def no_such_incident(incident_id: str) -> str:
    """What to say when no incident has this id or unique id prefix."""
    if len(incident_id) < MIN_ID_PREFIX:
        return (f"no incident with id {incident_id!r}: an id prefix needs at least {MIN_ID_PREFIX} "
                "characters (see `inferwatch incidents list`)")
    return (f"no incident with id {incident_id!r}, nor a single incident it is a prefix of "
            "(see `inferwatch incidents list`)")


def _new_incident(fp: str, finding: Finding) -> Incident:
    return Incident(
        id=fp[:ID_LENGTH],
        fingerprint=fp,
        detector=finding.detector,
        kind=finding.kind,
        severity=finding.severity,
        score=finding.score,
        title=finding.title,
        summary=finding.summary,
        service=finding.service,
        model=finding.model,
        subject=finding.subject,
        evidence=dict(finding.evidence),
        event_ids=finding.event_ids[:MAX_SAMPLE_IDS],
        trace_ids=finding.trace_ids[:MAX_SAMPLE_IDS],
        first_seen=finding.time,
        last_seen=finding.time,
        history=[HistoryEntry(at=finding.time, actor=SYSTEM_ACTOR, action="opened", note=_what(finding))],
        finding_digests=[finding_digest(finding)],
        peak_severity=finding.severity,
        title_score=finding.score,
    )


def _merge(incident: Incident, finding: Finding) -> Incident | None:
    digest = finding_digest(finding)
    floor = incident.digest_floor
    if digest in incident.finding_digests or (floor is not None and finding.time <= floor):
        return None  # the same finding again (a redelivered event): nothing new
    out = incident.model_copy(deep=True)
    out.count += 1
    out.first_seen = min(out.first_seen, finding.time)
    out.last_seen = max(out.last_seen, finding.time)
    digests = [*out.finding_digests, digest]
    if len(digests) > _MAX_DIGESTS:
        forgotten, digests = digests[:-_MAX_DIGESTS], digests[-_MAX_DIGESTS:]
        newest = max(datetime.fromtimestamp(float(d.split(":", 1)[0]), UTC) for d in forgotten)
        out.digest_floor = newest if floor is None else max(floor, newest)
    out.finding_digests = digests
    latest = finding.time >= incident.last_seen  # its evidence becomes the incident's
    out.event_ids = _sample_ids(out.event_ids, finding.event_ids, latest)
    out.trace_ids = _sample_ids(out.trace_ids, finding.trace_ids, latest)
    out.score = max(out.score, finding.score)
    peak = out.peak_severity or out.severity
    # The title is the most severe finding's, then the highest scored (the latest on a tie), as
    # a pager keeps the triggering alert's: a flood's 635 requests are not retitled by the 233 of
    # its tail, nor a drift incident by a borderline window. Summary and evidence are the latest's.
    titled = (SEVERITY_ORDER[peak], -1.0 if out.title_score is None else out.title_score)
    ranked = (SEVERITY_ORDER[finding.severity], finding.score)
    if ranked > titled or (ranked == titled and latest):
        out.title, out.title_score = finding.title, finding.score
    if SEVERITY_ORDER[finding.severity] > SEVERITY_ORDER[peak]:
        peak = finding.severity
    out.peak_severity = peak
    severity = escalated_severity(out.kind, peak, out.count, out.score, escalates=finding.escalates)
    if SEVERITY_ORDER[severity] > SEVERITY_ORDER[out.severity]:
        out.severity = severity
        # Named, since the incident shows its latest finding's summary, which may be a milder one's.
        reason = _what(finding) if severity == finding.severity else (
            f"{severity}: {out.count} findings, highest score {out.score:.2f}")
        out.history.append(HistoryEntry(at=finding.time, actor=SYSTEM_ACTOR, action="escalated", note=reason))
    if latest:
        evidence = dict(finding.evidence)
        earlier = _drifted_earlier(incident.evidence, evidence)
        if earlier:
            evidence["drifted_earlier"] = earlier
        _keep_union(incident.evidence, evidence)
        out.summary, out.evidence = finding.summary, evidence
    return out


_EARLIER_MAX = 20
_UNIONS: dict[str, str] = {"attack_accepted_principals": "attack_accepted_count"}
"""Evidence lists an incident keeps the union of over its findings (and the key counting it):
with several detector processes each files its share of a shared subject — the keys that worked
from one address, split by partition — and the newest share alone would name only some."""
_UNION_MAX = 200


def _keep_union(before: dict[str, Any], now: dict[str, Any]) -> None:
    """Widen ``now``'s :data:`_UNIONS` lists with ``before``'s (sorted, at most 200 kept).

    >>> now = {"attack_accepted_principals": ["p_b"], "attack_accepted_count": 1}
    >>> _keep_union({"attack_accepted_principals": ["p_a", "p_b"], "attack_accepted_count": 2}, now)
    >>> now
    {'attack_accepted_principals': ['p_a', 'p_b'], 'attack_accepted_count': 2}
    """
    for key, counted in _UNIONS.items():
        old, new = before.get(key), now.get(key)
        if not isinstance(old, list) or not isinstance(new, list):
            continue
        union = sorted({str(item) for item in (*old, *new)})
        now[key] = union[:_UNION_MAX]
        if isinstance(now.get(counted), int):
            now[counted] = max(len(union), int(now[counted]), int(before.get(counted) or 0))


def _drifted_earlier(before: dict[str, Any], now: dict[str, Any]) -> list[dict[str, Any]]:
    """What drifted in the incident's earlier findings but not in its newest (whose evidence it
    shows), newest first: each feature with the end of the last window it drifted in and, when
    that finding had them, its effect and adjusted p-value. Drift evidence lists ``drifted``;
    evidence without that list has nothing to carry (at most :data:`_EARLIER_MAX` features).

    >>> before = {"drifted": ["input.a", "input.b"], "window_end": "2026-01-01T00:01:00Z",
    ...           "features": {"input.a": {"effect": {"name": "ks_d", "value": 0.3}, "p_adjusted": 0.001}}}
    >>> now = {"drifted": ["input.b"], "window_end": "2026-01-01T00:02:00Z"}
    >>> [(i["feature"], i["last_window_end"], i["p_adjusted"]) for i in _drifted_earlier(before, now)]
    [('input.a', '2026-01-01T00:01:00Z', 0.001)]
    """
    drifted_now = now.get("drifted")
    drifted_before = before.get("drifted")
    if not isinstance(drifted_now, list) or not isinstance(drifted_before, list):
        return []
    features = before.get("features")
    if not isinstance(features, dict):
        features = {}
    out: list[dict[str, Any]] = []
    for name in drifted_before:
        if name in drifted_now or any(item["feature"] == name for item in out):
            continue
        item: dict[str, Any] = {"feature": name, "last_window_end": before.get("window_end")}
        detail = features.get(name)
        if isinstance(detail, dict):
            item.update({key: detail[key] for key in ("effect", "p_adjusted") if key in detail})
        out.append(item)
    carried = before.get("drifted_earlier")
    for item in carried if isinstance(carried, list) else []:
        if (isinstance(item, dict) and item.get("feature") not in drifted_now
                and all(item.get("feature") != kept["feature"] for kept in out)):
            out.append(item)
    return out[:_EARLIER_MAX]


def _what(finding: Finding) -> str:
    """A history note naming the finding behind a change: ``high: <title> (score 0.97)``."""
    title = finding.title if len(finding.title) <= _NOTE_TITLE else finding.title[: _NOTE_TITLE - 1] + "…"
    return f"{finding.severity}: {title} (score {finding.score:.2f})"


_NOTE_TITLE = 200


def _sample_ids(current: list[str], new: Sequence[str], newest: bool) -> list[str]:
    """The incident's sample ids after a finding with ``new`` ids: the first ones seen stay (how it
    started); the newest finding's, whose evidence the incident shows, are kept too (up to half
    the sample), last, so the sample events always include the ones the evidence speaks of."""
    if not newest:
        return _extend_unique(current, new)
    fresh = list(dict.fromkeys(new))
    if not fresh:
        return list(current)
    taken = set(fresh)
    earlier = [item for item in current if item not in taken]
    latest = fresh[: max(MAX_SAMPLE_IDS // 2, MAX_SAMPLE_IDS - len(earlier))]
    return earlier[: MAX_SAMPLE_IDS - len(latest)] + latest


def _extend_unique(current: list[str], new: Iterable[str]) -> list[str]:
    out = list(current)
    for item in new:
        if len(out) >= MAX_SAMPLE_IDS:
            break
        if item not in out:
            out.append(item)
    return out
