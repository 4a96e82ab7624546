"""`inferwatch baseline set / show / clear`: drift references from files, kept in the store."""

import json
from pathlib import Path

import pytest

from inferwatch.cli import main
from inferwatch.collectors.event import EventOutput, encode_event
from inferwatch.detectors.sqlite_store import SQLiteStore
from inferwatch.testing import make_event


@pytest.fixture
def store(tmp_path: Path) -> str:
    return str(tmp_path / "store.db")


def json_lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


def test_set_show_clear_from_csv(capsys, tmp_path, store):
    path = tmp_path / "base.csv"
    path.write_text("amount,country\n" + "".join(f"{i * 1.5},{'GB' if i % 3 else 'FR'}\n" for i in range(30)))
    assert main(["baseline", "set", "--model", "fraud", str(path), "--model-version", "4",
                 "--store", store]) == 0
    assert capsys.readouterr().out == (
        f"drift reference of model fraud (version 4) set from {path}: 30 rows, 2 features\n")

    assert main(["baseline", "show", "--store", store]) == 0  # a new process: the store kept it
    header, row = capsys.readouterr().out.splitlines()
    assert header.split() == ["MODEL", "VERSION", "SOURCE", "EVENTS", "FEATURES", "CREATED", "ORIGIN"]
    assert row.split()[:5] == ["fraud", "4", "file", "30", "2"]
    assert row.endswith(str(path.resolve()))

    assert main(["baseline", "show", "--model", "fraud", "--store", store]) == 0
    shown = capsys.readouterr().out
    assert "source:   file (" in shown
    assert [line.split() for line in shown.splitlines()[-3:]] == [
        ["FEATURE", "TYPE", "N"], ["input.amount", "numeric", "30"], ["input.country", "categorical", "30"]]

    assert main(["baseline", "show", "--model", "fraud", "--json", "--store", store]) == 0
    [shown_json] = json_lines(capsys.readouterr().out)
    assert {k: shown_json[k] for k in ("model", "model_version", "source", "events")} == {
        "model": "fraud", "model_version": "4", "source": "file", "events": 30}
    assert shown_json["features"] == {"input.amount": {"type": "numeric", "n": 30},
                                      "input.country": {"type": "categorical", "n": 30}}
    assert "summary" not in shown_json

    assert main(["baseline", "clear", "--model", "fraud", "--store", store]) == 0
    assert capsys.readouterr().out == "drift reference of model fraud cleared\n"
    assert main(["baseline", "show", "--model", "fraud", "--store", store]) == 1
    assert "no drift reference for model 'fraud'" in capsys.readouterr().err
    assert main(["baseline", "show", "--store", store]) == 0
    assert capsys.readouterr().out.startswith("no drift references")


def test_set_from_jsonl_rows_replaces_the_reference(capsys, tmp_path, store):
    first = tmp_path / "first.csv"
    first.write_text("x\n1\n2\n")
    assert main(["baseline", "set", "--model", "m", str(first), "--store", store]) == 0
    capsys.readouterr()
    rows = tmp_path / "rows.jsonl"
    rows.write_text("\n".join(json.dumps({"x": i, "tier": "gold", "output.score": 0.5}) for i in range(5)))
    assert main(["baseline", "set", "--model", "m", str(rows), "--store", store, "--json"]) == 0
    [out] = json_lines(capsys.readouterr().out)
    assert out["events"] == 5
    assert set(out["features"]) == {"input.x", "input.tier", "output.score"}
    assert main(["baseline", "show", "--store", store, "--json"]) == 0
    [kept] = json_lines(capsys.readouterr().out)
    assert (kept["events"], kept["origin"]) == (5, str(rows.resolve()))


