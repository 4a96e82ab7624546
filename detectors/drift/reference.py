"""Drift references: what a model's traffic is compared with, where it comes from, how it is kept.

A reference is a :class:`~inferwatch.detectors.drift.sketch.WindowSummary` of data known to be
good, one per model, kept in the store as a :class:`ReferenceRecord` so that a restarted detector
compares with the same thing. It comes from one of three sources:

- ``file``: a baseline file, ``inferwatch baseline set --model M FILE`` (:func:`file_reference`);
- ``warmup``: the first windows the detector sees of a model;
- ``rolling``: a lagged rolling window.

Baseline files (:func:`read_rows`), chosen by suffix:

- ``.csv`` / ``.tsv``: a header row names the features (a ``.csv`` whose header holds no comma
  but ``;``, tabs or ``|`` is read with that separator; with ``;``, ``0,5`` is the number 0.5).
  A cell that reads as a number is a
  number (an ``int`` when it has no fraction or exponent), ``true``/``false`` (any case) is a
  boolean, an empty cell or ``nan`` is missing, anything else is a string (a category).
- ``.jsonl`` / ``.ndjson``: one JSON object a line, either a row (feature name -> number, string,
  boolean or null) or an ``inferwatch.event/1`` event (a line with a ``schema`` key, or with a
  ``time`` and an ``input`` or ``output`` object), so a captured event log can be the baseline.
  A file holds rows or events, not both.
- ``.parquet``: columns of numbers, booleans or strings; needs pyarrow
  (``pip install 'inferwatch[parquet]'``).

The text files may be compressed (``base.csv.gz``, ``.bz2``, ``.xz``): read through
:func:`~inferwatch.detectors.sources.open_source`, as replay reads logs.

Columns named in ``as_text`` are read as text whatever they look like (a CSV cell as written,
a number in a JSONL or Parquet row as Python writes it): ``inferwatch baseline set`` does so for
a column of numbers that the model's events carry as text (labels ``"0"``/``"1"``).

Only the first ``max_rows`` rows are read (default 1,000,000; ``ReferenceFile.truncated`` says when
there were more): the summary keeps a bounded sample whatever the count, so more rows would cost
time and add nothing a drift test can see. A file that cannot be read raises
:class:`ReferenceFileError` naming the file, the line (or Parquet row) and what is wrong.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "base.csv"
>>> _ = path.write_text("amount,country,member\\n12.5,GB,true\\n,FR,false\\n")
>>> list(read_rows(path))
[{'amount': 12.5, 'country': 'GB', 'member': True}, {'amount': None, 'country': 'FR', 'member': False}]
"""

from __future__ import annotations

import csv
import decimal
import importlib
import itertools
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Collection, Generator, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType, TracebackType
from typing import IO, TYPE_CHECKING, Any, Final, Literal

from pydantic import BaseModel, Field, field_validator

from inferwatch.collectors.event import InferenceEvent, MalformedEvent, Scalar, decode_event
from inferwatch.detectors.sources import UNREADABLE, open_source

if TYPE_CHECKING:  # the sketch pulls numpy: imported where a summary is built
    from inferwatch.detectors.drift.sketch import WindowSummary

MAX_ROWS: Final = 1_000_000
ReferenceSource = Literal["file", "warmup", "rolling"]
Row = dict[str, Scalar]
ReferenceItem = InferenceEvent | Row  # what a baseline file yields: a row, or an event of a log
_SUFFIXES: Final = {
    ".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet",
}
_TEXT: Final = {suffix: kind for suffix, kind in _SUFFIXES.items() if kind != "parquet"}
_COMPRESSED: Final = (".gz", ".bz2", ".xz")
"""A text file compressed (``base.csv.gz``): named by the suffix before, read as replay reads logs."""
_INT = re.compile(r"[+-]?\d+")
_BATCH_ROWS: Final = 8192


class ReferenceFileError(ValueError):
    """A baseline file that cannot be used; the message names the file, where, and what to fix."""


