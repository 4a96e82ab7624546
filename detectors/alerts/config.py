"""The routing file: a route tree, receivers and inhibition rules, shaped as Alertmanager's.

Someone who has written an ``alertmanager.yml`` can write this file: the same keys
(``route``, ``group_by``, ``group_wait``, ``matchers``, ``continue``, ``receivers`` with
``*_configs``, ``inhibit_rules``), the same inheritance (a child route takes its parent's
receiver, grouping and timings unless it sets them) and the same depth-first matching. Two
additions: ``${VAR}`` / ``${VAR:-default}`` in string values are read from the environment, so
secrets need not sit in the file; and every error names the file and the place in it.

>>> config = AlertingConfig.model_validate({
...     "route": {"receiver": "team", "group_by": ["service"],
...               "routes": [{"receiver": "pager", "matchers": ['severity=~"high|critical"']}]},
...     "receivers": [{"name": "team"}, {"name": "pager"}],
... })
>>> [(m.path, m.receiver, m.group_by) for m in config.route.match({"severity": "high"})]
[('0.0', 'pager', ('service',))]
>>> match = config.route.match({"severity": "low", "service": "chat"})[0]
>>> match.path, match.receiver, group_key(match, {"severity": "low", "service": "chat"})
('0', 'team', '0:{service="chat"}')
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from inferwatch.collectors import durations
from inferwatch.collectors.durations import format_duration
from inferwatch.collectors.settings import close_key, yaml_problem
from inferwatch.detectors.alerts.integrations import (
    AlertmanagerConfig,
    EmailConfig,
    IntegrationConfig,
    PagerDutyConfig,
    SlackConfig,
    WebhookConfig,
)
from inferwatch.detectors.alerts.matchers import (
    all_match,
    check_regexes,
    format_matcher,
    known_detectors,
    label_name_problem,
    matcher_notes,
    matcher_problem,
    parse_matchers,
    quote,
)
from inferwatch.detectors.alerts.model import IntegrationKind, Matcher

# Alertmanager's defaults, in seconds.
DEFAULT_GROUP_WAIT = 30.0
DEFAULT_GROUP_INTERVAL = 300.0
DEFAULT_REPEAT_INTERVAL = 4 * 3600.0
GROUP_BY_ALL = "..."  # ``group_by: ['...']``: every label, i.e. one group per distinct label set

_LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]*")


class AlertingConfigError(ValueError):
    """The routing file cannot be used; the message names the file and where in it."""


# --- durations -------------------------------------------------------------------------------

def parse_duration(value: object) -> float:
    """A Prometheus-style duration (``30s``, ``5m``, ``4h``, ``1d``, ``1h30m``, ``0``) or a number
    of seconds (or a ``timedelta``), as seconds: what Alertmanager reads in its file, so no
    fractions (``1.5h``) and no numbers written as text.

    >>> parse_duration("1h30m"), parse_duration(90), parse_duration("1m500ms")
    (5400.0, 90.0, 60.5)
    """
    return durations.parse_duration(value, unitless=False, fractions=False)


# Seconds, written as a Prometheus duration or a number.
Duration = Annotated[float, BeforeValidator(parse_duration)]


# --- matchers in the file ---------------------------------------------------------------------


def _coerce_matchers(value: Any) -> Any:
    """``matchers:`` as Alertmanager writes it (a list of strings, each possibly holding several
    comma-separated matchers) or as data (``{name, op, value}`` mappings)."""
    if isinstance(value, str):
        return parse_matchers(value)
    if not isinstance(value, list):
        return value  # pydantic reports the wrong type
    out: list[Any] = []
    for item in value:
        if isinstance(item, str):
            out.extend(parse_matchers(item))
        else:
            out.append(item)
    return out


def _checked(matchers: list[Matcher]) -> list[Matcher]:
    check_regexes(matchers)
    return matchers


MatcherList = Annotated[list[Matcher], BeforeValidator(_coerce_matchers), AfterValidator(_checked)]


def _check_label_names(names: Sequence[str]) -> None:
    for name in names:
        if not _LABEL_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a label name (letters, digits, _ . : -)")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"{', '.join(duplicates)} listed more than once")


# --- routes ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """A route an alert matched, with its settings resolved through inheritance.

    ``path`` names the route by position ("0" the root, "0.1" its second child, …): it is part
    of every group key, so reordering routes starts new groups (as in Alertmanager).
    """

    path: str
    receiver: str
    group_by: tuple[str, ...]  # sorted; ignored when ``group_by_all``
    group_by_all: bool
    group_wait: float  # seconds
    group_interval: float
    repeat_interval: float

    def group_labels(self, labels: Mapping[str, str]) -> dict[str, str]:
        """The labels that pick this alert's group: those of ``group_by`` the alert has."""
        if self.group_by_all:
            return dict(sorted(labels.items()))
        return {name: labels[name] for name in self.group_by if name in labels}


