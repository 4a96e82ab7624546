"""Alertmanager's label matchers: parsing ``severity=~"high|critical"`` and testing labels.

Routes, inhibition rules and silences all select alerts with the same matchers, so they are
parsed and evaluated here once, with Alertmanager's rules: four operators (``=``, ``!=``,
``=~``, ``!~``), quoted or unquoted values, anchored regular expressions, and a label an alert
does not have reading as the empty string. Unescaping follows Alertmanager's classic parser:
``\\"``, ``\\\\`` and ``\\n`` are escapes, any other backslash stays literal (so ``\\d`` in a
regular expression needs no doubling).

Matchers are also checked against what alerts of ours carry (:func:`check_labels`, for routing
files, silences and ``inferwatch alerts check`` alike): a label no alert has, a severity that does
not exist or a pseudonym cut short would make a route, an inhibition rule or a silence silently
never apply.

Regular expressions are Python's ``re``, not Go's RE2: the common syntax (alternation, classes,
``.*``, ``\\d``) is the same; RE2-only or Python-only constructs are not portable.

>>> m = parse_matcher('severity=~"high|critical"')
>>> m.name, m.op, m.value
('severity', '=~', 'high|critical')
>>> matches(m, {"severity": "critical"}), matches(m, {"severity": "highest"})
(True, False)
>>> [str(x) for x in parse_matchers('{service="chat", kind!=drift}')]
['service="chat"', 'kind!="drift"']
>>> matches(parse_matcher("team="), {})  # a missing label is the empty string
True
"""

from __future__ import annotations

import functools
import re
from collections.abc import Collection, Iterable, Mapping
from typing import Literal

from inferwatch.collectors.ids import PSEUDONYM
from inferwatch.detectors.alerts.model import Matcher

Operator = Literal["=", "!=", "=~", "!~"]
# Longest first, so that "=~" is not read as "=" followed by a value starting with "~".
_OPERATORS: tuple[Operator, ...] = ("=~", "!~", "!=", "=")
# A label name: Prometheus' characters plus "." and "-" (common in incident labels such as
# "k8s.namespace"), or any text in double quotes.
_NAME = re.compile(r'\s*(?:([A-Za-z_][A-Za-z0-9_.:-]*)|"((?:[^"\\]|\\.)*)")\s*')
_HELP = 'expected name="value" with one of the operators = != =~ !~, e.g. severity=~"high|critical"'


def parse_matcher(text: str) -> Matcher:
    """One matcher from ``text`` (``service="chat"``, ``kind!=drift``, ``severity=~"high|critical"``).

    Raises ``ValueError`` naming ``text`` when it is not a matcher or its regular expression
    does not compile.
    """
    if not text.strip():
        raise ValueError(f"invalid matcher {text!r}: it is empty; {_HELP}")
    name_match = _NAME.match(text)
    if name_match is None:
        raise ValueError(f"invalid matcher {text!r}: it does not start with a label name; {_HELP}")
    name = name_match.group(1) or _unescape(name_match.group(2) or "", text)
    rest = text[name_match.end() :]
    op = next((o for o in _OPERATORS if rest.startswith(o)), None)
    if op is None:
        raise ValueError(f"invalid matcher {text!r}: no operator after {name!r}; {_HELP}")
    raw = rest[len(op) :].strip()
    if raw[:1] in ("=", "~"):  # kind==drift, kind=~~x: not a value anyone means
        raise ValueError(f"invalid matcher {text!r}: the value after {op!r} starts with {raw[0]!r} "
                         f"(an operator typed twice? {name}=\"value\" matches a value exactly); {_HELP}")
    value = _value(raw, text)
    matcher = Matcher(name=name, op=op, value=value)
    if op in ("=~", "!~"):
        _compiled(value, text)
    return matcher


# --- what alerts of ours can carry: one check for routing files, silences and `alerts check` -----

# Detectors that file incidents under a name no entry point registers: the drift detector files
# its operational incidents (latency, errors, tokens per request) as ``drift_ops``
# (``inferwatch.detectors.drift.detector.OPS_DETECTOR``).
UNREGISTERED_DETECTORS = ("drift_ops",)
# Names people reach for that are not labels, and the label that carries what they mean.
_LABEL_HINTS = {
    "principal": "subject", "caller": "subject", "user": "subject", "ip": "subject",
    "client_ip": "subject", "name": "alertname", "id": "incident_id", "incident": "incident_id",
}
_INCIDENT_ID = re.compile(r"[0-9a-f]{16}")
_HEX = re.compile(r"[0-9a-fA-F]*")
_REGEX_SPECIAL = frozenset(".^$*+?{}[]\\|()")
SUBJECT_FORMS = "principal:p_…, ip:…, model:…"


