from datetime import UTC, datetime, timedelta

import pytest

from inferwatch.detectors.base import Finding
from inferwatch.detectors.incidents import (
    AlreadyInState,
    IncidentError,
    IncidentManager,
    NoSuchIncident,
    fingerprint,
)
from inferwatch.detectors.store import IncidentQuery
from inferwatch.testing import memory_store

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def finding(minutes: float = 0, *, subject="principal:p1", severity="medium", events=("e1",), score=0.6,
            kind="abuse", **kw):
    return Finding(
        detector=kw.pop("detector", "request_rate"), kind=kind, severity=severity, score=score,
        title=kw.pop("title", "flood"), summary="many requests", subject=subject,
        time=T0 + timedelta(minutes=minutes), model=kw.pop("model", "m"), service="svc",
        event_ids=list(events),
        evidence=kw.pop("evidence", {"count": 1}), **kw,
    )


@pytest.fixture
def manager():
    return IncidentManager(memory_store(), bucket_s=3600)


def test_same_problem_updates_the_open_incident(manager):
    first = manager.apply([finding(0, events=("e1",))])
    second = manager.apply([finding(5, events=("e2",), evidence={"count": 2})])
    assert len(first) == len(second) == 1
    inc = second[0]
    assert inc.id == first[0].id
    assert inc.count == 2
    assert inc.first_seen == T0
    assert inc.last_seen == T0 + timedelta(minutes=5)
    assert inc.event_ids == ["e1", "e2"]
    assert inc.evidence == {"count": 2}  # newest evidence
    assert len(manager.store.list_incidents(IncidentQuery())) == 1


def test_redelivered_finding_is_not_counted_twice(manager):
    manager.apply([finding(0, events=("e1",))])
    assert manager.apply([finding(0, events=("e1",))]) == []
    assert manager.store.list_incidents(IncidentQuery())[0].count == 1


def test_different_subjects_and_detectors_are_different_incidents(manager):
    manager.apply([finding(0), finding(0, subject="principal:p2"), finding(0, detector="other")])
    assert len(manager.store.list_incidents(IncidentQuery())) == 3


