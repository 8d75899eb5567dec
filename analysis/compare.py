"""Comparisons across runs: run bundles and sweep folders -> mean ± 95% CI per metric, entity and parameter value.

:func:`compare` takes any mix of sweep folders (``sweep.json``, :mod:`scenarios.sweep`) and run bundles,
collects every run's tidy metrics (``metrics/metrics.csv`` of :mod:`analysis.tidy`; a bundle not yet
analysed is analysed) together with its parameters and seed, and aggregates per metric × entity ×
parameter value: n, mean, standard deviation and the half-width of the 95 % confidence interval of the
mean (Student t with n-1 degrees of freedom; none for n = 1).

Parameters are the ``--set`` paths of the sweeps; for bundles that are not part of a sweep, the fields
in which their scenario files differ (the seed aside). Only parameters that take more than one value
among the compared runs are kept. Runs that did not complete (failed, crashed, interrupted, never ran)
are left out and listed (``include_failed=True`` keeps runs that have metrics).

Written into the sweep folder (or ``comparison-<UTC stamp>/`` next to the first path when the runs do not
all belong to one sweep):

* ``comparison.csv``: the aggregate table (``entity_kind, entity, metric, unit, <parameters...>, n, mean,
  std, ci95, ci_low, ci_high, min, max, seeds``);
* ``comparison_runs.csv``: every run's metrics with its parameters and seed (the raw data);
* ``comparison_<kind>_<metric>.png``: metric versus parameter value, one line per entity, 95 % CI band
  and error bars, each run as a dot (loss, jitter, delay, goodput per flow; viewer and server figures);
* ``comparison.json``: parameters, runs used and left out, figures.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from ruamel.yaml import YAML

from analysis.flows import FLOW_COLUMNS
from analysis.tidy import METRICS_CSV, METRICS_DIR, TIDY_COLUMNS, analyse_bundle

COMPARISON_CSV = "comparison.csv"
RUNS_CSV = "comparison_runs.csv"
COMPARISON_JSON = "comparison.json"
SWEEP_JSON = "sweep.json"
DPI = 110

T975: dict[int, float] = {
    1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
    11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
    20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048,
    29: 2.045, 30: 2.042, 40: 2.021, 50: 2.009, 60: 2.000, 80: 1.990, 100: 1.984, 120: 1.980,
}
"""Two-sided 95 % critical values of Student's t (the 0.975 quantile) by degrees of freedom."""

PLOT_METRICS: dict[str, tuple[str, ...]] = {
    "flow": ("loss_pct", "jitter_ms", "delay_p50_ms", "delay_p95_ms", "goodput_kbps"),
    "viewer": ("continuity_index", "startup_latency_s", "rebuffering_ratio"),
    "server": ("upload_kbps_mean", "streams_mean"),
    "run": ("continuity_index_mean", "startup_latency_s_mean", "rebuffering_ratio", "peer_contribution",
            "savings", "server_upload_kbps_mean"),
}
"""The metrics of interest: drawn as figures and printed by default (comparison.csv has all)."""
MAX_PLOT_SERIES = 12
"""Entities (lines) per figure; viewers beyond it are left to the run-level aggregates."""

METRIC_LABELS: dict[str, str] = {
    "loss_pct": "packet loss",
    "loss_rfc3550_pct": "packet loss (RFC 3550)",
    "jitter_ms": "interarrival jitter (RFC 3550)",
    "delay_mean_ms": "one-way delay, mean",
    "delay_p50_ms": "one-way delay, median",
    "delay_p95_ms": "one-way delay, 95th percentile",
    "delay_p99_ms": "one-way delay, 99th percentile",
    "goodput_kbps": "goodput",
    "continuity_index": "continuity index",
    "continuity_index_mean": "continuity index (mean over viewers)",
    "startup_latency_s": "startup latency",
    "startup_latency_s_mean": "startup latency (mean over sessions)",
    "rebuffering_ratio": "rebuffering ratio",
    "peer_contribution": "peer contribution",
    "savings": "server savings vs. unicast",
    "upload_kbps_mean": "server upload rate, mean",
    "server_upload_kbps_mean": "server upload rate, mean",
    "streams_mean": "concurrent server streams, mean",
}

