"""What each ``inferwatch`` sub-command does (the parser is in :mod:`inferwatch.cli`)."""

from __future__ import annotations

import argparse
import getpass
import os
import signal
import sys
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from inferwatch import render
from inferwatch.collectors.bus import BusUnavailable
from inferwatch.collectors.event import InferenceEvent, event_to_dict
from inferwatch.collectors.ids import cut_short_pseudonym
from inferwatch.collectors.settings import Settings, SettingsError, load_settings
from inferwatch.collectors.unread_keys import UnreadKeys
from inferwatch.detectors.drift.reference import ReferenceRecord, closest_name, column_names, listed
from inferwatch.detectors.incidents import AlreadyInState, Incident, IncidentManager, no_such_incident
from inferwatch.detectors.replay import ReplayInterrupted, late_in_files, replay_files
from inferwatch.detectors.sources import STDIN, UNREADABLE, open_source, spooled_stdin
from inferwatch.detectors.sqlite_store import SQLiteStore
from inferwatch.detectors.store import EventQuery, IncidentQuery, Store, StoreUnavailable
from inferwatch.runtime import (
    NotifierThread,
    build_detection,
    build_service,
    is_sqlite_file,
    open_bus,
    open_store,
    sqlite_kind,
    start_notifier,
)

if TYPE_CHECKING:
    from inferwatch.detectors.alerts.notifier import NotifierStats


def demo(args: argparse.Namespace, settings: Settings) -> int:
    """Run the demo scenario (see :mod:`inferwatch.demo`)."""
    from inferwatch.demo.scenario import run_demo

    return run_demo(settings, home=args.home, as_json=args.json, distributed=args.distributed)


def detect(args: argparse.Namespace, settings: Settings) -> int:
    """Run the detector service until interrupted (or idle, with ``--exit-when-idle``)."""

    def announce(incident: Incident) -> None:
        if args.json:
            render.json_line(incident.public_dict())
        else:
            print(f"incident {incident.id} [{incident.severity}] {incident.subject}: {incident.title}",
                  flush=True)

    service = build_service(settings, on_incident=announce)
    health = None
    notifier: NotifierThread | None = None
    if settings.detect.metrics_port is not None:
        from inferwatch.detectors.health import HealthServer

        def paging() -> NotifierStats | None:
            running = notifier.notifier if notifier is not None else None
            return running.stats if running is not None else None

        try:
            health = HealthServer(service, group=settings.detect.group, host=settings.detect.metrics_host,
                                  port=settings.detect.metrics_port, notifier=paging)
        except OSError as exc:
            service.close()
            raise SettingsError(f"detect.metrics_port: cannot serve on {settings.detect.metrics_host}:"
                                f"{settings.detect.metrics_port}: {exc.strerror or exc}") from None
    notifier = start_notifier(settings)

    def stop(signum: int, frame: FrameType | None) -> None:
        service.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        stats = service.run(max_idle_s=args.exit_when_idle)
    finally:
        service.close()
        if notifier is not None:
            notifier.close()
        if health is not None:
            health.close()
    skipped = f" ({stats.skipped_restored} records it already held skipped)" if stats.skipped_restored else ""
    restored = f"; state restored from checkpoint {stats.restored_from}{skipped}" if stats.restored_from \
        else ""
    print(f"detect: {stats.records} records, {stats.malformed} malformed, "
          f"{stats.incidents_written} incident writes, {stats.checkpoints} checkpoints{restored}",
          file=sys.stderr)
    return 0


LATE_SHARE_REFUSED = 0.5
"""Replay exits 2 when this share of the events or more came out of time order (a file written
newest first): its incidents are not worth a success. Fewer stragglers get the warning alone."""


def replay(args: argparse.Namespace, settings: Settings) -> int:
    """Run the detectors over files of events and print the incidents."""
    paths: list[Path] = list(args.files)
    if sum(str(p) == STDIN for p in paths) > 1:
        print("inferwatch replay: - (standard input) can be given once", file=sys.stderr)
        return 2
    folders = [str(p) for p in paths if str(p) != STDIN and p.is_dir()]
    if folders:
        print(f"inferwatch replay: {', '.join(folders)}: a folder, not a file; give the files in it "
              "(e.g. DIR/*.jsonl, oldest first)", file=sys.stderr)
        return 2
    missing = [str(p) for p in paths if str(p) != STDIN and not p.is_file()]
    if missing:
        print(f"inferwatch replay: no such file {', '.join(missing)}", file=sys.stderr)
        return 2
    databases = [str(p) for p in paths if str(p) != STDIN and is_sqlite_file(p)]
    if databases:
        print(f"inferwatch replay: {_sqlite_hint(databases)}", file=sys.stderr)
        return 2
    spooled: Path | None = None
    try:
        if args.store and STDIN in map(str, paths):
            # the order check below reads the input twice: keep standard input in a file for it
            spooled = spooled_stdin()
            paths = [spooled if str(p) == STDIN else p for p in paths]
        return _replay(args, settings, paths)
    finally:
        if spooled is not None:
            spooled.unlink(missing_ok=True)


