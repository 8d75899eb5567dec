"""The tracker (nodes/tracker.py) and its probe (nodes/tracker_client.py) in an emulated network.

tests/scenarios/tracker.yaml is built once for the module through ``run_scenario`` with a body that starts the
scenario's processes one after another (the order of joins matters), runs a hostile client inside host ``pc``
(random bytes, truncated, oversized, bad-CRC, unknown-type and out-of-state frames, a silent connection, an
authenticated client sending junk) and then a valid client, and waits for the events it needs. The tests read
the bundle: credentials, deputy redirects, NAT reachability, the tracker's robustness, the local tracker.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from scenarios.loader import load_scenario
from scenarios.processes import ProcessTable
from scenarios.run import RunOptions, run_scenario
from tests.conftest import REPO, machine_leftovers
from topologies.network import EmulatedNetwork

SCENARIO = REPO / "tests" / "scenarios" / "tracker.yaml"

# Run inside node pc: python hostile.py <repo> <tracker ip> <port> <user> <secret> <seed>; prints one JSON object,
# attack -> what the tracker did ("closed" after N bytes read, or the first message type it answered).
HOSTILE = r'''
import json, random, socket, struct, sys, time, zlib
sys.path.insert(0, sys.argv[1])
from nodes import wire

ip, port, user, secret, seed = sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], int(sys.argv[6])
rng = random.Random(seed)


def conn():
    s = socket.create_connection((ip, port), timeout=5)
    s.settimeout(5)
    return s


def outcome(s, half_close=False):
    """Read until the tracker closes (or 4 s): the message types it sent, then 'closed'."""
    if half_close:
        s.shutdown(socket.SHUT_WR)
    dec, got, deadline = wire.FrameDecoder(), [], time.monotonic() + 4
    try:
        while time.monotonic() < deadline:
            data = s.recv(65536)
            if not data:
                got.append("closed")
                break
            got += [type(m).__name__ for m in dec.feed(data)]
    except (socket.timeout, OSError) as exc:
        got.append("reset" if isinstance(exc, ConnectionResetError) else "timeout")
    s.close()
    return got


def send(payloads, half_close=False):
    s = conn()
    try:
        for p in payloads:
            s.sendall(p)
    except OSError:
        return ["reset while sending"]
    return outcome(s, half_close)


def frame(type_byte, payload, version=1):
    body = wire.HEADER.pack(wire.MAGIC, version, type_byte, len(payload)) + payload
    return body + struct.pack(">I", zlib.crc32(body))


hello = wire.encode(wire.Hello("eve", rng.randbytes(16)))
bad_crc = hello[:-1] + bytes([hello[-1] ^ 0xFF])
results = {}
idle = conn()  # says nothing: must be dropped at the authentication deadline
results["random_bytes"] = send([rng.randbytes(70000)])
results["truncated_frame"] = send([hello[:len(hello) // 2]], half_close=True)
results["oversized_length"] = send([wire.HEADER.pack(wire.MAGIC, 1, wire.MsgType.JOIN, 0xFFFFFFFF), rng.randbytes(64)],
                                   half_close=True)
results["oversized_chunk"] = send([wire.HEADER.pack(wire.MAGIC, 1, wire.MsgType.CHUNK_RESP, 4 << 20)], half_close=True)
results["bad_crc"] = send([bad_crc], half_close=True)
results["unknown_type"] = send([frame(0x99, b"who are you")], half_close=True)
results["wrong_version"] = send([frame(wire.MsgType.HELLO, hello[8:-4], version=7)], half_close=True)
results["invalid_payload"] = send([frame(wire.MsgType.HELLO, b"\x01\n" + bytes(16))], half_close=True)
results["join_before_auth"] = send([wire.encode(wire.Join(1, 0))])
results["bad_crc_flood"] = send([bad_crc] * 20)
results["garbage_then_hello"] = send([rng.randbytes(500), hello])
results["wrong_proof"] = send([hello, wire.encode(wire.Auth(bytes(32)))])
results["idle"] = outcome(idle)

# an authenticated client that misbehaves
s = conn()
nonce = rng.randbytes(16)
s.sendall(wire.encode(wire.Hello(user, nonce)))
dec = wire.FrameDecoder()
msgs = []
while not msgs:
    msgs = dec.feed(s.recv(4096))
ch = msgs[0]
s.sendall(wire.encode(wire.Auth(wire.client_proof(secret, user, ch.nonce, nonce))))
msgs = []
while not msgs:
    msgs = dec.feed(s.recv(4096))
ok = msgs[0]
answers = [type(ok).__name__]
for junk in (rng.randbytes(300), wire.encode(wire.Join(77)),
             wire.encode(wire.ChunkResp(1, 5, b"not for a tracker")),
             wire.encode(wire.Membership(12345 if ok.peer != 12345 else 54321, "10.0.0.1", 1, 1, 5)),
             wire.encode(wire.Hello(user, nonce)), wire.encode(wire.MembersReq(1))):
    s.sendall(junk)
    time.sleep(0.1)
s.settimeout(2)
try:
    while True:
        data = s.recv(65536)
        if not data:
            answers.append("closed")
            break
        answers += [type(m).__name__ + (f":{m.code}" if isinstance(m, wire.Error) else "") for m in dec.feed(data)]
except OSError:
    pass
s.close()
results["authenticated_junk"] = answers
print(json.dumps(results))
'''


def events(bundle: Path, node: str, proc: str, event: str | None = None) -> list[dict[str, Any]]:
    path = bundle / "events" / f"{node}.{proc}.jsonl"
    out = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:  # a line being written
                continue
            if event is None or rec.get("event") == event:
                out.append(rec)
    return out


def wait_until(what: str, cond: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Build the scenario once, play the sequence, tear down; what the tests need, plus leftovers."""
    results = tmp_path_factory.mktemp("results")
    sc, _ = load_scenario(SCENARIO)
    box: dict[str, Any] = {}
    before = machine_leftovers()
    t_start = time.monotonic()

    def body(net: EmulatedNetwork, bundle: Path, phase: Callable[[str], None]) -> None:
        hosts = net.plan.hosts_table()
        procs = ProcessTable(sc, bundle, net, hosts)
        ev = lambda node, proc, event: events(bundle, node, proc, event)  # noqa: E731

        def start_and_wait(node: str, proc: str, event: str = "tracker_answer", timeout: float = 15.0) -> None:
            procs.start(node, proc)
            wait_until(f"{event} from {node}.{proc}", lambda: ev(node, proc, event), timeout)

        try:
            procs.start("trk", "tracker")
            wait_until("tracker_ready", lambda: ev("trk", "tracker", "tracker_ready"))
            procs.start("main", "local")
            procs.start("pc", "mallory")  # wrong secret; order does not matter for it
            start_and_wait("pa", "alice")
            start_and_wait("pb", "bob")
            start_and_wait("carol", "probe")
            wait_until("upstream_registered", lambda: ev("main", "local", "upstream_registered"))
            procs.start("loc", "probe")
            start_and_wait("pc", "dave")
            wait_until("deputy_answer", lambda: ev("pc", "dave", "deputy_answer"))
            start_and_wait("pc", "ghost")
            phase("hostile client")
            helper = bundle / "hostile.py"
            helper.write_text(HOSTILE)
            argv = [sys.executable, str(helper), str(REPO), hosts["trk"], "6969", "eve", "eve-pw", "7"]
            out = net.run("pc", f"timeout 30 {' '.join(shlex.quote(a) for a in argv)} 2>&1")
            try:
                box["hostile"] = json.loads(out.strip().splitlines()[-1])
            except (ValueError, IndexError):
                raise AssertionError(f"hostile helper failed: {out}") from None
            box["tracker_alive_after_hostile"] = procs.running[("trk", "tracker")].proc.poll() is None
            start_and_wait("pc", "erin")
            wait_until("the local probe's answer", lambda: ev("loc", "probe", "tracker_answer"))
            wait_until("ghost timed out", lambda: [e for e in ev("trk", "tracker", "member_timeout")
                                                   if e["user"] == "ghost"], timeout=10)
            box["crashes"] = procs.poll()
        finally:
            procs.stop_all()
            box["exits"] = {(e["node"], e["proc"]): e for e in procs.exits}

    outcome = run_scenario(SCENARIO, RunOptions(results=results), body=body)
    box["seconds"] = round(time.monotonic() - t_start, 1)
    after = machine_leftovers()
    box["leftovers"] = {k: [x for x in v if x not in before.get(k, [])] for k, v in after.items()}
    assert outcome.status == "completed", f"{outcome.error} (bundle {outcome.bundle})"
    box["bundle"] = outcome.bundle
    b = outcome.bundle
    box["trk"] = {name: events(b, "trk", "tracker", name) for name in (
        "auth_ok", "auth_fail", "join", "redirect", "member_timeout", "bad_frame", "reach_test", "conn_close",
        "control_bytes", "leave", "tracker_error")}
    box["answers"] = {f"{n}.{p}": events(b, n, p, "tracker_answer") for n, p in (
        ("pa", "alice"), ("pb", "bob"), ("carol", "probe"), ("pc", "dave"), ("pc", "mallory"), ("pc", "ghost"),
        ("pc", "erin"), ("loc", "probe"))}
    return box


