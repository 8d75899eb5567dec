"""IP multicast across ISP islands (tests/scenarios/multicast.yaml), with pimd and with smcroute.

A sender in ISP A sends to 239.1.1.1. Receivers in A (same LAN) and in B (across the backbone router) get
it; the receiver in C (unicast-only routers) never does; a receiver in B that leaves the group stops
getting it, at the network level too (its interface sees no more packets of the group); and without
multicast routing in the backbone router B gets nothing. Each run is built once per daemon and variant;
what happens is measured with the probe roles' events and with iptables counters in the receivers.

Known issue: with pimd 2.3.2, about one run in ten, B's last-hop router leaves the group's (S,G) entry
'unresolved' and B stops receiving after a few packets. The pimd variant is then run once more, with a printed
warning and the failed bundle kept; two failures in a row fail the test.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from scenarios.loader import load_scenario
from scenarios.processes import ProcessTable
from scenarios.run import RunOptions, run_scenario
from tests.conftest import REPO, needs_multicast_routing
from topologies.multicast import find_binary, smcroute_ports
from topologies.plan import make_plan

SCENARIO = REPO / "tests" / "scenarios" / "multicast.yaml"
GROUP = "239.1.1.1"
# (run length, when bleave leaves) per daemon and backbone variant. PIM-SM joins climb one hop per pimd
# timer tick (5 s) to the RP, so B may need ~15 s to get the group with pimd; smcroute forwards at once.
TIMING = {("pimd", True): (30.0, 22.0), ("pimd", False): (20.0, None),
          ("smcroute", True): (14.0, 7.0), ("smcroute", False): (8.0, None)}
COUNT_RULE = f"-d {GROUP} -p udp --dport 5001"


def make_variant(folder: Path, daemon: str, backbone: bool) -> Path:
    """The scenario with ``daemon`` in every multicast router; without it in ``bb`` unless ``backbone``."""
    data: Any = YAML(typ="safe").load(SCENARIO.read_text())
    data["name"] = f"multicast-{daemon}" + ("" if backbone else "-nobb")
    duration, leave_after = TIMING[(daemon, backbone)]
    data["duration"] = duration
    for node in data["nodes"]:
        if node.get("multicast_routing") is not None:
            if node["name"] == "bb" and not backbone:
                del node["multicast_routing"]
            elif daemon == "smcroute":
                node["multicast_routing"] = {"daemon": "smcroute"}
        if node["name"] == "bleave":
            node["processes"][0]["args"]["leave_after"] = leave_after or duration
    path = folder / f"{data['name']}.yaml"
    path.write_text(json.dumps(data, indent=1))  # JSON is YAML
    return path


def _counter(net: Any, node: str) -> int:
    """Packets of the group that reached ``node``'s interfaces (iptables raw PREROUTING, before any check)."""
    out = net.run(node, "iptables -t raw -L PREROUTING -v -x -n 2>&1")
    for line in out.splitlines():
        if GROUP in line and "udp" in line:
            return int(line.split()[0])
    raise AssertionError(f"no counting rule in {node}: {out}")


def _measure(path: Path, net: Any, bundle: Path) -> dict[str, Any]:
    """Start the scenario's processes, sample packet counters around bleave's leave, stop them."""
    sc, _ = load_scenario(path)
    leave_after = sc.node("bleave").processes[0].args["leave_after"]
    watched = ["arx", "brx", "bleave", "crx", "ccore", "cacc"]
    for node in watched:
        net.run(node, f"iptables -t raw -I PREROUTING {COUNT_RULE}")
    procs = ProcessTable(sc, bundle, net, net.plan.hosts_table())
    starts = sorted((p.start, n.name, p.proc_name) for n in sc.nodes for p in n.processes)
    t0 = time.monotonic()
    samples: dict[str, dict[str, int]] = {}
    marks = {"leave+3": min(leave_after + 3.0, sc.duration - 0.5), "end": sc.duration - 0.5}
    try:
        while starts or marks:
            now = time.monotonic() - t0
            while starts and starts[0][0] <= now:
                _, node, proc = starts.pop(0)
                procs.start(node, proc)
            for name, at in list(marks.items()):
                if at <= now:
                    samples[name] = {n: _counter(net, n) for n in watched}
                    del marks[name]
            time.sleep(0.05)
        crashes = procs.poll()
    finally:
        procs.stop_all()
    return {"samples": samples, "crashes": crashes,
            "mc_forwarding": {n: net.run(n, "cat /proc/sys/net/ipv4/conf/all/mc_forwarding").strip()
                              for n in ("bb", "ccore", "cacc", "aacc")},
            "mroute": {n: net.run(n, "ip mroute show").strip() for n in ("ccore", "cacc")}}


def _events(bundle: Path, name: str) -> list[dict[str, Any]]:
    f = bundle / "events" / f"{name}.jsonl"
    return [json.loads(line) for line in f.read_text().splitlines()] if f.exists() else []


