"""The VoD roles in-process on 127.0.0.1 (no emulated network): each unicast-mode policy delivers whole short
videos on time, a supplier killed mid-stream is covered by the server, malformed requests are rejected and
logged without harming the server, the VoD wire messages round-trip and reject garbage, and the server's policy
rules replayed on the comparison's schedules load the server as the simulation does."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import pytest

import nodes.vod_client as vc
import nodes.vod_server as vs
from analysis.dynapeer_compare import QUICK
from analysis.dynapeer_scenarios import VodSetup, replay_load
from analysis.vod_sim import simulate
from nodes import wire
from nodes.eventlog import EventLog
from nodes.runtime import NodeContext
from nodes.vod.content import chunk_data, chunk_ok, take_stripes

LENGTH = 6.0


_HELD: list[socket.socket] = []


def _free_port() -> int:
    """A free TCP port, distinct from every other one this module handed out (the socket stays bound, unlistened,
    until the module ends; the roles bind 0.0.0.0 with SO_REUSEADDR, which a bound-only socket does not block)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    _HELD.append(s)
    return s.getsockname()[1]


def _ctx(out: Path, node: str, role: str, logs: list[EventLog]) -> NodeContext:
    log = EventLog(out / f"{node}.jsonl", node=node, role=role, proc="p")
    logs.append(log)
    return NodeContext(node, "p", role, 1, {}, log)


async def _run(out: Path, policy: str, reqs: list[tuple[float, int, int]], kill: tuple[int, float] | None = None,
               hostile: bool = False) -> list[dict]:
    logs: list[EventLog] = []
    port = _free_port()
    scfg = vs.Config(policy=policy, port=port, videos=[1, 2], length_s=LENGTH, rate_bps=150_000,
                     upload_bps=75_000, buffer_s=4.0)
    server = asyncio.ensure_future(vs.main(_ctx(out, "srv", "vod_server", logs), scfg))
    await asyncio.sleep(0.3)
    share = 150_000 if policy == "chaining" else 75_000
    clients = []
    for i, (at, video, cid) in enumerate(reqs):
        ccfg = vc.Config(server="127.0.0.1", port=port, listen_port=_free_port(), requests=[(at, video, cid)],
                         upload_bps=share, schedule_from="ready")
        clients.append(asyncio.ensure_future(vc.main(_ctx(out, f"c{i}", "vod_client", logs), ccfg)))
    if hostile:
        await _hostile(port)
    if kill is not None:
        await asyncio.sleep(kill[1])
        clients[kill[0]].cancel()
    await asyncio.sleep(max(a for a, _, _ in reqs) + LENGTH + 4.0 - (kill[1] if kill else 0.0))
    for t in [*clients, server]:
        t.cancel()
    await asyncio.gather(*clients, server, return_exceptions=True)
    for log in logs:
        log.close()
    return [json.loads(line) for f in sorted(out.glob("*.jsonl")) for line in f.read_text().splitlines() if line]


async def _hostile(port: int) -> None:
    # garbage, a wrong first message, an unknown video, then a valid frame after garbage on one connection
    for payload in (b"\x00garbage\xb5\xed\x01\x80" + b"\xff" * 40,
                    wire.encode(wire.ChunkReq(1, 0)),
                    wire.encode(wire.VodPlay(900, 99, 0, 0))):
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(payload)
        await w.drain()
        await asyncio.sleep(0.1)
        w.close()


