"""The detector service: consume, detect, store, and only then commit (at-least-once).

Records from several partitions are put back in event-time order (:mod:`.merge`) before the
detectors see them, so windows hold the same events however many processes share the topic.

A malformed record goes to the dead-letter sink with its reason and is counted; it never stops
the service. An event whose ``input`` or ``output`` carries a key the event model does not define
(``input.prompt`` for ``input.text``) is processed as it is, and the first event with each such key
is logged as a warning naming the key, with the field probably meant.

With a checkpoint store (``checkpoint_interval_s`` > 0), what the detectors hold (per-caller
state and baselines, open and carried windows) is saved with the offsets it covers at most every
``checkpoint_interval_s`` and when the service stops, and offsets are committed only then, just
after the save: a restarted service (SIGTERM or SIGKILL) restores it and reads on from those
offsets, so its detectors carry on as if it had never stopped. A checkpoint is kept per consumer
group, topic and set of partitions, and restored when a member is given exactly that set.

When the store refuses a write, the same findings are retried with backoff and no
offset is committed past them, so a crash at any point loses no incident, and the fingerprints
make a redelivered event an update rather than a second incident.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, TypeVar

from inferwatch.collectors.bus import BusRecord, BusUnavailable, DeadLetterSink, EventConsumer
from inferwatch.collectors.event import InferenceEvent, MalformedEvent, decode_event, salvage_agent
from inferwatch.collectors.unread_keys import UnreadKeys, unread_keys
from inferwatch.detectors import checkpoint
from inferwatch.detectors.merge import PartitionMerger
from inferwatch.detectors.pipeline import Batch, Pipeline
from inferwatch.detectors.store import CheckpointStore, StoreUnavailable

if TYPE_CHECKING:
    from inferwatch.detectors.drift.summaries import SummaryCollector

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_CHECKPOINT_BYTES = 64 * 1024 * 1024
"""A checkpoint larger than this is not saved (Elasticsearch refuses requests over 100 MB by
default): offsets are committed without it, and the next try comes ten intervals later."""
JOIN_WAIT_S = 120.0  # longest wait for a first partition assignment that is not counted as idle


@dataclass
class ServiceStats:
    """What the service has done since it started."""

    records: int = 0
    malformed: int = 0
    incidents_written: int = 0
    commits: int = 0
    checkpoints: int = 0
    restored_from: str | None = None
    """The checkpoint key the detectors' state was restored from, if any."""
    skipped_restored: int = 0
    """Records read again after a restart that the restored state already held (skipped)."""
    retries: Counter[str] = field(default_factory=Counter)
    unread_keys: UnreadKeys = field(default_factory=UnreadKeys)
    """Events whose input or output carried keys no built-in detector reads, and those keys."""