def _replay(args: argparse.Namespace, settings: Settings, paths: list[Path]) -> int:
    shown = ", ".join("standard input" if str(p) == STDIN else str(p) for p in args.files)
    if args.store:  # a file replay would refuse must not leave its incidents and references behind
        try:
            timed, late = late_in_files(paths, settings.detect.window_s)
        except KeyboardInterrupt:
            print(f"inferwatch replay: interrupted while reading the times of {shown} (their order is "
                  f"checked first): nothing was replayed or written to {args.store}", file=sys.stderr)
            raise
        if timed and late / timed >= LATE_SHARE_REFUSED:
            _out_of_order(late, timed, written=False, files=len(paths))
            return 2
    if args.store:
        _note_new_folder("replay", args.store)
    store = _ReferenceReads(args.store if args.store else ":memory:")
    baselines = [] if args.store else _baselines_set(settings)
    for record in baselines:
        store.save_reference(record)
    detection = build_detection(settings, store, keep_events=bool(args.store))
    progress = _progress_bar("replay") if sys.stderr.isatty() else None
    several = len(paths) > 1
    try:
        result = replay_files(paths, detection.pipeline, store, progress=progress)
    except ReplayInterrupted as stopped:
        if progress is not None:
            sys.stderr.write("\n")
        again = ("the same input" if STDIN in map(str, args.files) else
                 "the same files" if several else "the same file")
        _note_interrupted(stopped.result.events, stopped.result.event_time, args.store, again)
        raise
    if progress is not None:
        sys.stderr.write("\n")
    for number, reason in result.malformed[:10]:
        name, line = result.where(number)
        at = f"{'standard input' if name == STDIN else name}: line {line}" if several else f"line {line}"
        print(f"{at}: skipped malformed event: {reason}", file=sys.stderr)
    if len(result.malformed) > 10:
        print(f"... and {len(result.malformed) - 10} more malformed lines", file=sys.stderr)
    _note_unread_keys("replay", result.unread_keys)
    if args.json:
        for incident in result.incidents:
            render.json_line(incident.public_dict())
    else:
        render.incidents_table(result.incidents)
        files = f" from {len(paths)} files" if several else ""
        print(f"\n{render.count(result.events, 'event')} replayed{files}, "
              f"{len(result.malformed):,} malformed, {render.count(len(result.incidents), 'incident')}")
    if result.untouched:
        print(f"inferwatch replay: {render.count(result.untouched, 'incident')} already in {args.store} "
              "hold no finding of this file and are not listed (`inferwatch incidents list --store` shows "
              "them)",
              file=sys.stderr)
    if args.store:
        # --store replaced the configured store in ``settings``: the baselines are in that one
        _note_baselines_not_used(load_settings(getattr(args, "config", None)), args.store,
                                 store.references_asked)
    _note_baselines_of_other_models(baselines if not args.store else
                                    [r for r in store.list_references() if r.source == "file"],
                                    store.references_asked)
    used = [r.model for r in baselines if r.model in store.references_read]
    if used:
        models = ", ".join(sorted(used))
        print(f"inferwatch replay: drift compared model(s) {models} with the baseline set in "
              f"{_store_name(settings)} (`inferwatch baseline show`)", file=sys.stderr)
    if not args.store and result.incidents:
        print("inferwatch replay: the incidents were kept in memory only; pass --store PATH to keep them "
              "for `inferwatch incidents show/timeline/report`", file=sys.stderr)
    if not result.events:
        what = ("no line was an event" if result.malformed else
                f"{shown} {'hold' if several else 'holds'} no event ({'they are' if several else 'it is'} "
                "empty or blank)")
        csv = ""
        if any(str(p) != STDIN and _looks_like_csv(p) for p in args.files):
            csv = (" It looks like CSV: a table of a model's inputs is a drift baseline "
                   "(`inferwatch baseline set --model M FILE`), not a log of calls.")
        print(f"inferwatch replay: {what}: replay reads inferwatch.event/1 events, one JSON object per line "
              f"(docs/events.md); to score bare texts use `inferwatch scan`.{csv}", file=sys.stderr)
        return 2
    if result.late:
        _out_of_order(result.late, result.events, written=True, files=len(paths))
        if result.late / result.events >= LATE_SHARE_REFUSED:
            return 2
    return 0


