import json

import pytest

from inferwatch.collectors.event import (
    SCHEMA,
    InferenceEvent,
    MalformedEvent,
    decode_event,
    encode_event,
)
from inferwatch.collectors.fast_event import decode_view
from inferwatch.collectors.ids import uuid7

FULL = {
    "schema": "inferwatch.event/1",
    "id": "01890a5d-ac96-774b-bcce-b302099a8057",
    "time": "2026-03-01T12:00:00.250Z",
    "duration_ms": 12.5,
    "service": "fraud-api",
    "model": "fraud-gbm",
    "model_version": "7",
    "operation": "predict",
    "endpoint": "/v1/predict",
    "principal": "p_0a1b2c",
    "client_ip": "10.1.2.0",
    "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
    "span_id": "00f067aa0ba902b7",
    "status": 200,
    "error": None,
    "input": {"features": {"amount": 12.5, "country": "GB", "new": True}, "chars": 40},
    "output": {"label": "ok", "score": 0.93},
    "attributes": {"region": "eu"},
    "agent": {"id": "a1", "seq": 41, "version": "0.1.0"},
}


def test_round_trip_keeps_every_field():
    event = decode_event(json.dumps(FULL))
    again = json.loads(encode_event(event))
    expected = {k: v for k, v in FULL.items() if v is not None}
    assert again == {**expected, "time": "2026-03-01T12:00:00.250000Z"}


def test_unknown_fields_are_kept_at_every_level():
    doc = {**FULL, "tenant": "acme", "input": {**FULL["input"], "lang": "en"}}
    event = decode_event(json.dumps(doc))
    assert event.extra_fields == {"tenant": "acme"}
    out = json.loads(encode_event(event))
    assert out["tenant"] == "acme"
    assert out["input"]["lang"] == "en"


def test_time_is_normalised_to_utc_and_naive_time_rejected():
    event = decode_event(json.dumps({**FULL, "time": "2026-03-01T13:00:00+01:00"}))
    assert event.time.isoformat() == "2026-03-01T12:00:00+00:00"
    with pytest.raises(MalformedEvent, match=r"time: .*UTC offset"):
        decode_event(json.dumps({**FULL, "time": "2026-03-01T13:00:00"}))


@pytest.mark.parametrize(
    ("patch", "reason"),
    [
        ({"id": None}, "id: "),
        ({"duration_ms": -1}, "duration_ms: "),
        ({"trace_id": "xyz"}, "trace_id: .*32 lowercase hex"),
        ({"span_id": "ABCDEF0123456789"}, "span_id: .*16 lowercase hex"),
        ({"schema": "inferwatch.event/2"}, "major version .*upgrade"),
        ({"schema": "something-else"}, "schema must look like"),
        ({"agent": {"id": "a", "seq": -3}}, "agent.seq"),
        ({"input": {"features": {"x": [1, 2]}}}, "input.features.x"),
        ({"output": {"score": float("nan")}}, "output.score: Input should be a finite number"),
    ],
)
def test_malformed_events_name_the_field(patch, reason):
    doc = {**FULL, **patch}
    if patch.get("id", "") is None:
        del doc["id"]
    with pytest.raises(MalformedEvent, match=reason):
        decode_event(json.dumps(doc))


@pytest.mark.parametrize("raw", [b"", b"not json", b"[1,2]", b'{"id": "x"', b"\xff\xfe"])
def test_garbage_raises_malformed_not_anything_else(raw):
    with pytest.raises(MalformedEvent):
        decode_event(raw)


@pytest.mark.parametrize(("raw", "reason"), [
    (b"", "not JSON: empty"), (b"  \n", "not JSON: empty"),
    (b"garbage", "not JSON: expected value at column 1"),
    (b'{"id": "x",\n', "not JSON: it ends inside its JSON (cut short, or one object written over several "
                       "lines?)"),
])
def test_what_is_not_json_is_said_as_a_reader_would(raw, reason):
    with pytest.raises(MalformedEvent) as caught:
        decode_event(raw)
    assert str(caught.value) == reason

