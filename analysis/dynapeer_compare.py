"""``invoke dynapeer-compare``: server load of the VoD policies from the formula, the simulation and the
emulation side by side, with startup latency and continuity per policy (docs/dynapeer.md).

For each seed and policy it generates the emulated scenario (:mod:`analysis.dynapeer_scenarios`), runs it
(:func:`scenarios.run.run_scenario`, one run at a time), and measures from the bundle:

* server load: time average over the measured window ``[warm-up, horizon]`` (from the first client's start)
  of the concurrent server streams, each counted by its ``share`` of a whole stream (``stream_start`` /
  ``stream_end`` of the server), and the same from the bytes sent (``bytes_sent``: 8 bytes / (Pr x window));
* per session (viewer entity ``node.proc.s<session>``): continuity index and startup latency
  (:func:`analysis.metrics.viewer_metrics`);
* multicast: the groups in the routers' ``ip mroute`` dumps at the end of the run, the sessions that got a
  multicast part and those that did not (unicast mode).

The simulation (:func:`analysis.vod_sim.simulate`) and the formula (:func:`analysis.vod_model.server_load`)
use the same scaled parameters and the same request schedule. Results: ``<results>/dynapeer-compare/<stamp>/``
with ``runs.csv`` (one row per run), ``summary.csv`` (mean ± 95 % CI per policy), ``server_load.png``; the
table is printed.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.compare import mean_ci
from analysis.dynapeer_scenarios import VodSetup, vod_scenario
from analysis.events import load_events
from analysis.metrics import viewer_metrics
from analysis.vod_model import server_load
from analysis.vod_sim import simulate

POLICIES = ("unicast", "patching", "chaining", "promise", "pn2pm", "dynapeer_unicast", "dynapeer_multicast",
            "dynapeer_helpers")
QUICK = dict(time_factor=90.0, warmup_l=1.0, measure_l=1.5)  # warm-up >= L: steady state


def run_one(setup: VodSetup, results: Path, log: Callable[[str], None] = print) -> Path:
    """Generate and run one experiment; the bundle."""
    from scenarios.run import RunOptions, run_scenario

    sc = vod_scenario(setup)
    gen = results / "_generated"
    gen.mkdir(parents=True, exist_ok=True)
    path = gen / f"{sc['name']}-s{setup.seed}.yaml"
    path.write_text(json.dumps(sc, indent=1))  # JSON is YAML
    log(f"running {path.name}: {sc['description']}")
    outcome = run_scenario(path, RunOptions(results=results, seed=setup.seed))
    log(f"  -> {outcome.status}: {outcome.bundle}")
    return outcome.bundle


def _share_load(srv: pd.DataFrame, lo: float, hi: float) -> float:
    starts = srv[srv["event"] == "stream_start"]
    ends = srv[srv["event"] == "stream_end"].set_index("stream")["t"].to_dict()
    total = 0.0
    for _, row in starts.iterrows():
        a = float(row["t"])
        b = float(ends.get(row["stream"], hi))
        total += float(row.get("share", 1.0)) * max(0.0, min(b, hi) - max(a, lo))
    return total / (hi - lo)


def measure(bundle: Path, setup: VodSetup) -> dict[str, Any]:
    """Figures of one emulated run (see the module docstring)."""
    frame = load_events(bundle).frame
    wl = setup.workload
    warm, horizon = setup.warmup_min * 60.0, wl.duration_min * 60.0
    ready = frame[frame["event"] == "vod_client_ready"]
    origin = float(ready["t"].min()) if not ready.empty else float(frame["t"].min())
    lo, hi = origin + warm, origin + horizon
    srv = frame[frame["role"].astype(str) == "vod_server"]
    rate = wl.play_rate_kbps * 1000
    load = _share_load(srv, lo, hi) if not srv.empty else math.nan
    sent = srv[(srv["event"] == "bytes_sent") & (srv["t"] > lo) & (srv["t"] <= hi)]
    load_bytes = 8 * float(pd.to_numeric(sent["bytes"], errors="coerce").fillna(0).sum()) / (rate * (hi - lo))
    viewers = frame[frame["role"].astype(str) == "vod_client"]
    conts, starts, per = [], [], {}
    for (node, proc), rows in viewers.groupby([viewers["node"].astype(str), viewers["proc"].astype(str)]):
        if ".s" not in proc:
            continue
        vm = viewer_metrics(rows)
        if vm.continuity_index is not None:
            conts.append(vm.continuity_index)
        if vm.startup_latency_s is not None:
            starts.append(vm.startup_latency_s)
        per[f"{node}.{proc}"] = {"continuity": vm.continuity_index, "startup_s": vm.startup_latency_s,
                                 "due": vm.chunks_due, "stalls": vm.stalls}
    plans = viewers[viewers["event"] == "plan"]
    mc_sessions = sum(1 for s in plans["sources"] if any(x.get("kind") == "multicast" for x in (s or [])))
    groups = mroute_groups(bundle)
    prm = setup.params
    req = wl.requests(setup.seed)
    sim = simulate(setup.policy, prm, req, warmup_min=setup.warmup_min)
    due = viewers[viewers["event"] == "chunk_due"]
    on = due["on_time"].map(lambda v: v is True or v == 1.0)
    return {"policy": setup.policy, "network": setup.network, "seed": setup.seed, "bundle": str(bundle),
            "emulated": load, "emulated_bytes": load_bytes, "simulated": sim.mean,
            "formula": server_load(setup.policy, prm), "sessions": len(per),
            "continuity_all": float(on.mean()) if len(on) else math.nan,
            "continuity_min": min(conts) if conts else math.nan,
            "startup_mean_s": float(np.mean(starts)) if starts else math.nan,
            "startup_p95_s": float(np.percentile(starts, 95)) if starts else math.nan,
            "multicast_sessions": mc_sessions, "mroute_groups": len(groups),
            "stalls": int(sum(v["stalls"] for v in per.values()))}


def mroute_groups(bundle: Path) -> dict[str, list[str]]:
    """Router -> the 239.77.x.y groups in its ``ip mroute`` dump at the end of the run."""
    out: dict[str, list[str]] = {}
    for f in sorted((bundle / "state").glob("**/multicast-*.txt")):
        if "start" in f.parts:
            continue
        groups = sorted(set(re.findall(r"\(\s*[\d.]+\s*,\s*(239\.77\.\d+\.\d+)\s*\)", f.read_text())))
        if groups:
            out[f.stem.removeprefix("multicast-")] = groups
    return out


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    out = []
    for policy, g in rows.groupby("policy", sort=False):
        rec: dict[str, Any] = {"policy": policy, "runs": len(g)}
        for col in ("formula", "simulated", "emulated", "emulated_bytes", "continuity_all", "continuity_min",
                    "startup_mean_s"):
            n, mean, _, ci = mean_ci(g[col].tolist())
            rec[col] = mean
            rec[f"{col}_ci"] = ci
        out.append(rec)
    return pd.DataFrame(out)


def table_text(summary: pd.DataFrame) -> str:
    def f(v: float, ci: float, d: int = 1) -> str:
        if v is None or math.isnan(v):
            return "-"
        return f"{v:.{d}f}" + (f" ± {ci:.{d}f}" if ci is not None and not math.isnan(ci) else "")

    lines = [f"{'policy':20} {'formula':>8} {'simulated':>14} {'emulated':>14} {'emu/sim':>8} {'continuity':>16} "
             f"{'min cont.':>9} {'startup s':>12}"]
    for _, r in summary.iterrows():
        ratio = r["emulated"] / r["simulated"] - 1 if r["simulated"] else math.nan
        lines.append(f"{r['policy']:20} {r['formula']:8.2f} {f(r['simulated'], r['simulated_ci']):>14} "
                     f"{f(r['emulated'], r['emulated_ci']):>14} {100 * ratio:+7.1f}% "
                     f"{f(r['continuity_all'], r['continuity_all_ci'], 4):>16} {r['continuity_min']:9.3f} "
                     f"{f(r['startup_mean_s'], r['startup_mean_s_ci'], 2):>12}")
    return "\n".join(lines)


def plot(summary: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    x = np.arange(len(summary))
    w = 0.27
    ax.bar(x - w, summary["formula"], w, label="formula")
    ax.bar(x, summary["simulated"], w, yerr=summary["simulated_ci"].fillna(0), label="simulation", capsize=3)
    ax.bar(x + w, summary["emulated"], w, yerr=summary["emulated_ci"].fillna(0), label="emulation", capsize=3)
    ax.set_xticks(x, summary["policy"], rotation=20, ha="right")
    ax.set_ylabel("mean concurrent server streams")
    ax.set_title("DynaPeer VoD: server load per policy (mean ± 95 % CI over seeds)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def compare(policies: Sequence[str], seeds: Sequence[int], network: str, quick: bool, results: Path,
            kill_at: float | None = None, log: Callable[[str], None] = print) -> pd.DataFrame:
    base = VodSetup(network=network, kill_at=kill_at)
    if quick:
        base = replace(base, **QUICK)
    out = results / "dynapeer-compare" / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out.mkdir(parents=True, exist_ok=True)
    (out / "setup.json").write_text(json.dumps({**asdict(base), "policies": list(policies), "seeds": list(seeds)},
                                               indent=1, default=str))
    rows = []
    for seed in seeds:
        for policy in policies:
            setup = replace(base, policy=policy, seed=seed)
            bundle = run_one(setup, results, log)
            try:
                rows.append(measure(bundle, setup))
            except Exception as exc:  # noqa: BLE001 - a failed run is reported, the others go on
                log(f"  could not measure {bundle}: {type(exc).__name__}: {exc}")
            pd.DataFrame(rows).to_csv(out / "runs.csv", index=False)
    runs = pd.DataFrame(rows)
    summary = summarise(runs)
    summary.to_csv(out / "summary.csv", index=False)
    plot(summary, out / "server_load.png")
    log(table_text(summary))
    log(f"\nresults: {out}")
    return summary


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m analysis.dynapeer_compare")
    ap.add_argument("--policy", action="append", choices=POLICIES)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--network", default="multicast", choices=("multicast", "unicast", "mixed"))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--kill-at", type=float, default=None)
    ap.add_argument("--results", default="results")
    a = ap.parse_args(argv)
    compare(a.policy or POLICIES, range(1, a.seeds + 1), a.network, a.quick, Path(a.results), a.kill_at)
    return 0


if __name__ == "__main__":
    sys.exit(main())
