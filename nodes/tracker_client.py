"""Client side of the tracker protocol (nodes/wire.py, docs/streaming-protocol.md), and the ``tracker_probe`` role.

Library, for peers, local trackers and tests::

    client = await TrackerClient.connect(ip, 6969, rng)
    ok = await client.authenticate("alice", "secret")      # AuthRefused if the tracker says no
    answer = await client.join(1, port=7100)                # JoinOk (members) or Redirect (a deputy)
    await client.heartbeat([1], port=7100)                  # MEMBERSHIP, every ok.heartbeat_ms
    members = await client.members(1)                       # MEMBERS_REQ -> MEMBERS_RESP
    await client.leave(1); await client.close()

The client proves it knows the secret with HMAC-SHA256 over both nonces (the secret never travels) and checks
the tracker's own proof in AUTH_OK, so it also knows it talks to a tracker that has the secret.
:func:`answer_reach_probe` is what a peer's listening socket does with the tracker's connect-back test, and
:func:`ask_members` asks a deputy (any member) for members, as a redirected peer does (section 3.3.5).

Role ``tracker_probe``: authenticates with the given credentials, joins a content, logs the answer as
``tracker_answer`` (``outcome`` = ``members`` with the member list, ``redirect`` with the deputy, ``refused``
with the reason, ``error``, or ``unreachable``), follows a redirect (``deputy_answer``), optionally stays a
member for ``stay`` seconds (heartbeats, answers the tracker's connect-back test and members requests on
``listen_port``, so it can act as a deputy), leaves and exits. Exit status: 0 when the tracker answered (and the
answer is ``expect``-ed), 1 when it could not be reached, 4 when the answer is not the expected one.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import TYPE_CHECKING

from nodes import wire
from nodes.runtime import NodeContext, run_role
from nodes.wire import FramedStream, MemberEntry, MemberFlag, Message

if TYPE_CHECKING:
    from nodes.tracker_probe_config import Config


class TrackerError(Exception):
    """The tracker answered with ERROR, answered something unexpected, or went away."""


class AuthRefused(TrackerError):
    """AUTH_FAIL: the tracker refused the credentials."""

    def __init__(self, code: int, reason: str):
        super().__init__(f"refused ({wire.AuthFailCode(code).name.lower()}): {reason}")
        self.code = code
        self.reason = reason


async def expect(stream: FramedStream, *types: type[Message], timeout: float = 5.0) -> Message:
    """The next message, which must be one of ``types`` (an ERROR raises TrackerError)."""
    try:
        msg = await stream.recv(timeout)
    except TimeoutError:
        raise TrackerError(f"no answer within {timeout:g} s (waiting for "
                           f"{', '.join(t.TYPE.name for t in types)})") from None
    if msg is None:
        raise TrackerError("connection closed by the other side")
    if isinstance(msg, wire.AuthFail) and wire.AuthFail not in types:
        raise AuthRefused(msg.code, msg.reason)
    if isinstance(msg, wire.Error) and wire.Error not in types:
        raise TrackerError(f"error {wire.ErrorCode(msg.code).name}: {msg.reason}")  # codes are checked on decode
    if not isinstance(msg, types):
        raise TrackerError(f"unexpected {msg.TYPE.name}")
    return msg


class TrackerClient:
    """One authenticated session with a tracker over one TCP connection."""

    def __init__(self, stream: FramedStream, rng: random.Random, timeout: float = 5.0):
        self.stream = stream
        self.rng = rng
        self.timeout = timeout
        self.peer: int | None = None
        self.observed: tuple[str, int] | None = None  # our address as the tracker sees it
        self.heartbeat_s = 5.0
        self.seq = 0
        self._lock = asyncio.Lock()  # one request/answer at a time

    @classmethod
    async def connect(cls, host: str, port: int, rng: random.Random, *, timeout: float = 5.0,
                      retry_for: float = 0.0) -> TrackerClient:
        """Open a connection; keep retrying for ``retry_for`` seconds (the tracker may still be starting)."""
        deadline = time.monotonic() + retry_for
        while True:
            try:
                stream = await FramedStream.connect(host, port, timeout=timeout)
                return cls(stream, rng, timeout)
            except (OSError, TimeoutError):
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(0.25)

    @property
    def counters(self) -> wire.ByteCounters:
        return self.stream.counters

    async def authenticate(self, user: str, secret: str) -> wire.AuthOk:
        """HELLO -> CHALLENGE -> AUTH -> AUTH_OK (AuthRefused on AUTH_FAIL; TrackerError if the tracker's proof
        is wrong)."""
        async with self._lock:
            nonce = self.rng.randbytes(wire.NONCE_SIZE)
            await self.stream.send(wire.Hello(user, nonce))
            ch = await expect(self.stream, wire.Challenge, timeout=self.timeout)
            assert isinstance(ch, wire.Challenge)
            await self.stream.send(wire.Auth(wire.client_proof(secret, user, ch.nonce, nonce)))
            ok = await expect(self.stream, wire.AuthOk, timeout=self.timeout)
            assert isinstance(ok, wire.AuthOk)
            if ok.proof != wire.server_proof(secret, user, ch.nonce, nonce):
                raise TrackerError("the tracker's proof is wrong: it does not know our secret")
            self.peer, self.observed, self.heartbeat_s = ok.peer, (ok.ip, ok.port), ok.heartbeat_ms / 1000
            return ok

    async def join(self, content: int, port: int = 0, want: int = 20,
                   flags: int = 0) -> wire.JoinOk | wire.Redirect:
        async with self._lock:
            await self.stream.send(wire.Join(content, port, want, flags))
            ans = await expect(self.stream, wire.JoinOk, wire.Redirect, timeout=self.timeout + 2.0)
            assert isinstance(ans, wire.JoinOk | wire.Redirect)
            return ans

    async def members(self, content: int, want: int = 20) -> tuple[MemberEntry, ...]:
        async with self._lock:
            await self.stream.send(wire.MembersReq(content, want))
            ans = await expect(self.stream, wire.MembersResp, timeout=self.timeout)
            assert isinstance(ans, wire.MembersResp)
            return ans.members

    async def contents(self, word: str = "") -> tuple[wire.ContentEntry, ...]:
        async with self._lock:
            await self.stream.send(wire.ContentsReq(word))
            ans = await expect(self.stream, wire.ContentsResp, timeout=self.timeout)
            assert isinstance(ans, wire.ContentsResp)
            return ans.contents

    def membership(self, contents: list[int], port: int = 0, partners: int = 0, ttl: int = 30) -> wire.Membership:
        """Our next MEMBERSHIP message (sequence number incremented)."""
        if self.peer is None or self.observed is None:
            raise TrackerError("not authenticated")
        self.seq += 1
        return wire.Membership(self.peer, self.observed[0], port, self.seq & wire.U32, max(1, min(ttl, 0xFFFF)),
                               partners, tuple(contents))

    async def heartbeat(self, contents: list[int], port: int = 0, partners: int = 0) -> None:
        """A MEMBERSHIP to the tracker: keeps our membership of ``contents`` alive (no answer)."""
        async with self._lock:
            ttl = int(self.heartbeat_s * 3) + 1
            await self.stream.send(self.membership(contents, port, partners, ttl))

    async def leave(self, content: int = 0) -> None:
        async with self._lock:
            await self.stream.send(wire.Leave(content))

    async def close(self) -> None:
        await self.stream.close()


async def answer_reach_probe(stream: FramedStream, msg: wire.ReachProbe) -> None:
    """What a peer's listener answers to the tracker's connect-back test."""
    await stream.send(wire.ReachAck(msg.token))


async def ask_members(host: str, port: int, content: int, hello: wire.Membership | None = None, want: int = 20,
                      timeout: float = 5.0) -> tuple[MemberEntry, ...]:
    """Ask a member (a deputy) for members of ``content``: optional MEMBERSHIP first (who we are), then
    MEMBERS_REQ -> MEMBERS_RESP."""
    stream = await FramedStream.connect(host, port, timeout=timeout)
    try:
        if hello is not None:
            stream.write(hello)
        await stream.send(wire.MembersReq(content, want))
        ans = await expect(stream, wire.MembersResp, timeout=timeout)
        assert isinstance(ans, wire.MembersResp)
        return ans.members
    finally:
        await stream.close()


# -- role tracker_probe -----------------------------------------------------------------------------------------


class _Probe:
    """The probe's own small member cache and listener (enough to act as a deputy)."""

    def __init__(self, ctx: NodeContext, cfg: Config):
        self.ctx, self.cfg = ctx, cfg
        self.known: dict[int, MemberEntry] = {}
        self.me: MemberEntry | None = None

    def learn(self, members: tuple[MemberEntry, ...]) -> None:
        for m in members:
            if self.me is None or m.peer != self.me.peer:
                self.known[m.peer] = m

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stream = FramedStream(reader, writer, max_payload=wire.CONTROL_MAX)
        asker: int | None = None
        try:
            while True:
                msg = await stream.recv(timeout=10.0)
                if msg is None:
                    break
                if isinstance(msg, wire.ReachProbe):
                    await answer_reach_probe(stream, msg)
                    self.ctx.log.emit("reach_probe_answered", src=stream.peername[0])
                elif isinstance(msg, wire.Membership):
                    asker = msg.peer
                elif isinstance(msg, wire.MembersReq):
                    if msg.content != self.cfg.content:
                        await stream.send(wire.Error(wire.ErrorCode.UNKNOWN_CONTENT, msg.TYPE, "not here"))
                        continue
                    listed = [m for m in self.known.values() if m.peer != asker]
                    if self.me is not None:
                        listed.insert(0, self.me)
                    members = tuple(listed[:msg.want])
                    await stream.send(wire.MembersResp(msg.content, members))
                    self.ctx.log.emit("members_served", to_peer=asker, src=stream.peername[0],
                                      members=[m.peer for m in members])
                else:
                    await stream.send(wire.Error(wire.ErrorCode.UNSUPPORTED, msg.TYPE, "probe"))
        except (TimeoutError, OSError, ConnectionError):
            pass
        finally:
            await stream.close()


