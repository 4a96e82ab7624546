"""Integrity: is the monitoring itself whole? Events lost on their way, and services gone silent.

Every other detector judges the events it is given; this one judges whether it is given all of
them. Two signals, kind ``integrity``:

* **lost events**, per agent instance (subject ``agent:<id>``). An agent numbers the events it
  captures (``agent.seq``, from 0, one counter per process, taken as each call has ended) and
  stamps on each event how many it had lost by then (``agent.dropped``: queue full, bus
  unavailable, spool full; see :mod:`inferwatch.agent.shipper`). A number is *due* once the call
  it belongs to has ended by a window close: every number below it ended earlier, so it has been
  captured, and in event-time order (a replay) it has been read. At each close the detector
  declares **missing** every number below the highest one due at the *previous* close that has
  not arrived (a window of grace for partitions read out of step), and matches them with what
  the agent counted: gaps it counted are its own losses (its bus was down, its queue
  overflowed), reported in the window its count rises; gaps it did not count (none within
  :data:`CREDIT_CLOSES` closes) were lost **after** it — in transit, or deleted from the topic —
  and weigh more. Events the detector service refused as malformed that still name their agent
  and number (:meth:`IntegrityDetector.refused`) are counted as refused, not lost.
* **silence**, per service (subject ``service:<name>``): a service that has sent at least
  ``min_events`` events a window on average over at least ``learn_windows`` windows, and then
  sends nothing for ``silent_after_s`` seconds *and* for ``gap_factor`` times the longest pause
  it took before, is flagged once: its model server is down, or its agents stopped shipping.
  Services, not agent instances, are watched: deploys and scale-ins end agent instances daily.
  Live, when no event at all arrives, the detector service tells the detector how much time has
  passed (:meth:`IntegrityDetector.idle`), only while it owns partitions and its bus answers;
  in a replay, a pause inside the file is reported when the service's next event ends it. A
  flagged silence is learnt as a routine pause once one of about its length (within a factor of
  two) comes again: a nightly pause is flagged the first two nights, not every night.

What each process can judge: gaps in ``agent.seq`` need every event of an agent, so they are
judged only while this process reads every partition of the event topic (the embedded bus, a
replay, or a consumer group of one); the detector service says so on every change of its
partitions (:meth:`IntegrityDetector.partitions_changed`), which also restarts the learning of
services' habits (its share of their traffic changed). With several processes the agents' own
counts and silences are judged on each one's share. An agent most of whose numbers never arrive
is being read in part — a filtered or sampled file, another consumer — and is reported once
(``sparse_sequence``), after which its gaps are not judged. Events without ``agent`` are counted
in ``unidentified`` only.

State is bounded: at most ``max_agents`` agents and ``max_services`` services (the least
recently seen are forgotten first), each forgotten after ``forget_after_s`` without an event.
Numbers that arrived above an agent's first gap are kept as runs (one pair per gap, not per
event), at most :data:`MAX_RUNS`; past that the lowest gap is declared at once.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from inferwatch.collectors.event import EventView, InferenceEvent
from inferwatch.detectors.base import MAX_SAMPLE_IDS, Finding, Severity
from inferwatch.detectors.state import BoundedState, WindowBounds, iso_utc

MAX_RUNS = 10_000
"""Runs of arrived numbers held per agent above its first gap before that gap is declared at once."""
MAX_ENDING = 4_096
"""Buckets of call ends held per agent, not yet due; past that the earliest are folded later."""
ENDING_BUCKET_S = 1
"""Call ends are kept per bucket of this many seconds (a number comes due at its bucket's end).
Not more: a number due later than the window it ended in gets its gap declared later, and an
agent's count that came with an event below it may no longer be there to match it
(:data:`CREDIT_CLOSES` windows; the demo's windows are 2 s)."""
MAX_JUMP = 10_000_000
"""A number this far above the highest one seen is not believed (a corrupt or forged event): it
is counted in ``implausible`` and left out of the accounting."""
FIRST_DROPS_MARGIN = 16
"""A new agent whose first number is at most this far above its drop count lost everything it
captured before that event (it started while its bus was down)."""
CREDIT_CLOSES = 3
"""Windows in which the agent sent events during which a count of its (``agent.dropped``) and a
declared gap may still be matched with each other: a count stamped on an event a little before
or after the gap it explains (an agent that sends nothing cannot send its count either). A count
is kept at least until every number below the lowest one it came with has been declared or
arrived, however late they come due (a long call carrying it)."""
RANGES_SHOWN = 10
"""Missing ``agent.seq`` ranges spelt out in a finding's evidence."""
REASONS_KEPT = 5
"""Distinct reasons for refused events kept per agent and window."""
AGENTS_NAMED = 10
"""Agents named in a silent service's evidence (the most recently seen)."""
PAUSES_KEPT = 4
"""Flagged silences remembered per service, to recognise a routine pause when it comes again."""
SPARSE_RULES = ((100, 0.9), (1_000, 0.5))
"""``(judged, share)``: an agent with at least ``share`` of ``judged`` or more sequence numbers
missing (and not counted by it), scattered in many short gaps (:data:`SPARSE_GAPS`), is read only
in part here — a filtered file, a sample, another consumer on the same partitions — rather than
losing events: reported once, then not judged. A block of deletions is one long gap: a loss."""
SPARSE_GAPS = (10, 100)
"""``(gaps, mean length)``: at least this many declared gaps, at most this long on average."""


@dataclass(slots=True)
class _Agent:
    service: str
    window_events: int = 0
    # agent.seq accounting: every number below ``low`` arrived, was refused or was declared missing
    low: int | None = None
    first_low: int = 0  # where the accounting started
    partial: bool = False  # most of its numbers never arrive here: not judged (see SPARSE_RULES)
    starts: list[int] = field(default_factory=list)  # runs of numbers arrived above ``low``:
    ends: list[int] = field(default_factory=list)  # [starts[i], ends[i]], sorted, apart
    max_seq: int = -1
    due: int = -1  # the highest number arrived whose call had ended by the last close
    cut: int = -1  # ``due`` as of the previous close: gaps below it are declared now
    ending: dict[int, int] = field(default_factory=dict)  # second of a call's end -> highest number
    missing: int = 0  # declared missing, in total
    forced: int = 0  # declared early (too many runs held), matched at the next close
    unexplained: int = 0  # of which counted by nobody (lost after the agent), in total
    late: int = 0  # arrived below ``low``: repeats, or declared missing and came after all
    ranges: list[tuple[int, int]] = field(default_factory=list)  # declared since the last finding
    after_gap: dict[int, str] = field(default_factory=dict)  # seq -> id of events that jumped ahead
    # agent.dropped: what the agent counted itself
    counts_drops: bool = False  # its events carry agent.dropped
    dropped_first: int = 0
    dropped_max: int = 0
    dropped_told: int = 0  # dropped_max at the last close
    dropped_seq: int = -1  # the lowest number seen carrying dropped_max: the drops it counts are below it
    closes: int = 0
    # [close, n, seq]: counted (on events numbered seq and up; -1 once every number below seq is
    # accounted for), no gap matched yet
    credit: list[list[int]] = field(default_factory=list)
    debt: list[list[int]] = field(default_factory=list)  # [close, n]: reported lost after, uncounted
    # events refused as malformed (their number salvaged from the refused line)
    window_refused: int = 0
    refused_reasons: dict[str, int] = field(default_factory=dict)  # this window's, a few

    settling: bool = False  # accounting restarted: judged only above what was seen around the change
    settle_seen: bool = False  # a number came since the change
    unseen_drops: int = 0  # counted before its first event came, while this detector watched
    first_hint: int | None = None  # where a new agent's accounting starts (its first drops), if known
    gaps: int = 0  # declared gaps, in total (how scattered its missing numbers are)
    implausible: int = 0  # numbers far beyond the highest seen, not believed

    def restart_accounting(self, *, settle: bool = False) -> None:
        """Accounting afresh: from the first close (a new start), or, ``settle``, from above the
        highest number seen before or since a change of partitions (numbers around the change
        may have been read before it)."""
        self.partial, self.settling, self.settle_seen = False, settle, False
        self.starts, self.ends, self.ending, self.ranges, self.after_gap = [], [], {}, [], {}
        self.credit, self.debt, self.due, self.cut = [], [], -1, -1
        if not settle:
            self.low, self.max_seq = None, -1


@dataclass(slots=True)
class _Service:
    last: float  # its last event (a late one does not move it while a silence is flagged)
    events: int = 0
    windows: int = 0  # windows in which it sent events
    window_events: int = 0
    longest_gap: float = 0.0
    flagged: bool = False  # silent and reported; cleared by its next event
    flagged_at: float = 0.0  # when it was flagged (its "back" finding files into that incident)
    pauses: list[float] = field(default_factory=list)  # lengths of its last flagged silences
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
    CHECKPOINT_VERSION: ClassVar[int] = 1  # its state's layout (see inferwatch.detectors.checkpoint)

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
        self._agents: BoundedState[str, _Agent] = BoundedState(max_agents, forget_after_s)
        self._services: BoundedState[str, _Service] = BoundedState(max_services, forget_after_s)
        self._window_first: float | None = None
        self._bounds = WindowBounds()
        self._found: list[Finding] = []  # silences ended by an event, reported with the next return
        self._latest: float | None = None  # the newest event time seen
        self._closed_at = float("-inf")  # the end of the last window closed
        self._closes = 0  # windows closed
        self._last_bounds = (0.0, 0.0)
        self._owned: tuple[int, ...] | None = None  # the partitions the service last said it reads

    # --- what the service tells it ----------------------------------------------------------------
    def partitions_changed(self, owned: Sequence[int], complete: bool) -> None:
        """The detector service now reads partitions ``owned`` of the event topic, every one of
        them when ``complete``. Each service's habits are learnt afresh (this process's share of
        its traffic changed); gap accounting starts afresh when ``complete`` changed. Said again
        for the partitions a restored checkpoint was taken with, it changes nothing."""
        key = tuple(sorted(owned))
        if key == self._owned and complete == self.complete_view:
            return
        if self._owned is not None or self._services:
            for _, service in self._services.items():
                service.events = service.windows = service.window_events = 0
                service.longest_gap, service.flagged, service.pauses = 0.0, False, []
        self._owned = key
        if complete != self.complete_view:
            self.complete_view = complete
            for _, agent in self._agents.items():
                # Partitions that just came here are read from where their last reader stopped,
                # the others from here on: numbers below what the next close has seen may have
                # been read before, and are not judged.
                agent.restart_accounting(settle=True)

    def refused(self, agent_id: str, seq: int, reason: str) -> None:
        """An event of this agent was refused as malformed (the detector service dead-lettered it,
        or a replay skipped the line): it is counted as refused, and its number as arrived."""
        now = self._latest if self._latest is not None else 0.0
        agent = self._agents.get_or_create(agent_id, now, lambda: _Agent(service="unknown"))
        agent.window_refused += 1
        reasons = agent.refused_reasons
        if reason in reasons or len(reasons) < REASONS_KEPT:
            reasons[reason] = reasons.get(reason, 0) + 1
        if self.judging_gaps and not agent.partial:
            self._count_seq(agent, seq, None, "")

    @property
    def judging_gaps(self) -> bool:
        return self.seq_gaps and self.complete_view

    # --- events -----------------------------------------------------------------------------------
    def observe(self, event: InferenceEvent) -> list[Finding]:
        self._take(event)
        return self._drain()

    def observe_views(self, events: Sequence[EventView]) -> list[Finding]:
        take = self._take
        for event in events:
            take(event)
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
        name = event.service
        service = self._services.get_or_create(name, ts, lambda: _Service(last=ts))
        self._seen(name, service, ts, event.id)
        agent_info = event.agent
        if agent_info is None:
            self.unidentified += 1
            return
        agent_id = agent_info.id
        agent = self._agents.get_or_create(agent_id, ts, lambda: _Agent(service=name))
        if agent.service == "unknown":  # first met through a refused event
            agent.service = name
        named = service.agents
        if named and next(reversed(named)) == agent_id:
            named[agent_id] = ts
        else:
            if named.pop(agent_id, None) is None and len(named) >= AGENTS_NAMED:
                del named[next(iter(named))]
            named[agent_id] = ts
        agent.window_events += 1
        dropped = agent_info.dropped
        if dropped is not None:
            if not agent.counts_drops:
                agent.counts_drops = True
                agent.dropped_first = agent.dropped_max = agent.dropped_told = dropped
                if dropped and self._closes and dropped <= agent_info.seq <= dropped + FIRST_DROPS_MARGIN:
                    # A new agent (its first number just above its drops) while this detector
                    # watched: it lost all it captured before this event (it started while its
                    # bus was down), reported too; its accounting starts at its first number.
                    agent.dropped_told, agent.unseen_drops, agent.first_hint = 0, dropped, dropped
                elif dropped and self.judging_gaps:
                    # Drops of numbers below where its accounting starts, or just above this event
                    # (queued before them, encoded after): none to wait for below this event.
                    agent.credit.append([agent.closes, dropped, -1])
            elif dropped > agent.dropped_max:
                agent.dropped_max = dropped
                agent.dropped_seq = _plausible(agent, agent_info.seq)
            elif dropped == agent.dropped_max and 0 <= agent_info.seq < agent.dropped_seq:
                # A lower number already carried this count: the drops it counts are below it.
                agent.dropped_seq = seq = agent_info.seq
                for entry in agent.credit:
                    if entry[2] > seq:
                        entry[2] = seq
        seq = agent_info.seq
        if self.judging_gaps and not agent.partial:
            self._count_seq(agent, seq, ts + event.duration_ms / 1000.0, event.id)
        elif seq > agent.max_seq and (agent.max_seq < 0 or seq <= agent.max_seq + MAX_JUMP):
            agent.max_seq = seq  # where accounting settles should this process read everything again

    def _seen(self, name: str, service: _Service, ts: float, event_id: str) -> None:
        service.events += 1
        service.window_events += 1
        gap = ts - service.last
        if gap <= 0:
            return  # its first event, or one out of order: no pause ended here
        if service.flagged:
            if ts < service.flagged_at:
                return  # started before the silence was flagged (a long call): not its end
            self._found.append(self._silence_finding(name, service, ts, ended=True, back=event_id))
            self._learn_pause(service, gap)
            service.flagged = False
        elif self._silent(service, gap):
            self._found.append(self._silence_finding(name, service, ts, ended=True))
            self._learn_pause(service, gap)
        elif service.windows >= 1:  # the first window's pauses are the start-up's
            service.longest_gap = max(service.longest_gap, gap)
        service.last = ts

    @staticmethod
    def _learn_pause(service: _Service, gap: float) -> None:
        """A flagged silence has ended after ``gap`` seconds: one of about its length before makes
        it a routine pause (learnt); else it is remembered, in case it comes again."""
        if any(gap / 2 <= earlier <= gap * 2 for earlier in service.pauses):
            service.longest_gap = max(service.longest_gap, gap)
        service.pauses = [*service.pauses[-(PAUSES_KEPT - 1):], gap]

    def _count_seq(self, agent: _Agent, seq: int, end: float | None, event_id: str) -> None:
        if agent.max_seq >= 0 and seq > agent.max_seq + MAX_JUMP:
            agent.implausible += 1
            return
        if agent.settling:
            agent.settle_seen = True
        low = agent.low
        if low is None:  # a new agent: numbers held as runs until its first close sets ``low``
            low = -1
        elif seq < low:
            agent.late += 1
            return
        starts, ends = agent.starts, agent.ends
        i = bisect_right(starts, seq)
        if i and ends[i - 1] >= seq:
            agent.late += 1  # a repeat
            return
        if end is not None:
            if end <= self._closed_at:
                if seq > agent.due:
                    agent.due = seq
            else:
                ending = agent.ending
                bucket = (int(end) // ENDING_BUCKET_S + 1) * ENDING_BUCKET_S  # the bucket's end
                if seq > ending.get(bucket, -1):
                    if bucket not in ending and len(ending) >= MAX_ENDING:
                        _fold_earliest(ending)
                    ending[bucket] = seq
        if seq > agent.max_seq:
            if (seq > agent.max_seq + 1 and agent.max_seq >= 0 and event_id
                    and len(agent.after_gap) < MAX_SAMPLE_IDS):
                agent.after_gap[seq] = event_id
            agent.max_seq = seq
        if seq == low:  # in order: the usual case, nothing held
            low += 1
            if starts and starts[0] == low:
                low = ends[0] + 1
                del starts[0], ends[0]
            agent.low = low
            return
        left = bool(i) and ends[i - 1] == seq - 1
        right = i < len(starts) and starts[i] == seq + 1
        if left and right:
            ends[i - 1] = ends[i]
            del starts[i], ends[i]
        elif left:
            ends[i - 1] = seq
        elif right:
            starts[i] = seq
        else:
            starts.insert(i, seq)
            ends.insert(i, seq)
            if len(starts) > MAX_RUNS:
                if agent.low is None:
                    _start_accounting(agent)
                if starts:
                    agent.forced += _declare(agent, starts[0] - 1)

    # --- windows ----------------------------------------------------------------------------------
    def close_window(self, end: datetime) -> list[Finding]:
        end_ts = end.timestamp()
        bounds = (self._bounds.close(end_ts, self._window_first), end_ts)
        self._window_first = None
        self._closed_at = end_ts
        self._closes += 1
        self._last_bounds = bounds
        findings = self._drain()
        for agent_id, agent in self._agents.items():
            if (agent.window_events or agent.window_refused or agent.starts or agent.ending or agent.credit
                    or agent.debt or agent.forced or agent.settling or agent.dropped_max != agent.dropped_told
                    or (agent.low is not None and agent.cut >= agent.low)):
                finding = self._judge_agent(agent_id, agent, bounds)
                if finding is not None:
                    findings.append(finding)
            agent.window_events = 0
        for _, service in self._services.items():
            if service.window_events:
                service.windows += 1
                service.window_events = 0
        findings += self._silences(end_ts)
        self._agents.expire(end_ts)
        self._services.expire(end_ts)
        return findings

    def idle(self, now: datetime) -> list[Finding]:
        """No event has arrived for a while: event time is taken to have reached ``now`` (the
        detector service's estimate). Returns the silences that passed their threshold, and the
        gaps still open of agents quiet for two windows (nothing more of theirs can come)."""
        now_ts = now.timestamp()
        quiet = now_ts - 2 * (self._bounds.length or 60.0)
        findings = self._drain()
        for agent_id, agent in self._agents.items():
            quiet_agent = (self._agents.last_seen(agent_id) or 0.0) < quiet
            if quiet_agent and agent.max_seq >= (agent.low if agent.low is not None else 0):
                finding = self._flush(agent_id, agent, (self._last_bounds[0], now_ts))
                if finding is not None:
                    findings.append(finding)
        return findings + self._silences(now_ts)

    def finish(self, end: datetime) -> list[Finding]:
        """The input has ended (a replay, a batch run): every gap still open is judged now."""
        findings = self._drain()
        for agent_id, agent in self._agents.items():
            finding = self._flush(agent_id, agent, self._last_bounds)
            if finding is not None:
                findings.append(finding)
        return findings

    def _flush(self, agent_id: str, agent: _Agent, bounds: tuple[float, float]) -> Finding | None:
        """Judge an agent of which nothing more will come: all its numbers are due."""
        if agent.low is None or agent.partial or agent.settling or not self.judging_gaps:
            return None
        agent.ending.clear()
        agent.due = agent.cut = agent.max_seq
        return self._judge_agent(agent_id, agent, bounds)

    def _silent(self, service: _Service, gap: float) -> bool:
        return (service.windows >= self.learn_windows
                and service.events >= self.min_events * service.windows
                and gap >= max(self.silent_after_s, self.gap_factor * service.longest_gap))

    def _silences(self, now: float) -> list[Finding]:
        findings = []
        for name, service in self._services.items():
            if not service.flagged and self._silent(service, now - service.last):
                service.flagged, service.flagged_at = True, now
                findings.append(self._silence_finding(name, service, now, ended=False))
        return findings

    def _judge_agent(self, agent_id: str, agent: _Agent, bounds: tuple[float, float]) -> Finding | None:
        if agent.window_events or agent.window_refused:  # its own clock: a quiet agent sends no count
            agent.closes += 1
        if agent.settling and agent.settle_seen:
            # Accounting restarted (see partitions_changed): judged from above the highest number
            # seen before the change or since (those around it may have been read before).
            if agent.max_seq >= 0:
                agent.low = agent.first_low = agent.max_seq + 1
            agent.starts, agent.ends, agent.ending, agent.after_gap = [], [], {}, {}
            agent.settling = False
        elif agent.low is None and agent.starts and not agent.settling:
            _start_accounting(agent)
        judged = self.judging_gaps and not agent.partial and not agent.settling
        counted = agent.dropped_max - agent.dropped_told
        agent.dropped_told = agent.dropped_max
        recounted = 0
        declared, agent.forced = agent.forced, 0
        if judged and agent.low is not None:
            declared += _declare(agent, agent.cut)
            agent.missing += declared
            due = agent.due
            for bucket in [b for b in agent.ending if b <= bounds[1]]:  # calls ended by this close
                due = max(due, agent.ending.pop(bucket))
            agent.due, agent.cut = due, due
        unexplained = 0
        unseen, agent.unseen_drops = min(agent.unseen_drops, counted), 0
        if judged:
            horizon = agent.closes - CREDIT_CLOSES
            # A count explains gaps below the lowest number that came with it (seq): it is kept
            # until every number below that has arrived or been declared (a long call carrying it
            # is read long before they come due; seq -1 from then), then for CREDIT_CLOSES closes.
            agent.credit = [entry for entry in agent.credit
                            if entry[1] and (entry[2] >= 0 or entry[0] > horizon)]
            agent.debt = [entry for entry in agent.debt if entry[0] > horizon and entry[1]]
            if counted > unseen:  # drops before its first event have no gap to match here
                agent.credit.append([agent.closes, counted - unseen, agent.dropped_seq])
            accounted = agent.low if agent.low is not None else -1
            for entry in agent.credit:
                if 0 <= entry[2] <= accounted:
                    entry[0], entry[2] = agent.closes, -1
            unexplained = declared - _settle(agent.credit, declared)
            # Counts beyond the gaps still open here came after the gaps they explain, which
            # were reported as lost after the agent: they are no new loss (and no credit).
            surplus = sum(entry[1] for entry in agent.credit) - _open_size(agent)
            if surplus > 0 and agent.debt:
                recounted = _settle(agent.debt, surplus)
                _settle(agent.credit, recounted)
                counted -= min(counted, recounted)
            if unexplained:
                agent.debt.append([agent.closes, unexplained])
                agent.unexplained += unexplained
        refused, agent.window_refused = agent.window_refused, 0
        span = (agent.low or 0) - agent.first_low
        finding = None
        scattered = agent.gaps >= SPARSE_GAPS[0] and agent.missing <= SPARSE_GAPS[1] * agent.gaps
        sparse = scattered and any(span >= least and agent.unexplained >= share * span
                                   for least, share in SPARSE_RULES)
        if judged and sparse:
            finding = self._sparse_finding(agent_id, agent, bounds, span=span, counted=counted)
            agent.restart_accounting()
            agent.partial = True
        elif counted + unexplained + refused >= self.min_lost:
            finding = self._loss_finding(agent_id, agent, bounds, declared=declared, counted=counted,
                                         unexplained=unexplained, refused=refused, recounted=recounted)
        agent.refused_reasons = {}
        agent.ranges.clear()
        # Events right after a gap not declared yet wait for the close that declares it.
        low = agent.low if agent.low is not None else 0
        agent.after_gap = {seq: event_id for seq, event_id in agent.after_gap.items() if seq > low}
        return finding

    # --- findings ---------------------------------------------------------------------------------
    def _loss_finding(self, agent_id: str, agent: _Agent, bounds: tuple[float, float], *, declared: int,
                      counted: int, unexplained: int, refused: int, recounted: int) -> Finding:
        seen = agent.window_events
        lost = counted + unexplained + refused
        share = lost / (lost + seen) if lost + seen else 1.0
        severity: Severity
        if unexplained >= self.min_lost:
            severity = "high" if unexplained >= 100 or share >= 0.05 else "medium"
        elif refused >= self.min_lost:
            severity = "medium"
        else:
            severity = "medium" if counted >= 1_000 or share >= 0.1 else "low"
        ranges = [_spelt(a, b) for a, b in agent.ranges[:RANGES_SHOWN]]
        still_open = [_spelt(a, b) for a, b in _open_gaps(agent)[:RANGES_SHOWN]]
        after = [event_id for seq, event_id in sorted(agent.after_gap.items())
                 if any(b + 1 == seq for _, b in agent.ranges)] or list(agent.after_gap.values())
        parts = []
        if counted:
            parts.append(f"the agent counted {counted} dropped (its bus unavailable, queue or spool "
                         "full: see its inferwatch_agent_events_dropped_total{reason} metric and "
                         "agent_stats log lines)")
        if refused:
            why = ", ".join(f"{n}x {reason[:120]!r}" for reason, n in
                            sorted(agent.refused_reasons.items(), key=lambda item: -item[1]))
            parts.append(f"{refused} refused as malformed by the detector service ({why}; "
                         "`inferwatch events dead-letters` has them)")
        if unexplained:
            counts = ("the agent did not count" if agent.counts_drops else
                      "its events carry no agent.dropped, so whether it counted them is unknown")
            parts.append(f"{unexplained} missing from agent.seq that {counts}: lost after it "
                         "(in transit, deleted from the topic, or refused too damaged to read its "
                         "number: check `inferwatch events dead-letters`)")
        # The ranges behind this window's news: declared ones for a loss nobody counted (the
        # counted gaps among them were reported as their count came), else the gaps still open.
        shown = ranges if unexplained else still_open
        missing_text = f"; missing agent.seq: {', '.join(shown)}" if shown else ""
        more = len(agent.ranges) - RANGES_SHOWN
        if unexplained and more > 0:
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
            "dropped_by_agent": counted,
            "refused_as_malformed": refused,
            "refused_reasons": dict(agent.refused_reasons),
            "lost_after_agent": unexplained,
            "agent_counts_drops": agent.counts_drops,
            "seq_declared": declared,
            "seq_declared_ranges": ranges,
            "seq_gaps_open": still_open,
            "seq_gaps_judged": self.judging_gaps and not agent.partial,
            "totals": {"seq_declared": agent.missing, "lost_after_agent": agent.unexplained,
                       "late_or_repeated": agent.late,
                       "dropped_by_agent_since_watched": agent.dropped_max - agent.dropped_first,
                       "dropped_by_agent_reported": agent.dropped_max,
                       "recounted": recounted},
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
                        counted: int) -> Finding:
        missing = agent.unexplained
        evidence: dict[str, Any] = {
            "signal": "sparse_sequence",
            "agent_id": agent_id,
            "seq_judged": span,
            "seq_missing": missing,
            "missing_share": round(missing / span, 4),
            "dropped_by_agent": counted,
            "agent_counts_drops": agent.counts_drops,
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
            summary=f"Of agent {agent_id}'s sequence numbers {agent.first_low}.."
            f"{agent.first_low + span - 1}, "
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

    def _silence_finding(self, name: str, service: _Service, now: float, *, ended: bool,
                         back: str | None = None) -> Finding:
        """A silence: flagged as it lasts, found as it ended (a replay), or, ``back`` (the id of
        the service's first event after a flagged silence), its end (filed at the time it was
        flagged, so it updates that incident)."""
        gap = now - service.last
        rate = service.events / max(service.windows, 1)
        threshold = max(self.silent_after_s, self.gap_factor * service.longest_gap)
        recent = sorted(service.agents.items(), key=lambda item: -item[1])[:AGENTS_NAMED]
        severity: Severity = "high" if rate >= 10 * self.min_events else "medium"
        when = (f"sent nothing from {iso_utc(service.last)} to {iso_utc(now)}" if ended
                else f"has sent nothing since {iso_utc(service.last)}")
        title = (f"Service {name} is back after {_duration(gap)} of silence" if back
                 else f"Service {name} sent nothing for {_duration(gap)}" if ended
                 else f"Service {name} has gone silent: nothing for {_duration(gap)}")
        evidence: dict[str, Any] = {
            "signal": "silence",
            "service": name,
            "last_event": iso_utc(service.last),
            "silent_for_s": round(gap, 1),
            "ended": iso_utc(now) if ended else None,
            "back": back is not None,
            "usual_events_per_window": round(rate, 1),
            "windows_seen": service.windows,
            "longest_earlier_pause_s": round(service.longest_gap, 1),
            "earlier_silences_s": [round(p, 1) for p in service.pauses],
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
            summary=("Its events come again. " if back else "")
            + f"Service {name} {when} ({_duration(gap)}); it usually sends about {rate:.0f} events a "
            f"window and its longest pause before was {_duration(service.longest_gap)}. Its model server is "
            "down or unreachable, or its agents stopped shipping events (check the agents' "
            "inferwatch_agent_events_dropped_total and bus_unavailable log lines)"
            + ("" if self.complete_view else
               "; this detector process reads only some partitions, so this is its share of the traffic"),
            subject=f"service:{name}",
            time=datetime.fromtimestamp(service.flagged_at if back else now, UTC),
            service=name,
            evidence=evidence,
            event_ids=[back] if back else [],
        )


def _settle(entries: list[list[int]], amount: int) -> int:
    """Take up to ``amount`` from ``entries`` (``[close, n]``, oldest first); returns how much."""
    taken = 0
    for entry in entries:
        if taken >= amount:
            break
        take = min(entry[1], amount - taken)
        entry[1] -= take
        taken += take
    return taken


def _start_accounting(agent: _Agent) -> None:
    """A new agent's accounting starts at the lowest number seen by its first close (in a
    time-ordered file the first event read is rarely its first number), or at its first drops
    when it started with them (:data:`FIRST_DROPS_MARGIN`)."""
    start = agent.starts[0] if agent.first_hint is None else min(agent.first_hint, agent.starts[0])
    agent.low = agent.first_low = start
    if agent.starts[0] == start:  # the first run: arrived, accounted for
        agent.low = agent.ends[0] + 1
        del agent.starts[0], agent.ends[0]


def _plausible(agent: _Agent, seq: int) -> int:
    """``seq``, or the highest number believed when it is too far above it (:data:`MAX_JUMP`)."""
    return seq if agent.max_seq < 0 or seq <= agent.max_seq + MAX_JUMP else agent.max_seq


def _open_size(agent: _Agent) -> int:
    """How many numbers between ``agent.low`` and the highest seen have not arrived (gaps seen,
    not declared yet)."""
    if agent.low is None or agent.max_seq < agent.low:
        return 0
    arrived = sum(end - start + 1 for start, end in zip(agent.starts, agent.ends, strict=True))
    return agent.max_seq - agent.low + 1 - arrived


def _fold_earliest(ending: dict[int, int]) -> None:
    """Fold the earliest bucket of ``ending`` into the next (its numbers come due a little later)."""
    first = min(ending)
    held = ending.pop(first)
    second = min(ending)
    ending[second] = max(ending[second], held)


def _declare(agent: _Agent, cut: int) -> int:
    """Declare missing every number in ``[agent.low, cut]`` that has not arrived; move ``low``
    past them and past the arrived runs that follow. Returns how many were declared."""
    low = agent.low
    if low is None or cut < low:
        return 0
    starts, ends = agent.starts, agent.ends
    declared, expected, taken = 0, low, 0
    while taken < len(starts) and starts[taken] <= cut:
        if starts[taken] > expected:
            agent.ranges.append((expected, starts[taken] - 1))
            agent.gaps += 1
            declared += starts[taken] - expected
        expected = ends[taken] + 1
        taken += 1
    if expected <= cut:
        agent.ranges.append((expected, cut))
        agent.gaps += 1
        declared += cut + 1 - expected
        expected = cut + 1
    while taken < len(starts) and starts[taken] == expected:
        expected = ends[taken] + 1
        taken += 1
    del starts[:taken], ends[:taken]
    agent.low = expected
    return declared


def _open_gaps(agent: _Agent) -> list[tuple[int, int]]:
    """The gaps between ``agent.low`` and the highest number seen, not declared yet (still in
    their window of grace), first ``RANGES_SHOWN``."""
    if agent.low is None or agent.max_seq < agent.low:
        return []
    gaps: list[tuple[int, int]] = []
    expected = agent.low
    for start, end in zip(agent.starts, agent.ends, strict=True):
        if start > expected:
            gaps.append((expected, start - 1))
            if len(gaps) >= RANGES_SHOWN:
                break
        expected = end + 1
    return gaps


def _spelt(first: int, last: int) -> str:
    return f"{first}" if first == last else f"{first}-{last}"


def _duration(seconds: float) -> str:
    """A length of time as a person reads it.

    >>> _duration(0.1), _duration(59), _duration(600), _duration(5400), _duration(90000)
    ('0.1 s', '59 s', '10 min', '1.5 h', '25.0 h')
    """
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
