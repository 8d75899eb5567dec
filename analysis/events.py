"""Step 1 of the analysis flow (events -> metrics -> plots -> report): load a run bundle's event logs.

Node processes write JSON lines through ``nodes.eventlog.EventLog`` into ``<bundle>/events/*.jsonl``
(see docs/bundle.md). :func:`load_events` turns all of them into one pandas DataFrame, sorted by time,
and never raises on bad content: a missing ``events/`` folder, empty files, a truncated last line
(a killed process), lines that are not JSON, JSON that is not an object, or records without a numeric
``t`` / a string ``event`` become :class:`Problem` records (file, line, kind, detail) instead, so that
reports can name what is missing.

The frame has the common columns ``t`` (float epoch seconds), ``node``, ``role``, ``proc``, ``event``
plus ``file`` (path relative to the bundle) and ``line`` (1-based line number), and one column per
other field found in any record (sparse: NaN where a record has no such field). Low-cardinality
string columns are pandas categoricals.

Speed: each file is parsed with a single ``json.loads`` over the whole file (one C call) and only a
file that fails that way is re-parsed line by line; records are grouped by their key tuple so that
columns are built once per record shape. One million events load in a few seconds.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

COMMON_COLUMNS: tuple[str, ...] = ("t", "node", "role", "proc", "event")
"""Fields every event record carries (docs/bundle.md, "Event records")."""

SOURCE_COLUMNS: tuple[str, ...] = ("file", "line")
"""Columns added by the loader: where each record came from."""

MAX_PROBLEMS_PER_KIND = 20
"""Per file and kind, list at most this many lines; the rest are summarised in one more Problem."""

# Problem kinds (stable strings: reports and tests match on them).
MISSING_DIR = "missing_dir"
NO_FILES = "no_event_files"
MISSING_FILE = "missing_file"
UNREADABLE = "unreadable"
EMPTY_FILE = "empty_file"
TRUNCATED_LINE = "truncated_line"
NOT_JSON = "not_json"
NOT_OBJECT = "not_object"
MISSING_FIELD = "missing_field"
BAD_FIELD = "bad_field"
MORE = "more"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the bundle's data: which file, which line (if any), what kind, in words."""

    file: str
    line: int | None
    kind: str
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.kind}: {self.detail}"


@dataclass
class EventFile:
    """Per-file bookkeeping: size, lines, how many events were kept, how many lines were rejected."""

    file: str
    bytes: int = 0
    lines: int = 0
    events: int = 0
    rejected: int = 0


@dataclass
class EventLoad:
    """The result of :func:`load_events`: the event frame, the problems met and per-file counts."""

    frame: pd.DataFrame
    problems: list[Problem] = field(default_factory=list)
    files: list[EventFile] = field(default_factory=list)


class _ProblemSink:
    """Collects problems for one file, capping how many lines of one kind are listed."""

    def __init__(self, rel: str) -> None:
        self.rel = rel
        self.items: list[Problem] = []
        self._counts: dict[str, int] = {}

    def add(self, line: int | None, kind: str, detail: str) -> None:
        n = self._counts.get(kind, 0) + 1
        self._counts[kind] = n
        if n <= MAX_PROBLEMS_PER_KIND:
            self.items.append(Problem(self.rel, line, kind, detail))

    def finish(self) -> list[Problem]:
        out = sorted(self.items, key=lambda p: -1 if p.line is None else p.line)
        for kind, n in self._counts.items():
            if n > MAX_PROBLEMS_PER_KIND:
                more = n - MAX_PROBLEMS_PER_KIND
                out.append(Problem(self.rel, None, MORE, f"{more} more '{kind}' lines not listed"))
        return out


def empty_frame() -> pd.DataFrame:
    """An event frame with the common and source columns and no rows."""
    return pd.DataFrame(
        {
            "t": pd.Series(dtype="float64"),
            **{c: pd.Series(dtype="object") for c in COMMON_COLUMNS[1:]},
            "file": pd.Series(dtype="object"),
            "line": pd.Series(dtype="int64"),
        }
    )


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _split_lines(data: bytes) -> tuple[list[bytes], bool]:
    """Split file content on ``\\n``; return the pieces and whether the last line lacked its newline."""
    parts = data.split(b"\n")
    if parts and parts[-1] == b"":
        parts.pop()
        return parts, False
    return parts, bool(parts)