def group_key(route_match: RouteMatch, labels: Mapping[str, str]) -> str:
    """The aggregation group of an alert on a route: ``path:{k="v",…}`` over its group labels,
    sorted by name, values quoted so that no two label sets share a key."""
    pairs = ",".join(f"{name}={quote(value)}" for name, value in route_match.group_labels(labels).items())
    return f"{route_match.path}:{{{pairs}}}"


# What the root inherits from: Alertmanager's defaults.
_DEFAULTS = RouteMatch(
    path="",
    receiver="",
    group_by=(),
    group_by_all=False,
    group_wait=DEFAULT_GROUP_WAIT,
    group_interval=DEFAULT_GROUP_INTERVAL,
    repeat_interval=DEFAULT_REPEAT_INTERVAL,
)


class Route(BaseModel):
    """A node of the routing tree. Unset fields are inherited from the parent route."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    receiver: str | None = None
    group_by: list[str] | None = None
    group_wait: Duration | None = None
    group_interval: Duration | None = None
    repeat_interval: Duration | None = None
    matchers: MatcherList = Field(default_factory=list)
    # Keep looking at the following sibling routes after this one matched.
    continue_: bool = Field(default=False, alias="continue")
    routes: list[Route] = Field(default_factory=list)

    @field_validator("group_by")
    @classmethod
    def _group_by(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and GROUP_BY_ALL in value and len(value) > 1:
            raise ValueError("'...' (group by all labels) cannot be combined with other labels")
        if value is not None and value != [GROUP_BY_ALL]:
            _check_label_names(value)
        return value

    @field_validator("group_interval", "repeat_interval")
    @classmethod
    def _positive(cls, value: float | None) -> float | None:
        if value is not None and value <= 0:
            raise ValueError("must be longer than 0 (it is how often the group is looked at again)")
        return value

    def match(self, labels: Mapping[str, str]) -> list[RouteMatch]:
        """The routes ``labels`` go to, depth-first as in Alertmanager, when called on the root.

        A matching route hands the alert to its first matching child (and to later ones too
        while the matched child has ``continue``); a route none of whose children match takes
        the alert itself. Empty when this route's own matchers do not match.
        """
        return _match(self, labels, _DEFAULTS, "0")

    def walk(self, path: str = "0") -> Iterator[tuple[str, Route]]:
        """Every route of the tree with its path, parents before children."""
        yield path, self
        for index, child in enumerate(self.routes):
            yield from child.walk(f"{path}.{index}")


def _resolve(route: Route, parent: RouteMatch, path: str) -> RouteMatch:
    group_by = route.group_by
    return RouteMatch(
        path=path,
        receiver=route.receiver or parent.receiver,
        group_by=parent.group_by if group_by is None else tuple(sorted(set(group_by) - {GROUP_BY_ALL})),
        group_by_all=parent.group_by_all if group_by is None else group_by == [GROUP_BY_ALL],
        group_wait=parent.group_wait if route.group_wait is None else route.group_wait,
        group_interval=parent.group_interval if route.group_interval is None else route.group_interval,
        repeat_interval=parent.repeat_interval if route.repeat_interval is None else route.repeat_interval,
    )


def _resolved_routes(route: Route, parent: RouteMatch = _DEFAULTS, path: str = "0") -> Iterator[RouteMatch]:
    """Every route of the tree with its settings resolved through inheritance, parents first."""
    here = _resolve(route, parent, path)
    yield here
    for index, child in enumerate(route.routes):
        yield from _resolved_routes(child, here, f"{path}.{index}")


def _match(route: Route, labels: Mapping[str, str], parent: RouteMatch, path: str) -> list[RouteMatch]:
    if not all_match(route.matchers, labels):
        return []
    here = _resolve(route, parent, path)
    found: list[RouteMatch] = []
    for index, child in enumerate(route.routes):
        matched = _match(child, labels, here, f"{path}.{index}")
        found.extend(matched)
        if matched and not child.continue_:
            break
    return found or [here]


# --- receivers and inhibition ----------------------------------------------------------------


class Receiver(BaseModel):
    """A named destination: any number of integrations of each kind (none: alerts are dropped)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    alertmanager_configs: list[AlertmanagerConfig] = Field(default_factory=list)
    pagerduty_configs: list[PagerDutyConfig] = Field(default_factory=list)
    slack_configs: list[SlackConfig] = Field(default_factory=list)
    webhook_configs: list[WebhookConfig] = Field(default_factory=list)
    email_configs: list[EmailConfig] = Field(default_factory=list)

    def integrations(self) -> list[tuple[IntegrationKind, int, IntegrationConfig]]:
        """``(kind, index in that kind's list, settings)`` for every integration, in a fixed order."""
        lists: list[tuple[IntegrationKind, Sequence[IntegrationConfig]]] = [
            ("alertmanager", self.alertmanager_configs),
            ("pagerduty", self.pagerduty_configs),
            ("slack", self.slack_configs),
            ("webhook", self.webhook_configs),
            ("email", self.email_configs),
        ]
        return [(kind, index, config) for kind, configs in lists for index, config in enumerate(configs)]


