"""The ``inferwatch`` command."""

from __future__ import annotations

import argparse
import difflib
import math
import re
import signal
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from inferwatch import __version__
from inferwatch.collectors.bus import BusUnavailable, DuplicateInstance
from inferwatch.collectors.durations import parse_duration
from inferwatch.collectors.logs import configure_logging
from inferwatch.collectors.settings import Settings, SettingsError, load_settings, window_at_most_a_day

Handler = Callable[[argparse.Namespace, Settings], int]


def parse_time(value: str) -> datetime:
    """An RFC 3339 time (``2026-01-01T10:00:00Z``) or an age like ``30m``, ``2h``, ``7d``, ``1h30m``."""
    try:
        return datetime.now(UTC) - timedelta(seconds=parse_duration(value, unitless=False))
    except OverflowError:
        raise argparse.ArgumentTypeError(f"{value!r} reaches back before the year 1") from None
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a time: use RFC 3339 (2026-01-01T10:00:00Z) or an age (30m, 2h, 7d)"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def length_of_time(flag: str, unit: str) -> Callable[[str], timedelta]:
    """The argparse type of ``flag``, a length of time that needs its unit (``30m``, ``2h``,
    ``1h30m``; ``0`` alone is 0), as ``--since`` and amtool do: a bare number (``--duration 2``)
    could mean seconds, minutes or hours, so it is refused with the flag written with ``unit``."""
    def parse(value: str) -> timedelta:
        try:
            return timedelta(seconds=parse_duration(value, unitless=False))
        except OverflowError:
            raise argparse.ArgumentTypeError(f"{value!r} is too long a time") from None
        except ValueError as exc:
            try:
                parse_duration(value)
            except ValueError:
                raise argparse.ArgumentTypeError(str(exc)) from None
            number = value.strip()
            raise argparse.ArgumentTypeError(
                f"{value!r} has no unit: seconds, minutes, hours? Write it with one (s, m, h or d), "
                f"e.g. {flag} {number}{unit}") from None

    parse.__name__ = "length of time"  # what argparse calls the type in its own messages
    return parse


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="YAML settings file (also INFERWATCH_CONFIG)")
    parser.add_argument("--bus", metavar="PATH",
                        help="embedded bus file (INFERWATCH_BUS__PATH; the bus is then SQLite, not Kafka)")
    parser.add_argument("--store", metavar="PATH",
                        help="incident store file (INFERWATCH_STORE__PATH; the store is then SQLite)")
    parser.add_argument("--json", action="store_true", help="print JSON, one object per line")


def _log_level(parser: argparse.ArgumentParser, default: Any = argparse.SUPPRESS) -> None:
    """``--log-level``, before the command or after it (a command's own leaves the top one be)."""
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default=default,
                        help="log at this level and above (log_level)")


class _Parser(argparse.ArgumentParser):
    """argparse that names the choice a misspelt one meant (``silences`` -> ``silence``), as
    Python 3.14's ``suggest_on_error`` does; subcommands' parsers are of this class too."""

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        choices = action.choices
        if choices is not None and value not in choices and isinstance(value, str):
            # A command one level down (`inferwatch proxy` for `inferwatch agent proxy`) first.
            close = [f"{name} {value}" for name, sub in (choices.items() if isinstance(choices, dict) else ())
                     if isinstance(sub, argparse.ArgumentParser) and value in _actions_of(sub)]
            if not close and _MEANT.get(value) in choices:
                close = [_MEANT[value]]
            close = close or _close_not_opposite(value, [str(c) for c in choices])
            if close:
                listed = ", ".join(repr(str(c)) for c in choices)
                raise argparse.ArgumentError(
                    action, f"invalid choice: {value!r}, did you mean {close[0]!r}? (choose from {listed})")
        super()._check_value(action, value)


_MEANT = {"unresolve": "reopen", "unack": "reopen", "open": "reopen", "acknowledge": "ack",
          "close": "resolve", "comment": "note", "annotate": "note"}
"""Words people type for a command that has another name (where the command is one of the choices)."""
_NEGATIONS = ("un", "de", "dis", "non", "no")