KIND_ORDER = {"flow": 0, "viewer": 1, "server": 2, "run": 3}
STAT_COLUMNS = ("n", "mean", "std", "ci95", "ci_low", "ci_high", "min", "max", "seeds")
UNSET = "(unset)"


def t_critical(df: int) -> float:
    """t_{0.975, df}: exact from the table up to 30, else the next smaller tabulated df (conservative)."""
    if df < 1:
        return math.nan
    if df in T975:
        return T975[df]
    below = [k for k in T975 if k < df]
    return T975[max(below)] if df <= 120 else 1.960


def mean_ci(values: Sequence[float]) -> tuple[int, float, float, float]:
    """(n, mean, sample std, 95 % CI half-width of the mean); std and CI are NaN for n < 2."""
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    n = int(arr.size)
    if n == 0:
        return 0, math.nan, math.nan, math.nan
    mean = float(arr.mean())
    if n < 2:
        return n, mean, math.nan, math.nan
    std = float(arr.std(ddof=1))
    return n, mean, std, t_critical(n - 1) * std / math.sqrt(n)


# --------------------------------------------------------------------------------------------------------------
# Collecting runs


@dataclass
class RunRef:
    """One run to compare: its bundle (None if it never got one), where it came from and its parameters."""

    bundle: Path | None
    label: str
    seed: int | None
    status: str
    error: str | None = None
    sweep: Path | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    scenario: Any = None
    """The run's scenario file as loaded YAML (for parameter values it has no record of)."""


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _load_yaml(path: Path) -> Any:
    try:
        return YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))
    except Exception:  # noqa: BLE001 - an unreadable scenario file only means no parameter values from it
        return None


def _bundle_status(manifest: dict[str, Any]) -> tuple[str, str | None]:
    status = str(manifest.get("status", "unknown"))
    crashes = manifest.get("crashed_processes") or []
    if status == "completed" and crashes:
        who = ", ".join(f"{c.get('node')}.{c.get('proc')}" for c in crashes if isinstance(c, dict))
        return "failed", f"crashed: {who}"
    return ("completed" if status == "completed" else "failed" if status != "interrupted" else status,
            manifest.get("error"))


def _sweep_runs(folder: Path) -> tuple[list[RunRef], list[str]]:
    data = _read_json(folder / SWEEP_JSON)
    if not isinstance(data.get("runs"), list):
        raise ValueError(f"{folder / SWEEP_JSON} is not a sweep record")
    keys = [str(g["path"]) for g in data.get("grid", []) if isinstance(g, dict) and "path" in g]
    refs = []
    for run in data["runs"]:
        bundle = folder / run["bundle"] if run.get("bundle") else None
        label = f"{folder.name}/{run.get('variant', '?')}-s{run.get('seed', '?')}"
        refs.append(RunRef(bundle, label, run.get("seed"), str(run.get("status", "unknown")), run.get("error"),
                           folder.resolve(), dict(run.get("parameters") or {})))
    return refs, keys


def _bundle_run(bundle: Path) -> RunRef:
    manifest = _read_json(bundle / "manifest.json")
    status, error = _bundle_status(manifest)
    sweep = manifest.get("sweep") if isinstance(manifest.get("sweep"), dict) else None
    if sweep:
        folder = Path(str(sweep.get("folder", "")))
        return RunRef(bundle, f"{folder.name}/{sweep.get('variant', '?')}-s{manifest.get('seed', '?')}",
                      manifest.get("seed"), status, error, folder.resolve(), dict(sweep.get("parameters") or {}))
    return RunRef(bundle, bundle.name, manifest.get("seed"), status, error)