def _note_interrupted(events: int, event_time: datetime | None, store: str | None, again: str) -> None:
    """Ctrl-C during a replay: how far it got and what was kept. Into a store, the same input can
    be replayed again from its start: a finding an incident already holds is not counted again
    (its digest, see :func:`~inferwatch.detectors.incidents.finding_digest`), so it comes to the
    same incidents and counts as one uninterrupted replay."""
    when = f" (event time {event_time:%Y-%m-%dT%H:%M:%SZ})" if event_time is not None else ""
    kept = (f"incidents so far are in {store} (the window open when it stopped was not judged); "
            f"replaying {again} again is safe (incidents are counted once)" if store else
            "without --store the incidents were in memory only: nothing was kept")
    print(f"inferwatch replay: interrupted after {render.count(events, 'event')}{when}; {kept}",
          file=sys.stderr)


def _note_unread_keys(command: str, unread: UnreadKeys) -> None:
    """Events are kept with keys the model does not define, but a prompt under ``input.prompt``
    is then read by no detector: say so, with the key probably meant."""
    summary = unread.summary()
    if summary is not None:
        print(f"inferwatch {command}: {summary}; such keys are kept but not read (docs/events.md lists "
              "the fields that are)", file=sys.stderr)


def _out_of_order(late: int, events: int, *, written: bool, files: int = 1) -> None:
    share = late / events
    judged = ("judged them in the wrong window and may have missed incidents" if written else
              "would judge them in the wrong window: nothing was replayed or written to --store")
    order = "the files are not in time order (give them oldest first, each in time order)" if files > 1 \
        else "the file is not in time order"
    print(f"inferwatch replay: {render.count(late, 'event')} ({share:.0%}) came after a later window had "
          f"opened: {order}, so the per-window detectors (rates, per-caller, drift) "
          f"{judged}. Sort it by time (e.g. `jq -s -c 'sort_by(.time)[]'`); `inferwatch events search "
          "--json --oldest-first --limit N` writes the newest N stored events in order", file=sys.stderr)


class _ReferenceReads(SQLiteStore):
    """The replay's store, noting the models whose drift reference a detector asked for, and
    those it read (found)."""

    def __init__(self, path: Path | str) -> None:
        super().__init__(path)
        self.references_asked: set[str] = set()
        self.references_read: set[str] = set()

    def load_reference(self, model: str) -> ReferenceRecord | None:
        self.references_asked.add(model)
        record = super().load_reference(model)
        if record is not None:
            self.references_read.add(model)
        return record


def _note_baselines_not_used(settings: Settings, replay_store: Path, judged: set[str]) -> None:
    """With ``--store``, drift keeps its references in that store: a baseline set (without
    ``--store``) in the configured one is not used, which the quick start's order makes easy to
    miss."""
    configured = Path(settings.store.path).resolve()
    if settings.store.kind == "sqlite" and configured == Path(replay_store).resolve():
        return
    missed = sorted(r.model for r in _baselines_set(settings) if r.model in judged)
    if missed:
        models = ", ".join(missed)
        print(f"inferwatch replay: drift judged model(s) {models} against the reference kept in "
              f"{replay_store}, not the baseline set in {_store_name(settings)}; to compare with that "
              f"baseline here, `inferwatch baseline set --store {replay_store} --model M FILE`",
              file=sys.stderr)


def _note_baselines_of_other_models(baselines: list[ReferenceRecord], judged: set[str]) -> None:
    """A baseline whose model no replayed event has (a typo in ``baseline set --model``) is
    silently unused while drift warms up on the traffic itself, drifted or not: say so, with the
    model probably meant. ``judged``: the models drift asked a reference for."""
    from inferwatch.detectors.registry import did_you_mean

    unused = sorted({r.model for r in baselines} - judged)
    if not unused or not judged:
        return
    note = (f"inferwatch replay: the baseline of model(s) {', '.join(unused)} was not used: no replayed "
            f"event is of {'that model' if len(unused) == 1 else 'those models'}")
    warm = sorted(judged - {r.model for r in baselines})
    if warm:
        note += (f"; drift judged {', '.join(warm)} against the traffic's own first windows"
                 f"{did_you_mean(unused, warm)}. An event's `model` names its baseline: "
                 "`inferwatch baseline set --model NAME FILE` with the events' name")
    print(note, file=sys.stderr)


