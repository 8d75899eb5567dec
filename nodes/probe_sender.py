"""UDP probe sender role: sends sequence-numbered, timestamped datagrams to a sink on a seeded schedule.

Each datagram carries (flow, seq, send time); each send is logged as a ``probe_send`` event, so loss,
RFC 3550 jitter and one-way delay can be computed from the sender's and the sink's logs. The schedule
(constant bit rate or Poisson) depends only on the process seed, so two runs with one seed send the same
packets at the same offsets.

``dst`` may be an IPv4 multicast group (224.0.0.0/4): datagrams then leave with multicast TTL ``ttl`` (each
multicast router on the way decrements it; a router forwards only while it stays above the interface's
threshold, 1 by default) through interface ``iface``, by default the one holding the node's primary address
(hosts have routes to the scenario's subnets only, none for 224.0.0.0/4).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nodes import probe_packet
from nodes.runtime import NodeContext, run_role


class Config(BaseModel):
    """``args`` of a probe_sender process."""

    model_config = ConfigDict(extra="forbid")
    dst: str = Field(description="destination node name or IPv4 address")
    port: int = Field(default=5001, ge=1, le=65535)
    flow: str | None = Field(default=None, max_length=64, description="flow id; defaults to '<node>.<proc>'")
    rate_pps: float | None = Field(default=None, gt=0, le=100000, description="packets per second")
    bitrate: float | None = Field(default=None, gt=0, description="bit/s of UDP payload (instead of rate_pps)")
    size: int = Field(default=200, ge=32, le=65000, description="UDP payload bytes")
    duration: float | None = Field(default=None, gt=0, description="seconds to send; default until stopped")
    pattern: Literal["cbr", "poisson"] = "cbr"
    ttl: int = Field(default=16, ge=1, le=255, description="multicast TTL (multicast dst only)")
    iface: str | None = Field(default=None, max_length=15,
                              description="outgoing interface for a multicast dst; default: the primary address's")

    @model_validator(mode="after")
    def _one_rate(self) -> Config:
        if (self.rate_pps is None) == (self.bitrate is None):
            raise ValueError("give exactly one of rate_pps and bitrate")
        return self

    @property
    def pps(self) -> float:
        return self.rate_pps if self.rate_pps is not None else self.bitrate / (8 * self.size)  # type: ignore[operator]


def is_multicast(addr: str) -> bool:
    """True for an IPv4 multicast group address (224.0.0.0/4)."""
    try:
        return ipaddress.IPv4Address(addr).is_multicast
    except ValueError:
        return False


def set_multicast_out(sock: socket.socket, ttl: int, iface: str | None, local: str | None) -> None:
    """Multicast TTL and outgoing interface (by name, else by the local address ``local``, else the kernel's)."""
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
    if iface is not None:
        # struct ip_mreqn {imr_multiaddr, imr_address, imr_ifindex}: pick the interface by index
        try:
            index = socket.if_nametoindex(iface)
        except OSError as exc:
            raise SystemExit(f"iface {iface!r}: no such interface in this node") from exc
        mreqn = struct.pack("=4s4si", bytes(4), bytes(4), index)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
    elif local is not None:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(local))


async def main(ctx: NodeContext, cfg: Config) -> int:
    flow = cfg.flow or f"{ctx.node}.{ctx.proc}"
    if cfg.size < probe_packet.min_size(flow):
        raise SystemExit(f"size {cfg.size} too small for flow name {flow!r}")
    dst = ctx.resolve(cfg.dst)
    horizon = cfg.duration if cfg.duration is not None else 7 * 24 * 3600.0
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    if is_multicast(dst):
        set_multicast_out(sock, cfg.ttl, cfg.iface, ctx.hosts.get(ctx.node))
    sock.setblocking(False)
    ctx.log.emit("probe_start", flow=flow, dst=dst, port=cfg.port, rate_pps=cfg.pps, size=cfg.size,
                 pattern=cfg.pattern, duration=cfg.duration)
    sent = 0
    next_offset = 0.0
    start = time.time()
    try:
        while next_offset < horizon:
            now = time.time()
            due = start + next_offset
            if due > now:
                await asyncio.sleep(due - now)
                continue
            stamp = time.time()
            try:
                sock.sendto(probe_packet.encode(flow, sent, stamp, cfg.size), (dst, cfg.port))
                ctx.log.emit("probe_send", t=stamp, flow=flow, seq=sent, size=cfg.size, due=round(next_offset, 6))
            except (BlockingIOError, OSError) as exc:  # no route while a link is down, full buffer, ...
                ctx.log.emit("probe_send_error", t=stamp, flow=flow, seq=sent, error=exc.__class__.__name__)
            sent += 1
            next_offset += ctx.rng.expovariate(cfg.pps) if cfg.pattern == "poisson" else 1.0 / cfg.pps
    finally:
        ctx.log.emit("probe_stop", flow=flow, sent=sent)
        sock.close()
    return 0


if __name__ == "__main__":
    run_role(main, Config)
