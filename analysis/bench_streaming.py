"""Benchmark: how many live-streaming peers this machine sustains, and what one peer process costs in memory.

``invoke bench streaming [--args '...']`` (``python -m analysis.bench_streaming [--sizes 25,50,100,150]
[--duration 90] [--peer-arg window=60] [--delay | --no-delay]``) runs
the generated mesh of :mod:`scenarios.streaming_scenarios` (8/1 Mbit/s lines, a 500 kbit/s stream, a source with
upload for four streams) at growing sizes, one run after another, and stops at the first size whose mean
continuity index falls below 0.98 (or whose peers do not all play). For each size it prints the mean and worst
continuity, the share of the stream the source sent, and the peak RSS of the peer processes (``process_stop
.max_rss_kb``, logged by every role at exit). Memory is compared with a baseline measured in the same run: an
idle ``probe_sink`` role on the tracker's node, i.e. the Python runtime every role pays for; the ratio (peer /
baseline) is what the peer's own buffers and state add. ``peer_private_mb`` is a peer's private memory at exit
(``Private_*`` of ``smaps_rollup``: what one more peer costs, without the interpreter's shared file pages that RSS
counts in every process) and ``peer_cpu_s`` its CPU seconds. The answer is the largest size that passed.
Delay: where the kernel has netem the lines keep their delays (10 ms per line, 1 ms per ISP core link, 2 ms for
the source), which cost nothing there. Without netem (this machine) each delayed link needs a user-space delay
line, and those compete with the peers for the two cores (with 50 peers the core links' lines handled 1.2 million
packets; with them 100 peers did not play): there the default is ``--no-delay``, the rate limits only (HTB, in
the kernel), and ``--delay`` forces the delay lines. The run prints which.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.events import load_events
from analysis.streaming_accept import measure_live, run_generated
from scenarios.streaming_scenarios import ADSL_1M, SOURCE, TRACKER, LiveSetup, live_scenario
from topologies.impair.backends import netem_available

TARGET_CONTINUITY = 0.98


def _usage_by_role(bundle: Path, field: str, scale: float = 1 / 1024) -> dict[str, list[float]]:
    """One ``process_stop`` figure (``max_rss_kb``, ``private_kb``, ``cpu_s``) per process, grouped by process name."""
    frame = load_events(bundle).frame
    stops = frame[frame["event"] == "process_stop"]
    out: dict[str, list[float]] = {}
    if stops.empty or field not in stops:
        return out
    for proc, g in stops.groupby(stops["proc"].astype(str), observed=True):
        vals = pd.to_numeric(g[field], errors="coerce").dropna()
        out[str(proc)] = [float(v) * scale for v in vals]
    return out


def run_size(peers: int, duration: float, results: Path, seed: int,
             peer_args: dict[str, Any] | None = None, delay: bool = True) -> dict[str, float | int | str | None]:
    spread = max(10.0, peers * 0.3)
    line = dict(ADSL_1M) if delay else dict(ADSL_1M, delay="0ms")
    setup = LiveSetup(peers=peers, seed=seed, duration=duration + spread, join_spread=spread, access=[line],
                      name=f"bench-live{peers}", peer_args=dict(peer_args or {}))
    scenario = live_scenario(setup)
    if not delay:  # the ISP's core links and the source's line too: no delay line anywhere
        for isp in scenario["isps"]:
            isp["core_delay"] = "0ms"
        src = next(n for n in scenario["nodes"] if n["name"] == SOURCE)
        src["uplink"]["access"]["delay"] = "0ms"
    tracker = next(n for n in scenario["nodes"] if n["name"] == TRACKER)
    tracker["processes"].append({"role": "probe_sink", "name": "baseline", "args": {"port": 5999}})
    t0 = time.monotonic()
    res = measure_live(run_generated(scenario, results), setup.stream_bps)
    rss = _usage_by_role(res.bundle, "max_rss_kb")
    peer_rss = rss.get("peer", [])
    base = statistics.fmean(rss["baseline"]) if rss.get("baseline") else None
    private = _usage_by_role(res.bundle, "private_kb").get("peer", [])
    cpu = _usage_by_role(res.bundle, "cpu_s", 1.0).get("peer", [])
    cont = res.continuities()
    return {"peers": peers, "playing": len(cont), "continuity_mean": statistics.fmean(cont) if cont else None,
            "continuity_min": min(cont) if cont else None, "source_share": res.source_share,
            "peer_rss_max_mb": max(peer_rss) if peer_rss else None,
            "peer_rss_mean_mb": statistics.fmean(peer_rss) if peer_rss else None,
            "baseline_rss_mb": base,
            "rss_ratio": (max(peer_rss) / base) if peer_rss and base else None,
            "peer_private_mb": statistics.fmean(private) if private else None,
            "peer_cpu_s": statistics.fmean(cpu) if cpu else None,
            "wall_s": round(time.monotonic() - t0, 1), "bundle": str(res.bundle)}


def _show(v: object) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="25,50,100,150")
    ap.add_argument("--duration", type=float, default=90.0, help="seconds of streaming after the last join")
    ap.add_argument("--results", default="results")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--peer-arg", action="append", default=[], metavar="KEY=VALUE",
                    help="a peer setting for every peer (repeatable), e.g. window=60; values are read as JSON")
    how = ap.add_mutually_exclusive_group()
    how.add_argument("--delay", dest="delay", action="store_true", default=None,
                     help="keep the links' delays (default where the kernel has netem; without it each delayed link "
                          "is a user-space delay line competing with the peers for the CPU)")
    how.add_argument("--no-delay", dest="delay", action="store_false",
                     help="rate limits only, in the kernel (default without netem)")
    ns = ap.parse_args(argv)
    sizes = [int(s) for s in ns.sizes.split(",") if s.strip()]
    delay = netem_available() if ns.delay is None else ns.delay
    print("links: " + ("with their delays" + ("" if netem_available() else " (user-space delay lines: no netem)")
                       if delay else "rate limits only, no delay (HTB in the kernel; no netem here, so delays "
                                     "would need user-space delay lines; --delay keeps them)"))
    peer_args = {}
    for item in ns.peer_arg:
        key, _, value = item.partition("=")
        try:
            peer_args[key] = json.loads(value)
        except ValueError:
            peer_args[key] = value
    if peer_args:
        print(f"peer settings: {peer_args}")
    cols = ["peers", "playing", "continuity_mean", "continuity_min", "source_share", "peer_rss_max_mb",
            "peer_rss_mean_mb", "baseline_rss_mb", "rss_ratio", "peer_private_mb", "peer_cpu_s", "wall_s"]
    print(" ".join(f"{c:>16}" for c in cols))
    best = None
    for n in sizes:
        row = run_size(n, ns.duration, Path(ns.results), ns.seed, peer_args, delay=delay)
        print(" ".join(f"{_show(row[c]):>16}" for c in cols), flush=True)
        ok = row["playing"] == n and row["continuity_mean"] is not None and row["continuity_mean"] >= TARGET_CONTINUITY
        if not ok:
            print(f"{n} peers: mean continuity {_show(row['continuity_mean'])} with {row['playing']} of {n} playing: "
                  f"below the target {TARGET_CONTINUITY}; bundle {row['bundle']}")
            break
        best = row
    if best is None:
        print("no size sustained the target")
        return 1
    print(f"largest sustained: {best['peers']} peers at 500 kbit/s, mean continuity {_show(best['continuity_mean'])}; "
          f"peak RSS per peer process {_show(best['peer_rss_max_mb'])} MB (mean {_show(best['peer_rss_mean_mb'])} MB; "
          f"the bare runtime {_show(best['baseline_rss_mb'])} MB, ratio {_show(best['rss_ratio'])}); private memory "
          f"per peer {_show(best['peer_private_mb'])} MB, CPU {_show(best['peer_cpu_s'])} s per peer"
          f"{'' if delay else ' (links without delay)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
