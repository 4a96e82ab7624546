"""Integrity: is the monitoring itself whole? Events lost on their way, and services gone silent.

Every other detector judges the events it is given; this one judges whether it is given all of
them. Two signals, kind ``integrity``:

* **lost events**, per agent instance (subject ``agent:<id>``). An agent numbers the events it
  captures (``agent.seq``, from 0, one counter per process) and stamps on each event it sends how
  many it had lost by then (``agent.dropped``: queue full, bus unavailable, spool full; see
  :mod:`inferwatch.agent.shipper`). At each window close the detector declares **missing** every
  sequence number below the highest one seen by the previous close that has not arrived (one
  window of grace for events that travel out of order across partitions), and compares them with
  what the agent counted: gaps the agent counted are losses it knows about (its bus was down, its
  queue overflowed); gaps it did not count were lost **after** the agent — in transit, deleted
  from the topic, or refused by the detector service as malformed (``inferwatch events
  dead-letters``) — and weigh more. A window with at least ``min_lost`` newly lost events gives
  one finding for the agent, naming the missing ranges and the events right after them.
* **silence**, per service (subject ``service:<name>``): a service that has sent at least
  ``min_events`` events a window on average over at least ``learn_windows`` windows, and then
  sends nothing for ``silent_after_s`` seconds *and* for ``gap_factor`` times the longest pause
  it took before, is flagged once: its model server is down, or its agents stopped shipping.
  Services, not agent instances, are watched: a deploy or a scale-in ends agent instances every
  day, and a service whose traffic moves to new instances is not silent. Live, when no event at
  all arrives (every service silent), the detector service tells the detector how much time has
  passed (:meth:`IntegrityDetector.idle`); in a replay, a pause inside the file is reported when
  the service's next event ends it.

What each process can judge: gaps in ``agent.seq`` need every event of an agent, so they are
judged only while this process reads every partition of the event topic (the embedded bus, a
replay, or a consumer group of one). With several detector processes each reads a share of
every agent's events (they are keyed by principal) and the detector service turns the gap
accounting off (:meth:`IntegrityDetector.set_complete_view`); the agent's own count
(``agent.dropped``) and silence are still judged, silence on this process's share of the
traffic. Events without ``agent`` (other producers) are counted in ``unidentified`` only.

State is bounded: at most ``max_agents`` agents and ``max_services`` services (the least
recently seen are forgotten first), each forgotten after ``forget_after_s`` without an event;
an agent's out-of-order sequence numbers are held until declared (at most ``MAX_PENDING``; past
that the lowest gap is declared at once).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from inferwatch.collectors.event import EventView, InferenceEvent
from inferwatch.detectors.base import MAX_SAMPLE_IDS, Finding, Severity
from inferwatch.detectors.state import WindowBounds, iso_utc

MAX_PENDING = 200_000
"""Out-of-order sequence numbers held per agent before its lowest gap is declared at once."""
RANGES_SHOWN = 10
"""Missing ``agent.seq`` ranges spelt out in a finding's evidence."""
REASONS_KEPT = 5
"""Distinct reasons for refused events kept per agent and window."""
AGENTS_NAMED = 10
"""Agents named in a silent service's evidence (the most recently seen)."""
SPARSE_RULES = ((100, 0.9), (1_000, 0.5))
"""``(judged, share)``: an agent with at least ``share`` of ``judged`` or more sequence numbers
missing (and not counted by it) is read only in part here — a filtered file, a sample, another
consumer on the same partitions — rather than losing events: reported once, then not judged."""


@dataclass(slots=True)
class _Agent:
    service: str
    first: float
    last: float
    window_events: int = 0
    # agent.seq accounting: every number below ``low`` is either seen or declared missing.
    low: int | None = None
    first_low: int = 0  # where the accounting started
    partial: bool = False  # most of its numbers never arrive here: not judged (see SPARSE_SHARE)
    pending: set[int] = field(default_factory=set)
    max_seq: int = -1
    cut: int = -1  # the highest number seen by the previous close: gaps below it are declared now
    missing: int = 0  # declared missing, in total
    late: int = 0  # arrived below ``low``: repeats, or declared missing and came after all
    ranges: list[tuple[int, int]] = field(default_factory=list)  # declared since the last finding
    after_gap: dict[int, str] = field(default_factory=dict)  # seq -> id of events that jumped ahead
    # agent.dropped: what the agent counted itself
    dropped_first: int | None = None
    dropped_max: int = 0
    dropped_told: int = 0  # dropped_max at the last close
    unexplained_told: int = 0
    # events refused as malformed (their number salvaged from the refused line)
    window_refused: int = 0
    refused_reasons: dict[str, int] = field(default_factory=dict)  # this window's, a few


