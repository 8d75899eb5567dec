"""The VoD server-load formulas (analysis.vod_model): the acceptance values at the DynaPeer paper's Table 2,
the ground-truth bounds, limiting cases that tie policies together, and monotonicity."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from analysis.vod_model import (
    PAPER_TABLE2,
    POLICIES,
    SERVER_ONLY_MULTICAST,
    VoDParams,
    comparison_text,
    lower_bounds,
    paper_implied_loads,
    patch_windows,
    pn2pm_server_probability,
    server_load,
    server_load_per_title,
    with_overrides,
)
from scenarios.workload import Workload, scale_peer, zipf_popularity


def test_table2_parameters():
    p = PAPER_TABLE2
    assert (p.workload.videos, p.workload.zipf, p.workload.rate_per_min, p.L) == (100, 0.729, 10.0, 90.0)
    assert (p.workload.play_rate_kbps, p.upload_kbps, p.B) == (1500.0, 750.0, 15.0)
    assert p.N == 2 and p.c == 0.5 and p.X == 2 and p.P == 15 and p.unicast_window == 30
    assert p.rates.sum() == pytest.approx(10.0)


def test_acceptance_values():
    """The issue's acceptance values: per-title sums with p_i proportional to 1/i^0.729 over 100 titles."""
    assert server_load("unicast") == pytest.approx(900.0, abs=1e-9)
    assert server_load("patching") == pytest.approx(356.5, rel=0.01)
    assert server_load("patching") == pytest.approx(356.54, abs=0.01)  # T = min(T*, B) per title
    assert server_load("patching_opt") == pytest.approx(300.5, abs=0.05)
    assert server_load("chaining") == pytest.approx(185.3, abs=0.05)


def test_patching_closed_forms_per_title():
    lam, L = PAPER_TABLE2.rates, PAPER_TABLE2.L  # noqa: N806
    opt = server_load_per_title("patching_opt")
    assert np.allclose(opt, np.sqrt(2 * lam * L + 1) - 1)
    T = patch_windows("patching_opt", PAPER_TABLE2)  # noqa: N806
    # T* is the minimum of S(T): a little more or less is worse
    for dT in (-0.5, 0.5):  # noqa: N806
        other = (L + lam * (T + dT) ** 2 / 2) / (T + dT + 1 / lam)
        assert np.all(other >= opt)
    capped = patch_windows("patching", PAPER_TABLE2)
    assert capped.max() == pytest.approx(15.0) and capped.min() < 15.0  # only the most popular title is under B


def test_chaining_and_unicast_family_closed_forms():
    lam, L, B = PAPER_TABLE2.rates, PAPER_TABLE2.L, PAPER_TABLE2.B  # noqa: N806
    assert np.allclose(server_load_per_title("chaining"), lam * L * np.exp(-lam * B))
    assert np.allclose(server_load_per_title("promise"), lam * L * (1 - 0.5 * (1 - np.exp(-lam * L))))
    assert np.allclose(server_load_per_title("dynapeer_unicast"), lam * L * (1 - 0.5 * (1 - np.exp(-lam * 30))))


def test_every_policy_between_zero_and_unicast():
    uni = server_load_per_title("unicast")
    for policy in POLICIES:
        per = server_load_per_title(policy)
        assert per.shape == uni.shape
        assert np.all(per >= -1e-12), policy
        assert np.all(per <= uni + 1e-9), policy


def test_server_only_multicast_bound_per_title():
    """Any server-only immediate-service multicast scheme needs at least ln(lambda L + 1) streams per title."""
    lam, L = PAPER_TABLE2.rates, PAPER_TABLE2.L  # noqa: N806
    for params in (PAPER_TABLE2, with_overrides(PAPER_TABLE2, rate_per_min=1.0),
                   with_overrides(PAPER_TABLE2, rate_per_min=100.0, buffer_min=60.0)):
        lam, L = params.rates, params.L  # noqa: N806
        for policy in SERVER_ONLY_MULTICAST:
            assert np.all(server_load_per_title(policy, params) >= np.log(lam * L + 1) - 1e-9), policy
    assert lower_bounds()["multicast"] == pytest.approx(float(np.log(PAPER_TABLE2.rates * 90 + 1).sum()))


def test_peer_assisted_bound_for_unicast_p2p():
    """Peers uploading O < Pr only what they watch: the server sends at least (1 - O/Pr) lambda L."""
    for params in (PAPER_TABLE2, with_overrides(PAPER_TABLE2, upload_kbps=500.0),
                   with_overrides(PAPER_TABLE2, rate_per_min=50.0)):
        bound = (1 - params.c) * params.rates * params.L
        for policy in ("promise", "dynapeer_unicast"):
            assert np.all(server_load_per_title(policy, params) >= bound - 1e-9), policy
    assert lower_bounds()["peer_assisted"] == pytest.approx(450.0)


