"""Building detectors from the settings: unknown names and bad options are named, values converted."""

import pytest

from inferwatch.detectors.registry import DetectorConfigError, build_detectors


def test_options_are_converted_like_the_settings():
    (rate,) = build_detectors(["request_rate"], {"request_rate": {"min_requests": "50", "own_factor": 4}})
    assert rate.min_requests == 50
    assert isinstance(rate.min_requests, int)


@pytest.mark.parametrize(("options", "message"), [
    ({"request_rate": {"min_requests": "lots"}},
     "detect.options.request_rate.min_requests: Input should be a valid integer"),
    ({"request_rate": {"min_requests": 2.5}}, "detect.options.request_rate.min_requests:"),
    ({"output_leak": {"entropy_threshold": "high"}},
     "detect.options.output_leak.entropy_threshold: Input should be a valid number"),
    ({"request_rate": {"min_requets": 5}},
     "detect.options.request_rate.min_requets: no such option; did you mean min_requests? "
     "request_rate takes "),
    ({"request_rate": {"frobnicate": 5}},
     "detect.options.request_rate.frobnicate: no such option; request_rate "),
    ({"prompt_injection": {"max_chars": -5}},
     "detect.options.prompt_injection: max_chars must be at least 1"),
    ({"drift": {"correction": "bonf"}}, "detect.options.drift: correction must be 'holm' or 'bh'"),
])
def test_a_bad_option_is_named_with_what_it_got(options, message):
    with pytest.raises(DetectorConfigError) as err:
        build_detectors(list(options), options)
    assert message in str(err.value)


def test_a_method_written_in_capitals_is_the_same_method():
    # `correction: BH` was refused (walk-through); BH and Holm are written so in the literature
    (drift,) = build_detectors(["drift"], {"drift": {"correction": "BH", "reference": "Warmup"}})
    assert (drift.correction, drift.reference) == ("bh", "warmup")


def test_the_value_given_is_shown():
    with pytest.raises(DetectorConfigError, match=r"\(got 'lots'\)"):
        build_detectors(["request_rate"], {"request_rate": {"min_requests": "lots"}})


def test_an_empty_name_among_the_enabled_is_refused():
    with pytest.raises(DetectorConfigError, match=r"detect\.enabled holds an empty name"):
        build_detectors(["drift", " "])


def test_a_canary_or_system_prompt_given_wrongly_is_not_echoed():
    with pytest.raises(DetectorConfigError) as err:
        build_detectors(["output_leak"], {"output_leak": {"system_prompt": 42, "canaries": "CANARY-7f3a"}})
    assert "detect.options.output_leak." in str(err.value)
    assert "CANARY-7f3a" not in str(err.value)
    assert "42" not in str(err.value)


def test_a_misspelled_detector_gets_the_one_it_meant():
    with pytest.raises(DetectorConfigError) as err:
        build_detectors(["prompt_injections", "request_rate"], {"frobnicator": {}})
    assert "unknown detector(s) frobnicator, prompt_injections" in str(err.value)
    assert "did you mean prompt_injection for prompt_injections?" in str(err.value)
    assert "for frobnicator" not in str(err.value)  # nothing like it: no guess


def test_options_in_seconds_take_durations() -> None:
    (detector,) = build_detectors(["scraping"], {"scraping": {"ttl_s": "2h", "coverage_horizon_s": "1d"}})
    assert detector.coverage_horizon_s == 86_400  # type: ignore[attr-defined]
    assert detector._callers.ttl_s == 7200  # type: ignore[attr-defined]
    with pytest.raises(DetectorConfigError, match=r"scraping.ttl_s: invalid duration '2 hours'"):
        build_detectors(["scraping"], {"scraping": {"ttl_s": "2 hours"}})


@pytest.mark.parametrize(("name", "options", "message"), [
    ("request_rate", {"min_requests": -3}, "min_requests and max_principals must be at least 1"),
    ("request_rate", {"warmup_windows": -1}, "warmup_windows at least 0"),
    ("token_abuse", {"min_tokens": 0}, "min_tokens and max_principals must be at least 1"),
])
def test_volume_options_out_of_range_are_refused(name: str, options: dict, message: str) -> None:
    with pytest.raises(DetectorConfigError, match=rf"detect.options.{name}: .*{message}"):
        build_detectors([name], {name: options})


@pytest.mark.parametrize("options", [
    {"confident": 0.3}, {"threshold": 0.9}, {"threshold": 0.6, "confident": 0.5}])
def test_prompt_injection_confident_below_threshold_is_refused_naming_both(options: dict) -> None:
    with pytest.raises(DetectorConfigError) as err:
        build_detectors(["prompt_injection"], {"prompt_injection": options})
    given = {"threshold": 0.5, "confident": 0.8, **options}
    assert str(err.value).startswith(
        "detect.options.prompt_injection: confident must be at least threshold, got confident "
        f"{given['confident']} and threshold {given['threshold']}")


def test_prompt_injection_confident_at_or_above_threshold_is_taken() -> None:
    options = {"prompt_injection": {"threshold": 0.9, "confident": 0.9}}
    (equal,) = build_detectors(["prompt_injection"], options)
    assert equal.confident == 0.9  # type: ignore[attr-defined]


def test_bad_options_of_several_detectors_are_all_named_at_once() -> None:
    options = {"request_rate": {"min_requests": -3}, "prompt_injection": {"max_chars": -5},
               "scraping": {"ttl_s": "2 hours"}}
    with pytest.raises(DetectorConfigError) as err:
        build_detectors(["request_rate", "prompt_injection", "scraping"], options)
    lines = str(err.value).splitlines()
    assert lines[0] == "invalid detector settings:"
    assert [line.split(":")[0] for line in lines[1:]] == [
        "  detect.options.request_rate", "  detect.options.prompt_injection",
        "  detect.options.scraping.ttl_s"]
    assert "min_requests and max_principals must be at least 1" in lines[1]
    assert "max_chars must be at least 1, got -5" in lines[2]
    assert err.value.problems == [line.strip() for line in lines[1:]]


def test_every_bad_option_of_one_detector_is_named_by_the_common_checks() -> None:
    options = {"request_rate": {"min_requests": "lots", "min_requets": 5, "ttl_s": "2 hours",
                                "own_factor": "x"}}
    with pytest.raises(DetectorConfigError) as err:
        build_detectors(["request_rate"], options)
    named = [line.strip().split(":")[0] for line in str(err.value).splitlines()[1:]]
    assert sorted(named) == [f"detect.options.request_rate.{key}"
                             for key in ("min_requests", "min_requets", "own_factor", "ttl_s")]


def test_an_unknown_detector_and_a_bad_option_are_named_together() -> None:
    with pytest.raises(DetectorConfigError) as err:
        build_detectors(["prompt_injections", "request_rate"], {"request_rate": {"warmup_windows": -1}})
    message = str(err.value)
    assert "  unknown detector(s) prompt_injections" in message
    assert "  detect.options.request_rate: " in message
    assert "warmup_windows at least 0, got 30, 100000 and -1" in message