@dataclass(slots=True)
class _Service:
    first: float
    last: float
    events: int = 0
    windows: int = 0
    longest_gap: float = 0.0
    flagged: bool = False  # silent and reported; cleared by its next event
    agents: dict[str, float] = field(default_factory=dict)  # agent id -> its last event, latest last


class IntegrityDetector:
    """Lost events per agent (``agent.seq`` gaps and ``agent.dropped``) and silent services.

    Options (keyword only): ``min_lost`` events lost in a window that make a finding (1);
    ``seq_gaps`` judge gaps in ``agent.seq`` (True; the service turns it off while this process
    reads only some partitions); ``silent_after_s`` the shortest silence flagged (600);
    ``gap_factor`` how many times its longest earlier pause a silence must last (3.0);
    ``min_events`` average events a window a service needs to be watched for silence (10);
    ``learn_windows`` windows a service must have been seen first (30); ``max_agents`` (10_000)
    and ``max_services`` (1_000) held at most; ``forget_after_s`` without an event before an agent
    or service is forgotten (86_400).

    >>> detector = IntegrityDetector()
    >>> detector.name, detector.min_lost, detector.silent_after_s
    ('integrity', 1, 600.0)
    """

    name: ClassVar[str] = "integrity"

    def __init__(
        self,
        *,
        min_lost: int = 1,
        seq_gaps: bool = True,
        silent_after_s: float = 600.0,
        gap_factor: float = 3.0,
        min_events: int = 10,
        learn_windows: int = 30,
        max_agents: int = 10_000,
        max_services: int = 1_000,
        forget_after_s: float = 86_400.0,
    ) -> None:
        if min_lost < 1 or min_events < 1 or learn_windows < 1 or max_agents < 1 or max_services < 1:
            raise ValueError("min_lost, min_events, learn_windows, max_agents and max_services must be >= 1, "
                             f"got {min_lost}, {min_events}, {learn_windows}, {max_agents}, {max_services}")
        if silent_after_s <= 0 or forget_after_s <= 0:
            raise ValueError(f"silent_after_s and forget_after_s must be > 0, got {silent_after_s}, "
                             f"{forget_after_s}")
        if gap_factor < 1.0:
            raise ValueError(f"gap_factor must be >= 1, got {gap_factor}")
        self.min_lost = min_lost
        self.seq_gaps = seq_gaps
        self.silent_after_s = float(silent_after_s)
        self.gap_factor = gap_factor
        self.min_events = min_events
        self.learn_windows = learn_windows
        self.max_agents = max_agents
        self.max_services = max_services
        self.forget_after_s = float(forget_after_s)
        self.complete_view = True
        """Whether this process reads every event (the service says; see the module docstring)."""
        self.unidentified = 0
        """Events without ``agent``: not accounted."""
        self._agents: dict[str, _Agent] = {}  # least recently seen first
        self._services: dict[str, _Service] = {}  # least recently seen first
        self._window_first: float | None = None
        self._bounds = WindowBounds()
        self._found: list[Finding] = []  # silences ended by an event, reported with the next return
        self._latest: float | None = None  # the newest event time seen

    # --- what the service tells it ----------------------------------------------------------------
    def set_complete_view(self, complete: bool) -> None:
        """Whether this process now reads every partition of the event topic. Gap accounting
        starts afresh either way (what was held belongs to another share of the events)."""
        if complete == self.complete_view:
            return
        self.complete_view = complete
        for agent in self._agents.values():
            agent.low, agent.pending, agent.cut, agent.ranges, agent.after_gap = None, set(), -1, [], {}
            agent.max_seq, agent.partial = -1, False

    def refused(self, agent_id: str, seq: int, reason: str) -> None:
        """An event of this agent was refused as malformed (the detector service dead-lettered it,
        or a replay skipped the line): it is counted as refused, and its number as arrived."""
        agent = self._agents.get(agent_id)
        if agent is None:
            now = self._latest if self._latest is not None else 0.0
            agent = self._new_agent(agent_id, "unknown", now)
        agent.window_refused += 1
        reasons = agent.refused_reasons
        if reason in reasons or len(reasons) < REASONS_KEPT:
            reasons[reason] = reasons.get(reason, 0) + 1
        if self.judging_gaps and not agent.partial:
            self._count_seq(agent, seq, "")

    @property
    def judging_gaps(self) -> bool:
        return self.seq_gaps and self.complete_view

    # --- events -----------------------------------------------------------------------------------
    def observe(self, event: InferenceEvent) -> list[Finding]:
        self._take(event)
        return self._drain()

    def observe_views(self, events: Sequence[EventView]) -> list[Finding]:
        for event in events:
            self._take(event)
        return self._drain()

    def _drain(self) -> list[Finding]:
        if not self._found:
            return []
        found, self._found = self._found, []
        return found

    def _take(self, event: EventView) -> None:
        ts = event.ts
        if self._window_first is None:
            self._window_first = ts
        if self._latest is None or ts > self._latest:
            self._latest = ts
        service = self._service(event.service, ts)
        agent_info = event.agent
        if agent_info is None:
            self.unidentified += 1
            return
        agent = self._agents.get(agent_info.id)
        if agent is None:
            agent = self._new_agent(agent_info.id, event.service, ts)
        else:
            self._agents[agent_info.id] = self._agents.pop(agent_info.id)  # most recently seen last
            if ts > agent.last:
                agent.last = ts
        named = service.agents
        if named.pop(agent_info.id, None) is None and len(named) >= AGENTS_NAMED:
            del named[next(iter(named))]
        named[agent_info.id] = ts
        agent.window_events += 1
        dropped = agent_info.dropped
        if dropped is not None:
            if agent.dropped_first is None:
                agent.dropped_first = agent.dropped_max = agent.dropped_told = dropped
            elif dropped > agent.dropped_max:
                agent.dropped_max = dropped
        if self.judging_gaps and not agent.partial:
            self._count_seq(agent, agent_info.seq, event.id)

    def _service(self, name: str, ts: float) -> _Service:
        service = self._services.get(name)
        if service is None:
            if len(self._services) >= self.max_services:
                del self._services[next(iter(self._services))]
            service = self._services[name] = _Service(first=ts, last=ts)
        else:
            self._services[name] = self._services.pop(name)
            gap = ts - service.last
            if gap > 0:
                silent = service.flagged or self._silent(service, gap)
                if not service.flagged and silent:
                    self._found.append(self._silence_finding(name, service, ts, ended=True))
                if service.windows >= 1 and not silent:  # a silence is not a pause to learn
                    service.longest_gap = max(service.longest_gap, gap)  # (nor the first window's)
                service.last = ts
            service.flagged = False
        service.events += 1
        return service

    def _new_agent(self, agent_id: str, service: str, ts: float) -> _Agent:
        if len(self._agents) >= self.max_agents:
            del self._agents[next(iter(self._agents))]
        agent = self._agents[agent_id] = _Agent(service=service, first=ts, last=ts)
        return agent

    @staticmethod
    def _count_seq(agent: _Agent, seq: int, event_id: str) -> None:
        if agent.low is None:
            agent.low = agent.first_low = seq
        if seq < agent.low or seq in agent.pending:
            agent.late += 1
            return
        if seq > agent.max_seq:
            if (seq > agent.max_seq + 1 and agent.max_seq >= 0 and event_id
                    and len(agent.after_gap) < MAX_SAMPLE_IDS):
                agent.after_gap[seq] = event_id
            agent.max_seq = seq
        if seq != agent.low:
            agent.pending.add(seq)
            if len(agent.pending) > MAX_PENDING:
                _declare(agent, min(agent.pending) - 1)
            return
        low, pending = seq + 1, agent.pending
        while low in pending:
            pending.remove(low)
            low += 1
        agent.low = low

    # --- windows ----------------------------------------------------------------------------------
    def close_window(self, end: datetime) -> list[Finding]:
        end_ts = end.timestamp()
        bounds = (self._bounds.close(end_ts, self._window_first), end_ts)
        self._window_first = None
        findings = self._drain()
        for agent_id, agent in self._agents.items():
            finding = self._judge_agent(agent_id, agent, bounds)
            if finding is not None:
                findings.append(finding)
            agent.window_events = 0
        for service in self._services.values():
            if service.first < end_ts:
                service.windows += 1
        findings += self._silences(end_ts)
        self._forget(end_ts)
        return findings

    def idle(self, now: datetime) -> list[Finding]:
        """No event has arrived for a while: event time is taken to have reached ``now``
        (the detector service's estimate). Returns the silences that passed their threshold."""
        return self._drain() + self._silences(now.timestamp())

    def _silent(self, service: _Service, gap: float) -> bool:
        return (service.windows >= self.learn_windows
                and service.events >= self.min_events * service.windows
                and gap >= max(self.silent_after_s, self.gap_factor * service.longest_gap))

    def _silences(self, now: float) -> list[Finding]:
        findings = []
        for name, service in self._services.items():
            if not service.flagged and self._silent(service, now - service.last):
                service.flagged = True
                findings.append(self._silence_finding(name, service, now, ended=False))
        return findings

    def _forget(self, now: float) -> None:
        horizon = now - self.forget_after_s
        for table in (self._agents, self._services):
            stale = [key for key, item in table.items() if item.last < horizon]
            for key in stale:
                del table[key]

    def _judge_agent(self, agent_id: str, agent: _Agent, bounds: tuple[float, float]) -> Finding | None:
        declared, cut = 0, agent.cut
        judged = self.judging_gaps and not agent.partial
        if judged and agent.low is not None:
            declared = _declare(agent, cut)
            agent.cut = agent.max_seq
        reported = agent.dropped_max - agent.dropped_told
        agent.dropped_told = agent.dropped_max
        counted = agent.dropped_max - (agent.dropped_first if agent.dropped_first is not None else 0)
        unexplained_total = max(0, agent.missing - counted) if judged else 0
        unexplained = unexplained_total - agent.unexplained_told
        if unexplained < 0:  # the agent's count caught up with gaps declared before
            unexplained = 0
        agent.unexplained_told = max(agent.unexplained_told, unexplained_total)
        span = (agent.low or 0) - agent.first_low
        sparse = any(span >= least and unexplained_total >= share * span for least, share in SPARSE_RULES)
        if judged and sparse:
            agent.partial, agent.pending, agent.after_gap = True, set(), {}
            agent.ranges.clear()
            return self._sparse_finding(agent_id, agent, bounds, span=span, missing=unexplained_total,
                                        reported=reported)
        # Gaps the agent counted were reported when its count arrived (on the event right after
        # them, a window before they are declared): only the uncounted ones are news here.
        finding = None
        refused, agent.window_refused = agent.window_refused, 0
        if reported + unexplained + refused >= self.min_lost:
            finding = self._loss_finding(agent_id, agent, bounds, declared=declared, reported=reported,
                                         unexplained=unexplained, refused=refused)
        agent.refused_reasons = {}
        agent.ranges.clear()
        # Events right after a gap not declared yet wait for the close that declares it.
        agent.after_gap = {seq: event_id for seq, event_id in agent.after_gap.items() if seq > cut + 1}
        return finding

    # --- findings ---------------------------------------------------------------------------------
    def _loss_finding(self, agent_id: str, agent: _Agent, bounds: tuple[float, float], *, declared: int,
                      reported: int, unexplained: int, refused: int) -> Finding:
        seen = agent.window_events
        lost = reported + unexplained + refused
        share = lost / (lost + seen) if lost + seen else 1.0
        severity: Severity
        if unexplained >= self.min_lost:
            severity = "high" if unexplained >= 100 or share >= 0.05 else "medium"
        elif refused >= self.min_lost:
            severity = "medium"
        else:
            severity = "medium" if reported >= 1_000 or share >= 0.1 else "low"
        ranges = [_spelt(a, b) for a, b in agent.ranges[:RANGES_SHOWN]]
        still_open = [_spelt(a, b) for a, b in _open_gaps(agent)[:RANGES_SHOWN]]
        after = [event_id for seq, event_id in sorted(agent.after_gap.items())
                 if any(b + 1 == seq for _, b in agent.ranges)] or list(agent.after_gap.values())
        parts = []
        if reported:
            parts.append(f"the agent counted {reported} dropped (its bus unavailable, queue or spool "
                         "full: see its inferwatch_agent_events_dropped_total{reason} metric and "
                         "agent_stats log lines)")
        if refused:
            why = ", ".join(f"{n}x {reason[:120]!r}" for reason, n in
                            sorted(agent.refused_reasons.items(), key=lambda item: -item[1]))
            parts.append(f"{refused} refused as malformed by the detector service ({why}; "
                         "`inferwatch events dead-letters` has them)")
        if unexplained:
            parts.append(f"{unexplained} missing from agent.seq that the agent did not count: lost after it "
                         "(in transit, deleted from the topic, or refused as malformed: check "
                         "`inferwatch events dead-letters`)")
        shown = ranges or still_open
        missing_text = f"; missing agent.seq: {', '.join(shown)}" if shown else ""
        more = len(agent.ranges) - RANGES_SHOWN
        if more > 0:
            missing_text += f" and {more} more range(s)"
        who = f"Agent {agent_id} ({agent.service})"
        title = (f"{who}: {refused} event(s) refused as malformed in one window" if refused == lost
                 else f"{who} lost {lost} event(s) in one window"
                 + (" after it sent them" if unexplained else ""))
        evidence: dict[str, Any] = {
            "signal": "lost_events",
            "agent_id": agent_id,
            "events_seen": seen,
            "lost": lost,
            "dropped_by_agent": reported,
            "lost_after_agent": unexplained,
            "refused_as_malformed": refused,
            "refused_reasons": dict(agent.refused_reasons),
            "seq_missing": declared,
            "seq_missing_ranges": ranges,
            "seq_gaps_open": still_open,
            "seq_gaps_judged": self.judging_gaps,
            "totals": {"seq_missing": agent.missing, "late_or_repeated": agent.late,
                       "dropped_by_agent_since_watched": agent.dropped_max - (agent.dropped_first or 0),
                       "dropped_by_agent_reported": agent.dropped_max},
            "window_start": iso_utc(bounds[0]),
            "window_end": iso_utc(bounds[1]),
            "thresholds": {"min_lost": self.min_lost},
        }
        return Finding(
            detector=self.name,
            kind="integrity",
            severity=severity,
            score=round(min(1.0, 0.3 + share) if unexplained else min(1.0, share), 4),
            title=title,
            summary=f"Between {iso_utc(bounds[0])} and {iso_utc(bounds[1])} agent {agent_id} of service "
            f"{agent.service} delivered {seen} event(s) and lost {lost}: " + "; ".join(parts) + missing_text
            + ". Detectors did not see the lost events: what they judged in this window is incomplete",
            subject=f"agent:{agent_id}",
            time=datetime.fromtimestamp(bounds[1], UTC),
            service=agent.service,
            evidence=evidence,
            event_ids=after[:MAX_SAMPLE_IDS],
        )

    def _sparse_finding(self, agent_id: str, agent: _Agent, bounds: tuple[float, float], *, span: int,
                        missing: int, reported: int) -> Finding:
        evidence: dict[str, Any] = {
            "signal": "sparse_sequence",
            "agent_id": agent_id,
            "seq_judged": span,
            "seq_missing": missing,
            "missing_share": round(missing / span, 4),
            "dropped_by_agent": reported,
            "window_start": iso_utc(bounds[0]),
            "window_end": iso_utc(bounds[1]),
            "thresholds": {"sparse": [{"seq_judged_from": least, "missing_share": share}
                                      for least, share in SPARSE_RULES]},
        }
        return Finding(
            detector=self.name,
            kind="integrity",
            severity="low",
            score=0.2,
            title=f"Agent {agent_id} ({agent.service}): most of its events never arrive here ({missing:,} of "
            f"{span:,} sequence numbers); its gaps are no longer judged",
            summary=f"Of agent {agent_id}'s sequence numbers {agent.first_low}..{(agent.low or 1) - 1}, "
            f"{missing:,} ({missing / span:.0%}) never arrived and the agent did not count them as dropped. "
            "That is what a part of its events looks like — a filtered or sampled file, or another "
            "consumer reading the same partitions — more than lost events, so this detector stops "
            "judging its gaps (its own count, agent.dropped, still is). If every event should be here, "
            "events are being removed wholesale: check `inferwatch events dead-letters` and the topic",
            subject=f"agent:{agent_id}",
            time=datetime.fromtimestamp(bounds[1], UTC),
            service=agent.service,
            evidence=evidence,
        )

    def _silence_finding(self, name: str, service: _Service, now: float, *, ended: bool) -> Finding:
        gap = now - service.last
        rate = service.events / max(service.windows, 1)
        threshold = max(self.silent_after_s, self.gap_factor * service.longest_gap)
        recent = sorted(service.agents.items(), key=lambda item: -item[1])[:AGENTS_NAMED]
        severity: Severity = "high" if rate >= 10 * self.min_events else "medium"
        when = (f"sent nothing from {iso_utc(service.last)} to {iso_utc(now)}" if ended
                else f"has sent nothing since {iso_utc(service.last)}")
        title = (f"Service {name} sent nothing for {_duration(gap)}" if ended
                 else f"Service {name} has gone silent: nothing for {_duration(gap)}")
        evidence: dict[str, Any] = {
            "signal": "silence",
            "service": name,
            "last_event": iso_utc(service.last),
            "silent_for_s": round(gap, 1),
            "ended": iso_utc(now) if ended else None,
            "usual_events_per_window": round(rate, 1),
            "windows_seen": service.windows,
            "longest_earlier_pause_s": round(service.longest_gap, 1),
            "thresholds": {"silent_after_s": self.silent_after_s, "gap_factor": self.gap_factor,
                           "flagged_after_s": round(threshold, 1), "min_events": self.min_events},
            "agents_last_seen": {agent_id: iso_utc(ts) for agent_id, ts in recent},
            "complete_view": self.complete_view,
        }
        return Finding(
            detector=self.name,
            kind="integrity",
            severity=severity,
            score=round(min(1.0, gap / (gap + threshold)), 4),
            title=title,
            summary=f"Service {name} {when} ({_duration(gap)}); it usually sends about {rate:.0f} events a "
            f"window and its longest pause before was {_duration(service.longest_gap)}. Its model server is "
            "down or unreachable, or its agents stopped shipping events (check the agents' "
            "inferwatch_agent_events_dropped_total and bus_unavailable log lines)"
            + ("" if self.complete_view else
               "; this detector process reads only some partitions, so this is its share of the traffic"),
            subject=f"service:{name}",
            time=datetime.fromtimestamp(now, UTC),
            service=name,
            evidence=evidence,
        )