def _close_not_opposite(value: str, choices: list[str]) -> list[str]:
    """The choice nearest ``value`` (:func:`difflib.get_close_matches`), never one ``value`` is the
    negation of (``unack`` is not ``ack``, ``unresolved`` not ``resolve``) nor the other way round.

    >>> _close_not_opposite("unresolved", ["resolve", "list"]), _close_not_opposite("lst", ["ack", "list"])
    ([], ['list'])
    """
    def opposite(a: str, b: str) -> bool:
        return any(a.startswith(prefix) and a[len(prefix):].startswith(b[:4]) for prefix in _NEGATIONS)

    close = difflib.get_close_matches(value, choices, n=len(choices))
    return [c for c in close if not opposite(value, c) and not opposite(c, value)][:1]


def _actions_of(parser: argparse.ArgumentParser) -> Any:
    """The names of ``parser``'s subcommands (none when it has none)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices
    return {}


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (``--help`` at every level)."""
    from inferwatch import commands

    parser = _Parser(
        prog="inferwatch",
        description="Incident logging and anomaly monitoring for AI inference services.",
    )
    parser.add_argument("--version", action="version", version=f"inferwatch {__version__}")
    _log_level(parser, default=None)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="run a model server with the agent, drive traffic, show incidents")
    _common(p)
    p.add_argument("--home", metavar="DIR",
                   help="where the demo keeps its bus and store (default .inferwatch)")
    p.add_argument("--distributed", action="store_true",
                   help="run on Kafka and Elasticsearch (INFERWATCH_BUS__BOOTSTRAP_SERVERS, "
                        "INFERWATCH_STORE__URLS) instead of the embedded default")
    p.add_argument("--routes", type=Path, metavar="FILE",
                   help="page with this routing file while the demo runs (alerting.config; docs/alerting.md)")
    p.set_defaults(handler=commands.demo)

    p = sub.add_parser("detect", help="run the detector service on the configured bus and store")
    _common(p)
    p.add_argument("--exit-when-idle", type=_positive_seconds, metavar="DURATION",
                   help="stop after this long without new events (for batch runs): seconds or 30s/5m")
    p.add_argument("--routes", type=Path, metavar="FILE",
                   help="page on-call receivers with this routing file (alerting.config; docs/alerting.md)")
    p.set_defaults(handler=commands.detect)

    p = sub.add_parser("replay", help="run the detectors over a JSONL file of events, by event time")
    _common(p)
    p.add_argument("files", type=Path, nargs="+", metavar="FILE",
                   help="events, one JSON object per line; several files are read in the order given, as "
                        "one stream; gzip, bzip2 and xz files are read as they are; - reads standard input")
    p.add_argument("--window", type=_window, metavar="SECONDS",
                   help="window length, seconds or 30s/5m/1h (detect.window_s)")
    p.add_argument("--detectors", dest="enabled_detectors", metavar="NAMES",
                   help="comma-separated detectors to run (detect.enabled); e.g. drift alone, which "
                        "takes the fast path; or those to leave out: --detectors=-integrity")
    p.set_defaults(handler=commands.replay)

    p = sub.add_parser("scan", help="score texts or events with the per-request detectors (no service)")
    p.add_argument("--config", metavar="FILE", help="YAML settings file (also INFERWATCH_CONFIG)")
    p.add_argument("--json", action="store_true", help="print JSON, one object per line")
    p.add_argument("file", help='JSONL: {"text": ..., "output": ...} or events, one per line; - for stdin')
    p.add_argument("--detectors", metavar="NAMES",
                   help="comma-separated per-request detectors (default and choices: "
                        "prompt_injection,output_leak)")
    p.set_defaults(handler=commands.scan)

    _incidents_parser(sub, commands)
    _events_parser(sub, commands)
    _baseline_parser(sub, commands)
    from inferwatch import alerts_cmd, otlp_cmd

    alerts_cmd.add_parsers(sub, _common, parse_time)

    otlp_cmd.add_parser(sub)
    from inferwatch import proxy_cmd

    proxy_cmd.add_agent_commands(sub)
    from inferwatch import pseudonym_cmd

    pseudonym_cmd.add_parser(sub)
    _every_command_takes_the_log_level(parser)
    return parser


def _every_command_takes_the_log_level(parser: argparse.ArgumentParser) -> None:
    """``--log-level`` after any command too (``inferwatch collect otlp --log-level debug``)."""
    commands = _actions_of(parser)
    if not commands and "--log-level" not in parser._option_string_actions:
        _log_level(parser)
    for command in dict.fromkeys(commands.values()):  # aliases name one parser twice
        _every_command_takes_the_log_level(command)