class ReferenceRecord(BaseModel):
    """One model's drift reference as the store keeps it (one per model: a new one replaces it).

    ``summary`` is the reference's ``WindowSummary.to_dict()``, JSON the store keeps as it is
    without looking inside; ``origin`` says where it came from (a file, or a window's range).
    """

    model: str = Field(min_length=1)
    model_version: str | None = None
    source: ReferenceSource
    created: datetime
    events: int = Field(ge=0)
    origin: str
    summary: dict[str, Any]
    waiting: ReferenceRecord | None = None
    """A baseline file set for another ``model_version``, kept beside a warm-up of the version
    running now (drift's ``rebaseline_on_version``): it is the reference again when traffic of its
    version comes (the version a file was set for ahead of a rollout, or the one rolled back to)."""

    @field_validator("created")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("created must carry a UTC offset")
        return value.astimezone(UTC)

    def public_dict(self) -> dict[str, Any]:
        """The record as JSON-ready data for people, with feature counts instead of the summary."""
        data = self.model_dump(mode="json", exclude={"summary", "waiting"})
        data["features"] = {key: {"type": kind, "n": n} for key, kind, n in self.features()}
        if self.waiting is not None:
            data["waiting"] = self.waiting.model_dump(mode="json", exclude={"summary", "waiting"})
        return data

    def features(self) -> list[tuple[str, str, int]]:
        """``(feature key, "numeric" | "categorical", values in the sample)`` for each feature, by key."""
        from inferwatch.detectors.drift.sketch import WindowSummary

        summary = WindowSummary.from_dict(self.summary)
        counts = Counter(key for row in summary.rows() for key in row)
        return [(key, kind, counts[key]) for key, kind in sorted(summary.keys().items())]


class ReferenceFile(Iterator[ReferenceItem]):
    """The rows or events of a baseline file, read lazily; see the module docstring.

    ``rows`` counts what has been yielded so far; ``truncated`` turns true when the file had
    more than ``max_rows`` (the rest is not read). A Parquet file's columns named in ``skip``
    are not read at all (a timestamp column left out with ``--drop`` need not be readable); they
    are in ``skipped``.
    """

    def __init__(self, path: Path | str, *, max_rows: int = MAX_ROWS, as_text: Collection[str] = (),
                 skip: Collection[str] = ()) -> None:
        if max_rows < 1:
            raise ValueError(f"max_rows must be at least 1, got {max_rows}")
        self.path = Path(path)
        self.max_rows = max_rows
        self.rows = 0
        self.truncated = False
        self.skipped: set[str] = set()
        suffix = self.path.suffix.lower()
        kind = _SUFFIXES.get(suffix)
        if suffix in _COMPRESSED:  # base.csv.gz: a CSV file (Parquet compresses itself)
            inner = Path(self.path.stem).suffix.lower()
            suffix, kind = inner + suffix, _TEXT.get(inner)
        if kind is None:
            raise ReferenceFileError(
                f"{self.path}: unknown baseline file type {suffix or '(no suffix)'!r}; use one of "
                f"{', '.join(_SUFFIXES)} (a text one also compressed: {', '.join(_COMPRESSED)})")
        if self.path.is_dir():
            raise ReferenceFileError(f"{self.path}: a folder, not a file: name one baseline file")
        if not self.path.is_file():
            raise ReferenceFileError(f"{self.path}: no such file")
        cells = bool(as_text) and kind in ("csv", "tsv")
        if cells:
            items = _csv_rows(self.path, "\t" if kind == "tsv" else ",", keep_cells=True)
        elif kind == "parquet":
            items = _parquet_rows(self.path, frozenset(skip), self.skipped)
        else:
            items = _READERS[kind](self.path)
        if as_text:
            items = _as_text(items, frozenset(as_text), cells)
        self._items = self._limited(items)

    def __iter__(self) -> ReferenceFile:
        return self

    def __next__(self) -> ReferenceItem:
        try:
            return next(self._items)
        except UNREADABLE as exc:  # a compressed file cut short or corrupt
            raise ReferenceFileError(f"{self.path}: cannot be read after {self.rows:,} rows: it ends early "
                                     f"or is corrupt ({exc})") from None

    def close(self) -> None:
        """Stop reading and close the file."""
        self._items.close()

    def __enter__(self) -> ReferenceFile:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _limited(self, items: Iterator[ReferenceItem]) -> Generator[ReferenceItem, None, None]:
        for item in items:
            if self.rows == self.max_rows:
                self.truncated = True
                return
            self.rows += 1
            yield item


