"""Hostile input against a running peer (a real ``python -m nodes.peer`` process on loopback, with its tracker
and source as processes too): random bytes, truncated frames, huge lengths, unknown types, out-of-place messages,
chunks and buffer maps of contents it does not carry, a flood of requests, a forged chunk from a partner. After
each attack the peer must still be running and answering; at the end its log must show the rejections and no
internal error, and it must still be playing the stream."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodes import wire
from nodes.roles import child_args
from tests.conftest import REPO
from tests.test_streaming_kit import free_port
from tests.test_wire import any_message

HOST = "127.0.0.1"
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                       HealthCheck.function_scoped_fixture])


class Running:
    def __init__(self, folder: Path):
        self.folder = folder
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ports = {"trk": free_port(), "src": free_port(), "peer": free_port()}

    def start(self, name: str, role: str, args: dict[str, Any]) -> None:
        cfg = {"node": name, "proc": role, "role": role, "events": str(self.folder / f"{name}.jsonl"),
               "seed": len(self.procs) + 7, "hosts": {"trk": HOST}, **child_args(role, args)}
        path = self.folder / f"{name}.json"
        path.write_text(json.dumps(cfg))
        err = open(self.folder / f"{name}.err", "wb")  # noqa: SIM115 - the child owns it
        self.procs[name] = subprocess.Popen([sys.executable, "-m", f"nodes.{role}", "--config", str(path)],
                                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=err)
        err.close()

    def events(self, name: str, event: str | None = None) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        path = self.folder / f"{name}.jsonl"
        if not path.exists():
            return out
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if event is None or rec["event"] == event:
                out.append(rec)
        return out

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def wait_for(what: str, cond: Any, timeout: float = 20.0) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    r = Running(tmp_path_factory.mktemp("hostile"))
    common = {"tracker": "trk", "tracker_port": r.ports["trk"], "bind": HOST, "key": "k3y", "bm_interval": 0.5,
              "member_interval": 0.5}
    try:
        r.start("trk", "tracker", {"users": {"s": "s1", "p": "p1", "x": "x1"}, "port": r.ports["trk"], "bind": HOST,
                                   "reach_timeout": 0.5})
        time.sleep(0.5)
        r.start("src", "source", common | {"user": "s", "secret": "s1", "listen_port": r.ports["src"],
                                           "bitrate": 200_000})
        r.start("peer", "peer", common | {"user": "p", "secret": "p1", "listen_port": r.ports["peer"],
                                          "start_lag": 2, "startup_buffer": 1, "max_partners": 4})
        wait_for("the peer playing", lambda: r.events("peer", "playback_start"))
        yield r
    finally:
        r.stop()


def attack(port: int, data: bytes, read: bool = False) -> list[str]:
    """Send ``data`` on a fresh connection; with ``read``, the message types answered until the peer closes."""
    got: list[str] = []
    with socket.create_connection((HOST, port), timeout=3) as s:
        try:
            s.sendall(data)
            if not read:
                return got
            s.shutdown(socket.SHUT_WR)
            dec = wire.FrameDecoder()
            s.settimeout(2)
            while True:
                piece = s.recv(65536)
                if not piece:
                    got.append("closed")
                    break
                got += [type(m).__name__ + (f":{m.code}" if isinstance(m, wire.Error) else "") for m in dec.feed(piece)]
        except (TimeoutError, OSError):
            got.append("timeout" if not got else "reset")
    return got


def alive_and_answering(net: Running) -> None:
    assert net.procs["peer"].poll() is None, "the peer died"
    token = b"t" * 16
    with socket.create_connection((HOST, net.ports["peer"]), timeout=3) as s:
        s.settimeout(3)
        s.sendall(wire.encode(wire.ReachProbe(token)) + wire.encode(wire.MembersReq(1, 5)))
        dec = wire.FrameDecoder()
        msgs: list[wire.Message] = []
        end = time.monotonic() + 3
        while len(msgs) < 2 and time.monotonic() < end:
            msgs += dec.feed(s.recv(65536))
    assert msgs[0] == wire.ReachAck(token) and isinstance(msgs[1], wire.MembersResp) and msgs[1].members


def frame(type_byte: int, payload: bytes, length: int | None = None) -> bytes:
    body = wire.HEADER.pack(wire.MAGIC, 1, type_byte, len(payload) if length is None else length) + payload
    return body + struct.pack(">I", zlib.crc32(body))


@given(st.binary(min_size=1, max_size=70_000))
@FUZZ
def test_random_bytes(net: Running, data: bytes) -> None:
    attack(net.ports["peer"], data)
    alive_and_answering(net)


@given(st.lists(any_message, min_size=1, max_size=5), st.data())
@FUZZ
def test_truncated_and_out_of_place_frames(net: Running, msgs: list[wire.Message], data: st.DataObject) -> None:
    stream = b"".join(wire.encode(m) for m in msgs)
    cut = data.draw(st.integers(0, len(stream)))
    attack(net.ports["peer"], stream[:cut])
    alive_and_answering(net)


@pytest.mark.parametrize("type_byte", sorted(wire.MESSAGE_TYPES))
def test_huge_lengths(net: Running, type_byte: int) -> None:
    got = attack(net.ports["peer"], wire.HEADER.pack(wire.MAGIC, 1, type_byte, 0xFFFFFFF0) + b"\0" * 64, read=True)
    assert "closed" in got or "reset" in got or got == ["timeout"]
    alive_and_answering(net)


def test_unknown_types_and_bad_crcs(net: Running) -> None:
    good = wire.encode(wire.MembersReq(1, 3))
    junk = frame(0x99, b"who are you") + frame(0xEE, b"") + good[:-1] + bytes([good[-1] ^ 1]) + good
    got = attack(net.ports["peer"], junk, read=True)
    assert got[0] == "MembersResp"  # the valid frame behind the junk is still answered
    alive_and_answering(net)


def test_a_hostile_partner(net: Running) -> None:
    """Become a partner, then send things about a content it does not carry, flood it, forge a chunk."""
    port = net.ports["peer"]
    hello = wire.encode(wire.Membership(4242, HOST, 1, 1, 30, 0, (1,)))
    ask = wire.encode(wire.PartnershipReq(1, 4242))
    other = [wire.ChunkResp(77, 5, b"x" * 100), wire.BufferMap.from_chunks(77, 0, range(10)),
             wire.ChunkReq(77, 1), wire.MembersReq(77), wire.ContentInfoReq(77)]
    flood = [wire.ChunkReq(1, i) for i in range(200)]
    with socket.create_connection((HOST, port), timeout=3) as s:
        s.settimeout(3)
        s.sendall(hello + ask)
        dec = wire.FrameDecoder()
        seen: list[wire.Message] = []
        end = time.monotonic() + 3
        while not any(isinstance(m, wire.PartnershipResp) for m in seen) and time.monotonic() < end:
            seen += dec.feed(s.recv(65536))
        resp = next(m for m in seen if isinstance(m, wire.PartnershipResp))
        assert resp.accept
        s.sendall(b"".join(wire.encode(m) for m in other + flood))
        forged = wire.ChunkResp(1, 3, b"forged", 0, wire.SigKind.HMAC_SHA256, bytes(32))
        time.sleep(0.5)
        s.sendall(wire.encode(forged))
        s.shutdown(socket.SHUT_WR)
        end = time.monotonic() + 4
        closed = False
        while time.monotonic() < end:
            try:
                piece = s.recv(1 << 20)
            except TimeoutError:
                break
            if not piece:
                closed = True
                break
            seen += dec.feed(piece)
    errors = [m for m in seen if isinstance(m, wire.Error)]
    assert any(e.code == wire.ErrorCode.UNKNOWN_CONTENT for e in errors)
    assert any(e.code in (wire.ErrorCode.BUSY, wire.ErrorCode.NO_SUCH_CHUNK) for e in errors)
    assert any(isinstance(m, wire.PartnershipRemove) for m in seen) and closed  # dropped for the forged chunk
    alive_and_answering(net)
    rejected = wait_for("the rejection in the log", lambda: net.events("peer", "chunk_rejected"), 5)
    assert rejected[0]["chunk"] == 3 and rejected[0]["reason"] == "bad signature"
    wait_for("the partner dropped as corrupt",
             lambda: any(d["reason"] == "corrupt" for d in net.events("peer", "partner_drop")), 5)


def test_the_peer_survived_everything(net: Running) -> None:
    alive_and_answering(net)
    ev = net.events("peer")
    assert any(e["event"] == "bad_frame" for e in ev)
    assert not [e for e in ev if e["event"] == "node_error"]
    due_before = len(net.events("peer", "chunk_due"))
    wait_for("more chunks played", lambda: len(net.events("peer", "chunk_due")) > due_before + 1, 10)
    assert (net.folder / "peer.err").read_text() == ""
