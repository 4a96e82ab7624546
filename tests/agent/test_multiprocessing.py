"""Events of ``multiprocessing`` children reach the bus: they leave through ``os._exit``, which
skips ``atexit``, so the agent flushes from multiprocessing's own finalizers instead."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent("""
    import multiprocessing as mp
    import sys

    from inferwatch.agent import configure, monitor

    configure()  # at import, as an app does: a spawned child runs this again for itself


    @monitor(model="mp")
    def predict(features):
        return 1


    def job(n):
        for i in range(n):
            predict({"x": float(i)})


    def work(i):
        return predict({"x": float(i)})


    if __name__ == "__main__":
        ctx = mp.get_context(sys.argv[1])
        process = ctx.Process(target=job, args=(30,))
        process.start()
        process.join()
        pool = ctx.Pool(2)
        pool.map(work, range(50))
        pool.close()
        pool.join()
""")


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_every_event_of_a_process_and_a_pool_reaches_the_bus(tmp_path: Path, method: str) -> None:
    script = tmp_path / "app.py"
    script.write_text(SCRIPT)
    bus = tmp_path / "bus.db"
    env = {"INFERWATCH_BUS__PATH": str(bus), "INFERWATCH_AGENT__HMAC_KEY": "a-test-key-of-some-length",
           "PATH": "/usr/bin:/bin"}
    run = subprocess.run([sys.executable, str(script), method], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    with sqlite3.connect(bus) as conn:
        assert conn.execute("SELECT COUNT(*) FROM log").fetchone()[0] == 30 + 50
