"""STUN-like NAT classifier role (the client): runs the classic RFC 3489 / RFC 5780 behaviour tests against a
pair of ``stun_server`` processes and logs the verdict as a ``nat_classified`` event.

Three UDP sockets, so that one test cannot open the NAT for another:

- F (filtering, and afterwards the listening socket): Test I to the primary server A1:P1 gives the mapped address
  (none at all: ``blocked``; equal to the local address: ``open``). Then "answer from the other address and port"
  (change IP + port) and "answer from the other port" (change port) requests, still sent to A1:P1 only: the first
  arriving means endpoint-independent filtering, else the second arriving means address-dependent filtering,
  else address-and-port-dependent filtering.
- M (mapping): requests to A1:P1, A2:P1 and A2:P2 (A2, P2 from the server's OTHER-ADDRESS). One mapped address for
  all three is endpoint-independent mapping; otherwise the mapping is address-dependent (same for A2:P1 and A2:P2)
  or address-and-port-dependent.
- H (hairpin): a probe from H to F's mapped address; F receiving it means the NAT hairpins.

Verdict (``type``): ``symmetric`` for any non-EIM mapping; with EIM: ``full-cone`` (EIF), ``address-restricted``
(ADF) or ``port-restricted`` (APDF); ``open`` (no NAT), ``blocked`` (no answer), ``unknown`` (an inconclusive
test). Requests are retransmitted every ``timeout`` seconds, ``tries`` times; a test that expects silence waits
that long.

After the verdict the role keeps F open for ``listen`` seconds (default: until stopped), refreshing its mapping
with a request to A1:P1 every ``keepalive`` seconds, and logs every datagram reaching F that is not an answer as
``unsolicited`` (``src``, ``size``, ``stun`` = whether it parsed, ``text`` = the first bytes): this is how a test
sees whether an unsolicited packet sent to the mapped address got through the NAT. Bad datagrams never stop it.

Events: ``stun_test`` (``test``, ``socket``, ``to``, ``ok``, ``mapped``, ``from``), ``nat_classified`` (``type``,
``mapping``, ``filtering``, ``hairpin``, ``mapped``, ``local``, ``server``, ``other``, ``evidence``),
``unsolicited``, ``stun_bad``, ``stun_keepalive_lost``.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from nodes.runtime import NodeContext, run_role
from nodes.stun_server import BadMessage, decode, encode

Addr = tuple[str, int]


class Config(BaseModel):
    """``args`` of a stun_client process."""

    model_config = ConfigDict(extra="forbid")
    server: str = Field(description="the primary stun_server (node name or address)")
    port: int = Field(default=3478, ge=1, le=65535, description="the server's primary port")
    timeout: float = Field(default=0.4, gt=0, le=10, description="seconds between retransmissions")
    tries: int = Field(default=3, ge=1, le=20, description="transmissions per request")
    hairpin: bool = Field(default=True, description="also test hairpinning")
    listen: float | None = Field(default=None, ge=0, description="seconds to keep the listening socket open after "
                                                                 "the verdict; default until stopped")
    keepalive: float = Field(default=10.0, ge=0, description="seconds between mapping refreshes while listening "
                                                             "(0: none)")


@dataclass
class _Reply:
    msg: dict[str, Any]
    src: Addr
    t: float


@dataclass
class _Sock(asyncio.DatagramProtocol):
    """One client socket: answers go to waiting transactions, anything else is logged."""

    ctx: NodeContext
    name: str
    pending: dict[str, asyncio.Future[_Reply]] = field(default_factory=dict)
    finished: set[str] = field(default_factory=set)  # answered or abandoned transactions: late copies are dropped
    transport: asyncio.DatagramTransport | None = None
    local: Addr = ("0.0.0.0", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        now = time.time()
        try:
            msg = decode(data)
        except BadMessage as exc:
            self._unsolicited(data, addr, now, parsed=False, reason=str(exc))
            return
        fut = self.pending.get(msg["id"])
        if fut is not None and msg["type"] in ("response", "hairpin") and not fut.done():
            fut.set_result(_Reply(msg, addr, now))
            return
        if msg["id"] in self.finished:
            self.ctx.log.emit("stun_late", t=now, socket=self.name, id=msg["id"], src=list(addr))
            return
        self._unsolicited(data, addr, now, parsed=True, reason=f"{msg['type']} {msg['id']} not expected")

    def _unsolicited(self, data: bytes, addr: Addr, now: float, parsed: bool, reason: str) -> None:
        self.ctx.log.emit("unsolicited", t=now, socket=self.name, src=list(addr), size=len(data), stun=parsed,
                          reason=reason, text=data[:64].decode("utf-8", "replace"))
        self.ctx.log.flush()

    def error_received(self, exc: Exception) -> None:  # ICMP unreachable for an earlier send: keep going
        self.ctx.log.emit("stun_send_error", socket=self.name, error=str(exc))

    def send(self, payload: bytes, to: Addr) -> None:
        if self.transport is not None:
            self.transport.sendto(payload, to)


class Classifier:
    """The behaviour tests; results accumulate in ``evidence``."""

    def __init__(self, ctx: NodeContext, cfg: Config):
        self.ctx = ctx
        self.cfg = cfg
        self.evidence: list[dict[str, Any]] = []

    async def open(self, name: str, local_ip: str) -> _Sock:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("0.0.0.0", 0))
        proto = _Sock(self.ctx, name)
        await loop.create_datagram_endpoint(lambda: proto, sock=sock)
        proto.local = (local_ip, sock.getsockname()[1])
        return proto

    async def exchange(self, sock: _Sock, payload: bytes, tid: str, to: Addr) -> _Reply | None:
        """Send ``payload`` up to ``tries`` times, ``timeout`` apart; the first matching reply, or None."""
        fut: asyncio.Future[_Reply] = asyncio.get_running_loop().create_future()
        sock.pending[tid] = fut
        try:
            for _ in range(self.cfg.tries):
                sock.send(payload, to)
                try:
                    return await asyncio.wait_for(asyncio.shield(fut), self.cfg.timeout)
                except TimeoutError:
                    continue
            return None
        finally:
            sock.pending.pop(tid, None)
            sock.finished.add(tid)

    async def request(self, test: str, sock: _Sock, to: Addr, change_ip: bool = False,
                      change_port: bool = False) -> _Reply | None:
        tid = f"{test}-{secrets.token_hex(6)}"
        reply = await self.exchange(sock, encode("request", tid, change_ip=change_ip, change_port=change_port),
                                    tid, to)
        self._record(test, sock, to, reply, change_ip=change_ip, change_port=change_port)
        return reply

    def _record(self, test: str, sock: _Sock, to: Addr, reply: _Reply | None, **extra: Any) -> None:
        rec = {"test": test, "socket": sock.name, "local": list(sock.local), "to": list(to), "ok": reply is not None,
               "mapped": list(reply.msg["mapped"]) if reply and reply.msg.get("mapped") else None,
               "from": list(reply.src) if reply else None, **extra}
        self.evidence.append(rec)
        self.ctx.log.emit("stun_test", **rec)

    async def hairpin(self, target: _Sock, mapped: Addr, local_ip: str) -> bool:
        h = await self.open("H", local_ip)
        try:
            tid = f"hairpin-{secrets.token_hex(6)}"
            fut: asyncio.Future[_Reply] = asyncio.get_running_loop().create_future()
            target.pending[tid] = fut
            try:
                got: _Reply | None = None
                for _ in range(self.cfg.tries):
                    h.send(encode("hairpin", tid), mapped)
                    try:
                        got = await asyncio.wait_for(asyncio.shield(fut), self.cfg.timeout)
                        break
                    except TimeoutError:
                        continue
            finally:
                target.pending.pop(tid, None)
                target.finished.add(tid)
            self._record("hairpin", h, mapped, got)
            return got is not None
        finally:
            if h.transport is not None:
                h.transport.close()


def local_address(server: str, port: int) -> str:
    """The address this host sends from towards ``server`` (a connected UDP socket sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((server, port))
        except OSError:  # no route (yet): the requests will fail and the verdict will say so
            return "0.0.0.0"
        return str(s.getsockname()[0])


def verdict(mapped: Addr | None, local: Addr, eif: bool | None, adf: bool | None,
            maps: list[Addr | None]) -> tuple[str, str | None, str | None]:
    """(type, mapping behaviour, filtering behaviour) from the test results. ``maps`` = mapped addresses of M
    towards A1:P1, A2:P1, A2:P2 (None: no answer)."""
    if mapped is None:
        return "blocked", None, None
    filtering = None
    if eif is not None:
        filtering = ("endpoint-independent" if eif else "address-dependent" if adf
                     else "address-and-port-dependent" if adf is not None else None)
    mapping = None
    if len(maps) == 3 and None not in maps[:2]:
        if maps[0] == maps[1] and maps[2] in (None, maps[0]):
            mapping = "endpoint-independent"
        elif maps[2] is not None:
            mapping = "address-dependent" if maps[1] == maps[2] else "address-and-port-dependent"
    if mapped == local:
        return "open", mapping, filtering
    if mapping is None:
        return "unknown", mapping, filtering
    if mapping != "endpoint-independent":
        return "symmetric", mapping, filtering
    kind = {"endpoint-independent": "full-cone", "address-dependent": "address-restricted",
            "address-and-port-dependent": "port-restricted"}.get(filtering or "", "unknown")
    return kind, mapping, filtering


async def main(ctx: NodeContext, cfg: Config) -> int:
    server: Addr = (ctx.resolve(cfg.server), cfg.port)
    local_ip = local_address(*server)
    c = Classifier(ctx, cfg)
    f = await c.open("F", local_ip)
    m = await c.open("M", local_ip)
    mapped: Addr | None = None
    other: Addr | None = None
    eif = adf = None
    maps: list[Addr | None] = []
    hairpin: bool | None = None
    first = await c.request("binding", f, server)
    if first is not None:
        mapped = first.msg["mapped"]
        other = first.msg.get("other")
        if other is not None:  # without a second server there is no "other address" to answer from
            eif = await c.request("filter-change-ip-port", f, server, change_ip=True, change_port=True) is not None
        adf = await c.request("filter-change-port", f, server, change_port=True) is not None
        if other is not None:
            for test, to in (("map-primary", server), ("map-alt-ip", (other[0], server[1])), ("map-alt-both", other)):
                reply = await c.request(test, m, to)
                maps.append(reply.msg["mapped"] if reply else None)
        if cfg.hairpin:
            hairpin = await c.hairpin(f, mapped, local_ip)
    kind, mapping, filtering = verdict(mapped, f.local, eif, adf, maps)
    if m.transport is not None:
        m.transport.close()
    ctx.log.emit("nat_classified", type=kind, mapping=mapping, filtering=filtering, hairpin=hairpin,
                 mapped=list(mapped) if mapped else None, local=list(f.local), server=list(server),
                 other=list(other) if other else None, evidence=c.evidence)
    ctx.log.flush()
    try:
        await _listen(c, f, server, cfg)
    finally:
        if f.transport is not None:
            f.transport.close()
    return 0


async def _listen(c: Classifier, f: _Sock, server: Addr, cfg: Config) -> None:
    """Keep F (and its mapping) alive; unsolicited datagrams are logged by the socket itself."""
    end = None if cfg.listen is None else time.monotonic() + cfg.listen
    next_refresh = time.monotonic() + cfg.keepalive if cfg.keepalive > 0 else None
    while end is None or time.monotonic() < end:
        now = time.monotonic()
        wake = min(x for x in (end, next_refresh, now + 0.5) if x is not None)
        await asyncio.sleep(max(0.0, wake - now))
        c.ctx.log.flush()
        if next_refresh is not None and time.monotonic() >= next_refresh:
            tid = f"keepalive-{secrets.token_hex(6)}"
            if await c.exchange(f, encode("request", tid), tid, server) is None:
                c.ctx.log.emit("stun_keepalive_lost", server=list(server))
            next_refresh = time.monotonic() + cfg.keepalive


if __name__ == "__main__":
    run_role(main, Config)