class InhibitRule(BaseModel):
    """While a firing alert matches ``source_matchers``, alerts matching ``target_matchers`` with
    the same values of the ``equal`` labels are muted (e.g. an integrity incident for a service
    mutes that service's lower-severity alerts)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source_matchers: MatcherList = Field(default_factory=list)
    target_matchers: MatcherList = Field(default_factory=list)
    equal: list[str] = Field(default_factory=list)

    @field_validator("equal")
    @classmethod
    def _equal(cls, value: list[str]) -> list[str]:
        _check_label_names(value)
        return value


class AlertingConfig(BaseModel):
    """The whole routing file.

    Validated with ``context={"detectors": names}`` (as :func:`load_alerting_config` does), the
    labels it names are checked as well (:func:`label_problems`); without, only its shape is.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    route: Route
    receivers: list[Receiver] = Field(min_length=1)
    inhibit_rules: list[InhibitRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references(self, info: ValidationInfo) -> AlertingConfig:
        problems = _root_problems(self.route) + _receiver_problems(self) + _ends_at_problems(self)
        context = info.context if isinstance(info.context, dict) else {}
        if "detectors" in context:  # as loaded from a file: the labels it names are checked too
            problems += label_problems(self, context["detectors"])[0]
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def receiver(self, name: str) -> Receiver:
        """The receiver called ``name`` (every route's receiver exists: checked on load)."""
        for receiver in self.receivers:
            if receiver.name == name:
                return receiver
        raise KeyError(f"no receiver named {name!r}")


def _root_problems(root: Route) -> list[str]:
    problems = []
    if not root.receiver:
        problems.append("route.receiver: the root route needs a receiver (its children inherit it)")
    if root.matchers:
        problems.append("route.matchers: the root route must not have matchers (it takes every alert)")
    if root.continue_:
        problems.append("route.continue: the root route cannot have continue (it has no siblings)")
    return problems


def _receiver_problems(config: AlertingConfig) -> list[str]:
    problems = []
    first: dict[str, int] = {}
    for index, receiver in enumerate(config.receivers):
        if receiver.name in first:
            problems.append(
                f"receivers[{index}].name: receiver {receiver.name!r} is defined twice "
                f"(also receivers[{first[receiver.name]}])"
            )
        first.setdefault(receiver.name, index)
    known = ", ".join(sorted(first))
    for path, route in config.route.walk():
        if route.receiver and route.receiver not in first:
            problems.append(
                f"{_route_where(path)}.receiver: no receiver named {route.receiver!r} (known: {known})"
            )
    return problems


def _ends_at_problems(config: AlertingConfig) -> list[str]:
    """An Alertmanager integration whose ``endsAt`` would pass before the group is posted again.

    An unchanged group still firing is notified again at the first ``group_interval`` look after
    ``repeat_interval``; an ``ends_at_after_s`` not longer than both together lets Alertmanager
    resolve alerts that still fire (and fire them again at the next post).
    """
    first: dict[str, int] = {}
    for index, receiver in enumerate(config.receivers):
        first.setdefault(receiver.name, index)
    longest: dict[str, RouteMatch] = {}  # receiver -> the route sending to it that repeats last
    for route in _resolved_routes(config.route):
        known = longest.get(route.receiver)
        if route.receiver in first and (
                known is None or route.repeat_interval + route.group_interval
                > known.repeat_interval + known.group_interval):
            longest[route.receiver] = route
    problems = []
    for name, route in longest.items():
        index = first[name]
        needed = route.repeat_interval + route.group_interval
        for position, integration in enumerate(config.receivers[index].alertmanager_configs):
            if integration.ends_at_after_s <= needed:
                ends = integration.ends_at_after_s
                problems.append(
                    f"receivers[{index}].alertmanager_configs[{position}].ends_at_after_s: "
                    f"{ends:g} ({format_duration(ends)}) is not longer than the repeat_interval "
                    f"({format_duration(route.repeat_interval)}) plus group_interval "
                    f"({format_duration(route.group_interval)}) of {_route_where(route.path)}, which sends "
                    f"to {name!r}: Alertmanager would resolve alerts that still fire before they are posted "
                    f"again; set it above {needed:g} ({format_duration(needed)}) with room for retries "
                    "(the default is 86400, a day), or shorten that repeat_interval"
                )
    return problems


def label_problems(
        config: AlertingConfig, detectors: Sequence[str] | None = None) -> tuple[list[str], list[str]]:
    """``(errors, notes)`` about the labels the file names, each ``place: what``.

    Errors: a matcher (of a route or an inhibition rule) no alert could match as meant, or a
    ``group_by`` / ``equal`` label no alert carries (see
    :func:`~inferwatch.detectors.alerts.matchers.matcher_problem`): such a route or rule would
    silently never apply. Notes: detector names not installed here (a plug-in installed only where
    the detectors run is fine). ``detectors``: the detector names to know (default: installed).

    >>> config = AlertingConfig.model_validate({
    ...     "route": {"receiver": "team", "group_by": ["principal"],
    ...               "routes": [{"matchers": ['sevrity=~"high|critical"']}]},
    ...     "receivers": [{"name": "team"}]})
    >>> for line in label_problems(config, detectors=[])[0]: print(line)
    route.group_by: no alert has a label 'principal' (did you mean 'subject'?); alerts carry ...
    route.routes[0].matchers: sevrity=~"high|critical": no alert has a label 'sevrity' (did you mean ...
    """
    known = known_detectors() if detectors is None else detectors
    errors: list[str] = []
    notes: list[str] = []

    def matchers(where: str, found: Sequence[Matcher]) -> None:
        for matcher in found:
            text = format_matcher(matcher)
            problem = matcher_problem(matcher, known)
            if problem:
                shown = problem if problem.startswith(text) else f"{text}: {problem}"
                errors.append(f"{where}: {shown}")
            notes.extend(f"{where}: {text}: {note}" for note in matcher_notes(matcher, known))

    def names(where: str, found: Sequence[str]) -> None:
        for name in found:
            problem = None if name == GROUP_BY_ALL else label_name_problem(name)
            if problem:
                errors.append(f"{where}: {problem}")

    for path, route in config.route.walk():
        where = _route_where(path)
        matchers(f"{where}.matchers", route.matchers)
        names(f"{where}.group_by", route.group_by or [])
    for index, rule in enumerate(config.inhibit_rules):
        matchers(f"inhibit_rules[{index}].source_matchers", rule.source_matchers)
        matchers(f"inhibit_rules[{index}].target_matchers", rule.target_matchers)
        names(f"inhibit_rules[{index}].equal", rule.equal)
    return errors, notes


def _route_where(path: str) -> str:
    """``0.1.0`` → ``route.routes[1].routes[0]`` (how the file spells that route)."""
    return "route" + "".join(f".routes[{part}]" for part in path.split(".")[1:])


# --- loading ---------------------------------------------------------------------------------

_VARIABLE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}$]*))?\}|\$\{")


def load_alerting_config(path: str | Path, *, environ: Mapping[str, str] | None = None) -> AlertingConfig:
    """Read, expand and validate the routing file at ``path``.

    ``${VAR}`` and ``${VAR:-default}`` in string values come from ``environ`` (default: the
    process environment; the default applies when the variable is unset or empty); ``$${``
    writes a literal ``${``. Beyond the file's shape, the labels it names are checked
    (:func:`label_problems`): a matcher, ``group_by`` or ``equal`` that no alert could satisfy as
    meant is an error, as a route that would silently never match. Raises
    :class:`AlertingConfigError` naming the file and the place in it of every problem found.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise AlertingConfigError(f"{path}: cannot read the alerting config: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise AlertingConfigError(f"{path}: not valid YAML: {yaml_problem(exc)}") from None
    if not isinstance(data, dict):
        raise AlertingConfigError(f"{path}: must hold a mapping with route and receivers at the top level")
    problems: list[str] = []
    expanded = _expand(data, os.environ if environ is None else environ, (), problems)
    if problems:
        raise AlertingConfigError("\n".join(f"{path}: {problem}" for problem in problems))
    try:
        return AlertingConfig.model_validate(expanded, context={"detectors": known_detectors()})
    except ValidationError as exc:
        raise AlertingConfigError(_describe(exc, str(path))) from None


def _expand(value: Any, environ: Mapping[str, str], loc: tuple[str | int, ...], problems: list[str]) -> Any:
    """``value`` with environment variables substituted in every string (keys are left alone)."""
    if isinstance(value, dict):
        return {key: _expand(item, environ, (*loc, str(key)), problems) for key, item in value.items()}
    if isinstance(value, list):
        return [_expand(item, environ, (*loc, index), problems) for index, item in enumerate(value)]
    if not isinstance(value, str) or "$" not in value:
        return value

    def substitute(found: re.Match[str]) -> str:
        whole, name, default = found.group(0), found.group(1), found.group(2)
        if whole == "$${":
            return "${"
        if name is None:
            problems.append(
                f"{_where(loc)}: malformed variable reference: write ${{NAME}} or ${{NAME:-default}} "
                "(a default cannot contain '}' or '$'), or $${ for a literal ${"
            )
            return whole
        current = environ.get(name)
        if default is not None and not current:
            return default
        if current is None:
            problems.append(
                f"{_where(loc)}: environment variable {name} is not set "
                f"(set it, or write ${{{name}:-default}} to give a default)"
            )
            return whole
        return current

    return _VARIABLE.sub(substitute, value)


def _where(loc: Sequence[str | int]) -> str:
    """A pydantic location as the file spells it: ``route.routes[1].group_wait``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_HINTS = {
    "match": "use matchers: ['name=\"value\"'] (match is Alertmanager's deprecated form)",
    "match_re": "use matchers: ['name=~\"regex\"'] (match_re is Alertmanager's deprecated form)",
    "source_match": "use source_matchers",
    "source_match_re": "use source_matchers",
    "target_match": "use target_matchers",
    "target_match_re": "use target_matchers",
}


def _describe(exc: ValidationError, file: str) -> str:
    """One line per problem, ``file: place: what is wrong`` (values are not shown: secrets)."""
    lines = []
    for error in exc.errors(include_url=False):
        loc = error["loc"]
        if error["type"] == "value_error":
            message = str(error.get("ctx", {}).get("error", error["msg"]))
        else:
            message = error["msg"]
        if error["type"] == "extra_forbidden" and loc and str(loc[-1]) in _HINTS:
            message += f"; {_HINTS[str(loc[-1])]}"
        elif error["type"] == "extra_forbidden" and loc:
            close = close_key(AlertingConfig, loc)
            message = f"no such key{f'; did you mean {close}?' if close else ''}"
        where = _where(loc)
        for line in message.splitlines():
            lines.append(f"{file}: {where}: {line}" if where else f"{file}: {line}")
    return "\n".join(lines)
