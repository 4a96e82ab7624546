"""What the sidecar proxy adds: latency at a fixed request rate, and maximum throughput.

A model server (uvicorn, one worker, answering an OpenAI-style chat completion) is called
directly and through ``inferwatch agent proxy`` in the same run, in alternating rounds so that
noise on the shared machine falls on both alike:

* **latency**: an open-loop load of ``--rate`` requests/s (default 500; sent on schedule whether
  or not earlier answers came back, over a pool of keep-alive connections), timed from the
  request's first byte written to the response's last byte read. The added latency is the
  percentile through the proxy minus the same percentile direct;
* **throughput**: ``--connections`` closed-loop clients as fast as answers come, for
  ``--seconds``; the ratio is through the proxy over direct.

Proxies measured: the default (events built in the worker process and shipped to an embedded
SQLite bus in a temporary directory), ``--no-events`` (forwarding alone) and, with
``--inline-events``, events built on the proxy's own event loop. ``--work-ms`` makes the model
server spend that much CPU per request (a model's compute); 0, the default, is the hardest case
for the ratios. Everything runs on loopback and stops by itself.

    python benchmarks/proxy_latency.py                 # about 2 minutes
    python benchmarks/proxy_latency.py --quick         # a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httptools

CHAT_REQUEST = json.dumps({
    "model": "llama-3-8b-instruct",
    "messages": [
        {"role": "system", "content": "You are a helpful assistant. Answer briefly."},
        {"role": "user", "content": "What is the capital of France? Reply to bob@example.com please."},
    ],
    "max_tokens": 64,
}).encode()
CHAT_RESPONSE = json.dumps({
    "id": "chatcmpl-1", "object": "chat.completion", "model": "llama-3-8b-instruct",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "The capital of France is Paris."},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 38, "completion_tokens": 8, "total_tokens": 46},
}).encode()
WORK_MS = float(os.environ.get("PROXY_BENCH_WORK_MS", "0"))


async def upstream_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The model server: reads the request, spends ``PROXY_BENCH_WORK_MS`` of CPU, answers."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    if WORK_MS:
        end = time.perf_counter() + WORK_MS / 1000
        while time.perf_counter() < end:
            pass
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(CHAT_RESPONSE)).encode())]})
    await send({"type": "http.response.body", "body": CHAT_RESPONSE})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


@dataclass
class Target:
    name: str
    port: int
    pid: int | None = None
    latencies: list[float] = field(default_factory=list)
    throughput: list[float] = field(default_factory=list)
    cpu_s: float = 0.0
    requests: int = 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its children that are still running."""
    total = 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


# A small HTTP/1.1 client on raw asyncio connections: the load generator must cost little and
# the same for every target.


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.done: asyncio.Future[float] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        done, self.done = self.done, None
        if done is not None and not done.done():
            done.set_result(time.perf_counter())

    def connection_lost(self, exc: Exception | None) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(ConnectionError("connection lost"))

    def send(self, data: bytes) -> asyncio.Future[float]:
        assert self.transport is not None
        self.done = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self.done


class _Pool:
    def __init__(self, port: int) -> None:
        self.port = port
        self.idle: list[_Connection] = []
        self.all: list[_Connection] = []

    async def get(self) -> _Connection:
        if self.idle:
            return self.idle.pop()
        _, conn = await asyncio.get_running_loop().create_connection(_Connection, "127.0.0.1", self.port)
        self.all.append(conn)
        return conn

    def close(self) -> None:
        for conn in self.all:
            if conn.transport is not None:
                conn.transport.close()


def _request(port: int) -> bytes:
    return (b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:%d\r\ncontent-type: application/json\r\n"
            b"authorization: Bearer sk-bench-0123456789\r\ncontent-length: %d\r\n\r\n"
            % (port, len(CHAT_REQUEST))) + CHAT_REQUEST


async def _timed(pool: _Pool, data: bytes, out: list[float]) -> None:
    conn = await pool.get()
    start = time.perf_counter()
    end = await conn.send(data)
    out.append(end - start)
    pool.idle.append(conn)


async def open_loop(port: int, rate: float, seconds: float) -> list[float]:
    """Latencies of ``rate`` requests/s sent on schedule for ``seconds``."""
    pool = _Pool(port)
    data = _request(port)
    warm: list[float] = []
    for _ in range(50):
        await _timed(pool, data, warm)
    out: list[float] = []
    loop = asyncio.get_running_loop()
    tasks = []
    start = loop.time()
    for i in range(int(rate * seconds)):
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(loop.create_task(_timed(pool, data, out)))
    await asyncio.gather(*tasks)
    pool.close()
    return out