def _parse_records(lines: list[bytes], unterminated: bool, sink: _ProblemSink) -> tuple[list[Any], list[int]]:
    """Parse JSON lines; return (values, line numbers). Bad lines become problems, never exceptions."""
    numbers = [i for i, raw in enumerate(lines, 1) if raw.strip()]
    last = len(lines)
    tail: list[Any] = []
    tail_no: list[int] = []
    if unterminated and numbers and numbers[-1] == last:
        # A killed writer can leave half a line: judge the last line on its own first.
        numbers.pop()
        try:
            tail = [json.loads(lines[last - 1])]
            tail_no = [last]
        except (ValueError, RecursionError):
            sink.add(last, TRUNCATED_LINE, "last line is incomplete (no newline, not valid JSON); ignored")
    values: list[Any] | None = None
    if numbers:
        try:
            text = b"[" + b",".join(lines[i - 1] for i in numbers) + b"]"
            parsed = json.loads(text)
            del text
            if isinstance(parsed, list) and len(parsed) == len(numbers):
                values = parsed
        except (ValueError, RecursionError):
            values = None
    if values is None:
        values = []
        kept: list[int] = []
        for i in numbers:
            try:
                values.append(json.loads(lines[i - 1]))
                kept.append(i)
            except UnicodeDecodeError:
                sink.add(i, NOT_JSON, "line is not valid UTF-8")
            except (ValueError, RecursionError) as exc:
                sink.add(i, NOT_JSON, f"not valid JSON ({str(exc)[:80]})")
        numbers = kept
    return values + tail, numbers + tail_no


class _Column:
    """One column of one record shape: ``kind`` is f(loat), i(nt), b(ool), c(ategorical str) or o(bject)."""

    __slots__ = ("kind", "data", "cats")

    def __init__(self, kind: str, data: np.ndarray, cats: list[Any] | None = None) -> None:
        self.kind = kind
        self.data = data
        self.cats = cats

    def take(self, mask: np.ndarray) -> _Column:
        return _Column(self.kind, self.data[mask], self.cats)


def _column(values: list[Any]) -> _Column:
    """Store one column compactly, choosing the representation from the set of Python types in it."""
    types = set(map(type, values))
    if types and types <= {float, int}:
        if types == {int}:
            try:
                return _Column("i", np.asarray(values, dtype=np.int64))
            except OverflowError:
                pass
        else:
            return _Column("f", np.asarray(values, dtype=np.float64))
    if types == {bool}:
        return _Column("b", np.asarray(values, dtype=bool))
    if types == {str}:
        codes, uniques = pd.factorize(np.asarray(values, dtype=object))
        return _Column("c", codes.astype(np.int32, copy=False), list(uniques))
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    return _Column("o", arr)


def _finite_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _valid_t(col: _Column) -> np.ndarray:
    """Boolean mask: ``t`` is a finite real number (bools are not numbers here)."""
    if col.kind in ("f", "i"):
        return np.isfinite(col.data.astype(np.float64, copy=False))
    return np.fromiter((_finite_number(v) for v in col.data), dtype=bool, count=len(col.data))


def _valid_event(col: _Column) -> np.ndarray:
    """Boolean mask: ``event`` is a non-empty string."""
    if col.kind == "c":
        good = np.asarray([c != "" for c in col.cats or []], dtype=bool)
        return good[col.data] if len(good) else np.zeros(len(col.data), dtype=bool)
    return np.fromiter((isinstance(v, str) and v != "" for v in col.data), dtype=bool, count=len(col.data))


class _Piece:
    """The records of one shape (same keys in the same order) from one file, as columns."""

    __slots__ = ("n", "cols")

    def __init__(self, n: int, cols: dict[str, _Column]) -> None:
        self.n = n
        self.cols = cols


def _node_proc_from_name(rel: str) -> tuple[str, str]:
    stem = Path(rel).name.removesuffix(".jsonl")
    node, _, proc = stem.partition(".")
    return node, proc or stem


def _group_by_shape(
    values: list[dict[str, Any]], numbers: list[int]
) -> list[tuple[tuple[str, ...], list[dict[str, Any]], list[int]]]:
    """Split records by their key tuple (the common case, one shape per file, costs one pass)."""
    shapes = list(map(tuple, values))
    if len(set(shapes)) == 1:
        return [(shapes[0], values, numbers)]
    index: dict[tuple[str, ...], list[int]] = {}
    for i, shape in enumerate(shapes):
        bucket = index.get(shape)
        if bucket is None:
            bucket = index[shape] = []
        bucket.append(i)
    groups = []
    for shape, idx in index.items():
        if len(idx) == 1:
            groups.append((shape, [values[idx[0]]], [numbers[idx[0]]]))
        else:
            pick = itemgetter(*idx)
            groups.append((shape, list(pick(values)), list(pick(numbers))))
    return groups


