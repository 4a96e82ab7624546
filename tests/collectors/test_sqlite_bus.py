import subprocess
import sys

from inferwatch.collectors.bus import BusRecord
from inferwatch.collectors.sqlite_bus import SQLiteBus

PRODUCE = """
import sys
from inferwatch.collectors.sqlite_bus import SQLiteBus
path, worker, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
producer = SQLiteBus(path).producer()
for i in range(count):
    producer.send(f"{worker}:{i}".encode(), key=f"w{worker}")
"""

CONSUME = """
import sys
from inferwatch.collectors.sqlite_bus import SQLiteBus
path, group, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
consumer = SQLiteBus(path).consumer(group)
got = 0
while got < count:
    records = consumer.poll(max_records=7, timeout=5)
    if not records:
        sys.exit("timed out waiting for records")
    for r in records:
        print(r.value.decode())
    got += len(records)
    consumer.commit({0: records[-1].offset + 1})
"""


def _python(code: str, *args: object) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], stdout=subprocess.PIPE, text=True)


def test_offsets_and_order(tmp_path):
    bus = SQLiteBus(tmp_path / "bus.db")
    producer = bus.producer()
    for i in range(10):
        producer.send(str(i).encode(), key="k")
    consumer = bus.consumer("g")
    first = consumer.poll(max_records=4, timeout=0)
    assert [r.value for r in first] == [b"0", b"1", b"2", b"3"]
    assert [r.offset for r in first] == [1, 2, 3, 4]
    assert all(r.key == "k" and r.partition == 0 for r in first)
    consumer.commit({0: first[-1].offset + 1})
    # A new consumer of the same group resumes after the committed position ...
    assert [r.value for r in bus.consumer("g").poll(max_records=2, timeout=0)] == [b"4", b"5"]
    # ... and another group starts from the beginning.
    assert len(bus.consumer("other").poll(max_records=100, timeout=0)) == 10


def test_uncommitted_records_are_redelivered(tmp_path):
    bus = SQLiteBus(tmp_path / "bus.db")
    bus.producer().send_many([(b"a", None), (b"b", None), (b"c", None)])
    consumer = bus.consumer("g")
    consumer.poll(max_records=2, timeout=0)
    consumer.close()  # crashed before committing
    again = bus.consumer("g").poll(max_records=10, timeout=0)
    assert [r.value for r in again] == [b"a", b"b", b"c"]


def test_poll_waits_then_returns_empty(tmp_path):
    consumer = SQLiteBus(tmp_path / "bus.db").consumer("g")
    assert consumer.poll(timeout=0.05) == []


def test_several_processes_append_and_consume(tmp_path):
    path = tmp_path / "bus.db"
    SQLiteBus(path)
    consumer = _python(CONSUME, path, "g", 600)
    producers = [_python(PRODUCE, path, w, 200) for w in range(3)]
    for p in producers:
        assert p.wait(60) == 0
    out, _ = consumer.communicate(timeout=60)
    assert consumer.returncode == 0
    got = out.split()
    assert sorted(got) == sorted(f"{w}:{i}" for w in range(3) for i in range(200))
    for w in range(3):  # each producer's records stay in its order
        mine = [int(v.split(":")[1]) for v in got if v.startswith(f"{w}:")]
        assert mine == list(range(200))
    bus = SQLiteBus(path)
    assert bus.consumer("g").committed() == bus.end_offset()
    assert bus.consumer("g").lag() == 0


def test_dead_letters_keep_record_and_reason(tmp_path):
    bus = SQLiteBus(tmp_path / "bus.db")
    sink = bus.dead_letters()
    sink.dead_letter(BusRecord("inferwatch.events", 0, 5, "p", b"{bad"), "Invalid JSON")
    assert sink.count() == 1
    assert sink.list() == [(5, "inferwatch.events", "Invalid JSON", b"{bad")]


def test_a_producer_writes_to_the_file_now_at_its_path_after_the_bus_was_deleted(tmp_path, caplog):
    import logging

    path = tmp_path / "bus.db"
    bus = SQLiteBus(path)
    producer = bus.producer()
    producer.send(b"before")
    for leftover in tmp_path.glob("bus.db*"):  # the database and its -wal/-shm files
        leftover.unlink()
    with caplog.at_level(logging.WARNING, logger="inferwatch.bus"):
        producer.send(b"after")
    assert "event=bus_file_replaced" in caplog.text
    fresh = SQLiteBus(path)  # what a detector started now reads
    assert [r.value for r in fresh.consumer("g").poll(10, timeout=0)] == [b"after"]
