"""Step 2 of the analysis flow (events -> metrics -> plots -> report): one bundle's metrics, on disk.

:func:`analyse_bundle` loads the events (:mod:`analysis.events`), computes flow, viewer and server
metrics (:mod:`analysis.flows`, :mod:`analysis.metrics`) and writes into ``<bundle>/metrics/``:

* ``metrics.csv``: tidy table, one row per entity and metric: ``entity_kind, entity, metric, value, unit``
  (entity kinds: ``flow``, ``viewer``, ``server``, ``run``);
* ``summary.json``: the same figures nested per flow / viewer / server plus run-level aggregates; a
  metric the run has no events for is absent (never written as 0);
* ``problems.json``: what was missing or garbled (file, line, kind, detail) plus per-file counts.

It never raises on a broken bundle: anything that goes wrong becomes a problem. Plots and the report
(:mod:`analysis.plots`, :mod:`analysis.report`) read what this step returns or wrote.
"""

from __future__ import annotations

import csv
import json
import math
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from analysis.events import EventFile, EventLoad, Problem, empty_frame, load_events, read_jsonl
from analysis.flows import FLOW_COLUMNS, FlowResult, analyse_flows
from analysis.metrics import (
    SERVER_EVENTS,
    VIEWER_EVENTS,
    Level,
    ServerLoad,
    ViewerMetrics,
    delay_stats,
    percentile,
    savings,
    server_load,
    time_weighted_level,
    viewer_metrics,
)

SUMMARY_SCHEMA = "streambed.summary/1"
METRICS_DIR = "metrics"
METRICS_CSV = "metrics.csv"
SUMMARY_JSON = "summary.json"
PROBLEMS_JSON = "problems.json"
TIDY_COLUMNS = ("entity_kind", "entity", "metric", "value", "unit")
ENTITY_KINDS = ("flow", "viewer", "server", "run")
SUMMARY_SECTIONS = {"flow": "flows", "viewer": "viewers", "server": "servers"}

COUNT_UNITS = {"packets", "bytes", "count", "chunks"}
"""Units whose values are whole numbers (written as integers)."""

VIEWER_METRIC_UNITS: dict[str, str] = {
    "sessions": "count",
    "startup_latency_s": "s",
    "chunks_due": "chunks",
    "chunks_on_time": "chunks",
    "continuity_index": "ratio",
    "stalls": "count",
    "stall_time_s": "s",
    "play_time_s": "s",
    "rebuffering_ratio": "ratio",
    "playback_lag_mean_s": "s",
    "playback_lag_max_s": "s",
    "bytes_played": "bytes",
    "bytes_from_peers": "bytes",
    "bytes_from_server": "bytes",
    "peer_contribution": "ratio",
}

SERVER_METRIC_UNITS: dict[str, str] = {
    "streams_mean": "streams",
    "streams_peak": "streams",
    "upload_kbps_mean": "kbit/s",
    "upload_kbps_peak": "kbit/s",
    "bytes_sent": "bytes",
}

RUN_METRIC_UNITS: dict[str, str] = {
    "flows": "count",
    "packets_sent": "packets",
    "packets_received": "packets",
    "loss_pct": "%",
    "jitter_ms_mean": "ms",
    "jitter_ms_max": "ms",
    "delay_mean_ms": "ms",
    "delay_p50_ms": "ms",
    "delay_p95_ms": "ms",
    "delay_p99_ms": "ms",
    "goodput_kbps_total": "kbit/s",
    "viewers": "count",
    "sessions": "count",
    "startup_latency_s_mean": "s",
    "startup_latency_s_p50": "s",
    "startup_latency_s_p95": "s",
    "startup_latency_s_max": "s",
    "continuity_index_mean": "ratio",
    "continuity_index_min": "ratio",
    "stalls": "count",
    "rebuffering_ratio": "ratio",
    "peer_contribution": "ratio",
    "server_streams_mean": "streams",
    "server_streams_peak": "streams",
    "server_upload_kbps_mean": "kbit/s",
    "server_upload_kbps_peak": "kbit/s",
    "unicast_streams_mean": "streams",
    "savings": "ratio",
}
"""Run-level aggregates. Pooled means: loss over all packets, delay percentiles over all packets,
rebuffering = all stall time / (all stall + play time), peer contribution = all peer bytes / all bytes
played; ``unicast_streams_mean`` = time-averaged number of viewer sessions (what unicast would serve),
``savings`` = 1 - server_streams_mean / unicast_streams_mean."""


