"""``inferwatch silence`` and ``inferwatch alerts``: silences, the notifier, the notification log."""

from __future__ import annotations

import argparse
import getpass
import signal
import sys
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

from inferwatch import render
from inferwatch.collectors.settings import Settings, SettingsError

Common = Callable[[argparse.ArgumentParser], None]


def add_parsers(sub: Any, common: Common, parse_time: Callable[[str], datetime]) -> None:
    """Add ``silence`` and ``alerts`` to the top-level sub-parsers."""
    p = sub.add_parser("silence", help="mute alerts that match, for a while (Alertmanager's silences)")
    ssub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = ssub.add_parser("add", help="mute alerts whose labels match every matcher")
    common(q)
    q.add_argument("matchers", nargs="+", metavar="MATCHER",
                   help='label matchers: service="chat" severity=~"low|medium" kind!=drift')
    q.add_argument("--duration", type=_duration, default=timedelta(hours=1),
                   help="how long, from --starts (default 1h; e.g. 30m, 2h, 1d)")
    q.add_argument("--starts", type=_starts, metavar="T",
                   help="when it begins: RFC 3339, or in how long from now (30m, 2h); default now")
    q.add_argument("--author", help="who (default: $USER)")
    q.add_argument("--comment", default="", help="why: shown with the silence")
    q.add_argument("--routes", type=Path, metavar="FILE",
                   help="routing file (alerting.config): the silence is also made in each Alertmanager in it")
    q.set_defaults(handler=silence_add)
    q = ssub.add_parser("list", help="silences in force or waiting to start (--all: expired too)")
    common(q)
    q.add_argument("--all", action="store_true", help="include expired silences")
    q.set_defaults(handler=silence_list)
    q = ssub.add_parser("expire", help="end a silence now")
    common(q)
    q.add_argument("id")
    q.add_argument("--routes", type=Path, metavar="FILE",
                   help="routing file (alerting.config): its Alertmanagers' copies are expired too")
    q.set_defaults(handler=silence_expire)

    p = sub.add_parser("alerts", help="page on-call receivers (the notifier); see what was sent")
    asub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = asub.add_parser("run", help="run the notifier on its own until interrupted")
    common(q)
    q.add_argument("--routes", type=Path, metavar="FILE", help="routing file (alerting.config)")
    q.set_defaults(handler=alerts_run)
    q = asub.add_parser("check", help="validate a routing file and show where labels would be routed")
    common(q)
    q.add_argument("--routes", type=Path, metavar="FILE", help="routing file (alerting.config)")
    q.add_argument("labels", nargs="*", metavar="LABEL=VALUE",
                   help="an alert's labels, e.g. detector=prompt_injection severity=high service=chat")
    q.set_defaults(handler=alerts_check)
    q = asub.add_parser("log", help="the notification log: what was sent (or is waiting) to whom")
    common(q)
    q.add_argument("--status", action="append", choices=["pending", "delivered", "failed", "superseded"])
    q.add_argument("--receiver")
    q.add_argument("--incident", help="notifications that carried this incident (an id prefix works)")
    q.add_argument("--since", type=parse_time)
    q.add_argument("--limit", type=_positive, default=50, metavar="N",
                   help="at most N notifications, the newest (default 50)")
    q.set_defaults(handler=alerts_log)


def _positive(value: str) -> int:
    from inferwatch.cli import positive_int

    return positive_int(value)


def _starts(value: str) -> datetime:
    """A silence's start: an RFC 3339 time, or a length of time counted forward from now (a
    maintenance window starts later; ``--since`` elsewhere counts an age back)."""
    from inferwatch.cli import parse_time
    from inferwatch.collectors.durations import parse_duration

    try:
        return datetime.now(UTC) + timedelta(seconds=parse_duration(value, unitless=False))
    except OverflowError:
        raise argparse.ArgumentTypeError(f"{value!r} reaches past the year 9999") from None
    except ValueError:
        pass
    try:
        return parse_time(value)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a start: use RFC 3339 (2026-01-01T10:00:00Z) or a time from now (30m, 2h)"
        ) from None


def _duration(value: str) -> timedelta:
    """``--duration``: a length of time with its unit (``2h``; a bare ``2`` is refused), above 0."""
    from inferwatch.cli import length_of_time

    duration = length_of_time("--duration", "h")(value)
    if duration <= timedelta(0):
        raise argparse.ArgumentTypeError(f"{value!r}: a silence needs a duration above 0, e.g. 30m or 2h")
    return duration


# -- silences ------------------------------------------------------------------------------------