def _sqlite_hint(files: list[str]) -> str:
    hints = []
    for name in files:
        if sqlite_kind(name) == "bus":
            hints.append(f"{name}: the embedded bus (an SQLite file), not lines of JSON; `inferwatch "
                         f"detect --bus {name}` reads it (and `inferwatch events dead-letters --bus {name}` "
                         "lists the events it refused)")
        else:
            hints.append(f"{name}: an SQLite database (an inferwatch store?), not lines of JSON; to read "
                         "a store's events, write them out first: `inferwatch events search --store FILE "
                         "--json --oldest-first --limit N > events.jsonl`")
    return "; ".join(hints)


def _looks_like_csv(path: os.PathLike[str]) -> bool:
    """The file's first line is comma-separated values rather than a JSON object."""
    try:
        with open(path, "rb") as fh:
            first = fh.readline(4096).strip()
    except OSError:
        return False
    return bool(first) and not first.startswith((b"{", b"[")) and first.count(b",") >= 1


def _baselines_set(settings: Settings) -> list[ReferenceRecord]:
    """The baseline files set with `inferwatch baseline set` in the configured store, which a replay
    without ``--store`` (in memory) compares with as the service would; none when there is no store."""
    try:
        return [r for r in open_store(settings, existing=True).list_references() if r.source == "file"]
    except StoreUnavailable:
        return []
    except Exception as exc:  # a replay does not need the store: say so and go on without it
        print(f"inferwatch replay: could not read the baselines in {_store_name(settings)} ({exc}); "
              "drift warms up on the file", file=sys.stderr)
        return []


def _store_name(settings: Settings) -> str:
    if settings.store.kind == "elasticsearch":
        return "Elasticsearch"
    return str(settings.store.path)


def incidents_list(args: argparse.Namespace, settings: Settings) -> int:
    """List incidents matching the filters."""
    query = IncidentQuery(
        status=args.status, min_severity=args.severity, kind=args.kind, detector=args.detector,
        service=args.service, model=args.model, subject=args.subject, since=args.since, text=args.text,
        limit=args.limit,
    )
    store = open_store(settings, existing=True)
    found = store.list_incidents(query)
    if args.json:
        for incident in found:
            render.json_line(incident.public_dict())
    else:
        render.incidents_table(found)
    _note_limit_reached(len(found), args.limit, "incident")  # on stderr: with --json too
    if not found and args.detector is not None:
        _note_unknown_detector(args.detector)
    pseudonym = (args.subject or "").removeprefix("principal:")
    if not found and pseudonym != args.subject and cut_short_pseudonym(pseudonym):
        _note_cut_short("incidents list", pseudonym)
    if not found:
        _note_other_case(store, query)
    if not found and args.since is not None:
        older = store.list_incidents(replace(query, since=None, limit=1))
        if older:
            _note_older("incident", older[0].last_seen, args.since)
    return 0


_CASE_LOOKBACK = 1000  # incidents read for the values --model and --subject are told apart from


def _note_other_case(store: Store, query: IncidentQuery) -> None:
    """Nothing matched a ``--model`` or ``--subject`` that differs only in case from one some incident
    has (``IRIS`` for ``iris``; ``principal:P_…``): names and pseudonyms are compared exactly, so
    name the one meant rather than answer "no incidents" alone."""
    for field, flag in (("model", "--model"), ("subject", "--subject")):
        given = getattr(query, field)
        if given is None:
            continue
        others = store.list_incidents(replace(query, **{field: None}, limit=_CASE_LOOKBACK))
        values = {value for i in others if (value := getattr(i, field)) is not None}
        asked = [given, f"principal:{given}"] if field == "subject" else [given]
        for asking in asked:  # a bare P_…: only a lower-case p_ is taken as a pseudonym
            meant = closest_name(asking, values)  # the same but for case first, else a close spelling
            if meant is not None and meant != asking and meant.casefold() == asking.casefold():
                print(f"note: no incident has {flag} {given!r}, but some have {meant!r}, which differs only "
                      f"in case (names and pseudonyms are matched exactly): {flag} {meant}", file=sys.stderr)
                break


def _note_limit_reached(found: int, limit: int, noun: str) -> None:
    """A listing that stopped at ``--limit`` says so on stderr, rather than look complete."""
    if found >= limit:
        print(f"(the newest {render.count(limit, noun)}; more may match: raise --limit or narrow the search)",
              file=sys.stderr)


