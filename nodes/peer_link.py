"""Network manager of the streaming node (document 3.3.2.7 and 4.5.3): persistent TCP connections.

One :class:`Link` per TCP connection, inbound (accepted on the node's listening port) or outbound (opened to a
member to ask for a partnership). A connection is opened once and kept while the partnership lasts (4.5.3: "a TCP
connection between two related peers is opened once and maintained while their relation remains"); control
messages and chunks share it, in both directions, so a peer behind a NAT that opened the connection uploads over
it as well. Every frame goes through the shared wire format (``wire.FramedStream``: framing that resynchronises,
byte counters split into control and data).

A link serves the chunk requests of its partner in order (a FIFO of :class:`Queued` requests, at most ``max_queue``,
each with its arrival number on the node, so a serial uploader can serve all links in arrival order, and the time by
which the requester must have it); its
uploader writes one CHUNK_RESP at a time and waits for the socket to drain, so TCP paces the upload and the
partners of a node share its uplink. The link also remembers the partner's last buffer map.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from typing import TYPE_CHECKING, Any, NamedTuple

from nodes import wire
from nodes.wire import FramedStream

if TYPE_CHECKING:
    from nodes.overlay import Overlay

_ids = itertools.count(1)


class Queued(NamedTuple):
    """A chunk request waiting on a link."""

    arrival: int  # arrival number on the node (serial upload serves all links in this order)
    chunk: int
    at: float  # when it came (epoch s)
    due: float = float("inf")  # when the requester plays the chunk (epoch s, its ``due_ms``); inf: no deadline


async def open_stream(host: str, port: int, bind: str = "0.0.0.0", timeout: float = 5.0,
                      **kw: Any) -> FramedStream:
    """A TCP connection as a FramedStream; from the address ``bind`` when it is a specific one."""
    local = (bind, 0) if bind not in ("0.0.0.0", "") else None
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, local_addr=local), timeout)
    return FramedStream(reader, writer, **kw)


class Link:
    """One connection to another node, and the partnership it may carry."""

    __slots__ = ("id", "stream", "overlay", "inbound", "ip", "name", "peer", "port", "state", "server", "main",
                 "upload_kbps", "bm", "bm_at", "bm_newest", "queue", "wake", "added_at", "last_exchange", "chunks_up",
                 "chunks_down", "bad", "logged_bad", "closed", "tasks", "opened_at", "last_rx")

    def __init__(self, stream: FramedStream, overlay: Overlay, *, inbound: bool, name: str, now: float,
                 peer: int | None = None, port: int = 0):
        self.id = next(_ids)
        self.stream = stream
        self.overlay = overlay
        self.inbound = inbound
        self.ip = stream.peername[0]
        self.name = name  # node name, else address (for logs)
        self.peer = peer  # the other node's id in this overlay, once known
        self.port = port  # its listening port, once known
        self.state = "open"  # open -> asking (outbound) -> partner -> closed
        self.server = False  # the other side is the content's source (chunks from it count as "server")
        self.main = False  # the other side is a main node of our ad-hoc network
        self.upload_kbps = 0  # the upload the other side said it has (PARTNERSHIP_REQ), 0 unknown
        self.bm: wire.BufferMap | None = None
        self.bm_at = now
        self.bm_newest = -1
        self.queue: deque[Queued] = deque()
        self.wake = asyncio.Event()
        self.opened_at = now
        self.added_at = now
        self.last_exchange = now
        self.chunks_up = 0
        self.chunks_down = 0
        self.bad = 0
        self.logged_bad = 0
        self.closed = False
        self.tasks: list[asyncio.Task[Any]] = []
        self.last_rx = now  # when the last message arrived on this connection

    def __repr__(self) -> str:
        return f"Link({self.name}, peer={self.peer}, {self.state})"

    @property
    def partner(self) -> bool:
        return self.state == "partner"

    def send(self, msg: wire.Message) -> bool:
        """Queue one message (no waiting); False if the connection is closing."""
        if self.closed or self.stream.writer.is_closing():
            return False
        try:
            self.stream.write(msg)
        except (OSError, RuntimeError):
            return False
        return True

    def has(self, chunk: int) -> bool:
        bm = self.bm
        return bm is not None and bm.has(chunk)

    def set_bm(self, bm: wire.BufferMap, now: float) -> None:
        self.bm = bm
        self.bm_at = now
        newest = -1
        bits = bm.bitmap
        for i in range(len(bits) - 1, -1, -1):
            b = bits[i]
            if b:
                low = (b & -b).bit_length() - 1  # lowest set bit = the highest chunk in this byte (MSB first)
                newest = bm.base + i * 8 + (7 - low)
                break
        self.bm_newest = newest

    async def close(self) -> None:
        self.closed = True
        for task in self.tasks:
            if task is not asyncio.current_task():
                task.cancel()
        with contextlib.suppress(Exception):
            await self.stream.close()