def read_rows(path: Path | str, *, max_rows: int = MAX_ROWS, as_text: Collection[str] = (),
              skip: Collection[str] = ()) -> ReferenceFile:
    """The rows (``dict`` of feature -> scalar) or events (:class:`InferenceEvent`) of a baseline file.

    Raises :class:`ReferenceFileError` (a ``ValueError``) for an unknown suffix or a missing file
    at once, and for a bad line or row when iteration reaches it.
    """
    return ReferenceFile(path, max_rows=max_rows, as_text=as_text, skip=skip)


def _as_text(items: Iterator[ReferenceItem], names: frozenset[str],
             csv_cells: bool) -> Iterator[ReferenceItem]:
    """Rows with the columns ``names`` as text: a CSV cell as it was written, a JSON or Parquet
    number as Python writes it. Events pass as they are."""
    for item in items:
        if isinstance(item, dict):
            cells: Any = item.pop(_CELLS, None) if csv_cells else None
            for name in names & item.keys():
                value = item[name]
                if cells is not None and value is not None:
                    item[name] = cells[name]
                elif isinstance(value, int | float) and not isinstance(value, bool):
                    item[name] = str(value)
        yield item


# -- building a reference from a file ---------------------------------------------------------


def file_reference(
    path: Path | str,
    model: str,
    *,
    created: datetime,
    model_version: str | None = None,
    max_rows: int = MAX_ROWS,
    text_features: Callable[[str], tuple[str, str]] | None = None,
    ngrams: Callable[[str], list[int]] | None = None,
    as_text: Collection[str] = (),
    drop: Collection[str] = (),
) -> tuple[ReferenceRecord, list[str]]:
    """Summarise a baseline file into ``model``'s reference; also the notes worth telling the user.

    Rows go through ``sketch.summarise_rows``; events are added to the summary as the detector
    adds live traffic, with the text measures of :mod:`.textstats` unless ``text_features`` and
    ``ngrams`` say otherwise, skipping events of other models (an event with no model counts as
    ``model``'s). Without ``model_version``, the one version the events carry (if one) is taken.
    ``drop`` names columns (or, in a file of events, input features; ``x`` or ``input.x``) to
    leave out; a name the file does not have raises :class:`ReferenceFileError` naming its columns.
    """
    from inferwatch.detectors.drift import textstats
    from inferwatch.detectors.drift.sketch import REFERENCE_SAMPLE_SIZE, WindowSummary, summarise_rows

    text_features = text_features or textstats.script_and_language
    ngrams = ngrams or textstats.ngram_hashes

    if not model.strip():
        raise ReferenceFileError("--model must name the model the reference is for (it is empty)")
    notes: list[str] = []
    others: Counter[str] = Counter()
    dropping = _Dropping(drop)
    source = read_rows(path, max_rows=max_rows, as_text=as_text, skip=dropping.columns)
    with source:
        first = next(source, None)
        if first is None:
            size = source.path.stat().st_size
            blank = "the file is empty" if not size else "a header alone, or blank lines"
            raise ReferenceFileError(f"{source.path}: no rows ({blank})")
        if isinstance(first, InferenceEvent):
            summary = WindowSummary(model, k=REFERENCE_SAMPLE_SIZE)
            for event in itertools.chain([first], source):
                if not isinstance(event, InferenceEvent):  # the reader refuses a mix; this is for mypy
                    raise ReferenceFileError(f"{source.path}: rows and events mixed")
                if event.model is not None and event.model != model:
                    others[event.model] += 1
                else:
                    summary.add(dropping.event(event))
            summary.seal(text_features, ngrams)
        else:
            filled: dict[str, bool] = {}
            rows = (dropping.row(row) for row in _rows_only(itertools.chain([first], source), {}))
            summary = summarise_rows(_rows_only(rows, filled), model)
            empty = [name for name, had in filled.items() if not had]
            if empty:
                notes.append(f"left out {column_names(empty)}: no value in any row")
            notes.extend(_content_notes(summary, as_text))
    dropping.found |= source.skipped
    dropping.seen |= source.skipped
    dropping.check(source.path)
    if summary.events == 0:
        raise ReferenceFileError(f"{source.path}: no events of model {model!r} (it has {_top(others)})")
    if not summary.keys():
        left = f"--drop left out {column_names(sorted(dropping.found))}" if dropping.found else (
            "no column has a value" if not isinstance(first, InferenceEvent) else
            "its events carry no input features, text or outputs")
        raise ReferenceFileError(f"{source.path}: no feature left to compare ({left}): drift would compare "
                                 "nothing with it; keep the columns the events carry as inputs")
    if others:
        notes.append(f"skipped {others.total():,} events of other models: {_top(others)}")
    origin = str(source.path.resolve())
    if source.truncated:
        origin += f" (first {source.rows:,} rows)"
        notes.append(f"read the first {source.rows:,} rows of {source.path} and left the rest "
                     "(raise --max-rows to read more)")
    versions = sorted(summary.versions)
    if model_version is not None and versions and model_version not in versions:
        notes.append(f"the events carry model version(s) {', '.join(versions[:5])}; the reference is "
                     f"recorded as version {model_version!r}, as --model-version says")
    if model_version is None and len(versions) == 1:
        model_version = versions[0]
        notes.append(f"model version {model_version!r} taken from the events")
    elif model_version is None and len(versions) > 1:
        notes.append(f"the events carry {len(versions)} model versions ({', '.join(versions[:5])}); "
                     "pass --model-version to record which one this reference is")
    record = ReferenceRecord(model=model, model_version=model_version, source="file", created=created,
                             events=summary.events, origin=origin, summary=summary.to_dict())
    return record, notes


