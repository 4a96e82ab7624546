"""Alertmanager's matcher syntax: parsing, anchored regular expressions, missing labels."""

import pytest

from inferwatch.detectors.alerts import matchers as matchers_module
from inferwatch.detectors.alerts.matchers import (
    all_match,
    check_regexes,
    format_matcher,
    matches,
    parse_matcher,
    parse_matchers,
)
from inferwatch.detectors.alerts.model import Matcher


@pytest.mark.parametrize(
    ("text", "name", "op", "value"),
    [
        ('service="chat"', "service", "=", "chat"),
        ("kind!=drift", "kind", "!=", "drift"),
        ('severity=~"high|critical"', "severity", "=~", "high|critical"),
        ('model !~ "gpt-.*"', "model", "!~", "gpt-.*"),
        ("  team = core platform  ", "team", "=", "core platform"),  # unquoted: the trimmed rest
        ('team=""', "team", "=", ""),
        ("team=", "team", "=", ""),
        ('k8s.namespace="prod"', "k8s.namespace", "=", "prod"),
        ('"odd name"="x"', "odd name", "=", "x"),
    ],
)
def test_parse_matcher_reads_the_four_operators_and_both_value_forms(text, name, op, value):
    assert parse_matcher(text) == Matcher(name=name, op=op, value=value)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (r'a="say \"hi\""', 'say "hi"'),
        (r'a="back\\slash"', "back\\slash"),
        (r'a="line\nbreak"', "line\nbreak"),
        (r'a=~"\d+\.\d+"', r"\d+\.\d+"),  # other backslashes stay: regexes need no doubling
        (r'a="ends with \\"', "ends with \\"),
        (r'a="x,y"', "x,y"),
    ],
)
def test_quoted_values_unescape_as_alertmanager_does(text, value):
    assert parse_matcher(text).value == value


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "empty"),
        ("=chat", "label name"),
        ("service", "no operator"),
        ("service~chat", "no operator"),
        ('service="chat', "not closed"),
        ('service="chat" extra', "followed by other text"),
        ('service="ch"at"', "unescaped"),
        ('severity=~"(high"', "invalid regular expression"),
        ("kind==drift", "an operator typed twice"),
        ("kind!==drift", "an operator typed twice"),
        ("severity=~~high", "an operator typed twice"),
    ],
)
def test_bad_matchers_raise_value_errors_naming_the_text(text, expected):
    with pytest.raises(ValueError, match=expected) as info:
        parse_matcher(text)
    assert repr(text) in str(info.value)


def test_parse_matchers_reads_braces_commas_and_lists():
    expected = [
        Matcher(name="service", op="=", value="chat"),
        Matcher(name="severity", op="=~", value="high|critical"),
    ]
    assert parse_matchers('{service="chat", severity=~"high|critical"}') == expected
    assert parse_matchers('service="chat",severity=~"high|critical",') == expected
    assert parse_matchers(['service="chat"', 'severity=~"high|critical"']) == expected
    # Alertmanager lets one list item hold several matchers.
    assert parse_matchers(['service="chat", severity=~"high|critical"']) == expected
    assert parse_matchers('{a="x,y}", b=c}') == [
        Matcher(name="a", op="=", value="x,y}"),
        Matcher(name="b", op="=", value="c"),
    ]
    assert parse_matchers("{}") == []
    assert parse_matchers([]) == []


@pytest.mark.parametrize("source", ["", "{a=b", '{a="b}', '{a="b", c}', ["ok=1", 42]])
def test_parse_matchers_rejects_malformed_sets(source):
    with pytest.raises(ValueError, match="invalid matcher"):
        parse_matchers(source)


def test_regexes_are_anchored_and_missing_labels_read_as_empty():
    high = parse_matcher('severity=~"high|critical"')
    assert matches(high, {"severity": "high"})
    assert not matches(high, {"severity": "highest"})
    assert not matches(high, {"severity": "very high"})
    assert not matches(parse_matcher('severity!~"high|critical"'), {"severity": "critical"})
    assert matches(parse_matcher('severity!~"high|critical"'), {"severity": "low"})
    assert matches(parse_matcher('team=""'), {})
    assert matches(parse_matcher('team=~".*"'), {})
    assert not matches(parse_matcher('team=~".+"'), {})
    assert matches(parse_matcher("team!=core"), {})
    assert not matches(parse_matcher("team=core"), {"service": "core"})


def test_all_match_needs_every_matcher_and_takes_all_without_any():
    both = parse_matchers('{service="chat", kind!="drift"}')
    assert all_match(both, {"service": "chat", "kind": "abuse"})
    assert not all_match(both, {"service": "chat", "kind": "drift"})
    assert all_match([], {"anything": "x"})


def test_a_regex_is_compiled_once_however_often_it_is_used():
    matcher = parse_matcher('model=~"gpt-4o-mini-test-cache-[0-9]+"')
    before = matchers_module._pattern.cache_info().misses
    for number in range(200):
        matches(matcher, {"model": f"gpt-4o-mini-test-cache-{number}"})
    assert matchers_module._pattern.cache_info().misses == before


@pytest.mark.parametrize(
    "matcher",
    [
        Matcher(name="a", op="=", value='quote " and \\ and \n'),
        Matcher(name="odd name", op="!~", value="x|y"),
        Matcher(name="k8s.pod", op="!=", value=""),
    ],
)
def test_format_matcher_reads_back_to_the_same_matcher(matcher):
    assert parse_matcher(format_matcher(matcher)) == matcher


def test_matchers_built_as_data_are_checked_and_fail_clearly_when_used():
    bad = Matcher(name="a", op="=~", value="(")
    with pytest.raises(ValueError, match=r"invalid regular expression in matcher 'a=~\"\(\"'"):
        check_regexes([Matcher(name="b", op="=", value="("), bad])
    with pytest.raises(ValueError, match="invalid regular expression"):
        matches(bad, {"a": "("})


def test_a_quoted_value_may_start_with_an_operator_character():
    assert parse_matcher('note="=x"').value == "=x"
