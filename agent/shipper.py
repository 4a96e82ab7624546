"""The bounded queue between the request path and the event bus.

:class:`EventShipper` behaves like OpenTelemetry's batch processor: :meth:`EventShipper.offer`
appends to an in-memory queue and returns at once, never blocking and never raising; a daemon
thread drains the queue in batches, encodes each event (so JSON encoding never costs the
request path) and hands the batch to the :class:`~inferwatch.collectors.bus.EventProducer`.

When the queue is full the new event is dropped and counted (``dropped_queue_full``). When the
producer raises (:class:`~inferwatch.collectors.bus.BusUnavailable` or anything else) the batch
is dropped and counted (``dropped_bus_error``) and the thread keeps going, waiting longer
between attempts (exponential backoff up to ``max_backoff_s``) while the bus stays down. Events
lost either way show up downstream as gaps in ``agent.seq``. Spooling failed batches to a local
file instead of dropping them is planned as a separate change; until then the counters are the
record of what was lost.

After ``os.fork()`` (gunicorn, multiprocessing) the child starts its own thread with an empty
queue: the parent's pending events stay the parent's to send.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from inferwatch.agent.forking import after_fork_in_child
from inferwatch.collectors.bus import EventProducer
from inferwatch.collectors.event import InferenceEvent, encode_event

_log = logging.getLogger("inferwatch.agent")

Record = tuple[bytes, str | None]


@dataclass(frozen=True, slots=True)
class ShipperStats:
    """Counters since start. ``captured`` = sent + dropped + queued + in flight."""

    captured: int
    sent: int
    dropped_queue_full: int
    dropped_bus_error: int
    dropped_encode_error: int
    dropped_after_shutdown: int
    queue_depth: int


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
    ) -> None:
        self._producer = producer
        self._queue_size = queue_size
        self._batch_size = batch_size
        self._interval = flush_interval_s
        self._max_backoff = max_backoff_s
        self._counts = collections.Counter[str]()
        self._stopping = False
        self._init_thread_state()
        after_fork_in_child(self._after_fork)

    def _init_thread_state(self) -> None:
        self._queue: collections.deque[InferenceEvent] = collections.deque()
        self._lock = threading.Lock()
        self._drained = threading.Condition(self._lock)
        self._wake = threading.Event()  # a full batch is waiting
        self._interrupt = threading.Event()  # flush or shutdown: cut any backoff wait short
        self._stopped = threading.Event()
        self._in_flight = 0
        self._backoff = 0.0
        self._thread = threading.Thread(target=self._run, name="inferwatch-shipper", daemon=True)
        self._thread.start()

    def _after_fork(self) -> None:
        if self._stopping:
            return
        self._counts = collections.Counter[str]()  # the child counts its own events from zero
        self._init_thread_state()

    def offer(self, event: InferenceEvent) -> bool:
        """Queue ``event`` for sending; ``False`` (and a count) if it had to be dropped."""
        with self._lock:
            self._counts["captured"] += 1
            if self._stopping:
                self._counts["dropped_after_shutdown"] += 1
                return False
            if len(self._queue) >= self._queue_size:
                self._counts["dropped_queue_full"] += 1
                return False
            self._queue.append(event)
            full_batch = len(self._queue) >= self._batch_size
        if full_batch:
            self._wake.set()
        return True

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything queued so far; ``False`` if that did not finish within ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._drained:
            while self._queue or self._in_flight:
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
        """Stop accepting events, send what is queued, close the producer (all within ``timeout``).

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

    def stats(self) -> ShipperStats:
        """A snapshot of the counters."""
        with self._lock:
            counts = dict(self._counts)
            depth = len(self._queue)
        return ShipperStats(
            captured=counts.get("captured", 0),
            sent=counts.get("sent", 0),
            dropped_queue_full=counts.get("dropped_queue_full", 0),
            dropped_bus_error=counts.get("dropped_bus_error", 0),
            dropped_encode_error=counts.get("dropped_encode_error", 0),
            dropped_after_shutdown=counts.get("dropped_after_shutdown", 0),
            queue_depth=depth,
        )

    def _run(self) -> None:
        try:
            while not self._stopping:
                self._wake.wait(self._interval)
                self._wake.clear()
                self._drain()
                if self._backoff and not self._stopping:
                    # While the bus is down, new full batches do not shorten the wait; a flush
                    # or a shutdown does.
                    self._interrupt.wait(self._backoff)
                self._interrupt.clear()
            self._drain(final=True)
            self._close_producer()
        finally:
            self._stopped.set()
            with self._drained:
                self._drained.notify_all()

    def _drain(self, *, final: bool = False) -> None:
        """Send batches until the queue is empty (or, while backing off, after one failure)."""
        while True:
            with self._lock:
                batch = [self._queue.popleft() for _ in range(min(self._batch_size, len(self._queue)))]
                self._in_flight = len(batch)
            if not batch:
                return
            ok = self._ship(batch)
            with self._drained:
                self._in_flight = 0
                self._drained.notify_all()
            if not ok and not final:
                return

    def _ship(self, batch: list[InferenceEvent]) -> bool:
        records = self._encode(batch)
        if not records:
            return True
        try:
            _send(self._producer, records)
            self._producer.flush()
        except Exception as exc:  # any producer failure: drop this batch, keep the thread alive
            self._count("dropped_bus_error", len(records))
            self._note_failure(exc)
            return False
        self._count("sent", len(records))
        if self._backoff:
            _log.info("event=bus_recovered")
            self._backoff = 0.0
        return True

    def _encode(self, batch: list[InferenceEvent]) -> list[Record]:
        records: list[Record] = []
        for event in batch:
            try:
                records.append((encode_event(event), event.principal))
            except Exception:  # one bad event must not sink its batch
                self._count("dropped_encode_error", 1)
        return records

    def _note_failure(self, exc: Exception) -> None:
        if not self._backoff:
            _log.warning("event=bus_unavailable error=%s dropping_batches=true", type(exc).__name__)
        self._backoff = min(self._max_backoff, max(0.1, self._backoff * 2))

    def _count(self, name: str, n: int) -> None:
        with self._lock:
            self._counts[name] += n

    def _close_producer(self) -> None:
        # Closed from this thread because producers may hold per-thread connections (SQLite).
        try:
            self._producer.close()
        except Exception as exc:
            _log.warning("event=producer_close_failed error=%s", type(exc).__name__)


def _send(producer: EventProducer, records: Sequence[Record]) -> None:
    # Producers that can take a whole batch in one call (one commit for SQLite) get it whole.
    send_many: Callable[[Sequence[Record]], None] | None = getattr(producer, "send_many", None)
    if callable(send_many):
        send_many(records)
        return
    for value, key in records:
        producer.send(value, key=key)
