"""The live-streaming acceptance measurements read bundles correctly: who uploaded to whom (a NAT gateway's address
counts for the host behind it) and the survivors' continuity in a window, on a small bundle written here; the paired
comparison of the two data schedulers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analysis.streaming_accept import (
    address_book,
    paired_comparison,
    uploads_between,
    uploads_by_node,
    window_continuity,
)


def _bundle(tmp_path: Path) -> Path:
    b = tmp_path / "bundle"
    (b / "events").mkdir(parents=True)
    network = {"links": [{"ends": [{"node": "p1", "ip": "10.0.0.1/24"}, {"node": "h2_gw", "ip": "10.0.0.9/24"}]},
                         {"ends": [{"node": "p3", "ip": "10.0.0.3/24"}]}]}
    (b / "resolved.json").write_text(json.dumps({"network": network}))
    events = {
        "p1": [("chunk_recv", {"chunk": 1, "bytes": 100, "from": "src"}),
               ("chunk_recv", {"chunk": 2, "bytes": 50, "from": "10.0.0.9"}),  # from the host behind h2's NAT
               ("chunk_due", {"chunk": 1, "on_time": True}), ("chunk_due", {"chunk": 2, "on_time": False})],
        "p3": [("chunk_recv", {"chunk": 1, "bytes": 70, "from": "10.0.0.9"}),
               ("chunk_recv", {"chunk": 2, "bytes": 30, "from": "10.0.0.1"}),
               ("chunk_due", {"chunk": 1, "on_time": True})],
        "p2": [("chunk_recv", {"chunk": 1, "bytes": 20, "from": "10.0.0.1"}),
               ("chunk_due", {"chunk": 1, "on_time": False})],
    }
    for node, evs in events.items():
        lines = [json.dumps({"t": 100.0 + i, "node": node, "role": "peer", "proc": "peer", "event": e, **f})
                 for i, (e, f) in enumerate(evs)]
        (b / "events" / f"{node}.peer.jsonl").write_text("\n".join(lines) + "\n")
    return b


def test_uploads_are_counted_by_sender_and_receiver_kind(tmp_path: Path) -> None:
    b = _bundle(tmp_path)
    assert address_book(b) == {"10.0.0.1": "p1", "10.0.0.9": "h2_gw", "10.0.0.3": "p3"}
    assert uploads_by_node(b) == {"src": 100.0, "h2_gw": 120.0, "p1": 50.0}
    natted = {"p2": "symmetric"}

    def kind(node: str) -> str:
        node = {"h2_gw": "p2"}.get(node, node)
        return "source" if node == "src" else natted.get(node, "public")

    assert uploads_between(b, kind) == {"source": {"public": 100.0}, "symmetric": {"public": 120.0},
                                        "public": {"public": 30.0, "symmetric": 20.0}}


def test_window_continuity_leaves_out_the_killed_peers(tmp_path: Path) -> None:
    b = _bundle(tmp_path)
    share, n = window_continuity(b, 100.0, 110.0, exclude={"p2"})
    assert n == 3 and share == pytest.approx(2 / 3)
    assert window_continuity(b, 200.0, 210.0, exclude=set()) == (None, 0)


def test_paired_comparison_needs_the_whole_interval_above_zero() -> None:
    clear = paired_comparison({"deadline": [0.95, 0.97, 0.96, 0.98], "round_robin": [0.90, 0.91, 0.93, 0.92]})
    assert clear["pass"] and clear["hetero_deadline_wins"] == "4 of 4 seeds"
    mean, half = clear["hetero_difference"]["mean_ci95"]
    assert mean == pytest.approx(0.05) and 0 < half < mean
    # ahead on average and in most seeds, but one seed the other way: the interval includes zero
    mixed = paired_comparison({"deadline": [0.99, 0.98, 0.97, 0.80], "round_robin": [0.90, 0.91, 0.93, 0.95]})
    assert mixed["hetero_difference"]["mean_ci95"][0] > 0 and not mixed["pass"]
    one = paired_comparison({"deadline": [0.99], "round_robin": [0.50]})
    assert one["hetero_difference"]["mean_ci95"][1] == float("inf") and not one["pass"]