ID_HELP = "incident id (or a unique prefix of at least 4 characters)"
"""What an incident id argument takes (``show``, ``ack``, ``resolve``, ``reopen``, ``note``, ``timeline``,
``report``): the stores' ``MIN_ID_PREFIX``, written out so that building the parser loads no detector
module."""


def _incidents_parser(sub: Any, commands: Any) -> None:
    p = sub.add_parser("incidents", help="list, show, acknowledge, resolve, reopen and annotate incidents")
    isub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = isub.add_parser("list", help="incidents, newest first")
    _common(q)
    q.add_argument("--status", action="append", choices=["open", "acknowledged", "resolved"],
                   help="in this state (repeatable: --status open --status acknowledged; default any)")
    q.add_argument("--severity", choices=["info", "low", "medium", "high", "critical"],
                   help="this severity or higher")
    q.add_argument("--kind", choices=["drift", "abuse", "operational", "integrity"],
                   help="of this kind")
    q.add_argument("--detector", help="filed by this detector (request_rate, prompt_injection, ...)")
    q.add_argument("--service", help="about calls to this service")
    q.add_argument("--model", help="about this model")
    q.add_argument("--text", help="with all these words in the title, summary, subject, detector, model "
                                  "or service")
    q.add_argument("--subject", type=_subject,
                   help="as incidents show it: principal:p_…, ip:…, model:… (a bare p_… works too)")
    q.add_argument("--since", type=parse_time, help="last seen since (RFC 3339 or 30m/2h/7d)")
    q.add_argument("--limit", type=positive_int, default=100,
                   help="at most this many, the newest (100; a note on stderr says when more may match)")
    q.set_defaults(handler=commands.incidents_list)
    q = isub.add_parser("show", help="one incident with its evidence and history")
    _common(q)
    q.add_argument("id", help=ID_HELP)
    q.set_defaults(handler=commands.incidents_show)
    for action, help_text in (("ack", "acknowledge: you are on it"), ("resolve", "resolve: it is over"),
                              ("reopen", "open a resolved or acknowledged incident again: it is not over"),
                              ("note", "add a note to its history; its status stays")):
        q = isub.add_parser(action, help=help_text)
        _common(q)
        q.add_argument("id", help=ID_HELP)
        q.add_argument("--actor", default=None, help="who (default: $USER)")
        if action == "note":
            q.add_argument("--note", required=True, help="what to keep in the incident's history")
        else:
            q.add_argument("--note", default=None, help="why, kept in the incident's history")
        q.set_defaults(handler=commands.incidents_transition, transition=action)
    from inferwatch import investigate_cmd

    investigate_cmd.add_incident_parsers(isub, _common)


def positive_int(value: str) -> int:
    """A whole number of at least 1 (``--limit``)."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: must be 1 or more")
    return number


def _window(value: str) -> float:
    """A window length: seconds (``60``) or with a unit (``30s``, ``5m``, ``1h``), above 0."""
    try:
        seconds = parse_duration(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a length of time, e.g. 60 or 5m") from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{value!r}: a window must last more than 0 seconds")
    try:
        window_at_most_a_day(seconds)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r}: {exc}") from None
    return seconds


def _trace_id(value: str) -> str:
    """A W3C trace id as events carry it: 32 lowercase hex digits (upper case is taken)."""
    from inferwatch.collectors.event import check_ids

    trace_id = value.strip().lower()
    try:
        check_ids(trace_id, None)  # the check events get
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r}: {exc}, e.g. 4bf92f3577b34da6a3ce929d0e0e4736") from None
    return trace_id


def _client_ip(value: str) -> str:
    """A caller's address (an auth_abuse incident's subject ``ip:…`` works too), written the way
    events record it."""
    from inferwatch.detectors.store import canonical_ip, is_ip_address

    address = value.strip().removeprefix("ip:").strip()
    if not is_ip_address(address):
        raise argparse.ArgumentTypeError(f"{value!r} is not an IP address, e.g. 203.0.113.7 or 2001:db8::7")
    return canonical_ip(address)


def status_range(value: str) -> tuple[int, int]:
    """HTTP status codes as a range: ``401``, a class ``4xx``, or ``400-499``.

    >>> status_range("401"), status_range("4xx"), status_range("500-503")
    ((401, 401), (400, 499), (500, 503))
    """
    text = value.strip().lower()
    if re.fullmatch(r"[1-5]xx", text):
        return int(text[0]) * 100, int(text[0]) * 100 + 99
    found = re.fullmatch(r"([0-9]{3})(?:-([0-9]{3}))?", text)  # ASCII digits only (int() takes more)
    first, last = (int(found[1]), int(found[2] or found[1])) if found else (0, 0)
    if not 100 <= first <= last <= 599:
        raise argparse.ArgumentTypeError(f"{value!r}: give an HTTP status (401), a class (4xx) or a range "
                                         "(400-499) of codes from 100 to 599")
    return first, last


def _subject(value: str) -> str:
    """An incident subject; a bare caller pseudonym ``p_…`` (as events show it) gets its ``principal:``."""
    return f"principal:{value}" if value.startswith("p_") else value


def _principal(value: str) -> str:
    """A principal as events carry it: ``p_…``; the ``principal:`` of an incident's subject dropped."""
    return value.removeprefix("principal:")