def known_detectors() -> tuple[str, ...]:
    """The detector names incidents filed here can carry: those registered through the
    ``inferwatch.detectors`` entry points (this package's and installed plug-ins') and
    :data:`UNREGISTERED_DETECTORS`."""
    from inferwatch.detectors.registry import available

    return tuple(sorted({*available(), *UNREGISTERED_DETECTORS}))


def label_name_problem(name: str) -> str | None:
    """Why no alert of ours carries a label ``name`` (with the likely intended one), or ``None``.

    >>> label_name_problem("severity") is None
    True
    >>> label_name_problem("sevrity")
    "no alert has a label 'sevrity' (did you mean 'severity'?); alerts carry alertname, ..."
    >>> label_name_problem("principal")
    "no alert has a label 'principal' (did you mean 'subject'?); alerts carry ..."
    """
    import difflib

    from inferwatch.detectors.alerts.model import LABEL_NAMES

    if name in LABEL_NAMES:
        return None
    close = [_LABEL_HINTS[name.lower()]] if name.lower() in _LABEL_HINTS else (
        difflib.get_close_matches(name.lower(), LABEL_NAMES, n=1))
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"no alert has a label {name!r}{hint}; alerts carry {', '.join(LABEL_NAMES)}"


def matcher_problem(matcher: Matcher, detectors: Collection[str] | None = None) -> str | None:
    """Why ``matcher`` cannot select alerts of ours as its author meant, or ``None``.

    Refused: a label alerts do not carry (:data:`~inferwatch.detectors.alerts.model.LABEL_NAMES`);
    for ``severity`` and ``kind``, a value (``=``, ``!=``) or an alternative of a regular expression
    (``=~``, ``!~``) that is none of their values; a ``subject`` that is not written as incidents
    write it (a pseudonym cut short or without its ``principal:``, an address without its ``ip:``);
    an ``incident_id`` that is not a whole id; a ``detector``/``alertname`` spelt like one of
    ``detectors`` (default :func:`known_detectors`) but for case or separators (``output-leak``).
    In regular expressions, only alternatives that are plain text are checked for the last three.
    Values nothing here can check (a service, a model, a plug-in's detector) are accepted; see
    :func:`matcher_notes`.

    >>> print(matcher_problem(parse_matcher('severity=~"high|critcal"')))
    severity=~"high|critcal": 'critcal' matches no severity: ... (did you mean severity=~"high|critical"?)
    >>> print(matcher_problem(parse_matcher('subject="p_9bc4d0d85dae67f82782800e"')))
    no subject is ...; did you mean subject="principal:p_9bc4d0d85dae67f82782800e"?
    >>> print(matcher_problem(parse_matcher('detector="output-leak"'), ["output_leak"]))
    no detector is called 'output-leak' (did you mean detector="output_leak"?)
    """
    problem = label_name_problem(matcher.name)
    if problem:
        return problem
    if matcher.op in ("=", "!="):
        found = _value_problem(matcher.name, matcher.value, detectors)
        if found is None:
            return None
        what, fixed = found
        if fixed is None:
            return what
        return f"{what} (did you mean {format_matcher(matcher.model_copy(update={'value': fixed}))}?)"
    return _regex_problem(matcher, detectors)


