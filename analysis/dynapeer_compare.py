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
from analysis.dynapeer_scenarios import SERVER, VodSetup, vod_scenario
from analysis.events import load_events
from analysis.metrics import viewer_metrics
from analysis.vod_model import server_load
from analysis.vod_sim import simulate

POLICIES = ("unicast", "patching", "chaining", "promise", "pn2pm", "dynapeer_unicast", "dynapeer_multicast",
            "dynapeer_helpers")
QUICK = dict(time_factor=180.0, warmup_l=1.0, measure_l=1.5)  # 30-s videos; warm-up >= L: steady state


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


def clients_origin(frame: pd.DataFrame) -> float:
    """Time 0 of the request schedule: the clients' common spawn time (``epoch`` of ``vod_client_ready``)."""
    ready = frame[frame["event"] == "vod_client_ready"]
    if ready.empty:
        return float(frame["t"].min())
    if "epoch" in ready.columns and ready["epoch"].notna().any():
        return float(pd.to_numeric(ready["epoch"], errors="coerce").min())
    return float(ready["t"].min())


def _share_load(srv: pd.DataFrame, lo: float, hi: float, slot: float) -> float:
    """Time average over ``[lo, hi]`` of the server streams, each by its share. A stream sends chunk c at
    ``t0 + c * slot`` and logs ``stream_end`` right after its last chunk: it occupies the server until one chunk
    slot later (``[t0 + first * slot, t0 + end * slot)``, as a stream of the model)."""
    starts = srv[srv["event"] == "stream_start"]
    ends = srv[srv["event"] == "stream_end"].set_index("stream")["t"].to_dict()
    total = 0.0
    for _, row in starts.iterrows():
        a = float(row["t"])
        b = float(ends[row["stream"]]) + slot if row["stream"] in ends else hi
        total += float(row.get("share", 1.0)) * max(0.0, min(b, hi) - max(a, lo))
    return total / (hi - lo)


def measure(bundle: Path, setup: VodSetup) -> dict[str, Any]:
    """Figures of one emulated run (see the module docstring)."""
    frame = load_events(bundle).frame
    wl = setup.workload
    warm, horizon = setup.warmup_min * 60.0, wl.duration_min * 60.0
    origin = clients_origin(frame)
    lo, hi = origin + warm, origin + horizon
    stops = frame[(frame["event"] == "process_stop") & (frame["role"].astype(str) == "vod_client")]
    if not stops.empty:  # the runner stops the clients at the end: the window ends before
        hi = min(hi, float(stops["t"].min()))
    srv = frame[frame["role"].astype(str) == "vod_server"]
    rate = wl.play_rate_kbps * 1000
    load = _share_load(srv, lo, hi, setup.chunk_s) if not srv.empty else math.nan
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
    rec = {"policy": setup.policy, "network": setup.network, "seed": setup.seed, "bundle": str(bundle),
            "emulated": load, "emulated_bytes": load_bytes, "simulated": sim.mean,
            "formula": server_load(setup.policy, prm), "sessions": len(per),
            "continuity_all": float(on.mean()) if len(on) else math.nan,
            "continuity_min": min(conts) if conts else math.nan,
            "startup_mean_s": float(np.mean(starts)) if starts else math.nan,
            "startup_p95_s": float(np.percentile(starts, 95)) if starts else math.nan,
            "multicast_sessions": mc_sessions, "mroute_groups": len(groups),
            "stalls": int(sum(v["stalls"] for v in per.values()))}
    sc = vod_scenario(setup)
    rec.update(modes_by_isp(sc, viewers, groups))
    if setup.kill_at is not None:
        rec.update(affected_viewers(sc, frame, per, bundle))
    return rec


def _on_time(rows: pd.DataFrame) -> pd.Series:
    return rows["on_time"].map(lambda v: v is True or v == 1.0)


def modes_by_isp(sc: dict[str, Any], viewers: pd.DataFrame, groups: dict[str, list[str]]) -> dict[str, Any]:
    """Per ISP: sessions, those that got a multicast part, those served by peers, continuity; routers with groups."""
    isp_of = {n["name"]: n["uplink"]["isp"] for n in sc["nodes"] if n["name"] != SERVER}
    plans = viewers[(viewers["event"] == "plan")]
    out: dict[str, Any] = {}
    for isp in sorted(set(isp_of.values())):
        mine = viewers[viewers["node"].astype(str).map(isp_of) == isp]
        p = plans[plans["node"].astype(str).map(isp_of) == isp]
        sessions = mine[mine["event"] == "play_request"]["proc"].astype(str).nunique()
        kinds = [set(x.get("kind") for x in (srcs or [])) for srcs in p["sources"]]
        mc = p[[("multicast" in k) for k in kinds]]["proc"].astype(str).nunique()
        peer = p[[("peer" in k) for k in kinds]]["proc"].astype(str).nunique()
        due = mine[mine["event"] == "chunk_due"]
        out[f"isp_{isp}_sessions"] = sessions
        out[f"isp_{isp}_multicast_sessions"] = mc
        out[f"isp_{isp}_peer_sessions"] = peer
        out[f"isp_{isp}_continuity"] = float(_on_time(due).mean()) if len(due) else math.nan
        out[f"isp_{isp}_mroute_routers"] = ",".join(r for r in groups if r.startswith(f"{isp}_"))
    return out


