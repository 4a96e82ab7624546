"""The routing file: Alertmanager's shape, inheritance and matching, and errors that say where."""

import textwrap

import pytest
from pydantic import SecretStr, ValidationError

from inferwatch.detectors.alerts.config import (
    DEFAULT_GROUP_INTERVAL,
    DEFAULT_GROUP_WAIT,
    DEFAULT_REPEAT_INTERVAL,
    AlertingConfig,
    AlertingConfigError,
    group_key,
    load_alerting_config,
    parse_duration,
)
from inferwatch.detectors.alerts.integrations import EmailConfig, PagerDutyConfig


def write(tmp_path, text, name="alerts.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def config_of(route, receivers=("team", "pager", "slack", "nobody"), **extra):
    return AlertingConfig.model_validate(
        {"route": route, "receivers": [{"name": name} for name in receivers], **extra}
    )


TREE = {
    "receiver": "team",
    "group_by": ["service"],
    "group_wait": "10s",
    "repeat_interval": "1h",
    "routes": [
        {
            "matchers": ['kind="integrity"'],
            "receiver": "pager",
            "group_by": ["..."],
            "continue": True,
        },
        {
            "matchers": ['severity=~"high|critical"'],
            "receiver": "pager",
            "group_wait": 0,
            "routes": [
                {"matchers": ["service=chat"], "receiver": "slack", "group_interval": "1m"},
                {"matchers": ["service=search"]},
            ],
        },
        {"matchers": ['severity=~"high|critical"'], "receiver": "nobody"},
    ],
}


def paths(config, **labels):
    return [(m.path, m.receiver) for m in config.route.match(labels)]


def test_an_alert_no_child_route_takes_stays_with_its_parent():
    assert paths(config_of(TREE), severity="low", service="chat") == [("0", "team")]


def test_the_first_matching_child_takes_the_alert_and_later_siblings_do_not():
    # Route 0.2 would match too, but 0.1 matched first and has no `continue`.
    assert paths(config_of(TREE), severity="high", service="other") == [("0.1", "pager")]


def test_continue_lets_the_following_siblings_match_too():
    found = paths(config_of(TREE), kind="integrity", severity="critical", service="chat")
    assert found == [("0.0", "pager"), ("0.1.0", "slack")]
    # Only the continuing route matches: no fallback to the parent is added.
    assert paths(config_of(TREE), kind="integrity", severity="low") == [("0.0", "pager")]


def test_a_matched_route_none_of_whose_children_match_takes_the_alert_itself():
    assert paths(config_of(TREE), severity="high", service="embeddings") == [("0.1", "pager")]


def test_children_inherit_receiver_grouping_and_timings_unless_they_set_them():
    config = config_of(TREE)
    root = config.route.match({"severity": "low"})[0]
    assert (root.group_by, root.group_wait, root.group_interval, root.repeat_interval) == (
        ("service",),
        10.0,
        DEFAULT_GROUP_INTERVAL,
        3600.0,
    )
    slack = config.route.match({"severity": "high", "service": "chat"})[0]
    assert slack.path == "0.1.0"
    assert (
        slack.receiver,
        slack.group_by,
        slack.group_wait,
        slack.group_interval,
        slack.repeat_interval,
    ) == (
        "slack",
        ("service",),
        0.0,  # from its parent 0.1
        60.0,  # its own
        3600.0,  # from the root
    )
    search = config.route.match({"severity": "high", "service": "search"})[0]
    assert (search.path, search.receiver, search.group_wait, search.group_interval) == (
        "0.1.1",
        "pager",  # inherited: it names no receiver
        0.0,
        DEFAULT_GROUP_INTERVAL,
    )


def test_alertmanager_defaults_apply_when_nothing_is_set():
    match = config_of({"receiver": "team"}).route.match({"a": "b"})[0]
    assert (match.group_by, match.group_by_all) == ((), False)
    assert (match.group_wait, match.group_interval, match.repeat_interval) == (
        DEFAULT_GROUP_WAIT,
        DEFAULT_GROUP_INTERVAL,
        DEFAULT_REPEAT_INTERVAL,
    )
    assert (DEFAULT_GROUP_WAIT, DEFAULT_GROUP_INTERVAL, DEFAULT_REPEAT_INTERVAL) == (30.0, 300.0, 14400.0)
    assert group_key(match, {"a": "b"}) == "0:{}"


def test_group_key_uses_the_sorted_group_by_labels_the_alert_has():
    config = config_of({"receiver": "team", "group_by": ["service", "model", "kind"]})
    labels = {"service": "chat", "kind": "abuse", "severity": "high"}
    match = config.route.match(labels)[0]
    assert match.group_labels(labels) == {"kind": "abuse", "service": "chat"}  # no model: left out
    assert group_key(match, labels) == '0:{kind="abuse",service="chat"}'


def test_group_by_all_labels_groups_by_the_whole_label_set():
    config = config_of(TREE)
    labels = {"kind": "integrity", "severity": "low", "subject": "agent-1"}
    match = config.route.match(labels)[0]
    assert match.group_by_all
    assert group_key(match, labels) == '0.0:{kind="integrity",severity="low",subject="agent-1"}'


def test_group_keys_of_different_label_values_never_collide():
    config = config_of({"receiver": "team", "group_by": ["a", "b"]})
    one = {"a": 'x",b="y'}
    two = {"a": "x", "b": "y"}
    keys = {group_key(config.route.match(labels)[0], labels) for labels in (one, two)}
    assert len(keys) == 2


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("4h", 14400), ("1d", 86400), ("1h30m", 5400), ("1w", 604800),
     ("250ms", 0.25), ("0", 0), (0, 0), (90, 90), (2.5, 2.5), (" 10s ", 10)],
)  # fmt: skip
def test_durations_read_prometheus_strings_and_numbers_of_seconds(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "5x", "m5", "30m1h", "-5s", -1, True, "1.5h", None, [30]])
def test_bad_durations_are_refused_with_the_accepted_forms(text):
    with pytest.raises(ValueError, match=r"invalid duration .* such as 30s, 5m"):
        parse_duration(text)


