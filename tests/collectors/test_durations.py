from datetime import timedelta

import pytest

from inferwatch.collectors.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("30s", 30), ("5m", 300), ("4h", 14_400), ("1d", 86_400), ("1w", 604_800), ("1y", 31_536_000),
     ("1h30m", 5400), ("1d12h", 129_600), ("250ms", 0.25), ("1m500ms", 60.5), ("0", 0), (" 10s ", 10),
     ("1.5h", 5400), ("0.5s", 0.5), (".5m", 30), ("2.5", 2.5), ("90", 90), (0, 0), (90, 90), (2.5, 2.5),
     (timedelta(minutes=2), 120)],
)  # fmt: skip
def test_durations_read_units_fractions_and_plain_seconds(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["", "5x", "m5", "30m1h", "-5s", "-5", "1h 30m", "1.5h30m", "inf", "nan",
                                   -1, float("inf"), True, None, [30], "9" * 400 + "s", "9" * 400 + ".5h",
                                   "30 s"])
def test_bad_durations_are_refused_with_the_accepted_forms(value):
    with pytest.raises(ValueError, match=r"invalid duration .* such as 30s, 5m, 4h, 1d or 1h30m"):
        parse_duration(value)


def test_the_strict_forms_refuse_numbers_as_text_and_fractions():
    with pytest.raises(ValueError, match="use units from largest") as refused:
        parse_duration("90", unitless=False)
    assert "number of seconds" not in str(refused.value)
    with pytest.raises(ValueError, match=r"invalid duration '1\.5h'"):
        parse_duration("1.5h", fractions=False)
    assert parse_duration("1h30m", unitless=False, fractions=False) == 5400
    assert parse_duration(90, unitless=False) == 90  # a number given as a number is still seconds


@pytest.mark.parametrize("seconds", [0, 1, 59, 60, 90, 3600, 5400, 86_400, 86_460, 2.5, 0.25])
def test_a_formatted_duration_reads_back_as_the_same_seconds(seconds):
    assert parse_duration(format_duration(seconds)) == seconds