async def closed_loop(port: int, connections: int, seconds: float) -> float:
    """Requests/s with ``connections`` clients each sending its next request on the last answer."""
    pool = _Pool(port)
    data = _request(port)
    done = 0
    stop = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal done
        conn = await pool.get()
        while time.perf_counter() < stop:
            await conn.send(data)
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(connections)))
    elapsed = time.perf_counter() - started
    pool.close()
    return done / elapsed


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def scrape(port: int) -> dict[str, float]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /-/metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    values = {}
    for line in raw.partition(b"\r\n\r\n")[2].decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def start_processes(args: argparse.Namespace, stack: ExitStack, home: Path) -> list[Target]:
    python = sys.executable
    inferwatch = str(Path(python).with_name("inferwatch"))
    env = {**os.environ, "PROXY_BENCH_WORK_MS": str(args.work_ms), "INFERWATCH_LOG_LEVEL": "warning",
           "INFERWATCH_AGENT__HMAC_KEY": "benchmark-secret", "INFERWATCH_AGENT__SERVICE": "bench"}

    def spawn(cmd: list[str], **extra: str) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(cmd, env={**env, **extra}, cwd=home, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        stack.callback(_stop, process)
        return process

    up_port = free_port()
    upstream = spawn([python, "-m", "uvicorn", "proxy_latency:upstream_app", "--app-dir",
                      str(Path(__file__).parent), "--port", str(up_port), "--log-level", "warning",
                      "--no-access-log"])
    wait_listening(up_port)
    targets = [Target("direct", up_port, upstream.pid)]
    variants = [("proxy", [], {}), ("proxy, no events", ["--no-events"], {})]
    if args.inline_events:
        variants.append(("proxy, inline events", ["--inline-events"], {}))
    for index, (name, flags, extra) in enumerate(variants):
        port = free_port()
        bus = home / f"bus-{index}.db"
        process = spawn([inferwatch, "agent", "proxy", "--listen", f"127.0.0.1:{port}", "--upstream",
                         f"http://127.0.0.1:{up_port}", *flags], INFERWATCH_BUS__PATH=str(bus), **extra)
        wait_listening(port)
        targets.append(Target(name, port, process.pid))
    time.sleep(1.0)  # the event worker imports and connects to the bus
    return targets


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()


async def measure(args: argparse.Namespace, targets: list[Target]) -> None:
    for _ in range(args.rounds):
        for target in targets:
            before = cpu_seconds(target.pid) if target.pid else 0.0
            latencies = await open_loop(target.port, args.rate, args.seconds)
            if target.pid:
                target.cpu_s += cpu_seconds(target.pid) - before
            target.requests += len(latencies)
            target.latencies += latencies
    for _ in range(args.throughput_rounds):
        for target in targets:
            rate = await closed_loop(target.port, args.connections, args.throughput_seconds)
            target.throughput.append(rate)


def report(args: argparse.Namespace, targets: list[Target]) -> dict[str, Any]:
    direct = targets[0]
    base = {q: percentile(direct.latencies, q) * 1000 for q in (50, 90, 99, 99.9)}
    best_direct = max(direct.throughput)
    rows = []
    print(f"\nopen loop: {args.rate:g} requests/s, {args.rounds} rounds of {args.seconds:g} s per target, "
          f"model work {args.work_ms:g} ms; latency = first request byte sent to last response byte read")
    print(f"{'target':24} {'n':>6} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9} "
          f"{'+p50 ms':>8} {'+p99 ms':>8} {'max req/s':>10} {'vs direct':>9} {'CPU ms/req':>10}")
    for target in targets:
        q = {p: percentile(target.latencies, p) * 1000 for p in (50, 90, 99, 99.9)}
        best = max(target.throughput)
        row = {
            "target": target.name, "requests": len(target.latencies),
            "p50_ms": q[50], "p90_ms": q[90], "p99_ms": q[99], "p999_ms": q[99.9],
            "added_p50_ms": q[50] - base[50], "added_p99_ms": q[99] - base[99],
            "max_rps": best, "throughput_ratio": best / best_direct,
            "cpu_ms_per_request": target.cpu_s * 1000 / max(1, target.requests),
        }
        rows.append(row)
        added = ("" if target is direct else f"{row['added_p50_ms']:8.3f} {row['added_p99_ms']:8.3f}")
        print(f"{target.name:24} {row['requests']:6d} {q[50]:8.3f} {q[90]:8.3f} {q[99]:8.3f} {q[99.9]:9.3f} "
              f"{added:>17} {best:10.0f} {row['throughput_ratio']:9.2f} {row['cpu_ms_per_request']:10.3f}")
    for target in targets[1:]:
        metrics = scrape(target.port)
        sent = metrics.get('inferwatch_agent_events_sent_total{service="bench"}')
        if sent is not None:
            prefixes = ("inferwatch_agent_events_dropped_total", "inferwatch_proxy_calls_dropped_total")
            dropped = sum(v for k, v in metrics.items() if k.startswith(prefixes))
            print(f"{target.name}: events sent {sent:.0f}, dropped {dropped:.0f}")
    print(f"\nthroughput: {args.connections} keep-alive connections, best of {args.throughput_rounds} x "
          f"{args.throughput_seconds:g} s; CPU: the process (and its event worker) per latency-run request")
    return {"rate": args.rate, "work_ms": args.work_ms, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=4.0, help="per latency round and target")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--throughput-seconds", type=float, default=3.0)
    parser.add_argument("--throughput-rounds", type=int, default=2)
    parser.add_argument("--work-ms", type=float, default=0.0, help="model CPU per request in the server")
    parser.add_argument("--inline-events", action="store_true", help="also measure --inline-events")
    parser.add_argument("--quick", action="store_true", help="short rounds (a smoke run)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.rounds, args.throughput_seconds, args.throughput_rounds = 1.0, 1, 1.0, 1
    try:
        import uvloop
    except ImportError:
        uvloop = None
    with tempfile.TemporaryDirectory(prefix="proxy-bench-") as home, ExitStack() as stack:
        targets = start_processes(args, stack, Path(home))
        if uvloop is not None:
            uvloop.run(measure(args, targets))
        else:
            asyncio.run(measure(args, targets))
        figures = report(args, targets)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