def _declare(agent: _Agent, cut: int) -> int:
    """Declare missing every number in ``[agent.low, cut]`` not seen; move ``low`` past them and
    past the seen numbers that follow. Returns how many were declared."""
    low = agent.low
    if low is None or cut < low:
        return 0
    pending = agent.pending
    seen = sorted(s for s in pending if s <= cut)
    declared = 0
    expected = low
    for s in seen:
        if s > expected:
            agent.ranges.append((expected, s - 1))
            declared += s - expected
        expected = s + 1
        pending.discard(s)
    if expected <= cut:
        agent.ranges.append((expected, cut))
        declared += cut + 1 - expected
    low = cut + 1
    while low in pending:
        pending.remove(low)
        low += 1
    agent.low = low
    agent.missing += declared
    return declared


def _open_gaps(agent: _Agent) -> list[tuple[int, int]]:
    """The gaps between ``agent.low`` and the highest number seen, not declared yet (still in
    their window of grace), first ``RANGES_SHOWN``."""
    if agent.low is None or agent.max_seq < agent.low:
        return []
    gaps: list[tuple[int, int]] = []
    expected = agent.low
    for s in sorted(agent.pending):
        if s > expected:
            gaps.append((expected, s - 1))
            if len(gaps) >= RANGES_SHOWN:
                break
        expected = s + 1
    return gaps


def _spelt(first: int, last: int) -> str:
    return f"{first}" if first == last else f"{first}-{last}"


def _duration(seconds: float) -> str:
    """A length of time as a person reads it.

    >>> _duration(59), _duration(600), _duration(5400), _duration(90000)
    ('59 s', '10 min', '1.5 h', '25.0 h')
    """
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
