"""Step 3 of the analysis flow (events -> metrics -> plots -> report): PNG figures of one bundle.

:func:`make_plots` draws, from an :class:`analysis.tidy.Analysis`, only the figures the run has data
for, into ``<bundle>/metrics/``:

* ``delay_<flow>.png``: per flow, one-way delay over time and its CDF;
* ``flows_overview.png``: per-flow loss, jitter and delay (p50/p95) bars;
* ``startup_cdf.png``: CDF of startup latency over all viewer sessions;
* ``continuity.png``: continuity index (and rebuffering ratio) per viewer;
* ``server_load.png``: concurrent server streams and server upload rate over time.

and lists them in ``metrics/plots.json`` (file, title, caption; plus any plot that failed) for the
report. Matplotlib's object API with the Agg canvas is used, so no display and no global backend switch.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from analysis.tidy import METRICS_DIR, Analysis, analyse_bundle

PLOTS_JSON = "plots.json"
MAX_FLOW_PLOTS = 32
"""Per-flow delay figures are drawn for at most this many flows (the overview bars show all)."""
MAX_SCATTER_POINTS = 6000
DPI = 110


@dataclass(frozen=True)
class PlotInfo:
    """One figure written into metrics/: file name, title and a one-sentence caption."""

    file: str
    title: str
    caption: str


def safe_name(text: str) -> str:
    """A file-name-safe version of an entity name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "x"


def _figure(width: float, height: float) -> tuple[Figure, FigureCanvasAgg]:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    return fig, FigureCanvasAgg(fig)


def _save(fig: Figure, canvas: FigureCanvasAgg, path: Path) -> None:
    canvas.print_png(str(path))


def _ecdf(ax: Axes, values: np.ndarray, label: str | None = None, points: int = 2000) -> None:
    """Empirical CDF as a step line, drawn through at most ``points`` quantiles (exact shape, cheap)."""
    values = np.sort(values[np.isfinite(values)])
    if values.size == 0:
        return
    if values.size > points:
        probs = np.linspace(0.0, 1.0, points)
        xs = np.quantile(values, probs)
        ys = probs
    else:
        xs = values
        ys = np.arange(1, values.size + 1) / values.size
    # Start the staircase at 0 so that even a single value draws a visible step.
    xs = np.concatenate(([xs[0]], xs))
    ys = np.concatenate(([0.0], ys))
    ax.step(xs, ys, where="post", label=label, linewidth=1.6, marker="o" if values.size <= 30 else None,
            markersize=4)
    if values[0] == values[-1]:
        pad = max(abs(values[0]) * 0.1, 1e-3)
        ax.set_xlim(values[0] - pad, values[0] + pad)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("fraction of packets ≤ x")


TIME_LABEL = "scenario time (s)"
MAX_MARKS = 12


def _marks(ax: Axes, a: Analysis, labels: bool = True) -> None:
    """Dotted vertical lines at fired timeline actions (link changes, node stops), labelled at the top."""
    if a.origin is None or not a.marks or len(a.marks) > MAX_MARKS:
        return
    lo, hi = ax.get_xlim()
    for epoch, label in a.marks:
        x = epoch - a.origin
        if lo <= x <= hi:
            ax.axvline(x, color="0.35", linestyle=":", linewidth=1)
            if labels:
                ax.annotate(label, (x, 1.0), xycoords=("data", "axes fraction"), xytext=(2, -2),
                            textcoords="offset points", fontsize="x-small", color="0.3", va="top", rotation=90)
    ax.set_xlim(lo, hi)


def _rel(t: np.ndarray, origin: float | None) -> np.ndarray:
    return t - (origin if origin is not None else (float(np.nanmin(t)) if t.size else 0.0))


def _flow_title(row: pd.Series) -> str:
    src = row["src"] if isinstance(row["src"], str) else "?"
    dst = row["dst"] if isinstance(row["dst"], str) else "?"
    return f"Flow {row['entity']} ({src} → {dst})"


