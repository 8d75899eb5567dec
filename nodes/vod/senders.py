"""Paced senders of a share of a video (a set of stripes over a chunk range): chunk c leaves at
``t0 + c * chunk_s``, so a source of k of S stripes sends at k/S of the play rate. Used by the server
(unicast streams, patches, multicast channels) and by peers (their share of a stream or of a channel).

``get_chunk(c)`` gives the bytes (the server makes them; a peer waits for them in its store; None skips the
chunk), ``on_sent(n)`` counts payload bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Awaitable, Callable

from nodes.vod.content import Geometry, popcount, share_chunks
from nodes.vod.mcast import pieces, primer
from nodes.wire import ChunkResp, FramedStream

GetChunk = Callable[[int], Awaitable[bytes | None]]


async def sleep_until(t: float) -> None:
    delay = t - time.time()
    if delay > 0:
        await asyncio.sleep(delay)


async def send_tcp(stream: FramedStream, video: int, g: Geometry, first: int, end: int, mask: int, t0: float,
                   get_chunk: GetChunk, on_sent: Callable[[int], None]) -> int:
    """Send the share as CHUNK_RESP frames on ``stream``; returns the chunks sent."""
    sent = 0
    for c in share_chunks(first, end, mask, g.stripes):
        await sleep_until(t0 + c * g.chunk_s)
        data = await get_chunk(c)
        if data is None:
            continue
        await stream.send(ChunkResp(video, c, data))
        on_sent(len(data))
        sent += 1
    return sent


async def send_multicast(sock: socket.socket, group: str, port: int, channel: int, video: int, g: Geometry,
                         first: int, end: int, mask: int, t0: float, get_chunk: GetChunk,
                         on_sent: Callable[[int], None]) -> int:
    """Send the share to a multicast group, each chunk's pieces spread over most of the share's chunk gap."""
    for _ in range(2):
        _sendto(sock, primer(channel), group, port)
        await asyncio.sleep(0.02)
    gap_s = g.chunk_s * g.stripes / max(1, popcount(mask))
    sent = 0
    for c in share_chunks(first, end, mask, g.stripes):
        await sleep_until(t0 + c * g.chunk_s)
        data = await get_chunk(c)
        if data is None:
            continue
        grams = pieces(video, c, data)
        spacing = 0.6 * min(gap_s, 2 * g.chunk_s) / len(grams)
        for i, dg in enumerate(grams):
            _sendto(sock, dg, group, port)
            if i + 1 < len(grams):
                await asyncio.sleep(spacing)
        on_sent(len(data))
        sent += 1
    return sent


def _sendto(sock: socket.socket, data: bytes, group: str, port: int) -> None:
    with contextlib.suppress(OSError):  # a full socket buffer or no route: the receivers repair what is missing
        sock.sendto(data, (group, port))