class _Dropping:
    """The columns ``--drop`` leaves out of a baseline, and which of them the file had."""

    def __init__(self, names: Collection[str]) -> None:
        self.wanted = {name: name.removeprefix("input.") for name in names}
        self.columns = set(self.wanted.values())
        self.seen: set[str] = set()
        self.found: set[str] = set()

    def row(self, row: Row) -> Row:
        if not self.columns:
            return row
        self.seen.update(row)
        hit = self.columns.intersection(row)
        if not hit:
            return row
        self.found |= hit
        return {name: value for name, value in row.items() if name not in hit}

    def event(self, event: InferenceEvent) -> InferenceEvent:
        features = event.input.features
        kept = self.row(features) if features else features
        if kept is features:
            return event
        return event.model_copy(update={"input": event.input.model_copy(update={"features": kept})})

    def check(self, path: Path) -> None:
        """Raise naming each ``--drop`` name no row had, with the file's columns and a close one."""
        unknown = [name for name, column in self.wanted.items() if column not in self.found]
        if not unknown:
            return
        problems = []
        for name in unknown:
            close = closest_name(self.wanted[name], self.seen)
            problems.append(f"{name!r}" + (f" (did you mean {close!r}?)" if close else ""))
        have = listed(sorted(self.seen), quoted=True, most=10) if self.seen else "none"
        raise ReferenceFileError(f"{path}: --drop names {', '.join(problems)}, which no row of the file has "
                                 f"(its columns: {have})")


def _rows_only(items: Iterable[ReferenceItem], filled: dict[str, bool]) -> Iterator[Row]:
    """The rows, noting in ``filled`` each column name and whether any row gave it a value."""
    for item in items:
        if isinstance(item, InferenceEvent):  # the reader refuses a mix; this is for mypy
            raise ReferenceFileError("rows and events mixed")
        for name, value in item.items():
            if value is not None:
                filled[name] = True
            elif name not in filled:
                filled[name] = False
        yield item


IDENTIFIER_SHARE = 0.9
"""A text column with this share of distinct values or more (in 50 sampled rows or more) reads
as an identifier or a time, which live traffic never repeats."""


LABEL_NAMES: Final = frozenset({"label", "labels", "target", "class", "y", "ground_truth", "outcome",
                                "is_fraud", "churn", "churned"})
"""Column names that are a training set's label or target, not a model's input."""