def affected_viewers(sc: dict[str, Any], frame: pd.DataFrame, per: dict[str, dict[str, Any]],
                     bundle: Path) -> dict[str, Any]:
    """The kill case: the viewers that were being served by the killed client when it died (its peer parts of a
    unicast-mode plan, or the channels it was multicasting), excluding the killed host's own sessions."""
    meta = sc["metadata"]["vod"]
    victim = meta.get("killed")
    if victim is None:
        return {"killed": None, "affected": 0}
    node = next(n for n in sc["nodes"] if n["name"] == victim)
    victim_sessions = {int(c) + 1 for _, _, c in node["processes"][0]["args"]["requests"]}
    origin = clients_origin(frame)
    t_kill = math.inf
    timeline = bundle / "timeline.jsonl"
    for line in timeline.read_text().splitlines() if timeline.exists() else []:
        item = json.loads(line)
        if isinstance(item.get("item"), dict) and item["item"].get("action") == "process_kill":
            t_kill = float(item["epoch"])
    srv = frame[frame["role"].astype(str) == "vod_server"]
    chans = srv[srv["event"] == "channel_open"]
    victim_channels = {int(k) for k, srcs in zip(chans["channel"], chans["sources"], strict=True)
                       if any(x.get("peer") in victim_sessions for x in (srcs or []))}
    viewers = frame[(frame["role"].astype(str) == "vod_client") & (frame["node"].astype(str) != victim)]
    ends = viewers[viewers["event"] == "playback_end"].groupby(["node", "proc"])["t"].max().to_dict()
    affected: set[tuple[str, str]] = set()
    for row in viewers[viewers["event"] == "plan"].itertuples():
        if row.t > t_kill or ends.get((row.node, row.proc), math.inf) < t_kill:
            continue
        for x in row.sources or []:
            if (x.get("kind") == "peer" and x.get("tag") in victim_sessions) or \
                    (x.get("kind") == "multicast" and x.get("tag") in victim_channels):
                affected.add((str(row.node), str(row.proc)))
    near = srv["t"].between(t_kill, t_kill + 10.0)  # the reaction to the kill, not the end of the run
    keys = [f"{n}.{p}" for n, p in sorted(affected)]
    conts = [per[k]["continuity"] for k in keys if k in per and per[k]["continuity"] is not None]
    mine = viewers[viewers[["node", "proc"]].apply(tuple, axis=1).isin(affected)]
    due = mine[mine["event"] == "chunk_due"]
    return {"killed": victim, "kill_t": t_kill - origin, "affected": len(keys),
            "affected_viewers": " ".join(keys),
            "affected_continuity": float(_on_time(due).mean()) if len(due) else math.nan,
            "affected_continuity_min": min(conts) if conts else math.nan,
            "takeovers": int(((srv["event"] == "takeover") & near).sum()),
            "lost_reports": int(((srv["event"] == "lost_report") & near).sum()),
            "cover_streams": int(((srv["event"] == "stream_start") & (srv["kind"] == "cover") & near).sum())}


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


def ranking(summary: pd.DataFrame) -> tuple[bool, bool, list[str]]:
    """Is the emulated server-load ranking the simulated one? (strictly equal, equal up to ties, notes).

    Policies are ranked by mean load (lowest first). A pair ordered differently in emulation and simulation is a
    tie, not an inversion, when the two policies' 95 % CIs overlap in the emulation or in the simulation."""
    rows = summary.set_index("policy")
    sim = list(rows["simulated"].sort_values().index)
    emu = list(rows["emulated"].sort_values().index)
    notes = [f"simulated ranking: {' < '.join(sim)}", f"emulated ranking:  {' < '.join(emu)}"]
    inverted = []
    for i, a in enumerate(sim):
        for b in sim[i + 1:]:
            if emu.index(a) > emu.index(b):
                inverted.append((a, b))

    def overlap(col: str, a: str, b: str) -> bool:
        lo_a, hi_a = rows.at[a, col] - _ci(rows.at[a, f"{col}_ci"]), rows.at[a, col] + _ci(rows.at[a, f"{col}_ci"])
        lo_b, hi_b = rows.at[b, col] - _ci(rows.at[b, f"{col}_ci"]), rows.at[b, col] + _ci(rows.at[b, f"{col}_ci"])
        return lo_a <= hi_b and lo_b <= hi_a

    real = []
    for a, b in inverted:
        tie = overlap("emulated", a, b) or overlap("simulated", a, b)
        notes.append(f"  {a} < {b} in simulation ({rows.at[a, 'simulated']:.2f} < {rows.at[b, 'simulated']:.2f}) "
                     f"but not in emulation ({rows.at[a, 'emulated']:.2f} vs {rows.at[b, 'emulated']:.2f}): "
                     + ("a tie (95 % CIs overlap)" if tie else "an inversion (CIs apart)"))
        if not tie:
            real.append((a, b))
    return not inverted, not real, notes


