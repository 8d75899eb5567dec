"""Role ``vod_server``: the DynaPeer VoD server -- catalogue, directory of peers, policy, and the streams it
sends itself (TCP unicast streams and patches, UDP multicast channels), paced at the play rate.

Per client session one TCP connection (the wire format of nodes/wire.py): the client sends VOD_PLAY, the
server asks the run's policy (:mod:`nodes.vod.policies`) and answers VOD_PLAN; its own parts go as CHUNK_RESP
frames on that connection, multicast channels as VOD_PIECE datagrams to the channel's group; peers that source
a channel are told so with a VOD_PULL (with the group) on their own session's connection. A client reports a
supplier that stopped with VOD_LOST and gets a VOD_PLAN with the cover (other free peers of the title first,
the server the rest); when a peer's connection drops (its process was killed) the server sends the stripes it
was multicasting itself (take-over). CHUNK_REQ on a session asks for one chunk again (repair of a lost
datagram); the answer counts in ``bytes_sent``, not as a stream.

Events: ``vod_ready``; ``session_open`` (session, video, client, multicast, policy, parts: where each part comes
from); ``stream_start`` (stream, kind = unicast | patch | multicast | cover, rate_bps, share, client, video,
first, end, channel) / ``stream_end``; ``bytes_sent`` every second; ``channel_open`` (channel, group, video,
sources); ``takeover`` (peer, channel, stripes, from_chunk); ``lost_report``; ``repair``; ``session_close``;
``bad_request`` for anything malformed or not allowed (the connection is closed after ``max_bad_frames``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from typing import Literal

from pydantic import BaseModel, Field

from nodes.runtime import NodeContext, run_role
from nodes.vod.content import Geometry, chunk_data, popcount
from nodes.vod.directory import Channel, Decision, Directory, Part, Peer, PolicyParams
from nodes.vod.mcast import sender_socket
from nodes.vod.policies import POLICIES, Request, peer_share, policy
from nodes.vod.senders import send_multicast, send_tcp
from nodes.wire import (
    ChunkReq,
    ChunkResp,
    Error,
    ErrorCode,
    FramedStream,
    Rejected,
    VodFlag,
    VodKind,
    VodLost,
    VodPlan,
    VodPlay,
    VodPull,
    VodSource,
    VodState,
    VodStatus,
)


class Config(BaseModel):
    """``vod_server`` args."""

    policy: Literal["unicast", "patching", "chaining", "promise", "pn2pm", "dynapeer_unicast",
                    "dynapeer_multicast", "dynapeer_helpers"] = "unicast"
    port: int = Field(default=7700, ge=1, le=65535)
    videos: list[int] = Field(min_length=1, description="content ids of the catalogue (title rank + 1)")
    length_s: float = Field(gt=0)
    rate_bps: int = Field(gt=0, description="play rate Pr")
    chunk_s: float = Field(default=0.5, gt=0)
    stripes: int = Field(default=16, ge=1, le=16)
    upload_bps: float = Field(gt=0, description="peers' upload O (DynaPeer, PROMISE)")
    buffer_s: float = Field(gt=0, description="peers' buffer B, seconds of video")
    patch_window_s: dict[int, float] = Field(default_factory=dict, description="per content id; default buffer_s")
    needy: list[int] = Field(default_factory=list, description="content ids whose VS needs helpers")
    extended_buffer: bool = True
    reserve_sources: bool = True
    partial_multicast: bool = True
    group_base: str = "239.77.0.0"
    mcast_port: int = Field(default=5800, ge=1, le=65535)
    ttl: int = Field(default=16, ge=1, le=255)
    stats_interval: float = Field(default=1.0, gt=0)
    max_bad_frames: int = Field(default=8, ge=1)
    first_message_timeout: float = Field(default=10.0, gt=0)


class Server:
    """The server's live state: directory, sessions' connections, running streams."""

    def __init__(self, ctx: NodeContext, cfg: Config) -> None:
        self.ctx, self.cfg = ctx, cfg
        self.g = Geometry(cfg.length_s, cfg.rate_bps, cfg.chunk_s, cfg.stripes)
        params = PolicyParams(self.g, cfg.upload_bps, cfg.buffer_s, dict(cfg.patch_window_s), cfg.extended_buffer,
                              cfg.reserve_sources, cfg.partial_multicast, frozenset(cfg.needy))
        self.dir = Directory(params, cfg.group_base, cfg.mcast_port)
        self.decide = policy(cfg.policy)
        self.share = peer_share(cfg.policy, params.c)
        self.videos = set(cfg.videos)
        self.conns: dict[int, FramedStream] = {}  # session -> its connection
        self.peer_of: dict[int, Peer] = {}  # session -> directory peer
        self.commits: dict[int, list[tuple[Channel, int]]] = {}  # peer key -> channel stripes it multicasts
        self.tasks: dict[int, set[asyncio.Task]] = {}  # session -> server streams for it
        self.stream_ids = itertools.count(1)
        self.sent = 0
        self.msock = sender_socket(cfg.ttl, ctx.hosts.get(ctx.node))
        self.background: set[asyncio.Task] = set()

    # -- accounting ------------------------------------------------------------------------------------------

    def on_sent(self, n: int) -> None:
        self.sent += n

    async def stats(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.stats_interval)
            self.flush_stats()

    def flush_stats(self) -> None:
        self.ctx.log.emit("bytes_sent", bytes=self.sent)
        self.sent = 0

    def spawn(self, coro, session: int | None = None) -> asyncio.Task:  # noqa: ANN001
        task = asyncio.ensure_future(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        if session is not None:
            self.tasks.setdefault(session, set()).add(task)
            task.add_done_callback(lambda t: self.tasks.get(session, set()).discard(t))
        return task

    async def stream(self, kind: str, session: int | None, part_first: int, part_end: int, mask: int, t0: float,
                     video: int, conn: FramedStream | None, channel: Channel | None = None) -> None:
        """One server stream: log start/end, send the share on ``conn`` or to the channel's group."""
        sid = next(self.stream_ids)
        share = popcount(mask) / self.g.stripes
        self.ctx.log.emit("stream_start", stream=sid, kind=kind, rate_bps=int(round(share * self.cfg.rate_bps)),
                          share=share, client=session, video=video, first=part_first, end=part_end,
                          channel=channel.key if channel else None)
        try:
            async def make(c: int) -> bytes:
                return chunk_data(video, c, self.g.chunk_bytes)

            if channel is not None:
                await send_multicast(self.msock, channel.group, channel.port, channel.key, video, self.g, part_first,
                                     part_end, mask, t0, make, self.on_sent)
            elif conn is not None:
                await send_tcp(conn, video, self.g, part_first, part_end, mask, t0, make, self.on_sent)
        except (ConnectionError, OSError):
            pass
        finally:
            self.ctx.log.emit("stream_end", stream=sid)

    # -- sessions --------------------------------------------------------------------------------------------

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        bad = 0
        src = "?"

        def on_reject(rej: Rejected) -> None:
            nonlocal bad
            bad += 1
            self.ctx.log.emit("bad_request", src=src, reason=rej.reason, kind="framing", bytes=rej.nbytes)

        conn = FramedStream(reader, writer, max_payload=1 << 16, on_reject=on_reject)
        src = f"{conn.peername[0]}:{conn.peername[1]}"
        session = None
        try:
            first = await conn.recv(timeout=self.cfg.first_message_timeout)
            if not isinstance(first, VodPlay):
                self.bad(src, "expected VOD_PLAY first", first)
                if first is not None:
                    await conn.send(Error(ErrorCode.UNEXPECTED, first.TYPE, "VOD_PLAY first"))
                return
            if first.video not in self.videos or first.session in self.conns:
                why = "unknown video" if first.video not in self.videos else "session already open"
                self.bad(src, why, first)
                await conn.send(Error(ErrorCode.UNKNOWN_CONTENT if first.video not in self.videos
                                      else ErrorCode.BAD_REQUEST, first.TYPE, why))
                return
            session = first.session
            self.conns[session] = conn
            await self.open_session(first, conn)
            while bad < self.cfg.max_bad_frames:
                msg = await conn.recv()
                if msg is None:
                    break
                if isinstance(msg, VodLost) and msg.session == session:
                    await self.on_lost(msg, conn)
                elif isinstance(msg, VodStatus) and msg.session == session:
                    peer = self.peer_of.get(session)
                    if peer is not None and msg.state == VodState.FINISHED:
                        peer.watching = False
                elif isinstance(msg, ChunkReq) and msg.content == first.video and msg.chunk < self.g.chunks:
                    data = chunk_data(msg.content, msg.chunk, self.g.chunk_bytes)
                    await conn.send(ChunkResp(msg.content, msg.chunk, data))
                    self.on_sent(len(data))
                    self.ctx.log.emit("repair", client=session, video=msg.content, chunk=msg.chunk)
                else:
                    bad += 1
                    self.bad(src, f"{msg.TYPE.name} not allowed here", msg)
                    await conn.send(Error(ErrorCode.UNEXPECTED, msg.TYPE, "not allowed on a VoD session"))
        except (TimeoutError, ConnectionError, OSError) as exc:
            if session is None:
                self.ctx.log.emit("bad_request", src=src, reason=f"no VOD_PLAY: {type(exc).__name__}", kind="protocol")
        except Exception as exc:  # noqa: BLE001 - one connection, never the process
            self.ctx.log.emit("vod_error", src=src, session=session, error=f"{type(exc).__name__}: {exc}")
        finally:
            if session is not None:
                self.close_session(session)
            await conn.close()

    def bad(self, src: str, reason: str, msg: object) -> None:
        self.ctx.log.emit("bad_request", src=src, reason=reason, kind="protocol",
                          type=getattr(getattr(msg, "TYPE", None), "name", None))

    async def open_session(self, play: VodPlay, conn: FramedStream) -> None:
        ip = conn.peername[0]
        req = Request(play.session, play.video, time.time(), ip, play.port, bool(play.flags & VodFlag.MULTICAST))
        dec: Decision = self.decide(self.dir, req)
        if dec.peer is not None:
            self.peer_of[play.session] = dec.peer
        if dec.new_channel is not None:
            self.start_channel(dec.new_channel)
        for helper, ch in dec.helpers:
            self.attach_helper(helper, ch)
        await conn.send(self.plan(play.session, play.video, dec.parts))
        for part in dec.parts:
            if part.kind == "server":
                kind = "unicast" if part.why == "stream" else part.why
                self.spawn(self.stream(kind, play.session, part.first, part.end, part.mask, part.t0, play.video, conn),
                           play.session)
        self.ctx.log.emit("session_open", session=play.session, video=play.video, client=ip,
                          multicast=req.multicast, policy=self.cfg.policy,
                          parts=[self.describe(p) for p in dec.parts],
                          server_share=dec.server_stripes(self.g.stripes) / self.g.stripes)

    def describe(self, p: Part) -> dict[str, object]:
        return {"kind": p.kind, "why": p.why, "first": p.first, "end": p.end, "stripes": popcount(p.mask),
                "peer": p.peer.session if p.peer else None, "channel": p.channel.key if p.channel else None}

    def plan(self, session: int, video: int, parts: list[Part]) -> VodPlan:
        sources = []
        for p in parts:
            if p.kind == "server":
                sources.append(VodSource(VodKind.SERVER, "0.0.0.0", 0, p.first, p.end, p.mask, int(p.t0 * 1e6), 0))
            elif p.kind == "multicast" and p.channel is not None:
                sources.append(VodSource(VodKind.MULTICAST, p.channel.group, p.channel.port, p.first, p.end, p.mask,
                                         int(p.t0 * 1e6), p.channel.key))
            elif p.peer is not None:
                sources.append(VodSource(VodKind.PEER, p.peer.ip, p.peer.port, p.first, p.end, p.mask,
                                         int(p.t0 * 1e6), p.peer.session))
        return VodPlan(session, video, self.g.chunks, self.g.chunk_ms, self.g.chunk_bytes, self.g.stripes,
                       tuple(sources))

    def start_channel(self, ch: Channel) -> None:
        self.ctx.log.emit("channel_open", channel=ch.key, group=ch.group, video=ch.video,
                          sources=[{"peer": p.session if p else None, "stripes": popcount(m)} for p, m in ch.sources])
        for peer, mask in ch.sources:
            if peer is None:
                self.spawn(self.stream("multicast", None, 0, self.g.chunks, mask, ch.t0, ch.video, None, ch))
                continue
            conn = self.conns.get(peer.session)
            if conn is None or not peer.alive:
                self.spawn(self.stream("cover", None, 0, self.g.chunks, mask, ch.t0, ch.video, None, ch))
                continue
            self.commits.setdefault(peer.key, []).append((ch, mask))
            conn.write(VodPull(peer.session, ch.video, peer.session, 0, self.g.chunks, self.g.stripes, mask,
                               int(ch.t0 * 1e6), ch.group, ch.port))

    def attach_helper(self, helper: Peer, ch: Channel) -> None:
        conn = self.conns.get(helper.session)
        if conn is None:
            return
        src = VodSource(VodKind.MULTICAST, ch.group, ch.port, 0, self.g.chunks, self.g.all_stripes,
                        int(ch.t0 * 1e6), ch.key)
        conn.write(VodPlan(helper.session, ch.video, self.g.chunks, self.g.chunk_ms, self.g.chunk_bytes,
                           self.g.stripes, (src,)))
        self.ctx.log.emit("helper_attach", peer=helper.session, video=ch.video, channel=ch.key)

    async def on_lost(self, msg: VodLost, conn: FramedStream) -> None:
        """Cover a lost supplier's share: other free eligible peers of the title first, the server the rest."""
        peer = self.peer_of.get(msg.session)
        video = peer.video if peer is not None else None
        t = time.time()
        end = min(msg.end, self.g.chunks)
        first = min(msg.first, end)
        self.ctx.log.emit("lost_report", client=msg.session, source=msg.tag, kind=VodKind(msg.kind).name.lower(),
                          first=first, end=end, stripes=popcount(msg.mask))
        if video is None or first >= end:
            return
        lost = self.peer_of.get(msg.tag)
        if lost is not None and msg.kind == VodKind.PEER:
            self.dir.gone(lost)
        t0 = t - first * self.g.chunk_s + 0.1  # the missing chunks are due now: send them at once
        parts = [Part("server", first, end, msg.mask, t0, why="cover")]
        if msg.kind == VodKind.PEER and self.cfg.policy not in ("unicast", "patching"):
            cands = [p for p in self.dir.title_peers(video, t, 1e9) if p.session not in (msg.session, msg.tag)]
            need = popcount(msg.mask)
            got, rest = self.dir.take(cands, t, t + (end - first) * self.g.chunk_s, need,
                                      lambda p: t - p.a <= p.w + 1e-6 and p.reserved < 0)
            taken = self.g.all_stripes & ~msg.mask
            parts = self.dir.parts_from(got, rest, first, end, t0, "cover", taken=taken)
        await conn.send(self.plan(msg.session, video, parts))
        for part in parts:
            if part.kind == "server":
                self.spawn(self.stream("cover", msg.session, part.first, part.end, part.mask, part.t0, video, conn),
                           msg.session)

    def close_session(self, session: int) -> None:
        """The session's connection is gone: forget it, stop its streams, take over what it multicast."""
        self.conns.pop(session, None)
        for task in list(self.tasks.pop(session, set())):
            task.cancel()
        peer = self.peer_of.get(session)
        self.ctx.log.emit("session_close", session=session)
        if peer is None:
            return
        self.dir.gone(peer)
        t = time.time()
        for ch, mask in self.commits.pop(peer.key, []):
            c = self.g.chunk_of(ch.t0, t)
            if c >= self.g.chunks:
                continue
            self.ctx.log.emit("takeover", peer=session, channel=ch.key, stripes=popcount(mask), from_chunk=c)
            self.spawn(self.stream("cover", None, c, self.g.chunks, mask, ch.t0, ch.video, None, ch))


async def main(ctx: NodeContext, cfg: Config) -> int:
    srv = Server(ctx, cfg)
    server = await asyncio.start_server(srv.handle, "0.0.0.0", cfg.port)
    ctx.log.emit("vod_ready", port=cfg.port, policy=cfg.policy, videos=cfg.videos, chunks=srv.g.chunks,
                 chunk_bytes=srv.g.chunk_bytes, stripes=cfg.stripes, policies=list(POLICIES), share=srv.share)
    stats = asyncio.ensure_future(srv.stats())
    try:
        async with server:
            await server.serve_forever()
    finally:
        stats.cancel()
        for task in list(srv.background):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*srv.background, return_exceptions=True)
        srv.flush_stats()
        srv.msock.close()
    return 0


if __name__ == "__main__":
    run_role(main, Config)
