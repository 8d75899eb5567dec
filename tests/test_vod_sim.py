"""The VoD simulation (analysis.vod_sim) against the formulas, its speed, and the workload generator.

Agreement is checked at paper scale (Table 2) over 5 seeds of 10 simulated hours each, the first 180 min
(two video lengths, enough to fill the system from empty) excluded: the mean over seeds must lie within 3 %
of the formula for the policies whose formulas are exact (Unicast, Patching, Chaining, and the PROMISE-like
and DynaPeer-unicast mechanisms). Every run takes well under a second, so the test uses the full 10 hours.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace

import numpy as np
import pytest

from analysis import bench_vod
from analysis.vod_model import PAPER_TABLE2, POLICIES, VoDParams, server_load
from analysis.vod_sim import run_many, simulate, t975
from scenarios.workload import Workload

SEEDS = range(1, 6)
WARMUP = 180.0
EXACT = ("unicast", "patching", "patching_opt", "chaining", "promise", "dynapeer_unicast")


@pytest.fixture(scope="module")
def summaries():
    return run_many(POLICIES, PAPER_TABLE2, SEEDS, warmup_min=WARMUP)


@pytest.mark.parametrize("policy", EXACT)
def test_simulation_matches_exact_formulas(summaries, policy):
    s = summaries[policy]
    print(f"{policy}: simulated {s.mean:.1f} ± {s.ci95:.1f}, formula {s.formula:.1f} ({100 * s.rel_error:+.2f} %)")
    assert abs(s.rel_error) <= 0.03


def test_simulation_near_approximate_formulas(summaries):
    """Pn2Pm's and DynaPeer multicast's formulas are approximations (docs/dynapeer.md): looser bounds."""
    assert abs(summaries["pn2pm"].rel_error) <= 0.05
    assert abs(summaries["pn2pm_opt"].rel_error) <= 0.05
    for policy in ("dynapeer_multicast", "dynapeer_helpers"):
        assert -0.02 <= summaries[policy].rel_error <= 0.12, policy  # the formulas are a little optimistic


def test_simulated_ranking(summaries):
    m = {p: s.mean for p, s in summaries.items()}
    assert m["unicast"] > m["dynapeer_unicast"] > m["promise"] > m["patching"] > m["patching_opt"] > m["chaining"]
    assert m["dynapeer_helpers"] < m["dynapeer_multicast"] < m["chaining"]
    for p, s in summaries.items():
        assert np.mean(s.peaks) >= s.mean, p


def test_single_run_details():
    res = simulate("patching", PAPER_TABLE2, seed=3)
    assert res.requests == len(PAPER_TABLE2.workload.requests(3))
    assert res.peak >= res.mean > 0
    series = res.series(step_min=1.0)
    assert len(series) == int(res.horizon - res.warmup)
    assert series["server_streams"].mean() == pytest.approx(res.mean, rel=0.02)
    assert res.counts["server_full"] == res.requests  # server-only: every stream from the server
    dyn = simulate("dynapeer_unicast", PAPER_TABLE2, seed=3)
    assert dyn.counts["partial"] > 0 and sum(dyn.counts.values()) == dyn.requests
    helpers = simulate("dynapeer_helpers", PAPER_TABLE2, seed=3)
    assert helpers.counts["helpers_recruited"] > 0


def test_subset_workload_and_errors():
    small = replace(PAPER_TABLE2, workload=replace(PAPER_TABLE2.workload, keep=(0, 50), duration_min=3000.0))
    res = simulate("chaining", small, seed=1)
    assert res.mean == pytest.approx(server_load("chaining", small), rel=0.1)
    with pytest.raises(ValueError):
        simulate("broadcast", PAPER_TABLE2, seed=1)
    other = PAPER_TABLE2.workload.requests(1)
    with pytest.raises(ValueError):  # a request for a title the workload does not have
        simulate("unicast", small, other)
    with pytest.raises(ValueError):
        simulate("unicast", PAPER_TABLE2, seed=1, warmup_min=600.0)


def test_speed_benchmark():
    """The speed target (10 simulated hours of Table 2, all policies, <= 60 s) is the benchmark's
    (``python -m analysis.bench_vod``); here it is only asserted loosely."""
    t0 = time.perf_counter()
    total, per_policy, n = bench_vod.run(hours=10.0, seed=1)
    print(f"10 simulated hours, {n} requests, all policies: {total:.2f} s (target 60 s); "
          + ", ".join(f"{k} {v:.3f} s" for k, v in per_policy.items()))
    assert n > 5000
    assert total <= 120.0
    assert time.perf_counter() - t0 <= 120.0


def test_workload_is_deterministic_per_seed():
    wl = Workload(duration_min=120.0)
    a, b, c = wl.requests(7), wl.requests(7), wl.requests(8)
    assert list(a.columns) == ["time_s", "video", "client"]
    assert a.equals(b)
    assert not a.equals(c)
    assert a["time_s"].is_monotonic_increasing and a["time_s"].iloc[-1] < 120 * 60
    assert (a["client"] == np.arange(len(a))).all()
    assert a["video"].between(0, 99).all()


def test_poisson_arrivals():
    wl = Workload(duration_min=6000.0)  # 100 hours, about 60,000 requests
    req = wl.requests(11)
    n = len(req)
    expected = wl.rate_per_min * wl.duration_min
    assert abs(n - expected) <= 5 * math.sqrt(expected)
    gaps = np.diff(req["time_s"].to_numpy())
    assert gaps.mean() == pytest.approx(6.0, rel=0.02)  # 10 per minute
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.03)  # exponential: CV 1
    assert (gaps > gaps.mean()).mean() == pytest.approx(math.exp(-1), abs=0.01)
    # counts per minute: Poisson, variance = mean
    per_min = np.bincount((req["time_s"].to_numpy() // 60).astype(int), minlength=int(wl.duration_min))
    assert per_min.var() / per_min.mean() == pytest.approx(1.0, abs=0.06)


def test_zipf_popularity():
    wl = Workload(duration_min=6000.0)
    req = wl.requests(12)
    counts = np.bincount(req["video"].to_numpy(), minlength=wl.videos)
    expected = wl.popularity() * len(req)
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 99 + 5 * math.sqrt(2 * 99)  # df = 99
    assert counts[0] / len(req) == pytest.approx(wl.popularity()[0], rel=0.05)
    # per-title arrivals are Poisson with rate lambda p_i: mean gap of the top title
    t0 = req.loc[req["video"] == 0, "time_s"].to_numpy()
    assert np.diff(t0).mean() / 60 == pytest.approx(1 / wl.video_rates()[0], rel=0.05)


def test_scaled_workload_keeps_invariants():
    wl = Workload().scaled(time_factor=60.0, rate_factor=10.0, keep=(0, 9, 49, 99))
    assert wl.length_min == pytest.approx(1.5) and wl.play_rate_kbps == pytest.approx(150.0)
    assert np.allclose(wl.video_rates() * wl.length_min, Workload().video_rates()[[0, 9, 49, 99]] * 90.0)
    req = wl.requests(1)
    assert set(req["video"].unique()) <= {0, 9, 49, 99}
    assert req["time_s"].iloc[-1] < wl.duration_min * 60
    # a scenario-sized run: the kept titles' load matches the paper-scale per-title terms
    params = VoDParams(workload=replace(wl, duration_min=wl.duration_min * 20), upload_kbps=75.0, buffer_min=0.25)
    res = simulate("chaining", params, seed=2)
    assert res.mean == pytest.approx(server_load("chaining", params), rel=0.1)


def test_t975():
    assert t975(4) == pytest.approx(2.776)
    assert 2.06 < t975(25) < 2.09
    assert t975(1000) == pytest.approx(1.96)
    assert math.isnan(t975(0))