def matcher_notes(matcher: Matcher, detectors: Collection[str] | None = None) -> list[str]:
    """What cannot be checked here but looks wrong: a ``detector``/``alertname`` value (or plain
    alternative) that no installed detector has — fine for a plug-in installed only where the
    detectors run, a typo otherwise.

    >>> matcher_notes(parse_matcher("detector=outptu_leak"), ["output_leak", "drift"])
    ["no detector named 'outptu_leak' is installed here (did you mean 'output_leak'?); installed: ..."]
    """
    import difflib

    if matcher.name not in ("detector", "alertname"):
        return []
    values = [matcher.value] if matcher.op in ("=", "!=") else [
        alt for alt in _alternatives(matcher.value) if _is_literal(alt)]
    known = known_detectors() if detectors is None else sorted(detectors)
    notes = []
    for value in values:
        if value and value not in known:
            close = difflib.get_close_matches(value, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            notes.append(f"no detector named {value!r} is installed here{hint}; installed: "
                         f"{', '.join(known)} (a plug-in installed only where the detectors run is fine)")
    return notes


def check_labels(matchers: Iterable[Matcher], detectors: Collection[str] | None = None) -> list[str]:
    """Raise ``ValueError`` with :func:`matcher_problem` for the first matcher no alert of ours
    could be selected by on purpose; otherwise return the :func:`matcher_notes` of them all.

    >>> check_labels(parse_matchers('sevrity="high"'))
    Traceback (most recent call last):
    ...
    ValueError: no alert has a label 'sevrity' (did you mean 'severity'?); alerts carry ...
    >>> check_labels(parse_matchers('severity=hgh'))
    Traceback (most recent call last):
    ...
    ValueError: severity is never 'hgh': it is one of info, low, medium, high, critical (did you mean ...
    >>> check_labels(parse_matchers('service=chat, severity=~"high|critical"'))
    []
    """
    notes: list[str] = []
    for matcher in matchers:
        if matcher.name in ("detector", "alertname") and detectors is None:
            detectors = known_detectors()
        problem = matcher_problem(matcher, detectors)
        if problem:
            raise ValueError(problem)
        notes.extend(matcher_notes(matcher, detectors))
    return notes


def _value_problem(name: str, value: str, detectors: Collection[str] | None) -> tuple[str, str | None] | None:
    """``(why, the value meant or None)`` when a label ``name`` never has ``value``."""
    import difflib

    from inferwatch.detectors.alerts.model import LABEL_VALUES

    values = LABEL_VALUES.get(name)
    if values:
        if value in values:
            return None
        close = difflib.get_close_matches(value.lower(), values, n=1)
        return f"{name} is never {value!r}: it is one of {', '.join(values)}", (close[0] if close else None)
    if name == "subject":
        return _subject_problem(value)
    if name == "incident_id":
        return _incident_id_problem(value)
    if name in ("detector", "alertname") and value:
        known = known_detectors() if detectors is None else detectors
        if value not in known:
            spelt = {_spelling(d): d for d in known}.get(_spelling(value))
            if spelt is not None:
                return f"no detector is called {value!r}", spelt
    return None


def _subject_problem(value: str) -> tuple[str, str | None] | None:
    """A subject not written as incidents write it: ``principal:p_`` + 24 hex digits (a
    principal given to the agent as already pseudonymised may be anything else after
    ``principal:``), ``ip:<address>``, ``model:<name>``."""
    import ipaddress

    kind, sep, rest = value.partition(":")
    if sep and kind == "principal":
        if not rest.startswith("p_") or PSEUDONYM.fullmatch(rest):
            return None
        if PSEUDONYM.fullmatch(rest.lower()):
            return f"a pseudonym is lower case: {value!r} is never a subject", f"principal:{rest.lower()}"
        return _pseudonym_problem(rest, value), None
    if value.startswith("p_"):
        what = f"no subject is {value!r}: incidents' subjects are {SUBJECT_FORMS}"
        if not PSEUDONYM.fullmatch(value.lower()):
            return f"{what}; {_pseudonym_problem(value, 'principal:' + value)}", None
        return f"{what}; did you mean subject=\"principal:{value.lower()}\"?", None
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return None
    return f"no subject is {value!r}: incidents' subjects are {SUBJECT_FORMS}", f"ip:{value}"


def _pseudonym_problem(pseudonym: str, subject: str) -> str:
    digits = pseudonym[2:]
    count = f"has {len(digits)}" if _HEX.fullmatch(digits) else "is not that"
    return (f"a subject is principal:p_ and 24 hex digits; {subject!r} {count} (cut short? copy the whole "
            f"subject from `inferwatch incidents list`, or match its start with "
            f"subject=~\"{re.escape(subject)}.*\")")


def _incident_id_problem(value: str) -> tuple[str, str | None] | None:
    if not value or _INCIDENT_ID.fullmatch(value):
        return None
    if _INCIDENT_ID.fullmatch(value.lower()):
        return f"an incident id is lower case: no incident is {value!r}", value.lower()
    count = f"{value!r} has {len(value)}" if _HEX.fullmatch(value) else f"{value!r} is not one"
    return (f"an incident id is 16 hex digits; {count} (a prefix? copy the whole id from `inferwatch "
            f"incidents list`, or match its start with incident_id=~\"{re.escape(value)}.*\")"), None


def _regex_problem(matcher: Matcher, detectors: Collection[str] | None) -> str | None:
    """An alternative of ``matcher``'s regular expression that matches no value the label takes
    (``severity=~"high|critcal"``), or a plain-text one written wrong (see :func:`_value_problem`)."""
    import difflib

    from inferwatch.detectors.alerts.model import LABEL_VALUES

    values = LABEL_VALUES.get(matcher.name)
    alternatives = _alternatives(matcher.value)
    first: str | None = None
    fixed: list[str] | None = list(alternatives)
    for index, alt in enumerate(alternatives):
        if values:
            try:
                pattern = re.compile(alt)
            except re.error:
                continue  # not a regular expression on its own: the whole one compiled, so accept it
            if any(pattern.fullmatch(v) for v in values):
                continue
            close = difflib.get_close_matches(alt.lower(), values, n=1) if _is_literal(alt) else []
            why = f"{alt!r} matches no {matcher.name}: it is one of {', '.join(values)}"
            fix = close[0] if close else None
        elif _is_literal(alt):
            found = _value_problem(matcher.name, alt, detectors)
            if found is None:
                continue
            why, fix = found
        else:
            continue
        first = first or why
        if fixed is not None and fix is not None:
            fixed[index] = re.escape(fix) if not values else fix
        else:
            fixed = None
    if first is None:
        return None
    text = f"{format_matcher(matcher)}: {first}"
    if fixed is not None and "|".join(fixed) != matcher.value and _alternatives("|".join(fixed)) == fixed:
        text += f" (did you mean {format_matcher(matcher.model_copy(update={'value': '|'.join(fixed)}))}?)"
    return text


def _spelling(name: str) -> str:
    """A detector name as it may be mistyped: any case, ``-``, ``.`` or a space for ``_``."""
    return re.sub(r"[-. ]", "_", name.lower())


def _is_literal(text: str) -> bool:
    """Whether ``text`` read as a regular expression matches exactly itself."""
    return not (set(text) & _REGEX_SPECIAL)


def _alternatives(pattern: str) -> list[str]:
    r"""The top-level alternatives of a regular expression, a group around the whole opened:
    ``high|critical`` and ``(?:high|critical)`` give ``['high', 'critical']``.

    >>> _alternatives(r'a|(b|c)|[|]|\||d')
    ['a', '(b|c)', '[|]', '\\|', 'd']
    """
    parts: list[str] = []
    depth = start = 0
    closes_at: int | None = None  # where the group opened at index 0 closes
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            i += 2
            continue
        if char == "[":
            i = _class_end(pattern, i)
            continue
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0 and closes_at is None and pattern.startswith("("):
                closes_at = i
        elif char == "|" and depth == 0:
            parts.append(pattern[start:i])
            start = i + 1
        i += 1
    parts.append(pattern[start:])
    if len(parts) == 1 and closes_at == len(pattern) - 1:
        inner = pattern[1:-1]
        if inner.startswith("?:"):
            return _alternatives(inner[2:])
        if not inner.startswith("?"):
            return _alternatives(inner)
    return parts


def _class_end(pattern: str, start: int) -> int:
    """The index after the character class that opens at ``start`` (a ``]`` first in it is literal)."""
    i = start + 1
    if pattern[i : i + 1] == "^":
        i += 1
    if pattern[i : i + 1] == "]":
        i += 1
    while i < len(pattern):
        if pattern[i] == "\\":
            i += 2
            continue
        if pattern[i] == "]":
            return i + 1
        i += 1
    return i


def parse_matchers(source: str | Iterable[str]) -> list[Matcher]:
    """All matchers of ``source``: one string of comma-separated matchers, optionally in braces
    (``{a="b", c=~"d"}``), or a list of such strings (as a YAML ``matchers:`` list)."""
    texts = [source] if isinstance(source, str) else list(source)
    found: list[Matcher] = []
    for text in texts:
        if not isinstance(text, str):
            raise ValueError(f"invalid matcher {text!r}: a matcher is a string such as 'service=\"chat\"'")
        found.extend(parse_matcher(part) for part in _split(text))
    return found


def matches(matcher: Matcher, labels: Mapping[str, str]) -> bool:
    """Whether ``labels`` satisfy ``matcher`` (a missing label is ``""``; regexes are anchored)."""
    value = labels.get(matcher.name, "")
    if matcher.op == "=":
        return value == matcher.value
    if matcher.op == "!=":
        return value != matcher.value
    found = _compiled(matcher.value, str(matcher)).fullmatch(value) is not None
    return found if matcher.op == "=~" else not found


def all_match(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    """Whether every matcher matches (``True`` for no matchers: a route without them takes all)."""
    return all(matches(m, labels) for m in matchers)


def quote(value: str) -> str:
    """``value`` in double quotes with Alertmanager's escapes, the inverse of parsing."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def format_matcher(matcher: Matcher) -> str:
    """``matcher`` as text that :func:`parse_matcher` reads back to the same matcher."""
    name = matcher.name if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.:-]*", matcher.name) else quote(matcher.name)
    return f"{name}{matcher.op}{quote(matcher.value)}"


def check_regexes(matchers: Iterable[Matcher]) -> None:
    """Raise ``ValueError`` naming the first matcher whose regular expression does not compile
    (for matchers built as data rather than parsed from text)."""
    for matcher in matchers:
        if matcher.op in ("=~", "!~"):
            _compiled(matcher.value, format_matcher(matcher))


@functools.lru_cache(maxsize=4096)
def _pattern(value: str) -> re.Pattern[str]:
    return re.compile(value)


def _compiled(value: str, text: str) -> re.Pattern[str]:
    """The compiled (and cached: routing tests every alert) regular expression of a matcher."""
    try:
        return _pattern(value)
    except re.error as exc:
        raise ValueError(f"invalid regular expression in matcher {text!r}: {exc}") from None


def _value(raw: str, text: str) -> str:
    """The value after the operator: quoted (must close at the end) or bare."""
    if raw.startswith('"'):
        if len(raw) < 2 or not raw.endswith('"') or _escaped_at(raw, len(raw) - 1):
            raise ValueError(
                f"invalid matcher {text!r}: the quoted value is not closed or is followed by other text; "
                f"{_HELP}"
            )
        return _unescape(raw[1:-1], text)
    return _unescape(raw, text)


def _escaped_at(raw: str, index: int) -> bool:
    """Whether the character at ``index`` is preceded by an odd number of backslashes."""
    count = 0
    while index - count - 1 >= 0 and raw[index - count - 1] == "\\":
        count += 1
    return count % 2 == 1


def _unescape(raw: str, text: str) -> str:
    r"""Alertmanager's unescaping: ``\"``, ``\\``, ``\n``; other backslashes stay literal; a bare
    ``"`` is an error (it would make the text ambiguous)."""
    out: list[str] = []
    i = 0
    while i < len(raw):
        char = raw[i]
        if char == "\\" and i + 1 < len(raw):
            nxt = raw[i + 1]
            out.append({"n": "\n", '"': '"', "\\": "\\"}.get(nxt, "\\" + nxt))
            i += 2
            continue
        if char == '"':
            raise ValueError(f'invalid matcher {text!r}: unescaped " inside the value (write \\")')
        out.append(char)
        i += 1
    return "".join(out)


def _split(text: str) -> list[str]:
    """The comma-separated matchers of ``text`` (braces optional), commas in quotes kept."""
    body = text.strip()
    if body.startswith("{"):
        if not body.endswith("}"):
            raise ValueError(f"invalid matchers {text!r}: '{{' without a closing '}}'")
        body = body[1:-1]
    parts: list[str] = []
    current: list[str] = []
    in_quotes = escaped = False
    for char in body:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            in_quotes = not in_quotes
        elif char == "," and not in_quotes:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    if in_quotes:
        raise ValueError(f"invalid matchers {text!r}: a quoted value is not closed")
    items = [p for p in (part.strip() for part in parts) if p]
    if not items and body.strip():
        raise ValueError(f"invalid matchers {text!r}: {_HELP}")
    if not items and not text.strip():
        raise ValueError(f"invalid matchers {text!r}: it is empty (write {{}} for no matchers); {_HELP}")
    return items