def test_receivers_list_their_integrations_in_a_fixed_order(tmp_path):
    path = write(
        tmp_path,
        """
        route: {receiver: oncall}
        receivers:
          - name: oncall
            email_configs: [{to: [a@example.com], from: iw@example.com, smarthost: "localhost:25"}]
            pagerduty_configs: [{routing_key: k1}, {routing_key: k2, send_resolved: false}]
            webhook_configs: [{url: "http://127.0.0.1:9/hook"}]
        """,
    )
    receiver = load_alerting_config(path).receiver("oncall")
    assert [(kind, index) for kind, index, _ in receiver.integrations()] == [
        ("pagerduty", 0),
        ("pagerduty", 1),
        ("webhook", 0),
        ("email", 0),
    ]
    second = receiver.integrations()[1][2]
    assert isinstance(second, PagerDutyConfig)
    assert second.routing_key.get_secret_value() == "k2"
    assert not second.send_resolved
    assert isinstance(receiver.integrations()[3][2], EmailConfig)


def test_environment_variables_fill_string_values(tmp_path):
    path = write(
        tmp_path,
        """
        route:
          receiver: ${RECEIVER:-oncall}
          group_wait: ${WAIT:-15s}
          repeat_interval: ${REPEAT:-2h}
        receivers:
          - name: oncall
            pagerduty_configs:
              - routing_key: ${PD_KEY}
                client_url: "https://console/${PATH_PART}/x?$${literal}"
        """,
    )
    environ = {"PD_KEY": "s3cr3t", "PATH_PART": "team-a", "REPEAT": ""}
    config = load_alerting_config(path, environ=environ)
    assert config.route.receiver == "oncall"
    assert config.route.group_wait == 15.0
    assert config.route.repeat_interval == 7200.0  # an empty variable takes the default too
    pagerduty = config.receiver("oncall").pagerduty_configs[0]
    assert isinstance(pagerduty.routing_key, SecretStr)
    assert pagerduty.routing_key.get_secret_value() == "s3cr3t"
    assert "s3cr3t" not in repr(config)
    assert pagerduty.client_url == "https://console/team-a/x?${literal}"


