"""The library's building-block scenarios validate, run (shortened), tear down cleanly and draw their picture.

`party` (hybrid live streaming over 3G and two piconets, not probe flows) has its own test, which also checks
its teardown and picture: tests/test_party.py.
"""

from __future__ import annotations

import pytest

from analysis.events import load_events
from analysis.flows import flow_table
from scenarios.run import RunOptions, run_scenario
from tests.conftest import REPO, needs_multicast_routing

LIBRARY = REPO / "scenarios" / "library"

# scenario -> (text replacements that shorten it, flows that must arrive almost intact)
CASES = {
    "neighbourhood": ({"duration: 20": "duration: 8"}, ["anna_up", "bob_up", "carla_up", "dave_up", "erin_down"]),
    "islands": ({"duration: 20": "duration: 14"}, ["to_c"]),
    "vod_mixed": ({"duration: 80.0": "duration: 30"}, []),  # VoD sessions, no probe flows (tests/test_vod_emulated.py)
}


ROUTED = {"islands", "vod_mixed"}  # networks with multicast routers


@pytest.mark.parametrize("name", [pytest.param(n, marks=needs_multicast_routing) if n in ROUTED else n
                                  for n in sorted(CASES)])
def test_library_scenario_runs_and_draws(no_leftovers, results_dir, tmp_path, name) -> None:
    text = (LIBRARY / f"{name}.yaml").read_text()
    replacements, intact = CASES[name]
    for old, new in replacements.items():
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    out = run_scenario(path, RunOptions(results=results_dir))
    assert out.status == "completed", out.error
    assert not out.crashes
    picture = out.bundle / "topology.png"
    assert picture.exists() and picture.stat().st_size > 10_000
    flows = flow_table(load_events(out.bundle).frame).set_index("flow")
    for flow in intact:
        print(f"{name} {flow}: sent {flows.loc[flow, 'sent']:.0f} loss {flows.loc[flow, 'loss_pct']:.2f}% "
              f"delay p50 {flows.loc[flow, 'delay_p50_ms']:.1f} ms")
        assert flows.loc[flow, "sent"] > 50
        assert flows.loc[flow, "loss_pct"] < 2.0
    if name == "islands":  # multicast reaches both multicast ISPs (also through a NAT gateway), never ISP C
        # judge the steady state, the last 8 s before the end (with pimd, joins need ~20 s to settle)
        ev = load_events(out.bundle).frame
        mine = ev[ev["flow"] == "tv"]
        end = float(mine["t"].max())
        sent = ((mine["event"] == "probe_send") & mine["t"].between(end - 10, end - 2)).sum()
        for member in ("suba", "subb", "bella_1"):
            got = ((mine["event"] == "probe_recv") & (mine["node"] == member)
                   & mine["sent"].between(end - 10, end - 2)).sum()
            print(f"islands multicast to {member}: {got} of {sent} packets in the last 8 s")
            assert got >= 0.98 * sent
        assert ((mine["event"] == "probe_recv") & (mine["node"] == "subc")).sum() == 0
