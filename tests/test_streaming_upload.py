"""How streaming nodes serve their partners: the serial uploader (``serial_upload``) over real loopback
connections (requests queued on several partner connections are served one chunk at a time in the order they came,
each to the connection that asked for it; a small overlay in which every node uploads that way plays on time);
admission control (``serve_horizon``) that refuses fresh chunks behind a long queue but never old ones
(``serve_old``); ``queue_expiry``, which forgets requests that waited too long for their turn; and the upload rate
measured from the bytes that left while requests were waiting."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pandas as pd
import pytest

from analysis.metrics import viewer_metrics
from nodes import source, source_config, wire
from nodes.chunk_buffer import Chunk
from nodes.peer_link import Link, Queued
from nodes.wire import FramedStream
from tests.test_streaming_kit import Cluster, close_partner_links, free_port, partner_links, source_holding


def test_serial_upload_serves_requests_in_arrival_order_over_all_links(tmp_path: Path) -> None:
    async def body() -> tuple[list[tuple[str, int]], dict[str, list[int]]]:
        c = Cluster(tmp_path)
        node = await source_holding(c, 10, 20000, serial_upload=True)
        links, far, server = await partner_links(node, ("a", "b"))
        now = time.time()
        for seq, (name, cid) in enumerate([("a", 5), ("b", 7), ("b", 3), ("a", 9)]):
            links[name].queue.append(Queued(seq, cid, now))
        sent: list[tuple[str, int]] = []
        node.on_chunk_sent = lambda link, chunk, nbytes: sent.append((link.name, chunk.id))  # type: ignore[method-assign]
        task = asyncio.ensure_future(node._upload_loop())
        node.up_wake.set()
        got: dict[str, list[int]] = {}
        for name in ("a", "b"):
            got[name] = []
            for _ in range(2):
                msg = await far[name].recv(5.0)
                assert isinstance(msg, wire.ChunkResp) and msg.data == bytes([msg.chunk]) * 20000
                got[name].append(msg.chunk)
        # later requests go out in their order too
        links["a"].queue.extend([Queued(10, 8, time.time()), Queued(11, 1, time.time())])
        node.up_wake.set()
        for _ in range(2):
            msg = await far["a"].recv(5.0)
            assert isinstance(msg, wire.ChunkResp)
            got["a"].append(msg.chunk)
        task.cancel()
        await close_partner_links(links, far, server)
        return sent, got

    sent, got = asyncio.run(body())
    assert sent == [("a", 5), ("b", 7), ("b", 3), ("a", 9), ("a", 8), ("a", 1)]
    assert got == {"a": [5, 9, 8, 1], "b": [7, 3]}


def start_uploading(node: source.SourceNode, link: Link, serial: bool) -> asyncio.Task[None]:
    """Serve ``link``'s queued requests with the node's serial uploader or the link's own one."""
    if serial:
        task = asyncio.ensure_future(node._upload_loop())
        node.up_wake.set()
    else:
        task = asyncio.ensure_future(node._uploader(link))
        link.wake.set()
    return task


@pytest.mark.parametrize("serial", [True, False])
def test_requests_that_waited_past_queue_expiry_are_not_served(tmp_path: Path, serial: bool) -> None:
    async def body() -> tuple[list[int], int]:
        c = Cluster(tmp_path)
        node = await source_holding(c, 4, 20000, serial_upload=serial, queue_expiry=1.0)
        links, fars, server = await partner_links(node, ("a",))
        link, far = links["a"], fars["a"]
        now = time.time()
        # chunks 0 and 2 waited 5 s and 1.5 s (their requester gave up), 1 and 3 are fresh
        link.queue.extend([Queued(0, 0, now - 5), Queued(1, 2, now - 1.5), Queued(2, 1, now - 0.2), Queued(3, 3, now)])
        task = start_uploading(node, link, serial)
        got = []
        for _ in range(2):
            msg = await far.recv(5.0)
            assert isinstance(msg, wire.ChunkResp)
            got.append(msg.chunk)
        with contextlib.suppress(TimeoutError):
            extra = await far.recv(0.5)  # nothing else comes
            got.append(getattr(extra, "chunk", -1))
        task.cancel()
        await link.close()
        await far.close()
        server.close()
        return got, node.expired_requests

    got, expired = asyncio.run(body())
    assert got == [1, 3] and expired == 2


@pytest.mark.parametrize("serial", [True, False])
def test_a_chunk_that_cannot_arrive_before_its_deadline_is_refused_or_dropped(tmp_path: Path, serial: bool) -> None:
    async def body() -> tuple[list[int], list[int], int]:
        c = Cluster(tmp_path)
        node = await source_holding(c, 6, 20000, serial_upload=serial)
        links, fars, server = await partner_links(node, ("a",))
        link, far = links["a"], fars["a"]
        node.up_rate = 20000 / 0.5  # the uplink takes 0.5 s per chunk
        now = time.time()
        # two requests in time, one whose requester plays the chunk 0.1 s ago
        link.queue.extend([Queued(0, 0, now), Queued(1, 1, now), Queued(2, 2, now, now - 0.1)])
        content = node.cfg.content
        node._chunk_req(link, wire.ChunkReq(content, 3, 1000))  # 4th in line: 2 s away, due in 1 s: refused
        node._chunk_req(link, wire.ChunkReq(content, 4, 10000))  # due in 10 s: queued
        node._chunk_req(link, wire.ChunkReq(content, 5))  # no deadline (download, buffering): queued
        task = start_uploading(node, link, serial)
        sent: list[int] = []
        refused: list[int] = []
        while len(sent) < 4:
            msg = await far.recv(5.0)
            if isinstance(msg, wire.ChunkResp):
                sent.append(msg.chunk)
            elif isinstance(msg, wire.Error) and msg.code == wire.ErrorCode.BUSY:
                refused.append(int(msg.reason.split()[-1]))
        task.cancel()
        await link.close()
        await far.close()
        server.close()
        return sent, refused, node.late_refusals

    sent, refused, late = asyncio.run(body())
    assert sent == [0, 1, 4, 5]
    assert refused == [3, 2] and late == 2  # refused at once, then dropped from the queue (and the requester told)