def _content_notes(summary: WindowSummary, as_text: Collection[str] = ()) -> list[str]:
    """What in a baseline's columns will make drift fire on ordinary traffic: identifiers or
    times, numbers written as text (unless read so on purpose: ``as_text``), columns mixing
    numbers and text."""
    notes = []
    for key, kind in sorted(summary.keys().items()):
        if not key.startswith("input."):
            continue
        name = key.removeprefix("input.")
        types = summary.value_types(key)
        if kind == "categorical":
            counts = summary.counts(key)
            sampled = sum(counts.values())
            example = next(iter(counts), "")
            if counts and name not in as_text and all(_is_number(value) for value in counts):
                notes.append(
                    f"column {name!r} holds numbers written as text (e.g. {example!r}): events that carry "
                    "numbers would read as a change of value type; write them as numbers")
            elif sampled >= 50 and len(counts) >= IDENTIFIER_SHARE * sampled:
                notes.append(
                    f"column {name!r} has {len(counts):,} distinct values in {sampled:,} sampled rows: an "
                    "identifier or a time? If so, every live value will be new to the reference, as its own "
                    "rare values predict, and drift can tell nothing from it but its missing share: leave it "
                    f"out (--drop {name}) unless the model takes it as a feature (a city, a product: many "
                    "values, each repeated)")
        if name.casefold() in LABEL_NAMES:
            notes.append(f"column {name!r} looks like the model's label or target, which live events carry "
                         "as output.label, not as an input (drift would find it missing in every window): "
                         f"leave it out (--drop {name}), or name the column output.label to compare the "
                         "label mix")
        if len(types) > 1:
            text = sum(n for t, n in types.items() if t != "number")
            share = text / max(sum(types.values()), 1)
            notes.append(f"column {name!r} mixes numbers and text ({share:.0%} text in the sample); it is "
                         f"compared as {kind}, and the mix itself as its value types")
    return notes