def test_run_is_quick_and_leaves_nothing_behind(run: dict[str, Any], no_leftovers) -> None:
    print(f"scenario built, played and torn down in {run['seconds']} s")
    assert not {k: v for k, v in run["leftovers"].items() if v}
    assert not run["crashes"]
    assert run["seconds"] < 60
    for e in run["exits"].values():
        assert not e["crashed"], e  # every probe got the answer it expected (expect: -> exit status 4 otherwise)


def test_valid_credentials_get_a_peer_id(run: dict[str, Any]) -> None:
    ok = {e["user"]: e["peer"] for e in run["trk"]["auth_ok"]}
    assert {"alice", "bob", "carol", "dave", "ghost", "erin", "eve", "main"} <= set(ok)
    assert len(set(ok.values())) == len(ok) and all(1 <= p < 2**32 for p in ok.values())
    alice = run["answers"]["pa.alice"][0]
    assert alice["outcome"] == "members" and alice["peer"] == ok["alice"]
    assert alice["members"] == []  # the first member: nobody to list (section 3.3.5, step 3)
    bob = run["answers"]["pb.bob"][0]
    assert [m["peer"] for m in bob["members"]] == [ok["alice"]]


def test_wrong_credentials_are_refused(run: dict[str, Any]) -> None:
    [answer] = run["answers"]["pc.mallory"]
    assert answer["outcome"] == "refused"
    fails = [e for e in run["trk"]["auth_fail"] if e["user"] == "mallory"]
    assert [f["reason"] for f in fails] == ["wrong proof"]
    assert not [e for e in run["trk"]["auth_ok"] if e["user"] == "mallory"]
    assert run["exits"][("pc", "mallory")]["exit_code"] == 0  # expect: refused was met


