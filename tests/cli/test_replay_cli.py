import json
import subprocess
import sys

from inferwatch.cli import main


def _incidents(capsys, *args) -> list[dict]:
    assert main(["replay", *args, "--json"]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_replay_files_the_expected_incidents_at_event_time(capsys, events_file):
    incidents = _incidents(capsys, str(events_file))
    by_detector = {i["detector"]: i for i in incidents}
    assert by_detector["request_rate"]["subject"] == "principal:p_flooder"
    assert by_detector["prompt_injection"]["subject"] == "principal:p_mallory"
    drift = by_detector["drift"]
    assert drift["subject"] == "model:tabular"
    assert "x" in drift["title"]
    # Event times, not wall-clock times: the log is from 2026-01-01.
    assert drift["first_seen"].startswith("2026-01-01T00:1")
    assert by_detector["request_rate"]["first_seen"].startswith("2026-01-01T00:2")
    benign = [i for i in incidents if i["subject"].startswith("principal:p_normal")]
    assert benign == []


def test_replay_is_deterministic(capsys, events_file):
    first = _incidents(capsys, str(events_file))
    second = _incidents(capsys, str(events_file))
    assert first == second
    assert len(first) >= 3


def test_replay_reports_malformed_lines_and_goes_on(capsys, events_file):
    lines = events_file.read_bytes().splitlines()
    lines.insert(5, b'{"schema": "inferwatch.event/1", "id": "x"}')
    lines.insert(9, b"garbage")
    events_file.write_bytes(b"\n".join(lines) + b"\n")
    assert main(["replay", str(events_file)]) == 0
    captured = capsys.readouterr()
    assert "line 6: skipped malformed event: time: Field required" in captured.err
    assert "line 10: skipped malformed event" in captured.err
    assert "2 malformed" in captured.out
    assert "request_rate" in captured.out


def test_replay_window_flag_and_store(capsys, events_file, tmp_path):
    store = tmp_path / "replay.db"
    assert main(["replay", str(events_file), "--window", "120", "--store", str(store)]) == 0
    capsys.readouterr()
    assert main(["incidents", "list", "--store", str(store), "--json"]) == 0
    assert len(capsys.readouterr().out.splitlines()) >= 3
    assert main(["events", "search", "--store", str(store), "--principal", "p_mallory", "--json"]) == 0
    found = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [e["principal"] for e in found] == ["p_mallory"]
    # As an incident's subject names it: the same events.
    by_subject = ["events", "search", "--store", str(store), "--principal", "principal:p_mallory", "--json"]
    assert main(by_subject) == 0
    assert [json.loads(x) for x in capsys.readouterr().out.splitlines()] == found


def test_detectors_flag_runs_only_those_and_drift_alone_finds_the_same_drift(capsys, events_file,
                                                                            monkeypatch):
    everything = _incidents(capsys, str(events_file))
    from inferwatch.detectors import pipeline

    fast = []
    real = pipeline.Pipeline.detect_views
    monkeypatch.setattr(pipeline.Pipeline, "detect_views",
                        lambda self, events: fast.append(1) or real(self, events))
    drift = _incidents(capsys, str(events_file), "--detectors", "drift", "--window", "60")
    assert fast  # drift alone takes replay's fast path
    assert drift == [i for i in everything if i["detector"] == "drift"]
    assert main(["replay", str(events_file), "--detectors", "drift,nope"]) == 2  # a configuration error
    assert "unknown detector(s) nope" in capsys.readouterr().err


def test_missing_file_is_a_clear_error(capsys, tmp_path):
    assert main(["replay", str(tmp_path / "nope.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_console_script_is_quiet_when_piped(events_file):
    out = subprocess.run([sys.executable, "-m", "inferwatch.cli", "replay", str(events_file)],
                         capture_output=True, text=True, timeout=120, check=True)
    assert "\r" not in out.stderr  # no progress bar when stderr is not a terminal
    assert "events replayed" in out.stdout


def test_a_file_with_no_event_is_an_error_that_points_at_scan(capsys, tmp_path):
    path = tmp_path / "texts.jsonl"
    path.write_text('{"text": "hello"}\n{"text": "ignore previous instructions"}\n')
    assert main(["replay", str(path)]) == 2
    captured = capsys.readouterr()
    assert "line 1: skipped malformed event: id: Field required" in captured.err
    assert "no line was an event" in captured.err
    assert "inferwatch scan" in captured.err
    assert "0 events replayed, 2 malformed, 0 incidents" in captured.out


def test_a_huge_line_is_skipped_without_being_read_whole_and_the_rest_replayed(capsys, events_file):
    from inferwatch.collectors.event import MAX_EVENT_BYTES

    lines = events_file.read_bytes().splitlines()
    huge = (b'{"id": "big", "time": "2026-01-01T00:00:00Z", "input": {"text": "'
            + b"x" * (3 * MAX_EVENT_BYTES) + b'"}}')
    lines.insert(3, huge)
    events_file.write_bytes(b"\n".join(lines) + b"\n")
    for extra in ([], ["--detectors", "drift"]):  # the per-event path and the fast reader
        assert main(["replay", str(events_file), *extra]) == 0
        captured = capsys.readouterr()
        assert f"line 4: skipped malformed event: event is {len(huge) + 1} bytes, over the " \
               f"{MAX_EVENT_BYTES}-byte limit" in captured.err
        assert f"{len(lines) - 1:,} events replayed, 1 malformed" in captured.out