def collect_runs(paths: Iterable[str | Path]) -> tuple[list[RunRef], list[str]]:
    """Every run under the given sweep folders and bundles (each bundle once), and the parameter names.

    Raises FileNotFoundError for a path that is neither a sweep folder nor a run bundle.
    """
    from scenarios.sweep import flatten

    runs: list[RunRef] = []
    keys: list[str] = []
    for raw in paths:
        path = Path(raw)
        if (path / SWEEP_JSON).is_file():
            refs, grid = _sweep_runs(path)
            runs += refs
            keys += [k for k in grid if k not in keys]
        elif (path / "manifest.json").is_file():
            ref = _bundle_run(path)
            runs.append(ref)
            keys += [k for k in ref.parameters if k not in keys]
        else:
            raise FileNotFoundError(f"{path}: neither a sweep folder (sweep.json) nor a run bundle (manifest.json)")
    seen: set[str] = set()
    unique = []
    for r in runs:
        ident = str(r.bundle.resolve()) if r.bundle is not None else f"{r.sweep}:{r.label}"
        if ident not in seen:
            seen.add(ident)
            unique.append(r)
    runs = unique
    for r in runs:
        if r.bundle is not None:
            r.scenario = _load_yaml(r.bundle / "scenario.yaml")
    # Bundles outside any sweep: the fields in which their scenarios differ are the parameters.
    plain = [r for r in runs if r.sweep is None and isinstance(r.scenario, dict)]
    if len(plain) > 1:
        flat = [flatten(r.scenario) for r in plain]
        every = sorted({k for f in flat for k in f}, key=lambda k: min(list(f).index(k) for f in flat if k in f))
        for k in every:
            if k == "seed" or k in keys:
                continue
            shown = {json.dumps(f.get(k, UNSET), sort_keys=True, default=str) for f in flat}
            if len(shown) > 1:
                keys.append(k)
    return runs, keys


def _lookup(data: Any, key: str) -> Any:
    """A parameter's value in a run's scenario (``--set`` addressing), or UNSET."""
    from scenarios.sweep import list_index

    node = data
    for seg in key.split("."):
        try:
            if isinstance(node, list):
                node = node[list_index(node, seg, "")]
            elif isinstance(node, dict) and seg in node:
                node = node[seg]
            else:
                return UNSET
        except ValueError:
            return UNSET
    return node


def show_value(value: Any) -> str:
    from scenarios.sweep import show_value as show

    return value if value is UNSET else show(value)


def _read_metrics(bundle: Path) -> pd.DataFrame:
    path = bundle / METRICS_DIR / METRICS_CSV
    if not path.is_file():
        analyse_bundle(bundle)
    frame = pd.read_csv(path, dtype={"entity_kind": str, "entity": str, "metric": str, "unit": str},
                        keep_default_na=False, na_values={"value": ["", "nan", "NaN"]})
    frame["value"] = pd.to_numeric(frame["value"], errors="coerce")
    return frame[list(TIDY_COLUMNS)]


def run_table(runs: Sequence[RunRef], keys: Sequence[str], include_failed: bool = False
              ) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """The long table of every usable run's metrics with its parameters (as text) and seed; and the runs
    left out, each with the reason."""
    frames = []
    excluded: list[dict[str, Any]] = []
    for r in runs:
        why = None
        if r.bundle is None or not r.bundle.is_dir():
            why = f"{r.status}: no bundle" + (f" ({r.error})" if r.error else "")
        elif r.status != "completed" and not include_failed:
            why = r.status + (f": {r.error}" if r.error else "")
        if why is None:
            try:
                frame = _read_metrics(r.bundle)  # type: ignore[arg-type]
            except Exception as exc:  # noqa: BLE001 - one unreadable bundle must not stop the comparison
                why = f"metrics unreadable: {exc.__class__.__name__}: {exc}"
        if why is not None:
            excluded.append({"run": r.label, "bundle": str(r.bundle) if r.bundle else None, "seed": r.seed,
                             "reason": why})
            continue
        frame.insert(0, "run", r.label)
        frame.insert(1, "bundle", str(r.bundle))
        frame.insert(2, "seed", r.seed)
        frame.insert(3, "status", r.status)
        for i, k in enumerate(keys):
            value = r.parameters[k] if k in r.parameters else _lookup(r.scenario, k)
            frame.insert(4 + i, k, show_value(value))
        frames.append(frame)
    cols = ["run", "bundle", "seed", "status", *keys, *TIDY_COLUMNS]
    long = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)
    return long[cols], excluded


