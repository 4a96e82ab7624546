"""Drift references: reading baseline files, building a reference, keeping it in the SQLite store."""

from __future__ import annotations

import doctest
import importlib
import json
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from inferwatch.collectors.event import EventOutput, InferenceEvent, encode_event
from inferwatch.detectors.drift import reference as reference_module
from inferwatch.detectors.drift.reference import (
    ReferenceFileError,
    ReferenceRecord,
    file_reference,
    read_rows,
)
from inferwatch.detectors.drift.sketch import WindowSummary
from inferwatch.detectors.es_mappings import (
    REFERENCE_MAPPINGS,
    IndexNames,
    reference_document,
    reference_from_source,
    references_template,
)
from inferwatch.detectors.sqlite_store import SQLiteStore
from inferwatch.testing import make_event

NOW = datetime(2026, 5, 1, 12, tzinfo=UTC)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def events_file(path: Path, events: list[InferenceEvent]) -> Path:
    path.write_bytes(b"".join(encode_event(e) + b"\n" for e in events))
    return path


def record(model: str = "m", **kw: Any) -> ReferenceRecord:
    summary = WindowSummary(model)
    summary.add_values(1, {"input.x": 1.5, "input.c": "a"})
    fields: dict[str, Any] = {"model": model, "source": "file", "created": NOW, "events": 1,
                              "origin": "/data/base.csv", "summary": summary.to_dict()}
    return ReferenceRecord(**(fields | kw))


# -- CSV -------------------------------------------------------------------------------------------


def test_csv_cells_read_as_what_they_look_like(tmp_path: Path) -> None:
    path = write(tmp_path / "b.csv", "\ufeffn, x ,flag,name,note\n"
                 '7,1.5e3,TRUE, GB ,"a, b"\n'
                 "-3,.5,false,nan,\n"
                 "\n"
                 "+0,-2.,False,007x,NaN\n")
    assert list(read_rows(path)) == [
        {"n": 7, "x": 1500.0, "flag": True, "name": "GB", "note": "a, b"},
        {"n": -3, "x": 0.5, "flag": False, "name": None, "note": None},
        {"n": 0, "x": -2.0, "flag": False, "name": "007x", "note": None},
    ]


@pytest.mark.parametrize("sep", [";", "\t", "|"])
def test_a_csv_separated_otherwise_is_read_by_its_separator(tmp_path: Path, sep: str) -> None:
    # A ;-separated export was read as one column named "period;nswprice;class" (walk-through)
    path = write(tmp_path / "b.csv", sep.join(["period", "nswprice", "class"]) + "\n"
                 + sep.join(["0,5" if sep == ";" else "0.5", "12", "UP"]) + "\n")
    assert list(read_rows(path)) == [{"period": 0.5, "nswprice": 12, "class": "UP"}]
    one = write(tmp_path / "one.csv", "note\nsemi; colon\n")  # one column: its cells may hold any
    assert list(read_rows(one)) == [{"note": "semi; colon"}]


def test_tsv(tmp_path: Path) -> None:
    path = write(tmp_path / "b.tsv", "a\tb\n1\tx y\n")
    assert list(read_rows(path)) == [{"a": 1, "b": "x y"}]


