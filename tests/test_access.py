"""Access profiles measured: TCP goodput down and up of every profile against its configuration, and the ATM
cell tax of ADSL showing up as lower goodput for small packets than a plain HTB at the same rate.

The configured rate of an ATM line is its sync rate; TCP can carry at most the part of it that the cells do
not eat: 1448 payload bytes ride in ceil((1514 + overhead) / 48) cells of 53 bytes. The 85-100% tolerance of
the engine's HTB tests is applied to that ATM-adjusted rate (for Ethernet-framed lines it is the plain rate).
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from scenarios.calibrate import Prober
from scenarios.profiles import PROFILES
from scenarios.run import RunOptions, run_scenario
from tests.conftest import REPO

SCENARIO = REPO / "tests" / "scenarios" / "access.yaml"
HOMES = {"adsl": "adsl", "adsl2p": "adsl2plus", "vdsl": "vdsl2", "ftth": "ftth", "hspa": "3g"}


def tcp_ceiling(rate: float, linklayer: str, overhead: int) -> float:
    """Highest TCP goodput (bit/s) a line of this rate and framing can carry with 1500-byte packets."""
    wire = math.ceil((1514 + overhead) / 48) * 53 if linklayer == "atm" else 1514 + overhead
    return rate * 1448 / wire


@pytest.fixture(scope="module")
def measured(tmp_path_factory) -> dict[str, Any]:
    box: dict[str, Any] = {}

    def body(net, bundle, phase) -> None:  # noqa: ANN001
        prober = Prober(net, bundle / "access", seed=9)
        server_ip = net.plan.hosts_table()["server"]
        for home in HOMES:
            host = f"{home}_1"
            box[(home, "down")] = prober.iperf3(host, "server", server_ip, seconds=4, reverse=True)
            box[(home, "up")] = prober.iperf3(host, "server", server_ip, seconds=4)
        for name in ("atm", "plain"):
            lp = net.plan.link(name)
            box[(name, "small")] = prober.iperf3(lp.a.node, lp.b.node, str(lp.b.ip.ip), seconds=4,
                                                 udp_rate=2e6, length=64)

    out = run_scenario(SCENARIO, RunOptions(results=tmp_path_factory.mktemp("res")), body=body)
    assert out.status == "completed", out.error
    return box


@pytest.mark.parametrize("home", sorted(HOMES))
@pytest.mark.parametrize("direction", ["down", "up"])
def test_profile_tcp_goodput(measured, home, direction) -> None:
    line = PROFILES[HOMES[home]]
    rate = line.down if direction == "down" else line.up
    ceiling = tcp_ceiling(rate, line.linklayer, line.overhead)
    got = measured[(home, direction)]
    print(f"{HOMES[home]} {direction}: {got / 1e6:.3f} Mbit/s of {rate / 1e6:g} configured "
          f"(ceiling {ceiling / 1e6:.3f} with {line.linklayer} framing)")
    assert 0.85 * ceiling <= got <= 1.0 * rate


def test_atm_cell_tax_lowers_small_packet_goodput(measured) -> None:
    atm, plain = measured[("atm", "small")], measured[("plain", "small")]
    # 64-byte payloads: 106 bytes per frame on a plain link, 3 ATM cells (159 bytes) with 32 bytes overhead
    expected = 106 / 159
    print(f"64-byte UDP at 1 Mbit/s: ATM {atm / 1e3:.0f} kbit/s, plain {plain / 1e3:.0f} kbit/s, "
          f"ratio {atm / plain:.3f} (cells predict {expected:.3f})")
    assert atm < 0.8 * plain
    assert abs(atm / plain - expected) < 0.08


def test_set_access_changes_the_profile_mid_run(no_leftovers, tmp_path) -> None:
    """ADSL (1 Mbit/s up, ATM) -> VDSL2 (10 Mbit/s up) at 4 s: a 3 Mbit/s upstream flow is squeezed to the
    ADSL ceiling before and passes whole after; cutting the access line at 6 s stops it, restoring it at 6.5 s
    brings it back."""
    import json

    from analysis.events import load_events

    out = run_scenario(REPO / "tests" / "scenarios" / "set_access.yaml", RunOptions(results=tmp_path))
    assert out.status == "completed", out.error
    t0 = json.loads((out.bundle / "manifest.json").read_text())["t0_epoch"]
    ev = load_events(out.bundle).frame
    recv = ev[ev["event"] == "probe_recv"]
    rt = recv["t"] - t0

    def mbps(a: float, b: float) -> float:
        return float(recv.loc[rt.between(a, b), "size"].sum() * 8 / (b - a) / 1e6)

    before, after = mbps(2.0, 3.9), mbps(4.5, 5.9)
    cut, restored = mbps(6.1, 6.5), mbps(6.8, 7.8)
    adsl_ceiling = 1e6 * 1000 / (math.ceil((1042 + 32) / 48) * 53) / 1e6  # 1000-byte payloads in ATM cells
    print(f"upstream payload: ADSL {before:.2f} Mbit/s (ceiling {adsl_ceiling:.2f}), VDSL2 {after:.2f} Mbit/s, "
          f"line cut {cut:.2f} Mbit/s, restored {restored:.2f} Mbit/s")
    assert abs(before - adsl_ceiling) < 0.1 * adsl_ceiling
    assert after > 2.7
    assert cut == 0.0  # the access line is cut: nothing gets through
    assert restored > 2.7  # and after link_up, routes and rates are back
