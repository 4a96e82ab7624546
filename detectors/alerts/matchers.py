"""Alertmanager's label matchers: parsing ``severity=~"high|critical"`` and testing labels.

Routes, inhibition rules and silences all select alerts with the same matchers, so they are
parsed and evaluated here once, with Alertmanager's rules: four operators (``=``, ``!=``,
``=~``, ``!~``), quoted or unquoted values, anchored regular expressions, and a label an alert
does not have reading as the empty string. Unescaping follows Alertmanager's classic parser:
``\\"``, ``\\\\`` and ``\\n`` are escapes, any other backslash stays literal (so ``\\d`` in a
regular expression needs no doubling).

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
from collections.abc import Iterable, Mapping
from typing import Literal

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


def check_labels(matchers: Iterable[Matcher]) -> None:
    """Raise ``ValueError`` for a matcher no alert of ours could be selected by on purpose: one
    naming a label alerts do not carry (:data:`~inferwatch.detectors.alerts.model.LABEL_NAMES`),
    or comparing ``severity``/``kind`` with ``=``/``!=`` to a value they never take.

    >>> check_labels(parse_matchers('sevrity="high"'))
    Traceback (most recent call last):
    ...
    ValueError: no alert has a label 'sevrity' (did you mean 'severity'?); alerts carry ...
    >>> check_labels(parse_matchers('severity=hgh'))
    Traceback (most recent call last):
    ...
    ValueError: severity is never 'hgh': it is one of info, low, medium, high, critical
    """
    import difflib

    from inferwatch.detectors.alerts.model import LABEL_NAMES, LABEL_VALUES

    for matcher in matchers:
        if matcher.name not in LABEL_NAMES:
            close = difflib.get_close_matches(matcher.name, LABEL_NAMES, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"no alert has a label {matcher.name!r}{hint}; "
                             f"alerts carry {', '.join(LABEL_NAMES)}")
        values = LABEL_VALUES.get(matcher.name)
        if values and matcher.op in ("=", "!=") and matcher.value not in values:
            raise ValueError(f"{matcher.name} is never {matcher.value!r}: it is one of {', '.join(values)}")


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