def _ci(v: float) -> float:
    return 0.0 if v is None or math.isnan(v) else float(v)


def plot(summary: pd.DataFrame, path: Path) -> None:
    """Server load (formula, simulation, emulation), startup latency and continuity per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8), gridspec_kw={"width_ratios": [2.2, 1, 1]})
    ax = axes[0]
    x = np.arange(len(summary))
    w = 0.27
    ax.bar(x - w, summary["formula"], w, label="formula")
    ax.bar(x, summary["simulated"], w, yerr=summary["simulated_ci"].fillna(0), label="simulation", capsize=3)
    ax.bar(x + w, summary["emulated"], w, yerr=summary["emulated_ci"].fillna(0), label="emulation", capsize=3)
    ax.set_xticks(x, summary["policy"], rotation=25, ha="right")
    ax.set_ylabel("mean concurrent server streams")
    ax.set_title("server load (mean ± 95 % CI over seeds)")
    ax.legend()
    for ax, col, label, title in ((axes[1], "startup_mean_s", "s", "startup latency (emulation)"),
                                  (axes[2], "continuity_all", "chunks on time / due", "continuity (emulation)")):
        ax.bar(x, summary[col], 0.6, yerr=summary[f"{col}_ci"].fillna(0), capsize=3, color="tab:green")
        ax.set_xticks(x, summary["policy"], rotation=35, ha="right", fontsize=8)
        ax.set_ylabel(label)
        ax.set_title(title)
    axes[2].set_ylim(0.9, 1.005)
    axes[2].axhline(0.98, color="red", lw=0.8, ls="--")
    fig.suptitle("DynaPeer VoD per policy: formula, simulation and emulation")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(runs: pd.DataFrame, out: Path, log: Callable[[str], None] = print) -> pd.DataFrame:
    """Summary, table, ranking check and figure of a set of runs, written to ``out``."""
    order = [p for p in POLICIES if p in set(runs["policy"])]
    runs = runs.set_index("policy").loc[order].reset_index()
    summary = summarise(runs)
    summary.to_csv(out / "summary.csv", index=False)
    plot(summary, out / "server_load.png")
    log(table_text(summary))
    if len(summary) > 1:
        same, up_to_ties, notes = ranking(summary)
        log("\n".join(notes))
        log(f"emulated ranking == simulated ranking: {same}; equal up to ties within the 95 % CIs: {up_to_ties}")
    log(f"\nresults: {out}")
    return summary


def merge(dirs: Sequence[Path], out: Path, log: Callable[[str], None] = print) -> pd.DataFrame:
    """Re-measure the bundles of earlier comparisons (their ``runs.csv`` and ``setup.json``) and report them
    together: one policy per ``invoke dynapeer-compare`` call, one table. A (policy, seed) run of a later folder
    replaces that of an earlier one (a re-run after a fix)."""
    chosen: dict[tuple[str, int], tuple[VodSetup, Path]] = {}
    for d in dirs:
        base = json.loads((d / "setup.json").read_text())
        fields = {k: v for k, v in base.items() if k in VodSetup.__dataclass_fields__}
        fields["keep"] = tuple(fields["keep"])
        for r in pd.read_csv(d / "runs.csv").to_dict("records"):
            setup = VodSetup(**{**fields, "policy": r["policy"], "seed": int(r["seed"])})
            chosen[(setup.policy, setup.seed)] = (setup, Path(r["bundle"]))
    rows = [measure(bundle, setup) for setup, bundle in chosen.values()]
    out.mkdir(parents=True, exist_ok=True)
    runs = pd.DataFrame(rows)
    runs.to_csv(out / "runs.csv", index=False)
    return report(runs, out, log)


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
    return report(pd.DataFrame(rows), out, log)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m analysis.dynapeer_compare")
    ap.add_argument("--policy", action="append", choices=POLICIES)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--network", default="multicast", choices=("multicast", "unicast", "mixed"))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--kill-at", type=float, default=None)
    ap.add_argument("--seed", type=int, action="append", help="run these seeds (repeatable) instead of 1..--seeds")
    ap.add_argument("--results", default="results")
    ap.add_argument("--merge", nargs="+", type=Path, help="no runs: re-measure and report these comparison folders")
    a = ap.parse_args(argv)
    if a.merge:
        merge(a.merge, Path(a.results) / "dynapeer-compare" / ("merged-" + time.strftime("%Y%m%dT%H%M%SZ",
                                                                                          time.gmtime())))
        return 0
    compare(a.policy or POLICIES, a.seed or range(1, a.seeds + 1), a.network, a.quick, Path(a.results), a.kill_at)
    return 0


if __name__ == "__main__":
    sys.exit(main())