@pytest.fixture(scope="module")
def runs() -> dict[tuple[str, bool], dict[str, Any]]:
    """Measurements of the variants built so far: each is built once, by the first test that needs it."""
    return {}


def run_variant(runs: dict[tuple[str, bool], dict[str, Any]], tmp_path_factory: pytest.TempPathFactory,
                daemon: str, backbone: bool) -> dict[str, Any]:
    """Build and run one variant (once per module); returns measurements, events and the bundle."""
    key = (daemon, backbone)
    if key not in runs:
        failed_attempts: list[str] = []
        for _attempt in range(2):
            folder = tmp_path_factory.mktemp(f"mc-{daemon}-{int(backbone)}")
            path = make_variant(folder, daemon, backbone)
            box: dict[str, Any] = {}
            outcome = run_scenario(path, RunOptions(results=folder / "results"),
                                   body=lambda net, bundle, _phase, box=box, path=path: box.update(
                                       _measure(path, net, bundle)))
            assert outcome.status == "completed", outcome.error
            box["bundle"] = outcome.bundle
            box["hosts"] = make_plan(load_scenario(path)[0]).hosts_table()
            if not (daemon == "pimd" and backbone) or _b_converged(box):
                break
            # Known issue (pimd 2.3.2 here, about one run in ten): B's last-hop router keeps the group's (S,G)
            # entry 'unresolved' and B stops receiving after a few packets. Say so, keep the bundle, run once more.
            failed_attempts.append(str(outcome.bundle))
            print(f"WARNING: pimd did not converge in ISP B (bundle {outcome.bundle}); running the variant again")
        box["failed_attempts"] = failed_attempts
        runs[key] = box
    return runs[key]


def _b_converged(box: dict[str, Any]) -> bool:
    """Did brx get every packet of the second-to-last 5 s (the PIM tree to B had formed and held)?"""
    tx = sent(box)
    if not tx:
        return False
    last = tx[-1]["t"]
    window = {e["seq"] for e in tx if last - 6 <= e["t"] <= last - 1}
    return bool(window) and window <= {e["seq"] for e in received(box, "brx")}


def received(box: dict[str, Any], node: str) -> list[dict[str, Any]]:
    return [e for e in _events(box["bundle"], f"{node}.rx") if e["event"] == "probe_recv"]


def sent(box: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in _events(box["bundle"], "asrc.tx") if e["event"] == "probe_send"]


@needs_multicast_routing
@pytest.mark.parametrize("daemon", ["pimd", "smcroute"])
def test_multicast_reaches_a_and_b_not_c_and_leave_is_honoured(daemon, runs, tmp_path_factory,
                                                               no_leftovers) -> None:
    box = run_variant(runs, tmp_path_factory, daemon, backbone=True)
    assert not box["crashes"], box["crashes"]
    tx = sent(box)
    counts = {n: len(received(box, n)) for n in ("arx", "brx", "bleave", "crx")}
    first_b = min((e["t"] for e in received(box, "brx")), default=float("nan")) - tx[0]["t"]
    print(f"\n{daemon}: sent {len(tx)}, received {counts} (bleave until its leave); B's first packet "
          f"{first_b:.1f} s after the first send; group packets at the interfaces at the end {box['samples']['end']}")
    assert len(tx) > 400
    # A, same LAN as the sender: (nearly) everything, no duplicates
    arx = [e["seq"] for e in received(box, "arx")]
    assert len(arx) >= 0.95 * len(tx) and len(arx) == len(set(arx))
    # B, across the backbone: everything sent in the last seconds (after the PIM joins have converged)
    last = tx[-1]["t"]
    window = {e["seq"] for e in tx if last - 6 <= e["t"] <= last - 1}
    brx = {e["seq"] for e in received(box, "brx")}
    assert len(window) > 200 and window <= brx, f"brx missed {len(window - brx)} of the last-seconds packets"
    # C: its routers forward no multicast; nothing reaches its LAN
    assert counts["crx"] == 0
    assert box["samples"]["end"]["crx"] == 0 and box["samples"]["end"]["cacc"] == 0
    assert box["mc_forwarding"]["ccore"] == "0" and box["mc_forwarding"]["cacc"] == "0"
    assert box["mroute"]["ccore"] == "" and box["mroute"]["cacc"] == ""
    assert box["mc_forwarding"]["bb"] == "1" and box["mc_forwarding"]["aacc"] == "1"
    if daemon == "smcroute":  # static routes flood the backbone's links: ccore gets the group, drops it
        assert box["samples"]["end"]["ccore"] > 0


