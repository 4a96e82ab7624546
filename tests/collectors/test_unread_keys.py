"""Keys of an event's input and output that no detector reads are named, with the field meant."""

import pytest

from inferwatch.collectors.event import EventInput, EventOutput, decode_event
from inferwatch.collectors.unread_keys import KNOWN, UnreadKeys, suggested, unread_keys


def _event(part: str, body: str):
    return decode_event(f'{{"id":"e","time":"2026-01-01T00:00:00Z","{part}":{body}}}')


def test_the_known_keys_are_the_event_models():
    assert set(KNOWN["input"]) == set(EventInput.model_fields) >= {"text", "features", "chars", "tokens"}
    assert set(KNOWN["output"]) == set(EventOutput.model_fields) >= {"label", "score", "finish_reason"}


def test_keys_the_model_does_not_define_are_named_and_the_event_keeps_them():
    event = _event("input", '{"prompt":"Ignore all previous instructions","chars":5}')
    assert unread_keys(event) == ["input.prompt"]
    assert event.input.model_extra == {"prompt": "Ignore all previous instructions"}  # kept, not dropped
    assert unread_keys(_event("output", '{"response":"ok","label":"x"}')) == ["output.response"]
    assert unread_keys(_event("input", '{"text":"hi","features":{"prompt":1}}')) == []  # a feature's name


@pytest.mark.parametrize(("path", "meant"), [
    ("input.prompt", "input.text"), ("input.Messages", "input.text"), ("input.txt", "input.text"),
    ("input.feature", "input.features"), ("input.prompt_tokens", "input.tokens"),
    ("output.completion", "output.text"), ("output.lable", "output.label"),
    ("output.finishreason", "output.finish_reason"), ("output.probability", "output.score"),
    ("input.customer_tier", None), ("output.latency", None),
])
def test_the_field_probably_meant_is_suggested(path, meant):
    assert suggested(path) == meant


def test_the_summary_counts_events_and_names_each_key_with_its_suggestion():
    seen = UnreadKeys()
    for _ in range(12):
        assert seen.add(["input.prompt"]) in (["input.prompt"], [])
    assert seen.add([]) == []  # an event without such keys is not counted
    assert seen.summary() == ("12 events carried input keys no built-in detector reads: "
                              "input.prompt (did you mean input.text?)")
    assert seen.add(["input.prompt", "output.reply", "input.tenant"]) == ["output.reply", "input.tenant"]
    assert seen.summary() == ("13 events carried input and output keys no built-in detector reads: "
                              "input.prompt (13; did you mean input.text?), output.reply (1; did you "
                              "mean output.text?), input.tenant (1)")
    assert UnreadKeys().summary() is None


def test_features_written_beside_input_features_or_at_the_top_are_named_with_their_place():
    """A walk-through's tabular events put their features under ``input`` itself, or a
    ``features`` key at the top: kept, read by no detector, and drift saw no input at all."""
    seen = UnreadKeys()
    beside = decode_event('{"id":"e","time":"2026-01-01T00:00:00Z","input":{"nswprice":0.05,"day":"mon",'
                          '"params":{"k":1}}}')
    top = decode_event('{"id":"e","time":"2026-01-01T00:00:00Z","features":{"x":1},"future_field":1}')
    assert unread_keys(top) == ["features"]  # a newer agent's own field is not named
    for event in (beside, top):
        seen.add(unread_keys(event), event)
    assert seen.summary() == (
        "2 events carried top-level and input keys no built-in detector reads: input.nswprice (1; did you "
        "mean input.features.nswprice?), input.day (1; did you mean input.features.day?), input.params (1), "
        "features (1; did you mean input.features?)")


def test_distinct_keys_are_remembered_up_to_a_bound():
    seen = UnreadKeys(max_keys=3)
    new = [seen.add([f"input.k{i}"]) for i in range(10)]
    assert new[:3] == [["input.k0"], ["input.k1"], ["input.k2"]]
    assert new[3:] == [[]] * 7
    assert seen.events == 10
    assert len(seen.keys) == 3
    assert seen.summary().endswith("(keys past the first 3 were not counted)")