@pytest.mark.parametrize(("text", "message"), [
    ("a,b\n1,2\n3\n", "line 3: 1 cells, but the header names 2 columns"),
    ("a,b\n1,2,3\n", "line 2: 3 cells, but the header names 2 columns"),
    (",a\n0,1\n", "line 1: column 1 of the header has no name (a pandas index?"),
    ("a,b,a\n1,2,3\n", "line 1: the header names 'a' more than once"),
    ("a\n1\ninf\n", "line 3: 'a' is inf, not a finite number"),
    ("a\n1\n-Infinity\n", "line 3: 'a' is -Infinity, not a finite number"),
    ("a\n1\n" + "9" * 5000 + "\n", "line 3: 'a' is " + "9" * 20 + "..., not a finite number"),
])
def test_bad_csv_names_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / "b.csv", text)
    with pytest.raises(ReferenceFileError) as err:
        list(read_rows(path))
    assert str(err.value).startswith(f"{path} ")
    assert message in str(err.value)


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r"])
def test_csv_line_endings_of_every_kind(tmp_path: Path, ending: bytes) -> None:
    path = tmp_path / "b.csv"
    path.write_bytes(ending.join([b"a,b", b'1,"x' + ending + b'y"', b"2,z", b"3,\xc3\xa9", b""]))
    assert list(read_rows(path)) == [{"a": 1, "b": "x" + ending.decode() + "y"}, {"a": 2, "b": "z"},
                                     {"a": 3, "b": "é"}]
    path.write_bytes(ending.join([b"a,b", b"1,x", b"2,\xe9", b""]))
    with pytest.raises(ReferenceFileError, match=r"line 3: not UTF-8"):
        list(read_rows(path))


@pytest.mark.parametrize("before", [1, 30_000])  # the bad byte in the first block read, or far past it
def test_csv_that_is_not_utf8_names_the_line_of_the_bad_byte(tmp_path: Path, before: int) -> None:
    path = tmp_path / "b.csv"
    path.write_bytes(b"name,x\n" + b"caf\xc3\xa9,1\n" * before + b"caf\xe9,2\n" + b"ok,3\n" * 10)
    with pytest.raises(ReferenceFileError) as err:
        list(read_rows(path))
    assert str(err.value) == (f"{path} line {before + 2}: not UTF-8 (byte 0xe9 at byte 4 of the line); "
                              "save the file as UTF-8")


def test_unknown_type_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ReferenceFileError, match=r"unknown baseline file type '\.xlsx'; use one of \.csv"):
        read_rows(write(tmp_path / "b.xlsx", "a\n1\n"))
    with pytest.raises(ReferenceFileError, match="no such file"):
        read_rows(tmp_path / "missing.csv")
    with pytest.raises(ValueError, match="max_rows must be at least 1"):
        read_rows(write(tmp_path / "b.csv", "a\n1\n"), max_rows=0)


def test_max_rows_reads_the_first_rows_and_says_so(tmp_path: Path) -> None:
    path = write(tmp_path / "b.csv", "a\n" + "".join(f"{i}\n" for i in range(10)))
    rows = read_rows(path, max_rows=4)
    assert [r["a"] for r in rows] == [0, 1, 2, 3]
    assert (rows.rows, rows.truncated) == (4, True)
    exact = read_rows(path, max_rows=10)
    assert len(list(exact)) == 10
    assert not exact.truncated


# -- JSON Lines ------------------------------------------------------------------------------------


def test_jsonl_rows(tmp_path: Path) -> None:
    path = write(tmp_path / "b.jsonl", '{"x": 1, "c": "a", "ok": true, "gone": null}\n\n{"x": NaN}\n')
    assert list(read_rows(path)) == [{"x": 1, "c": "a", "ok": True, "gone": None}, {"x": None}]


def test_jsonl_events_are_yielded_as_events(tmp_path: Path) -> None:
    events = [make_event(0.0, features={"x": 1.0}), make_event(1.0, text="hello")]
    read = list(read_rows(events_file(tmp_path / "e.ndjson", events)))
    assert read == events
    assert all(isinstance(e, InferenceEvent) for e in read)
    # An event written without its schema tag is still recognised by its time and input.
    bare = {"id": "e1", "time": "2026-01-01T00:00:00Z", "input": {"features": {"x": 2}}}
    [event] = list(read_rows(write(tmp_path / "bare.jsonl", json.dumps(bare) + "\n")))
    assert isinstance(event, InferenceEvent)
    assert event.input.features == {"x": 2}


