"""One lean emulated VoD run (mixed network: ISP a routes multicast, ISP b does not) with DynaPeer multicast:
the server's channels show up in the mroute table of a multicast ISP's router, clients in ISP a join them,
clients in the unicast-only ISP b are served in unicast mode and play on time. On a kernel without multicast
routing that test skips and a network without multicast ISPs checks the unicast mode instead."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from analysis.dynapeer_compare import mroute_groups
from analysis.dynapeer_scenarios import VodSetup, vod_scenario
from analysis.events import load_events
from scenarios.run import RunOptions, RunOutcome, run_scenario
from tests.conftest import MULTICAST_ROUTING_MISSING, needs_multicast_routing


def run_dynapeer(tmp_path: Path, network: str) -> tuple[dict[str, Any], RunOutcome]:
    """One short DynaPeer-multicast run (seed 2, one title, 30-s videos) in the given network; it completed."""
    setup = VodSetup(policy="dynapeer_multicast", network=network, seed=2, time_factor=180.0, warmup_l=0.2,
                     measure_l=0.8, keep=(9,))
    sc = vod_scenario(setup)
    path = tmp_path / f"vod_{network}.yaml"
    path.write_text(json.dumps(sc))
    outcome = run_scenario(path, RunOptions(results=tmp_path / "results", seed=setup.seed))
    assert outcome.status == "completed", outcome.error
    assert not outcome.crashes
    return sc, outcome


@needs_multicast_routing
def test_mixed_network_runs_both_modes(tmp_path: Path, no_leftovers: None) -> None:
    sc, outcome = run_dynapeer(tmp_path, "mixed")
    groups = mroute_groups(outcome.bundle)
    assert any(r.startswith("a_") for r in groups), groups  # multicast state in ISP a's routers
    assert not any(r.startswith("b_") for r in groups), groups
    frame = load_events(outcome.bundle).frame
    clients = frame[frame["role"].astype(str) == "vod_client"]
    isp_of = {n["name"]: n["uplink"]["isp"] for n in sc["nodes"] if n["name"] != "vsrv"}
    plans = clients[clients["event"] == "plan"]
    kinds = {isp: set() for isp in "ab"}
    for node, sources in zip(plans["node"].astype(str), plans["sources"], strict=True):
        kinds[isp_of[node]].update(s["kind"] for s in sources)
    assert "multicast" in kinds["a"] and "multicast" not in kinds["b"], kinds
    due = clients[clients["event"] == "chunk_due"]
    due_b = due[due["node"].astype(str).map(isp_of) == "b"]
    assert len(due_b) > 0
    assert due_b["on_time"].map(lambda v: v is True or v == 1.0).mean() >= 0.98
    assert due["on_time"].map(lambda v: v is True or v == 1.0).mean() >= 0.98


@pytest.mark.skipif(MULTICAST_ROUTING_MISSING is None,
                    reason="this kernel routes multicast: the mixed-network test covers unicast mode (ISP b)")
def test_unicast_network_serves_dynapeer_in_unicast_mode(tmp_path: Path, no_leftovers: None) -> None:
    """On a kernel without multicast routing, the part of DynaPeer that needs none: with no ISP routing multicast,
    every client is served in unicast mode (server and peers, no channel) and plays on time."""
    _sc, outcome = run_dynapeer(tmp_path, "unicast")
    assert not mroute_groups(outcome.bundle)
    frame = load_events(outcome.bundle).frame
    clients = frame[frame["role"].astype(str) == "vod_client"]
    plans = clients[clients["event"] == "plan"]
    kinds = {s["kind"] for sources in plans["sources"] for s in sources}
    assert "multicast" not in kinds and "peer" in kinds, kinds
    due = clients[clients["event"] == "chunk_due"]
    assert len(due) > 0
    assert due["on_time"].map(lambda v: v is True or v == 1.0).mean() >= 0.98
