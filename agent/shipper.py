"""The bounded queue between the request path and the event bus, and the spool behind it.

:class:`EventShipper` behaves like OpenTelemetry's batch processor: :meth:`EventShipper.offer`
appends to an in-memory queue and returns at once, never blocking and never raising; a daemon
thread drains the queue in batches, builds and encodes the events (so extraction, redaction and
JSON encoding never cost the request path) and hands each batch to the
:class:`~inferwatch.collectors.bus.EventProducer`. A queued item is an event, or a function the
thread calls to build the events of one call (see :meth:`inferwatch.agent.Agent.record`).

When the queue is full the new item is dropped and counted (``dropped_queue_full``). When the
producer raises (:class:`~inferwatch.collectors.bus.BusUnavailable` or anything else) the thread
backs off (exponentially, up to ``max_backoff_s``) and then:

* **with a spool** (:class:`~inferwatch.agent.spool.Spool`, ``agent.spool_dir``): the refused
  batch and everything queued after it go to disk (``spooled``). While anything is spooled, new
  events are appended behind it, and once the bus answers the spool is replayed oldest first
  (``replayed``) before newer events are sent directly again — so ``agent.seq`` arrives
  gap-free and in order. When the spool is full, new events are dropped and counted
  (``dropped_spool_full``; a disk error: ``dropped_spool_error``). At start the thread takes over
  what earlier processes left in the spool (``recovered``) and sends it first.
* **without a spool**: the batch is dropped and counted (``dropped_bus_error``); the queue keeps
  filling while the bus is down and drains when it is back.

A producer that buffers and retries by itself (Kafka: until ``delivery_timeout_ms``, two minutes)
would make a spool useless for any shorter outage, the thread waiting in its ``flush`` while the
memory queue fills. With a spool, ``flush`` is therefore given ``flush_timeout_s``: when it runs
out and the producer still holds the batch (its ``stats().pending``), the batch is *held*: not
sent again, since the producer may yet deliver it, but written to the spool at once (unless it
came from there), so it is the spool's head and everything queued after it goes behind it. Each
retry only asks the producer again: delivered, it counts as sent, its records are taken off the
spool without being sent again and the spool is replayed; given up by the producer, it counts as
spooled and is replayed first, in its place. Until then it counts in ``queue_depth`` (with the
producer), not in ``spool_depth``. At shutdown it is already on disk: it is not handed to the
producer again (a producer that delivers it after all makes it a repeat, never a loss).

A failure of the thread's own code (a bug, or a disk error nothing else caught) does not end
it: the round is logged once (``event=shipper_cycle_failed``, with the traceback), the batch in
hand is counted as ``dropped_shipper_error``, and the thread pauses (0.1 s, doubling up to
``max_backoff_s``) and carries on. Should the thread be gone all the same, :meth:`EventShipper.offer`
refuses and counts (``dropped_shipper_error``) rather than queue what nobody would send.

Events lost either way show up downstream as gaps in ``agent.seq``, and every event sent carries
the number lost so far (``agent.dropped``: set with its ``seq`` by the agent, else stamped here
as it is encoded), so the ``integrity`` detector can tell the gaps the agent counted from those
it did not. Counters add up:
``captured + recovered = sent + dropped_* + queue_depth + spool_depth`` (plus the batch in
flight).

After ``os.fork()`` (gunicorn, multiprocessing) the child starts its own thread with an empty
queue (and a spool folder of its own): the parent's pending events stay the parent's to send.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from inferwatch.agent.forking import after_fork_in_child
from inferwatch.agent.spool import AppendResult, Spool
from inferwatch.collectors.bus import EventProducer
from inferwatch.collectors.event import InferenceEvent, encode_event

_log = logging.getLogger("inferwatch.agent")
_REASON_CHARS = 300  # of an error message in the bus_unavailable log line

Record = tuple[bytes, str | None]
EventBuilder = Callable[[], Sequence[InferenceEvent]]
QueueItem = InferenceEvent | EventBuilder
SPOOL_FLUSH_TIMEOUT_S: float = 5.0
"""With a spool, the longest the shipper waits for the producer to deliver one batch."""


@dataclass(frozen=True, slots=True)
class ShipperStats:
    """Counters since start (see the module docstring for how they add up)."""

    captured: int
    sent: int
    dropped_queue_full: int
    dropped_bus_error: int
    dropped_encode_error: int
    dropped_after_shutdown: int
    queue_depth: int
    spooled: int = 0
    replayed: int = 0
    recovered: int = 0
    dropped_spool_full: int = 0
    dropped_spool_error: int = 0
    dropped_spool_corrupt: int = 0
    dropped_shipper_error: int = 0
    spool_depth: int = 0
    spool_bytes: int = 0
    bus_up: bool = True

    @property
    def dropped(self) -> int:
        """Every event lost, whatever the reason."""
        return (
            self.dropped_queue_full
            + self.dropped_bus_error
            + self.dropped_encode_error
            + self.dropped_after_shutdown
            + self.dropped_spool_full
            + self.dropped_spool_error
            + self.dropped_spool_corrupt
            + self.dropped_shipper_error
        )


class EventShipper:
    """Ships events to a producer from a background thread, through a bounded queue.

    >>> sent = []
    >>> class ListProducer:
    ...     def send(self, value, key=None): sent.append(value)
    ...     def flush(self, timeout=None): pass
    ...     def close(self): pass
    >>> shipper = EventShipper(ListProducer(), queue_size=10, batch_size=5, flush_interval_s=0.05)
    >>> from datetime import UTC, datetime
    >>> shipper.offer(InferenceEvent(id="e1", time=datetime.now(UTC)))
    True
    >>> shipper.flush(5.0), len(sent)
    (True, 1)
    >>> shipper.shutdown()
    """

    def __init__(
        self,
        producer: EventProducer,
        *,
        queue_size: int = 10_000,
        batch_size: int = 256,
        flush_interval_s: float = 0.2,
        max_backoff_s: float = 30.0,
        spool: Spool | None = None,
        on_tick: Callable[[], None] | None = None,
        flush_timeout_s: float = SPOOL_FLUSH_TIMEOUT_S,
    ) -> None:
        self._producer = producer
        self._queue_size = queue_size
        self._batch_size = batch_size
        self._interval = flush_interval_s
        self._max_backoff = max_backoff_s
        self._spool = spool
        self._on_tick = on_tick
        self._flush_timeout = flush_timeout_s
        self._counts = collections.Counter[str]()
        self._stopping = False
        self._init_thread_state()
        after_fork_in_child(self._after_fork)

    def _init_thread_state(self) -> None:
        self._queue: collections.deque[QueueItem] = collections.deque()
        self._lock = threading.Lock()
        self._drained = threading.Condition(self._lock)
        self._wake = threading.Event()  # a full batch is waiting
        self._interrupt = threading.Event()  # flush or shutdown: retry the bus now
        self._stopped = threading.Event()
        self._starting = self._spool is not None  # until the spool is open and its backlog known
        self._in_flight = 0
        self._spool_depth = 0
        self._spool_bytes = 0
        self._backoff = 0.0
        self._retry_at = 0.0
        self._spool_full_noted = False
        self._held: _Held | None = None  # a batch the producer still holds after a flush timed out
        self._flush_failed = False
        self._failures = 0  # cycles in a row that failed unexpectedly
        self._thread = threading.Thread(target=self._run, name="inferwatch-shipper", daemon=True)
        self._thread.start()

    def _after_fork(self) -> None:
        if self._stopping:
            return
        self._counts = collections.Counter[str]()  # the child counts its own events from zero
        if self._spool is not None:
            self._spool.forget()
        self._init_thread_state()

    def offer(self, item: QueueItem) -> bool:
        """Queue an event (or a function building a call's events); ``False`` (counted) if dropped."""
        with self._lock:
            self._counts["captured"] += 1
            if self._stopping:
                self._counts["dropped_after_shutdown"] += 1
                return False
            if self._stopped.is_set():  # the thread is gone (it never should be): nobody would send it
                self._counts["dropped_shipper_error"] += 1
                return False
            if len(self._queue) >= self._queue_size:
                self._counts["dropped_queue_full"] += 1
                return False
            self._queue.append(item)
            full_batch = len(self._queue) % self._batch_size == 0
        if full_batch:
            self._wake.set()
        return True

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything queued (and spooled) so far; ``False`` if not done within ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._drained:
            while self._queue or self._in_flight or self._starting or self._spool_depth or self._held:
                if self._stopped.is_set():
                    return False
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._interrupt.set()
                self._wake.set()
                self._drained.wait(None if remaining is None else min(remaining, 0.1))
        return True

    def shutdown(self, timeout: float | None = 5.0) -> None:
        """Stop accepting events, send (or spool) what is queued, close the producer, within ``timeout``.

        If the producer hangs, this returns after ``timeout`` anyway; the daemon thread is left
        behind and does not keep the process alive.
        """
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
        self._interrupt.set()
        self._wake.set()
        self._thread.join(timeout)

    def dropped_total(self) -> int:
        """Every event lost so far, whatever the reason (what ``agent.dropped`` carries)."""
        with self._lock:
            return sum(n for name, n in self._counts.items() if name.startswith("dropped_"))

    def stats(self) -> ShipperStats:
        """A snapshot of the counters."""
        with self._lock:
            counts = dict(self._counts)
            held = self._held
            depth = len(self._queue) + (len(held.records) if held is not None and not held.from_spool else 0)
            spool_depth, spool_bytes = self._spool_depth, self._spool_bytes
            bus_up = not self._backoff
        names = (
            "spooled",
            "replayed",
            "recovered",
            "dropped_spool_full",
            "dropped_spool_error",
            "dropped_spool_corrupt",
            "dropped_shipper_error",
        )
        return ShipperStats(
            captured=counts.get("captured", 0),
            sent=counts.get("sent", 0),
            dropped_queue_full=counts.get("dropped_queue_full", 0),
            dropped_bus_error=counts.get("dropped_bus_error", 0),
            dropped_encode_error=counts.get("dropped_encode_error", 0),
            dropped_after_shutdown=counts.get("dropped_after_shutdown", 0),
            queue_depth=depth,
            spool_depth=spool_depth,
            spool_bytes=spool_bytes,
            bus_up=bus_up,
            **{name: counts.get(name, 0) for name in names},
        )

    # -- the thread ------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._open_spool()
            while not self._stopping:
                self._wake.wait(self._interval)
                self._wake.clear()
                retry_now = self._interrupt.is_set()
                self._interrupt.clear()
                if self._safe_cycle(retry_now=retry_now):
                    self._tick()
            self._safe_cycle(retry_now=True, final=True)
            if self._held is not None:  # held in the final cycle: already on disk for the next process
                self._release_held()
            self._tick()
            self._close()
        finally:
            self._stopped.set()
            with self._drained:
                self._starting = False
                self._drained.notify_all()

    def _safe_cycle(self, *, retry_now: bool, final: bool = False) -> bool:
        """Run one cycle; a failure of our own code is logged and paused on, never the thread's end.

        The batch in hand when it failed is counted as ``dropped_shipper_error``; the queue and
        the spool are left as they are, for the next cycle.
        """
        try:
            self._cycle(retry_now=retry_now, final=final)
        except Exception as exc:
            with self._drained:
                lost, self._in_flight = self._in_flight, 0
                self._counts["dropped_shipper_error"] += lost
                self._drained.notify_all()
            self._failures += 1
            pause = min(self._max_backoff, 0.1 * 2 ** min(self._failures - 1, 10))
            if self._failures == 1:  # once per run of failures, with the traceback
                _log.error(
                    "event=shipper_cycle_failed error=%s lost=%d pause_s=%.1f",
                    type(exc).__name__, lost, pause, exc_info=True,
                )
            else:
                _log.debug("event=shipper_cycle_failed error=%s lost=%d", type(exc).__name__, lost)
            # Not cut short by flush(), which would make a persistent failure a busy loop; by shutdown().
            resume = time.monotonic() + pause
            while not final and not self._stopping and time.monotonic() < resume:
                time.sleep(min(0.05, pause))
            return False
        self._failures = 0
        return True

    def _open_spool(self) -> None:
        spool = self._spool
        if spool is None:
            return
        try:
            spool.open()
        except Exception as exc:  # an unusable spool folder must not stop the events
            _log.warning(
                "event=spool_unavailable dir=%s error=%s detail=%s spooling=false",
                spool.directory, type(exc).__name__, exc,
            )
            self._spool = None
        else:
            if spool.recovered:
                self._count("recovered", spool.recovered)
        self._note_spool()
        with self._drained:
            self._starting = False
            self._drained.notify_all()

    def _cycle(self, *, retry_now: bool, final: bool = False) -> None:
        """One round: replay the spool if the bus may be back, then ship or spill the queue."""
        bus_ready = not self._backoff or retry_now or time.monotonic() >= self._retry_at
        if self._held is not None:
            if final and _buffered(self._producer) > 0:
                # Stopping and the producer still has it: it is on disk already, and handing it
                # over again would only wait another flush_timeout_s (and send it twice).
                self._release_held()
                self._spill_queue()
                return
            if not self._settle_held(bus_ready):
                self._spill_queue()  # the producer still has the held batch: what follows waits on disk
                return
        spool = self._spool
        if spool is not None and spool.pending:
            if final:
                self._spill_queue()  # behind the backlog it goes anyway; on disk it survives exit
            if bus_ready:
                self._replay(spool)
            if spool.pending:
                self._spill_queue()
                return
        if not bus_ready:
            if spool is not None:
                self._spill_queue()
            return  # without a spool the queue holds events until the bus is back
        self._drain(final=final)

    def _drain(self, *, final: bool) -> None:
        """Send batches until the queue is empty; after a failure, spool or drop the rest."""
        while True:
            records = self._take_batch()
            if records is None:
                return
            ok = not records or self._send(records)
            if ok:
                self._count("sent", len(records))
            elif self._hold(records, from_spool=False):
                pass  # the producer has them still (and the spool's head has them); settled later
            elif self._spool is not None:
                self._to_spool(records)
            else:
                self._count("dropped_bus_error", len(records))
            self._done_in_flight()
            if not ok and self._spool is not None:
                self._spill_queue()
                return
            if not ok and not final:
                return

    def _replay(self, spool: Spool) -> None:
        """Send spooled batches oldest first until the spool is empty or the bus fails again."""
        while spool.pending:
            records = spool.peek(self._batch_size)
            if not records:
                break
            if not self._send(records):
                self._hold(records, from_spool=True)  # left in the spool, uncommitted, either way
                break
            spool.commit()
            self._count("sent", len(records))
            self._count("replayed", len(records))
            self._note_spool()
            with self._lock:
                crowded = len(self._queue) >= max(self._batch_size, self._queue_size // 2)
            if crowded:  # a long replay must not let the memory queue overflow
                self._spill_queue()
        self._note_spool()
        if not spool.pending:
            _log.info("event=spool_replayed sent=%d", self._counts["replayed"])

    def _spill_queue(self) -> None:
        while True:
            records = self._take_batch()
            if records is None:
                return
            if records:
                self._to_spool(records)
            self._done_in_flight()

    def _to_spool(self, records: list[Record]) -> None:
        spool = self._spool
        assert spool is not None
        self._note_spool(spooled=spool.append(records))

    def _log_spool_full(self, result: AppendResult) -> None:
        spool = self._spool
        assert spool is not None
        if result.full:
            if not self._spool_full_noted:
                _log.warning("event=spool_full max_bytes=%d dropping=true", spool.max_bytes)
                self._spool_full_noted = True
        elif result.written:
            self._spool_full_noted = False

    def _take_batch(self) -> list[Record] | None:
        """Pop up to a batch of queued items and encode them; ``None`` when the queue is empty."""
        with self._lock:
            count = min(self._batch_size, len(self._queue))
            items = [self._queue.popleft() for _ in range(count)]
            self._in_flight = count
        if not items:
            return None
        records: list[Record] = []
        for item in items:
            if not isinstance(item, InferenceEvent):
                # Building a call's events is pure Python: let a request thread that waits for
                # the GIL have it now, not after the interpreter's switch interval (5 ms).
                time.sleep(0)
            events = self._events(item)
            if any(event.agent is not None and event.agent.dropped is None for event in events):
                dropped = self.dropped_total()  # read once built: drops numbered before them included
            for event in events:
                if event.agent is not None and event.agent.dropped is None:
                    event.agent.dropped = dropped  # what this agent had lost so far (see AgentInfo)
                try:
                    records.append((encode_event(event), event.principal))
                except Exception:  # one bad event must not sink its batch
                    self._count("dropped_encode_error", 1)
        return records

    def _events(self, item: QueueItem) -> Sequence[InferenceEvent]:
        if isinstance(item, InferenceEvent):
            return (item,)
        try:
            events = item()
        except Exception:  # the builders guard themselves; this is the last line
            self._count("dropped_encode_error", 1)
            return ()
        if len(events) != 1:  # one queued call, several rows (or none)
            self._count("captured", len(events) - 1)
        return events

    def _done_in_flight(self) -> None:
        with self._drained:
            self._in_flight = 0
            self._drained.notify_all()

    def _send(self, records: Sequence[Record]) -> bool:
        self._flush_failed = False
        try:
            _send(self._producer, records)
        except Exception as exc:  # any producer failure: back off, keep the thread alive
            self._note_failure(exc)
            return False
        return self._confirm()

    def _confirm(self) -> bool:
        """Wait for the producer to deliver what it was given (with a spool: ``flush_timeout_s``)."""
        self._flush_failed = False
        try:
            self._producer.flush(self._flush_timeout if self._spool is not None else None)
        except Exception as exc:
            self._flush_failed = True
            self._note_failure(exc)
            return False
        if self._backoff:
            _log.info("event=bus_recovered")
            with self._lock:
                self._backoff = 0.0
        return True

    def _hold(self, records: list[Record], *, from_spool: bool) -> bool:
        """After a failed send: hold ``records`` if the producer still has them buffered.

        A batch from the queue is written to the spool now: the spool is empty when the queue is
        sent directly, so the batch becomes its head and whatever is spooled while it is held
        goes behind it, in ``agent.seq`` order. A batch from the spool is its head already.
        """
        spool = self._spool
        if spool is None or not self._flush_failed or _buffered(self._producer) <= 0:
            return False
        if from_spool:
            held = _Held(records, from_spool=True, written=AppendResult(written=len(records)))
        else:
            held = _Held(records, from_spool=False, written=spool.append(records))
        with self._lock:
            self._held = held
        self._note_spool()
        return True

    def _settle_held(self, bus_ready: bool) -> bool:
        """Ask the producer about the held batch; ``True`` once it is settled one way or the other."""
        held = self._held
        assert held is not None
        if not bus_ready and _buffered(self._producer) > 0:
            return False  # not yet time to ask, and the producer is still at it
        delivered = self._confirm()
        if not delivered and _buffered(self._producer) > 0:
            return False  # still trying: keep holding
        if not delivered:
            # The producer gave up on them: they wait at the spool's head, to be sent again first.
            # A producer that delivered part of the batch after all makes those a repeat (same
            # id and seq), never a loss.
            self._release_held()
            return True
        spool = self._spool
        assert spool is not None
        self._commit_head(spool, held.records[: held.written.written])  # delivered: off the spool, unsent
        sent = {"sent": len(held.records), "replayed": len(held.records) if held.from_spool else 0}
        self._note_spool(release=True, counts=sent)
        return True

    def _release_held(self) -> None:
        """Leave the held batch to the spool (where it is already): the producer gave up, or we stop."""
        held = self._held
        assert held is not None
        # From the spool: still there, uncommitted, counted as spooled when it was written.
        self._note_spool(release=True, spooled=None if held.from_spool else held.written)

    @staticmethod
    def _commit_head(spool: Spool, records: list[Record]) -> None:
        """Take ``records`` off the spool's head, checking that the head is them."""
        done = 0
        while done < len(records):
            head = spool.peek(len(records) - done)
            if not head or head != records[done : done + len(head)]:
                break  # damaged frames, or not the head: leave the rest to be sent (at worst twice)
            spool.commit()
            done += len(head)

    def _note_failure(self, exc: Exception) -> None:
        if not self._backoff:
            # The reason too (a missing topic, brokers out of reach): the bus's own message names
            # what to fix and holds no secret; cut short, and on one line.
            reason = " ".join(str(exc).split())[:_REASON_CHARS]
            _log.warning(
                "event=bus_unavailable error=%s spooling=%s reason=%s",
                type(exc).__name__, "true" if self._spool is not None else "false", reason or "-",
            )
        with self._lock:
            self._backoff = min(self._max_backoff, max(0.1, self._backoff * 2))
        self._retry_at = time.monotonic() + self._backoff

    def _note_spool(
        self,
        *,
        spooled: AppendResult | None = None,
        release: bool = False,
        counts: dict[str, int] | None = None,
    ) -> None:
        """Publish the spool's depth, with what changed alongside it (one step for :meth:`stats`)."""
        spool = self._spool
        changes = dict(counts or {})
        if spooled is not None:
            changes["spooled"] = spooled.written
            changes["dropped_spool_full"] = spooled.full
            changes["dropped_spool_error"] = spooled.failed
        with self._drained:
            if release:
                self._held = None
            for name, n in changes.items():
                if n:
                    self._counts[name] += n
            if spool is None:
                self._spool_depth = self._spool_bytes = 0
            else:
                held = self._held  # held from the queue: on disk, but counted with the producer
                on_disk = held.written.written if held is not None and not held.from_spool else 0
                self._spool_depth, self._spool_bytes = spool.pending - on_disk, spool.size_bytes
                self._counts["dropped_spool_corrupt"] = spool.corrupt
            self._drained.notify_all()
        if spooled is not None:
            self._log_spool_full(spooled)

    def _tick(self) -> None:
        if self._on_tick is None:
            return
        try:
            self._on_tick()
        except Exception as exc:  # telemetry must never stop the shipping
            _log.debug("event=agent_tick_failed error=%s", type(exc).__name__)

    def _close(self) -> None:
        # Closed from this thread because producers may hold per-thread connections (SQLite).
        try:
            self._producer.close()
        except Exception as exc:
            _log.warning("event=producer_close_failed error=%s", type(exc).__name__)
        if self._spool is not None:
            try:
                self._spool.close()
            except OSError as exc:
                _log.warning("event=spool_close_failed error=%s", type(exc).__name__)

    def _count(self, name: str, n: int) -> None:
        with self._lock:
            self._counts[name] += n


@dataclass(slots=True)
class _Held:
    records: list[Record]
    from_spool: bool
    written: AppendResult  # how much of it is on disk (from the queue: written when first held)


def _buffered(producer: EventProducer) -> int:
    """Records the producer still holds, retrying them itself (0 if it does not say)."""
    stats = getattr(producer, "stats", None)
    if not callable(stats):
        return 0
    try:
        return int(getattr(stats(), "pending", 0) or 0)
    except Exception:
        return 0


def _send(producer: EventProducer, records: Sequence[Record]) -> None:
    # Producers that can take a whole batch in one call (one commit for SQLite) get it whole.
    send_many: Callable[[Sequence[Record]], None] | None = getattr(producer, "send_many", None)
    if callable(send_many):
        send_many(records)
        return
    for value, key in records:
        producer.send(value, key=key)