# --------------------------------------------------------------------------------------------------------------
# Parameter values as numbers (for a numeric x axis)

_QUANTITY = re.compile(r"\s*(?P<num>[-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(?P<unit>[A-Za-z%/]*)\s*")


def numeric_axis(values: Sequence[str]) -> tuple[dict[str, float] | None, str]:
    """Parameter values (as text) -> numbers and a unit for the axis label, or (None, "") if they are not
    all quantities of one kind (``1%``/``8%``; ``10ms``/``1s``; ``800kbit``/``8mbit``; plain numbers)."""
    from scenarios.units import parse_duration, parse_rate

    parts = {v: _QUANTITY.fullmatch(v) for v in values}
    if values and all(parts.values()):
        units = {m.group("unit").lower() for m in parts.values() if m}
        if len(units) == 1 or units == {"", "%"}:
            unit = "%" if "%" in units else next(iter(units))
            return {v: float(m.group("num")) for v, m in parts.items() if m}, unit
    for parse, kind in ((parse_duration, "time"), (parse_rate, "rate")):
        try:
            nums = {v: parse(v) for v in values}
        except ValueError:
            continue
        top = max(abs(x) for x in nums.values()) if nums else 0.0
        if kind == "time":
            scale, unit = (1e3, "ms") if top < 1 else (1.0, "s")
        else:
            scale, unit = (1e-6, "Mbit/s") if top >= 1e6 else (1e-3, "kbit/s") if top >= 1e3 else (1.0, "bit/s")
        return {v: x * scale for v, x in nums.items()}, unit
    return None, ""


def _natural(text: str) -> tuple[Any, ...]:
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", str(text)))


def _value_order(long: pd.DataFrame, key: str) -> list[str]:
    seen = list(dict.fromkeys(long[key].tolist()))
    nums, _ = numeric_axis([v for v in seen if v != UNSET])
    if nums is not None:
        return sorted(seen, key=lambda v: (v == UNSET, nums.get(v, math.inf)))
    return seen


# --------------------------------------------------------------------------------------------------------------
# Aggregation


def aggregate(long: pd.DataFrame, params: Sequence[str]) -> pd.DataFrame:
    """n, mean, std, 95 % CI (half-width and bounds), min, max and the seeds per metric × entity × parameters."""
    group_cols = ["entity_kind", "entity", "metric", "unit", *params]
    cols = [*group_cols, *STAT_COLUMNS]
    if long.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for key, grp in long.groupby(group_cols, sort=False, dropna=False):
        values = grp["value"].to_numpy(dtype=float)
        n, mean, std, ci = mean_ci(values.tolist())
        finite = values[np.isfinite(values)]
        seeds = sorted({int(s) for s in grp["seed"].dropna()})
        rows.append([*key, n, mean, std, ci, mean - ci if n > 1 else math.nan, mean + ci if n > 1 else math.nan,
                     float(finite.min()) if finite.size else math.nan,
                     float(finite.max()) if finite.size else math.nan, " ".join(map(str, seeds))])
    out = pd.DataFrame(rows, columns=cols)
    metric_rank = {m: i for i, m in enumerate(FLOW_COLUMNS)}
    orders = {p: {v: i for i, v in enumerate(_value_order(long, p))} for p in params}
    out["_k"] = out["entity_kind"].map(lambda k: KIND_ORDER.get(k, 9))
    out["_e"] = out["entity"].map(_natural)
    out["_m"] = out["metric"].map(lambda m: (metric_rank.get(m, 999), m))
    sort_cols = ["_k", "_e", "_m"]
    for i, p in enumerate(params):
        out[f"_p{i}"] = out[p].map(orders[p])
        sort_cols.append(f"_p{i}")
    out = out.sort_values(sort_cols, kind="stable").drop(columns=sort_cols).reset_index(drop=True)
    return out


