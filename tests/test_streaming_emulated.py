"""Live P2P streaming in an emulated network (one lean run of tests/scenarios/streaming_small.yaml): a tracker, a
source capped at three partners and eight peers on 4/1 Mbit/s lines, two behind port-restricted NATs, a 30 s
stream. The figures come from the analysis pipeline (analysis/tidy.py over the run bundle): every viewer's
continuity index, where the bytes came from, the source's load; the NATed peers are found unreachable by the
tracker and still play and upload over the connections they opened."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from analysis.tidy import analyse_bundle
from scenarios.run import RunOptions, run_scenario
from tests.conftest import REPO

SCENARIO = REPO / "tests" / "scenarios" / "streaming_small.yaml"
PEERS = [f"p{i}" for i in range(1, 9)]


def events(bundle: Path, node: str, event: str) -> list[dict[str, Any]]:
    out = []
    for path in (bundle / "events").glob(f"{node}.*.jsonl"):
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("event") == event:
                out.append(rec)
    return out


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    outcome = run_scenario(SCENARIO, RunOptions(results=tmp_path_factory.mktemp("results"), seed=21))
    assert outcome.status == "completed", outcome.error
    assert not outcome.crashes, outcome.crashes
    return outcome.bundle


def test_live_stream_plays_on_time_mostly_from_peers(bundle: Path, no_leftovers: None) -> None:
    a = analyse_bundle(bundle, write=False)
    assert sorted(a.viewers) == PEERS
    for name, vm in a.viewers.items():
        assert vm.continuity_index is not None and vm.continuity_index >= 0.95, (name, vm.continuity_index)
        assert vm.chunks_due >= 20 and vm.startup_latency_s is not None
    from_peers = sum(vm.bytes_from_peers or 0 for vm in a.viewers.values())
    from_server = sum(vm.bytes_from_server or 0 for vm in a.viewers.values())
    played = sum(vm.bytes_played or 0 for vm in a.viewers.values())
    assert from_peers > 0.5 * played and from_peers > from_server, (from_peers, from_server, played)
    src = a.servers["src"]
    assert src.streams is not None and src.streams.peak <= 3  # max_partners
    assert src.upload_bps_mean is not None and 0 < src.upload_bps_mean < 2.1e6  # the source's 2 Mbit/s line


def test_natted_peers_are_unreachable_but_play_and_upload(bundle: Path) -> None:
    for name in ("p7", "p8"):
        (answer,) = events(bundle, name, "join_answer")
        assert answer["reachable"] == "no"
        adds = events(bundle, name, "partner_add")
        assert adds and not any(a["inbound"] for a in adds)  # nobody could connect to them
        assert sum(t["data_up"] for t in events(bundle, name, "traffic")) > 62416  # they uploaded chunks
    public = [e for n in PEERS[:6] for e in events(bundle, n, "join_answer")]
    assert all(e["reachable"] == "yes" for e in public)
