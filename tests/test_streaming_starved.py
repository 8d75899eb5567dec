"""Streaming when upload is short (the capacity experiments): a player that starts with start-up chunks missing
after ``startup_wait`` instead of waiting forever, and a source that sends fresh chunks first (``seed_copies``):
while its upload is busy it refuses repeats of chunks it has already sent, over real loopback connections."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from nodes import wire
from nodes.chunk_buffer import Chunk
from nodes.peer_link import Queued
from nodes.player import LivePlayer
from tests.test_streaming_kit import Cluster, partner_links, source_holding
from tests.test_streaming_logic import Recorder, drive


def test_player_waits_for_all_start_up_chunks_by_default() -> None:
    rec = Recorder()
    player = LivePlayer(rec, 1, 1.0, startup=3)
    player.request(0.0)
    player.start_at(10)
    drive(player, {10: Chunk(10, b"a"), 12: Chunk(12, b"c")}, 60.0)
    assert not rec.named("playback_start")


def test_player_starts_with_missing_chunks_after_startup_wait() -> None:
    rec = Recorder()
    player = LivePlayer(rec, 1, 1.0, startup=3, startup_wait=4.0)
    player.request(0.0)
    player.start_at(10)
    have = {10: Chunk(10, b"a"), 12: Chunk(12, b"c"), 13: Chunk(13, b"d")}
    assert player.step(0.0, have.get) == pytest.approx(4.0)  # the peer is woken when the wait is over
    drive(player, have, 6.0)
    (start,) = rec.named("playback_start")
    assert start["t"] == pytest.approx(4.0) and start["chunk"] == 10 and start["missing"] == 1
    due = rec.named("chunk_due")
    assert [(d["chunk"], d["on_time"]) for d in due] == [(10, True), (11, False), (12, True)]
    m = rec.metrics(6.5)
    assert m.continuity_index == pytest.approx(2 / 3)


def test_player_with_every_chunk_starts_at_once_despite_startup_wait() -> None:
    rec = Recorder()
    player = LivePlayer(rec, 1, 1.0, startup=2, startup_wait=4.0)
    player.request(0.0)
    player.start_at(3)
    drive(player, {3: Chunk(3, b"a"), 4: Chunk(4, b"b")}, 1.0)
    (start,) = rec.named("playback_start")
    assert start["t"] == 0.0 and "missing" not in start


@pytest.mark.parametrize("seed_copies", [0, 1])
def test_source_refuses_repeats_only_while_busy(tmp_path: Path, seed_copies: int) -> None:
    async def body() -> list[tuple[str, bool]]:
        c = Cluster(tmp_path)
        node = await source_holding(c, 4, 1000, seed_copies=seed_copies)
        cfg = node.cfg
        links, fars, server = await partner_links(node, ("a",))
        link, far = links["a"], fars["a"]
        node.on_chunk_sent(link, Chunk(1, b"x"), 1000)  # chunk 1 went out once; 2 never did
        out = [("idle, sent before", node.refuse_chunk(link, 1))]
        link.queue.append(Queued(0, 3, time.time()))  # a request waits: the upload is busy
        out += [("busy, sent before", node.refuse_chunk(link, 1)), ("busy, never sent", node.refuse_chunk(link, 2))]
        link.queue.clear()
        # the whole path: a request for the repeated chunk while busy is answered ERROR busy
        link.queue.append(Queued(1, 3, time.time()))
        node._chunk_req(link, wire.ChunkReq(cfg.content, 1))
        reply = await far.recv(2.0) if seed_copies else None
        out.append(("answered busy", isinstance(reply, wire.Error) and reply.code == wire.ErrorCode.BUSY))
        await link.close()
        await far.close()
        server.close()
        return out

    got = dict(asyncio.run(body()))
    if seed_copies:
        assert got == {"idle, sent before": False, "busy, sent before": True, "busy, never sent": False,
                       "answered busy": True}
    else:
        assert not any(got.values())
