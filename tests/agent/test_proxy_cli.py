"""``inferwatch agent proxy`` as a user runs it: a process, its event worker, the embedded bus.

A model server that knows nothing of inferwatch (uvicorn, in a thread) is put behind the proxy
with one command; events land in the SQLite bus; killing the event worker never costs a request.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from inferwatch.collectors.event import InferenceEvent, decode_event
from inferwatch.collectors.sqlite_bus import SQLiteBus

INFERWATCH = shutil.which("inferwatch", path=os.path.dirname(sys.executable)) or "inferwatch"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def model_server() -> Starlette:
    async def chat(request: Request) -> Response:
        body = await request.json()
        return JSONResponse({"model": body["model"],
                             "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi."},
                                          "finish_reason": "stop"}],
                             "usage": {"prompt_tokens": 9, "completion_tokens": 1}})

    async def infer(request: Request) -> Response:
        body = await request.json()
        rows = body["inputs"][0]["shape"][0]
        label = {"name": "label", "shape": [rows], "datatype": "INT64", "data": [0] * rows}
        return JSONResponse({"model_name": request.path_params["name"], "outputs": [label]})

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]),
                             Route("/v2/models/{name}/infer", infer, methods=["POST"])])


@pytest.fixture
def upstream_url() -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(model_server(), host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def wait_for(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except (httpx.HTTPError, OSError):
            result = None
        if result or time.monotonic() > deadline:
            assert result, "timed out"
            return result
        time.sleep(0.05)


def metric(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/-/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def bus_events(path: Path) -> list[InferenceEvent]:
    if not path.exists():
        return []
    consumer = SQLiteBus(path).consumer(f"test-{time.monotonic_ns()}")
    try:
        return [decode_event(r.value) for r in consumer.poll(max_records=1000, timeout=0.1)]
    finally:
        consumer.close()


def worker_pids(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in children.read_text().split()] if children.exists() else []


@pytest.fixture
def proxy_process(tmp_path: Path, upstream_url: str) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    port = free_port()
    bus = tmp_path / "bus.db"
    env = {**os.environ, "INFERWATCH_BUS__PATH": str(bus), "INFERWATCH_AGENT__HMAC_KEY": "a-long-test-secret",
           "INFERWATCH_AGENT__SERVICE": "chat-api", "INFERWATCH_AGENT__FLUSH_INTERVAL_S": "0.05"}
    process = subprocess.Popen([INFERWATCH, "agent", "proxy", "--listen", f"127.0.0.1:{port}",
                                "--upstream", upstream_url], env=env, cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: httpx.get(f"{url}/-/healthz").status_code == 200)
        yield process, url, bus
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


@pytest.mark.slow
def test_one_command_puts_a_model_server_behind_the_proxy(
    proxy_process: tuple[subprocess.Popen[bytes], str, Path],
) -> None:
    process, url, bus = proxy_process
    chat = httpx.post(f"{url}/v1/chat/completions", headers={"authorization": "Bearer sk-abc123"},
                      json={"model": "llama", "messages": [{"role": "user", "content": "call 555-123-4567"}]})
    assert chat.json()["choices"][0]["message"]["content"] == "Hi."
    tensor = {"inputs": [{"name": "x", "shape": [3, 2], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6]}]}
    assert httpx.post(f"{url}/v2/models/fraud/infer", json=tensor).status_code == 200

    events = wait_for(lambda: len(bus_events(bus)) == 4 and bus_events(bus))
    by_model = {e.model for e in events}
    assert by_model == {"llama", "fraud"}
    [chat_event] = [e for e in events if e.model == "llama"]
    assert chat_event.service == "chat-api"
    assert chat_event.input.text == "call [PHONE]"
    assert chat_event.principal is not None
    assert (chat_event.input.tokens, chat_event.output.tokens) == (9, 1)
    rows = sorted((e for e in events if e.model == "fraud"), key=lambda e: e.attributes["batch_index"])
    assert [r.input.features for r in rows] == [{"0": 1, "1": 2}, {"0": 3, "1": 4}, {"0": 5, "1": 6}]
    assert [e.agent.seq for e in sorted(events, key=lambda e: e.agent.seq)] == [0, 1, 2, 3]

    # The worker reports the agent's counters to the proxy's /-/metrics.
    wait_for(lambda: metric(url, "inferwatch_agent_events_sent_total") == 4)

    process.send_signal(signal.SIGTERM)
    assert process.wait(20) == 0
    output = process.stdout.read().decode() if process.stdout else ""
    assert "event=proxy_listening" in output
    assert "event=proxy_stopped" in output
    assert "sk-abc123" not in output


@pytest.mark.slow
def test_a_dead_event_worker_costs_no_request(
    proxy_process: tuple[subprocess.Popen[bytes], str, Path],
) -> None:
    process, url, bus = proxy_process
    body = {"model": "llama", "messages": [{"role": "user", "content": "hello"}]}
    assert httpx.post(f"{url}/v1/chat/completions", json=body).status_code == 200
    wait_for(lambda: len(bus_events(bus)) == 1)
    [worker] = wait_for(lambda: worker_pids(process.pid))
    os.kill(worker, signal.SIGKILL)

    # While the worker is gone, and after, every request is answered.
    for _ in range(20):
        assert httpx.post(f"{url}/v1/chat/completions", json=body).status_code == 200
        time.sleep(0.05)
    wait_for(lambda: metric(url, "inferwatch_proxy_event_worker_restarts_total") == 1)
    wait_for(lambda: worker_pids(process.pid) and worker_pids(process.pid) != [worker])
    assert httpx.post(f"{url}/v1/chat/completions", json=body).status_code == 200
    # The new worker is a new agent instance (its own id and seq), and it records.
    first_agent = bus_events(bus)[0].agent.id
    wait_for(lambda: any(e.agent.id != first_agent for e in bus_events(bus)))
    assert metric(url, 'inferwatch_proxy_calls_dropped_total{reason="worker_down"}') >= 1
    assert process.poll() is None


def test_a_misspelled_proxy_variable_is_refused_with_the_real_name(capsys, monkeypatch) -> None:
    from inferwatch.cli import main

    monkeypatch.setenv("INFERWATCH_PROXY__UPSTREAM_TIMEOUT", "5")  # the setting ends in _S
    assert main(["agent", "proxy", "--upstream", "http://127.0.0.1:9", "--listen", "127.0.0.1:0"]) == 2
    assert ("INFERWATCH_PROXY__UPSTREAM_TIMEOUT is not a proxy setting "
            "(did you mean INFERWATCH_PROXY__UPSTREAM_TIMEOUT_S?") in capsys.readouterr().err


@pytest.mark.parametrize(("flags", "message"), [
    (["--principal-header", ""], "--principal-header '': must be an HTTP header name"),
    (["--principal-header", "x api key"], "--principal-header 'x api key': must be an HTTP header name"),
    (["--admin-prefix", "/"], "'/' would take every path from the model server"),
    (["--exclude-path", "health"], "--exclude-path 'health' must be a path starting with '/', e.g. /health"),
])
def test_flags_that_would_silently_do_the_wrong_thing_are_refused(
        capsys, flags: list[str], message: str) -> None:
    from inferwatch.cli import main

    listen = ["--listen", "127.0.0.1:0"]
    assert main(["agent", "proxy", "--upstream", "http://127.0.0.1:9", *listen, *flags]) == 2
    assert message in capsys.readouterr().err