def _note_new_folder(command: str, path: str | Path) -> None:
    """A store file to be made in a folder that is not there either: said, so that a mistyped path
    (``--store /nonexistent/s.db``) is seen rather than silently made."""
    folder = Path(path).parent
    if str(path) != ":memory:" and not folder.exists():
        print(f"inferwatch {command}: {folder} did not exist: it is made, with a new store {path} in it",
              file=sys.stderr)


def _note_cut_short(command: str, pseudonym: str) -> None:
    print(f"inferwatch {command}: a pseudonym is p_ and 24 hex digits; {pseudonym!r} has "
          f"{len(pseudonym) - 2} (cut short? copy the whole one from `inferwatch incidents show`)",
          file=sys.stderr)


def _note_older(what: str, newest: datetime, since: datetime) -> None:
    """Nothing matched since ``since``, but something older does: a replayed log keeps its events'
    times, and an age (``7d``) counts back from now."""
    print(f"note: no {what} since {since:%Y-%m-%dT%H:%M:%SZ}, but the newest matching {what} is from "
          f"{newest:%Y-%m-%dT%H:%M:%SZ} (an age such as 2h counts back from now, and replayed events keep "
          "their own times): pass an earlier --since", file=sys.stderr)


def _note_unknown_detector(name: str) -> None:
    """Nothing found for a detector no installed package registers: most likely a typo."""
    import difflib

    from inferwatch.detectors.registry import available

    known = sorted(available())
    if name not in known:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        print(f"note: no detector named {name!r} is installed ({hint}detectors: {', '.join(known)})",
              file=sys.stderr)


def incidents_show(args: argparse.Namespace, settings: Settings) -> int:
    """Show one incident."""
    incident = open_store(settings, existing=True).get(args.id)
    if incident is None:
        print(f"inferwatch: {no_such_incident(args.id)}",
              file=sys.stderr)
        return 1
    if args.json:
        render.json_line(incident.public_dict())
    else:
        render.incident_detail(incident)
    return 0


def incidents_transition(args: argparse.Namespace, settings: Settings) -> int:
    """Acknowledge, resolve or reopen an incident, or add a note to its history."""
    manager = IncidentManager(open_store(settings, existing=True), bucket_s=settings.detect.incident_bucket_s,
                              resolve_after_s=settings.detect.resolve_after_s or None)
    actor = args.actor or getpass.getuser()
    try:
        if args.transition == "ack":
            incident = manager.acknowledge(args.id, actor, args.note)
        elif args.transition == "reopen":
            incident = manager.reopen(args.id, actor, args.note)
        elif args.transition == "note":
            incident = manager.add_note(args.id, actor, args.note)
        else:
            incident = manager.resolve(args.id, actor, args.note)
    except AlreadyInState as already:
        incident = already.incident
        if args.json:
            render.json_line(incident.public_dict())
            return 0
        actions = _ACTIONS_TO[incident.status]
        done = next((h for h in reversed(incident.history) if h.action in actions), None)
        by = f" (by {done.actor} at {done.at:%Y-%m-%d %H:%M:%S} UTC)" if done is not None else ""
        print(f"incident {incident.id} is already {incident.status}{by}; nothing changed")
        return 0
    if args.json:
        render.json_line(incident.public_dict())
    elif args.transition == "note":
        print(f"note added to incident {incident.id} (by {actor}); it is still {incident.status}")
    else:
        print(f"incident {incident.id} is now {incident.status} (by {actor})")
    return 0


_ACTIONS_TO = {"open": ("opened", "reopened"), "acknowledged": ("acknowledged",), "resolved": ("resolved",)}
"""The history actions that leave an incident in each status."""