def listed(names: Sequence[str], *, quoted: bool = False, most: int = 5) -> str:
    """``a, b, c`` or ``a, b, c, d, e and 3 more`` (``'a', 'b'`` when ``quoted``)."""
    shown = ", ".join(repr(n) if quoted else n for n in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def closest_name(name: str, names: Collection[str]) -> str | None:
    """The one of ``names`` that ``name`` probably means: the same but for case, else the closest
    spelling (difflib's), else ``None``.

    >>> closest_name("CLASS", {"class", "amount"}), closest_name("amout", {"class", "amount"})
    ('class', 'amount')
    """
    import difflib

    folded = {other.casefold(): other for other in names}
    if name.casefold() in folded:
        return folded[name.casefold()]
    close = difflib.get_close_matches(name, sorted(names), n=1)
    return close[0] if close else None


def column_names(names: list[str]) -> str:
    """``column 'a'`` or ``columns 'a', 'b' and 3 more``, for notes about a baseline's columns."""
    return f"column{'s' if len(names) > 1 else ''} {listed(names, quoted=True)}"


def _top(counts: Counter[str], shown: int = 5) -> str:
    top = [f"{name} ({n:,})" for name, n in counts.most_common(shown)]
    more = len(counts) - shown
    return ", ".join(top) + (f" and {more} more" if more > 0 else "")


# -- readers -----------------------------------------------------------------------------------


def _scalar(value: object, name: str, where: str) -> Scalar:
    """A file's value as a row value: NaN is missing; infinities and nested values are refused."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, decimal.Decimal):
        value = float(value)
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            raise ReferenceFileError(f"{where}: {name!r} is {value}, not a finite number")
        return value
    raise ReferenceFileError(
        f"{where}: {name!r} is a {type(value).__name__}; baseline values are numbers, strings, "
        "booleans or empty")


def _cell(text: str, name: str, where: str) -> Scalar:
    """A CSV cell read as what it looks like (see the module docstring)."""
    try:
        value = float(text)  # the common case first: a number
    except ValueError:
        cell = text.strip()
        low = cell.lower()
        if low in ("true", "false"):
            return low == "true"
        return cell or None
    cell = text.strip()
    if value - value != 0.0:  # NaN (missing) or an infinity (or a number too big for a float)
        if math.isnan(value):
            return None
        shown = cell if len(cell) <= 24 else cell[:20] + "..."
        raise ReferenceFileError(f"{where}: {name!r} is {shown}, not a finite number")
    return int(cell) if _INT.fullmatch(cell) else value


_CR_ALONE: Final = re.compile(rb"(?<=\r)(?!\n)")
"""Where a line ends in a lone carriage return (old Mac "CSV (Macintosh)" files): split there too."""


def _utf8_lines(fh: IO[bytes], path: Path) -> Iterator[str]:
    """The file's lines (ended by LF, CRLF or a lone CR) decoded one by one, so that bad bytes are
    reported on their own line (a text-mode file decodes ahead in blocks, and the CSV reader's
    line count is then behind)."""
    pieces = (piece for raw in fh for piece in _CR_ALONE.split(raw))
    for number, raw in enumerate(pieces, start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ReferenceFileError(
                f"{path} line {number}: not UTF-8 (byte 0x{raw[exc.start]:02x} at byte {exc.start + 1} of "
                "the line); save the file as UTF-8") from None
        yield text.removeprefix("\ufeff") if number == 1 else text


_CELLS: Final = "\x00cells"
"""Key under which a CSV row carries its cells as written, for columns to be read as text
(only while :func:`_as_text` reads the row; never a feature)."""


@contextmanager
def _opened(path: Path) -> Iterator[IO[bytes]]:
    """The file's bytes, decompressed when its first bytes say so (as ``replay`` reads logs)."""
    with open_source(path) as source:
        yield source.stream


def _separator(path: Path) -> str:
    """The separator of a ``.csv`` file: ``,`` unless its header has none and splits on ``;`` (as
    spreadsheets write CSV where the comma is the decimal mark), a tab or ``|``. A ``;`` file was
    read as one column named ``period;nswprice;…`` (an ML engineer's walk-through)."""
    with _opened(path) as fh:
        for raw in fh:
            head = raw.decode("utf-8", "replace").removeprefix("\ufeff")
            if head.strip():
                break
        else:
            return ","
    if "," in head:
        return ","
    counts = {sep: head.count(sep) for sep in (";", "\t", "|")}
    best = max(counts, key=lambda sep: counts[sep])
    return best if counts[best] else ","


_DECIMAL_COMMA: Final = re.compile(r"\s*[-+]?\d+,\d+\s*")


def _csv_rows(path: Path, delimiter: str = ",", keep_cells: bool = False) -> Iterator[ReferenceItem]:
    if delimiter == ",":
        delimiter = _separator(path)
    with _opened(path) as fh:
        reader = csv.reader(_utf8_lines(fh, path), delimiter=delimiter)
        names: list[str] | None = None
        while True:
            try:
                cells = next(reader, None)
            except csv.Error as exc:
                where = f"{path} line {reader.line_num + 1}"
                raise ReferenceFileError(f"{where}: cannot read CSV: {exc}") from None
            if cells is None:
                return
            where = f"{path} line {reader.line_num}"
            if not any(c.strip() for c in cells):
                continue  # a blank line
            if names is None:
                names = _header(cells, where)
                continue
            if len(cells) != len(names):
                raise ReferenceFileError(
                    f"{where}: {len(cells)} cells, but the header names {len(names)} columns")
            if delimiter == ";":  # a decimal comma: 0,5 is 0.5
                cells = [c.replace(",", ".") if _DECIMAL_COMMA.fullmatch(c) else c for c in cells]
            row: dict[str, Any] = {name: _cell(c, name, where) for name, c in zip(names, cells, strict=True)}
            if keep_cells:
                row[_CELLS] = {name: c.strip() for name, c in zip(names, cells, strict=True)}
            yield row


def _tsv_rows(path: Path) -> Iterator[ReferenceItem]:
    return _csv_rows(path, "\t")


def _header(cells: list[str], where: str) -> list[str]:
    names = [c.strip() for c in cells]
    for column, name in enumerate(names, start=1):
        if not name:
            raise ReferenceFileError(
                f"{where}: column {column} of the header has no name (a pandas index? write the "
                "file with index=False)")
    doubled = [n for n, count in Counter(names).items() if count > 1]
    if doubled:
        raise ReferenceFileError(f"{where}: the header names {doubled[0]!r} more than once")
    numbers = [name for name in names if _is_number(name)]
    if numbers:
        raise ReferenceFileError(
            f"{where}: the first row must name the features, but {numbers[0]!r} reads as a number "
            "(a file without a header row? add one; a feature named by a number: give it a name, "
            "e.g. f_2024)")
    return names


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _jsonl_items(path: Path) -> Iterator[ReferenceItem]:
    first: tuple[str, int] | None = None  # what the file holds ("rows" or "events"), and from which line
    with _opened(path) as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path} line {number}"
            try:
                obj = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
                raise ReferenceFileError(f"{where}: not JSON ({reason})") from None
            if not isinstance(obj, dict):
                raise ReferenceFileError(
                    f"{where}: expected a JSON object (a row or an event), got {type(obj).__name__}")
            kind = "events" if _is_event(obj) else "rows"
            if first is None:
                first = (kind, number)
            elif first[0] != kind:
                raise ReferenceFileError(
                    f"{where}: {'an event' if kind == 'events' else 'a plain row'}, but line {first[1]} "
                    f"began a file of {first[0]}; a baseline file holds rows or events, not both")
            if kind == "rows":
                yield _json_row(obj, where)
                continue
            try:
                yield decode_event(line)
            except MalformedEvent as exc:
                raise ReferenceFileError(f"{where}: not a valid inferwatch event: {exc.reason}") from None