def _load_file(path: Path, rel: str) -> tuple[list[_Piece], list[Problem], EventFile]:
    info = EventFile(rel)
    sink = _ProblemSink(rel)
    try:
        data = path.read_bytes()
    except OSError as exc:
        sink.add(None, UNREADABLE, f"cannot read: {exc.strerror or exc}")
        return [], sink.finish(), info
    info.bytes = len(data)
    lines, unterminated = _split_lines(data)
    del data
    info.lines = len(lines)
    nonblank = sum(1 for raw in lines if raw.strip())
    if not nonblank:
        sink.add(None, EMPTY_FILE, "file has no events")
        return [], sink.finish(), info
    values, numbers = _parse_records(lines, unterminated, sink)
    del lines

    if set(map(type, values)) - {dict}:
        keep_v: list[Any] = []
        keep_n: list[int] = []
        for value, lineno in zip(values, numbers, strict=True):
            if type(value) is dict:
                keep_v.append(value)
                keep_n.append(lineno)
            else:
                sink.add(lineno, NOT_OBJECT, f"JSON value is not an object: {_describe(value)}")
        values, numbers = keep_v, keep_n
    groups = _group_by_shape(values, numbers) if values else []
    del values, numbers

    pieces: list[_Piece] = []
    default_node, default_proc = _node_proc_from_name(rel)
    for keys, recs, linenos in groups:
        missing = [k for k in ("t", "event") if k not in keys]
        if missing:
            for lineno in linenos:
                sink.add(lineno, MISSING_FIELD, f"record has no {' / '.join(repr(m) for m in missing)}")
            continue
        cols: dict[str, _Column] = {}
        for key in keys:
            # Fields that clash with the loader's own columns are kept under another name.
            name = f"{key}_field" if key in SOURCE_COLUMNS else key
            cols[name] = _column(list(map(itemgetter(key), recs)))
        cols["line"] = _Column("i", np.asarray(linenos, dtype=np.int64))
        ok = _valid_t(cols["t"]) & _valid_event(cols["event"])
        if not ok.all():
            for i in np.flatnonzero(~ok):
                rec = recs[i]
                what = []
                if not _finite_number(rec["t"]):
                    what.append(f"'t' is not a finite number: {_describe(rec['t'])}")
                if not (isinstance(rec["event"], str) and rec["event"]):
                    what.append(f"'event' is not a non-empty string: {_describe(rec['event'])}")
                sink.add(linenos[i], BAD_FIELD, "; ".join(what) or "bad field")
            cols = {name: col.take(ok) for name, col in cols.items()}
        n = int(ok.sum())
        if n == 0:
            continue
        cols["t"] = _Column("f", cols["t"].data.astype(np.float64))
        zeros = np.zeros(n, dtype=np.int32)
        if "node" not in cols:
            cols["node"] = _Column("c", zeros, [default_node])
        if "proc" not in cols:
            cols["proc"] = _Column("c", zeros, [default_proc])
        cols["file"] = _Column("c", zeros, [rel])
        pieces.append(_Piece(n, cols))
    info.events = sum(p.n for p in pieces)
    info.rejected = nonblank - info.events
    return pieces, sink.finish(), info


_CATEGORY_LIMIT = 100_000
"""A string column with more distinct values than this (and than half its rows) stays plain object."""


def _assemble_categorical(parts: list[tuple[int, _Column]], total: int) -> pd.Categorical | None:
    cats: dict[Any, int] = {}
    for _, col in parts:
        for c in col.cats or []:
            cats.setdefault(c, len(cats))
    if len(cats) > _CATEGORY_LIMIT and len(cats) > total // 2:
        return None
    order = sorted(cats)
    final = {c: i for i, c in enumerate(order)}
    codes = np.full(total, -1, dtype=np.int32)
    for start, col in parts:
        remap = np.asarray([final[c] for c in col.cats or []], dtype=np.int32)
        if len(remap):
            codes[start : start + len(col.data)] = remap[col.data]
    return pd.Categorical.from_codes(codes, categories=order)


def _assemble(pieces: list[_Piece]) -> pd.DataFrame:
    """Build one frame from all pieces: one full-length array per column, NaN where a record lacks it."""
    total = sum(p.n for p in pieces)
    starts = np.cumsum([0] + [p.n for p in pieces])
    names: dict[str, None] = {}
    for piece in pieces:
        names.update(dict.fromkeys(piece.cols))
    data: dict[str, Any] = {}
    for name in names:
        parts = [(int(starts[k]), p.cols[name]) for k, p in enumerate(pieces) if name in p.cols]
        kinds = {col.kind for _, col in parts}
        covered = sum(len(col.data) for _, col in parts) == total
        if kinds == {"c"}:
            cat = _assemble_categorical(parts, total)
            if cat is not None:
                data[name] = cat
                continue
        arr: np.ndarray
        if kinds == {"i"} and covered:
            arr = np.empty(total, dtype=np.int64)
        elif kinds == {"b"} and covered:
            arr = np.empty(total, dtype=bool)
        elif kinds <= {"i", "f"}:
            arr = np.full(total, np.nan, dtype=np.float64)
        else:
            arr = np.full(total, np.nan, dtype=object)
        for start, col in parts:
            values = col.data
            if col.kind == "c":
                values = np.asarray(col.cats, dtype=object)[values]
            arr[start : start + len(values)] = values
        data[name] = arr
    return pd.DataFrame(data)