def test_environment_is_read_from_the_process_by_default(tmp_path, monkeypatch):
    monkeypatch.setenv("INFERWATCH_TEST_PD_KEY", "from-env")
    path = write(
        tmp_path,
        """
        route: {receiver: oncall}
        receivers: [{name: oncall, pagerduty_configs: [{routing_key: "${INFERWATCH_TEST_PD_KEY}"}]}]
        """,
    )
    key = load_alerting_config(path).receiver("oncall").pagerduty_configs[0].routing_key
    assert key.get_secret_value() == "from-env"


def test_an_unset_variable_without_default_is_an_error_naming_it_and_where(tmp_path):
    path = write(
        tmp_path,
        """
        route: {receiver: oncall}
        receivers:
          - name: oncall
            slack_configs: [{webhook_url: "${SLACK_URL}"}]
        """,
    )
    with pytest.raises(AlertingConfigError) as info:
        load_alerting_config(path, environ={})
    message = str(info.value)
    assert message.startswith(f"{path}: receivers[0].slack_configs[0].webhook_url: ")
    assert "SLACK_URL is not set" in message


def test_a_malformed_variable_reference_is_an_error(tmp_path):
    path = write(tmp_path, "route: {receiver: '${oops'}\nreceivers: [{name: oncall}]\n")
    with pytest.raises(AlertingConfigError, match=r"route\.receiver: malformed variable reference"):
        load_alerting_config(path, environ={})


def test_errors_name_the_file_and_the_path_inside_it(tmp_path):
    path = write(
        tmp_path,
        """
        route:
          receiver: oncall
          routes:
            - matchers: [severity=high]
            - matchers: ['service="chat"']
              group_wait: soon
            - matchers: ['severity=~"(high"']
            - receiver: nobody
        receivers:
          - name: oncall
            pagerduty_configs:
              - routing_key: k
                urgency: high
        """,
    )
    with pytest.raises(AlertingConfigError) as info:
        load_alerting_config(path)
    lines = str(info.value).splitlines()
    assert all(line.startswith(f"{path}: ") for line in lines)
    text = "\n".join(lines)
    assert "route.routes[1].group_wait: invalid duration 'soon'" in text
    assert "route.routes[2].matchers: invalid regular expression in matcher 'severity=~\"(high\"'" in text
    assert "receivers[0].pagerduty_configs[0].urgency: no such key" in text


def test_a_misspelt_key_gets_the_one_it_meant(tmp_path):
    # route.group_wiat: "Extra inputs are not permitted" and no guess (on-call walk-through)
    path = write(
        tmp_path,
        """
        route:
          receiver: oncall
          group_wiat: 10s
          routes: [{recevier: oncall}]
        receivers:
          - name: oncall
            webhook_configs: [{url: "http://127.0.0.1:9/hook", sekret: x}]
        inhibit_rules: [{equals: [service]}]
        """,
    )
    with pytest.raises(AlertingConfigError) as info:
        load_alerting_config(path)
    text = str(info.value)
    for where, meant in (("route.group_wiat", "group_wait"), ("route.routes[0].recevier", "receiver"),
                         ("receivers[0].webhook_configs[0].sekret", "secret"),
                         ("inhibit_rules[0].equals", "equal")):
        assert f"{where}: no such key; did you mean {meant}?" in text


def test_routes_must_name_existing_receivers_and_names_must_be_unique(tmp_path):
    path = write(
        tmp_path,
        """
        route:
          receiver: oncall
          routes:
            - matchers: [kind=drift]
              routes:
                - {matchers: [severity=low], receiver: nobody}
        receivers: [{name: oncall}, {name: pager}, {name: oncall}]
        """,
    )
    with pytest.raises(AlertingConfigError) as info:
        load_alerting_config(path)
    text = str(info.value)
    assert f"{path}: receivers[2].name: receiver 'oncall' is defined twice (also receivers[0])" in text
    assert (
        f"{path}: route.routes[0].routes[0].receiver: no receiver named 'nobody' (known: oncall, pager)"
        in text
    )


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        ("{group_by: [service]}", "route.receiver: the root route needs a receiver"),
        ("{receiver: oncall, matchers: [a=b]}", "route.matchers: the root route must not have matchers"),
        ("{receiver: oncall, continue: true}", "route.continue: the root route cannot have continue"),
        (
            "{receiver: oncall, match: {severity: high}}",
            "route.match: Extra inputs are not permitted; use matchers",
        ),
        ("{receiver: oncall, group_by: ['...', service]}", "route.group_by: '...'"),
        ("{receiver: oncall, group_by: [service, service]}", "route.group_by: service listed more than once"),
        ("{receiver: oncall, group_by: ['bad label']}", "route.group_by: 'bad label' is not a label name"),
        ("{receiver: oncall, group_interval: 0}", "route.group_interval: must be longer than 0"),
        (
            "{receiver: oncall, routes: [{repeat_interval: 0s}]}",
            "route.routes[0].repeat_interval: must be longer",
        ),
    ],
)
def test_route_mistakes_are_named(tmp_path, route, expected):
    path = write(tmp_path, f"route: {route}\nreceivers: [{{name: oncall}}]\n")
    with pytest.raises(AlertingConfigError) as info:
        load_alerting_config(path)
    assert f"{path}: {expected}" in str(info.value)


