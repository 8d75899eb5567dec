"""NAT gateways (topologies/nat.py) and the STUN-like classifier (nodes/stun_server.py, nodes/stun_client.py).

tests/scenarios/nat.yaml has one home gateway per RFC 4787 type behind an ISP router, two STUN-like servers and
one more public host. Each test builds it through ``run_scenario`` with a ``body``: the body starts the scenario's
processes (servers, one classifier behind each gateway, a probe flow to a port forward), waits for the four
``nat_classified`` events, then sends its own packets from inside the nodes and reads the events back.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scenarios.loader import load_scenario
from scenarios.processes import ProcessTable
from scenarios.run import RunOptions, run_scenario
from tests.conftest import REPO
from topologies.nat import nat_rules_dump
from topologies.network import EmulatedNetwork

SCENARIO = REPO / "tests" / "scenarios" / "nat.yaml"
KINDS = {"fc": "full-cone", "ar": "address-restricted", "pr": "port-restricted", "sym": "symmetric"}

# Run inside a node: `send <bind ip|-> <bind port> <dst ip> <dst port> <text>`, `tcp_serve <port>`,
# `tcp_get <ip> <port> <text>`.
HELPER = r'''
import socket, sys, time
cmd = sys.argv[1]
if cmd == "send":
    bind_ip, bind_port, dst, port, text = sys.argv[2:7]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0" if bind_ip == "-" else bind_ip, int(bind_port)))
    for _ in range(3):
        s.sendto(text.encode(), (dst, int(port)))
        time.sleep(0.05)
    print("sent from", s.getsockname())
elif cmd == "tcp_serve":
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", int(sys.argv[2])))
    srv.listen(1)
    srv.settimeout(20)
    conn, peer = srv.accept()
    data = conn.recv(100)
    conn.sendall(b"echo " + data + f" peer={peer[0]}".encode())
    conn.close()
elif cmd == "tcp_get":
    c = socket.create_connection((sys.argv[2], int(sys.argv[3])), timeout=3)
    c.sendall(sys.argv[4].encode())
    print(c.recv(200).decode())
'''


def events(bundle: Path, node: str, proc: str) -> list[dict[str, Any]]:
    path = bundle / "events" / f"{node}.{proc}.jsonl"
    out = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:  # a line being written
                continue
    return out


def wait_until(what: str, cond: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class NatRun:
    """What a test body gets: the network, the bundle, helpers to run things in nodes."""

    def __init__(self, net: EmulatedNetwork, bundle: Path):
        self.net = net
        self.bundle = bundle
        self.helper = bundle / "nat_helper.py"
        self.helper.write_text(HELPER)
        self.hosts = net.plan.hosts_table()
        self.classified: dict[str, dict[str, Any]] = {}

    def outside_ip(self, short: str) -> str:
        lp = self.net.plan.link(f"up_{short}")
        ep = lp.a if lp.a.node == f"gw_{short}" else lp.b
        return str(ep.ip.ip)  # type: ignore[union-attr]

    def py(self, node: str, *args: Any) -> str:
        cmd = " ".join(shlex.quote(str(a)) for a in (sys.executable, self.helper, *args))
        return self.net.run(node, f"timeout 10 {cmd} 2>&1")

    def unsolicited(self, short: str, marker: str) -> list[dict[str, Any]]:
        return [e for e in events(self.bundle, f"h_{short}", "stun")
                if e["event"] == "unsolicited" and e.get("text", "").startswith(marker)]


def run_nat(results_dir: Path, check: Callable[[NatRun], dict[str, Any]]) -> dict[str, Any]:
    """Build the NAT scenario, start its processes, wait for the four verdicts, run ``check`` inside."""
    sc, _ = load_scenario(SCENARIO)
    box: dict[str, Any] = {}

    def body(net: EmulatedNetwork, bundle: Path, phase: Callable[[str], None]) -> None:
        run = NatRun(net, bundle)
        procs = ProcessTable(sc, bundle, net, run.hosts)
        try:
            t0 = time.monotonic()
            for start, node, proc in sorted((p.start, n.name, p.proc_name) for n in sc.nodes for p in n.processes):
                time.sleep(max(0.0, t0 + start - time.monotonic()))
                procs.start(node, proc)

            def verdicts() -> dict[str, dict[str, Any]] | None:
                found = {s: [e for e in events(bundle, f"h_{s}", "stun") if e["event"] == "nat_classified"]
                         for s in KINDS}
                return {s: v[0] for s, v in found.items()} if all(found.values()) else None

            run.classified = wait_until("the four nat_classified events", verdicts)
            box["classified"] = run.classified
            box.update(check(run))
            box["crashes"] = procs.poll()
        finally:
            procs.stop_all()
            for short in KINDS:
                (bundle / "state").mkdir(exist_ok=True)
                (bundle / "state" / f"nat-gw_{short}.txt").write_text(nat_rules_dump(net, f"gw_{short}"))

    outcome = run_scenario(SCENARIO, RunOptions(results=results_dir), body=body)
    assert outcome.status == "completed", f"{outcome.error} (bundle {outcome.bundle})"
    assert not box.get("crashes"), box["crashes"]
    box["bundle"] = outcome.bundle
    return box


def test_classifier_names_each_nat_type(no_leftovers, results_dir) -> None:
    box = run_nat(results_dir, lambda run: {})
    for short, kind in KINDS.items():
        ev = box["classified"][short]
        print(f"h_{short}: {ev['type']:19s} mapping {ev['mapping']}, filtering {ev['filtering']}, "
              f"hairpin {ev['hairpin']}, mapped {ev['mapped']} (local {ev['local']})")
        assert ev["type"] == kind, ev
        assert ev["mapped"][0] != ev["local"][0], "the mapped address must be the gateway's, not the host's"
    assert box["classified"]["sym"]["mapping"] == "address-and-port-dependent"


def test_unsolicited_inbound_udp(no_leftovers, results_dir) -> None:
    """To the mapped address of the classifier's listening socket (it talked to stun1:3478 only), send from
    outsider (another address), from stun1 on another port, and from stun1:3478 itself (the solicited endpoint)."""

    def check(run: NatRun) -> dict[str, Any]:
        senders = {"other-address": ("outsider", "-", 0), "other-port": ("stun1", run.hosts["stun1"], 40001),
                   "same-endpoint": ("stun1", run.hosts["stun1"], 3478)}
        for label, (node, ip, port) in senders.items():
            for short in KINDS:
                ext_ip, ext_port = run.classified[short]["mapped"]
                run.py(node, "send", ip, port, ext_ip, ext_port, f"probe-{label}-{short}")
        time.sleep(1.0)
        return {"got": {(label, short): run.unsolicited(short, f"probe-{label}-{short}")
                        for label in senders for short in KINDS}}

    got = run_nat(results_dir, check)["got"]
    expected = {  # (sender, gateway) -> does the packet reach the inside host?
        "other-address": {"fc": True, "ar": False, "pr": False, "sym": False},
        "other-port": {"fc": True, "ar": True, "pr": False, "sym": False},
        "same-endpoint": {"fc": True, "ar": True, "pr": True, "sym": True},
    }
    for label, row in expected.items():
        print(f"{label:14s} " + "  ".join(f"{KINDS[s]}={'in' if got[(label, s)] else 'blocked'}" for s in row))
    for label, row in expected.items():
        for short, arrives in row.items():
            assert bool(got[(label, short)]) == arrives, f"{label} -> {KINDS[short]}: {got[(label, short)]}"


def test_port_forwards(no_leftovers, results_dir) -> None:
    """gw_sym forwards UDP 7000 -> h_sym:7000 (the scenario's probe flow from outsider) and TCP 8080 -> h_sym:80."""

    def check(run: NatRun) -> dict[str, Any]:
        server = run.net.popen("h_sym", [sys.executable, str(run.helper), "tcp_serve", "80"], label="h_sym.tcp")
        try:
            time.sleep(0.3)
            reply = run.py("outsider", "tcp_get", run.outside_ip("sym"), 8080, "hello")
            server.wait(timeout=5)
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
        recv = wait_until("probes through the UDP forward", lambda: [
            e for e in events(run.bundle, "h_sym", "sink") if e["event"] == "probe_recv"][:10] or None)
        return {"tcp": reply.strip(), "udp": recv, "outsider": run.hosts["outsider"]}

    box = run_nat(results_dir, check)
    src = box["outsider"]
    print(f"UDP forward: {len(box['udp'])}+ probes; TCP forward: {box['tcp']!r}")
    assert len(box["udp"]) == 10
    assert all(e["flow"] == "outsider.fwd" and e["src"] == src for e in box["udp"]), box["udp"][:2]
    assert box["tcp"] == f"echo hello peer={src}", "a forward reaches the inside host and keeps the source address"


def test_hairpin(no_leftovers, results_dir) -> None:
    """An inside host sending to its own mapped address: delivered behind gw_fc (hairpin: true), with the
    gateway's outside address as source; not delivered behind gw_pr (no hairpin)."""

    def check(run: NatRun) -> dict[str, Any]:
        for short in ("fc", "pr"):
            ext_ip, ext_port = run.classified[short]["mapped"]
            run.py(f"h_{short}", "send", "-", 0, ext_ip, ext_port, f"hairpin-{short}")
        time.sleep(1.0)
        return {"got": {s: run.unsolicited(s, f"hairpin-{s}") for s in ("fc", "pr")}, "gw": run.outside_ip("fc")}

    box = run_nat(results_dir, check)
    verdict = {s: box["classified"][s]["hairpin"] for s in KINDS}
    print(f"classifier hairpin evidence: {verdict}; direct: fc {box['got']['fc'][:1]}, pr {box['got']['pr']}")
    assert verdict == {"fc": True, "ar": False, "pr": False, "sym": False}
    assert box["got"]["fc"], "hairpinned packet did not arrive behind gw_fc"
    assert box["got"]["fc"][0]["src"][0] == box["gw"], "a hairpinned packet must come from the outside address"
    assert not box["got"]["pr"]


def test_decoder_drops_bad_datagrams() -> None:
    """The wire decoder raises BadMessage (logged and ignored by both roles) for anything malformed."""
    from nodes.stun_server import BadMessage, decode, encode

    assert decode(encode("request", "t1", change_ip=True))["change_ip"] is True
    assert decode(encode("response", "t2", mapped=("1.2.3.4", 5), source=("5.6.7.8", 3478)))["mapped"] == ("1.2.3.4", 5)
    bad = [b"", b"\xff\xfe", b"[]", b"null", b"{}", b'{"stun": 2, "type": "request", "id": "x"}',
           b'{"stun": 1, "type": "nope", "id": "x"}', b'{"stun": 1, "type": "request", "id": 7}',
           b'{"stun": 1, "type": "response", "id": "x"}',
           b'{"stun": 1, "type": "response", "id": "x", "mapped": ["1.2.3", 5], "source": ["1.2.3.4", 1]}',
           b'{"stun": 1, "type": "relay", "id": "x", "client": ["1.2.3.4", 70000], "mapped": ["1.2.3.4", 1]}',
           b"[" * 100000, b'{"stun": 1, "type": "request", "id": "' + b"a" * 2000 + b'"}']
    for data in bad:
        try:
            decode(data)
        except BadMessage:
            continue
        raise AssertionError(f"accepted {data[:60]!r}")