def test_joins_beyond_the_threshold_are_redirected_to_a_reachable_deputy(run: dict[str, Any]) -> None:
    joins = {e["user"]: e for e in run["trk"]["join"]}
    ok = {e["user"]: e["peer"] for e in run["trk"]["auth_ok"]}
    assert [joins[u]["redirected"] for u in ("alice", "bob", "carol")] == [False, False, False]
    assert joins["dave"]["redirected"] and joins["dave"]["members"] == 4  # 3 members > deputy_threshold 2
    [dave] = run["answers"]["pc.dave"]
    assert dave["outcome"] == "redirect"
    assert dave["deputy"]["peer"] in (ok["alice"], ok["bob"])  # carol is behind a NAT: never a deputy
    assert dave["deputy"]["reachable"]
    redirects = {e["user"]: e for e in run["trk"]["redirect"]}
    assert redirects["dave"]["deputy"] == dave["deputy"]["peer"] and redirects["dave"]["deputy_load"] == 0
    assert redirects["ghost"]["deputy"] != redirects["dave"]["deputy"]  # least loaded: the other one
    # dave repeats the request to the deputy, who answers with the members it knows, itself first
    [deputy_answer] = events(run["bundle"], "pc", "dave", "deputy_answer")
    listed = [m["peer"] for m in deputy_answer["members"]]
    assert listed[0] == dave["deputy"]["peer"] and ok["dave"] not in listed
    assert not joins["erin"]["redirected"]  # she asked for members (NO_REDIRECT)
    print("joins:", {u: ("redirect" if j["redirected"] else f"{j['answered']} members") for u, j in joins.items()})


def test_the_natted_peer_is_not_reachable_the_public_ones_are(run: dict[str, Any]) -> None:
    reach = {e["user"]: e for e in run["trk"]["reach_test"]}
    assert reach["alice"]["reachable"] and reach["bob"]["reachable"] and reach["dave"]["reachable"]
    assert not reach["carol"]["reachable"]
    assert run["answers"]["carol.probe"][0]["reachable"] == "no"
    assert run["answers"]["pa.alice"][0]["reachable"] == "yes"
    assert "ghost" not in reach and run["answers"]["pc.ghost"][0]["reachable"] == "untested"  # no listening port
    ok = {e["user"]: e["peer"] for e in run["trk"]["auth_ok"]}
    [erin] = run["answers"]["pc.erin"]
    listed = {m["peer"]: m for m in erin["members"]}
    assert listed[ok["carol"]]["reachable"] is False
    assert listed[ok["carol"]]["ip"] != "192.168.1.2"  # the NAT's public address, not the private one
    assert listed[ok["alice"]]["reachable"] is True and listed[ok["bob"]]["reachable"] is True
    print("reach tests:", {u: (e["reachable"], e["ms"], e["why"]) for u, e in reach.items()})