@pytest.mark.parametrize(("lines", "message"), [
    (['{"x": 1}', "{oops"], "line 2: not JSON (Expecting property name"),
    (['{"x": 1}', "[1, 2]"], "line 2: expected a JSON object (a row or an event), got list"),
    (['{"x": {"y": 1}}'], "line 1: 'x' is a JSON object; a row maps feature names"),
    (['{"x": [1]}'], "line 1: 'x' is a JSON array"),
    (['{"x": Infinity}'], "line 1: 'x' is inf, not a finite number"),
    (['{"x": 1}', '{"schema": "inferwatch.event/1", "id": "e", "time": "2026-01-01T00:00:00Z"}'],
     "line 2: an event, but line 1 began a file of rows; a baseline file holds rows or events, not both"),
    (['{"schema": "inferwatch.event/1", "id": "e", "time": "2026-01-01T00:00:00Z"}', "", '{"x": 1}'],
     "line 3: a plain row, but line 1 began a file of events"),
    (['{"schema": "inferwatch.event/2", "id": "e", "time": "2026-01-01T00:00:00Z"}'],
     "line 1: not a valid inferwatch event: schema: Value error, schema 'inferwatch.event/2' is a major"),
    (['{"schema": "inferwatch.event/1", "id": "e", "time": "2026-01-01T00:00:00"}'],
     "line 1: not a valid inferwatch event: time: Value error, time must carry a UTC offset"),
])
def test_bad_jsonl_names_file_and_line(tmp_path: Path, lines: list[str], message: str) -> None:
    path = write(tmp_path / "b.jsonl", "\n".join(lines) + "\n")
    with pytest.raises(ReferenceFileError) as err:
        list(read_rows(path))
    assert str(err.value).startswith(f"{path} ")
    assert message in str(err.value)


# -- Parquet ---------------------------------------------------------------------------------------