def test_an_overlay_of_serial_uploaders_plays_on_time(tmp_path: Path) -> None:
    peers = [f"p{i}" for i in range(6)]

    async def body() -> Cluster:
        c = Cluster(tmp_path, seed=2)
        await c.tracker(deputy_threshold=3)
        await c.source(max_partners=2, serial_upload=True)
        for i, p in enumerate(peers):
            await c.peer(p, partners=3, serial_upload=True)
            await asyncio.sleep(0.3 if i < 4 else 0.0)
        await asyncio.sleep(11)
        await c.stop()
        return c

    c = asyncio.run(body())
    from_peers = 0.0
    for p in peers:
        vm = viewer_metrics(pd.DataFrame(c.events(p)))
        assert vm.continuity_index is not None and vm.continuity_index >= 0.95, (p, vm)
        assert not c.events(p, "node_error")
        from_peers += vm.bytes_from_peers or 0
    assert from_peers > 0
    assert not c.events("src", "node_error")


def test_admission_control_refuses_fresh_chunks_but_never_old_or_urgent_ones(tmp_path: Path) -> None:
    async def body() -> tuple[bool, bool, bool]:
        c = Cluster(tmp_path)
        host = c.address("src")
        cfg = source_config.Config.model_validate({"tracker": "127.0.0.1", "user": "u", "secret": "s", "bind": host,
                                            "listen_port": free_port(host), "serve_horizon": 1.0,
                                            "serve_old": 10.0})
        node = source.SourceNode(c.ctx("src", "source"), cfg)
        await node.prepare()
        assert node.buffer is not None and node.info is not None
        now = time.time()
        node.buffer.put(Chunk(1, b"x", created_us=round((now - 20) * 1e6)))  # due soon at a viewer 20 s behind
        node.buffer.put(Chunk(2, b"x", created_us=round(now * 1e6)))  # just made
        node.up_rate = node.info.chunk_bytes / 0.8  # 0.8 s per chunk: one more queued is past the horizon
        accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
        server = await asyncio.start_server(lambda r, w: accepted.put_nowait((r, w)), host, 0)
        _, far_writer = await asyncio.open_connection(host, server.sockets[0].getsockname()[1])
        link = Link(FramedStream(*await accepted.get()), node.overlays[0], inbound=True, name="a", now=now, peer=1)
        node.links.add(link)
        idle = node._overloaded(2)
        link.queue.append(Queued(0, 1, time.time()))
        out = idle, node._overloaded(2), node._overloaded(1)
        node.cfg.serve_urgent = 5.0
        due = node._overloaded(2, due_ms=4000), node._overloaded(2, due_ms=9000)
        await link.close()
        far_writer.close()
        server.close()
        return out + due

    idle, fresh, old, urgent, not_urgent = asyncio.run(body())
    assert not idle  # nothing queued: the chunk goes out within the horizon
    assert fresh  # a fresh chunk behind a queue longer than the horizon: busy, ask elsewhere
    assert not old  # an old chunk is always taken
    assert not urgent and not_urgent  # serve_urgent: a request due within 5 s is taken, one due in 9 s is not


def test_upload_rate_is_measured_from_the_first_mark_not_from_time_zero(tmp_path: Path) -> None:
    """Chunks sent with others still queued before the first measurement must not give a rate of bytes / Unix time
    (a node that believes it uploads a few bytes a second refuses every request and is never measured again)."""

    async def body() -> tuple[float | None, float | None, int]:
        c = Cluster(tmp_path)
        node = await source_holding(c, 8, 20000, serial_upload=True, serve_horizon=2.0)
        links, far, server = await partner_links(node, ("a", "b"))

        async def serve(requests: list[tuple[str, int]]) -> None:
            for seq, (name, cid) in enumerate(requests):
                links[name].queue.append(Queued(seq, cid, time.time()))
            node.up_wake.set()
            for name, _ in requests:
                assert isinstance(await far[name].recv(5.0), wire.ChunkResp)

        task = asyncio.ensure_future(node._upload_loop())
        await serve([("a", 0), ("b", 1), ("a", 2)])  # sent with others queued: the uplink was busy
        node._measure_upload(time.time())  # the first measurement: only the mark
        first = node.up_rate
        node._backlogged = True  # requests waited during this second
        await serve([("b", 3), ("a", 4), ("b", 5)])
        await asyncio.sleep(0.5)
        node._measure_upload(time.time())
        measured = node.up_rate
        links["a"].queue.clear()
        busy_before = node.busy_refusals
        node._chunk_req(links["a"], wire.ChunkReq(node.cfg.content, 6))
        refused = node.busy_refusals - busy_before
        task.cancel()
        await close_partner_links(links, far, server)
        return first, measured, refused

    first, measured, refused = asyncio.run(body())
    assert first is None
    # three 20 kB chunks over loopback in about half a second
    assert measured is not None and measured > 50_000
    assert refused == 0  # an idle node with a sane rate accepts a fresh chunk request
