"""Bluetooth-like piconet: capacity shared by all members (not per member), the 7-active-slave limit, and
range: a member moved out of range loses its traffic within one timeline tick, and regains it when back."""

from __future__ import annotations

import json

import pytest

from analysis.events import load_events
from scenarios.loader import ScenarioError, parse_scenario
from scenarios.run import RunOptions, run_scenario
from tests.conftest import REPO

SCENARIO = REPO / "tests" / "scenarios" / "piconet.yaml"
TICK = 0.1  # the runner fires events within ~50 ms; allow a tick plus the 10 ms hop


@pytest.fixture(scope="module")
def piconet_run(tmp_path_factory):
    out = run_scenario(SCENARIO, RunOptions(results=tmp_path_factory.mktemp("res")))
    assert out.status == "completed", out.error
    manifest = json.loads((out.bundle / "manifest.json").read_text())
    ev = load_events(out.bundle).frame
    recv = ev[ev["event"] == "probe_recv"].copy()
    recv["rt"] = recv["t"] - manifest["t0_epoch"]
    log = [json.loads(x) for x in (out.bundle / "piconet-pn.jsonl").read_text().splitlines()]
    return recv, log


def test_four_members_share_the_capacity(piconet_run) -> None:
    recv, _ = piconet_run
    flows = recv[recv["flow"].isin(["to_s1", "to_s2", "to_s3", "to_s4"])]
    start = flows["rt"].min() + 1.0  # steady state: senders start when their Python is up, then queues fill
    seconds = 3.0
    busy = flows[flows["rt"].between(start, start + seconds)]
    per_member = busy.groupby("flow")["size"].sum() * 8 / seconds
    wire = per_member.sum() * (1000 + 42) / 1000  # HTB counts Ethernet/IP/UDP headers too
    print(f"payload goodput per member (kbit/s): {dict((per_member / 1e3).round(1))}; sum on the wire "
          f"{wire / 1e6:.3f} Mbit/s of 2.1 shared")
    assert abs(wire - 2.1e6) <= 0.15 * 2.1e6
    assert (per_member > 0.15 * 2.1e6).all()  # each member gets a share; none is starved


def test_eighth_active_member_is_refused_until_a_slot_frees(piconet_run) -> None:
    recv, log = piconet_run
    refused = [e for e in log if e["event"] == "refused" and e["member"] == "s8"]
    assert refused, log
    s8 = recv[recv["flow"] == "to_s8"]
    assert s8["rt"].between(6.0, 9.0).sum() == 0  # in range from 8 s, but refused: nothing arrives
    assert s8["rt"].between(9.0 + TICK, 11.0).sum() > 50  # s5 left at 9 s: s8 took the slot


def test_move_out_of_range_cuts_within_a_tick_and_back_restores(piconet_run) -> None:
    recv, log = piconet_run
    s5 = recv[recv["flow"] == "to_s5"]
    counts = [int(s5["rt"].between(a, b).sum()) for a, b in ((6.0, 9.0), (9.0 + TICK, 12.0), (12.0 + TICK, 15.0))]
    print(f"s5 packets received: before the move {counts[0]}, out of range {counts[1]}, back {counts[2]}")
    assert s5["rt"].between(6.0, 9.0).sum() > 40  # 50 packets/s once the sender's Python is up
    assert s5["rt"].between(9.0 + TICK, 12.0).sum() == 0
    assert s5["rt"].between(12.0 + TICK, 15.0).sum() > 100  # s8 left at 11 s, so s5 gets a slot again
    assert any(e["event"] == "leave" and e["member"] == "s5" for e in log)


def test_ninth_member_at_start_is_a_validation_error() -> None:
    text = SCENARIO.read_text().replace("[50, 0]", "[9, 0]")
    with pytest.raises(ScenarioError) as exc:
        parse_scenario(text, "piconet.yaml")
    p = exc.value.problems[0]
    assert "at most 7 active slaves" in p.message and p.field == "piconets[0].members" and p.line == 7


def test_unknown_piconet_profile_is_a_validation_error() -> None:
    with pytest.raises(ScenarioError) as exc:
        parse_scenario(SCENARIO.read_text().replace("bt-edr", "bt-5"), "piconet.yaml")
    assert exc.value.problems[0].field == "piconets[0].profile"


def test_handover_between_piconets(no_leftovers, tmp_path) -> None:
    """A phone in the member lists of two piconets walks from one master's range into the other's: it leaves the
    first, joins the second, routes move, and its stream to the server goes on through the new master (from its
    address in the new piconet: a handover changes the phone's address, as a new Bluetooth PAN would)."""
    out = run_scenario(REPO / "tests" / "scenarios" / "handover.yaml", RunOptions(results=tmp_path))
    assert out.status == "completed", out.error
    t0 = json.loads((out.bundle / "manifest.json").read_text())["t0_epoch"]
    ev = load_events(out.bundle).frame
    rt = ev.loc[ev["event"] == "probe_recv", "t"] - t0
    before, after = int(rt.between(3.0, 5.0).sum()), int(rt.between(5.5, 9.5).sum())
    gap = float(rt[rt > 5.0].min() - 5.0)
    print(f"handover: {before} packets in the 2 s before, {after} in the 4 s after; first packet {gap * 1000:.0f} ms "
          "after the move")
    assert before >= 90 and after >= 190
    assert gap < 0.2
    logs = {p.stem: [json.loads(x) for x in p.read_text().splitlines()] for p in out.bundle.glob("piconet-*.jsonl")}
    assert any(e["event"] == "leave" and e["member"] == "ph" for e in logs["piconet-pna"])
    assert any(e["event"] == "join" and e["member"] == "ph" and e["t"] > t0 + 4 for e in logs["piconet-pnb"])
    srcs = ev.loc[ev["event"] == "probe_recv", "src"]
    assert srcs[rt < 5.0].nunique() == 1 and srcs[rt > 5.5].nunique() == 1
    assert srcs[rt < 5.0].iloc[0] != srcs[rt > 5.5].iloc[0]