def events_search(args: argparse.Namespace, settings: Settings) -> int:
    """Search stored events."""
    if args.since is not None and args.until is not None and args.since >= args.until:
        print(f"inferwatch events search: --since ({args.since:%Y-%m-%dT%H:%M:%SZ}) must be before --until "
              f"({args.until:%Y-%m-%dT%H:%M:%SZ}); nothing could match", file=sys.stderr)
        return 2
    store = open_store(settings, existing=True)
    ids: tuple[str, ...] | None = tuple(args.id) if args.id else None
    if args.incident is not None:
        incident = store.get(args.incident)
        if incident is None:
            print(f"inferwatch: {no_such_incident(args.incident)}", file=sys.stderr)
            return 1
        ids = (*(ids or ()), *incident.event_ids)
    query = EventQuery(
        principal=args.principal, model=args.model, service=args.service, trace_id=args.trace_id,
        client_ip=args.client_ip, status=args.status, since=args.since, until=args.until, text=args.text,
        ids=ids, limit=args.limit,
    )
    found = store.search_events(query)
    principal = args.principal or ""
    if not found and cut_short_pseudonym(principal):
        _note_cut_short("events search", principal)
    if not found and args.client_ip is not None and not store.search_events(
            EventQuery(client_ip=args.client_ip, limit=1)):  # the address alone finds nothing
        _note_truncated_address(args.client_ip)
    if not found and args.since is not None:
        older = store.search_events(replace(query, since=None, until=None, limit=1))
        if older and older[0].time < args.since:
            _note_older("event", older[0].time, args.since)
    if args.oldest_first:
        found.reverse()
    if args.json:
        for event in found:
            render.json_line(event_to_dict(event))
    else:
        render.events_table(found)
        _note_limit_reached(len(found), args.limit, "event")
    return 0


def _note_truncated_address(address: str) -> None:
    """Nothing from ``address``: say so when it is a host's address, which agents do not record
    by default (``agent.truncate_client_ip``), rather than leave the empty answer unexplained."""
    from inferwatch.agent.principal import truncate_ip

    network = truncate_ip(address)
    if network is not None and network != address:
        print(f"inferwatch events search: agents record a caller's address truncated to its network "
              f"(/24 for IPv4, /48 for IPv6; agent.truncate_client_ip, on by default): try --client-ip "
              f"{network}", file=sys.stderr)


def dead_letters(args: argparse.Namespace, settings: Settings) -> int:
    """Show events that were rejected as malformed."""
    if settings.bus.kind == "sqlite" and not Path(settings.bus.path).exists():
        # As the other read commands: no bus there is a wrong directory or --bus, not "none".
        raise BusUnavailable(f"no bus at {settings.bus.path} (bus.path, INFERWATCH_BUS__PATH): nothing was "
                             "recorded there; run where the agent and `inferwatch detect` ran, or pass "
                             "--bus PATH")
    rows = open_bus(settings).dead_letters().list(args.limit)
    for offset, source, reason, value in rows:
        if args.json:
            topic, _, partition = source.partition("/")
            where: dict[str, object] = {"topic": topic}
            if partition.isdigit():
                where["partition"] = int(partition)
            render.json_line({**where, "offset": offset, "reason": reason,
                              "value": value.decode("utf-8", "replace")})
        else:
            print(f"{source}@{offset}: {reason}\n    {value[:200].decode('utf-8', 'replace')}")
    if not rows and not args.json:
        print("no dead letters")
    return 0


def baseline_set(args: argparse.Namespace, settings: Settings) -> int:
    """Summarise a baseline file and keep it as the model's drift reference."""
    from inferwatch.detectors.drift.reference import ReferenceFileError, file_reference

    if settings.store.kind == "sqlite":
        _note_new_folder("baseline set", settings.store.path)
    store = open_store(settings)  # first: an unreachable store should not wait for a long file
    try:
        record, notes = file_reference(args.file, args.model, created=datetime.now(UTC),
                                       model_version=args.model_version, max_rows=args.max_rows,
                                       drop=args.drop)
        recent = _recent_events(store, record.model)
        as_text = _numbers_sent_as_text(recent, record)
        if as_text:  # read those columns again, as text: as the events carry them
            record, notes = file_reference(args.file, args.model, created=datetime.now(UTC),
                                           model_version=args.model_version, max_rows=args.max_rows,
                                           as_text=as_text, drop=args.drop)
            examples = ", ".join(f"{name}={example!r}" for name, example in as_text.items())
            them = "them" if len(as_text) > 1 else "it"
            notes.append(f"read {column_names(list(as_text))} as text, as the model's latest events carry "
                         f"{them} ({examples}); as numbers, drift would see a change of value type in every "
                         "window")
    except ReferenceFileError as exc:
        print(f"inferwatch baseline: {exc}", file=sys.stderr)
        return 2
    replaced = store.load_reference(args.model)
    store.save_reference(record)
    notes += _traffic_notes(store, record, recent)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if args.json:
        render.json_line(record.public_dict())
        return 0
    version = f" (version {record.model_version})" if record.model_version else ""
    print(f"drift reference of model {record.model}{version} set from {args.file}: "
          f"{record.events:,} rows, "
          f"{len(record.features())} features")
    if replaced is not None:
        print(f"it replaces the {replaced.source} reference of {_when(replaced.created)} "
              f"({replaced.events:,} events from {replaced.origin})")
    return 0