def test_inhibit_rules_parse_their_matchers_and_check_equal_labels(tmp_path):
    path = write(
        tmp_path,
        """
        route: {receiver: oncall}
        receivers: [{name: oncall}]
        inhibit_rules:
          - source_matchers: ['kind="integrity"', 'severity=~"high|critical"']
            target_matchers: ['{severity=~"low|medium"}']
            equal: [service]
        """,
    )
    rule = load_alerting_config(path).inhibit_rules[0]
    assert [str(m) for m in rule.source_matchers] == ['kind="integrity"', 'severity=~"high|critical"']
    assert [str(m) for m in rule.target_matchers] == ['severity=~"low|medium"']
    assert rule.equal == ["service"]
    bad = write(tmp_path, path.read_text().replace("[service]", "[service, 'no good']"), "bad.yaml")
    with pytest.raises(AlertingConfigError, match=r"bad\.yaml: inhibit_rules\[0\]\.equal: 'no good'"):
        load_alerting_config(bad)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("route: [unclosed\n", "not valid YAML"),
        ("", "must hold a mapping"),
        ("- a\n- b\n", "must hold a mapping"),
        ("route: {receiver: oncall}\n", "receivers: Field required"),
        ("route: {receiver: oncall}\nreceivers: []\n", "receivers: List should have at least 1 item"),
    ],
)
def test_file_level_problems_name_the_file(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(AlertingConfigError) as info:
        load_alerting_config(path)
    assert str(info.value).startswith(f"{path}: ")
    assert expected in str(info.value)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(AlertingConfigError, match=r"missing\.yaml: cannot read the alerting config"):
        load_alerting_config(tmp_path / "missing.yaml")


def test_errors_never_show_secret_values(tmp_path):
    path = write(
        tmp_path,
        """
        route: {receiver: oncall}
        receivers:
          - name: oncall
            pagerduty_configs: [{routing_key: "${PD_KEY}", send_resolved: "${PD_KEY}"}]
            email_configs: [{to: [a@example.com], from: x@example.com, smarthost: "h:25",
                             auth_password: "${PD_KEY}", require_tls: "${PD_KEY}"}]
        """,
    )
    with pytest.raises(AlertingConfigError) as info:
        load_alerting_config(path, environ={"PD_KEY": "very-secret-value"})
    assert "send_resolved" in str(info.value)
    assert "very-secret-value" not in str(info.value)


def test_every_model_forbids_unknown_keys():
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        AlertingConfig.model_validate(
            {"route": {"receiver": "a"}, "receivers": [{"name": "a"}], "global": {}}
        )
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        AlertingConfig.model_validate(
            {"route": {"receiver": "a"}, "receivers": [{"name": "a", "x_configs": []}]}
        )
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        AlertingConfig.model_validate(
            {"route": {"receiver": "a"}, "receivers": [{"name": "a"}], "inhibit_rules": [{"equals": ["x"]}]}
        )


def test_a_yaml_error_in_the_routing_file_does_not_quote_a_routing_key(tmp_path):
    unclosed = 'receivers:\n  - name: pager\n    pagerduty_configs: [{routing_key: "R0UTING-KEY-abc}]\n'
    path = write(tmp_path, unclosed)
    with pytest.raises(AlertingConfigError) as info:
        load_alerting_config(path)
    assert "not valid YAML" in str(info.value)
    assert "(line " in str(info.value)
    assert "R0UTING-KEY" not in str(info.value)
