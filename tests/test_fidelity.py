"""Link fidelity through the emulated network, per impairment backend.

One network (tests/scenarios/fidelity.yaml) with a host pair per configuration is built once per backend;
probes and iperf3 run through it and each test checks one figure against the configuration. The netem
variant skips with the reason on kernels without netem (as here); the NFQUEUE delay line is what runs here.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from scenarios.calibrate import Prober, binomial_interval, expected_rfc3550_jitter
from scenarios.run import RunOptions, run_scenario
from tests.conftest import REPO
from topologies.impair.backends import netem_available

SCENARIO = REPO / "tests" / "scenarios" / "fidelity.yaml"


def rfc3550_series(recv: list[dict[str, Any]]) -> list[float]:
    j, out = 0.0, []
    for prev, cur in zip(recv, recv[1:], strict=False):
        d = (cur["t"] - prev["t"]) - (cur["sent"] - prev["sent"])
        j += (abs(d) - j) / 16
        out.append(j)
    return out


def _measure(net, bundle: Path, phase) -> dict[str, Any]:  # noqa: ANN001
    prober = Prober(net, bundle / "fidelity", seed=7)
    ip = {lp.name: str(lp.b.ip.ip) for lp in net.plan.links}
    ip_a = {lp.name: str(lp.a.ip.ip) for lp in net.plan.links}
    res: dict[str, Any] = {}
    timing = ["d10", "d50", "d100", "jn", "ju"]
    flows = [{"src": f"{n}a", "dst": f"{n}b", "dst_ip": ip[n], "pps": 20, "seconds": 20} for n in timing]
    for name, r in zip(timing, prober.udp_probes(flows), strict=True):
        res[name] = r
    lossy = ["l1", "l10", "ge"]
    flows = [{"src": f"{n}a", "dst": f"{n}b", "dst_ip": ip[n], "pps": 2000, "seconds": 11, "size": 100}
             for n in lossy]
    for name, r in zip(lossy, prober.udp_probes(flows, port=47011), strict=True):
        res[name] = r
    for name in ("r1", "r10", "r50"):
        res[name] = prober.iperf3(f"{name}a", f"{name}b", ip[name], seconds=6)
    res["as_up"] = prober.iperf3("asa", "asb", ip["as"], seconds=6)
    res["as_down"] = prober.iperf3("asb", "asa", ip_a["as"], seconds=6)
    return res


@pytest.fixture(scope="module", params=["nfqueue", "netem"])
def measured(request, tmp_path_factory) -> dict[str, Any]:
    backend = request.param
    if backend == "netem" and not netem_available():
        pytest.skip("this kernel has no netem qdisc ('Specified qdisc kind is unknown'); "
                    "the same checks run through the nfqueue backend")
    box: dict[str, Any] = {}

    def body(net, bundle, phase):  # noqa: ANN001
        box.update(_measure(net, bundle, phase))

    outcome = run_scenario(SCENARIO, RunOptions(impairment=backend, results=tmp_path_factory.mktemp("res")),
                           body=body)
    assert outcome.status == "completed", outcome.error
    return box


@pytest.mark.parametrize("name,delay_ms", [("d10", 10), ("d50", 50), ("d100", 100)])
def test_delay_median_within_1ms(measured, name, delay_ms) -> None:
    owd = sorted((r["t"] - r["sent"]) * 1000 for r in measured[name]["recv"])
    assert len(owd) > 350
    median = owd[len(owd) // 2]
    print(f"{name}: configured {delay_ms} ms, median {median:.3f} ms")
    assert abs(median - delay_ms) <= 1.0


@pytest.mark.parametrize("name,sigma_ms,dist", [("jn", 5, "normal"), ("ju", 8, "uniform")])
def test_rfc3550_jitter_within_25_percent(measured, name, sigma_ms, dist) -> None:
    from scenarios.schema import ResolvedDirection

    d = ResolvedDirection(src="a", dst="b", rate=None, delay=0.04, jitter=sigma_ms / 1000, jitter_distribution=dist,
                          reorder=False, loss=None, queue=1000, linklayer="ethernet", overhead=0)
    expected = expected_rfc3550_jitter(d) * 1000
    series = rfc3550_series(measured[name]["recv"])[32:]  # after the estimator's warm-up (gain 1/16)
    mean_j = sum(series) / len(series) * 1000
    print(f"{name}: expected RFC 3550 jitter {expected:.3f} ms, measured (mean of J) {mean_j:.3f} ms")
    assert abs(mean_j - expected) <= 0.25 * expected
    seqs = [r["seq"] for r in measured[name]["recv"]]
    assert seqs == sorted(seqs), "jitter without reorder must keep packet order"


@pytest.mark.parametrize("name,p", [("l1", 0.01), ("l10", 0.10)])
def test_random_loss_inside_99_percent_binomial_interval(measured, name, p) -> None:
    sent = measured[name]["sent"]
    got = len({r["seq"] for r in measured[name]["recv"]})
    lo, hi = binomial_interval(p, sent)
    loss = 1 - got / sent
    print(f"{name}: configured {p:.2%}, measured {loss:.3%} over {sent} packets, 99% interval [{lo:.3%}, {hi:.3%}]")
    assert sent >= 20000
    assert lo <= loss <= hi


def test_gilbert_elliott_loss_is_bursty(measured) -> None:
    r = measured["ge"]
    sent = r["sent"]
    got = {x["seq"] for x in r["recv"]}
    lost = [s not in got for s in range(sent)]
    loss = sum(lost) / sent
    expected = 0.02 / 0.27  # p / (p + r) with h = 0, k = 100%
    bursts = []
    run = 0
    for x in lost:
        if x:
            run += 1
        elif run:
            bursts.append(run)
            run = 0
    mean_burst = sum(bursts) / len(bursts)
    print(f"gilbert: loss {loss:.3%} (expected {expected:.3%}), mean burst {mean_burst:.2f} (expected {1 / 0.25:.1f})")
    assert abs(loss - expected) < 0.25 * expected
    assert mean_burst > 2.5  # random loss at this mean would give bursts of ~1.08


@pytest.mark.parametrize("name,rate", [("r1", 1e6), ("r10", 10e6), ("r50", 50e6)])
def test_htb_tcp_goodput_85_to_100_percent(measured, name, rate) -> None:
    goodput = measured[name]
    print(f"{name}: TCP goodput {goodput / 1e6:.3f} Mbit/s of {rate / 1e6:g}")
    assert 0.85 * rate <= goodput <= rate


def test_asymmetric_link_has_a_rate_per_direction(measured) -> None:
    up, down = measured["as_up"], measured["as_down"]
    print(f"asymmetric: up {up / 1e6:.3f} Mbit/s (2 configured), down {down / 1e6:.3f} Mbit/s (10 configured)")
    assert 0.85 * 2e6 <= up <= 2e6
    assert 0.85 * 10e6 <= down <= 10e6
    assert math.isclose(down / up, 5, rel_tol=0.15)