async def main(ctx: NodeContext, cfg: Config) -> int:
    probe = _Probe(ctx, cfg)
    server = None
    if cfg.listen_port:
        server = await asyncio.start_server(probe.serve, "0.0.0.0", cfg.listen_port)
        ctx.log.emit("probe_listen", port=cfg.listen_port)
    host = ctx.resolve(cfg.tracker)
    client: TrackerClient | None = None
    try:
        try:
            client = await TrackerClient.connect(host, cfg.port, ctx.rng, timeout=cfg.timeout,
                                                 retry_for=cfg.connect_for)
        except (OSError, TimeoutError) as exc:
            ctx.log.emit("tracker_answer", outcome="unreachable", tracker=host, reason=str(exc) or type(exc).__name__)
            return 1
        outcome, code = await _session(ctx, cfg, probe, client)
        if cfg.expect != "any" and outcome != cfg.expect:
            ctx.log.emit("probe_unexpected", outcome=outcome, expected=cfg.expect)
            return 4
        return code
    finally:
        if client is not None:
            ctx.log.emit("control_bytes", **client.counters.as_dict())
            await client.close()
        if server is not None:
            server.close()


async def _session(ctx: NodeContext, cfg: Config, probe: _Probe, client: TrackerClient) -> tuple[str, int]:
    """Authenticate, join, log the answer, follow a redirect, stay; (outcome, exit status)."""
    try:
        ok = await client.authenticate(cfg.user, cfg.secret)
    except AuthRefused as exc:
        ctx.log.emit("tracker_answer", outcome="refused", user=cfg.user, code=exc.code, reason=exc.reason)
        return "refused", 0
    except TrackerError as exc:
        ctx.log.emit("tracker_answer", outcome="error", stage="auth", reason=str(exc))
        return "error", 1
    ctx.log.emit("auth_ok", peer=ok.peer, observed=[ok.ip, ok.port], heartbeat_ms=ok.heartbeat_ms)
    flags = (wire.JoinFlag.SOURCE | wire.JoinFlag.NO_REDIRECT) if cfg.source else 0
    if not cfg.redirect:
        flags |= wire.JoinFlag.NO_REDIRECT
    try:
        ans = await client.join(cfg.content, cfg.listen_port, cfg.want, flags)
    except TrackerError as exc:
        ctx.log.emit("tracker_answer", outcome="error", stage="join", reason=str(exc))
        return "error", 1
    reachable = ans.reachable == wire.Reach.YES
    if cfg.listen_port:
        probe.me = MemberEntry(ok.peer, ok.ip, cfg.listen_port, MemberFlag.REACHABLE if reachable else 0)
    if isinstance(ans, wire.Redirect):
        outcome = "redirect"
        ctx.log.emit("tracker_answer", outcome=outcome, peer=ok.peer, content=cfg.content,
                     reachable=wire.Reach(ans.reachable).name.lower(), deputy=ans.deputy.fields())
        if cfg.follow_redirect:
            try:
                members = await ask_members(ans.deputy.ip, ans.deputy.port, cfg.content,
                                            client.membership([cfg.content], cfg.listen_port), cfg.want, cfg.timeout)
                probe.learn(members)
                ctx.log.emit("deputy_answer", deputy=ans.deputy.peer, members=[m.fields() for m in members])
            except (OSError, TimeoutError, TrackerError) as exc:
                ctx.log.emit("deputy_answer", deputy=ans.deputy.peer, error=str(exc) or type(exc).__name__)
    else:
        outcome = "members"
        probe.learn(ans.members)
        ctx.log.emit("tracker_answer", outcome=outcome, peer=ok.peer, content=cfg.content,
                     reachable=wire.Reach(ans.reachable).name.lower(), members=[m.fields() for m in ans.members])
    if cfg.stay > 0:
        await _stay(ctx, cfg, probe, client)
    if cfg.leave:
        with contextlib.suppress(OSError, ConnectionError):
            await client.leave(cfg.content)
            ctx.log.emit("left", content=cfg.content)
    return outcome, 0


async def _stay(ctx: NodeContext, cfg: Config, probe: _Probe, client: TrackerClient) -> None:
    """Heartbeat and refresh the member cache until ``stay`` seconds have passed."""
    end = time.monotonic() + cfg.stay
    while (left := end - time.monotonic()) > 0:
        await asyncio.sleep(min(client.heartbeat_s, left))
        try:
            await client.heartbeat([cfg.content], cfg.listen_port)
            probe.learn(await client.members(cfg.content, cfg.want))
        except (OSError, ConnectionError, TrackerError) as exc:
            ctx.log.emit("tracker_lost", reason=str(exc) or type(exc).__name__)
            return


if __name__ == "__main__":
    run_role(main)