def _plot_flow_delay(a: Analysis, entity: str, row: pd.Series, path: Path) -> None:
    pk = a.flows.packets[entity]
    t = _rel(pk["t"].to_numpy(dtype=np.float64), a.origin)
    d = pk["delay_ms"].to_numpy(dtype=np.float64)
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.9):
        fig, canvas = _figure(11, 4)
        ax_t, ax_c = fig.subplots(1, 2, gridspec_kw={"width_ratios": [2, 1]})
        step = max(1, math.ceil(len(t) / MAX_SCATTER_POINTS))
        few = len(t) // step < 1500
        ax_t.scatter(t[::step], d[::step], s=9 if few else 4, alpha=0.6 if few else 0.35, linewidths=0,
                     color="tab:blue", label="packets" if step == 1 else f"every {step}th packet")
        if len(t) >= 50:
            bins = min(200, max(10, len(t) // 20))
            frame = pd.DataFrame({"t": t, "d": d})
            frame["bin"] = pd.cut(frame["t"], bins=bins)
            med = frame.groupby("bin", observed=True).agg(t=("t", "mean"), d=("d", "median"))
            ax_t.plot(med["t"], med["d"], color="tab:red", linewidth=1.4, label="median per time bin")
        _marks(ax_t, a)
        ax_t.set_xlabel(TIME_LABEL)
        ax_t.set_ylabel("one-way delay (ms)")
        ax_t.set_title("one-way delay over time")
        ax_t.legend(loc="upper right", fontsize="small")
        _ecdf(ax_c, d)
        ax_c.set_xlabel("one-way delay (ms)")
        ax_c.set_title("CDF of one-way delay")
        fig.suptitle(_flow_title(row), fontweight="bold")
        _save(fig, canvas, path)


def _plot_flows_overview(a: Analysis, path: Path) -> None:
    table = a.flows.table
    labels = [str(e) for e in table["entity"]]
    x = np.arange(len(labels))
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.9):
        fig, canvas = _figure(max(8.0, 0.5 * len(labels) + 6), 4.2)
        ax_l, ax_j, ax_d = fig.subplots(1, 3)
        palette = sns.color_palette("deep")
        ax_l.bar(x, table["loss_pct"].to_numpy(dtype=float), color=palette[3])
        ax_l.set_ylabel("loss (%)")
        ax_l.set_title("packet loss (sender-based)")
        ax_j.bar(x, table["jitter_ms"].to_numpy(dtype=float), color=palette[2])
        ax_j.set_ylabel("jitter (ms)")
        ax_j.set_title("RFC 3550 interarrival jitter")
        w = 0.4
        ax_d.bar(x - w / 2, table["delay_p50_ms"].to_numpy(dtype=float), w, label="p50", color=palette[0])
        ax_d.bar(x + w / 2, table["delay_p95_ms"].to_numpy(dtype=float), w, label="p95", color=palette[1])
        ax_d.set_ylabel("one-way delay (ms)")
        ax_d.set_title("one-way delay")
        ax_d.legend(fontsize="small", loc="lower right", framealpha=0.9)
        for ax in (ax_l, ax_j, ax_d):
            ax.set_xticks(x, labels, rotation=45 if len(labels) > 6 else 0, ha="right" if len(labels) > 6 else "center")
            ax.set_xlabel("flow")
        fig.suptitle("Probe flows: loss, jitter and delay", fontweight="bold")
        _save(fig, canvas, path)


def _plot_startup(a: Analysis, path: Path) -> None:
    values = np.asarray([s for vm in a.viewers.values() for s in vm.startup_latencies_s], dtype=float)
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.9):
        fig, canvas = _figure(6.5, 4.2)
        ax = fig.subplots()
        _ecdf(ax, values)
        ax.set_ylabel("fraction of sessions ≤ x")
        ax.set_xlabel("startup latency (s)")
        plural = "session" if values.size == 1 else "sessions"
        ax.set_title(f"CDF of startup latency ({values.size} {plural})", fontweight="bold")
        _save(fig, canvas, path)


def _plot_continuity(a: Analysis, path: Path) -> None:
    names = [n for n, vm in a.viewers.items() if vm.continuity_index is not None]
    ci = np.asarray([a.viewers[n].continuity_index for n in names], dtype=float)
    rb = np.asarray(
        [np.nan if a.viewers[n].rebuffering_ratio is None else a.viewers[n].rebuffering_ratio for n in names],
        dtype=float,
    )
    x = np.arange(len(names))
    rotate = len(names) > 8
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.9):
        fig, canvas = _figure(max(7.0, 0.35 * len(names) + 4), 4.2)
        ax_c, ax_r = fig.subplots(1, 2)
        ax_c.bar(x, ci, color=sns.color_palette("deep")[0])
        ax_c.set_ylim(0, 1.05)
        ax_c.set_ylabel("continuity index")
        ax_c.set_title("on-time chunks / chunks due")
        ax_r.bar(x, rb, color=sns.color_palette("deep")[3])
        ax_r.set_ylabel("rebuffering ratio")
        ax_r.set_title("stall time / (stall + play time)")
        for ax in (ax_c, ax_r):
            ax.set_xticks(x, names, rotation=60 if rotate else 0, ha="right" if rotate else "center")
            ax.set_xlabel("viewer")
        fig.suptitle("Viewers: playback continuity", fontweight="bold")
        _save(fig, canvas, path)