@needs_multicast_routing
@pytest.mark.parametrize("daemon", ["pimd", "smcroute"])
def test_leave_stops_reception_within_3_s(daemon, runs, tmp_path_factory, no_leftovers) -> None:
    box = run_variant(runs, tmp_path_factory, daemon, backbone=True)
    events = _events(box["bundle"], "bleave.rx")
    leave = next(e for e in events if e["event"] == "group_leave" and e["reason"] == "leave_after")
    join = next(e for e in events if e["event"] == "group_join")
    assert abs(leave["t"] - join["t"] - TIMING[(daemon, True)][1]) < 1  # type: ignore[operator]
    got = received(box, "bleave")
    before = [e for e in got if e["t"] < leave["t"]]
    after = [e for e in got if e["t"] > leave["t"] + 3]
    s = box["samples"]
    nic_after = s["end"]["bleave"] - s["leave+3"]["bleave"]
    brx_after = s["end"]["brx"] - s["leave+3"]["brx"]
    print(f"\n{daemon}: bleave received {len(before)} before its leave, {len(after)} from 3 s after it; "
          f"its interface saw {nic_after} packets of the group then (brx's: {brx_after})")
    assert len(before) > 50, "the leaver must have been receiving before it left"
    assert after == []
    assert nic_after == 0, "IGMP leave not honoured: the group still reaches the leaver's interface"
    assert brx_after > 100, "the other receiver on the same LAN must keep receiving"


@needs_multicast_routing
@pytest.mark.parametrize("daemon", ["pimd", "smcroute"])
def test_backbone_without_multicast_routing_cuts_off_b(daemon, runs, tmp_path_factory, no_leftovers) -> None:
    box = run_variant(runs, tmp_path_factory, daemon, backbone=False)
    assert not box["crashes"], box["crashes"]
    counts = {n: len(received(box, n)) for n in ("arx", "brx", "bleave", "crx")}
    print(f"\n{daemon} without multicast in bb: sent {len(sent(box))}, received {counts}")
    assert counts["arx"] > 0.9 * len(sent(box))
    assert counts["brx"] == counts["bleave"] == counts["crx"] == 0
    assert box["samples"]["end"]["brx"] == 0
    assert box["mc_forwarding"]["bb"] == "0"
    assert not (box["bundle"] / "state" / "multicast-bb.txt").exists()


@needs_multicast_routing
@pytest.mark.parametrize("daemon", ["pimd", "smcroute"])
def test_bundle_dump_shows_multicast_routes(daemon, runs, tmp_path_factory, no_leftovers) -> None:
    box = run_variant(runs, tmp_path_factory, daemon, backbone=True)
    src = box["hosts"]["asrc"]
    for router in ("aacc", "acore", "bb", "bcore", "bacc"):
        text = (box["bundle"] / "state" / f"multicast-{router}.txt").read_text()
        assert "===== start" in text and "===== stop" in text
        stop = text.split("===== stop", 1)[1]
        kernel = stop.split("$ ip maddr show", 1)[0]
        assert re.search(rf"\({re.escape(src)},\s*{re.escape(GROUP)}\)\s+Iif: \S+\s+Oifs: ", kernel), \
            f"{router}: no forwarding (S,G) entry in ip mroute:\n{kernel}"
        if daemon == "pimd":
            assert re.search(rf"INADDR_ANY\s+{re.escape(GROUP)}", stop), f"{router}: no (*,G) in pimd's dump"
        else:
            assert "239.0.0.0/8" in stop, f"{router}: no (*,G) rule in smcroutectl show routes"
    assert not (box["bundle"] / "state" / "multicast-ccore.txt").exists()


def test_smcroute_forwarding_ports_form_a_spanning_tree() -> None:
    """In a ring of smcroute routers one ring link carries no multicast; host and LAN links always do."""
    text = """
name: ring
duration: 5
nodes:
  - {name: r1, kind: router, multicast_routing: {daemon: smcroute}}
  - {name: r2, kind: router, multicast_routing: {daemon: smcroute}}
  - {name: r3, kind: router, multicast_routing: {daemon: smcroute}}
  - {name: r4, kind: router}
  - {name: h1}
  - {name: lan, kind: switch}
  - {name: h2}
links:
  - {a: r1, b: r2}
  - {a: r2, b: r3}
  - {a: r3, b: r1, cost: 5}
  - {a: r1, b: h1}
  - {a: r2, b: lan}
  - {a: r3, b: lan}
  - {a: h2, b: lan}
  - {a: r3, b: r4}
"""
    from scenarios.loader import parse_scenario

    sc = parse_scenario(text)
    ports = smcroute_ports(make_plan(sc), {n.name: n for n in sc.nodes})
    links = {r: sorted(p.link for p in ps) for r, ps in ports.items()}
    # vertices r1, r2, r3, lan; the cheapest spanning tree drops r3-r1 (cost 5) and one of the LAN edges
    assert links["r1"] == ["r1-h1", "r1-r2"]
    assert "r3-r1" not in links["r3"] and "r3-r4" in links["r3"]
    tree_edges = {lk for ls in links.values() for lk in ls if lk not in ("r1-h1", "r3-r4")}
    assert len(tree_edges) == 3  # 4 vertices -> 3 edges


def test_daemons_are_installed() -> None:
    """Both daemons must be runnable here (smcroute may be unpacked into the project, see docs/multicast.md)."""
    assert find_binary("pimd") and find_binary("smcrouted") and find_binary("smcroutectl")
