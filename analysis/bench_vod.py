"""Benchmark of the VoD simulation: ``python -m analysis.bench_vod``.

Generates the DynaPeer paper's Table 2 workload for 10 simulated hours (:data:`analysis.vod_model.PAPER_TABLE2`,
about 6,000 requests) and times :func:`analysis.vod_sim.simulate` on it for every policy, one after the other
(the patching windows the model computes for ``pn2pm_opt`` are computed before the clock starts), against the
target of 60 s for all policies together. Prints one line per policy and the total.

Exit status 0 when the target is met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace

from analysis.vod_model import LABELS, PAPER_TABLE2, POLICIES, patch_windows
from analysis.vod_sim import simulate

TARGET_S = 60.0
"""Wall time allowed for 10 simulated hours of the Table 2 workload, all policies together."""


def run(hours: float = 10.0, seed: int = 1) -> tuple[float, dict[str, float], int]:
    """Time every policy on ``hours`` of the Table 2 workload; return (total s, per-policy s, requests)."""
    params = replace(PAPER_TABLE2, workload=replace(PAPER_TABLE2.workload, duration_min=60.0 * hours))
    patch_windows("pn2pm_opt", params)  # the model's per-title optimisation, cached: not simulation time
    t0 = time.perf_counter()
    requests = params.workload.requests(seed)
    per_policy: dict[str, float] = {"(request schedule)": time.perf_counter() - t0}
    for policy in POLICIES:
        t1 = time.perf_counter()
        simulate(policy, params, requests)
        per_policy[policy] = time.perf_counter() - t1
    return time.perf_counter() - t0, per_policy, len(requests)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.bench_vod", description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=10.0, help="simulated hours (default 10)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    total, per_policy, n = run(args.hours, args.seed)
    print(f"Table 2 workload, {args.hours:g} simulated hours, seed {args.seed}: {n} requests")
    for name, seconds in per_policy.items():
        print(f"  {LABELS.get(name, name):32} {seconds:8.3f} s")
    ok = total <= TARGET_S * args.hours / 10.0
    print(f"all policies: {total:.2f} s (target <= {TARGET_S * args.hours / 10.0:g} s): {'ok' if ok else 'TOO SLOW'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