@dataclass(frozen=True)
class Metric:
    """One tidy row."""

    entity_kind: str
    entity: str
    metric: str
    value: int | float
    unit: str


@dataclass
class Analysis:
    """Everything :func:`analyse_bundle` computed, for plots and reports in the same process."""

    bundle: Path
    events: pd.DataFrame
    problems: list[Problem]
    files: list[EventFile]
    flows: FlowResult
    viewers: dict[str, ViewerMetrics] = field(default_factory=dict)
    servers: dict[str, ServerLoad] = field(default_factory=dict)
    server_total: ServerLoad | None = None
    unicast_sessions: Level | None = None
    metrics: list[Metric] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    origin: float | None = None
    """Time zero for plots (timeline start or run start from the manifest, else the first event), epoch s."""
    marks: list[tuple[float, str]] = field(default_factory=list)
    """Fired timeline events other than process starts: (epoch s, short label), for plots."""
    resolved: dict[str, Any] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)
    written: dict[str, Path] = field(default_factory=dict)

    @property
    def metrics_dir(self) -> Path:
        return self.bundle / METRICS_DIR

    def metrics_frame(self) -> pd.DataFrame:
        """The tidy table as a DataFrame (same rows as metrics.csv)."""
        return pd.DataFrame([asdict(m) for m in self.metrics], columns=list(TIDY_COLUMNS))


def round_value(value: float | int, unit: str = "") -> int | float:
    """The stored form of a figure: whole-number units as int, others to 6 significant digits.

    summary.json, metrics.csv and the report all carry this same value.
    """
    if unit in COUNT_UNITS or isinstance(value, bool | np.bool_):
        return int(round(float(value)))
    if isinstance(value, int | np.integer):
        return int(value)
    number = float(value)
    if number == 0 or not math.isfinite(number):
        return number
    return float(f"{number:.6g}")


def _present(value: Any) -> bool:
    if value is None:
        return False
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def read_json_file(path: Path, rel: str, problems: list[Problem], *, required: bool = True) -> dict[str, Any]:
    """A JSON object file of the bundle, or {} plus a problem when it is missing or garbled."""
    if not path.is_file():
        if required:
            problems.append(Problem(rel, None, "missing_file", "not in the bundle"))
        return {}
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError) as exc:
        problems.append(Problem(rel, None, "not_json", f"cannot be read as JSON: {str(exc)[:100]}"))
        return {}
    if not isinstance(data, dict):
        problems.append(Problem(rel, None, "not_object", "top level is not a JSON object"))
        return {}
    return data


def manifest_epoch(manifest: dict[str, Any], which: str) -> float | None:
    """Run start/end epoch from the manifest, tolerating a few layouts (``start_epoch``, ``start: {epoch}``,
    ``start: <number>``, ``epoch: {start}``)."""
    candidates: list[Any] = [
        manifest.get(f"{which}_epoch"),
        manifest.get(f"{which}ed_epoch"),
        manifest.get(f"{which}_time"),
        manifest.get(which),
    ]
    nested = manifest.get(which)
    if isinstance(nested, dict):
        candidates.extend([nested.get("epoch"), nested.get("t")])
    epoch = manifest.get("epoch")
    if isinstance(epoch, dict):
        candidates.append(epoch.get(which))
    for value in candidates:
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(value) and value > 0:
            return float(value)
    return None


