"""STUN-like server role for NAT classification (RFC 3489 / RFC 5780 behaviour tests, JSON-over-UDP wire format).

A server listens on two UDP ports of one address (``port`` and ``alt_port``). A second server on another host is
its ``peer``: together they give the 2 addresses x 2 ports of the classic tests. Every datagram is one JSON object
(UTF-8, at most ``MAX_SIZE`` bytes) with ``"stun": 1``, a ``type`` and a transaction ``id``:

- ``request`` (client -> server): ``change_ip`` / ``change_port`` (bool). The server answers "what source
  address do you see": a ``response`` with ``mapped`` = [ip, port] of the request's source, ``source`` = [ip,
  port] the response is sent from, and ``other`` = [peer ip, alt_port] (RFC 5780 OTHER-ADDRESS; null without a
  peer). Without change flags the answer leaves from the port the request arrived on; ``change_port`` makes it
  leave from the other port; ``change_ip`` hands it to the peer:
- ``relay`` (server -> peer server, to the peer's ``port``): ``client`` = [ip, port] to answer, ``mapped`` (as the
  first server saw it) and ``alt`` (answer from the peer's alt port). The peer accepts relays from its configured
  peer address only, and sends the ``response`` itself, so it really comes from the other address.
- ``hairpin`` (client -> its own mapped address; never sent to a server): a probe the client uses to test
  hairpinning. Servers ignore it.

The decoder never raises anything but ``BadMessage``; bad datagrams are logged as ``stun_bad`` and dropped.

Events: ``stun_ready`` (``address``, ``ports``, ``peer``), ``stun_request`` (``src``, ``id``, ``port``,
``change_ip``, ``change_port``), ``stun_relay_out`` / ``stun_relay_in`` (``id``, ``client``), ``stun_bad``
(``reason``, ``src``, ``size``), ``stun_unanswerable`` (a change-IP request without a peer).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nodes.runtime import NodeContext, run_role

MAX_SIZE = 1200
Addr = tuple[str, int]


class Config(BaseModel):
    """``args`` of a stun_server process."""

    model_config = ConfigDict(extra="forbid")
    port: int = Field(default=3478, ge=1, le=65535, description="primary UDP port")
    alt_port: int = Field(default=3479, ge=1, le=65535, description="alternate UDP port (change-port answers)")
    bind: str | None = Field(default=None, description="address to listen on; default: this node's primary address")
    peer: str | None = Field(default=None, description="the other server (node name or address), same ports; "
                                                       "needed for change-IP answers")


class BadMessage(ValueError):
    """A datagram that is not a valid message of this protocol."""


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    stun: Literal[1]
    type: Literal["request", "response", "relay", "hairpin"]
    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    change_ip: bool = False
    change_port: bool = False
    mapped: list[Any] | None = None
    source: list[Any] | None = None
    other: list[Any] | None = None
    client: list[Any] | None = None
    alt: bool = False


def _addr(value: Any, field: str) -> Addr:
    if not isinstance(value, list) or len(value) != 2:
        raise BadMessage(f"{field}: expected [ip, port]")
    ip, port = value
    if not isinstance(ip, str) or not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise BadMessage(f"{field}: expected [ip, port]")
    try:
        ipaddress.IPv4Address(ip)
    except ValueError:
        raise BadMessage(f"{field}: {ip!r} is not an IPv4 address") from None
    return ip, port


def decode(data: bytes) -> dict[str, Any]:
    """A datagram -> a checked message dict (addresses as (ip, port) tuples). Raises ``BadMessage`` only."""
    if len(data) > MAX_SIZE:
        raise BadMessage(f"too long ({len(data)} bytes)")
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadMessage("not JSON") from None
    if not isinstance(raw, dict):
        raise BadMessage("not a JSON object")
    try:
        msg = _Wire.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise BadMessage(f"{'.'.join(str(x) for x in first['loc']) or 'message'}: {first['msg']}") from None
    out: dict[str, Any] = msg.model_dump()
    for key in ("mapped", "source", "other", "client"):
        if out[key] is not None:
            out[key] = _addr(out[key], key)
    if msg.type == "response" and (out["mapped"] is None or out["source"] is None):
        raise BadMessage("response without mapped/source")
    if msg.type == "relay" and (out["client"] is None or out["mapped"] is None):
        raise BadMessage("relay without client/mapped")
    return out


def encode(kind: str, tid: str, **fields: Any) -> bytes:
    """One message as bytes (tuples become [ip, port] lists)."""
    body = {"stun": 1, "type": kind, "id": tid}
    body.update({k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()})
    return json.dumps(body, separators=(",", ":")).encode()


class _Port(asyncio.DatagramProtocol):
    def __init__(self, server: StunServer, port: int):
        self.server = server
        self.port = port
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        self.server.received(self.port, data, addr)

    def error_received(self, exc: Exception) -> None:  # ICMP errors for earlier sends: not fatal
        self.server.ctx.log.emit("stun_send_error", port=self.port, error=str(exc))


class StunServer:
    """Both ports of one server and the relay to its peer."""

    def __init__(self, ctx: NodeContext, cfg: Config, address: str, peer: str | None):
        self.ctx = ctx
        self.cfg = cfg
        self.address = address
        self.peer = peer
        self.ports: dict[int, _Port] = {}

    def send(self, from_port: int, payload: bytes, to: Addr) -> None:
        transport = self.ports[from_port].transport
        if transport is not None:
            transport.sendto(payload, to)

    def received(self, port: int, data: bytes, src: Addr) -> None:
        log = self.ctx.log
        try:
            msg = decode(data)
        except BadMessage as exc:
            log.emit("stun_bad", reason=str(exc), src=list(src), size=len(data), port=port)
            return
        if msg["type"] == "request":
            self._request(port, msg, src)
        elif msg["type"] == "relay":
            self._relay(msg, src)
        else:
            log.emit("stun_bad", reason=f"unexpected {msg['type']}", src=list(src), size=len(data), port=port)

    def _request(self, port: int, msg: dict[str, Any], src: Addr) -> None:
        cfg = self.cfg
        self.ctx.log.emit("stun_request", src=list(src), id=msg["id"], port=port, change_ip=msg["change_ip"],
                          change_port=msg["change_port"])
        from_alt = (port == cfg.alt_port) != msg["change_port"]
        if msg["change_ip"]:
            if self.peer is None:
                self.ctx.log.emit("stun_unanswerable", id=msg["id"], reason="change_ip without a peer")
                return
            self.send(cfg.port, encode("relay", msg["id"], client=src, mapped=src, alt=from_alt),
                      (self.peer, cfg.port))
            self.ctx.log.emit("stun_relay_out", id=msg["id"], client=list(src), peer=self.peer)
            return
        self._answer(msg["id"], src, src, from_alt)

    def _relay(self, msg: dict[str, Any], src: Addr) -> None:
        if self.peer is None or src[0] != self.peer:
            self.ctx.log.emit("stun_bad", reason="relay from a host that is not the peer", src=list(src), size=0)
            return
        self.ctx.log.emit("stun_relay_in", id=msg["id"], client=list(msg["client"]))
        self._answer(msg["id"], msg["client"], msg["mapped"], msg["alt"])

    def _answer(self, tid: str, to: Addr, mapped: Addr, from_alt: bool) -> None:
        port = self.cfg.alt_port if from_alt else self.cfg.port
        other = (self.peer, self.cfg.alt_port) if self.peer is not None else None
        self.send(port, encode("response", tid, mapped=mapped, source=(self.address, port), other=other), to)


async def main(ctx: NodeContext, cfg: Config) -> int:
    if cfg.port == cfg.alt_port:
        raise SystemExit("port and alt_port must differ")
    address = cfg.bind or ctx.hosts.get(ctx.node) or "0.0.0.0"
    peer = ctx.resolve(cfg.peer) if cfg.peer else None
    server = StunServer(ctx, cfg, address, peer)
    loop = asyncio.get_running_loop()
    transports = []
    for port in (cfg.port, cfg.alt_port):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        proto = _Port(server, port)
        server.ports[port] = proto
        transport, _ = await loop.create_datagram_endpoint(lambda p=proto: p, sock=sock)
        transports.append(transport)
    ctx.log.emit("stun_ready", address=address, ports=[cfg.port, cfg.alt_port], peer=peer)
    ctx.log.flush()
    try:
        while True:  # keep the log flushed while idle, so a reader of the bundle sees recent events
            await asyncio.sleep(0.5)
            ctx.log.flush()
    finally:
        for transport in transports:
            transport.close()


if __name__ == "__main__":
    run_role(main, Config)
