"""One client session of ``vod_client``: ask the server, fetch every part of the plan, play, stay a peer.

The session opens a TCP connection to the server (VOD_PLAY), receives its VOD_PLAN and fetches each part:
the server's parts arrive on that connection, multicast parts by joining the channel's group, peer parts by
asking the supplier (VOD_PULL on a TCP connection to its listener). A supplier that closes its connection, sends
ERROR or stays silent for ``peer_timeout_s`` past a due chunk is reported to the server (VOD_LOST) with what is
still missing, and the server's answer (another VOD_PLAN) is fetched the same way. A chunk from a multicast
channel that is still missing ``repair_lead_s`` before its deadline is asked again from the server
(CHUNK_REQ). Every chunk is checked against its content (:func:`nodes.vod.content.chunk_ok`).

After playback the connection stays open (the session is a peer until the process ends); on it the server may
send VOD_PULL with a group (source a multicast channel from this session's store) or a VOD_PLAN for another
video (a helper: join that channel and store it, for later VOD_PULLs).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from nodes.vod.content import Geometry, chunk_ok, share_chunks
from nodes.vod.mcast import ChannelReceiver, join_channel
from nodes.vod.player import Player
from nodes.vod.store import ChunkStore
from nodes.wire import (
    ChunkReq,
    ChunkResp,
    Error,
    FramedStream,
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

Emit = Callable[..., None]
KIND_WORD = {VodKind.SERVER: "server", VodKind.MULTICAST: "multicast", VodKind.PEER: "peer"}


@dataclass
class SessionOptions:
    server: str
    port: int
    listen_port: int
    multicast: bool
    prebuffer_s: float = 2.0
    peer_timeout_s: float = 2.0
    repair_lead_s: float = 0.8
    connect_timeout_s: float = 10.0


@dataclass
class Held:
    """A video a session holds (its own, or one it helps with as a helper)."""

    video: int
    store: ChunkStore = field(default_factory=ChunkStore)
    geometry: Geometry | None = None


class ClientSession:
    """One request: ``run()`` plays it; afterwards the object stays registered as a supplier."""

    def __init__(self, session: int, video: int, opts: SessionOptions, emit: Emit,
                 on_serve: Callable[[ClientSession, VodPull, Held], None]) -> None:
        self.session, self.video, self.opts, self.emit = session, video, opts, emit
        self.on_serve = on_serve
        self.held: dict[int, Held] = {video: Held(video)}
        self.conn: FramedStream | None = None
        self.g: Geometry | None = None
        self.source_of: dict[int, tuple[str, int]] = {}  # chunk -> (kind word, tag) as planned
        self.receivers: list[ChannelReceiver] = []
        self.tasks: set[asyncio.Task] = set()
        self.plan_ready = asyncio.Event()
        self.repaired: set[int] = set()
        self.rejected = 0

    def spawn(self, coro) -> asyncio.Task:  # noqa: ANN001
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    @property
    def store(self) -> ChunkStore:
        return self.held[self.video].store

    # -- receiving ----------------------------------------------------------------------------------------------

    def accept(self, video: int, chunk: int, data: bytes, kind: str, sender: str | None) -> None:
        held = self.held.get(video)
        if held is None or held.geometry is None:
            return
        if not chunk_ok(video, chunk, data, held.geometry.chunk_bytes):
            self.rejected += 1
            self.emit("bad_chunk", chunk=chunk, video=video, source=kind, **{"from": sender})
            return
        if held.store.put(chunk, data) and video == self.video:
            self.emit("chunk_recv", chunk=chunk, bytes=len(data), source=kind, **{"from": sender})

    async def run(self) -> None:
        """Open the session, play it, report the end; keep serving the server's requests afterwards."""
        o = self.opts
        self.emit("play_request", stream=self.video)
        try:
            self.conn = await FramedStream.connect(o.server, o.port, timeout=o.connect_timeout_s)
            await self.conn.send(VodPlay(self.session, self.video, o.listen_port,
                                         VodFlag.MULTICAST if o.multicast else 0))
        except (OSError, TimeoutError) as exc:
            self.emit("playback_end", stream=self.video, reason=f"server unreachable: {exc}")
            return
        self.spawn(self.control_loop())
        try:
            await asyncio.wait_for(self.plan_ready.wait(), o.connect_timeout_s)
        except TimeoutError:
            self.emit("playback_end", stream=self.video, reason="no plan")
            return
        assert self.g is not None
        player = Player(self.emit, self.store, self.g, self.video, o.prebuffer_s, repair_lead_s=o.repair_lead_s,
                        on_missing=self.missing)
        await player.run()
        with contextlib.suppress(OSError, ConnectionError):
            await self.conn.send(VodStatus(self.session, VodState.FINISHED))

    async def control_loop(self) -> None:
        assert self.conn is not None
        while True:
            try:
                msg = await self.conn.recv()
            except (OSError, ConnectionError):
                msg = None
            if msg is None:
                self.emit("server_lost", session=self.session)
                return
            if isinstance(msg, ChunkResp):
                self.accept(msg.content, msg.chunk, msg.data, "server", self.opts.server)
            elif isinstance(msg, VodPlan) and msg.session == self.session:
                await self.apply(msg)
            elif isinstance(msg, VodPull) and msg.supplier == self.session and msg.video in self.held:
                self.on_serve(self, msg, self.held[msg.video])
            elif isinstance(msg, Error):
                self.emit("server_error", code=msg.code, reason=msg.reason)
            else:
                self.emit("bad_message", source="server", type=msg.TYPE.name)

    async def apply(self, plan: VodPlan) -> None:
        g = Geometry(plan.chunks * plan.chunk_ms / 1000, int(plan.chunk_bytes * 8 * 1000 / plan.chunk_ms),
                     plan.chunk_ms / 1000, plan.stripes)
        helper = plan.video != self.video
        held = self.held.setdefault(plan.video, Held(plan.video))
        held.geometry = _fixed(g, plan.chunk_bytes)
        if not helper:
            self.g = held.geometry
        self.emit("plan", video=plan.video, helper=helper,
                  sources=[{"kind": KIND_WORD[VodKind(s.kind)], "tag": s.tag, "first": s.first, "end": s.end,
                            "stripes": bin(s.mask).count("1")} for s in plan.sources])
        for s in plan.sources:
            if not helper:
                for c in share_chunks(s.first, s.end, s.mask, plan.stripes):
                    self.source_of[c] = (KIND_WORD[VodKind(s.kind)], s.tag)
            if s.kind == VodKind.MULTICAST:
                await self.join(plan.video, s)
            elif s.kind == VodKind.PEER and not helper:
                self.spawn(self.pull(s))
        if not helper:
            self.plan_ready.set()

    async def join(self, video: int, s: VodSource) -> None:
        def got(chunk: int, data: bytes) -> None:
            if s.first <= chunk < s.end:
                self.accept(video, chunk, data, "multicast", s.ip)

        try:
            rx = await join_channel(s.ip, s.port, video, got)
        except OSError as exc:
            self.emit("join_failed", group=s.ip, error=str(exc))
            await self.report(s, s.first)
            return
        self.receivers.append(rx)
        self.emit("group_join", group=s.ip, channel=s.tag, video=video)

    # -- suppliers ----------------------------------------------------------------------------------------------

    async def pull(self, s: VodSource) -> None:
        """Fetch a peer's share; report it lost if it fails."""
        assert self.g is not None
        g = self.g
        want = [c for c in share_chunks(s.first, s.end, s.mask, g.stripes)]
        t0 = s.t0_us / 1e6
        conn: FramedStream | None = None
        try:
            conn = await FramedStream.connect(s.ip, s.port, timeout=3.0, max_payload=1 << 22)
            await conn.send(VodPull(self.session, self.video, s.tag, s.first, s.end, g.stripes, s.mask, s.t0_us))
            pending = [c for c in want if not self.store.has(c)]
            while pending:
                limit = t0 + pending[0] * g.chunk_s + self.opts.peer_timeout_s - time.time()
                msg = await conn.recv(timeout=max(0.2, limit))
                if msg is None or isinstance(msg, Error):
                    break
                if isinstance(msg, ChunkResp) and msg.content == self.video:
                    self.accept(msg.content, msg.chunk, msg.data, "peer", s.ip)
                pending = [c for c in pending if not self.store.has(c)]
        except (OSError, TimeoutError, ConnectionError):
            pass
        finally:
            if conn is not None:
                await conn.close()
        missing = [c for c in want if not self.store.has(c)]
        if missing:
            self.emit("source_lost", kind="peer", tag=s.tag, ip=s.ip, first=missing[0], missing=len(missing))
            await self.report(s, missing[0])

    async def report(self, s: VodSource, first: int) -> None:
        if self.conn is None:
            return
        with contextlib.suppress(OSError, ConnectionError):
            await self.conn.send(VodLost(self.session, s.tag, s.kind, first, s.end, s.mask))

    def missing(self, chunk: int, urgent: bool) -> None:
        """The player misses ``chunk`` close to (or past) its deadline: ask the server again if it was to come
        by multicast, or if playback is stalled on it."""
        kind = self.source_of.get(chunk, ("?", 0))[0]
        if chunk in self.repaired or self.conn is None or (kind != "multicast" and not urgent):
            return
        self.repaired.add(chunk)
        self.emit("repair_request", chunk=chunk, planned=kind, urgent=urgent)
        with contextlib.suppress(OSError, ConnectionError):
            self.conn.write(ChunkReq(self.video, chunk))

    async def close(self) -> None:
        for rx in self.receivers:
            rx.close()
        for task in list(self.tasks):
            task.cancel()
        if self.conn is not None:
            await self.conn.close()


def _fixed(g: Geometry, chunk_bytes: int) -> Geometry:
    """The plan's geometry with the rate that gives exactly its chunk size."""
    return Geometry(g.length_s, int(round(chunk_bytes * 8 / g.chunk_s)), g.chunk_s, g.stripes)