def test_id_is_deterministic_from_the_fingerprint(manager):
    inc = manager.apply([finding(0)])[0]
    bucket = int(T0.timestamp() // 3600)
    assert inc.fingerprint == fingerprint("request_rate", "principal:p1", "m", bucket)
    assert inc.id == inc.fingerprint[:16]
    other = IncidentManager(memory_store(), bucket_s=3600).apply([finding(0)])[0]
    assert other.id == inc.id


def test_long_quiet_spell_opens_a_new_incident(manager):
    a = manager.apply([finding(0)])[0]
    b = manager.apply([finding(61 * 60)])[0]
    assert a.id != b.id


def test_continuing_problem_across_a_bucket_edge_stays_one_incident(manager):
    ids = {manager.apply([finding(m, events=(f"e{m}",))])[0].id for m in range(0, 150, 10)}
    assert len(ids) == 1


def test_lifecycle_ack_resolve_and_reopen(manager):
    inc = manager.apply([finding(0)])[0]
    acked = manager.acknowledge(inc.id, "alice", "looking")
    assert acked.status == "acknowledged"
    assert manager.apply([finding(1, events=("e2",))])[0].status == "acknowledged"
    resolved = manager.resolve(inc.id, "alice", "blocked the key")
    assert resolved.status == "resolved"
    with pytest.raises(IncidentError, match="is resolved"):
        manager.acknowledge(inc.id, "bob")
    reopened = manager.apply([finding(2, events=("e3",))])[0]
    assert reopened.id == inc.id
    assert reopened.status == "open"
    assert [h.action for h in reopened.history] == ["opened", "acknowledged", "resolved", "reopened"]
    assert reopened.history[1].actor == "alice"
    assert reopened.history[1].note == "looking"


def test_unknown_id_is_a_clear_error(manager):
    with pytest.raises(IncidentError, match="no incident with id 'nope'"):
        manager.resolve("nope", "alice")


def test_severity_escalates_and_is_recorded(manager):
    manager.apply([finding(0, severity="low")])
    inc = manager.apply([finding(1, severity="high", events=("e2",))])[0]
    assert inc.severity == "high"
    assert inc.history[-1].action == "escalated"


def test_batch_with_repeats_writes_one_incident(manager):
    out = manager.apply([finding(0, events=(f"e{i}",)) for i in range(5)])
    assert len(out) == 1
    assert out[0].count == 5


def test_redelivery_of_more_findings_than_digests_kept_is_still_not_counted(manager):
    # A crash between store and commit can redeliver a whole batch: 500 findings for one
    # incident is more than the 256 digests an incident remembers.
    findings = [finding(i / 10, events=(f"e{i}",)) for i in range(500)]
    manager.apply(findings)
    assert manager.store.list_incidents(IncidentQuery())[0].count == 500
    assert manager.apply(findings) == []
    assert manager.store.list_incidents(IncidentQuery())[0].count == 500
    newer = manager.apply([finding(51, events=("e-new",))])
    assert newer[0].count == 501


def test_repeated_abuse_escalates_with_count(manager):
    out = []
    for i in range(50):
        out = manager.apply([finding(i / 10, severity="low", events=(f"e{i}",))])
    inc = out[0]
    assert inc.count == 50
    assert inc.severity == "high"  # low + one step at 5 findings + one at 50
    escalations = [h for h in inc.history if h.action == "escalated"]
    assert [h.note.split(":")[0] for h in escalations] == ["medium", "high"]
    assert "50 findings" in escalations[-1].note
    assert "peak_severity" not in inc.public_dict()


def test_four_findings_do_not_escalate_but_the_fifth_does(manager):
    for i in range(4):
        inc = manager.apply([finding(i, severity="low", events=(f"e{i}",))])[0]
    assert inc.severity == "low"
    assert manager.apply([finding(5, severity="low", events=("e5",))])[0].severity == "medium"


def test_repeated_confident_findings_escalate_and_one_alone_does_not(manager):
    first = manager.apply([finding(0, severity="medium", score=0.95)])[0]
    assert first.severity == "medium"  # a single finding keeps the detector's severity
    second = manager.apply([finding(1, severity="medium", score=0.95, events=("e2",))])[0]
    assert second.severity == "high"


def test_escalation_stops_at_high_and_drift_does_not_escalate(manager):
    for i in range(60):
        inc = manager.apply([finding(i / 10, severity="medium", score=0.99, events=(f"e{i}",))])[0]
    assert inc.severity == "high"
    drift = [finding(i / 10, severity="low", kind="drift", detector="numeric_drift", events=(f"d{i}",))
             for i in range(60)]
    assert manager.apply(drift)[0].severity == "low"


def test_a_critical_finding_is_kept_and_peak_survives_a_store_round_trip(manager):
    manager.apply([finding(0, severity="low")])
    stored = manager.store.list_incidents(IncidentQuery())[0]
    assert stored.peak_severity == "low"
    inc = manager.apply([finding(1, severity="critical", events=("e2",))])[0]
    assert inc.severity == "critical"
    assert inc.history[-1].note == "critical: flood (score 0.60)"  # the finding that made it critical


# -- auto-resolve after quiet, and what follows ----------------------------------------------------


def quiet_manager(**kw):
    return IncidentManager(memory_store(), bucket_s=3600, resolve_after_s=1800, **kw)


def test_a_quiet_incident_resolves_itself_by_event_time():
    manager = quiet_manager()
    (filed,) = manager.apply([finding(0)])
    assert manager.resolve_quiet(T0 + timedelta(minutes=29)) == []         # not quiet long enough
    (resolved,) = manager.resolve_quiet(T0 + timedelta(minutes=31))
    assert (resolved.id, resolved.status) == (filed.id, "resolved")
    last = resolved.history[-1]
    assert (last.actor, last.action, last.note, last.at) == (
        "inferwatch", "resolved", "auto: quiet for 30m", T0 + timedelta(minutes=31))
    assert manager.store.get(filed.id).status == "resolved"
    assert manager.resolve_quiet(T0 + timedelta(minutes=90)) == []          # once


def test_only_quiet_active_incidents_resolve_and_every_page_of_them():
    manager = quiet_manager()
    manager.apply([finding(0, subject=f"principal:q{n}") for n in range(1203)])
    busy = manager.apply([finding(40, subject="principal:busy")])
    acked = manager.apply([finding(1, subject="principal:acked")])[0]
    manager.acknowledge(acked.id, "alice")
    resolved = manager.resolve_quiet(T0 + timedelta(minutes=45))
    assert len(resolved) == 1204                                            # q0..q1202 and acked
    assert busy[0].id not in {i.id for i in resolved}
    assert manager.store.list_incidents(IncidentQuery(status=["open"], limit=5000))[0].id == busy[0].id


def test_recurrence_after_auto_resolve_reopens_within_the_bucket():
    manager = quiet_manager()
    (filed,) = manager.apply([finding(0)])
    manager.resolve_quiet(T0 + timedelta(minutes=31))
    (again,) = manager.apply([finding(50, events=("e9",))])
    assert (again.id, again.status, again.history[-1].action) == (filed.id, "open", "reopened")


def test_auto_resolve_can_be_turned_off():
    manager = IncidentManager(memory_store(), bucket_s=3600, resolve_after_s=None)
    manager.apply([finding(0)])
    assert manager.resolve_quiet(T0 + timedelta(days=30)) == []


def test_every_change_stamps_updated_at_with_the_manager_clock():
    moments = iter([T0 + timedelta(hours=h) for h in range(1, 10)])
    manager = quiet_manager(clock=lambda: next(moments))
    (filed,) = manager.apply([finding(0)])
    assert filed.updated_at == T0 + timedelta(hours=1)
    acked = manager.acknowledge(filed.id, "alice", "on it")
    assert acked.updated_at == T0 + timedelta(hours=2) == acked.history[-1].at
    (resolved,) = manager.resolve_quiet(T0 + timedelta(hours=5))
    assert resolved.updated_at == T0 + timedelta(hours=3)


def test_sample_events_keep_the_first_seen_and_the_newest_findings_whose_evidence_is_shown(manager):
    first = [f"a{i}" for i in range(20)]
    manager.apply([finding(0, events=first, evidence={"window": 1})])
    inc = manager.apply([finding(5, events=[f"b{i}" for i in range(20)], evidence={"window": 2})])[0]
    assert inc.evidence == {"window": 2}
    assert inc.event_ids == first[:10] + [f"b{i}" for i in range(10)]
    inc = manager.apply([finding(10, events=[f"c{i}" for i in range(3)], evidence={"window": 3})])[0]
    assert inc.event_ids == first[:10] + [f"b{i}" for i in range(7)] + ["c0", "c1", "c2"]
    # A late finding (older than the evidence shown) only fills free room: here there is none.
    late = manager.apply([finding(7, events=["d0"], evidence={"window": 2.5})])[0]
    assert late.evidence == {"window": 3}
    assert late.event_ids == inc.event_ids


def test_one_event_findings_fill_the_sample_then_the_last_slot_follows_the_newest(manager):
    for minute in range(25):
        inc = manager.apply([finding(minute, events=(f"e{minute}",))])[0]
    assert inc.event_ids == [f"e{i}" for i in range(19)] + ["e24"]
    assert len(inc.event_ids) == 20


def test_history_names_the_finding_that_opened_and_escalated_it_when_later_ones_are_milder(manager):
    manager.apply([finding(0, severity="medium", title="markdown image to evil.example")])
    manager.apply([finding(1, severity="critical", title="private key in output", events=("e2",))])
    inc = manager.apply([finding(2, severity="medium", title="markdown image again", events=("e3",))])[0]
    assert inc.title == "private key in output"  # the most severe finding's, as documented
    assert inc.summary == "many requests"  # the summary is the latest's
    assert inc.severity == "critical"
    notes = [(h.action, h.note) for h in inc.history]
    assert notes == [("opened", "medium: markdown image to evil.example (score 0.60)"),
                     ("escalated", "critical: private key in output (score 0.60)")]


def window(minutes: float, models: list[str], events: tuple[str, ...]) -> Finding:
    """A per-caller window finding as ``state.window_finding`` makes it: the model named only
    when the caller used one in the window, every model in the evidence."""
    return finding(minutes, events=events, detector="scraping", evidence={"models": models},
                   model=None if len(models) != 1 else models[0])


def test_a_caller_moving_between_one_model_and_several_stays_one_incident(manager):
    ids = [manager.apply([window(m, models, (f"e{m}",))])[0].id
           for m, models in ((0, ["chat"]), (1, ["chat", "embed"]), (2, ["chat"]), (3, ["embed", "chat"]))]
    assert len(set(ids)) == 1
    incidents = manager.store.list_incidents(IncidentQuery())
    assert [(i.model, i.count) for i in incidents] == [("chat", 4)]


def test_several_models_first_then_one_joins_that_incident(manager):
    first = manager.apply([window(0, ["chat", "embed"], ("e0",))])[0]
    assert first.model is None
    assert manager.apply([window(1, ["embed"], ("e1",))])[0].id == first.id


def test_a_caller_on_another_model_alone_is_another_incident(manager):
    chat = manager.apply([window(0, ["chat"], ("e0",))])[0]
    embed = manager.apply([window(1, ["embed"], ("e1",))])[0]
    assert chat.id != embed.id
    # and per-request findings (no models in their evidence) match their own model only
    other = manager.apply([finding(2, detector="scraping", model=None, events=("e2",))])[0]
    assert other.id not in (chat.id, embed.id)


def test_findings_seen_again_after_a_resolve_open_nothing_new(manager):
    # A file replayed into its store after its incident was resolved: the incident (started at
    # 12:00) holds a finding of the next hour, whose fingerprint names another incident.
    findings = [finding(0, events=("e1",)), finding(50, events=("e2",)), finding(95, events=("e3",))]
    [incident] = manager.apply(findings)
    assert incident.count == 3
    manager.resolve(incident.id, "alice", "done")
    assert manager.apply(findings) == []
    [stored] = manager.store.list_incidents(IncidentQuery())
    assert (stored.id, stored.status, stored.count) == (incident.id, "resolved", 3)
    # A new finding of the same problem still reopens it (within its bucket) as before.
    [again] = manager.apply([finding(30, events=("e4",))])
    assert (again.id, again.status, again.count) == (incident.id, "open", 4)


def test_a_drift_incident_keeps_what_drifted_in_its_earlier_findings(manager):
    """The incident shows its newest finding's evidence; features that drifted only in earlier
    findings are listed under drifted_earlier (newest first, with their last window), not lost."""
    def drift(minutes, drifted, **features):
        detail = {name: {"effect": {"name": "ks_d", "value": value}, "p_adjusted": 0.001}
                  for name, value in features.items()}
        return finding(minutes, subject="model:m", kind="drift", detector="drift", title="Drift on model m",
                       events=(f"e{minutes}",),
                       evidence={"drifted": drifted, "window_end": f"w{minutes}", "features": detail})

    manager.apply([drift(0, ["input.a", "input.b"], **{"input.a": 0.3, "input.b": 0.2})])
    [second] = manager.apply([drift(1, ["input.b"], **{"input.b": 0.25})])
    assert second.evidence["drifted"] == ["input.b"]
    assert second.evidence["drifted_earlier"] == [
        {"feature": "input.a", "last_window_end": "w0", "effect": {"name": "ks_d", "value": 0.3},
         "p_adjusted": 0.001}]
    [third] = manager.apply([drift(2, ["input.c"], **{"input.c": 0.4})])
    assert [(i["feature"], i["last_window_end"]) for i in third.evidence["drifted_earlier"]] == [
        ("input.b", "w1"), ("input.a", "w0")]
    [fourth] = manager.apply([drift(3, ["input.a", "input.c"], **{"input.a": 0.5, "input.c": 0.4})])
    # input.a drifts again: shown in the evidence itself, no longer among the earlier ones
    assert [i["feature"] for i in fourth.evidence["drifted_earlier"]] == ["input.b"]
    # A finding older than the newest (a late window) does not replace the evidence, nor the list.
    [late] = manager.apply([drift(2.5, ["input.z"], **{"input.z": 0.9})])
    assert late.evidence == fourth.evidence
    # Findings without a drifted list (any abuse detector) carry nothing.
    manager.apply([finding(0)])
    [abuse] = manager.apply([finding(1, evidence={"count": 2})])
    assert abuse.evidence == {"count": 2}


def test_an_address_incident_keeps_every_key_that_worked_across_processes(manager):
    """With two detector processes each files its share of one address's stuffing (partitions
    are keyed by principal): the incident names the keys both found, not the latest share only."""
    def share(minutes, keys):
        return finding(minutes, subject="ip:203.0.113.0", detector="auth_abuse",
                       evidence={"attack_accepted_principals": keys, "attack_accepted_count": len(keys)})

    manager.apply([share(0, ["p_a", "p_b"])])
    [merged] = manager.apply([share(1, ["p_c"])])
    assert merged.evidence["attack_accepted_principals"] == ["p_a", "p_b", "p_c"]
    assert merged.evidence["attack_accepted_count"] == 3


def test_a_finding_about_events_before_a_resolve_is_counted_without_reopening_it():
    # Live: event times follow the wall clock, the clock `incidents resolve` stamps.
    manager = IncidentManager(memory_store(), bucket_s=3600, clock=lambda: T0 + timedelta(minutes=3))
    (incident,) = manager.apply([finding(0), finding(1, events=("e2",))])
    manager.resolve(incident.id, "alice", "key revoked")  # at 12:03
    # The window ending at 12:02 closes (or a lagging detector process files it) after the resolve.
    (late,) = manager.apply([finding(2, events=("e3",), evidence={"count": 3})])
    assert (late.id, late.status, late.count, late.evidence) == (incident.id, "resolved", 3, {"count": 3})
    assert [h.action for h in late.history] == ["opened", "resolved"]
    (at_resolve,) = manager.apply([finding(3, events=("e4",))])
    assert (at_resolve.status, at_resolve.count) == ("resolved", 4)
    (after,) = manager.apply([finding(4, events=("e5",))])  # 12:04: the problem is back
    assert (after.status, after.count) == ("open", 5)
    assert [h.action for h in after.history][:3] == ["opened", "resolved", "reopened"]


def test_a_finding_from_before_an_automatic_resolve_does_not_reopen_it():
    manager = quiet_manager()
    (filed,) = manager.apply([finding(0)])
    manager.resolve_quiet(T0 + timedelta(minutes=31))  # event time: quiet since 12:00
    (late,) = manager.apply([finding(20, events=("e2",))])
    assert (late.id, late.status, late.count) == (filed.id, "resolved", 2)


def test_a_replayed_old_log_resolved_since_is_reopened_by_its_later_findings():
    """Resolved by a person long after the log's events (another clock): a later finding of the
    log reopens it, as one after the resolve would."""
    manager = IncidentManager(memory_store(), bucket_s=3600, clock=lambda: T0 + timedelta(days=30))
    (incident,) = manager.apply([finding(0)])
    manager.resolve(incident.id, "alice")
    (again,) = manager.apply([finding(5, events=("e2",))])
    assert (again.status, again.count, again.history[-1].action) == ("open", 2, "reopened")


def test_a_person_reopens_a_resolved_or_acknowledged_incident(manager):
    inc = manager.apply([finding(0)])[0]
    manager.resolve(inc.id, "alice", "blocked the key")
    reopened = manager.reopen(inc.id[:6], "bob", "still flooding from another key")
    assert reopened.status == "open" == manager.store.get(inc.id).status
    last = reopened.history[-1]
    assert (last.action, last.actor, last.note) == ("reopened", "bob", "still flooding from another key")
    with pytest.raises(AlreadyInState, match=f"incident {inc.id} is already open"):
        manager.reopen(inc.id, "bob")
    manager.acknowledge(inc.id, "carol")
    assert manager.reopen(inc.id, "carol", "handing it back").status == "open"  # nobody is on it after all
    assert [h.action for h in manager.store.get(inc.id).history] == [
        "opened", "resolved", "reopened", "acknowledged", "reopened"]


def test_acknowledging_a_resolved_incident_names_its_full_id_and_says_reopen_first(manager):
    inc = manager.apply([finding(0)])[0]
    manager.resolve(inc.id, "alice")
    with pytest.raises(IncidentError) as refused:
        manager.acknowledge(inc.id[:4], "bob")
    assert str(refused.value) == (f"incident {inc.id} is resolved; cannot mark it acknowledged: "
                                  f"reopen it first (`inferwatch incidents reopen {inc.id}`)")


def test_a_note_is_kept_in_the_history_without_changing_the_status(manager):
    inc = manager.apply([finding(0)])[0]
    manager.acknowledge(inc.id, "alice")
    noted = manager.add_note(inc.id, "alice", "customer says it is a load test")
    assert noted.status == "acknowledged" == manager.store.get(inc.id).status
    last = manager.store.get(inc.id).history[-1]
    assert (last.action, last.actor, last.note) == ("noted", "alice", "customer says it is a load test")
    manager.resolve(inc.id, "alice")
    assert manager.add_note(inc.id, "bob", "post-mortem: PM-42").status == "resolved"
    with pytest.raises(NoSuchIncident):
        manager.add_note("nope", "bob", "x")


def test_an_incident_a_person_reopened_is_not_resolved_again_as_quiet_at_once():
    now = [T0 + timedelta(hours=2)]
    manager = quiet_manager(clock=lambda: now[0])
    (filed,) = manager.apply([finding(0)])
    manager.resolve_quiet(T0 + timedelta(minutes=31))
    manager.reopen(filed.id, "bob", "not over")                          # at 14:00, wall clock
    manager.add_note(filed.id, "bob", "watching it")
    assert manager.resolve_quiet(T0 + timedelta(hours=2, minutes=1)) == []   # its findings are old
    assert manager.store.get(filed.id).status == "open"
    now[0] = T0 + timedelta(hours=2, minutes=31)                           # quiet for 30m since the reopen
    (resolved,) = manager.resolve_quiet(T0 + timedelta(hours=2, minutes=31))
    assert (resolved.id, resolved.status) == (filed.id, "resolved")


def test_the_title_is_the_most_severe_then_highest_scored_findings_not_the_latest(manager):
    manager.apply([finding(0, severity="critical", score=0.99, title="635 requests (318x)")])
    inc = manager.apply([finding(1, severity="high", score=0.9, title="233 requests (116x)", events=("e2",),
                                 evidence={"count": 233})])[0]
    assert inc.title == "635 requests (318x)"  # the peak stays, as a pager keeps the triggering alert's
    assert inc.evidence == {"count": 233}  # summary and evidence are the latest's
    inc = manager.apply([finding(2, severity="critical", score=0.95, title="700 requests (300x)",
                                 events=("e3",))])[0]
    assert inc.title == "635 requests (318x)"  # as severe, but lower scored
    inc = manager.apply([finding(3, severity="critical", score=0.99, title="640 requests (320x)",
                                 events=("e4",))])[0]
    assert inc.title == "640 requests (320x)"  # as severe and as scored: the latest
    assert manager.store.get(inc.id).title == "640 requests (320x)"
    assert "title_score" not in inc.public_dict()


def test_a_drift_incident_keeps_its_strongest_windows_title_over_a_borderline_one(manager):
    drift = {"kind": "drift", "detector": "drift", "subject": "model:m"}
    manager.apply([finding(0, severity="medium", score=0.97, title="Input drift: amount, age", **drift)])
    inc = manager.apply([finding(5, severity="medium", score=0.51, title="Input drift: age",
                                 events=("e2",), **drift)])[0]
    assert inc.title == "Input drift: amount, age"
    inc = manager.apply([finding(10, severity="high", score=0.7, title="Input drift: everything",
                                 events=("e3",), **drift)])[0]
    assert inc.title == "Input drift: everything"  # more severe, whatever its score