def test_parquet_rows(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pa.table({"x": [1.5, None, float("nan")], "n": [1, 2, 3], "c": ["a", "b", None],
                      "ok": [True, False, True]})
    pq.write_table(table, tmp_path / "b.parquet", row_group_size=2)
    assert list(read_rows(tmp_path / "b.parquet")) == [
        {"x": 1.5, "n": 1, "c": "a", "ok": True},
        {"x": None, "n": 2, "c": "b", "ok": False},
        {"x": None, "n": 3, "c": None, "ok": True},
    ]
    categories = pa.table({"c": pa.array(["a", "b", "a"]).dictionary_encode()})
    pq.write_table(categories, tmp_path / "d.parquet")
    assert [r["c"] for r in read_rows(tmp_path / "d.parquet")] == ["a", "b", "a"]


def test_a_pandas_index_written_with_the_frame_is_not_a_feature(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    # What DataFrame.to_parquet() writes for a filtered frame: its index as a column, named in
    # pandas' metadata (here written by hand: pandas is not a dependency).
    table = pa.table({"x": [1.0, 2.0], "__index_level_0__": [7, 9]})
    metadata = {b"pandas": json.dumps({"index_columns": ["__index_level_0__"], "columns": []}).encode()}
    pq.write_table(table.replace_schema_metadata(metadata), tmp_path / "i.parquet")
    assert list(read_rows(tmp_path / "i.parquet")) == [{"x": 1.0}, {"x": 2.0}]


def test_bad_parquet(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table({"x": [1.0], "when": [NOW]}), tmp_path / "t.parquet")
    with pytest.raises(ReferenceFileError, match=r"t\.parquet: column 'when' is timestamp\[us, tz=UTC\]; .*"
                                                 r"\(leave it out with --drop when, or convert it\)"):
        list(read_rows(tmp_path / "t.parquet"))
    # Left out as the message says, it is not read at all: the rest makes the reference.
    record, _ = file_reference(tmp_path / "t.parquet", "m", created=NOW, drop=["when"])
    assert [key for key, _, _ in record.features()] == ["input.x"]
    with pytest.raises(ReferenceFileError,
                       match="--drop names 'y', which no row of the file has \\(its columns: 'when', 'x'\\)"):
        file_reference(tmp_path / "t.parquet", "m", created=NOW, drop=["when", "y"])
    pq.write_table(pa.table({"x": [1.0, float("inf")]}), tmp_path / "inf.parquet")
    with pytest.raises(ReferenceFileError, match=r"inf\.parquet row 2: 'x' is inf, not a finite number"):
        list(read_rows(tmp_path / "inf.parquet"))
    with pytest.raises(ReferenceFileError, match="not a Parquet file pyarrow can read"):
        list(read_rows(write(tmp_path / "fake.parquet", "a,b\n1,2\n")))


def test_parquet_without_pyarrow_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.import_module

    def no_pyarrow(name: str, package: str | None = None) -> Any:
        if name.startswith("pyarrow"):
            raise ImportError(f"No module named {name!r}")
        return real(name, package)

    monkeypatch.setattr(reference_module.importlib, "import_module", no_pyarrow)
    needs = r"b\.parquet: reading Parquet needs pyarrow: pip install 'inferwatch\[parquet\]'"
    with pytest.raises(ReferenceFileError, match=needs):
        list(read_rows(write(tmp_path / "b.parquet", "PAR1")))


# -- building a reference --------------------------------------------------------------------------


def test_reference_from_rows(tmp_path: Path) -> None:
    rows = "".join(f"{i},{'ab'[i % 2]},yes\n" for i in range(50))
    path = write(tmp_path / "b.csv", "x,c,output.label\n" + rows)
    record, notes = file_reference(path, "m", created=NOW)
    assert (record.model, record.source, record.events, record.model_version) == ("m", "file", 50, None)
    assert record.origin == str(path.resolve())
    assert notes == []
    assert record.features() == [("input.c", "categorical", 50), ("input.x", "numeric", 50),
                                 ("output.label", "categorical", 50)]
    summary = WindowSummary.from_dict(record.summary)
    assert sorted(summary.values("input.x").tolist()) == [float(i) for i in range(50)]
    assert summary.counts("input.c") == {"a": 25, "b": 25}


def test_reference_from_events_skips_other_models(tmp_path: Path) -> None:
    events = [make_event(float(i), model="m" if i % 3 else "other", model_version="v7",
                         features={"x": float(i)}, output=EventOutput(label="cat"))
              for i in range(30)]
    events.append(make_event(31.0, model=None, features={"x": 99.0}))  # no model: counts as m's
    record, notes = file_reference(events_file(tmp_path / "e.jsonl", events), "m", created=NOW)
    assert record.events == 21
    assert notes == ["skipped 10 events of other models: other (10)",
                     "model version 'v7' taken from the events"]
    assert record.model_version == "v7"
    keys = {key for key, _, _ in record.features()}
    assert {"input.x", "output.label", "ops.latency_ms", "ops.error"} <= keys
    summary = WindowSummary.from_dict(record.summary)
    assert 99.0 in summary.values("input.x").tolist()
    assert 0.0 not in summary.values("input.x").tolist()  # event 0 was the other model's


def test_reference_from_events_measures_text_as_the_detector_does(tmp_path: Path) -> None:
    text = "Wie kann ich mein Passwort zurücksetzen, Konto {}?"
    events = [make_event(float(i), text=text.format(i)) for i in range(6)]
    record, _ = file_reference(events_file(tmp_path / "e.jsonl", events), "model-a", created=NOW)
    summary = WindowSummary.from_dict(record.summary)
    assert summary.counts("text.script") == {"latin": 6}
    assert summary.counts("text.language") == {"de": 6}
    assert len(summary.ngram_rows()) == 6  # hashed n-grams for the text domain classifier
    assert all(row for row in summary.ngram_rows())


def test_reference_versions_given_or_mixed(tmp_path: Path) -> None:
    events = [make_event(float(i), model_version=f"v{i % 2}", features={"x": 1.0}) for i in range(4)]
    path = events_file(tmp_path / "e.jsonl", events)
    record, notes = file_reference(path, "model-a", created=NOW)
    assert record.model_version is None
    assert notes == ["the events carry 2 model versions (v0, v1); pass --model-version to record which one "
                     "this reference is"]
    record, notes = file_reference(path, "model-a", created=NOW, model_version="v1")
    assert (record.model_version, notes) == ("v1", [])


def test_reference_truncated_file_notes_it(tmp_path: Path) -> None:
    path = write(tmp_path / "b.csv", "x\n" + "".join(f"{i}\n" for i in range(20)))
    record, notes = file_reference(path, "m", created=NOW, max_rows=5)
    assert record.events == 5
    assert record.origin.endswith("b.csv (first 5 rows)")
    assert notes == [f"read the first 5 rows of {path} and left the rest (raise --max-rows to read more)"]


def test_reference_with_nothing_to_use(tmp_path: Path) -> None:
    with pytest.raises(ReferenceFileError, match=r"empty\.csv: no rows"):
        file_reference(write(tmp_path / "empty.csv", "x,y\n"), "m", created=NOW)
    events = [make_event(0.0, model="a"), make_event(1.0, model="b"), make_event(2.0, model="a")]
    with pytest.raises(ReferenceFileError, match=r"no events of model 'm' \(it has a \(2\), b \(1\)\)"):
        file_reference(events_file(tmp_path / "e.jsonl", events), "m", created=NOW)


def test_record_validation_and_public_form() -> None:
    with pytest.raises(ValueError, match="created must carry a UTC offset"):
        record(created=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="source"):
        record(source="guess")
    shifted = record(created=datetime(2026, 5, 1, 14, tzinfo=timezone(timedelta(hours=2))))
    assert shifted.created == NOW
    assert shifted.created.tzinfo == UTC
    public = record().public_dict()
    assert "summary" not in public
    assert public["features"] == {"input.c": {"type": "categorical", "n": 1},
                                  "input.x": {"type": "numeric", "n": 1}}
    assert public["created"] == "2026-05-01T12:00:00Z"


# -- persistence -----------------------------------------------------------------------------------


def test_sqlite_store_keeps_references(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    assert store.list_references() == []
    assert store.load_reference("m") is None
    first, other = record("m"), record("a-model", source="warmup", origin="2026-05-01T00:00Z..01:00Z")
    store.save_reference(first)
    store.save_reference(other)
    assert store.load_reference("m") == first
    assert [r.model for r in store.list_references()] == ["a-model", "m"]
    newer = record("m", model_version="2", events=7, created=NOW + timedelta(days=1))
    store.save_reference(newer)  # one per model: a new one replaces the old
    assert store.load_reference("m") == newer
    assert len(store.list_references()) == 2
    store.close()

    reopened = SQLiteStore(tmp_path / "s.db")  # a restart keeps them
    assert reopened.load_reference("m") == newer
    assert reopened.delete_reference("m") is True
    assert reopened.delete_reference("m") is False
    assert reopened.delete_reference("never") is False
    assert reopened.list_references() == [other]
    reopened.close()


def test_sqlite_store_from_before_references_gains_the_table(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    SQLiteStore(path).close()
    with sqlite3.connect(path) as conn:  # what a store written by an older inferwatch looks like
        conn.execute("DROP TABLE drift_references")
    store = SQLiteStore(path)
    store.save_reference(record())
    assert store.load_reference("m") == record()
    store.close()


def test_elasticsearch_document_round_trip() -> None:
    names = IndexNames("iw")
    assert names.references == "iw-drift-references"
    template = references_template(names)
    assert template["index_patterns"] == ["iw-drift-references"]
    props = REFERENCE_MAPPINGS["properties"]["inferwatch"]["properties"]
    assert props["reference"] == {"type": "object", "enabled": False}  # the summary: stored, not indexed
    assert REFERENCE_MAPPINGS["dynamic"] is False
    rec = record(model_version="3")
    doc = reference_document(rec)
    assert doc["@timestamp"] == "2026-05-01T12:00:00.000000Z"
    assert (doc["inferwatch"]["model"], doc["inferwatch"]["model_version"]) == ("m", "3")
    assert reference_from_source(json.loads(json.dumps(doc))) == rec
    assert "model_version" not in reference_document(record())["inferwatch"]


def test_docstring_examples() -> None:
    result = doctest.testmod(reference_module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