def test_a_hostile_client_does_not_stop_the_tracker(run: dict[str, Any]) -> None:
    h = run["hostile"]
    print("hostile:", json.dumps(h))
    assert run["tracker_alive_after_hostile"]
    assert h["join_before_auth"][:1] == ["AuthFail"] and h["wrong_proof"][-2:] == ["AuthFail", "closed"]
    assert h["garbage_then_hello"][0] == "Challenge"  # resynchronised after 500 random bytes
    assert h["bad_crc_flood"][-1] in ("closed", "reset")  # hung up after max_bad_frames
    assert h["random_bytes"][-1] in ("closed", "reset")  # hung up after max_bad_bytes
    assert h["idle"] == ["AuthFail", "closed"]  # AUTH_FAIL (timeout) at the authentication deadline
    assert "authentication timeout" in {c["reason"] for c in run["trk"]["conn_close"]}
    for attack in ("truncated_frame", "oversized_length", "oversized_chunk", "bad_crc", "unknown_type",
                   "wrong_version", "invalid_payload"):
        assert h[attack] == ["closed"], (attack, h[attack])
    # the authenticated client: junk is skipped, each bad request answered with ERROR, its last valid one served
    auth = h["authenticated_junk"]
    assert auth[0] == "AuthOk" and "MembersResp" in auth and auth.count("Error:2") == 1  # UNKNOWN_CONTENT
    reasons = " | ".join(e["reason"] for e in run["trk"]["bad_frame"])
    for expected in ("bad CRC", "unknown type 0x99", "version 7", "length 4294967295", "CHUNK_RESP: length",
                     "truncated", "bad payload", "JOIN before authentication", "bytes rejected (limit 65536)",
                     "CHUNK_RESP is not a tracker request", "HELLO after authentication"):
        assert expected in reasons, expected
    print("bad_frame reasons:", reasons)
    assert not run["trk"]["tracker_error"]
    # and it still serves valid clients afterwards
    [erin] = run["answers"]["pc.erin"]
    assert erin["outcome"] == "members" and len(erin["members"]) >= 4
    closes = run["trk"]["conn_close"]
    assert sum(c["rejected_bytes"] for c in closes) > 65536  # it stops reading a connection past max_bad_bytes
    print(f"bad_frame events: {len(run['trk']['bad_frame'])}, connections: {len(closes)}, "
          f"rejected bytes: {sum(c['rejected_bytes'] for c in closes)}")


def test_silent_members_time_out_and_bytes_are_logged(run: dict[str, Any]) -> None:
    [ghost] = [e for e in run["trk"]["member_timeout"] if e["user"] == "ghost"]
    assert ghost["contents"] == [1] and ghost["idle_s"] >= 3
    timed_out = {e["user"] for e in run["trk"]["member_timeout"]}
    assert not timed_out & {"alice", "bob", "carol", "dave"}  # they heartbeat
    stats = run["trk"]["control_bytes"]
    assert stats and stats[-1]["total_down"] > 65536 and stats[-1]["total_up"] > 0
    assert sum(s["up"] for s in stats) == stats[-1]["total_up"]


def test_local_tracker_registers_upstream_and_serves_its_scope(run: dict[str, Any]) -> None:
    joins = [e for e in run["trk"]["join"] if e["user"] == "main"]
    assert joins and joins[0]["local_tracker"] and not joins[0]["redirected"] and joins[0]["reachable"] == "yes"
    [registered] = events(run["bundle"], "main", "local", "upstream_registered")[:1]
    assert registered["contents"] == [1]
    # local trackers are not listed to ordinary peers
    ok = {e["user"]: e["peer"] for e in run["trk"]["auth_ok"]}
    [erin] = run["answers"]["pc.erin"]
    assert ok["main"] not in {m["peer"] for m in erin["members"]}
    [lena] = run["answers"]["loc.probe"]
    assert lena["outcome"] == "members" and lena["reachable"] == "yes"  # in the ad-hoc scope, on the local tracker
    local_ok = events(run["bundle"], "main", "local", "auth_ok")
    assert [e["user"] for e in local_ok] == ["lena"] and local_ok[0]["src"] == "10.77.0.2"