class DetectorService:
    """Drives a :class:`Pipeline` from a bus consumer."""

    def __init__(
        self,
        consumer: EventConsumer,
        dead_letters: DeadLetterSink,
        pipeline: Pipeline,
        *,
        batch_size: int = 500,
        idle_close_s: float = 5.0,
        wall_clock: Callable[[], float] = time.time,
        drift: SummaryCollector | None = None,
        checkpoints: CheckpointStore | None = None,
        checkpoint_interval_s: float = 0.0,
        checkpoint_key: str = "detectors",
    ) -> None:
        self.consumer = consumer
        self.drift = drift
        """Scale-out drift: merges the processes' window summaries and judges them (drift/summaries.py)."""
        self.dead_letters = dead_letters
        self.pipeline = pipeline
        self.batch_size = batch_size
        self.idle_close_s = idle_close_s
        self.wall_clock = wall_clock
        self.stats = ServiceStats()
        self.merger: PartitionMerger[InferenceEvent] = PartitionMerger(quiet_s=idle_close_s)
        self._stop = threading.Event()
        self._last_record_at = wall_clock()
        self.alive_at = wall_clock()
        """When the service last showed it was not stuck: a turn of its loop, or a retry."""
        self.last_read_at: float | None = None
        """When records last came from the bus (wall clock), if ever."""
        self.bus_receiving: bool | None = None
        """Whether the bus answered this member's fetches when last asked (records read, or a quiet
        spell looked at); ``None`` until known or for a bus that cannot say."""
        self.retrying: str | None = None
        """What it is retrying while the store or bus is out (``store``, ``commit``, ...), else ``None``."""
        self._idle_resolved_at = float("-inf")
        self._told_not_receiving = False
        self.checkpoints = checkpoints if checkpoint_interval_s > 0 else None
        self.checkpoint_interval_s = checkpoint_interval_s
        self.checkpoint_key = checkpoint_key
        self._checkpoint_at = wall_clock()
        self._restore_tried = False
        self._covered: dict[int, int] = {}  # offsets the restored state already holds, per partition
        self._dirty = False  # events detected since the last checkpoint
        self._owned: frozenset[int] | None = None  # the partitions last logged as owned

    @property
    def owned_partitions(self) -> frozenset[int] | None:
        """The partitions of the event topic this member reads (``None``: not known yet)."""
        return self._owned

    def stop(self) -> None:
        """Ask :meth:`run` to return after the batch in hand is stored and committed."""
        self._stop.set()

    def run(self, *, max_idle_s: float | None = None, poll_timeout: float = 0.5) -> ServiceStats:
        """Process until :meth:`stop` (or ``max_idle_s`` without records, for batch runs).

        Time spent waiting to be given partitions (a consumer group still handing over after a
        crashed member) is not idle time, for up to ``JOIN_WAIT_S``: a restarted batch run must
        not exit before it could read its backlog.
        """
        started = self.wall_clock()
        while not self._stop.is_set():
            handled = self.run_once(poll_timeout)
            now = self.wall_clock()
            if not handled and self._waiting_for_partitions() and now - started < JOIN_WAIT_S:
                self._last_record_at = now
            idle = now - self._last_record_at
            if not handled and max_idle_s is not None and idle >= max_idle_s and (
                    not self.drift_waiting or idle >= max_idle_s + self._drift_grace_s()):
                # End of input. The idle close in run_once read the clock a moment earlier and
                # may have found the partitions not yet quiet: what is still held is detected,
                # stored and committed now, not left read but undetected.
                self._close_idle_window(now, final=True)
                if self.drift is not None:
                    self._judge_drift(final=True)
                break
        self._checkpoint_on_exit()
        return self.stats

    @property
    def drift_waiting(self) -> bool:
        """Scale-out drift summaries read or on their topic and not judged yet: a batch run must
        not end with them (read and waiting for markers, or still on the summaries topic for a
        member that is joining its group)."""
        return self.drift is not None and bool(getattr(self.drift, "waiting", 0))

    def _drift_grace_s(self) -> float:
        # How long past the idle limit a batch run waits for drift summaries at most: the
        # collector judges an incomplete window after its max_wait_s anyway.
        return float(getattr(self.drift, "max_wait_s", 120.0)) + 30.0

    def _waiting_for_partitions(self) -> bool:
        assignment = getattr(self.consumer, "assignment", None)
        return assignment is not None and not assignment()

    def close(self) -> None:
        """Leave the consumer groups (so another member takes over at once; a named member,
        ``detect.instance_id``, stays in them for its return) and close the store."""
        self.consumer.close()
        # The drift summaries' consumer too: left in its group, the next process to join it waited
        # for the session to time out before it read a summary (the distributed demo's second run
        # ended before its drift was judged).
        close_summaries = getattr(getattr(self.drift, "consumer", None), "close", None)
        if close_summaries is not None:
            close_summaries()
        close_store = getattr(self.pipeline.manager.store, "close", None)
        if close_store is not None:
            close_store()

    def run_once(self, poll_timeout: float = 0.5) -> int:
        """One poll → order → detect → store → commit cycle; return how many records it read."""
        polled = self.consumer.poll(self.batch_size, poll_timeout)
        now = self.alive_at = self.wall_clock()
        records = self._restored(polled, now) if self.checkpoints is not None else polled
        if polled:
            self._last_record_at = self.last_read_at = now  # records skipped after a restore are activity too
            self.bus_receiving = True if hasattr(self.consumer, "receiving") else None
        if records:
            self._hold(records, now)
            self.stats.records += len(records)
        self._sync_assignment(now)
        caught_up = getattr(self.consumer, "caught_up", None)
        released = self.merger.release(now, caught_up() if caught_up is not None else ())
        if records or released:
            self._detect_store_commit(released)
        if not polled:
            receiving = getattr(self.consumer, "receiving", None)
            if receiving is not None:  # a member cut off from its bus reads nothing (/metrics, silences)
                self.bus_receiving = receiving()
            self._maybe_close_idle_window()
        if self.drift is not None:
            self._judge_drift()
        return len(polled)

    def _judge_drift(self, *, final: bool = False) -> None:
        # Judge what has arrived; with ``final`` (the end of a batch run) also what the models
        # this member owns carry over (windows short of min_events): nothing else would judge them.
        drift = self.drift
        assert drift is not None
        batch = Batch([], [])
        batch.findings.extend(self._retry("drift_poll", drift.poll))
        finish = getattr(drift, "finish", None) if final else None  # test doubles may leave it out
        if finish is not None:
            batch.findings.extend(finish())
        if batch.findings:
            self._retry("store", lambda: self._store(batch))
        self._retry("drift_commit", drift.commit)

    def _hold(self, records: Sequence[BusRecord], now: float) -> None:
        for record in records:
            try:
                event = decode_event(record.value)
            except MalformedEvent as exc:
                self.stats.malformed += 1
                log.warning(
                    "malformed event dead-lettered topic=%s partition=%d offset=%d reason=%r",
                    record.topic, record.partition, record.offset, exc.reason,
                )
                self._dead_letter(record, exc.reason)
                self.merger.skip(record.partition, record.offset, now)
                salvaged = salvage_agent(record.value)
                if salvaged is not None:
                    self.pipeline.refused(*salvaged, exc.reason)
            else:
                if event.model_extra or event.input.model_extra or event.output.model_extra:
                    self._note_unread(event, record)
                self.merger.add(record.partition, record.offset, event.ts, event, now)

    def _note_unread(self, event: InferenceEvent, record: BusRecord) -> None:
        """Once per key (not per event): a prompt under ``input.prompt`` is kept but never scanned."""
        for key in self.stats.unread_keys.add(unread_keys(event), event):
            meant = self.stats.unread_keys.suggested(key)
            log.warning(
                "event key read by no built-in detector: key=%s did_you_mean=%s first_event=%s topic=%s "
                "partition=%d offset=%d; the event is processed and kept as it came (docs/events.md "
                "lists the fields detectors read); logged once per key",
                key, meant or "-", event.id, record.topic, record.partition, record.offset,
            )

    def _detect_store_commit(self, events: Sequence[InferenceEvent]) -> None:
        batch = self.pipeline.detect(events)
        self._retry("store", lambda: self._store(batch))
        if self.checkpoints is not None:
            self._dirty = True
            self._maybe_checkpoint()
            return
        positions = self.merger.positions()
        if positions:
            self._retry("commit", lambda: self.consumer.commit(positions))
            self.stats.commits += 1

    # -- checkpoints ---------------------------------------------------------------------------

    def _partitions_key(self) -> str | None:
        assignment = getattr(self.consumer, "assignment", None)
        if assignment is None:
            return f"{self.checkpoint_key}:all"
        owned = assignment()
        return f"{self.checkpoint_key}:{','.join(map(str, sorted(owned)))}" if owned else None

    def _restored(self, records: Sequence[BusRecord], now: float) -> Sequence[BusRecord]:
        """Restore the checkpoint of this member's partitions once they are known (before any
        event is detected); then drop records the restored state already holds."""
        if not self._restore_tried:
            key = self._partitions_key()
            if key is None:
                return records  # no partitions yet: nothing can have been read
            self._restore_tried = True
            self._restore(key)
        if not self._covered:
            return records
        kept = []
        for record in records:
            if record.offset < self._covered.get(record.partition, -1):
                self.stats.skipped_restored += 1
                self.merger.skip(record.partition, record.offset, now)
            else:
                kept.append(record)
        return kept

    def _restore(self, key: str) -> None:
        assert self.checkpoints is not None
        store = self.checkpoints
        data = self._retry("checkpoint_load", lambda: store.load_checkpoint(key))
        if data is None:
            log.info("no checkpoint for %s: the detectors start afresh", key)
            return
        if self.pipeline.has_events:
            log.warning("checkpoint %s not restored: this member had read events before its partitions "
                        "were settled", key)
            return
        try:
            saved = checkpoint.load(data)
            covered = {int(p): int(o) for p, o in saved["positions"].items()}
            stale = self._stale(covered)
            if stale:
                log.warning("checkpoint %s not restored: the group has committed past it (%s), so it "
                            "holds older state than what was read since; the detectors start afresh",
                            key, stale)
                return
            notes = self.pipeline.restore(saved["pipeline"])
        except Exception as exc:  # whatever is wrong with it, the service starts afresh, not never
            log.warning("checkpoint %s could not be read (the detectors start afresh): %s: %s", key,
                        type(exc).__name__, exc)
            return
        self._covered = covered
        self.stats.restored_from = key
        log.info("restored the detectors' state from checkpoint %s (saved at offsets %s)%s", key,
                 self._covered, "".join(f"; {note}" for note in notes))

    def _maybe_checkpoint(self) -> None:
        if self._dirty and self.wall_clock() - self._checkpoint_at >= self.checkpoint_interval_s:
            self._checkpoint_and_commit()

    def _stale(self, covered: dict[int, int]) -> str:
        """The partitions whose committed offset is past the checkpoint's (``p: committed > saved``)."""
        committed_offsets = getattr(self.consumer, "committed_offsets", None)
        if committed_offsets is not None:
            committed: dict[int, int] = self._retry("commit_read", committed_offsets)
        else:
            one = getattr(self.consumer, "committed", None)  # the embedded bus: one partition
            committed = {0: int(one())} if one is not None else {}
        return ", ".join(f"{p}: {committed[p]} > {o}" for p, o in sorted(covered.items())
                         if committed.get(p, -1) > o)

    def _checkpoint_and_commit(self) -> None:
        """Save what the detectors hold with the offsets it covers, then commit those offsets."""
        assert self.checkpoints is not None
        store = self.checkpoints
        self._checkpoint_at = self.wall_clock()
        key = self._partitions_key()
        positions = self.merger.positions()
        owned = self._owned
        # A restored partition that has delivered nothing since keeps the checkpoint's position;
        # one no longer owned is its new owner's to commit (a stale one would rewind it).
        for partition, offset in self._covered.items():
            if partition not in positions and (owned is None or partition in owned):
                positions[partition] = offset
        if key is None or not positions:
            return
        try:
            state = self.pipeline.checkpoint(max_bytes=MAX_CHECKPOINT_BYTES)
        except checkpoint.CheckpointTooLarge:
            log.warning("the detectors' state is over the %.0f MB a checkpoint may take: not saved (a "
                        "restart now starts afresh; next try in ten intervals); lower the detectors' "
                        "max_principals, or set detect.checkpoint_interval_s: 0 to stop trying",
                        MAX_CHECKPOINT_BYTES / 2**20)
            self._checkpoint_at += 9 * self.checkpoint_interval_s
        else:
            data = checkpoint.dump({"positions": positions, "pipeline": state})
            self._retry("checkpoint", lambda: store.save_checkpoint(key, data))
            self.stats.checkpoints += 1
        self._retry("commit", lambda: self.consumer.commit(positions))
        self.stats.commits += 1
        self._dirty = False

    def _checkpoint_on_exit(self) -> None:
        if self.checkpoints is None or not self._dirty:
            return
        try:
            self._checkpoint_and_commit()
        except (StoreUnavailable, BusUnavailable) as exc:  # stopping while the store is down
            log.warning("no checkpoint at exit (the last one stands, and its offsets): %s", exc)

    def _sync_assignment(self, now: float) -> None:
        # A partition just assigned must be waited for (its oldest events may be older than
        # what the others delivered); after a rebalance, records held for partitions now owned
        # by another process are that process's to detect: they were not committed here.
        assignment = getattr(self.consumer, "assignment", None)
        if assignment is not None:
            owned = frozenset(assignment())
            if owned != self._owned:
                self._covered = {p: o for p, o in self._covered.items() if p in owned}
                topic_partitions = getattr(self.consumer, "partitions", None)
                if topic_partitions is not None:  # gaps in agent.seq need every partition's events
                    every = topic_partitions()
                    complete = bool(every) and owned >= every
                    told = self.pipeline.partitions_changed(sorted(owned), complete)
                    if told and owned and not complete:
                        log.info("event=seq_gaps_not_judged detectors=%s partitions=%s of=%s: this member "
                                 "reads part of the event topic, so gaps in agent.seq (events lost after "
                                 "the agent) are not judged here; the agents' own counts and silences are",
                                 ",".join(told), sorted(owned), sorted(every) or "unknown")
                if owned or self._owned is not None:  # not the wait for a first assignment
                    log.info("partitions of %s now owned by this member: %s (before: %s)",
                             self.checkpoint_key, sorted(owned) or "none",
                             sorted(self._owned) if self._owned else "none")
                self._owned = owned
            self.merger.assign(owned, now)

    def _sees_quiet(self) -> bool:
        """Whether no event coming means the traffic is quiet: this member owns partitions, and
        its bus answers (a detector cut off from Kafka sees no events either, but no silence)."""
        assignment = getattr(self.consumer, "assignment", None)
        if assignment is not None and not assignment():
            return False
        if self.bus_receiving is False:  # as asked at this loop's empty poll (run_once)
            if not self._told_not_receiving:
                self._told_not_receiving = True
                log.warning("event=bus_not_answering no record for a while and no answered fetch: "
                            "silent services are not judged until the bus answers again")
            return False
        self._told_not_receiving = False
        return True

    def _dead_letter(self, record: BusRecord, reason: str) -> None:
        self._retry("dead_letter", lambda: self.dead_letters.dead_letter(record, reason))

    def _store(self, batch: Batch) -> None:
        self.stats.incidents_written += len(self.pipeline.store(batch))

    def _retry(self, what: str, action: Callable[[], T]) -> T:
        """Run ``action`` until it succeeds and return what it returns: an outage of the store or
        the bus pauses the service (nothing is committed past it) instead of stopping it."""
        delay = 0.5
        failed_at: float | None = None
        while True:
            try:
                result = action()
            except (StoreUnavailable, BusUnavailable) as exc:
                if failed_at is None:
                    failed_at = self.wall_clock()
                self.stats.retries[what] += 1
                self.retrying, self.alive_at = what, self.wall_clock()
                log.warning("%s failed, retrying in %.1fs without committing: %s", what, delay, exc)
                if self._stop.wait(delay):
                    raise  # stopping: leave the batch uncommitted; it is redelivered on restart
                delay = min(delay * 2, 30.0)
                continue
            if failed_at is not None:
                self.retrying = None
                log.info("%s succeeded again after %.0fs of failures: the service carries on", what,
                            self.wall_clock() - failed_at)
            return result

    def _maybe_close_idle_window(self) -> None:
        # Live traffic that stops must still have its last window judged; event time cannot
        # advance without events, so a quiet spell on the wall clock releases what is held and
        # closes the open window.
        now = self.wall_clock()
        if now - self._last_record_at >= self.idle_close_s:
            self._close_idle_window(now)

    def _close_idle_window(self, now: float, *, final: bool = False) -> None:
        held = self.merger.flush()
        if held:
            self._detect_store_commit(held)
        open_end = self.pipeline.clock.open_end
        if open_end is not None and now >= open_end:
            batch = self.pipeline.close_open_window(final=final)
            self._retry("store", lambda: self._store(batch))
            self._dirty = self.checkpoints is not None
        self._resolve_while_idle(now)
        if self.checkpoints is not None:
            self._maybe_checkpoint()  # a quiet stream's last offsets are committed too

    def _resolve_while_idle(self, now: float) -> None:
        # No events, no windows closing: incidents must still resolve after resolve_after_s of
        # quiet. Event time is taken to run on with the wall clock from the newest event seen
        # (at most once per window length).
        if not self.pipeline.has_events or now - self._idle_resolved_at < self.pipeline.clock.size_s:
            return
        self._idle_resolved_at = now
        event_now = self.pipeline.event_time() + timedelta(seconds=now - self._last_record_at)
        absent = self.pipeline.idle(event_now) if self._sees_quiet() else Batch([])  # stored below, retried
        def resolve() -> None:
            if absent.findings:
                self._store(absent)
                absent.findings = []
            self.pipeline.resolve_quiet(event_now)

        self._retry("store", resolve)