def read_jsonl(path: Path, rel: str) -> tuple[list[dict[str, Any]], list[Problem]]:
    """Read any JSON-lines file tolerantly: the objects it holds and the problems met (never raises)."""
    sink = _ProblemSink(rel)
    try:
        data = path.read_bytes()
    except OSError as exc:
        sink.add(None, UNREADABLE, f"cannot read: {exc.strerror or exc}")
        return [], sink.finish()
    lines, unterminated = _split_lines(data)
    values, numbers = _parse_records(lines, unterminated, sink)
    out: list[dict[str, Any]] = []
    for value, lineno in zip(values, numbers, strict=True):
        if isinstance(value, dict):
            out.append(value)
        else:
            sink.add(lineno, NOT_OBJECT, f"JSON value is not an object: {_describe(value)}")
    return out, sink.finish()


def expected_event_files(bundle: Path) -> tuple[list[str], list[Problem]]:
    """Event files the bundle's ``processes.jsonl`` says should exist (``events/<node>.<proc>.jsonl``).

    Tolerant of the record layout: a record naming an ``events`` path uses it; otherwise a record with
    ``node`` and ``proc`` implies ``events/<node>.<proc>.jsonl``. Returns (relative paths, problems).
    """
    path = bundle / "processes.jsonl"
    if not path.is_file():
        return [], []
    records, problems = read_jsonl(path, "processes.jsonl")
    expected: list[str] = []
    for rec in records:
        rel: str | None = None
        ev = rec.get("events")
        if isinstance(ev, str) and ev:
            rel = ev
        elif isinstance(rec.get("node"), str) and isinstance(rec.get("proc"), str):
            rel = f"events/{rec['node']}.{rec['proc']}.jsonl"
        if rel and rel not in expected:
            expected.append(rel)
    return expected, problems


def load_events(bundle_dir: str | Path) -> EventLoad:
    """Load every ``events/*.jsonl`` file of a bundle into one frame sorted by (t, file, line).

    Never raises on bad content; see the module docstring for what becomes a :class:`Problem`.
    Files that ``processes.jsonl`` implies but that do not exist are reported as ``missing_file``.
    """
    bundle = Path(bundle_dir)
    problems: list[Problem] = []
    files: list[EventFile] = []
    paths: list[Path] = []
    events_dir = bundle / "events"
    if not events_dir.is_dir():
        problems.append(Problem("events/", None, MISSING_DIR, "the bundle has no events/ folder"))
    else:
        try:
            paths = sorted(p for p in events_dir.glob("*.jsonl") if not p.is_dir())
        except OSError as exc:
            problems.append(Problem("events/", None, UNREADABLE, f"cannot list: {exc}"))
        if not paths:
            problems.append(Problem("events/", None, NO_FILES, "no *.jsonl event files"))

    expected, proc_problems = expected_event_files(bundle)
    problems.extend(proc_problems)
    present = {f"events/{p.name}" for p in paths}
    for rel in expected:
        if rel not in present:
            problems.append(Problem(rel, None, MISSING_FILE, "listed in processes.jsonl; no such file"))

    pieces: list[_Piece] = []
    for path in paths:
        rel = f"events/{path.name}"
        try:
            file_pieces, file_problems, info = _load_file(path, rel)
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - last line of defence: never crash on content
            file_pieces, file_problems, info = (
                [],
                [Problem(rel, None, UNREADABLE, f"could not be parsed: {type(exc).__name__}: {exc}")],
                EventFile(rel),
            )
        pieces.extend(file_pieces)
        problems.extend(file_problems)
        files.append(info)

    if not pieces:
        return EventLoad(empty_frame(), problems, files)
    frame = _assemble(pieces)
    del pieces
    order = np.lexsort((frame["line"].to_numpy(), frame["file"].cat.codes.to_numpy(), frame["t"].to_numpy()))
    frame = frame.take(order).reset_index(drop=True)
    if "role" not in frame.columns:
        frame["role"] = pd.Series(np.nan, index=frame.index, dtype=object)
    lead = [c for c in (*COMMON_COLUMNS, *SOURCE_COLUMNS) if c in frame.columns]
    frame = frame[lead + [c for c in frame.columns if c not in lead]]
    return EventLoad(frame, problems, files)