TRAFFIC_CHECKED = 500
"""Recent stored events a new baseline is checked against (a wrong --model, columns never sent)."""


def _recent_events(store: Store, model: str) -> list[InferenceEvent] | None:
    """The model's latest stored events; ``None`` when the store keeps none (or refuses the search)."""
    try:
        return store.search_events(EventQuery(model=model, limit=TRAFFIC_CHECKED))
    except Exception:  # a store that keeps no events (or refuses the search) has nothing to say
        return None


def _numbers_sent_as_text(recent: list[InferenceEvent] | None, record: ReferenceRecord) -> dict[str, str]:
    """Input columns that are numbers in the baseline but text in nine tenths or more of the
    model's ``recent`` events that have them (at least 10), each with an example value."""
    from inferwatch.detectors.drift.sketch import input_features

    numeric = {key for key, kind, _ in record.features() if kind == "numeric" and key.startswith("input.")}
    if not numeric or not recent:
        return {}
    seen: dict[str, list[float | str]] = {}
    for event in recent:
        for key, value in input_features(event.input.features).items():
            if key in numeric:
                seen.setdefault(key, []).append(value)
    found = {}
    for key, values in seen.items():
        text = [v for v in values if isinstance(v, str)]
        if len(text) >= 10 and len(text) >= 0.9 * len(values):
            found[key.removeprefix("input.")] = text[0]
    return found


def _traffic_notes(store: Store, record: ReferenceRecord, recent: list[InferenceEvent] | None) -> list[str]:
    """What the store's ``recent`` events of the model say about a baseline just set: no traffic
    of that model while others have some (a typo in --model), or columns its events never carry."""
    if recent is None:
        return []
    try:
        latest = [] if recent else store.search_events(EventQuery(limit=TRAFFIC_CHECKED))
    except Exception:  # a store that refuses the search has nothing to say
        return []
    if not recent:
        others = Counter(e.model or "(none)" for e in latest)
        if not others:
            return []  # nothing recorded yet: a baseline set before the first traffic
        models = ", ".join(f"{m} ({n:,})" for m, n in others.most_common(5))
        return [f"no stored events of model {record.model!r}; the latest events are of {models}: check "
                "--model, which must name the model exactly as the events do"]
    sent = {name for e in recent for name in (e.input.features or {})}
    if not sent:
        return []  # a text model: its baseline's columns are measures of the text
    columns = [key.removeprefix("input.") for key, _, _ in record.features() if key.startswith("input.")]
    missing = [c for c in columns if c not in sent]
    if not missing:
        return []
    if len(missing) == len(columns):  # not columns to leave out: names that differ (case, spelling)
        pairs = [f"{column} -> {meant}" for column in missing if (meant := closest_name(column, sent))]
        matches = f" ({listed(pairs, most=5)}?)" if pairs else ""
        return [f"none of the baseline's columns is in the latest {len(recent):,} events of model "
                f"{record.model!r}, whose features are {listed(sorted(sent), quoted=True)}: name the "
                f"baseline's columns as the events name their features{matches}; as it is, drift reports "
                "every window as having none of its reference's features"]
    return [f"{column_names(missing)}: in none of the latest {len(recent):,} events of model "
            f"{record.model!r}, so live traffic will read as missing them (drift on their missing share); "
            f"leave them out (--drop {','.join(missing)}) unless the model gets them"]


def baseline_show(args: argparse.Namespace, settings: Settings) -> int:
    """List the drift references, or show one model's with its features."""
    store = open_store(settings, existing=True)
    if args.model is None:
        records = store.list_references()
    else:
        found = store.load_reference(args.model)
        if found is None:
            _no_reference(store, args.model)
            return 1
        records = [found]
    if args.json:
        for record in records:
            render.json_line(record.public_dict())
    elif args.model is None:
        if not records:
            print("no drift references (set one with `inferwatch baseline set --model M FILE`)")
        rows = [[r.model, r.model_version or "-", r.source, f"{r.events:,}", str(len(r.features())),
                 _when(r.created), r.origin + _waiting(r)] for r in records]
        if rows:
            render.table(rows, ["MODEL", "VERSION", "SOURCE", "EVENTS", "FEATURES", "CREATED", "ORIGIN"])
    else:
        _reference_detail(records[0])
    return 0