def silence_add(args: argparse.Namespace, settings: Settings) -> int:
    """Create a silence."""
    from inferwatch.detectors.alerts.matchers import check_labels, matches, parse_matchers
    from inferwatch.detectors.alerts.model import Silence
    from inferwatch.runtime import open_store

    try:
        matchers = parse_matchers(list(args.matchers))
        # The checks a routing file's matchers get: a silence no alert could match is refused.
        notes = check_labels(matchers)
    except ValueError as exc:
        raise SettingsError(f"silence: {exc}") from None
    if all(matches(m, {}) for m in matchers):
        # As Alertmanager: matchers that all match the empty value would mute every alert.
        raise SettingsError("silence: these matchers match every alert (each matches an empty label); "
                            'name at least one label value, e.g. service="chat"')
    now = datetime.now(UTC)
    starts = (args.starts or now).astimezone(UTC)  # kept in UTC, as shown
    if starts + args.duration <= now:
        raise SettingsError(f"silence: it would end at {_when(starts + args.duration)} UTC, already past "
                            "(--starts plus --duration must be in the future)")
    silence = Silence(
        id=uuid.uuid4().hex[:12], matchers=matchers, starts_at=starts, ends_at=starts + args.duration,
        created_by=args.author or getpass.getuser(), comment=args.comment, created_at=now,
    )
    open_store(settings).save_silence(silence)
    for note in notes:
        print(f"silence: note: {note}", file=sys.stderr)
    if args.json:
        render.json_line(silence.model_dump(mode="json"))
    else:
        starting = f" from {_when(silence.starts_at)}" if silence.starts_at > now else ""
        print(f"silence {silence.id} mutes {_matchers_text(silence)}{starting} "
              f"until {_when(silence.ends_at)} UTC")
    _mirror(args, settings, silence)
    return 0


def _routing(args: argparse.Namespace, settings: Settings) -> Any:
    """The routing file's config (``--routes``, else ``alerting.config``) when it has Alertmanager
    receivers, else ``None``; without any routing file a note says no Alertmanager was told."""
    path = getattr(args, "routes", None) or settings.alerting.config
    if path is None:
        print("silence: note: no routing file (--routes FILE, alerting.config or "
              "INFERWATCH_ALERTING__CONFIG), so no Alertmanager was told: if incidents page through one, "
              "the alerts it already holds keep paging until it has the silence too (pass --routes)",
              file=sys.stderr)
        return None
    from inferwatch.detectors.alerts.am_silences import alertmanagers
    from inferwatch.detectors.alerts.config import AlertingConfigError, load_alerting_config

    try:
        config = load_alerting_config(path)
    except AlertingConfigError as exc:  # the silence is inferwatch's either way: it stands
        print(f"silence: the routing file cannot be read, so no Alertmanager it names was told: {exc}",
              file=sys.stderr)
        return None
    return config if alertmanagers(config) else None


def _mirror(args: argparse.Namespace, settings: Settings, silence: Any) -> None:
    """The silence in each Alertmanager too: there, alerts already posted would keep paging."""
    config = _routing(args, settings)
    if config is None:
        return
    from inferwatch.detectors.alerts.am_silences import mirror

    done, problems = mirror(silence, config)
    for where in done:
        print(f"silence {silence.id}: also created in the Alertmanager at {where}", file=sys.stderr)
    for problem in problems:
        print(f"silence {silence.id}: not created in an Alertmanager: {problem}; the alerts it already "
              "holds keep paging there until you silence them in it too (amtool silence add …)",
              file=sys.stderr)


def silence_list(args: argparse.Namespace, settings: Settings) -> int:
    """List silences."""
    from inferwatch.runtime import open_store

    now = datetime.now(UTC)
    found = open_store(settings, existing=True).list_silences(include_expired=args.all, now=now)
    if args.json:
        for s in found:
            render.json_line(s.model_dump(mode="json"))
        return 0
    if not found:
        print("no silences")
        return 0
    rows = [[s.id, _state(s, now), _when(s.starts_at), _when(s.ends_at), s.created_by, _matchers_text(s),
             s.comment] for s in found]
    render.table(rows, ["ID", "STATE", "STARTS (UTC)", "ENDS (UTC)", "BY", "MATCHERS", "COMMENT"])
    return 0


def silence_expire(args: argparse.Namespace, settings: Settings) -> int:
    """End a silence now."""
    from inferwatch.runtime import open_store

    store = open_store(settings, existing=True)
    silence = store.get_silence(args.id)
    if silence is None and len(args.id) >= 4:  # a prefix, as incident ids take
        prefix = args.id.lower()
        found = [s for s in store.list_silences(include_expired=True) if s.id.lower().startswith(prefix)]
        if len(found) > 1:
            print(f"inferwatch: {args.id!r} begins {len(found)} silences' ids "
                  f"({', '.join(s.id for s in found[:5])}): give more of it", file=sys.stderr)
            return 1
        silence = found[0] if found else None
    if silence is None:
        print(f"inferwatch: no silence with id {args.id!r} (see `inferwatch silence list --all`)",
              file=sys.stderr)
        return 1
    now = datetime.now(UTC)
    if silence.ends_at <= now:
        print(f"silence {silence.id} already ended at {_when(silence.ends_at)} UTC")
        return 0
    # A silence that has not started yet ends before it starts: both become now.
    expired = silence.model_copy(update={"starts_at": min(now, silence.starts_at), "ends_at": now})
    store.save_silence(expired)
    print(f"silence {silence.id} expired")
    config = _routing(args, settings)
    if config is not None:
        from inferwatch.detectors.alerts.am_silences import expire_mirrors

        count, problems = expire_mirrors(silence.id, config)
        if count:
            print(f"silence {silence.id}: its copy expired in {render.count(count, 'Alertmanager')}",
                  file=sys.stderr)
        for problem in problems:
            print(f"silence {silence.id}: its copy in an Alertmanager may still be in force: {problem}",
                  file=sys.stderr)
    return 0