@pytest.mark.parametrize("time", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00",
                                  "9999-12-31T23:59:30Z", "9999-01-01T00:00:00Z"])
def test_a_time_out_of_range_in_utc_is_malformed_not_an_overflow(time):
    with pytest.raises(MalformedEvent, match="time: Value error, time is out of range"):
        decode_event(json.dumps({"id": "e", "time": time}))


def test_the_latest_time_accepted_still_closes_its_window(tmp_path):
    from inferwatch.detectors.incidents import IncidentManager
    from inferwatch.detectors.pipeline import Pipeline
    from inferwatch.detectors.replay import replay_file
    from inferwatch.detectors.sqlite_store import SQLiteStore

    path = tmp_path / "late.jsonl"
    path.write_text(json.dumps({"id": "a", "time": "2026-01-01T00:00:00Z"}) + "\n"
                    + json.dumps({"id": "b", "time": "9998-12-31T23:59:59.999999Z"}) + "\n"
                    + json.dumps({"id": "c", "time": "9999-12-31T23:59:30Z"}) + "\n")
    store = SQLiteStore(":memory:")
    result = replay_file(path, Pipeline([], IncidentManager(store), window_s=86_400), store)
    assert result.events == 2
    assert result.malformed == [(3, "time: Value error, time is out of range (not before 9999-01-01 in UTC) "
                                    "(got '9999-12-31T23:59:30Z')")]


def test_a_malformed_time_is_shown_with_the_form_expected():
    with pytest.raises(MalformedEvent) as err:
        decode_event(json.dumps({"id": "a", "time": "2026-13-45T99:00:00Z"}))
    assert str(err.value).endswith(
        "(got '2026-13-45T99:00:00Z'; expected RFC 3339, e.g. 2026-01-01T12:00:00.5Z)")


def test_infinite_duration_is_malformed():
    raw = json.dumps(FULL).replace('"duration_ms": 12.5', '"duration_ms": Infinity')
    with pytest.raises(MalformedEvent, match="duration_ms: Input should be a finite number"):
        decode_event(raw)


def test_a_nan_or_infinite_feature_is_read_as_missing_not_a_lost_event():
    """Python's json.dumps writes a pandas gap as NaN: the event is kept, the feature missing (as
    the agent records it), so a surge of gaps reaches drift instead of the dead letters."""
    doc = {**FULL, "input": {"features": {"x": float("nan"), "y": 2.0, "z": float("-inf")}},
           "output": {"features": {"w": float("inf")}, "label": "a"}}
    event = decode_event(json.dumps(doc))
    assert event.input.features == {"x": None, "y": 2.0, "z": None}
    assert event.output.features == {"w": None}
    assert decode_view(json.dumps(doc).encode()).input.features == {"x": None, "y": 2.0, "z": None}
    assert decode_event(json.dumps({**doc, "attributes": {"a": float("nan"), "b": 1}})).attributes == {
        "a": None, "b": 1}
    # Elsewhere NaN stays refused, with what to write instead; the features' NaN no longer adds to it.
    with pytest.raises(MalformedEvent) as err:
        decode_event(json.dumps({**doc, "duration_ms": float("nan")}))
    assert str(err.value) == ("duration_ms: Input should be a finite number (NaN and Infinity are not JSON: "
                              "write null for a missing value, or leave the field out)")


def test_oversized_event_rejected_before_parsing():
    big = json.dumps({**FULL, "attributes": {"blob": "x" * 2000}})
    with pytest.raises(MalformedEvent, match="over the 1000-byte limit"):
        decode_event(big, max_bytes=1000)


def test_defaults_make_a_minimal_event_valid():
    event = InferenceEvent(id="e", time="2026-01-01T00:00:00Z")
    assert event.schema_ == SCHEMA
    assert json.loads(encode_event(event))["schema"] == SCHEMA
    assert event.ts == 1767225600.0


def test_uuid7_sorts_in_creation_order_and_is_unique():
    ids = [uuid7() for _ in range(5000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