def timeline_marks(bundle: Path) -> list[tuple[float, str]]:
    """(epoch, label) of each fired timeline action in ``timeline.jsonl`` (link changes, node stops, ...).

    Process starts (items given as lists) are left out; so is anything without an epoch time.
    """
    path = bundle / "timeline.jsonl"
    if not path.is_file():
        return []
    records, _ = read_jsonl(path, "timeline.jsonl")
    marks: list[tuple[float, str]] = []
    for rec in records:
        item, epoch = rec.get("item"), rec.get("epoch")
        if not isinstance(item, dict) or isinstance(epoch, bool) or not isinstance(epoch, int | float):
            continue
        what = [str(item.get("action", "event"))]
        what += [str(item[k]) for k in ("link", "node", "target") if isinstance(item.get(k), str)]
        marks.append((float(epoch), " ".join(what)))
    return marks


T = TypeVar("T")


def _guard(stage: str, problems: list[Problem], fn: Callable[[], T], default: T) -> T:
    """Run one analysis stage; an unexpected exception becomes a problem and the stage's default."""
    try:
        return fn()
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - the analysis must never crash on a broken bundle
        where = traceback.extract_tb(exc.__traceback__)[-1]
        at = f"{Path(where.filename).name}:{where.lineno}"
        detail = f"{stage} failed: {type(exc).__name__}: {exc} ({at})"
        problems.append(Problem("(analysis)", None, "analysis_error", detail))
        return default