def _state(silence: Any, now: datetime) -> str:
    if silence.ends_at <= now:
        return "expired"
    return "active" if silence.starts_at <= now else "pending"


def _matchers_text(silence: Any) -> str:
    return "{" + ", ".join(str(m) for m in silence.matchers) + "}"


def _when(moment: datetime) -> str:
    """``moment`` in UTC, as every column and message that prints it says."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


# -- the notifier --------------------------------------------------------------------------------


def routing_file(args: argparse.Namespace, settings: Settings) -> Path:
    """The routing file from ``--routes`` or ``alerting.config``; a clear error when neither is set."""
    path: Path | None = getattr(args, "routes", None) or settings.alerting.config
    if path is None:
        raise SettingsError(
            "no routing file: pass --routes FILE or set alerting.config (INFERWATCH_ALERTING__CONFIG); "
            "see docs/alerting.md"
        )
    return path


def alerts_run(args: argparse.Namespace, settings: Settings) -> int:
    """Run the notifier until SIGINT/SIGTERM."""
    from inferwatch.runtime import NotifierThread

    thread = NotifierThread(settings, routing_file(args, settings))
    stopped = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        stopped.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    thread.start()
    print(f"notifier: routing with {thread.path}; Ctrl-C to stop", file=sys.stderr)
    try:
        while not stopped.wait(0.5):
            if not thread.is_alive():
                return 1
    finally:
        thread.close()
    return 0


def alerts_check(args: argparse.Namespace, settings: Settings) -> int:
    """Validate the routing file; with labels, show the receivers and group they reach."""
    from inferwatch.detectors.alerts.config import group_key, label_problems, load_alerting_config
    from inferwatch.detectors.alerts.notifier import check_senders

    path = routing_file(args, settings)
    config = load_alerting_config(path)  # refuses labels no alert could match, too
    check_senders(config, path)
    for note in label_problems(config)[1]:
        print(f"{path}: note: {note}", file=sys.stderr)
    receivers = ", ".join(r.name for r in config.receivers)
    checked: dict[str, Any] = {"file": str(path), "valid": True,
                               "receivers": [r.name for r in config.receivers],
                               "inhibit_rules": len(config.inhibit_rules)}
    if not args.json:
        print(f"{path}: valid; receivers: {receivers}; {len(config.inhibit_rules)} inhibition rule(s)")
    if not args.labels:
        if args.json:
            render.json_line(checked)
        return 0
    from inferwatch.detectors.alerts.matchers import check_labels
    from inferwatch.detectors.alerts.model import Matcher

    labels: dict[str, str] = {}
    for item in args.labels:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SettingsError(f"{item!r} is not LABEL=VALUE")
        try:
            for note in check_labels([Matcher(name=name, op="=", value=value)]):
                print(f"alerts check: note: {note}", file=sys.stderr)
        except ValueError as exc:
            raise SettingsError(f"alerts check: {exc}") from None
        labels[name] = value
    if "detector" in labels:
        labels.setdefault("alertname", labels["detector"])  # as every alert carries it
    routed = [{"receiver": match.receiver, "group": group_key(match, labels),
               "group_wait_s": match.group_wait, "group_interval_s": match.group_interval,
               "repeat_interval_s": match.repeat_interval}
              for match in config.route.match(labels)]
    if args.json:
        render.json_line({**checked, "labels": labels, "routed": routed})
        return 0
    for route in routed:
        print(f"  -> receiver {route['receiver']}  group {route['group']}  "
              f"(wait {route['group_wait_s']:g}s, interval {route['group_interval_s']:g}s, "
              f"repeat {route['repeat_interval_s']:g}s)")
    return 0


def alerts_log(args: argparse.Namespace, settings: Settings) -> int:
    """Print the notification log."""
    from inferwatch.detectors.alerts.model import NotificationQuery
    from inferwatch.runtime import open_store

    store = open_store(settings, existing=True)
    incident_id = args.incident
    if incident_id is not None:  # an id prefix, as every incidents command takes
        incident = store.get(incident_id)
        incident_id = incident.id if incident is not None else incident_id
    query = NotificationQuery(status=args.status, receiver=args.receiver, incident_id=incident_id,
                              since=args.since, limit=args.limit)
    found = store.list_notifications(query)
    if args.json:
        for n in found:
            render.json_line(n.model_dump(mode="json"))
        return 0
    if not found:
        print("no notifications")
        return 0
    rows = [[n.id, _when(n.created_at), n.status, str(n.attempts), f"{n.receiver}/{n.integration}",
             f"{len(n.firing)}/{len(n.resolved)}",
             n.group_key + (f"  ({n.last_error})" if n.last_error else "")]
            for n in found]
    render.table(rows, ["ID", "DECIDED (UTC)", "STATUS", "TRIES", "RECEIVER", "FIRING/RESOLVED", "GROUP"])
    return 0
