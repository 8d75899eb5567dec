"""Role ``tracker``: the IMS tracker of chapter 3 (and, with ``local: true``, a main node's local tracker of
chapter 4), speaking the shared wire format (nodes/wire.py) over TCP.

What it does:

- **Authentication**: users and secrets come from the scenario (``users: {name: secret}``). HELLO (user, client
  nonce) -> CHALLENGE (tracker nonce) -> AUTH (HMAC-SHA256 over both nonces with the secret as key) -> AUTH_OK
  (a fresh peer id, the address the tracker sees, the heartbeat period, and the tracker's own proof) or
  AUTH_FAIL, after which the connection is closed. The secret never travels. Nonces and peer ids come from the
  process's seeded generator, so a run is reproducible (this is a testbed, not a deployment).
- **Membership per content** (the tracker's mCache): JOIN registers the peer in a content and is answered with a
  seeded random subset of the other members (JOIN_OK), or, once the content has more than ``deputy_threshold``
  members (peers; local trackers do not count), with REDIRECT to a deputy: the reachable member with the least
  load (partners it reported + joins redirected to it in the last ``redirect_memory`` seconds; ties broken by
  the seeded generator), as in section 3.3.5 where the tracker sends Charles to Alice. The redirected peer is
  registered all the same. A fraction ``redirect_fraction`` of the eligible joins is redirected. Peers keep
  their membership alive with MEMBERSHIP heartbeats; a peer silent for ``member_timeout`` seconds is dropped
  (``member_timeout`` event). LEAVE drops it at once.
- **Reachability** (NAT): on JOIN with a listening port, the tracker connects back to the address it sees for the
  peer and that port, sends REACH_PROBE with a random token and waits for REACH_ACK (``reach_timeout``). The
  result is returned in JOIN_OK / REDIRECT and every member entry carries a ``reachable`` flag, so a peer knows
  whether to connect to a member or to wait for it to connect (a peer behind a NAT is not reachable). Only
  reachable members can be deputies.
- **Robustness**: every frame is decoded by ``FrameDecoder``; what it rejects is logged (``bad_frame``, reason,
  at most ``max_bad_frames`` per connection, then the connection is closed) and a message that is valid but not
  allowed in the connection's state is answered with ERROR (or AUTH_FAIL before authentication). Nothing a
  client sends can stop the tracker: each connection is handled on its own, with an authentication deadline,
  an idle timeout, a cap on connections and a cap on frame size (``CONTROL_MAX``: no data chunks here).
- **Local mode** (``local: true``, chapter 4): the tracker serves the members of its own scope (ad-hoc network)
  and registers with the ``upstream`` tracker as a member of each of its contents with the TRACKER flag
  (``upstream_user`` / ``upstream_secret``), heartbeating with its number of local members; it reconnects
  when the upstream goes away. Local tracker entries are listed only to other local trackers.
- **Serving content** (``serve: {role: peer | source, args: {...}}``, section 3.3.5: "the IMS tracker can act as
  any other peer, distributing the whole content"): the tracker runs a ``peer`` or ``source`` node in its own
  process, registered with itself like any member (a user ``tracker-self`` with a secret drawn at start is added
  to ``users``; ``tracker``, ``tracker_port``, ``user`` and ``secret`` of the role's args are filled in). Its
  events go to the tracker's event log (so that process counts as a viewer or a server in the analysis).

Events: ``tracker_ready``, ``auth_ok``, ``auth_fail`` (``reason``), ``join``, ``redirect``, ``leave``,
``member_timeout``, ``reach_test``, ``published``, ``bad_frame`` (``reason``, ``kind`` = framing | protocol),
``conn_close`` (per connection: reason and byte counters), ``control_bytes`` (every ``stats_interval`` and at
the end: control bytes up/down since the last one, and totals), ``upstream_registered`` / ``upstream_lost``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from nodes import wire
from nodes.args_view import Args
from nodes.runtime import NodeContext, run_role
from nodes.tracker_client import AuthRefused, TrackerClient, TrackerError
from nodes.wire import FramedStream, JoinFlag, MemberEntry, MemberFlag, Message, Reach

if TYPE_CHECKING:
    from nodes.tracker_config import Config

SERVE_USER = "tracker-self"
SERVE_FILLED = ("tracker", "tracker_port", "user", "secret")


@dataclass
class Peer:
    """One authenticated peer (the tracker's mCache entry)."""

    id: int
    user: str
    ip: str  # as the tracker sees it (a NAT's public address)
    port: int = 0  # listening port, 0 = none
    reach: Reach = Reach.UNTESTED
    reach_port: int = -1  # the port the reach result is for
    testing: bool = False  # a connect-back test is under way
    partners: int = 0
    last_seen: float = field(default_factory=time.monotonic)
    contents: dict[int, int] = field(default_factory=dict)  # content -> MemberFlag bits (SOURCE, TRACKER)
    redirected_to: deque[float] = field(default_factory=deque)  # when joins were sent to it as a deputy

    def entry(self, content: int) -> MemberEntry:
        flags = self.contents.get(content, 0)
        if self.reach == Reach.YES and self.port:
            flags |= MemberFlag.REACHABLE
        return MemberEntry(self.id, self.ip, self.port, flags, min(self.partners, 0xFFFF))

    def load(self, now: float, window: float) -> int:
        while self.redirected_to and self.redirected_to[0] < now - window:
            self.redirected_to.popleft()
        return self.partners + len(self.redirected_to)


class _Hangup(Exception):
    """Close this connection (reason in args[0])."""


@dataclass(eq=False)
class _Conn:
    stream: FramedStream
    src: str
    peer: Peer | None = None
    user: str | None = None
    client_nonce: bytes = b""
    server_nonce: bytes = b""
    bad: int = 0
    logged_bad: int = 0


class Tracker:
    """State and connection handling of one tracker process."""

    def __init__(self, ctx: NodeContext, cfg: Config):
        self.ctx, self.cfg = ctx, cfg
        self.peers: dict[int, Peer] = {}
        self.contents: dict[int, str] = {int(c): t for c, t in cfg.contents.items()}  # JSON keys are strings
        self.users: dict[str, str] = dict(cfg.users)  # + the serving node's own user (serve)
        self.conns: set[_Conn] = set()
        self.totals = wire.ByteCounters()  # closed connections
        self._reported = (0, 0)
        self.heartbeat_ms = max(1, int(cfg.member_timeout * 1000 / 3))
        self._background: set[asyncio.Future[None]] = set()

    # -- helpers ------------------------------------------------------------------------------------------------
    def members(self, content: int) -> list[Peer]:
        return [p for p in self.peers.values() if content in p.contents]

    def _new_peer_id(self) -> int:
        while True:
            pid = self.ctx.rng.randrange(1, wire.U32 + 1)
            if pid not in self.peers:
                return pid

    def _bad(self, conn: _Conn, reason: str, kind: str, nbytes: int = 0) -> None:
        conn.bad += 1
        if conn.logged_bad < self.cfg.max_bad_frames:
            conn.logged_bad += 1
            self.ctx.log.emit("bad_frame", src=conn.src, peer=conn.peer.id if conn.peer else None, reason=reason,
                              kind=kind, bytes=nbytes)

    def _check_bad(self, conn: _Conn) -> None:
        if conn.bad >= self.cfg.max_bad_frames:
            raise _Hangup(f"{conn.bad} bad frames or messages")

    def counters(self) -> wire.ByteCounters:
        total = wire.ByteCounters()
        total.add(self.totals)
        for c in self.conns:
            total.add(c.stream.counters)
        return total

    def report_bytes(self) -> None:
        t = self.counters()
        up, down = t.control_up + t.data_up, t.control_down + t.data_down
        self.ctx.log.emit("control_bytes", up=up - self._reported[0], down=down - self._reported[1],
                          total_up=up, total_down=down, connections=len(self.conns),
                          rejected_frames=t.rejected_frames, rejected_bytes=t.rejected_bytes)
        self._reported = (up, down)

    # -- connections --------------------------------------------------------------------------------------------
    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stream = FramedStream(reader, writer, max_payload=wire.CONTROL_MAX, max_rejected_bytes=self.cfg.max_bad_bytes)
        conn = _Conn(stream, stream.peername[0])
        stream.on_reject = lambda r: self._bad(conn, r.reason, "framing", r.nbytes)
        if len(self.conns) >= self.cfg.max_connections:
            with contextlib.suppress(OSError, ConnectionError):
                await stream.send(wire.Error(wire.ErrorCode.BUSY, 0, "too many connections"))
            await stream.close()
            self.ctx.log.emit("conn_close", src=conn.src, reason="too many connections")
            return
        self.conns.add(conn)
        reason = "closed by the client"
        try:
            await self._serve(conn)
        except _Hangup as exc:
            reason = str(exc)
        except wire.WireError as exc:
            self._bad(conn, str(exc), "framing", stream.decoder.rejected_bytes)
            reason = f"too many bytes that are not frames: {exc}"
        except TimeoutError:
            reason = "authentication timeout" if conn.peer is None else "idle"
            if conn.peer is None:
                with contextlib.suppress(OSError, ConnectionError):
                    stream.write(wire.AuthFail(wire.AuthFailCode.TIMEOUT, f"not authenticated within "
                                                                          f"{self.cfg.auth_timeout:g} s"))
        except (OSError, ConnectionError) as exc:
            reason = f"connection error: {exc}"
        except Exception as exc:  # noqa: BLE001 - a bug must cost one connection, never the tracker
            reason = f"internal error: {exc.__class__.__name__}: {exc}"
            self.ctx.log.emit("tracker_error", src=conn.src, error=reason)
        finally:
            self.conns.discard(conn)
            await stream.close()
            self.totals.add(stream.counters)
            self.ctx.log.emit("conn_close", src=conn.src, peer=conn.peer.id if conn.peer else None,
                              user=conn.user, reason=reason, **stream.counters.as_dict())

    async def _serve(self, conn: _Conn) -> None:
        deadline = time.monotonic() + self.cfg.auth_timeout
        while True:
            idle = 2 * self.cfg.member_timeout
            timeout = max(0.0, deadline - time.monotonic()) if conn.peer is None else idle
            msg = await conn.stream.recv(timeout=timeout)
            self._check_bad(conn)
            if msg is None:
                return
            if conn.peer is None:
                await self._unauthenticated(conn, msg)
            else:
                await self._authenticated(conn, conn.peer, msg)
            self._check_bad(conn)

    async def _unauthenticated(self, conn: _Conn, msg: Message) -> None:
        s = conn.stream
        if isinstance(msg, wire.ReachProbe):  # an upstream tests this (local) tracker's reachability
            await s.send(wire.ReachAck(msg.token))
            raise _Hangup("reach probe answered")
        if isinstance(msg, wire.Hello) and conn.user is None:
            conn.user, conn.client_nonce = msg.user, msg.nonce
            conn.server_nonce = self.ctx.rng.randbytes(wire.NONCE_SIZE)
            await s.send(wire.Challenge(conn.server_nonce))
            return
        if isinstance(msg, wire.Auth) and conn.user is not None:
            secret = self.users.get(conn.user)
            expected = wire.client_proof(secret or "", conn.user, conn.server_nonce, conn.client_nonce)
            if secret is None or not hmac.compare_digest(expected, msg.proof):
                why = "unknown user" if secret is None else "wrong proof"
                self.ctx.log.emit("auth_fail", user=conn.user, src=conn.src, reason=why)
                await s.send(wire.AuthFail(wire.AuthFailCode.BAD_CREDENTIALS, "bad credentials"))
                raise _Hangup(f"authentication failed ({why})")
            peer = Peer(self._new_peer_id(), conn.user, conn.src)
            self.peers[peer.id] = peer
            conn.peer = peer
            await s.send(wire.AuthOk(peer.id, conn.src, s.peername[1], self.heartbeat_ms,
                                     wire.server_proof(secret, conn.user, conn.server_nonce, conn.client_nonce)))
            self.ctx.log.emit("auth_ok", user=conn.user, peer=peer.id, src=conn.src)
            return
        why = f"{msg.TYPE.name} before authentication"
        self._bad(conn, why, "protocol")
        self.ctx.log.emit("auth_fail", user=conn.user, src=conn.src, reason=why)
        await s.send(wire.AuthFail(wire.AuthFailCode.PROTOCOL, why))
        raise _Hangup(why)

    async def _authenticated(self, conn: _Conn, peer: Peer, msg: Message) -> None:
        s = conn.stream
        peer.last_seen = time.monotonic()
        if isinstance(msg, wire.Join):
            await self._join(conn, peer, msg)
        elif isinstance(msg, wire.Membership):
            if msg.peer != peer.id:
                self._bad(conn, f"MEMBERSHIP for peer {msg.peer}, not {peer.id}", "protocol")
                await s.send(wire.Error(wire.ErrorCode.BAD_REQUEST, msg.TYPE, "not your peer id"))
                return
            peer.partners = msg.partners
            if msg.port and msg.port != peer.port and not peer.testing:
                peer.port = msg.port
                task = asyncio.ensure_future(self._test_reach(peer))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
        elif isinstance(msg, wire.MembersReq):
            if msg.content not in self.contents:
                await s.send(wire.Error(wire.ErrorCode.UNKNOWN_CONTENT, msg.TYPE, f"no content {msg.content}"))
                return
            await s.send(wire.MembersResp(msg.content, self._answer(peer, msg.content, msg.want)))
        elif isinstance(msg, wire.ContentsReq):
            word = msg.word.casefold()
            found = [wire.ContentEntry(c, t, min(len(self.members(c)), 0xFFFF))
                     for c, t in sorted(self.contents.items()) if word in t.casefold()]
            await s.send(wire.ContentsResp(tuple(found[:wire.MAX_LIST])))
        elif isinstance(msg, wire.Leave):
            left = [c for c in peer.contents if msg.content in (0, c)]
            for c in left:
                del peer.contents[c]
            self.ctx.log.emit("leave", peer=peer.id, user=peer.user, contents=left)
        elif isinstance(msg, wire.Hello | wire.Auth):
            self._bad(conn, f"{msg.TYPE.name} after authentication", "protocol")
            await s.send(wire.Error(wire.ErrorCode.UNEXPECTED, msg.TYPE, "already authenticated"))
        else:
            self._bad(conn, f"{msg.TYPE.name} is not a tracker request", "protocol")
            await s.send(wire.Error(wire.ErrorCode.UNSUPPORTED, msg.TYPE, "not a tracker request"))

    # -- membership ---------------------------------------------------------------------------------------------
    def _answer(self, asker: Peer, content: int, want: int) -> tuple[MemberEntry, ...]:
        """A seeded random subset of the other members; local trackers are listed only to local trackers."""
        asker_is_tracker = bool(asker.contents.get(content, 0) & MemberFlag.TRACKER)
        pool = sorted((p for p in self.members(content) if p.id != asker.id
                       and (asker_is_tracker or not p.contents[content] & MemberFlag.TRACKER)), key=lambda p: p.id)
        k = min(want, self.cfg.answer_size, len(pool))
        return tuple(p.entry(content) for p in self.ctx.rng.sample(pool, k))

    def _deputy(self, joiner: Peer, content: int) -> Peer | None:
        now = time.monotonic()
        pool = [p for p in self.members(content) if p.id != joiner.id and p.reach == Reach.YES and p.port
                and not p.contents[content] & MemberFlag.TRACKER]
        if not pool:
            return None
        least = min(p.load(now, self.cfg.redirect_memory) for p in pool)
        best = sorted((p for p in pool if p.load(now, self.cfg.redirect_memory) == least), key=lambda p: p.id)
        return self.ctx.rng.choice(best)

    async def _join(self, conn: _Conn, peer: Peer, msg: wire.Join) -> None:
        s = conn.stream
        if msg.content not in self.contents:
            if msg.flags & JoinFlag.SOURCE and self.cfg.allow_publish:
                self.contents[msg.content] = f"content {msg.content}"
                self.ctx.log.emit("published", content=msg.content, peer=peer.id, user=peer.user)
            else:
                self._bad(conn, f"JOIN of unknown content {msg.content}", "protocol")
                await s.send(wire.Error(wire.ErrorCode.UNKNOWN_CONTENT, msg.TYPE, f"no content {msg.content}"))
                return
        if msg.port != peer.port or peer.reach_port != msg.port:
            peer.port = msg.port
            await self._test_reach(peer)
        others = [p for p in self.members(msg.content)  # the overlay: peers, not local trackers
                  if p.id != peer.id and not p.contents[msg.content] & MemberFlag.TRACKER]
        flags = 0
        if msg.flags & JoinFlag.SOURCE:
            flags |= MemberFlag.SOURCE
        if msg.flags & JoinFlag.LOCAL_TRACKER:
            flags |= MemberFlag.TRACKER
        eligible = (self.cfg.deputy_threshold is not None and len(others) > self.cfg.deputy_threshold
                    and not msg.flags & (JoinFlag.NO_REDIRECT | JoinFlag.SOURCE | JoinFlag.LOCAL_TRACKER))
        deputy = None
        if eligible and self.ctx.rng.random() < self.cfg.redirect_fraction:
            deputy = self._deputy(peer, msg.content)
        peer.contents[msg.content] = flags  # registered either way (section 3.3.5: the tracker stores Charles)
        if deputy is not None:
            load = deputy.load(time.monotonic(), self.cfg.redirect_memory)
            deputy.redirected_to.append(time.monotonic())
            await s.send(wire.Redirect(msg.content, peer.reach, deputy.entry(msg.content)))
            self.ctx.log.emit("redirect", peer=peer.id, user=peer.user, content=msg.content, deputy=deputy.id,
                              deputy_user=deputy.user, deputy_load=load, members=len(others) + 1)
            answered = 0
        else:
            members = self._answer(peer, msg.content, msg.want)
            await s.send(wire.JoinOk(msg.content, peer.reach, members))
            answered = len(members)
        self.ctx.log.emit("join", peer=peer.id, user=peer.user, content=msg.content, src=conn.src, port=msg.port,
                          reachable=peer.reach.name.lower(), redirected=deputy is not None, answered=answered,
                          members=len(others) + 1, source=bool(flags & MemberFlag.SOURCE),
                          local_tracker=bool(flags & MemberFlag.TRACKER))

    async def _test_reach(self, peer: Peer) -> None:
        """Connect back to the peer's listening port: REACH_PROBE -> REACH_ACK with the same token."""
        port = peer.port
        if not port:
            peer.reach, peer.reach_port = Reach.UNTESTED, 0
            return
        if not self.cfg.reach_test:
            peer.reach, peer.reach_port = Reach.UNTESTED, port
            return
        token = self.ctx.rng.randbytes(wire.NONCE_SIZE)
        t0 = time.monotonic()
        ok, why = False, ""
        stream = None
        peer.testing = True
        try:
            async with asyncio.timeout(self.cfg.reach_timeout):
                stream = await FramedStream.connect(peer.ip, port, timeout=self.cfg.reach_timeout,
                                                    max_payload=wire.CONTROL_MAX)
                await stream.send(wire.ReachProbe(token))
                ans = await stream.recv()
                ok = isinstance(ans, wire.ReachAck) and ans.token == token
                why = "" if ok else f"answered {ans.TYPE.name if ans else 'nothing'}"
        except TimeoutError:
            why = "timeout"
        except OSError as exc:
            why = exc.strerror or str(exc) or type(exc).__name__
        finally:
            peer.testing = False
            if stream is not None:
                await stream.close()
        if peer.port == port:
            peer.reach, peer.reach_port = (Reach.YES if ok else Reach.NO), port
        self.ctx.log.emit("reach_test", peer=peer.id, user=peer.user, ip=peer.ip, port=port, reachable=ok,
                          ms=round((time.monotonic() - t0) * 1000, 1), why=why or None)

    async def expire(self) -> None:
        """Drop peers silent for ``member_timeout`` seconds (and peers with no content and no connection)."""
        while True:
            await asyncio.sleep(min(1.0, self.cfg.member_timeout / 4))
            now = time.monotonic()
            connected = {c.peer.id for c in self.conns if c.peer is not None}
            for peer in list(self.peers.values()):
                if now - peer.last_seen < self.cfg.member_timeout:
                    continue
                if peer.contents:
                    self.ctx.log.emit("member_timeout", peer=peer.id, user=peer.user, contents=sorted(peer.contents),
                                      idle_s=round(now - peer.last_seen, 2))
                    peer.contents.clear()
                if peer.id not in connected:
                    del self.peers[peer.id]

    async def stats(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.stats_interval)
            self.report_bytes()

    # -- local mode ---------------------------------------------------------------------------------------------
    async def upstream(self) -> None:
        """Register this local tracker's contents with the upstream tracker and keep the registration alive."""
        cfg = self.cfg
        assert cfg.upstream and cfg.upstream_user and cfg.upstream_secret
        host = self.ctx.resolve(cfg.upstream)
        while True:
            client = None
            try:
                client = await TrackerClient.connect(host, cfg.upstream_port, self.ctx.rng, retry_for=2.0)
                ok = await client.authenticate(cfg.upstream_user, cfg.upstream_secret)
                flags = JoinFlag.LOCAL_TRACKER | JoinFlag.NO_REDIRECT
                answers = {c: await client.join(c, cfg.port, 0, flags) for c in sorted(self.contents)}
                reach = {c: Reach(a.reachable).name.lower() for c, a in answers.items()}
                self.ctx.log.emit("upstream_registered", upstream=host, peer=ok.peer, contents=sorted(answers),
                                  reachable=reach.get(min(reach)) if reach else None)
                while True:
                    await asyncio.sleep(client.heartbeat_s)
                    local_members = sum(1 for p in self.peers.values() if p.contents)
                    await client.heartbeat(sorted(self.contents), cfg.port, local_members)
            except AuthRefused as exc:
                self.ctx.log.emit("upstream_lost", upstream=host, reason=str(exc))
                await asyncio.sleep(10.0)
            except (OSError, TimeoutError, TrackerError, ConnectionError) as exc:
                self.ctx.log.emit("upstream_lost", upstream=host, reason=str(exc) or type(exc).__name__)
                await asyncio.sleep(2.0)
            finally:
                if client is not None:
                    await client.close()


async def main(ctx: NodeContext, cfg: Config) -> int:
    tracker = Tracker(ctx, cfg)
    server = await asyncio.start_server(tracker.handle, cfg.bind, cfg.port, reuse_address=True)
    ctx.log.emit("tracker_ready", port=cfg.port, local=cfg.local, upstream=cfg.upstream,
                 contents=sorted(tracker.contents), users=len(tracker.users), deputy_threshold=cfg.deputy_threshold)
    tasks = [asyncio.ensure_future(tracker.expire()), asyncio.ensure_future(tracker.stats())]
    if cfg.local:
        tasks.append(asyncio.ensure_future(tracker.upstream()))
    if cfg.serve is not None:
        tasks.append(asyncio.ensure_future(serve_content(ctx, cfg, tracker)))
    try:
        async with server:
            await server.serve_forever()
    finally:
        for task in tasks:
            task.cancel()
        tracker.report_bytes()
    return 0


async def serve_content(ctx: NodeContext, cfg: Config, tracker: Tracker) -> None:
    """Run the ``serve`` peer or source in this process, registered with this tracker (a user of its own). Its
    ``args`` were completed when the tracker's were validated (nodes/tracker_config.py ServeParams); only the
    tracker fields are added here."""
    assert cfg.serve is not None
    from nodes import peer, source

    secret = ctx.rng.randbytes(16).hex()
    tracker.users[SERVE_USER] = secret
    host = cfg.bind if cfg.bind not in ("0.0.0.0", "") else ctx.hosts.get(ctx.node, "127.0.0.1")
    role_cfg = Args({**cfg.serve.args, "tracker": host, "tracker_port": cfg.port, "user": SERVE_USER,
                     "secret": secret}, "serve.args")
    seed = int.from_bytes(hashlib.sha256(f"{ctx.seed}/serve".encode()).digest()[:4], "big")  # its own stream
    inner = NodeContext(ctx.node, ctx.proc, ctx.role, seed, ctx.hosts, ctx.log)
    ctx.log.emit("tracker_serves", role=cfg.serve.role, tracker=host, port=getattr(role_cfg, "listen_port", None))
    try:
        if cfg.serve.role == "peer":
            code = await peer.main(inner, role_cfg)  # type: ignore[arg-type]
        else:
            code = await source.main(inner, role_cfg)  # type: ignore[arg-type]
        ctx.log.emit("tracker_serve_end", role=cfg.serve.role, code=code)
    except Exception as exc:  # noqa: BLE001 - the tracker goes on without its node
        ctx.log.emit("tracker_error", src="serve", error=f"{type(exc).__name__}: {exc}")


if __name__ == "__main__":
    run_role(main)