def _viewers(events: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for e in events:
        if e["role"] == "vod_client" and "session" in e and e["event"] in ("chunk_due", "playback_start",
                                                                          "playback_end", "play_request"):
            out.setdefault(e["proc"], []).append(e)
    return out


POLICIES = ["unicast", "patching", "chaining", "promise", "pn2pm", "dynapeer_unicast", "dynapeer_multicast",
            "dynapeer_helpers"]


def test_every_policy_delivers_whole_videos_on_time(tmp_path: Path) -> None:
    # on 127.0.0.1 no client is multicast-capable: the multicast policies serve in their unicast mode
    # (tests/test_vod_emulated.py covers multicast); the eight policies run at once, each with its own server
    reqs = [(0.0, 1, 0), (0.8, 1, 1), (1.6, 1, 2), (2.0, 2, 3)]
    for policy in POLICIES:
        (tmp_path / policy).mkdir()

    async def all_policies() -> list[list[dict]]:
        return await asyncio.gather(*(_run(tmp_path / p, p, reqs) for p in POLICIES))

    for policy, events in zip(POLICIES, asyncio.run(all_policies()), strict=True):
        viewers = _viewers(events)
        assert len(viewers) == 4, policy
        chunks = int(LENGTH / 0.5)
        for name, ev in viewers.items():
            due = [e for e in ev if e["event"] == "chunk_due"]
            assert len(due) == chunks, (policy, name)
            assert all(e["on_time"] for e in due), (policy, name)
            assert any(e["event"] == "playback_end" and e.get("reason") == "video over" for e in ev)
        opened = [e for e in events if e["event"] == "session_open"]
        peer_parts = [p for e in opened for p in e["parts"] if p["kind"] == "peer"]
        if policy in ("chaining", "promise", "dynapeer_unicast", "dynapeer_multicast", "dynapeer_helpers"):
            assert peer_parts, f"{policy}: peers should have served some of the stream"
        else:
            assert not peer_parts, policy
        assert not [e for e in events if e["event"] in ("vod_error", "bad_chunk")], policy


def test_supplier_killed_is_covered(tmp_path: Path) -> None:
    # client 0 supplies half of client 1's stream; it dies mid-stream; the server covers its share
    reqs = [(0.0, 1, 0), (0.5, 1, 1)]
    events = asyncio.run(_run(tmp_path, "dynapeer_unicast", reqs, kill=(0, 3.0)))
    lost = [e for e in events if e["event"] == "lost_report"]
    assert lost and lost[0]["source"] == 1
    covers = [e for e in events if e["event"] == "stream_start" and e["kind"] == "cover"]
    assert covers
    due = [e for e in _viewers(events)["p.s2"] if e["event"] == "chunk_due"]
    assert len(due) == int(LENGTH / 0.5)
    assert sum(e["on_time"] for e in due) / len(due) >= 0.95


def test_malformed_requests_rejected(tmp_path: Path) -> None:
    events = asyncio.run(_run(tmp_path, "unicast", [(0.5, 1, 0)], hostile=True))
    bad = [e for e in events if e["event"] == "bad_request"]
    reasons = " ".join(str(e.get("reason")) for e in bad)
    assert "expected VOD_PLAY first" in reasons and "unknown video" in reasons
    due = [e for e in _viewers(events)["p.s1"] if e["event"] == "chunk_due"]
    assert due and all(e["on_time"] for e in due)
    assert not [e for e in events if e["event"] == "vod_error"]


def test_vod_messages_round_trip_and_validate() -> None:
    src = wire.VodSource(wire.VodKind.PEER, "10.0.0.1", 7800, 0, 120, 0x5555, 10**15, 7)
    for m in (wire.VodPlay(1, 2, 7800, wire.VodFlag.MULTICAST), wire.VodPlan(1, 2, 120, 500, 9375, 16, (src,)),
              wire.VodPull(1, 2, 3, 0, 10, 16, 0xFF, 5, "239.77.0.1", 5800), wire.VodStatus(4, wire.VodState.FINISHED),
              wire.VodLost(1, 3, wire.VodKind.PEER, 4, 10, 0xF0), wire.VodPiece(1, 3, 6, 7, 9375, b"x" * 975)):
        assert wire.decode_frame(wire.encode(m)) == m
    for bad in (lambda: wire.VodPlay(0, 1), lambda: wire.VodPlan(1, 2, 10, 500, 9375, 4, (src,)),
                lambda: wire.VodPull(1, 2, 3, 0, 10, 16, 0xFF, 5, "10.0.0.1", 5800),
                lambda: wire.VodPiece(1, 3, 0, 7, 9375, b"x" * 10), lambda: wire.VodStatus(1, 9)):
        with pytest.raises(wire.WireError):
            bad()
    frame = bytearray(wire.encode(wire.VodPlay(1, 2, 3, 0)))
    frame[-1] ^= 1
    dec = wire.FrameDecoder()
    assert dec.feed(bytes(frame)) + dec.flush() == [] and dec.rejected_frames >= 1


def test_content_and_stripes() -> None:
    data = chunk_data(3, 7, 9375)
    assert chunk_ok(3, 7, data, 9375) and not chunk_ok(3, 8, data, 9375)
    half = take_stripes(8, 0, 16)
    assert half == 0x5555  # every other chunk: an even share of the play rate
    assert take_stripes(8, half, 16) == 0xAAAA


@pytest.mark.parametrize("policy", POLICIES)
def test_server_rules_match_the_simulation(policy: str) -> None:
    # the server's policy modules, replayed on the comparison's schedules (quick scale, seeds 1-3) without a
    # network, load the server as analysis/vod_sim does on the same schedule: the emulation measures the model
    # (channel windows and patches counted from the opening request, rounded up to whole chunks)
    for seed in (1, 2, 3):
        setup = VodSetup(policy=policy, network="multicast", seed=seed, **QUICK)
        sim = simulate(policy, setup.params, setup.workload.requests(seed), warmup_min=setup.warmup_min).mean
        got = replay_load(setup)
        assert abs(got / sim - 1) <= 0.06, (policy, seed, got, sim)