# --------------------------------------------------------------------------------------------------------------
# Figures


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "x"


def metric_label(metric: str, unit: str) -> str:
    label = METRIC_LABELS.get(metric, metric.replace("_", " "))
    return f"{label} ({unit})" if unit and unit not in ("ratio", "count") else label


def _plot_metric(agg: pd.DataFrame, long: pd.DataFrame, kind: str, metric: str, params: Sequence[str],
                 path: Path) -> bool:
    rows = agg[(agg["entity_kind"] == kind) & (agg["metric"] == metric)]
    raw = long[(long["entity_kind"] == kind) & (long["metric"] == metric)]
    if rows.empty or rows["n"].max() == 0:
        return False
    entities = list(dict.fromkeys(rows["entity"]))[:MAX_PLOT_SERIES]
    unit = str(rows["unit"].iloc[0])
    if params:
        xparam = max(params, key=lambda p: (long[p].nunique(), -list(params).index(p)))
        others = [p for p in params if p != xparam]
        order = _value_order(long, xparam)
        nums, xunit = numeric_axis([v for v in order if v != UNSET])
        if nums is not None and UNSET in order:
            nums = None
    else:
        xparam, others, order, nums, xunit = "", [], ["all runs"], None, ""
    positions = nums if nums is not None else {v: float(i) for i, v in enumerate(order)}

    def xs(frame: pd.DataFrame) -> np.ndarray:
        if not xparam:
            return np.zeros(len(frame))
        return frame[xparam].map(positions).to_numpy(dtype=float)

    series: list[tuple[str, pd.DataFrame, pd.DataFrame]] = []
    for ent in entities:
        sub, rsub = rows[rows["entity"] == ent], raw[raw["entity"] == ent]
        if others:
            for combo, grp in sub.groupby(others, sort=False):
                combo = combo if isinstance(combo, tuple) else (combo,)
                mask = np.logical_and.reduce([rsub[p] == v for p, v in zip(others, combo, strict=True)])
                label = f"{ent}: " + ", ".join(f"{p}={v}" for p, v in zip(others, combo, strict=True))
                series.append((label, grp, rsub[mask]))
        else:
            series.append((ent, sub, rsub))
    span = (max(positions.values()) - min(positions.values())) if len(positions) > 1 else 1.0
    dodge = 0.0 if nums is not None else min(0.08, 0.6 / max(1, len(series)))
    palette = sns.color_palette("deep", max(3, len(series)))
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.9):
        fig = Figure(figsize=(7.5, 4.6), dpi=DPI, layout="constrained")
        canvas = FigureCanvasAgg(fig)
        ax = fig.subplots()
        for i, (label, grp, rsub) in enumerate(series):
            colour = palette[i % len(palette)]
            shift = (i - (len(series) - 1) / 2) * dodge * (span if nums is not None else 1.0)
            grp = grp.assign(_x=xs(grp) + shift).sort_values("_x")
            x = grp["_x"].to_numpy(dtype=float)
            mean = grp["mean"].to_numpy(dtype=float)
            ci = grp["ci95"].to_numpy(dtype=float)
            ax.plot(x, mean, marker="o", color=colour, linewidth=1.8, label=label)
            has_ci = np.isfinite(ci)
            if has_ci.any():
                if nums is not None and has_ci.sum() > 1:
                    ax.fill_between(x[has_ci], (mean - ci)[has_ci], (mean + ci)[has_ci], color=colour, alpha=0.18,
                                    linewidth=0)
                ax.errorbar(x[has_ci], mean[has_ci], yerr=ci[has_ci], fmt="none", ecolor=colour, capsize=4,
                            linewidth=1.2)
            if len(rsub):
                ax.scatter(xs(rsub) + shift, rsub["value"].to_numpy(dtype=float), s=14, color=colour, alpha=0.45,
                           linewidths=0, zorder=3)
        if nums is None:
            ax.set_xticks(list(positions.values()), list(positions.keys()))
        elif len(positions) <= 12:
            ax.set_xticks(sorted(set(positions.values())), [f"{x:g}" for x in sorted(set(positions.values()))])
        if xparam:
            ax.set_xlabel(f"{xparam} ({xunit})" if xunit else xparam)
        ax.set_ylabel(metric_label(metric, unit))
        n_max, n_min = int(rows["n"].max()), int(rows["n"].min())
        n_text = f"n = {n_min}" if n_min == n_max else f"n = {n_min}..{n_max}"
        ax.set_title(f"mean over runs ({n_text} per value), 95% CI (Student t); dots: single runs",
                     fontsize="small")
        ax.legend(title=kind, fontsize="small", title_fontsize="small", loc="best")
        what = METRIC_LABELS.get(metric, metric)
        fig.suptitle(f"{what} vs. {xparam}" if xparam else what, fontweight="bold")
        canvas.print_png(str(path))
    return True