def _reference_detail(record: ReferenceRecord) -> None:
    print(f"model:    {record.model}")
    print(f"version:  {record.model_version or '-'}")
    print(f"source:   {record.source} ({record.origin})")
    print(f"created:  {_when(record.created)} UTC")
    print(f"events:   {record.events:,}")
    if record.waiting is not None:
        waiting = record.waiting
        print(f"waiting:  baseline file {waiting.origin} for version {waiting.model_version or '-'} (set "
              f"{_when(waiting.created)} UTC): the reference when that version's traffic comes")
    features = record.features()
    print(f"features: {len(features)} (N: values in the reference's sample)\n")
    render.table([[key, kind, f"{n:,}"] for key, kind, n in features], ["FEATURE", "TYPE", "N"])


def _waiting(record: ReferenceRecord) -> str:
    """What `baseline list` adds to a warm-up's origin when a baseline file waits for its version."""
    waiting = record.waiting
    return "" if waiting is None else f" (file {waiting.origin} waits for version {waiting.model_version})"


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _no_reference(store: Store, model: str) -> None:
    """Say there is no reference for ``model``, with the model probably meant."""
    from inferwatch.detectors.registry import did_you_mean

    meant = did_you_mean([model], [r.model for r in store.list_references()])
    print(f"inferwatch: no drift reference for model {model!r}{meant} (see `inferwatch baseline show`)",
          file=sys.stderr)


def baseline_clear(args: argparse.Namespace, settings: Settings) -> int:
    """Forget a model's drift reference."""
    store = open_store(settings, existing=True)
    if not store.delete_reference(args.model):
        _no_reference(store, args.model)
        return 1
    if args.json:
        render.json_line({"model": args.model, "cleared": True})
    else:
        print(f"drift reference of model {args.model} cleared")
    return 0


def _progress_bar(label: str) -> render.ProgressFn:
    def show(done: int, total: int) -> None:
        share = done / total if total else 1.0
        sys.stderr.write(f"\r{label}: {share:6.1%} ({done / 1e6:.1f} of {total / 1e6:.1f} MB)")
        sys.stderr.flush()

    return show


def scan(args: argparse.Namespace, settings: Settings) -> int:
    """Score texts or events with the per-request detectors, one result per input line."""
    from inferwatch.detectors.registry import build_detectors
    from inferwatch.detectors.scan import PER_REQUEST, ScanResult, scan_line

    names = ([n.strip() for n in args.detectors.split(",") if n.strip()] if args.detectors
             else list(PER_REQUEST))
    wrong = [n for n in names if n not in PER_REQUEST]
    from inferwatch.detectors.registry import available, did_you_mean

    unknown = [n for n in wrong if n not in available()]
    if unknown:
        print(f"inferwatch scan: no detector named {', '.join(unknown)}{did_you_mean(unknown, PER_REQUEST)}; "
              f"scan runs the per-request detectors: {', '.join(PER_REQUEST)}", file=sys.stderr)
        return 2
    if wrong or not names:
        print(f"inferwatch scan: {', '.join(wrong) or 'no detector named'}: scan runs the per-request "
              f"detectors, choose from {', '.join(PER_REQUEST)} (the windowed ones need a stream of "
              "events: use `inferwatch replay`)", file=sys.stderr)
        return 2
    detectors = build_detectors(names, {n: o for n, o in settings.detect.options.items() if n in names})
    if args.file != STDIN and is_sqlite_file(args.file):
        print(f"inferwatch scan: {_sqlite_hint([args.file])}", file=sys.stderr)
        return 2
    try:
        source = open_source(args.file)
    except OSError as exc:
        print(f"inferwatch scan: cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    results: list[ScanResult] = []
    scanned = errors = 0
    unread = UnreadKeys()
    number = 0
    with source:
        try:
            for number, line in enumerate(source.stream, start=1):
                if not line.strip():
                    continue
                result = scan_line(line, number, detectors)
                scanned, errors = scanned + 1, errors + (result.error is not None)
                unread.add(result.unread_keys)
                if args.json:
                    render.json_line(result.as_dict())
                else:
                    results.append(result)
        except UNREADABLE as exc:
            if source.compression is None:
                raise
            print(f"inferwatch scan: {args.file}: the {source.compression} data ends early or is corrupt "
                  f"after line {number} ({type(exc).__name__}: {exc}); the lines before it were scanned",
                  file=sys.stderr)
    if not args.json:
        render.scan_table(results)
    _note_unread_keys("scan", unread)
    if scanned and errors == scanned:
        print("inferwatch scan: no line could be scanned: each line must be a JSON object with "
              '"text" (and optionally "output") as strings, or an inferwatch.event/1 event',
              file=sys.stderr)
        return 2
    return 0