def _plot_server_load(a: Analysis, path: Path) -> None:
    load = a.server_total
    assert load is not None
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.9):
        fig, canvas = _figure(9, 5.5)
        ax_s, ax_u = fig.subplots(2, 1, sharex=True)
        if load.streams is not None:
            ts = np.append(_rel(load.streams.times, a.origin), _rel(np.asarray([load.end]), a.origin))
            vs = np.append(load.streams.values, load.streams.values[-1])
            ax_s.step(ts, vs, where="post", color="tab:blue", label="concurrent streams")
            ax_s.axhline(load.streams.mean, color="tab:blue", linestyle="--", linewidth=1,
                         label=f"mean {load.streams.mean:.3g}")
            if a.unicast_sessions is not None:
                ax_s.axhline(a.unicast_sessions.mean, color="tab:gray", linestyle=":", linewidth=1.2,
                             label=f"unicast would need {a.unicast_sessions.mean:.3g}")
            ax_s.legend(fontsize="small", loc="upper right")
        ax_s.set_ylabel("server streams")
        ax_s.set_title("concurrent server streams")
        if load.upload_bps.size:
            tu = _rel(np.append(load.upload_times, load.end), a.origin)
            rate = np.append(load.upload_bps, load.upload_bps[-1]) / 1000.0
            ax_u.step(tu, rate, where="post", color="tab:green", label="upload rate (1 s bins)")
            if load.upload_bps_mean is not None:
                ax_u.axhline(load.upload_bps_mean / 1000.0, color="tab:green", linestyle="--", linewidth=1,
                             label=f"mean {load.upload_bps_mean / 1000.0:.4g} kbit/s")
            ax_u.legend(fontsize="small", loc="upper right")
        ax_u.set_ylabel("server upload (kbit/s)")
        _marks(ax_s, a)
        _marks(ax_u, a, labels=False)
        ax_u.set_xlabel(TIME_LABEL)
        ax_u.set_title("server upload bit rate")
        fig.suptitle("Server load over time", fontweight="bold")
        _save(fig, canvas, path)


def _plan(a: Analysis) -> list[tuple[PlotInfo, Callable[[Path], None]]]:
    plans: list[tuple[PlotInfo, Callable[[Path], None]]] = []
    table = a.flows.table
    if len(table):
        drawn = 0
        for _, row in table.iterrows():
            entity = str(row["entity"])
            pk = a.flows.packets.get(entity)
            if pk is None or pk.empty or drawn >= MAX_FLOW_PLOTS:
                continue
            drawn += 1
            info = PlotInfo(
                f"delay_{safe_name(entity)}.png",
                f"{_flow_title(row)}: one-way delay",
                "One-way delay (receive time minus the send time carried in the packet) of every packet "
                "over time, with its empirical CDF.",
            )
            plans.append((info, lambda p, e=entity, r=row: _plot_flow_delay(a, e, r, p)))
        plans.append((
            PlotInfo("flows_overview.png", "Probe flows: loss, jitter and delay",
                     "Per flow: sender-based loss, RFC 3550 jitter and one-way delay p50/p95."),
            lambda p: _plot_flows_overview(a, p),
        ))
    if any(vm.startup_latencies_s for vm in a.viewers.values()):
        plans.append((
            PlotInfo("startup_cdf.png", "CDF of startup latency",
                     "First frame played minus play request, over all viewer sessions."),
            lambda p: _plot_startup(a, p),
        ))
    if any(vm.continuity_index is not None for vm in a.viewers.values()):
        plans.append((
            PlotInfo("continuity.png", "Continuity per viewer",
                     "Continuity index (chunks on time / chunks due) and rebuffering ratio per viewer."),
            lambda p: _plot_continuity(a, p),
        ))
    if a.server_total is not None and (a.server_total.streams is not None or a.server_total.upload_bps.size):
        plans.append((
            PlotInfo("server_load.png", "Server load over time",
                     "Concurrent server streams and server upload bit rate, with their means."),
            lambda p: _plot_server_load(a, p),
        ))
    return plans


def make_plots(analysis: Analysis) -> list[PlotInfo]:
    """Draw every figure the analysis has data for into metrics/, list them in metrics/plots.json.

    A figure that fails is skipped and recorded under ``failed`` in plots.json (never raises for that).
    """
    mdir = analysis.bundle / METRICS_DIR
    mdir.mkdir(parents=True, exist_ok=True)
    index = mdir / PLOTS_JSON
    if index.is_file():  # remove figures of a previous analysis of this bundle
        try:
            old = json.loads(index.read_text(encoding="utf-8"))
            for item in old.get("plots", []):
                stale = mdir / Path(str(item.get("file", ""))).name
                if stale.suffix == ".png" and stale.is_file():
                    stale.unlink()
        except (OSError, ValueError, AttributeError):
            pass
    done: list[PlotInfo] = []
    failed: list[dict[str, Any]] = []
    for info, draw in _plan(analysis):
        try:
            draw(mdir / info.file)
            done.append(info)
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - a broken figure must not stop the report
            failed.append({"file": info.file, "error": f"{type(exc).__name__}: {exc}"})
    index.write_text(
        json.dumps({"plots": [asdict(p) for p in done], "failed": failed}, indent=2, ensure_ascii=False) + "\n",
        encoding="utf-8",
    )
    return done


def plot_bundle(bundle_dir: str | Path) -> list[PlotInfo]:
    """Analyse a bundle (writing its metrics) and draw its figures."""
    return make_plots(analyse_bundle(bundle_dir))