def test_limiting_cases_tie_policies_together():
    # DynaPeer-unicast with a window of a whole video is the PROMISE-like scheme
    big = with_overrides(PAPER_TABLE2, buffer_min=45.0)
    assert server_load("dynapeer_unicast", big) == pytest.approx(server_load("promise", big))
    # without patching window, DynaPeer multicast (with or without helpers) is DynaPeer unicast
    p0 = with_overrides(PAPER_TABLE2, patch_window_min=0.0)
    assert server_load("dynapeer_multicast", p0) == pytest.approx(server_load("dynapeer_unicast", p0), rel=1e-6)
    assert server_load("dynapeer_helpers", p0) == pytest.approx(server_load("dynapeer_unicast", p0), rel=1e-6)
    # Pn2Pm without patching window is Chaining
    for lam in (0.03, 0.3, 1.0):
        assert pn2pm_server_probability(lam, 15.0, 0.0) == pytest.approx(math.exp(-15 * lam))
    assert server_load("pn2pm", p0) == pytest.approx(server_load("chaining"), rel=1e-9)
    # Pn2Pm with its best window is never worse than with P = B or P = 0
    best = server_load_per_title("pn2pm_opt")
    assert np.all(best <= server_load_per_title("pn2pm") + 1e-9)
    assert np.all(best <= server_load_per_title("chaining") + 1e-9)
    # a needy title's helpers only help
    assert np.all(server_load_per_title("dynapeer_helpers") <= server_load_per_title("dynapeer_multicast") + 1e-9)


def test_monotone_in_buffer_upload_and_rate():
    def loads(policy: str, **changes) -> list[float]:
        key, values = next(iter(changes.items()))
        return [server_load(policy, with_overrides(PAPER_TABLE2, **{key: v})) for v in values]

    def non_increasing(xs: list[float]) -> bool:
        return all(b <= a + 1e-9 for a, b in zip(xs, xs[1:], strict=False))

    def increasing(xs: list[float]) -> bool:
        return all(b > a for a, b in zip(xs, xs[1:], strict=False))

    buffers = (5.0, 10.0, 15.0, 30.0)
    for policy in ("patching", "chaining", "dynapeer_unicast", "pn2pm_opt", "dynapeer_multicast"):
        assert non_increasing(loads(policy, buffer_min=buffers)), policy
    uploads = (300.0, 500.0, 750.0, 1000.0)
    for policy in ("promise", "dynapeer_unicast"):
        assert non_increasing(loads(policy, upload_kbps=uploads)), policy
    # (DynaPeer multicast is not monotone in O: the extended buffer shrinks as O grows, X = Pr/O)
    assert non_increasing(loads("dynapeer_multicast", upload_kbps=(300.0, 500.0, 750.0)))
    rates = (1.0, 5.0, 10.0, 20.0)
    for policy in ("unicast", "patching_opt", "patching"):
        assert increasing(loads(policy, rate_per_min=rates)), policy
    # more skewed popularity helps every sharing scheme
    for policy in ("patching_opt", "chaining", "dynapeer_multicast"):
        assert non_increasing(loads(policy, zipf=(0.0, 0.5, 0.729, 1.0))), policy
    # the extended buffer can only help DynaPeer
    plain = replace(PAPER_TABLE2, extended_buffer=False)
    assert server_load("dynapeer_unicast") < server_load("dynapeer_unicast", plain)
    assert server_load("dynapeer_multicast") < server_load("dynapeer_multicast", plain)


def test_zipf_and_rates():
    p = zipf_popularity(100, 0.729)
    assert p.sum() == pytest.approx(1.0)
    assert p[0] / p[1] == pytest.approx(2**0.729)
    assert np.allclose(zipf_popularity(5, 0.0), 0.2)
    assert np.allclose(PAPER_TABLE2.rates, 10.0 * p)


def test_scaling_keeps_every_title_load():
    """Time compression, bit-rate reduction and dropping titles keep each kept title's server load."""
    keep = (0, 9, 49, 99)
    k, r = 60.0, 10.0
    wl = PAPER_TABLE2.workload.scaled(time_factor=k, rate_factor=r, keep=keep)
    buffer_min, upload = scale_peer(PAPER_TABLE2.B, PAPER_TABLE2.upload_kbps, time_factor=k, rate_factor=r)
    small = VoDParams(workload=wl, upload_kbps=upload, buffer_min=buffer_min)
    assert math.isclose(small.L, 1.5) and math.isclose(small.B, 0.25) and math.isclose(small.c, 0.5)
    assert np.allclose(small.rates * small.L, PAPER_TABLE2.rates[list(keep)] * PAPER_TABLE2.L)
    for policy in ("unicast", "patching", "patching_opt", "chaining", "promise", "dynapeer_unicast", "pn2pm",
                   "dynapeer_multicast"):
        full = server_load_per_title(policy)[list(keep)]
        assert np.allclose(server_load_per_title(policy, small), full, rtol=1e-6), policy
    assert wl.mean_viewers == pytest.approx(float(PAPER_TABLE2.rates[list(keep)].sum() * 90))


def test_comparison_text_and_paper_claims():
    text = comparison_text()
    for label in ("Unicast", "Patching (T <= B)", "Chaining (O = Pr)", "PROMISE-like", "Pn2Pm", "DynaPeer unicast",
                  "DynaPeer multicast + Helpers", "45", "59", "74"):
        assert label in text
    implied = paper_implied_loads()
    assert implied["dynapeer_helpers"] == pytest.approx(117.0)
    # the paper's percentages are consistent among themselves: Chaining 39 % below Patching
    assert 1 - implied["chaining"] / implied["patching"] == pytest.approx(0.39, abs=0.01)


def test_bad_inputs():
    with pytest.raises(ValueError):
        server_load("broadcast")
    with pytest.raises(ValueError):
        server_load("pn2pm", replace(PAPER_TABLE2, pn2pm_upload_kbps=750.0))
    with pytest.raises(ValueError):
        VoDParams(upload_kbps=0.0)
    with pytest.raises(ValueError):
        Workload(videos=0)
