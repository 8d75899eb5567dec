"""UDP probe sink role: receives probe datagrams and logs each one (flow, seq, send time, receive time).

A datagram that is not a valid probe is logged as ``probe_bad`` and dropped; the sink never stops on bad
input. Receive times are taken in user space right after the datagram is read (kernel receive stamps
would be taken before an ingress delay line holds the packet, and so would hide the emulated delay).

With ``group`` the sink joins that IPv4 multicast group (IP_ADD_MEMBERSHIP, so the kernel reports the
membership with IGMP) on interface ``iface`` or on every interface of the node, and logs ``group_join``.
With ``leave_after`` it leaves the group that many seconds after it started (the kernel sends an IGMP
leave) and keeps running, so what still arrives afterwards can be counted; ``group_leave`` records when.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from typing import TYPE_CHECKING

from nodes import probe_packet
from nodes.runtime import NodeContext, run_role

if TYPE_CHECKING:
    from nodes.probe_sink_config import Config


class _SinkProtocol(asyncio.DatagramProtocol):
    def __init__(self, ctx: NodeContext):
        self.ctx = ctx

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        now = time.time()
        try:
            flow, seq, sent = probe_packet.decode(data)
        except probe_packet.BadProbe as exc:
            self.ctx.log.emit("probe_bad", t=now, reason=str(exc), src=addr[0], size=len(data))
            return
        self.ctx.log.emit("probe_recv", t=now, flow=flow, seq=seq, sent=sent, size=len(data), src=addr[0])


IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)  # Linux <netinet/in.h>


def _mreqn(group: str, ifindex: int) -> bytes:
    """struct ip_mreqn {imr_multiaddr, imr_address, imr_ifindex}."""
    return struct.pack("=4s4si", socket.inet_aton(group), bytes(4), ifindex)


def join_interfaces(iface: str | None) -> list[tuple[str, int]]:
    """(name, index) of the interfaces to join on: ``iface``, or all but loopback."""
    if iface is not None:
        try:
            return [(iface, socket.if_nametoindex(iface))]
        except OSError as exc:
            raise SystemExit(f"iface {iface!r}: no such interface in this node") from exc
    return [(name, index) for index, name in socket.if_nameindex() if name != "lo"]


class _Membership:
    """The sink socket's membership of one group on some interfaces."""

    def __init__(self, ctx: NodeContext, sock: socket.socket, group: str, iface: str | None):
        self.ctx, self.sock, self.group = ctx, sock, group
        self.joined: list[tuple[str, int]] = []
        errors = []
        for name, index in join_interfaces(iface):
            try:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, _mreqn(group, index))
                self.joined.append((name, index))
            except OSError as exc:
                errors.append(f"{name}: {exc.strerror}")
        if not self.joined:
            raise SystemExit(f"could not join {group} on any interface ({'; '.join(errors) or 'none found'})")
        ctx.log.emit("group_join", group=group, ifaces=[n for n, _ in self.joined], errors=errors or None)

    def leave(self, reason: str) -> None:
        if not self.joined:
            return
        for _name, index in self.joined:
            with contextlib.suppress(OSError):  # the interface went away: nothing to leave
                self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_DROP_MEMBERSHIP, _mreqn(self.group, index))
        self.ctx.log.emit("group_leave", group=self.group, ifaces=[n for n, _ in self.joined], reason=reason)
        self.joined = []


async def main(ctx: NodeContext, cfg: Config) -> int:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((cfg.bind, cfg.port))
    membership = None
    if cfg.group is not None:
        sock.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)  # only the groups this socket joined
        membership = _Membership(ctx, sock, cfg.group, cfg.iface)
    transport, _ = await loop.create_datagram_endpoint(lambda: _SinkProtocol(ctx), sock=sock)
    ctx.log.emit("sink_ready", port=cfg.port)
    if membership is not None and cfg.leave_after is not None:
        loop.call_later(cfg.leave_after, membership.leave, "leave_after")
    try:
        await asyncio.Event().wait()
    finally:
        if membership is not None:
            membership.leave("stop")
        transport.close()
    return 0


if __name__ == "__main__":
    run_role(main)
