"""The integrity detector: lost events per agent (agent.seq gaps, agent.dropped) and silent services."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from inferwatch.collectors.event import AgentInfo, InferenceEvent, encode_event
from inferwatch.collectors.fast_event import decode_view
from inferwatch.detectors import checkpoint
from inferwatch.detectors.base import Finding
from inferwatch.detectors.incidents import IncidentManager
from inferwatch.detectors.integrity import IntegrityDetector
from inferwatch.detectors.pipeline import Pipeline
from inferwatch.detectors.registry import DetectorConfigError, build_detectors
from inferwatch.detectors.store import IncidentQuery
from inferwatch.testing import make_event, memory_store, run_detector


def _event(ts: float, seq: int | None, *, agent: str = "a1", dropped: int | None = None,
           service: str = "chat", principal: str = "p1") -> InferenceEvent:
    info = None if seq is None else AgentInfo(id=agent, seq=seq, dropped=dropped)
    return make_event(ts, principal=principal, service=service, id=f"{agent}-{seq}-{ts}", agent=info)


def _stream(seqs: list[int], *, start: float = 0.0, per_s: float = 10.0,
            **kw: object) -> list[InferenceEvent]:
    return [_event(start + i / per_s, s, **kw) for i, s in enumerate(seqs)]  # type: ignore[arg-type]


def _losses(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.evidence.get("signal") == "lost_events"]


def _silences(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.evidence.get("signal") == "silence"]


# --- lost events ---------------------------------------------------------------------------------

def test_a_gap_free_stream_is_quiet_even_out_of_order_within_a_window():
    seqs = list(range(3000))
    for i in range(0, 3000, 7):  # neighbours swapped: partitions interleave
        seqs[i], seqs[i + 1] = seqs[i + 1], seqs[i]
    findings = run_detector(IntegrityDetector(), _stream(seqs, dropped=0))
    assert findings == []


def test_events_the_agent_counted_as_dropped_are_reported_once_as_its_own_loss():
    # 40 events dropped at the agent (its bus was down): seq jumps, and later events say so.
    seqs = list(range(1000)) + list(range(1040, 3000))
    events = [_event(i / 10, s, dropped=0 if s < 1000 else 40) for i, s in enumerate(seqs)]
    findings = _losses(run_detector(IntegrityDetector(), events))
    assert len(findings) == 1, [f.summary for f in findings]
    f = findings[0]
    assert f.kind == "integrity"
    assert f.subject == "agent:a1"
    assert f.service == "chat"
    assert f.evidence["dropped_by_agent"] == 40
    assert f.evidence["lost_after_agent"] == 0
    assert f.severity == "low"
    assert "the agent counted 40 dropped" in f.summary
    # Reported as the count arrives, with the gap it left still in its window of grace.
    assert f.evidence["seq_gaps_open"] == ["1000-1039"]
    assert f.evidence["seq_declared_ranges"] == []
    assert "missing agent.seq: 1000-1039" in f.summary


def test_events_lost_after_the_agent_are_declared_after_a_window_of_grace_and_named():
    # 25 sequence numbers never arrive and the agent counted nothing: lost in transit (or deleted).
    seqs = list(range(500)) + list(range(525, 3000))
    events = _stream(seqs, dropped=0)
    findings = _losses(run_detector(IntegrityDetector(), events))
    assert len(findings) == 1
    f = findings[0]
    assert f.evidence["lost_after_agent"] == 25
    assert f.evidence["dropped_by_agent"] == 0
    assert f.evidence["seq_declared_ranges"] == ["500-524"]
    assert f.severity in ("medium", "high")
    assert "after it sent them" in f.title
    assert "dead-letters" in f.summary
    after = next(e for e in events if e.agent is not None and e.agent.seq == 525)
    assert f.event_ids == [after.id]
    # Declared at the close after the one that saw the gap (60 s windows; the gap is at 50 s).
    assert f.time == datetime.fromtimestamp(120, UTC)


def test_a_late_event_within_the_grace_window_is_not_lost():
    seqs = list(range(0, 590)) + list(range(591, 700)) + [590] + list(range(700, 2000))
    assert _losses(run_detector(IntegrityDetector(), _stream(seqs, dropped=0))) == []


def test_a_producer_that_does_not_count_its_drops_has_every_gap_reported_as_lost_after_it():
    seqs = list(range(300)) + list(range(310, 2000))
    findings = _losses(run_detector(IntegrityDetector(), _stream(seqs)))  # no agent.dropped at all
    assert [f.evidence["lost_after_agent"] for f in findings] == [10]


def test_min_lost_sets_how_many_lost_events_make_a_finding():
    seqs = list(range(300)) + list(range(302, 2000))
    assert _losses(run_detector(IntegrityDetector(min_lost=3), _stream(seqs, dropped=0))) == []
    assert len(_losses(run_detector(IntegrityDetector(min_lost=2), _stream(seqs, dropped=0)))) == 1


def test_with_part_of_the_partitions_gaps_are_not_judged_but_the_agents_count_is():
    detector = IntegrityDetector()
    detector.partitions_changed([0, 1], False)  # the service: this process reads some partitions only
    seqs = list(range(0, 2000, 2))  # every other event is another process's
    events = [_event(i / 10, s, dropped=0 if i < 500 else 7) for i, s in enumerate(seqs)]
    findings = _losses(run_detector(detector, events))
    assert [(f.evidence["dropped_by_agent"], f.evidence["lost_after_agent"]) for f in findings] == [(7, 0)]
    assert findings[0].evidence["seq_gaps_judged"] is False


def test_seq_gaps_false_turns_the_gap_accounting_off():
    seqs = list(range(300)) + list(range(400, 2000))
    assert _losses(run_detector(IntegrityDetector(seq_gaps=False), _stream(seqs))) == []


def test_agents_are_accounted_apart_and_events_without_agent_are_only_counted():
    a = _stream(list(range(1000)), agent="a", dropped=0)
    b = _stream(list(range(1000)), agent="b", dropped=0)
    none = [_event(i / 10, None) for i in range(100)]
    detector = IntegrityDetector()
    merged = sorted(a + b + none, key=lambda e: e.ts)
    assert run_detector(detector, merged) == []
    assert detector.unidentified == 100


def test_a_repeated_delivery_is_not_a_gap():
    seqs = list(range(1000)) + list(range(900, 1000)) + list(range(1000, 2000))
    detector = IntegrityDetector()
    assert run_detector(detector, _stream(seqs, dropped=0)) == []


def test_agents_beyond_max_agents_forget_the_least_recently_seen():
    detector = IntegrityDetector(max_agents=2)
    events = [_event(float(i), 0, agent=f"a{i}") for i in range(5)]
    run_detector(detector, events)
    assert list(detector._agents) == ["a3", "a4"]


# --- silence -------------------------------------------------------------------------------------

def _busy(minutes: int, *, per_minute: int = 30, start: float = 0.0, service: str = "chat",
          agent: str = "a1", first_seq: int = 0) -> list[InferenceEvent]:
    n = minutes * per_minute
    return [_event(start + i * 60.0 / per_minute, first_seq + i, agent=agent, service=service, dropped=0)
            for i in range(n)]


def test_a_busy_service_that_stops_is_flagged_once_when_the_service_is_idle():
    detector = IntegrityDetector()
    pipeline = Pipeline([detector], IncidentManager(memory_store()), window_s=60)
    pipeline.detect(_busy(40))
    last = 40 * 60 - 2.0
    assert pipeline.idle(datetime.fromtimestamp(last + 300, UTC)).findings == []  # 5 min: under 10
    found = pipeline.idle(datetime.fromtimestamp(last + 700, UTC)).findings
    assert len(found) == 1
    f = found[0]
    assert f.kind == "integrity"
    assert f.subject == "service:chat"
    assert f.severity == "medium"
    assert "has gone silent" in f.title
    assert f.evidence["usual_events_per_window"] == pytest.approx(30, abs=1)
    assert f.evidence["agents_last_seen"] == {"a1": "1970-01-01T00:39:58Z"}
    assert pipeline.idle(datetime.fromtimestamp(last + 2000, UTC)).findings == []  # once per silence
    # Back, then silent again: flagged again.
    pipeline.detect(_busy(5, start=last + 2100, first_seq=1200))
    again = pipeline.idle(datetime.fromtimestamp(last + 2100 + 300 + 700, UTC)).findings
    assert len(again) == 1


def test_a_pause_inside_a_replayed_log_is_reported_when_it_ends():
    events = _busy(40) + _busy(10, start=40 * 60 + 1800, first_seq=1200)  # 30 minutes of nothing
    silences = _silences(run_detector(IntegrityDetector(), events))
    assert len(silences) == 1
    f = silences[0]
    assert f.evidence["ended"] == "1970-01-01T01:10:00Z"
    assert "sent nothing for 30 min" in f.title


def test_a_service_that_pauses_like_that_every_time_is_not_flagged_for_it():
    # Bursts of five minutes, then 15 minutes off: its longest pause is learnt.
    events: list[InferenceEvent] = []
    seq = 0
    for burst in range(8):
        start = burst * 20 * 60.0
        events += _busy(5, per_minute=200, start=start, first_seq=seq)
        seq += 1000
    detector = IntegrityDetector(learn_windows=10)
    assert _silences(run_detector(detector, events)) == []
    # ... while twice its usual pause is not enough to flag it, three times is.
    late = _busy(5, per_minute=200, start=8 * 20 * 60.0 + 45 * 60, first_seq=seq)
    assert len(_silences(run_detector(IntegrityDetector(learn_windows=10), events + late))) == 1


def test_a_quiet_or_new_service_is_not_watched_for_silence():
    detector = IntegrityDetector()
    pipeline = Pipeline([detector], IncidentManager(memory_store()), window_s=60)
    rare = _busy(40, per_minute=5, service="rare")  # 5 events a window: under min_events
    new = _busy(10, service="new", agent="a2")  # busy, but 10 windows: under learn_windows
    pipeline.detect(sorted(rare + new, key=lambda e: e.ts))
    assert pipeline.idle(datetime.fromtimestamp(40 * 60 + 3600, UTC)).findings == []


def test_other_services_traffic_moves_time_on_for_a_silent_one():
    chat = _busy(40)
    other = _busy(80, service="search", agent="a2")
    findings = run_detector(IntegrityDetector(), sorted(chat + other, key=lambda e: e.ts))
    silences = _silences(findings)
    assert [f.subject for f in silences] == ["service:chat"]
    assert silences[0].evidence["ended"] is None  # found at a window close, while still silent


# --- the pipeline around it ----------------------------------------------------------------------

def test_observe_views_finds_what_observe_finds():
    seqs = list(range(500)) + list(range(525, 1500)) + list(range(1600, 3000))
    events = [_event(i / 10, s, dropped=0 if s < 1600 else 100) for i, s in enumerate(seqs)]
    slow = run_detector(IntegrityDetector(), events)
    pipeline = Pipeline([IntegrityDetector()], IncidentManager(memory_store()), window_s=60)
    fast = pipeline.detect_views([decode_view(encode_event(e)) for e in events]).findings
    fast += pipeline.close_open_window(final=True).findings
    assert [f.model_dump() for f in fast] == [f.model_dump() for f in slow]
    assert len(slow) == 2


def test_a_checkpoint_carries_the_gap_accounting_over_a_restart():
    seqs = list(range(500)) + list(range(525, 3000))
    events = _stream(seqs, dropped=0)
    first = Pipeline([IntegrityDetector()], IncidentManager(memory_store()), window_s=60)
    first.detect(events[:800])
    data = first.checkpoint()
    second = Pipeline([IntegrityDetector()], IncidentManager(memory_store()), window_s=60)
    assert second.restore(data) == []
    findings = second.detect(events[800:]).findings + second.close_open_window(final=True).findings
    assert [f.evidence["seq_declared_ranges"] for f in _losses(findings)] == [["500-524"]]
    assert checkpoint.load(checkpoint.dump(checkpoint.state_of(second.detectors[0])))  # writable


def test_bad_options_name_the_setting():
    with pytest.raises(DetectorConfigError, match=r"detect.options.integrity: .*min_lost"):
        build_detectors(["integrity"], {"integrity": {"min_lost": 0}})
    with pytest.raises(DetectorConfigError, match=r"gap_factor must be >= 1"):
        build_detectors(["integrity"], {"integrity": {"gap_factor": 0.5}})
    with pytest.raises(DetectorConfigError, match=r"detect.options.integrity.silent_after_s"):
        build_detectors(["integrity"], {"integrity": {"silent_after_s": "soon"}})
    built = build_detectors(["integrity"], {"integrity": {"silent_after_s": "15m"}})[0]
    assert isinstance(built, IntegrityDetector)
    assert built.silent_after_s == 900.0


def test_a_filtered_log_of_one_agent_is_reported_once_as_read_in_part_not_as_lost_events():
    # One caller's events out of a busy agent's log (`jq 'select(.principal == "p7")'`): most
    # sequence numbers are other callers'.
    events = [_event(i / 20, i, principal=f"p{i % 10}", dropped=0) for i in range(20_000)]
    mine = [e for e in events if e.principal == "p7"]
    findings = run_detector(IntegrityDetector(), mine)
    assert [f.evidence["signal"] for f in findings] == ["sparse_sequence"]
    f = findings[0]
    assert f.severity == "low"
    assert f.evidence["missing_share"] == pytest.approx(0.9, abs=0.01)
    assert "no longer judged" in f.title


def test_a_large_real_loss_is_still_a_loss():
    # A third of the numbers missing in one block: lost events, not a partial view.
    seqs = list(range(2000)) + list(range(3000, 5000))
    findings = _losses(run_detector(IntegrityDetector(), _stream(seqs, dropped=0, per_s=30.0)))
    assert [f.evidence["lost_after_agent"] for f in findings] == [1000]
    assert findings[0].severity == "high"


def test_an_event_refused_as_malformed_is_counted_as_refused_not_lost():
    events = _stream(list(range(0, 300)) + list(range(301, 2000)), dropped=0)
    detector = IntegrityDetector()
    pipeline = Pipeline([detector], IncidentManager(memory_store()), window_s=60)
    findings = pipeline.detect(events[:400]).findings
    pipeline.refused("a1", 300, "time: Input should be a valid datetime")  # the dead-lettered one
    findings += pipeline.detect(events[400:]).findings + pipeline.close_open_window(final=True).findings
    (f,) = _losses(findings)
    assert f.evidence["refused_as_malformed"] == 1
    assert f.evidence["lost_after_agent"] == 0
    assert f.evidence["refused_reasons"] == {"time: Input should be a valid datetime": 1}
    assert f.severity == "medium"
    assert "refused as malformed" in f.title
    assert "events dead-letters" in f.summary


def test_a_replayed_log_with_a_bad_line_names_it_as_refused(tmp_path):
    from inferwatch.detectors.replay import replay_file
    from inferwatch.detectors.sqlite_store import SQLiteStore

    events = _stream(list(range(2000)), dropped=0)
    lines = [encode_event(e) for e in events]
    lines[700] = lines[700].replace(b'"time":"', b'"time":"not ', 1)  # still names its agent and seq
    path = tmp_path / "log.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    store = SQLiteStore(tmp_path / "store.db")
    result = replay_file(path, Pipeline([IntegrityDetector()], IncidentManager(store), window_s=60), store)
    assert [n for n, _ in result.malformed] == [701]
    (incident,) = result.incidents
    assert incident.evidence["refused_as_malformed"] == 1
    assert incident.evidence["lost_after_agent"] == 0


# --- what a review found ---------------------------------------------------------------------------

def test_long_calls_in_a_time_ordered_log_are_not_lost_events():
    # agent.seq is taken as a call ends; a replay reads by start time. One call in 50 takes 150 s,
    # so its number runs ahead of those of the short calls that started after it.
    import heapq

    calls = [(i * 0.5, 150.0 if i % 50 == 0 else 0.2) for i in range(4000)]
    by_end = sorted(range(len(calls)), key=lambda i: calls[i][0] + calls[i][1])
    seq_of = {call: seq for seq, call in enumerate(by_end)}
    events = [make_event(start, id=f"c{i}", duration_ms=length * 1000, service="chat",
                         agent=AgentInfo(id="a1", seq=seq_of[i], dropped=0))
              for i, (start, length) in enumerate(calls)]
    assert heapq.nsmallest(1, events, key=lambda e: e.ts)[0].agent.seq > 0  # the first call ends late
    assert _losses(run_detector(IntegrityDetector(), events)) == []


def test_a_count_that_comes_after_its_gap_is_not_a_second_loss_and_masks_nothing_later():
    # Seq 1000-1009 dropped at the agent, but the events after them still carried the old count
    # (the agent's count rose a moment later): first reported as lost after the agent; the count,
    # when it comes, is no new loss. Then 2500-2504 are deleted: reported.
    seqs = list(range(1000)) + list(range(1010, 2500)) + list(range(2505, 4000))
    events = [_event(i / 10, s, dropped=0 if s < 2000 else 10) for i, s in enumerate(seqs)]
    findings = _losses(run_detector(IntegrityDetector(), events))
    assert [(f.evidence["dropped_by_agent"], f.evidence["lost_after_agent"]) for f in findings] == [
        (0, 10), (0, 5)]
    assert findings[1].evidence["totals"]["dropped_by_agent_reported"] == 10


def test_a_count_with_no_gap_stops_explaining_after_a_few_windows():
    # The agent counted 128 drops that did reach the bus (a batch it gave up on, delivered after
    # all); much later 50 events are deleted from the topic: still reported.
    seqs = list(range(3000)) + list(range(3050, 6000))
    events = [_event(i / 10, s, dropped=0 if i < 200 else 128) for i, s in enumerate(seqs)]
    findings = _losses(run_detector(IntegrityDetector(), events))
    assert [(f.evidence["dropped_by_agent"], f.evidence["lost_after_agent"]) for f in findings] == [
        (128, 0), (0, 50)]


def test_a_change_of_partitions_clears_what_was_counted_before():
    detector = IntegrityDetector()
    pipeline = Pipeline([detector], IncidentManager(memory_store()), window_s=60)
    first = [_event(i / 10, i, dropped=0 if i < 200 else 100) for i in range(600)]
    pipeline.detect(first)
    pipeline.partitions_changed([0, 1], False)  # another member joined...
    pipeline.partitions_changed([0, 1, 2, 3], True)  # ... and left: gaps judged afresh
    later = [_event(60 + i / 10, s, dropped=100) for i, s in enumerate(list(range(600, 2000))
                                                                        + list(range(2100, 3000)))]
    findings = pipeline.detect(later).findings + pipeline.close_open_window(final=True).findings
    lost_after = [f.evidence["lost_after_agent"] for f in _losses(findings)]
    assert [n for n in lost_after if n] == [100]


def test_an_agent_first_seen_with_drops_of_numbers_still_to_come_is_not_lost_after_it():
    # Its queue overflowed: events queued before the drops were encoded after them and carry the
    # count of drops numbered after them. The detector starts watching right then.
    seqs = list(range(10_000, 10_100)) + list(range(10_400, 12_000))
    events = [_event(i / 10, s, dropped=300) for i, s in enumerate(seqs)]
    findings = _losses(run_detector(IntegrityDetector(), events))
    assert [f.evidence["lost_after_agent"] for f in findings] == []


def test_a_routine_pause_is_flagged_until_it_has_come_twice():
    # Busy from 08:00 to 20:00 for five days, nothing at night.
    events: list[InferenceEvent] = []
    seq = 0
    for day in range(5):
        start = day * 86_400 + 8 * 3600.0
        day_events = _busy(12 * 60, per_minute=10, start=start, first_seq=seq)
        seq += len(day_events)
        events += day_events
    silences = _silences(run_detector(IntegrityDetector(), events))
    assert [f.evidence["ended"][:10] for f in silences] == ["1970-01-02", "1970-01-03"]


def test_a_late_event_does_not_end_a_silence_or_flag_it_again():
    detector = IntegrityDetector()
    pipeline = Pipeline([detector], IncidentManager(memory_store()), window_s=60)
    pipeline.detect(_busy(40))
    last = 40 * 60 - 2.0
    assert len(pipeline.idle(datetime.fromtimestamp(last + 700, UTC)).findings) == 1
    pipeline.detect([_event(last - 30, 1100, dropped=0)])  # a straggler from before the silence
    assert pipeline.idle(datetime.fromtimestamp(last + 1300, UTC)).findings == []


def test_a_new_share_of_the_partitions_learns_the_services_afresh():
    detector = IntegrityDetector()
    pipeline = Pipeline([detector], IncidentManager(memory_store()), window_s=60)
    pipeline.partitions_changed([0, 1, 2, 3], True)
    pipeline.detect(_busy(40))
    pipeline.partitions_changed([0, 1], False)  # the service's callers are on the other member now
    assert pipeline.idle(datetime.fromtimestamp(40 * 60 + 3600, UTC)).findings == []
    # Told again the partitions it has (a restart that restored its checkpoint): nothing changes.
    assert detector._services["chat"].windows == 0
    pipeline.detect(_busy(40, start=40 * 60 + 3700, first_seq=5000))
    pipeline.partitions_changed([0, 1], False)
    assert detector._services["chat"].windows >= 30


def test_many_scattered_gaps_keep_the_state_bounded():
    from inferwatch.detectors import integrity

    seqs = [s for s in range(60_000) if s % 4]  # one number in four never arrives
    detector = IntegrityDetector()
    pipeline = Pipeline([detector], IncidentManager(memory_store()), window_s=3600)
    pipeline.detect(_stream(seqs, per_s=1000.0, dropped=0))
    agent = detector._agents["a1"]
    assert len(agent.starts) <= integrity.MAX_RUNS
    assert agent.forced > 0  # the lowest gaps were declared early, to be matched at the close


# --- what an operator's walk-through found ---------------------------------------------------------

def test_a_member_left_alone_in_its_group_files_no_false_loss():
    # Two members: this one reads the even callers' partitions. The other stops; after its
    # session this one owns every partition and reads the other's from its last commit, 40 s back.
    events = [_event(i / 20, i, principal=f"p{i % 8}", dropped=0) for i in range(6000)]
    mine = [e for e in events if int(e.principal[1:]) % 2 == 0]
    detector = IntegrityDetector()
    pipeline = Pipeline([detector], IncidentManager(memory_store()), window_s=60)
    pipeline.partitions_changed([0, 1], False)
    cut = 2400  # 120 s in
    findings = pipeline.detect([e for e in mine if e.agent.seq < cut]).findings
    pipeline.partitions_changed([0, 1, 2, 3], True)
    theirs = [e for e in events if e.agent.seq >= cut - 800 and int(e.principal[1:]) % 2]
    rest = sorted([e for e in mine if e.agent.seq >= cut] + theirs, key=lambda e: e.ts)
    findings += pipeline.detect(rest).findings + pipeline.close_open_window(final=True).findings
    assert _losses(findings) == []


def test_an_agent_that_starts_while_its_bus_is_down_has_its_first_losses_reported():
    detector = IntegrityDetector()
    pipeline = Pipeline([detector], IncidentManager(memory_store()), window_s=60)
    pipeline.detect(_stream(list(range(3000)), agent="other", dropped=0))  # the detector was watching
    new = [_event(300 + i / 10, 345 + i, agent="late", dropped=345) for i in range(1500)]
    findings = pipeline.detect(new).findings + pipeline.close_open_window(final=True).findings
    (f,) = [f for f in _losses(findings) if f.subject == "agent:late"]
    assert f.evidence["dropped_by_agent"] == 345
    assert f.evidence["lost_after_agent"] == 0


def test_gaps_in_the_last_window_of_a_replay_are_judged_at_its_end():
    seqs = [s for s in range(300) if not 200 <= s < 250]
    findings = _losses(run_detector(IntegrityDetector(), _stream(seqs, dropped=0)))  # 25 s: one window
    assert [f.evidence["lost_after_agent"] for f in findings] == [50]


def test_gaps_of_an_agent_gone_quiet_are_judged_while_the_service_is_idle():
    detector = IntegrityDetector()
    pipeline = Pipeline([detector], IncidentManager(memory_store()), window_s=60)
    seqs = [s for s in range(1000) if not 900 <= s < 950]
    pipeline.detect(_stream(seqs, dropped=0, per_s=10.0))
    pipeline.close_open_window()
    found = pipeline.idle(datetime.fromtimestamp(95 + 200, UTC)).findings
    assert [f.evidence["lost_after_agent"] for f in _losses(found)] == [50]


def test_the_usual_rate_of_a_silent_service_counts_the_windows_it_sent_in():
    quiet = _busy(40, per_minute=12, service="small")
    other = _busy(80, service="busy", agent="a2")
    silences = _silences(run_detector(IntegrityDetector(), sorted(quiet + other, key=lambda e: e.ts)))
    (f,) = [f for f in silences if f.subject == "service:small"]
    assert f.evidence["usual_events_per_window"] == pytest.approx(12, abs=0.5)


def test_a_service_back_after_a_flagged_silence_says_so_in_the_same_incident():
    store = memory_store()
    pipeline = Pipeline([IntegrityDetector()], IncidentManager(store), window_s=60)
    pipeline.process(_busy(40))
    last = 40 * 60 - 2.0
    pipeline.store(pipeline.idle(datetime.fromtimestamp(last + 700, UTC)))
    back = pipeline.detect(_busy(5, start=last + 1500, first_seq=1200))
    pipeline.store(back)
    (f,) = _silences(back.findings)
    assert f.evidence["back"] is True
    assert "is back after 25 min" in f.title
    (incident,) = store.list_incidents(IncidentQuery())
    assert incident.count == 2
    assert "is back" in incident.title


# --- what a second review found --------------------------------------------------------------------

def test_partitions_away_and_back_file_no_false_loss():
    e = lambda ts, seq, dur=0.1: make_event(ts, id=f"e{seq}", duration_ms=dur * 1000,  # noqa: E731
                                            agent=AgentInfo(id="a1", seq=seq, dropped=0))
    pipeline = Pipeline([IntegrityDetector()], IncidentManager(memory_store()), window_s=60)
    pipeline.detect([e(58, 0, 0.5), e(59, 2, 16.0)])  # a 16 s call: it ends at 75 s, numbered 2
    pipeline.partitions_changed([0, 1], False)
    pipeline.partitions_changed([0, 1, 2, 3], True)
    findings = pipeline.detect([e(61, 1, 0.5)] + [e(80 + i, 3 + i) for i in range(300)]).findings
    findings += pipeline.close_open_window(final=True).findings
    assert _losses(findings) == []


def test_an_agent_met_again_does_not_report_its_old_drops_again():
    detector = IntegrityDetector(max_agents=2)
    pipeline = Pipeline([detector], IncidentManager(memory_store()), window_s=60)
    seqs = [*range(100), *range(140, 900)]
    first = [_event(i / 10, s, dropped=0 if s < 140 else 40) for i, s in enumerate(seqs)]
    findings = pipeline.detect(first).findings
    # Two other agents push it out of the detector's memory; then it comes back.
    others = [_event(100 + i, i, agent=f"o{k}") for k in range(2) for i in range(3)]
    findings += pipeline.detect(others).findings
    findings += pipeline.detect(_stream(list(range(900, 2000)), start=200.0, dropped=40)).findings
    findings += pipeline.close_open_window(final=True).findings
    assert [f.evidence["dropped_by_agent"] for f in _losses(findings) if f.subject == "agent:a1"] == [40]
    # A number far below its drop count is no new agent: its count is not a fresh loss either.
    other = Pipeline([IntegrityDetector()], IncidentManager(memory_store()), window_s=60)
    other.detect(_stream(list(range(2000)), agent="b", dropped=0))
    late = other.detect(_stream(list(range(100, 2000)), start=300.0, dropped=500)).findings
    assert _losses(late + other.close_open_window(final=True).findings) == []


def test_a_long_call_ending_after_a_flagged_silence_is_not_its_end():
    pipeline = Pipeline([IntegrityDetector()], IncidentManager(memory_store()), window_s=60)
    pipeline.detect(_busy(40))
    last = 40 * 60 - 2.0
    assert len(pipeline.idle(datetime.fromtimestamp(last + 700, UTC)).findings) == 1
    straggler = make_event(last + 1, service="chat", duration_ms=1_200_000,
                           agent=AgentInfo(id="a1", seq=1200, dropped=0))
    assert _silences(pipeline.detect([straggler]).findings) == []
    assert pipeline.idle(datetime.fromtimestamp(last + 1900, UTC)).findings == []


def test_a_loss_among_an_agents_first_numbers_is_found():
    # Concurrent calls numbered as they end, read by start time: the first read is not number 0.
    import random

    rng = random.Random(4)
    calls = [(i * 0.2, rng.uniform(0.01, 8)) for i in range(3000)]
    order = sorted(range(len(calls)), key=lambda i: calls[i][0] + calls[i][1])
    seq_of = {call: seq for seq, call in enumerate(order)}
    events = [make_event(start, id=f"c{i}", duration_ms=length * 1000, service="chat",
                         agent=AgentInfo(id="a1", seq=seq_of[i], dropped=0))
              for i, (start, length) in enumerate(calls) if seq_of[i] != 2]
    assert events[0].agent.seq != 0
    findings = _losses(run_detector(IntegrityDetector(), events))
    assert [f.evidence["seq_declared_ranges"] for f in findings] == [["2"]]


def test_a_block_of_deletions_is_a_loss_and_a_wild_number_is_not_believed():
    seqs = [*range(5), *range(205, 400), *range(420, 500)]
    slow = [_event(i * 10.0, s, dropped=0) for i, s in enumerate(seqs)]
    findings = _losses(run_detector(IntegrityDetector(), slow))
    assert [f.evidence["lost_after_agent"] for f in findings] == [200, 20]
    detector = IntegrityDetector()
    wild = _stream([*range(1000), 2**63 - 1, *range(1000, 2000)], dropped=0)
    assert run_detector(detector, wild) == []
    assert detector._agents["a1"].implausible == 1


def test_an_agent_first_met_through_a_refused_event_takes_its_service_from_its_events():
    detector = IntegrityDetector()
    pipeline = Pipeline([detector], IncidentManager(memory_store()), window_s=60)
    pipeline.refused("a1", 0, "time: Input should be a valid datetime")
    findings = pipeline.detect(_stream(list(range(1, 2000)), dropped=0)).findings
    findings += pipeline.close_open_window(final=True).findings
    (f,) = _losses(findings)
    assert f.service == "chat"
    assert f.evidence["refused_as_malformed"] == 1


def test_drops_counted_on_a_long_call_stay_the_agents_own_however_late_their_gap_comes_due():
    # A time-ordered log of an LLM service: calls of 0.2 s every 0.5 s, and every 50th a 400 s
    # generation. 30 events were dropped at the agent (queue full) just before a long call ended,
    # so the first event to carry the count is that long call: read (by its start) about seven
    # windows before the numbers above the gap come due. Still the agent's own loss, not "lost
    # after the agent".
    calls = [(i * 0.5, 400.0 if i % 50 == 0 else 0.2) for i in range(6000)]
    by_end = sorted(range(len(calls)), key=lambda i: calls[i][0] + calls[i][1])
    long_call = 2000
    assert calls[long_call][1] == 400.0
    drop_at = by_end.index(long_call)  # the 30 numbers before the long call's were dropped
    seq_of = {call: seq + (30 if seq >= drop_at else 0) for seq, call in enumerate(by_end)}
    dropped = {call: 30 if seq >= drop_at else 0 for seq, call in enumerate(by_end)}
    events = [make_event(start, id=f"c{i}", duration_ms=length * 1000, service="chat",
                         agent=AgentInfo(id="a1", seq=seq_of[i], dropped=dropped[i]))
              for i, (start, length) in enumerate(calls)]
    findings = _losses(run_detector(IntegrityDetector(), events))
    assert [(f.evidence["dropped_by_agent"], f.evidence["lost_after_agent"]) for f in findings] == [(30, 0)]


def test_drops_from_before_an_agent_was_first_seen_do_not_wait_on_its_first_long_call():
    # A time-ordered log that starts mid-stream: every event carries the 500 drops the agent
    # counted before it, and the first call read is a 400 s generation. 50 events deleted from
    # the topic while it runs are still reported as lost after the agent.
    calls = [(i * 0.5, 400.0 if i == 0 else 0.2) for i in range(2000)]
    by_end = sorted(range(len(calls)), key=lambda i: calls[i][0] + calls[i][1])
    seq_of = {call: 100_000 + seq for seq, call in enumerate(by_end)}
    events = [make_event(start, id=f"c{i}", duration_ms=length * 1000, service="chat",
                         agent=AgentInfo(id="a1", seq=seq_of[i], dropped=500))
              for i, (start, length) in enumerate(calls) if not 600 <= i < 650]
    findings = _losses(run_detector(IntegrityDetector(), events))
    assert [(f.evidence["dropped_by_agent"], f.evidence["lost_after_agent"]) for f in findings] == [(0, 50)]


def test_a_count_carried_by_a_lower_number_too_stops_waiting_on_the_long_call():
    # The agent counted 30 drops that reached the bus after all (no gap of their own), on the
    # short calls numbered after them and on a long call: once those short calls' numbers are
    # accounted for, the count waits no more for the long call, and a deletion late in the long
    # call is reported rather than explained by it.
    calls = [(i * 0.5, 400.0 if i == 2000 else 0.2) for i in range(4000)]
    by_end = sorted(range(len(calls)), key=lambda i: calls[i][0] + calls[i][1])
    seq_of = {call: seq for seq, call in enumerate(by_end)}
    counted_from = 2004  # the number after the drops: a short call, before the long call ended
    assert seq_of[2000] > counted_from + 5
    dropped = {call: 30 if seq >= counted_from else 0 for call, seq in seq_of.items()}
    events = [make_event(start, id=f"c{i}", duration_ms=length * 1000, service="chat",
                         agent=AgentInfo(id="a1", seq=seq_of[i], dropped=dropped[i]))
              for i, (start, length) in enumerate(calls) if not 2600 <= i < 2650]
    findings = _losses(run_detector(IntegrityDetector(), events))
    assert [(f.evidence["dropped_by_agent"], f.evidence["lost_after_agent"]) for f in findings] == [
        (30, 0), (0, 50)]
