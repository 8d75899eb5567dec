"""IP multicast for VoD channels: a sending socket (TTL, outgoing interface) and per-channel receiving sockets
that reassemble chunks from VOD_PIECE datagrams.

A channel is a group (239.77.x.y by default) and a UDP port; each datagram is one wire frame (VOD_PIECE, at
most 1,400 data bytes, so no IP fragmentation). Receivers bind to (group, port) with ``IP_MULTICAST_ALL`` off,
so a socket sees only its channel, and join the group on every interface of the node (the kernel reports the
membership with IGMP). A datagram that is not a valid frame, or a piece of another content, is counted and
dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Callable

from nodes.wire import VOD_MAX_PIECE, FrameDecoder, VodPiece, VodState, VodStatus, encode

IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)


def sender_socket(ttl: int, local: str | None) -> socket.socket:
    """A non-blocking UDP socket for multicast: TTL ``ttl``, out of the interface holding ``local``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
    if local:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(local))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    sock.setblocking(False)
    return sock


def pieces(content: int, chunk: int, data: bytes) -> list[bytes]:
    """The datagrams (encoded VOD_PIECE frames) of one chunk."""
    n = -(-len(data) // VOD_MAX_PIECE)
    return [encode(VodPiece(content, chunk, i, n, len(data), data[i * VOD_MAX_PIECE:(i + 1) * VOD_MAX_PIECE]))
            for i in range(n)]


def primer(channel: int) -> bytes:
    """A small valid frame sent before a channel's first chunk, so that multicast routers (smcroute installs
    the (S,G) route on the first packet of a source) have the route when data comes; receivers ignore it."""
    return encode(VodStatus(max(1, channel), VodState.PLAYING))


def _mreqn(group: str, ifindex: int) -> bytes:
    return struct.pack("=4s4si", socket.inet_aton(group), bytes(4), ifindex)


class ChannelReceiver(asyncio.DatagramProtocol):
    """Receives one channel's datagrams and calls ``on_chunk(chunk, data)`` for each complete chunk."""

    def __init__(self, content: int, on_chunk: Callable[[int, bytes], None]) -> None:
        self.content = content
        self.on_chunk = on_chunk
        self.partial: dict[int, dict[int, bytes]] = {}
        self.done: set[int] = set()
        self.rejected = 0
        self.datagrams = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.datagrams += 1
        dec = FrameDecoder(max_payload=2048)
        msgs = dec.feed(data) + dec.flush()
        self.rejected += dec.rejected_frames
        for m in msgs:
            if not isinstance(m, VodPiece):
                continue  # primers and anything else
            if m.content != self.content or m.chunk in self.done:
                continue
            got = self.partial.setdefault(m.chunk, {})
            got[m.piece] = m.data
            if len(got) == m.pieces:
                del self.partial[m.chunk]
                self.done.add(m.chunk)
                self.on_chunk(m.chunk, b"".join(got[i] for i in range(m.pieces)))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def join_channel(group: str, port: int, content: int, on_chunk: Callable[[int, bytes], None],
                       ifaces: list[int] | None = None) -> ChannelReceiver:
    """Open a socket on (group, port), join the group on ``ifaces`` (default: every non-loopback interface)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
    sock.bind((group, port))
    indexes = ifaces if ifaces is not None else [i for i, n in socket.if_nameindex() if n != "lo"]
    joined = 0
    for index in indexes:
        try:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, _mreqn(group, index))
            joined += 1
        except OSError:
            continue
    if not joined:
        sock.close()
        raise OSError(f"could not join {group} on any interface")
    sock.setblocking(False)
    _, proto = await loop.create_datagram_endpoint(lambda: ChannelReceiver(content, on_chunk), sock=sock)
    return proto