def make_plots(agg: pd.DataFrame, long: pd.DataFrame, params: Sequence[str], out: Path
               ) -> tuple[list[str], list[dict[str, str]]]:
    """One PNG per metric of interest present in the data; returns (files written, failures)."""
    done: list[str] = []
    failed: list[dict[str, str]] = []
    for kind, metrics in PLOT_METRICS.items():
        for metric in metrics:
            name = f"comparison_{kind}_{_safe(metric)}.png"
            try:
                if _plot_metric(agg, long, kind, metric, params, out / name):
                    done.append(name)
            except MemoryError:
                raise
            except Exception as exc:  # noqa: BLE001 - a broken figure must not stop the comparison
                failed.append({"file": name, "error": f"{exc.__class__.__name__}: {exc}"})
    return done, failed


# --------------------------------------------------------------------------------------------------------------
# The comparison


def _out_dir(paths: Sequence[Path], runs: Sequence[RunRef]) -> Path:
    sweeps = {r.sweep for r in runs}
    if len(sweeps) == 1 and None not in sweeps:
        folder = next(iter(sweeps))
        if folder is not None and folder.is_dir():
            return folder
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    base = paths[0].resolve().parent
    for n in range(1000):
        path = base / (f"comparison-{stamp}" + (f"-{n}" if n else ""))
        if not path.exists():
            return path
    raise RuntimeError("cannot create a comparison folder")