def _events_parser(sub: Any, commands: Any) -> None:
    p = sub.add_parser("events", help="search stored events")
    esub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = esub.add_parser("search", help="events by principal, model, trace id, text and time")
    _common(q)
    q.add_argument("--principal", type=_principal, metavar="P",
                   help="the caller's pseudonym p_… (an incident's subject principal:p_… works too)")
    q.add_argument("--model", help="model name")
    q.add_argument("--service", help="service name")
    q.add_argument("--trace-id", type=_trace_id, metavar="ID", help="W3C trace id (32 hex digits)")
    q.add_argument("--client-ip", type=_client_ip, metavar="ADDR",
                   help="the caller's address (an auth_abuse incident's subject ip:… works too)")
    q.add_argument("--status", type=status_range, metavar="CODE",
                   help="the HTTP status the call got: 401, a class (4xx) or a range (400-499)")
    q.add_argument("--text", help="words the prompt or output contains (all of them)")
    q.add_argument("--id", action="append", metavar="EVENT_ID", help="this event (repeatable)")
    q.add_argument("--incident", metavar="ID",
                   help="the sample events an incident names (its event_ids; an id prefix works)")
    q.add_argument("--since", type=parse_time, metavar="T",
                   help="events at or after T (RFC 3339 or 30m/2h/7d)")
    q.add_argument("--until", type=parse_time, metavar="T",
                   help="events before T (RFC 3339 or 30m/2h/7d)")
    q.add_argument("--limit", type=positive_int, default=50, help="at most this many, the newest (50)")
    q.add_argument("--oldest-first", action="store_true",
                   help="print them in time order (what `inferwatch replay` needs of a file)")
    q.set_defaults(handler=commands.events_search)
    q = esub.add_parser("dead-letters", help="events the detector rejected, with the reasons")
    _common(q)
    q.add_argument("--limit", type=positive_int, default=20)
    q.set_defaults(handler=commands.dead_letters)


def _baseline_parser(sub: Any, commands: Any) -> None:
    from inferwatch.detectors.drift.reference import MAX_ROWS

    p = sub.add_parser("baseline", help="set, show and clear the drift reference of a model")
    bsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = bsub.add_parser("set", help="make a file of known-good rows or events the model's drift reference")
    _common(q)
    q.add_argument("file", type=Path, help="rows or events: .csv, .tsv, .jsonl/.ndjson or .parquet")
    q.add_argument("--model", required=True, help="the model the reference is for")
    q.add_argument("--model-version", metavar="V",
                   help="the model version it describes (default: the one the file's events carry)")
    q.add_argument("--max-rows", type=_positive_int, default=MAX_ROWS, metavar="N",
                   help=f"read at most the first N rows (default {MAX_ROWS:,})")
    q.add_argument("--drop", type=_names, action="extend", default=[], metavar="COLUMN[,COLUMN]",
                   help="leave these columns out (a label, an id, a time the model does not take); "
                        "in a file of events, these input features; repeatable")
    q.set_defaults(handler=commands.baseline_set)
    q = bsub.add_parser("show", help="every model's drift reference, or one model's with its features")
    _common(q)
    q.add_argument("--model", help="show this model's reference and its features")
    q.set_defaults(handler=commands.baseline_show)
    q = bsub.add_parser("clear", help="forget a model's drift reference")
    _common(q)
    q.add_argument("--model", required=True)
    q.set_defaults(handler=commands.baseline_clear)


def _positive_seconds(value: str) -> float:
    """A length of time above 0: seconds (``30``) or with units (``30s``, ``5m``, ``1h30m``)."""
    try:
        seconds = parse_duration(value)
    except ValueError:
        seconds = math.nan
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a length of time above 0, e.g. 30, 30s or 5m")
    return seconds