@pytest.mark.parametrize("compress", ["gz", "bz2", "xz"])
def test_a_compressed_text_file_gives_the_same_reference(capsys, tmp_path, store, compress):
    import bz2
    import gzip
    import lzma

    pack = {"gz": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress}[compress]
    text = "amount;country\n1,5;GB\n2,25;FR\n3;GB\n"  # a spreadsheet's CSV: its separator is read too
    plain = tmp_path / "base.csv"
    plain.write_text(text)
    packed = tmp_path / f"base.csv.{compress}"
    packed.write_bytes(pack(text.encode()))
    summaries = []
    for path in (plain, packed):
        assert main(["baseline", "set", "--model", "m", str(path), "--store", store, "--json"]) == 0
        [out] = json_lines(capsys.readouterr().out)
        summaries.append((out["events"], out["features"]))
    assert summaries[0] == summaries[1]
    assert summaries[0][0] == 3
    rows = tmp_path / f"rows.ndjson.{compress}"
    rows.write_bytes(pack(b'{"x": 1}\n{"x": 2}\n'))
    assert main(["baseline", "set", "--model", "m", str(rows), "--store", store, "--json"]) == 0
    assert json_lines(capsys.readouterr().out)[0]["events"] == 2
    cut = tmp_path / f"cut.csv.{compress}"
    whole = pack(("a\n" + "".join(f"{i * 7919 % 100_003}\n" for i in range(50_000))).encode())
    cut.write_bytes(whole[: len(whole) // 2])
    assert main(["baseline", "set", "--model", "m", str(cut), "--store", store]) == 2
    assert f"{cut}: cannot be read after" in capsys.readouterr().err
    parquet = tmp_path / f"rows.parquet.{compress}"
    parquet.write_bytes(b"PAR1")
    assert main(["baseline", "set", "--model", "m", str(parquet), "--store", store]) == 2
    assert f"unknown baseline file type '.parquet.{compress}'" in capsys.readouterr().err

def test_set_from_events(capsys, tmp_path, store):
    events = [make_event(float(i), model="chat" if i % 4 else "vision", model_version="2025-10",
                         text="hello there" * (i % 5 + 1), output=EventOutput(text="ok", tokens=3))
              for i in range(40)]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(encode_event(e) + b"\n" for e in events))
    assert main(["baseline", "set", "--model", "chat", str(path), "--store", store]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(
        f"drift reference of model chat (version 2025-10) set from {path}: 30 rows, ")
    assert captured.err.splitlines() == ["note: skipped 10 events of other models: vision (10)",
                                         "note: model version '2025-10' taken from the events"]
    assert main(["baseline", "show", "--model", "chat", "--json", "--store", store]) == 0
    [shown] = json_lines(capsys.readouterr().out)
    assert shown["model_version"] == "2025-10"
    assert shown["features"]["text.chars"] == {"type": "numeric", "n": 30}
    assert shown["features"]["ops.output_tokens"] == {"type": "numeric", "n": 30}


@pytest.mark.parametrize(("name", "text", "message"), [
    ("bad.csv", "a,b\n1,2\n3,4,5\n", "bad.csv line 3: 3 cells, but the header names 2 columns"),
    ("bad.jsonl", '{"a": 1}\n{"a": \n', "bad.jsonl line 2: not JSON"),
    ("empty.csv", "", "empty.csv: no rows (the file is empty)"),
    ("header.csv", "a,b\n", "header.csv: no rows (a header alone, or blank lines)"),
    ("blank.csv", "a,b\n,\n,\n", "blank.csv: no rows (a header alone, or blank lines)"),
    ("dropped.csv", "a,label\n1,2\n", "dropped.csv: no feature left to compare (--drop left out columns 'a', "
                                        "'label'): drift would compare nothing with it"),
    ("nohdr.csv", "1.5,GB\n2.5,FR\n", "nohdr.csv line 1: the first row must name the features, but '1.5'"),
    ("base.xlsx", "a\n1\n", "unknown baseline file type '.xlsx'"),
])
def test_bad_files_exit_2_naming_the_problem(capsys, tmp_path, store, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    drop = ["--drop", "a,label"] if name == "dropped.csv" else []
    assert main(["baseline", "set", "--model", "m", str(path), "--store", store, *drop]) == 2
    err = capsys.readouterr().err
    assert err.startswith("inferwatch baseline: ")
    assert message in err
    assert main(["baseline", "show", "--store", store, "--json"]) == 0
    assert capsys.readouterr().out == ""  # nothing was kept


def test_a_store_path_in_a_folder_that_is_not_there_is_said(capsys, tmp_path):
    good = tmp_path / "good.csv"
    good.write_text("a\n1\n2\n")
    typo = tmp_path / "nonexistent" / "s.db"
    assert main(["baseline", "set", "--model", "m", str(good), "--store", str(typo)]) == 0
    assert f"inferwatch baseline set: {typo.parent} did not exist: it is made" in capsys.readouterr().err
    assert main(["baseline", "set", "--model", "m", str(good), "--store", str(typo)]) == 0
    assert "did not exist" not in capsys.readouterr().err

def test_missing_file_and_bad_flags(capsys, tmp_path, store):
    assert main(["baseline", "set", "--model", "m", str(tmp_path / "nope.csv"), "--store", store]) == 2
    assert "nope.csv: no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["baseline", "set", "--model", "m", "x.csv", "--max-rows", "0", "--store", store])
    assert exit_.value.code == 2
    assert "'0' is not a whole number of at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["baseline", "set", "x.csv", "--store", store])  # --model is required
    capsys.readouterr()
    good = tmp_path / "good.csv"
    good.write_text("a\n1\n")
    assert main(["baseline", "set", "--model", " ", str(good), "--store", store]) == 2
    assert "--model must name the model" in capsys.readouterr().err


def test_max_rows_note(capsys, tmp_path, store):
    path = tmp_path / "big.csv"
    path.write_text("x\n" + "".join(f"{i}\n" for i in range(100)))
    assert main(["baseline", "set", "--model", "m", str(path), "--max-rows", "1_0", "--store", store]) == 0
    captured = capsys.readouterr()
    assert "10 rows" in captured.out
    assert "note: read the first 10 rows" in captured.err


def test_clear_unknown_model(capsys, store):
    SQLiteStore(store).close()  # a store that exists, without that model
    assert main(["baseline", "clear", "--model", "ghost", "--store", store]) == 1
    assert capsys.readouterr().err == (
        "inferwatch: no drift reference for model 'ghost' (see `inferwatch baseline show`)\n")


def test_a_misspelt_model_or_column_gets_the_one_meant(capsys, tmp_path, store):
    path = tmp_path / "base.csv"
    path.write_text("amount,CLASS\n" + "".join(f"{i % 7},{i % 2}\n" for i in range(40)))
    assert main(["baseline", "set", "--model", "elec", str(path), "--store", store, "--drop", "class"]) == 2
    assert "--drop names 'class' (did you mean 'CLASS'?)" in capsys.readouterr().err
    assert main(["baseline", "set", "--model", "elec", str(path), "--store", store]) == 0
    assert ("note: column 'CLASS' looks like the model's label or target, which live events carry as "
            "output.label, not as an input") in capsys.readouterr().err
    for command in ("show", "clear"):
        assert main(["baseline", command, "--model", "elce", "--store", store]) == 1
        assert "no drift reference for model 'elce' (did you mean elec for elce?)" in capsys.readouterr().err


def test_a_model_version_other_than_the_events_is_noted(capsys, tmp_path, store):
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"".join(encode_event(make_event(1_767_225_600.0 + i, model="m", model_version="1",
                                                        features={"x": i % 5})) + b"\n" for i in range(40)))
    assert main(["baseline", "set", "--model", "m", str(events), "--model-version", "7",
                 "--store", store]) == 0
    assert ("note: the events carry model version(s) 1; the reference is recorded as version '7', as "
            "--model-version says") in capsys.readouterr().err


def test_notes_on_columns_that_would_make_ordinary_traffic_drift(capsys, tmp_path, store):
    path = tmp_path / "base.csv"
    path.write_text("id,when,x,empty,mixed\n" + "".join(
        f"{i},2026-01-01T10:{i // 60:02d}:{i % 60:02d},{i % 7},,{'n/a' if i % 10 == 0 else i / 3}\n"
        for i in range(200)))
    assert main(["baseline", "set", "--model", "m", str(path), "--store", store]) == 0
    err = capsys.readouterr().err
    assert "note: left out column 'empty': no value in any row" in err
    assert "note: column 'when' has 200 distinct values in 200 sampled rows: an identifier or a time?" in err
    assert "note: column 'mixed' mixes numbers and text (10% text in the sample)" in err
    assert "'x'" not in err
    assert "'id'" not in err

    strings = tmp_path / "strings.jsonl"
    strings.write_text("".join(json.dumps({"period": str(i / 7), "day": i % 7}) + "\n" for i in range(100)))
    assert main(["baseline", "set", "--model", "m", str(strings), "--store", store]) == 0
    err = capsys.readouterr().err
    assert "note: column 'period' holds numbers written as text (e.g. '" in err
    assert "identifier" not in err


def _stored(store: str, events: list) -> None:
    db = SQLiteStore(store)
    db.add_events(events)
    db.close()


def test_notes_from_the_stored_traffic_a_wrong_model_and_columns_never_sent(capsys, tmp_path, store):
    _stored(store, [make_event(1_767_225_600.0 + i, model="elec", features={"x": i, "y": 1.0})
                    for i in range(30)])
    path = tmp_path / "base.csv"
    path.write_text("id,x,y\n" + "".join(f"{i},{i % 5},{i % 3}\n" for i in range(50)))
    assert main(["baseline", "set", "--model", "Elec", str(path), "--store", store]) == 0
    err = capsys.readouterr().err
    assert "note: no stored events of model 'Elec'; the latest events are of elec (30): check --model" in err
    assert main(["baseline", "set", "--model", "elec", str(path), "--store", store]) == 0
    err = capsys.readouterr().err
    assert "note: column 'id': in none of the latest 30 events of model 'elec'" in err
    assert "'x'" not in err


def test_labels_and_inputs_the_events_carry_as_text_are_read_as_text(capsys, tmp_path, store):
    """Labels written 0/1 in a CSV are the categories "0"/"1" of live events (always); an input
    column of numbers that the model's events carry as text is read as text, with a note."""
    _stored(store, [make_event(1_767_225_600.0 + i, model="elec",
                               features={"x": float(i), "zone": str(i % 4)},
                               output=EventOutput(label=str(i % 2)))
                    for i in range(40)])
    path = tmp_path / "base.csv"
    path.write_text("x,zone,output.label\n" + "".join(f"{i},{i % 4},{i % 2}\n" for i in range(50)))
    assert main(["baseline", "set", "--model", "elec", str(path), "--store", store]) == 0
    err = capsys.readouterr().err
    assert "note: read column 'zone' as text, as the model's latest events carry it (zone='" in err
    assert "numbers written as text" not in err  # read so on purpose
    assert main(["baseline", "show", "--model", "elec", "--store", store, "--json"]) == 0
    record = json_lines(capsys.readouterr().out)[0]
    kinds = {key: value["type"] for key, value in record["features"].items()}
    assert kinds == {"input.x": "numeric", "input.zone": "categorical", "output.label": "categorical"}


def test_show_names_a_baseline_file_waiting_for_its_version(capsys, tmp_path, store):
    """With drift's rebaseline_on_version a warm-up of the running version is stored with the
    baseline file set for another version inside it: `baseline show` says which file waits."""
    from datetime import UTC, datetime

    from inferwatch.detectors.drift.reference import ReferenceRecord

    path = tmp_path / "v2.csv"
    path.write_text("amount\n" + "".join(f"{i * 1.5}\n" for i in range(30)))
    assert main(["baseline", "set", "--model", "fraud", str(path), "--model-version", "2",
                 "--store", store]) == 0
    capsys.readouterr()
    db = SQLiteStore(store)
    file_record = db.load_reference("fraud")
    assert file_record is not None
    db.save_reference(ReferenceRecord(model="fraud", model_version="1", source="warmup",
                                      created=datetime(2026, 3, 1, tzinfo=UTC), events=0,
                                      origin="2026-03-01T00:00:00Z .. 2026-03-01T00:05:00Z",
                                      summary=file_record.summary, waiting=file_record))
    db.close()

    assert main(["baseline", "show", "--store", store]) == 0
    _, row = capsys.readouterr().out.splitlines()
    assert row.split()[:3] == ["fraud", "1", "warmup"]
    assert row.endswith(f"(file {path.resolve()} waits for version 2)")
    assert main(["baseline", "show", "--model", "fraud", "--store", store]) == 0
    assert f"waiting:  baseline file {path.resolve()} for version 2 (set " in capsys.readouterr().out
    assert main(["baseline", "show", "--model", "fraud", "--json", "--store", store]) == 0
    [shown] = json_lines(capsys.readouterr().out)
    assert (shown["waiting"]["model_version"], shown["waiting"]["source"]) == ("2", "file")
    assert "summary" not in shown["waiting"]


def test_drop_leaves_columns_out_and_names_one_the_file_does_not_have(capsys, tmp_path, store):
    path = tmp_path / "base.csv"
    path.write_text("id,x,label,zone\n" + "".join(f"{i},{i % 5},{i % 2},{'ab'[i % 2]}\n" for i in range(60)))
    assert main(["baseline", "set", "--model", "m", str(path), "--drop", "id,label", "--drop", "input.zone",
                 "--store", store, "--json"]) == 0
    [record] = json_lines(capsys.readouterr().out)
    assert list(record["features"]) == ["input.x"]

    assert main(["baseline", "set", "--model", "m", str(path), "--drop", "lable", "--store", store]) == 2
    err = capsys.readouterr().err
    assert "--drop names 'lable' (did you mean 'label'?), which no row of the file has" in err
    assert "(its columns: 'id', 'label', 'x', 'zone')" in err
    with pytest.raises(SystemExit) as exit_:
        main(["baseline", "set", "--model", "m", str(path), "--drop", "x,,y", "--store", store])
    assert exit_.value.code == 2
    assert "'x,,y' has an empty name" in capsys.readouterr().err

    events = tmp_path / "events.jsonl"
    events.write_bytes(b"".join(encode_event(make_event(1_767_225_600.0 + i, model="m",
                                                        features={"x": i % 5, "label": i % 2})) + b"\n"
                                for i in range(40)))
    assert main(["baseline", "set", "--model", "m", str(events), "--drop", "label", "--store", store,
                 "--json"]) == 0
    [record] = json_lines(capsys.readouterr().out)
    assert [key for key in record["features"] if key.startswith("input.")] == ["input.x"]


def test_a_folder_is_not_a_baseline_file(capsys, tmp_path, store):
    (tmp_path / "dir.csv").mkdir()
    assert main(["baseline", "set", "--model", "m", str(tmp_path / "dir.csv"), "--store", store]) == 2
    assert f"{tmp_path / 'dir.csv'}: a folder, not a file: name one baseline file" in capsys.readouterr().err


def test_columns_named_otherwise_than_the_features_are_not_columns_to_drop(capsys, tmp_path, store):
    """None of the baseline's columns in the traffic: the names differ (upper case here), and
    dropping them all, as the note on a few missing columns says, leaves nothing."""
    _stored(store, [make_event(1_767_225_600.0 + i, model="elec", features={"nswdemand": i, "day": "mon"})
                    for i in range(30)])
    path = tmp_path / "base.csv"
    path.write_text("NSWDEMAND,DAY\n" + "".join(f"{i % 5},tue\n" for i in range(50)))
    assert main(["baseline", "set", "--model", "elec", str(path), "--store", store]) == 0
    err = capsys.readouterr().err
    assert ("note: none of the baseline's columns is in the latest 30 events of model 'elec', whose features "
            "are 'day', 'nswdemand': name the baseline's columns as the events name their features "
            "(DAY -> day, NSWDEMAND -> nswdemand?); as it is, drift reports every window as having none of "
            "its reference's features") in err, err
    assert "--drop" not in err


def test_the_note_on_columns_never_sent_says_how_to_drop_them(capsys, tmp_path, store):
    _stored(store, [make_event(1_767_225_600.0 + i, model="elec", features={"x": i})
                    for i in range(30)])
    path = tmp_path / "base.csv"
    path.write_text("x,label,id\n" + "".join(f"{i % 5},{i % 2},{i}\n" for i in range(50)))
    assert main(["baseline", "set", "--model", "elec", str(path), "--store", store]) == 0
    assert "leave them out (--drop id,label) unless the model gets them" in capsys.readouterr().err
    assert main(["baseline", "set", "--model", "elec", str(path), "--drop", "id,label",
                 "--store", store]) == 0
    assert "in none of the latest" not in capsys.readouterr().err