def _entities(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Split records by process: entity name = node, or node.proc when a node runs several such processes."""
    if frame.empty:
        return {}
    nodes = frame["node"].astype(object).map(str).to_numpy()
    procs = frame["proc"].astype(object).map(str).to_numpy()
    pairs = sorted(set(zip(nodes, procs, strict=True)))
    per_node: dict[str, int] = {}
    for node, _ in pairs:
        per_node[node] = per_node.get(node, 0) + 1
    out: dict[str, pd.DataFrame] = {}
    for node, proc in pairs:
        name = node if per_node[node] == 1 else f"{node}.{proc}"
        out[name] = frame.loc[(nodes == node) & (procs == proc)]
    return out


def _select(events: pd.DataFrame, names: tuple[str, ...]) -> pd.DataFrame:
    if events.empty:
        return events
    return events.loc[np.isin(events["event"].astype(object).to_numpy(), names)]


class _Collector:
    def __init__(self) -> None:
        self.rows: list[Metric] = []

    def add(self, kind: str, entity: str, metric: str, value: Any, unit: str) -> None:
        if _present(value):
            self.rows.append(Metric(kind, entity, metric, round_value(value, unit), unit))


def _flow_metrics(out: _Collector, flows: FlowResult) -> None:
    for _, row in flows.table.iterrows():
        for col, unit in FLOW_COLUMNS.items():
            out.add("flow", str(row["entity"]), col, row[col], unit)


def _viewer_metrics(out: _Collector, viewers: dict[str, ViewerMetrics]) -> None:
    for name, vm in viewers.items():
        values: dict[str, Any] = {
            "sessions": vm.sessions,
            "startup_latency_s": vm.startup_latency_s,
            "playback_lag_mean_s": vm.playback_lag_mean_s,
            "playback_lag_max_s": vm.playback_lag_max_s,
            "bytes_played": vm.bytes_played,
            "bytes_from_peers": vm.bytes_from_peers,
            "bytes_from_server": vm.bytes_from_server,
            "peer_contribution": vm.peer_contribution,
        }
        if vm.chunks_due:
            values.update(
                chunks_due=vm.chunks_due,
                chunks_on_time=vm.chunks_on_time,
                continuity_index=vm.continuity_index,
            )
        if vm.play_time_s is not None:
            values.update(
                stalls=vm.stalls, stall_time_s=vm.stall_time_s, play_time_s=vm.play_time_s,
                rebuffering_ratio=vm.rebuffering_ratio,
            )
        for metric, unit in VIEWER_METRIC_UNITS.items():
            out.add("viewer", name, metric, values.get(metric), unit)


def _whole(value: float | None) -> int | float | None:
    """A level that is a whole number (a peak of a count) as int."""
    return int(value) if value is not None and float(value).is_integer() else value


def _kbps(value: float | None) -> float | None:
    return None if value is None else value / 1000.0


def _server_metrics(out: _Collector, servers: dict[str, ServerLoad]) -> None:
    for name, load in servers.items():
        values = {
            "streams_mean": load.streams_mean,
            "streams_peak": _whole(load.streams_peak),
            "upload_kbps_mean": _kbps(load.upload_bps_mean),
            "upload_kbps_peak": _kbps(load.upload_bps_peak),
            "bytes_sent": load.bytes_sent,
        }
        for metric, unit in SERVER_METRIC_UNITS.items():
            out.add("server", name, metric, values[metric], unit)


def _run_metrics(out: _Collector, a: Analysis) -> None:
    u = RUN_METRIC_UNITS

    def add(metric: str, value: Any) -> None:
        out.add("run", "run", metric, value, u[metric])

    table = a.flows.table
    if len(table):
        add("flows", table["flow"].nunique())
        known = table["sent"].notna()
        if known.any():
            add("packets_sent", float(table.loc[known, "sent"].sum()))
        add("packets_received", float(table["received"].fillna(0).sum()))
        if known.any():
            sent = float(table.loc[known, "sent"].sum())
            got = float(table.loc[known, "received"].fillna(0).sum())
            if sent > 0:
                add("loss_pct", 100.0 * (1.0 - got / sent))
        jit = table["jitter_ms"].dropna()
        if len(jit):
            add("jitter_ms_mean", float(jit.mean()))
            add("jitter_ms_max", float(jit.max()))
        if a.flows.packets:
            delays = np.concatenate([p["delay_ms"].to_numpy() for p in a.flows.packets.values()])
            stats = delay_stats(delays)
            if stats is not None:
                add("delay_mean_ms", stats.mean)
                add("delay_p50_ms", stats.p50)
                add("delay_p95_ms", stats.p95)
                add("delay_p99_ms", stats.p99)
        gp = table["goodput_kbps"].dropna()
        if len(gp):
            add("goodput_kbps_total", float(gp.sum()))

    if a.viewers:
        vms = list(a.viewers.values())
        add("viewers", len(vms))
        add("sessions", sum(v.sessions for v in vms))
        startups = [s for v in vms for s in v.startup_latencies_s]
        if startups:
            add("startup_latency_s_mean", float(np.mean(startups)))
            add("startup_latency_s_p50", percentile(startups, 50))
            add("startup_latency_s_p95", percentile(startups, 95))
            add("startup_latency_s_max", float(np.max(startups)))
        ci = [v.continuity_index for v in vms if v.continuity_index is not None]
        if ci:
            add("continuity_index_mean", float(np.mean(ci)))
            add("continuity_index_min", float(np.min(ci)))
        played = [v for v in vms if v.play_time_s is not None]
        if played:
            add("stalls", sum(v.stalls for v in played))
            stall = sum(v.stall_time_s for v in played)
            total = stall + sum(v.play_time_s or 0.0 for v in played)
            if total > 0:
                add("rebuffering_ratio", stall / total)
        peer = [v for v in vms if v.bytes_from_peers is not None and v.bytes_played is not None]
        played_bytes = sum(v.bytes_played or 0.0 for v in peer)
        if peer and played_bytes > 0:
            add("peer_contribution", sum(v.bytes_from_peers or 0.0 for v in peer) / played_bytes)

    total = a.server_total
    if total is not None:
        add("server_streams_mean", total.streams_mean)
        add("server_streams_peak", _whole(total.streams_peak))
        add("server_upload_kbps_mean", _kbps(total.upload_bps_mean))
        add("server_upload_kbps_peak", _kbps(total.upload_bps_peak))
        if a.unicast_sessions is not None:
            add("unicast_streams_mean", a.unicast_sessions.mean)
            add("savings", savings(total.streams_mean, a.unicast_sessions.mean))


def build_summary(a: Analysis) -> dict[str, Any]:
    """The nested summary.json content, built from ``a.metrics`` (so both files carry the same values)."""
    summary: dict[str, Any] = {"schema": SUMMARY_SCHEMA, "bundle": a.bundle.name}
    scenario = {k: a.resolved[k] for k in ("name", "description") if isinstance(a.resolved.get(k), str)}
    if scenario:
        summary["scenario"] = scenario
    summary["events"] = {
        "files": len(a.files),
        "events": int(len(a.events)),
        "problems": len(a.problems),
    }
    units: dict[str, str] = {}
    labels = {}
    if len(a.flows.table):
        for _, row in a.flows.table.iterrows():
            labels[str(row["entity"])] = {
                k: str(row[k]) for k in ("flow", "src", "dst") if isinstance(row[k], str)
            }
    for m in a.metrics:
        units[m.metric] = m.unit
        if m.entity_kind == "run":
            summary.setdefault("run", {})[m.metric] = m.value
            continue
        section = summary.setdefault(SUMMARY_SECTIONS[m.entity_kind], {})
        entry = section.get(m.entity)
        if entry is None:
            entry = section[m.entity] = dict(labels.get(m.entity, {})) if m.entity_kind == "flow" else {}
        entry[m.metric] = m.value
    summary["units"] = dict(sorted(units.items()))
    return summary


def _bundle_problems(a: Analysis) -> None:
    status = a.manifest.get("status")
    if isinstance(status, str) and status != "completed":
        a.problems.append(
            Problem("manifest.json", None, "run_status", f"run status is {status!r}: results may be partial")
        )
    path = a.bundle / "processes.jsonl"
    if path.is_file():
        records, problems = read_jsonl(path, "processes.jsonl")
        a.problems.extend(p for p in problems if p not in a.problems)
        for rec in records:
            if rec.get("crashed") is True:
                who = ".".join(str(rec[k]) for k in ("node", "proc") if k in rec) or "a process"
                code = rec.get("exit_code", rec.get("returncode", rec.get("rc")))
                detail = f"{who} crashed" + (f" (exit code {code})" if code is not None else "")
                a.problems.append(Problem("processes.jsonl", None, "process_crashed", detail))


def _probe_bad_problems(events: pd.DataFrame) -> list[Problem]:
    """One problem per sink that logged ``probe_bad`` datagrams (not valid probes, dropped)."""
    bad = _select(events, ("probe_bad",))
    out: list[Problem] = []
    if bad.empty:
        return out
    for name, rows in _entities(bad).items():
        reasons = rows["reason"].dropna().astype(str) if "reason" in rows.columns else pd.Series(dtype=str)
        example = f"; e.g. {reasons.iloc[0][:80]}" if len(reasons) else ""
        out.append(Problem(str(rows["file"].iloc[0]), None, "probe_bad",
                           f"{name}: {len(rows)} datagrams that were not valid probes{example}"))
    return out


def _write_metrics_csv(path: Path, metrics: list[Metric]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(TIDY_COLUMNS)
        for m in metrics:
            writer.writerow([m.entity_kind, m.entity, m.metric, repr(m.value), m.unit])


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")
    tmp.replace(path)


_LAST: list[tuple[tuple[str, int], Analysis]] = []
"""The most recent written Analysis, keyed by (bundle path, summary.json mtime): lets a report built
right after ``analyse_bundle`` draw its plots without analysing the bundle a second time."""


def _cache_key(bundle: Path) -> tuple[str, int] | None:
    try:
        return str(bundle.resolve()), (bundle / METRICS_DIR / SUMMARY_JSON).stat().st_mtime_ns
    except OSError:
        return None


def recent_analysis(bundle_dir: str | Path) -> Analysis | None:
    """The Analysis that wrote this bundle's current summary.json in this process, if it is still held."""
    key = _cache_key(Path(bundle_dir))
    if key is not None and _LAST and _LAST[0][0] == key:
        return _LAST[0][1]
    return None


def analyse_bundle(bundle_dir: str | Path, *, write: bool = True) -> Analysis:
    """Analyse one run bundle and (unless ``write=False``) write metrics.csv, summary.json, problems.json.

    Raises only if ``bundle_dir`` is not a directory (or the metrics folder cannot be written);
    anything wrong inside the bundle becomes a problem.
    """
    bundle = Path(bundle_dir)
    if not bundle.is_dir():
        raise FileNotFoundError(f"not a run bundle directory: {bundle}")
    problems: list[Problem] = []
    resolved = read_json_file(bundle / "resolved.json", "resolved.json", problems)
    manifest = read_json_file(bundle / "manifest.json", "manifest.json", problems)
    loaded = _guard("loading events", problems, lambda: load_events(bundle), None)
    if loaded is None:
        loaded = EventLoad(empty_frame())
    problems.extend(loaded.problems)
    events = loaded.frame

    a = Analysis(bundle, events, problems, loaded.files, analyse_flows(empty_frame()))
    a.resolved, a.manifest = resolved, manifest
    _guard("checking manifest and processes", problems, lambda: _bundle_problems(a), None)

    # Time zero: the timeline's start (manifest t0_epoch), else the run's start, else the first event.
    run_start = manifest_epoch(manifest, "t0") or manifest_epoch(manifest, "start")
    run_end = manifest_epoch(manifest, "end")
    a.marks = _guard("reading timeline.jsonl", problems, lambda: timeline_marks(bundle), [])
    if manifest.get("command") == "calibrate":  # calibration runs start no node processes
        problems[:] = [p for p in problems if p.kind not in ("missing_dir", "no_event_files")]
    a.origin = run_start if run_start is not None else (float(events["t"].min()) if len(events) else None)

    problems.extend(_guard("probe_bad records", problems, lambda: _probe_bad_problems(events), []))
    flows = _guard("flow metrics", problems, lambda: analyse_flows(events), None)
    if flows is not None:
        a.flows = flows
        problems.extend(flows.problems)

    viewer_rows = _select(events, tuple(VIEWER_EVENTS))

    def viewers() -> dict[str, ViewerMetrics]:
        out: dict[str, ViewerMetrics] = {}
        for name, rows in _entities(viewer_rows).items():
            vm = viewer_metrics(rows, end_time=run_end)
            out[name] = vm
            where = str(rows["file"].iloc[0])
            for note in sorted(set(vm.notes)):
                problems.append(Problem(where, None, "viewer_timeline", f"{name}: {note}"))
        return out

    a.viewers = _guard("viewer metrics", problems, viewers, {})

    server_rows = _select(events, tuple(SERVER_EVENTS))

    def servers() -> None:
        if server_rows.empty:
            return
        t = server_rows["t"].to_numpy(dtype=np.float64)
        lo = run_start if run_start is not None else float(t.min())
        hi = run_end if run_end is not None else float(max(t.max(), events["t"].max()))
        for name, rows in _entities(server_rows).items():
            load = server_load(rows, start=lo, end=hi)
            if load is not None:
                a.servers[name] = load
        a.server_total = server_load(server_rows, start=lo, end=hi)
        if a.server_total is not None and a.viewers:
            changes = [
                (t0, d)
                for vm in a.viewers.values()
                for (s0, s1) in vm.session_intervals
                if s0 is not None and s1 is not None
                for t0, d in ((s0, 1.0), (s1, -1.0))
            ]
            if changes:
                a.unicast_sessions = time_weighted_level(changes, lo, hi)

    _guard("server metrics", problems, servers, None)

    out = _Collector()
    _guard("flow table", problems, lambda: _flow_metrics(out, a.flows), None)
    _guard("viewer table", problems, lambda: _viewer_metrics(out, a.viewers), None)
    _guard("server table", problems, lambda: _server_metrics(out, a.servers), None)
    _guard("run aggregates", problems, lambda: _run_metrics(out, a), None)
    a.metrics = out.rows
    a.summary = build_summary(a)

    if write:
        mdir = a.metrics_dir
        mdir.mkdir(parents=True, exist_ok=True)
        _write_metrics_csv(mdir / METRICS_CSV, a.metrics)
        _write_json(mdir / SUMMARY_JSON, a.summary)
        _write_json(
            mdir / PROBLEMS_JSON,
            {
                "count": len(a.problems),
                "problems": [p.to_dict() for p in a.problems],
                "files": [asdict(f) for f in a.files],
            },
        )
        a.written = {
            "metrics": mdir / METRICS_CSV,
            "summary": mdir / SUMMARY_JSON,
            "problems": mdir / PROBLEMS_JSON,
        }
        key = _cache_key(bundle)
        _LAST.clear()
        if key is not None:
            _LAST.append((key, a))
    return a
