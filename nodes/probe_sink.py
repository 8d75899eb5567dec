"""UDP probe sink role: receives probe datagrams and logs each one (flow, seq, send time, receive time).

A datagram that is not a valid probe is logged as ``probe_bad`` and dropped; the sink never stops on bad
input. Receive times are taken in user space right after the datagram is read (kernel receive stamps
would be taken before an ingress delay line holds the packet, and so would hide the emulated delay).
"""

from __future__ import annotations

import asyncio
import socket
import time

from pydantic import BaseModel, ConfigDict, Field

from nodes import probe_packet
from nodes.runtime import NodeContext, run_role


class Config(BaseModel):
    """``args`` of a probe_sink process."""

    model_config = ConfigDict(extra="forbid")
    port: int = Field(default=5001, ge=1, le=65535)
    bind: str = Field(default="0.0.0.0", description="local address to bind")


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


async def main(ctx: NodeContext, cfg: Config) -> int:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((cfg.bind, cfg.port))
    transport, _ = await loop.create_datagram_endpoint(lambda: _SinkProtocol(ctx), sock=sock)
    ctx.log.emit("sink_ready", port=cfg.port)
    try:
        await asyncio.Event().wait()
    finally:
        transport.close()
    return 0


if __name__ == "__main__":
    run_role(Config, main)