def _positive_int(value: str) -> int:
    try:
        number = int(value.replace("_", "").replace(",", ""))
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of at least 1")
    return number


def _names(value: str) -> list[str]:
    """``a,b`` -> ``["a", "b"]`` (spaces around names dropped); an empty name is refused."""
    names = [name.strip() for name in value.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"{value!r} has an empty name: give names separated by commas")
    return names


def _detector_names(given: str) -> list[str]:
    """``--detectors``: names to run, or ``-name,-other`` for every registered detector but those."""
    from inferwatch.detectors.registry import available, did_you_mean

    names = [n.strip() for n in given.split(",") if n.strip()]
    left_out = [n[1:].strip() for n in names if n.startswith("-")]
    if left_out and len(left_out) < len(names):
        raise SettingsError(f"--detectors {given}: name the detectors to run, or those to leave out "
                            "(each with a leading -), not both")
    registered = sorted(available())
    unknown = sorted(set(left_out or names) - set(registered))
    if unknown:
        raise SettingsError(f"--detectors {given}: no detector named {', '.join(unknown)}"
                            f"{did_you_mean(unknown, registered)}; registered: {', '.join(registered)}")
    return [n for n in registered if n not in left_out] if left_out else names


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from the YAML file, the environment and the flags given."""
    overrides: dict[str, Any] = {}
    # A file named on the command line is the embedded bus or store, whatever Kafka or
    # Elasticsearch settings the environment or the file hold (they would make the kind theirs).
    if getattr(args, "bus", None):
        overrides["bus"] = {"path": args.bus, "kind": "sqlite"}
    if getattr(args, "store", None):
        overrides["store"] = {"path": args.store, "kind": "sqlite"}
    if getattr(args, "window", None) is not None:
        overrides.setdefault("detect", {})["window_s"] = args.window
    if getattr(args, "enabled_detectors", None):
        overrides.setdefault("detect", {})["enabled"] = _detector_names(args.enabled_detectors)
    if getattr(args, "routes", None):
        overrides["alerting"] = {"config": args.routes}
    if args.log_level:
        overrides["log_level"] = args.log_level
    return load_settings(getattr(args, "config", None), **overrides)


def _semantic_unavailable(exc: ImportError) -> bool:
    """Whether ``exc`` is the semantic stage's missing extra (``SemanticUnavailable``), a settings
    error like the others. Looked up, not imported: that module loads numpy, and only it raises this."""
    semantic = sys.modules.get("inferwatch.detectors.semantic")
    return semantic is not None and isinstance(exc, semantic.SemanticUnavailable)


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """``parse_args``, but an unknown option is refused by the (sub)command it was given to, with
    that command's usage and the nearest option it has, not by ``inferwatch`` as a whole."""
    args, extra = parser.parse_known_args(argv)
    if not extra:
        return args
    command = parser
    while True:
        chosen = next((a for a in command._actions if isinstance(a, argparse._SubParsersAction)), None)
        name = getattr(args, chosen.dest, None) if chosen is not None else None
        if chosen is None or name not in chosen.choices:
            break
        command = chosen.choices[name]
    options = [o for a in command._actions for o in a.option_strings]
    close = difflib.get_close_matches(extra[0].split("=")[0], options, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    command.error(f"unrecognized arguments: {' '.join(extra)}{hint}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``inferwatch`` console script."""
    from inferwatch.detectors.alerts.config import AlertingConfigError
    from inferwatch.detectors.incidents import IncidentError, NoSuchIncident
    from inferwatch.detectors.registry import DetectorConfigError
    from inferwatch.detectors.store import StoreUnavailable

    args = _parse(build_parser(), argv)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `inferwatch ... | head` ends quietly
    try:
        settings = settings_from_args(args)
        configure_logging(settings.log_level)
        handler: Handler = args.handler
        return handler(args, settings)
    except NoSuchIncident as exc:
        print(f"inferwatch: {exc}", file=sys.stderr)
        return 1
    except (SettingsError, DetectorConfigError, IncidentError, AlertingConfigError, DuplicateInstance) as exc:
        print(f"inferwatch: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:
        if not _semantic_unavailable(exc):
            raise
        print(f"inferwatch: {exc}", file=sys.stderr)  # detect.options asks for an extra not installed
        return 2
    except (BusUnavailable, StoreUnavailable) as exc:
        print(f"inferwatch: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