def _is_event(obj: dict[str, Any]) -> bool:
    return "schema" in obj or (
        "time" in obj and (isinstance(obj.get("input"), dict) or isinstance(obj.get("output"), dict)))


def _json_row(obj: dict[str, Any], where: str) -> Row:
    row: Row = {}
    for name, value in obj.items():
        if isinstance(value, dict | list):
            raise ReferenceFileError(
                f"{where}: {name!r} is a JSON {'object' if isinstance(value, dict) else 'array'}; a row "
                "maps feature names to numbers, strings, booleans or null (an inferwatch event needs "
                "its \"schema\": \"inferwatch.event/1\")")
        row[name] = _scalar(value, name, where)
    return row


def _parquet_rows(path: Path, skip: frozenset[str] = frozenset(),
                  skipped: set[str] | None = None) -> Iterator[ReferenceItem]:
    """The rows of a Parquet file but its columns in ``skip``, which are not read (and are noted
    in ``skipped`` when the file has them)."""
    pa, pq = _pyarrow(path)
    try:
        parquet = pq.ParquetFile(path)
        schema = parquet.schema_arrow
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError, ArrowIOError an OSError
        raise ReferenceFileError(f"{path}: not a Parquet file pyarrow can read: {exc}") from None
    # A pandas index written with the frame (``__index_level_0__``, or a named index) is not a
    # model input: pandas' own metadata names it, and it is left out.
    index = {c for c in ((schema.pandas_metadata or {}).get("index_columns") or ()) if isinstance(c, str)}
    wanted = []
    for field in schema:
        if field.name in skip:
            if skipped is not None:
                skipped.add(field.name)
            continue
        if field.name in index:
            continue
        if not _plain_arrow_type(pa, field.type):
            raise ReferenceFileError(
                f"{path}: column {field.name!r} is {field.type}; baseline columns hold numbers, "
                f"booleans or strings (leave it out with --drop {field.name}, or convert it)")
        wanted.append(field.name)
    number = 0
    batches = parquet.iter_batches(batch_size=_BATCH_ROWS, columns=wanted)
    while True:
        try:
            batch = next(batches, None)
        except (OSError, ValueError) as exc:
            raise ReferenceFileError(f"{path} after row {number}: cannot read Parquet: {exc}") from None
        if batch is None:
            return
        for record in batch.to_pylist():
            number += 1
            where = f"{path} row {number}"
            yield {name: _scalar(value, name, where) for name, value in record.items() if name not in index}


def _pyarrow(path: Path) -> tuple[ModuleType, ModuleType]:
    try:
        return importlib.import_module("pyarrow"), importlib.import_module("pyarrow.parquet")
    except ImportError:
        raise ReferenceFileError(
            f"{path}: reading Parquet needs pyarrow: pip install 'inferwatch[parquet]' "
            "(or give the baseline as CSV or JSON Lines)") from None


def _plain_arrow_type(pa: ModuleType, arrow_type: Any) -> bool:
    types = pa.types
    if types.is_dictionary(arrow_type):
        return _plain_arrow_type(pa, arrow_type.value_type)
    checks = ("is_integer", "is_floating", "is_boolean", "is_string", "is_large_string", "is_string_view",
              "is_decimal", "is_null")
    return any(getattr(types, check, lambda _: False)(arrow_type) for check in checks)


_READERS: Final = {"csv": _csv_rows, "tsv": _tsv_rows, "jsonl": _jsonl_items, "parquet": _parquet_rows}
