"""Pure logic of the streaming peer, no network: the chunk buffers, the data scheduler's decisions (rarest first,
deadlines, bandwidth, timeouts and re-requests, the round-robin baseline), the player adapter (token bucket, skips,
stalls; its events run through the analysis pipeline's own viewer metrics), the hybrid share rule, and the wire
additions (CONTENT_INFO, signed chunks)."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.metrics import viewer_metrics
from nodes import wire
from nodes.chunk_buffer import Chunk, FileBuffer, LiveBuffer
from nodes.data_scheduler import Candidate, DataScheduler
from nodes.hybrid import MainsView, Scope, in_share, share_of
from nodes.player import LivePlayer

# -- content manager ---------------------------------------------------------------------------------------------


def test_live_buffer_slides_and_evicts() -> None:
    buf = LiveBuffer(1, window=8)
    for i in range(8):
        assert buf.put(Chunk(i, bytes([i])))
    assert buf.base == 0 and buf.count == 8 and buf.chunk_ids() == list(range(8))
    assert not buf.put(Chunk(3, b"again"))  # already held
    assert buf.put(Chunk(10, b"x"))  # slides: 0..2 evicted, base 3
    assert buf.base == 3 and buf.count == 6 and buf.evicted == 3
    assert not buf.has(2) and buf.get(2) is None and buf.has(3) and buf.get(10).data == b"x"
    assert not buf.put(Chunk(2, b"too old"))
    assert buf.put(Chunk(9, b"fill a gap"))
    assert buf.missing(3, 10) == [8]
    bm = buf.buffer_map()
    assert (bm.base, bm.window) == (3, 8) and bm.chunks() == [3, 4, 5, 6, 7, 9, 10]
    assert wire.decode_frame(wire.encode(bm)) == bm
    assert buf.put(Chunk(100, b"jump"))  # far ahead: everything old goes
    assert buf.count == 1 and buf.base == 93 and buf.chunk_ids() == [100]


@given(st.lists(st.integers(0, 400), max_size=300), st.integers(1, 40))
@settings(max_examples=200, deadline=None)
def test_live_buffer_keeps_exactly_the_window(ids: list[int], window: int) -> None:
    buf = LiveBuffer(1, window)
    stored: set[int] = set()
    for i in ids:
        buf.put(Chunk(i, b""))
        stored.add(i)
    if not ids:
        return
    newest = max(ids)
    expect = {i for i in stored if i > newest - window}
    assert set(buf.chunk_ids()) == expect and buf.count == len(expect)
    assert set(buf.buffer_map().chunks()) == expect


def test_file_buffer_writes_in_place(tmp_path: Path) -> None:
    data = random.Random(3).randbytes(10_000)
    info = wire.ContentInfo(1, wire.ContentMode.DOWNLOAD, 4096, total_bytes=len(data), chunks=3,
                            sha256=hashlib.sha256(data).digest())
    buf = FileBuffer(1, info, tmp_path / "out.bin")
    assert buf.missing() == [0, 1, 2] and buf.buffer_map().chunks() == []
    assert not buf.put(Chunk(2, data[8192:] + b"x"))  # wrong size for the last chunk
    for i in (2, 0, 1):
        assert buf.put(Chunk(i, data[i * 4096:(i + 1) * 4096], 0, wire.SigKind.NONE, b""))
    assert buf.complete and buf.buffer_map().chunks() == [0, 1, 2]
    assert buf.sha256() == info.sha256.hex() and (tmp_path / "out.bin").read_bytes() == data
    assert buf.get(1).data == data[4096:8192]
    buf.close()


# -- data scheduler ----------------------------------------------------------------------------------------------


def sched(policy: str = "deadline", **kw: Any) -> DataScheduler:
    s = DataScheduler(policy, rng=random.Random(1), **kw)  # type: ignore[arg-type]
    return s


def test_deadline_policy_requests_the_rarest_chunk_first() -> None:
    s = sched(max_outstanding=1)
    for p in ("a", "b", "c"):
        s.add_partner(p, 100_000)
    now = 100.0
    cands = [Candidate(10, now + 8, ["a", "b", "c"], 1000), Candidate(11, now + 9, ["b"], 1000),
             Candidate(12, now + 10, ["a", "c"], 1000)]
    reqs = s.plan(now, cands)
    # 11 (one supplier) first, then 12 (two), then 10 (three); each partner has one slot (ties: seeded choice)
    assert [r.chunk for r in reqs] == [11, 12, 10]
    assert reqs[0].partner == "b" and reqs[1].partner in ("a", "c") and {r.partner for r in reqs} == {"a", "b", "c"}


def test_deadline_policy_puts_urgent_chunks_before_rare_ones() -> None:
    s = sched(max_outstanding=1, urgent=2.0)
    s.add_partner("a", 100_000)
    now = 0.0
    reqs = s.plan(now, [Candidate(20, 9.0, ["a"], 1000), Candidate(5, 1.0, ["a", "x"], 1000)])
    assert [r.chunk for r in reqs] == [5]  # due in 1 s: before the rarer chunk due in 9 s


def test_deadline_policy_picks_a_supplier_that_can_make_the_deadline() -> None:
    s = sched(max_outstanding=4)
    s.add_partner("slow", 10_000)  # 10 kB/s: 5 s for a 50 kB chunk
    s.add_partner("fast", 100_000)  # 0.5 s
    (r,) = s.plan(0.0, [Candidate(1, 2.0, ["slow", "fast"], 50_000)])
    assert r.partner == "fast" and r.expected == pytest.approx(0.5)
    # the fast one is now busy with 50 kB; a second chunk: fast needs 1.0 s, slow 5 s; deadline 3 s -> fast again
    (r2,) = s.plan(0.0, [Candidate(2, 3.0, ["slow", "fast"], 50_000)])
    assert r2.partner == "fast" and r2.expected == pytest.approx(1.0)
    # with a late deadline nobody misses, the earliest completion still wins; once the fast queue is long
    # enough, the slow partner gets work
    for c in range(3, 12):
        s.plan(0.0, [Candidate(c, 100.0, ["slow", "fast"], 50_000)])
    assert {r.partner for r in s.pending.values()} == {"slow", "fast"}


def test_deadline_policy_avoids_a_supplier_that_told_of_a_long_upload_backlog() -> None:
    s = sched(max_outstanding=4)
    s.add_partner("vdsl", 1_000_000)  # 1 MB/s: 0.1 s for a 100 kB chunk
    s.add_partner("adsl", 100_000)  # 1 s
    s.on_backlog("vdsl", 9.5, 3.0)  # its buffer map at 9.5 s: 3 s of chunks queued for its other partners
    (r,) = s.plan(10.0, [Candidate(1, 14.0, ["vdsl", "adsl"], 100_000)])
    assert r.partner == "adsl" and r.expected == pytest.approx(11.0)  # vdsl: 10 + 2.5 + 0.1
    # the backlog is counted down: by 12.4 s it is nearly sent and the fast supplier wins again
    (r2,) = s.plan(12.4, [Candidate(2, 16.0, ["vdsl", "adsl"], 100_000)])
    assert r2.partner == "vdsl" and r2.expected == pytest.approx(12.6)
    # a partner never measured (it refused every request) keeps the optimistic prior, but not above the upload
    # rate it tells: 100 kB/s told -> 1 s, so the measured 1 MB/s supplier with 0.5 s of backlog is earlier
    s.add_partner("unmeasured", 2_000_000)
    s.on_backlog("unmeasured", 20.0, 0.0, 100_000)
    s.on_backlog("vdsl", 20.0, 0.5)
    (r4,) = s.plan(20.0, [Candidate(3, 25.0, ["unmeasured", "vdsl"], 100_000)])
    assert r4.partner == "vdsl" and r4.expected == pytest.approx(20.6)
    # round-robin ignores it (the naive baseline)
    rr = sched("round_robin")
    rr.add_partner("vdsl", 1_000_000)
    rr.on_backlog("vdsl", 9.5, 3.0)
    (r3,) = rr.plan(10.0, [Candidate(1, 14.0, ["vdsl"], 100_000)])
    assert r3.partner == "vdsl"


def test_bandwidth_is_measured_from_responses() -> None:
    s = sched()
    s.add_partner("p", 1_000)  # a pessimistic prior
    (r,) = s.plan(0.0, [Candidate(1, None, ["p"], 100_000)])
    assert s.on_response(0.5, 1, "p", 100_000) is r  # 100 kB in 0.5 s
    assert s.suppliers["p"].bw == pytest.approx(0.7 * 1_000 + 0.3 * 200_000)
    assert not s.pending and s.suppliers["p"].outstanding == 0


def test_a_timed_out_request_is_asked_again_from_another_supplier() -> None:
    s = sched(timeout_min=1.0, timeout_factor=2.0)
    s.add_partner("a", 100_000)
    s.add_partner("b", 50_000)
    (r,) = s.plan(0.0, [Candidate(7, 20.0, ["a", "b"], 10_000)])
    assert r.partner == "a" and r.timeout_at == pytest.approx(1.0)  # max(1.0, 2 x 0.1 s)
    assert s.expire(0.5) == []
    (late,) = s.expire(1.0)
    assert late.chunk == 7 and not s.pending
    assert s.suppliers["a"].bw == 50_000 and s.suppliers["a"].timeouts == 1
    (again,) = s.plan(1.0, [Candidate(7, 20.0, ["a", "b"], 10_000)])
    assert again.partner == "b"  # "a" failed this chunk once: someone else
    # the old answer still arrives: accepted by the peer, measures "a", does not touch b's request
    assert s.on_response(1.2, 7, "a", 10_000) is None and s.pending[7].partner == "b"


def test_a_request_is_given_up_in_time_to_ask_elsewhere_before_the_deadline() -> None:
    s = sched(timeout_min=1.0, timeout_factor=3.0, rescue=1.5)
    s.add_partner("a", 60_000)  # 1 s for 60 kB: its own timeout would be 3 s, but the chunk is due in 3.5 s
    (r,) = s.plan(0.0, [Candidate(3, 3.5, ["a", "b"], 60_000)])
    assert r.timeout_at == pytest.approx(2.0) and r.rescue
    s.add_partner("c", 60_000)
    (r2,) = s.plan(0.0, [Candidate(4, 1.2, ["c"], 60_000)])
    assert r2.timeout_at == pytest.approx(2.0)  # never before twice the expected transfer time
    assert {x.chunk for x in s.expire(2.0)} == {3, 4}
    assert s.suppliers["a"].bw == 60_000  # the deadline's timeout is not the partner's fault
    # "a" still has the request queued: it is not asked again (that would only send the chunk twice) ...
    assert s.plan(2.1, [Candidate(3, 3.5, ["a"], 60_000)]) == []
    # ... someone else is, if there is someone
    s.add_partner("b", 60_000)
    (r3,) = s.plan(2.1, [Candidate(3, 3.5, ["a", "b"], 60_000)])
    assert r3.partner == "b"


def test_refusal_and_partner_loss_free_the_chunk() -> None:
    s = sched()
    s.add_partner("a", 100_000)
    s.add_partner("b", 100_000)
    s.plan(0.0, [Candidate(1, 5.0, ["a"], 1000), Candidate(2, 5.0, ["b"], 1000)])
    s.on_refused(1, "a")
    assert not s.is_pending(1) and s.suppliers["a"].refusals == 1 and s.suppliers["a"].bw == 100_000
    assert s.plan(0.5, [Candidate(1, 5.0, ["a"], 1000)]) == []  # not asked again at once
    assert [r.partner for r in s.plan(1.5, [Candidate(1, 5.0, ["a"], 1000)])] == ["a"]  # after timeout_min
    assert s.remove_partner("b") == [2] and not s.is_pending(2)


def test_round_robin_takes_partners_in_turn_and_ignores_bandwidth() -> None:
    s = sched("round_robin", max_outstanding=10)
    s.add_partner("slow", 1_000)
    s.add_partner("fast", 1_000_000)
    cands = [Candidate(c, 100.0 + c, ["slow", "fast"], 10_000) for c in (4, 2, 3, 1)]
    reqs = s.plan(0.0, cands)
    assert [(r.chunk, r.partner) for r in reqs] == [(1, "slow"), (2, "fast"), (3, "slow"), (4, "fast")]
    d = sched("deadline", max_outstanding=10)
    d.add_partner("slow", 1_000)
    d.add_partner("fast", 1_000_000)
    assert {r.partner for r in d.plan(0.0, cands)} == {"fast"}


def test_outstanding_requests_are_capped_per_partner() -> None:
    s = sched(max_outstanding=2)
    s.add_partner("a", 100_000)
    reqs = s.plan(0.0, [Candidate(c, None, ["a"], 1000) for c in range(5)])
    assert len(reqs) == 2 and s.suppliers["a"].outstanding == 2
    s.forget(below=100)
    assert not s.pending and s.suppliers["a"].outstanding == 0


# -- player adapter -----------------------------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: str, t: float | None = None, **fields: Any) -> None:
        self.events.append({"t": t, "event": event, **fields})

    def named(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == name]

    def metrics(self, end: float) -> Any:
        return viewer_metrics(pd.DataFrame(self.events), end_time=end)


def drive(player: LivePlayer, have: dict[int, Chunk], until: float, step: float = 0.05) -> None:
    t = 0.0
    while t <= until:
        player.step(t, have.get)
        t = round(t + step, 6)


def test_player_buffers_then_plays_one_chunk_per_duration() -> None:
    rec, handed = Recorder(), []
    player = LivePlayer(rec, 1, 1.0, startup=3, bucket=2, sink=lambda c: handed.append(c.id))
    player.request(0.0)
    player.start_at(10)
    have = {10: Chunk(10, b"a" * 100, 5_000_000)}
    drive(player, have, 1.0)
    assert not rec.named("playback_start")  # 11 and 12 are missing
    have |= {i: Chunk(i, b"b" * 100, 5_000_000) for i in range(11, 20)}
    t = 1.05
    while t < 6.1:
        player.step(t, have.get)
        t = round(t + 0.05, 6)
    (start,) = rec.named("playback_start")
    assert start["t"] == pytest.approx(1.05) and start["chunk"] == 10
    due = rec.named("chunk_due")
    assert [d["chunk"] for d in due] == [10, 11, 12, 13, 14, 15]
    assert [d["t"] for d in due] == pytest.approx([1.05 + k for k in range(6)])
    assert all(d["on_time"] and d["played"] and d["bytes"] == 100 and d["created"] == 5.0 for d in due)
    # token bucket: 2 at the start, then one per second
    assert handed == [10, 11, 12, 13, 14, 15, 16]
    player.end(6.5, "stopped")
    m = rec.metrics(6.5)
    assert m.startup_latency_s == pytest.approx(1.05) and m.continuity_index == 1.0 and m.stalls == 0


def test_skip_mode_keeps_deadlines_and_skips_missing_chunks() -> None:
    rec, handed = Recorder(), []
    player = LivePlayer(rec, 1, 1.0, startup=1, on_missing="skip", bucket=1, sink=lambda c: handed.append(c.id))
    player.request(0.0)
    player.start_at(0)
    have = {i: Chunk(i, b"x") for i in (0, 1, 3, 4, 5)}  # 2 never comes
    drive(player, have, 5.5)
    due = rec.named("chunk_due")
    assert [(d["chunk"], d["on_time"], d["played"]) for d in due] == [
        (0, True, True), (1, True, True), (2, False, False), (3, True, True), (4, True, True), (5, True, True)]
    assert [d["t"] for d in due] == pytest.approx([0, 1, 2, 3, 4, 5])
    assert 2 not in handed and handed == [0, 1, 3, 4, 5]
    assert not rec.named("stall_start")
    player.end(6.0, "stopped")
    assert rec.metrics(6.0).continuity_index == pytest.approx(5 / 6)


def test_stall_mode_freezes_until_the_chunk_comes_and_shifts_deadlines() -> None:
    rec = Recorder()
    player = LivePlayer(rec, 1, 1.0, startup=1, on_missing="stall", max_stall=10.0)
    player.request(0.0)
    player.start_at(0)
    have = {i: Chunk(i, b"x") for i in (0, 1, 3, 4)}
    drive(player, have, 3.5)  # 2 is due at 2.0: stall
    assert rec.named("stall_start")[0]["t"] == pytest.approx(2.0) and player.state == "stalled"
    have[2] = Chunk(2, b"late")
    t = 3.55
    while t < 6.0:
        player.step(t, have.get)
        t = round(t + 0.05, 6)
    (end,) = rec.named("stall_end")
    assert end["t"] == pytest.approx(3.55)
    due = rec.named("chunk_due")
    assert [(d["chunk"], d["on_time"], d["played"]) for d in due] == [
        (0, True, True), (1, True, True), (2, False, True), (3, True, True), (4, True, True)]
    assert [d["t"] for d in due] == pytest.approx([0, 1, 3.55, 4.55, 5.55])  # later deadlines moved by 1.55 s
    player.end(6.0, "stopped")
    m = rec.metrics(6.0)
    assert m.stalls == 1 and m.stall_time_s == pytest.approx(1.55) and m.continuity_index == pytest.approx(4 / 5)
    assert rec.named("playback_end")[0]["stall_s"] == pytest.approx(1.55)


def test_stall_mode_gives_up_after_max_stall() -> None:
    rec = Recorder()
    player = LivePlayer(rec, 1, 1.0, startup=1, on_missing="stall", max_stall=2.0)
    player.request(0.0)
    player.start_at(0)
    have = {i: Chunk(i, b"x") for i in (0, 2, 3)}
    drive(player, have, 4.0)
    stall_end = rec.named("stall_end")
    assert rec.named("stall_start")[0]["t"] == pytest.approx(1.0) and stall_end[0]["t"] == pytest.approx(3.0)
    due = rec.named("chunk_due")
    assert [(d["chunk"], d["played"]) for d in due][:3] == [(0, True), (1, False), (2, True)]
    assert due[2]["t"] == pytest.approx(3.0)  # the next chunk is due as soon as the stall gives up


# -- hybrid share ------------------------------------------------------------------------------------------------


@given(st.sets(st.integers(1, 2**32 - 1), min_size=1, max_size=6), st.integers(0, 10_000))
def test_every_chunk_is_fetched_by_exactly_one_main(mains: set[int], chunk: int) -> None:
    takers = [m for m in mains if in_share(chunk, *share_of(mains - {m}, m))]
    assert len(takers) == 1


def test_mains_view_recomputes_when_a_main_disappears() -> None:
    view = MainsView()
    view.set_me(50)
    assert view.update([20, 90]) and view.share == (1, 3) and view.mains() == [20, 50, 90]
    assert view.fetches(4) and not view.fetches(3)
    assert view.lost(20) and view.share == (0, 2)  # 20's connection closed: 50 and 90 share by halves
    assert not view.update([20, 90]) and view.share == (0, 2)  # still listed by the tracker: gone until seen
    assert view.alive(20) and view.share == (1, 3)


def test_scope() -> None:
    scope = Scope(["10.77.0.0/24", "10.78.1.0/30"])
    assert "10.77.0.9" in scope and "10.78.1.2" in scope and "10.78.1.9" not in scope and "x" not in scope
    assert "1.2.3.4" in Scope() and not Scope()


# -- wire additions ----------------------------------------------------------------------------------------------


def test_content_info_round_trips_and_is_signed() -> None:
    live = wire.ContentInfo(7, wire.ContentMode.LIVE, 62416, 1_000_000, start_us=1_700_000_000_000_000,
                            title="Party live").signed(b"key")
    frame = wire.encode(live)
    back = wire.decode_frame(frame)
    assert back == live and back.signed_by(b"key") and not back.signed_by(b"other")
    forged = wire.ContentInfo(7, wire.ContentMode.LIVE, 62416, 2_000_000, start_us=live.start_us, title="Party live",
                              sig_kind=wire.SigKind.HMAC_SHA256, sig=live.sig)
    assert not forged.signed_by(b"key")
    dl = wire.ContentInfo(8, wire.ContentMode.DOWNLOAD, 262144, total_bytes=1_000_000, chunks=4,
                          sha256=bytes(range(32)))
    assert wire.decode_frame(wire.encode(dl)) == dl and dl.chunk_size(3) == 1_000_000 - 3 * 262144
    assert wire.decode_frame(wire.encode(wire.ContentInfoReq(8))) == wire.ContentInfoReq(8)


@pytest.mark.parametrize("kwargs", [
    {"mode": 0, "chunk_bytes": 100, "chunk_us": 0},  # live without a duration
    {"mode": 0, "chunk_bytes": 100, "chunk_us": 1000, "total_bytes": 5},
    {"mode": 1, "chunk_bytes": 100, "total_bytes": 250, "chunks": 2},  # ceil(250 / 100) = 3
    {"mode": 1, "chunk_bytes": 100, "total_bytes": 250, "chunks": 3, "start_us": 5},
    {"mode": 2, "chunk_bytes": 100},
    {"mode": 1, "chunk_bytes": 100, "total_bytes": 100, "chunks": 1, "sig_kind": 1, "sig": bytes(32)},
])
def test_invalid_content_infos_cannot_be_built(kwargs: dict[str, Any]) -> None:
    with pytest.raises(wire.WireError):
        wire.ContentInfo(1, **kwargs)


def test_invalid_content_info_payloads_are_rejected() -> None:
    good = wire.encode(wire.ContentInfo(1, wire.ContentMode.DOWNLOAD, 100, total_bytes=250, chunks=3))
    payload = bytearray(good[8:-4])
    payload[4] = 7  # mode 7
    dec = wire.FrameDecoder()
    body = wire.HEADER.pack(wire.MAGIC, 1, wire.MsgType.CONTENT_INFO_RESP, len(payload)) + bytes(payload)
    import struct
    import zlib
    assert dec.feed(body + struct.pack(">I", zlib.crc32(body)) + good) == [wire.decode_frame(good)]
    assert dec.rejected_frames == 1


def test_signed_chunks() -> None:
    msg = wire.sign_chunk(b"key", 3, 9, b"payload", 1234)
    assert msg.sig_kind == wire.SigKind.HMAC_SHA256 and wire.chunk_signed_by(msg, b"key")
    assert not wire.chunk_signed_by(msg, b"wrong")
    for changed in (wire.ChunkResp(3, 9, b"payloaX", 1234, msg.sig_kind, msg.sig),
                    wire.ChunkResp(3, 10, b"payload", 1234, msg.sig_kind, msg.sig),
                    wire.ChunkResp(3, 9, b"payload", 1235, msg.sig_kind, msg.sig),
                    wire.ChunkResp.hashed(3, 9, b"payload", 1234)):
        assert not wire.chunk_signed_by(changed, b"key")


def test_a_chunk_request_carries_a_deadline_only_while_playing_and_skipping() -> None:
    from types import SimpleNamespace

    from nodes.peer import PeerNode

    def due_ms(player: LivePlayer, due: float, now: float, scheduler: str = "deadline",
               tell: bool | None = None) -> int:
        cfg = SimpleNamespace(scheduler=scheduler, tell_deadline=tell)
        return PeerNode._due_ms(SimpleNamespace(player=player, cfg=cfg), due, now)  # type: ignore[arg-type]

    skip = LivePlayer(Recorder(), 1, 1.0, startup=2, on_missing="skip")
    skip.request(0.0)
    skip.start_at(0)
    assert due_ms(skip, 1.0, 0.0) == 0  # buffering: the start-up chunks are wanted whenever they come
    drive(skip, {i: Chunk(i, b"x") for i in range(6)}, 2.5)
    assert skip.state == "playing"
    assert due_ms(skip, 5.25, 2.5) == 2750 and due_ms(skip, 2.0, 2.5) == 1  # past due: the least deadline
    # the naive round-robin baseline tells no deadline, unless told to
    assert due_ms(skip, 5.25, 2.5, "round_robin") == 0 and due_ms(skip, 5.25, 2.5, "round_robin", True) == 2750
    assert due_ms(skip, 5.25, 2.5, "deadline", False) == 0
    stall = LivePlayer(Recorder(), 1, 1.0, startup=1, on_missing="stall")
    stall.request(0.0)
    stall.start_at(0)
    drive(stall, {i: Chunk(i, b"x") for i in range(6)}, 2.5)
    assert stall.state == "playing" and due_ms(stall, 5.0, 2.5) == 0  # a stalling player still wants it later