def compare(paths: Iterable[str | Path], out: str | Path | None = None, *, include_failed: bool = False,
            plots: bool = True) -> pd.DataFrame:
    """Compare runs (bundles and/or sweep folders): write comparison.csv, comparison_runs.csv,
    comparison.json and the figures, return the aggregate table.

    ``df.attrs`` holds ``parameters`` (the varying parameters, x axis first), ``constant`` (parameters with
    a single value), ``folder`` (where the files went), ``plots``, ``excluded`` (runs left out and why)
    and ``runs`` (number of runs used). Raises FileNotFoundError for a path that is neither kind, and
    ValueError when no run has metrics.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("nothing to compare: give run bundles and/or sweep folders")
    runs, keys = collect_runs(paths)
    long, excluded = run_table(runs, keys, include_failed)
    if long.empty:
        reasons = "; ".join(f"{e['run']}: {e['reason']}" for e in excluded[:5])
        raise ValueError(f"no run with metrics to compare ({len(runs)} run(s); {reasons})")
    params = [k for k in keys if long[k].nunique() > 1]
    constant = {k: str(long[k].iloc[0]) for k in keys if k not in params}
    agg = aggregate(long, params)
    folder = Path(out) if out is not None else _out_dir(paths, runs)
    folder.mkdir(parents=True, exist_ok=True)
    previous = _read_json(folder / COMPARISON_JSON)  # figures of an earlier comparison here are replaced
    for name in previous.get("plots", []) if isinstance(previous.get("plots"), list) else []:
        stale = folder / Path(str(name)).name
        if stale.name.startswith("comparison_") and stale.suffix == ".png" and stale.is_file():
            stale.unlink()
    agg.to_csv(folder / COMPARISON_CSV, index=False)
    long.to_csv(folder / RUNS_CSV, index=False)
    written, failed = make_plots(agg, long, params, folder) if plots else ([], [])
    n_runs = int(long["run"].nunique())
    (folder / COMPARISON_JSON).write_text(json.dumps({
        "schema": "streambed.comparison/1", "created": dt.datetime.now(dt.UTC).isoformat(),
        "inputs": [str(p) for p in paths], "parameters": params, "constant": constant,
        "runs": sorted(set(long["run"])), "excluded": excluded, "plots": written, "failed_plots": failed,
        "ci": "95% CI of the mean, Student t with n-1 degrees of freedom",
    }, indent=1, default=str) + "\n", encoding="utf-8")
    agg.attrs.update(parameters=params, constant=constant, folder=folder, plots=[folder / f for f in written],
                     failed_plots=failed, excluded=excluded, runs=n_runs)
    return agg


def fmt_ci(mean: float, ci: float, n: int) -> str:
    """``1.02 ± 0.35``: the CI to two significant digits, the mean to the same decimals."""
    if not math.isfinite(mean):
        return "-"
    if n < 2 or not math.isfinite(ci):
        return f"{mean:.4g}"
    if ci == 0:
        return f"{mean:.4g} ± 0"
    decimals = max(0, min(6, 1 - math.floor(math.log10(abs(ci)))))
    return f"{mean:.{decimals}f} ± {ci:.{decimals}f}"


def interesting(agg: pd.DataFrame) -> pd.DataFrame:
    """The rows of the metrics of interest (PLOT_METRICS)."""
    mask = np.zeros(len(agg), dtype=bool)
    for kind, metrics in PLOT_METRICS.items():
        mask |= ((agg["entity_kind"] == kind) & agg["metric"].isin(metrics)).to_numpy()
    return agg[mask]


def print_comparison(agg: pd.DataFrame, console: Console, all_metrics: bool = False) -> None:
    """A table: metric, entity, parameter value(s), mean ± 95% CI, n (metrics of interest unless all)."""
    params = list(agg.attrs.get("parameters", []))
    rows = agg if all_metrics else interesting(agg)
    table = Table(title=f"comparison of {agg.attrs.get('runs', '?')} run(s): mean ± 95% CI (Student t)")
    table.add_column("metric")
    table.add_column("entity")
    for p in params:
        table.add_column(p)
    table.add_column("mean ± 95% CI", justify="right")
    table.add_column("n", justify="right")
    previous = None
    for _, r in rows.iterrows():
        group = (r["entity_kind"], r["entity"], r["metric"])
        if previous is not None and group != previous:
            table.add_section()
        first = group != previous
        previous = group
        unit = "" if r["unit"] in ("ratio", "count", "") else f" ({r['unit']})"
        table.add_row(escape(f"{r['metric']}{unit}") if first else "", escape(str(r["entity"])) if first else "",
                      *[escape(str(r[p])) for p in params], fmt_ci(float(r["mean"]), float(r["ci95"]), int(r["n"])),
                      str(int(r["n"])))
    console.print(table)
    constant = agg.attrs.get("constant") or {}
    if constant:
        console.print("same in every run: " + escape(", ".join(f"{k}={v}" for k, v in constant.items())),
                      highlight=False, soft_wrap=True)
    for e in agg.attrs.get("excluded", []):
        console.print("[yellow]left out[/] " + escape(f"{e['run']}: {e['reason']}"), highlight=False, soft_wrap=True)
    folder = agg.attrs.get("folder")
    if folder is not None:
        console.print(f"comparison: {Path(folder) / COMPARISON_CSV}", highlight=False, soft_wrap=True)
        for p in agg.attrs.get("plots", []):
            console.print(f"  plot: {p}", highlight=False, soft_wrap=True)
        for f in agg.attrs.get("failed_plots", []):
            console.print("  [yellow]plot not drawn[/] " + escape(f"{f['file']}: {f['error']}"), soft_wrap=True)
