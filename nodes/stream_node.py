"""What a streaming peer and a source have in common: listening, connections, partnerships, buffer maps,
membership gossip, serving chunks, integrity checks and traffic accounting (roles ``peer`` and ``source`` build on
:class:`StreamNode`; the tracker can run one in its own process).

Message handling on a connection (the document's messages, 3.3.4), whoever opened it:

- REACH_PROBE (the tracker's NAT test) -> REACH_ACK; MEMBERS_REQ -> MEMBERS_RESP with this node first (it acts as
  the tracker's deputy, 3.3.5); CONTENTS_REQ -> the contents it carries matching the word (search engine,
  3.3.2.6); CONTENT_INFO_REQ -> the source's signed description of the content, if known;
- MEMBERSHIP -> mCache; a new one (newer sequence number) is forwarded to ``gossip_fanout`` other partners;
- PARTNERSHIP_REQ / RESP / REMOVE -> the overlay's partnership rules (nodes/overlay.py);
- BUFFER_MAP (partners only) -> the partner's availability, for the data scheduler;
- CHUNK_REQ (partners only) -> queued for the uploader; ERROR no-such-chunk (reason ``chunk <id>``) when the chunk
  is not held, ERROR busy beyond ``max_queue`` queued requests;
- CHUNK_RESP (partners only) -> with a content key, the source's HMAC signature is checked first: a chunk that
  fails is rejected (``chunk_rejected``), never stored or forwarded, and its sender is dropped (``partner_drop``
  reason ``corrupt``) and banned for ``ban_for`` seconds.

Anything malformed or out of place is logged (``bad_frame``, at most ``max_bad_frames`` per connection, then the
connection is closed) and never stops the node; an unexpected exception costs one connection (``node_error``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import itertools
import math
import re
import socket
import struct
import termios
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from nodes import wire
from nodes.chunk_buffer import Chunk, FileBuffer, LiveBuffer
from nodes.hybrid import MainsView, Scope
from nodes.overlay import Overlay
from nodes.peer_link import Link, Queued
from nodes.runtime import NodeContext
from nodes.wire import ErrorCode, FramedStream, JoinFlag, MsgType, PartnerReason

if TYPE_CHECKING:
    from nodes.stream_config import StreamParams

CHUNK_REASON = re.compile(r"chunk (\d{1,10})")


def _libc() -> Any:
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


class StreamNode:
    """The shared engine of a streaming node; subclasses add the data side (peer) or production (source)."""

    role_label = "node"

    def __init__(self, ctx: NodeContext, cfg: StreamParams):
        self.ctx, self.cfg = ctx, cfg
        self.key = cfg.key.encode() if cfg.key else None
        self.info: wire.ContentInfo | None = None
        self.buffer: LiveBuffer | FileBuffer | None = None
        self.links: set[Link] = set()
        self.totals = wire.ByteCounters()  # counters of closed connections
        self._reported = wire.ByteCounters()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.stop = asyncio.Event()
        self.exit_code = 0
        self.stop_reason = "stopped"
        self.leaving = False
        self.names = {ip: name for name, ip in ctx.hosts.items()}
        self.mains: MainsView | None = None
        self.scope = Scope(cfg.hybrid.scope) if cfg.hybrid else Scope()
        self.overlays = self._overlays()
        self.rejected_chunks = 0
        self.dup_chunks = 0
        self.searched = False  # a search (CONTENTS_REQ) found something
        self.server: asyncio.base_events.Server | None = None
        self._libc: Any = None
        self.up_rate: float | None = None  # measured upload rate (bytes/s) while chunks were waiting to go
        self._backlogged = False
        self._up_mark: tuple[float, int] | None = None  # (time, bytes sent) at the last measurement
        self.busy_refusals = 0
        self.expired_requests = 0
        self.late_refusals = 0  # chunk requests refused or dropped because the chunk could not arrive in time
        self.bm_dirty = False  # chunks arrived since the last buffer map
        self.up_wake = asyncio.Event()  # serial_upload: a chunk request was queued
        self._arrivals = itertools.count()  # order of the chunk requests queued on all connections

    # -- hooks for subclasses ---------------------------------------------------------------------------------
    def join_flags(self) -> int:
        return 0

    def partner_target(self, overlay: Overlay) -> int:
        if overlay.side == "adhoc" and self.cfg.hybrid is not None and self.cfg.hybrid.role == "main":
            return self.cfg.hybrid.local_partners
        return self.cfg.partners

    def accepts_partners(self) -> bool:
        return True

    def refuses_partner(self, peer: int, now: float) -> bool:
        """A role's reason not to take this member (back) as a partner now (default: none)."""
        return False

    def on_partner_added(self, link: Link) -> None:
        """A partnership started."""

    def on_partner_removed(self, link: Link) -> None:
        """A partnership ended."""

    def on_chunk(self, link: Link, msg: wire.ChunkResp) -> None:
        """A verified chunk from a partner."""
        self.bad(link, "CHUNK_RESP to a node that does not request chunks", "protocol")

    def on_refused(self, link: Link, chunk: int) -> None:
        """A partner answered a chunk request with ERROR no-such-chunk or busy."""

    def on_buffer_map(self, link: Link) -> None:
        """A partner's buffer map arrived."""

    def set_info(self, info: wire.ContentInfo, link: Link | None) -> None:
        """The content's description arrived (verified)."""
        if self.info is None:
            self.info = info

    def chunk_data(self, chunk: Chunk) -> bytes | None:
        """The data to send for ``chunk`` (None = as stored)."""
        return None

    def on_chunk_sent(self, link: Link, chunk: Chunk, nbytes: int) -> None:
        """A chunk went out to a partner."""

    def refuse_chunk(self, link: Link, chunk: int) -> bool:
        """Answer ERROR busy to a request for a chunk this node holds (a role's upload policy; default: never)."""
        return False

    def upload_busy(self) -> bool:
        """Chunks are waiting to go out: queued requests, or chunk bytes not yet taken by the kernel."""
        for lk in self.links:
            if lk.queue:
                return True
            transport = lk.stream.writer.transport
            if transport is not None and transport.get_write_buffer_size() > 0:
                return True
        return False

    def share_changed(self, overlay: Overlay) -> None:
        if self.mains is not None:
            i, k = self.mains.share
            self.ctx.log.emit("hybrid_share", i=i, k=k, mains=self.mains.mains(), me=self.mains.me)

    def tick(self, now: float) -> None:
        """Once per member scheduler round."""

    def extra_traffic(self) -> dict[str, Any]:
        return {}

    async def finish(self) -> None:
        """Last words before the connections close (end of playback, final counters)."""

    def tasks(self) -> list[Coroutine[Any, Any, None]]:
        return []

    # -- set-up -----------------------------------------------------------------------------------------------
    def _overlays(self) -> list[Overlay]:
        cfg, h = self.cfg, self.cfg.hybrid
        common = {"tracker": cfg.tracker, "port": cfg.tracker_port, "user": cfg.user, "secret": cfg.secret,
                  "join_flags": self.join_flags()}
        if h is None:
            return [Overlay(self, "internet", **common)]
        if h.role == "local":
            return [Overlay(self, "adhoc", scope=self.scope, servers=False, **common)]
        self.mains = MainsView()
        assert h.local_tracker and h.local_user and h.local_secret
        return [Overlay(self, "internet", exclude_scope=self.scope, **common),
                Overlay(self, "adhoc", tracker=h.local_tracker, port=h.local_port, user=h.local_user,
                        secret=h.local_secret, join_flags=JoinFlag.SOURCE | JoinFlag.NO_REDIRECT, scope=self.scope,
                        mains=self.mains, servers=False, bind=h.bind)]

    def overlay_for(self, ip: str) -> Overlay | None:
        """Which overlay an inbound connection from ``ip`` belongs to (None: outside a local node's scope)."""
        if len(self.overlays) == 2:
            return self.overlays[1] if ip in self.scope else self.overlays[0]
        ov = self.overlays[0]
        return ov if ip in ov.scope else None

    def name_of(self, ip: str) -> str:
        return self.names.get(ip, ip)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        """A background task ended: a bug in it is logged (``node_error``), not left to asyncio's stderr note."""
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        self.ctx.log.emit("node_error", where=getattr(task.get_coro(), "__qualname__", "?"),
                          error=f"{type(exc).__name__}: {exc}")

    def fail(self, code: int) -> None:
        self.exit_code = code
        self.stop_reason = "failed"
        self.stop.set()

    def joined(self, overlay: Overlay) -> None:
        """The overlay's tracker answered: run the member scheduler at once."""
        overlay.tick(time.time())

    # -- main -------------------------------------------------------------------------------------------------
    async def run(self) -> int:
        cfg = self.cfg
        self.server = await asyncio.start_server(self._inbound, cfg.bind, cfg.listen_port, reuse_address=True)
        loops = [self._every(cfg.member_interval, self._member_round), self._every(cfg.bm_interval, self._send_maps),
                 self._every(cfg.membership_interval, self._announce),
                 self._every(cfg.traffic_interval, self._traffic), self._every(30.0, self._trim_heap),
                 self._every(1.0, self._measure_upload)]
        if cfg.bm_push:
            loops.append(self._every(cfg.bm_push, self._push_maps))
        if cfg.serial_upload:
            loops.append(self._upload_loop())
        for coro in [ov.tracker_loop() for ov in self.overlays] + loops + self.tasks():
            self.spawn(coro)
        try:
            await self.stop.wait()
        finally:
            await self._shutdown()
        return self.exit_code

    async def _every(self, period: float, fn: Any) -> None:
        while True:
            await asyncio.sleep(period)
            try:
                fn(time.time())
            except Exception as exc:  # noqa: BLE001 - a bug in one round must not stop the node
                self.ctx.log.emit("node_error", where=getattr(fn, "__name__", "?"), error=f"{type(exc).__name__}: "
                                                                                          f"{exc}")

    async def _shutdown(self) -> None:
        self.leaving = True
        with contextlib.suppress(Exception):
            await self.finish()
        self._traffic(time.time())
        for link in list(self.links):
            if link.partner:
                link.send(wire.PartnershipRemove(self.cfg.content, link.overlay.me or 1, PartnerReason.LEAVING))
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*(ov.leave() for ov in self.overlays)), 1.5)
        with contextlib.suppress(Exception):  # all at once: the runner kills what is still running after 3 s
            await asyncio.wait_for(asyncio.gather(*(self.close_link(link, "leaving") for link in list(self.links)),
                                                  return_exceptions=True), 1.0)
        if self.server is not None:
            self.server.close()
        for task in list(self._tasks):
            if task is not asyncio.current_task():
                task.cancel()

    # -- connections ------------------------------------------------------------------------------------------
    async def _inbound(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        cfg = self.cfg
        stream = FramedStream(reader, writer, max_rejected_bytes=cfg.max_bad_bytes)
        ip = stream.peername[0]
        overlay = self.overlay_for(ip)
        if overlay is None or self.leaving:
            self.ctx.log.emit("conn_refused", src=ip, reason="outside the scope" if overlay is None else "leaving")
            await stream.close()
            return
        link = Link(stream, overlay, inbound=True, name=self.name_of(ip), now=time.time())
        self.attach(link)

    def attach(self, link: Link) -> None:
        link.stream.on_reject = lambda r: self.bad(link, r.reason, "framing", r.nbytes)
        if self.cfg.send_buffer:
            # a small socket buffer, and the uploader waits until its chunk has left user space: control messages
            # then wait behind at most about one chunk (the kernel doubles SO_SNDBUF)
            sock = link.stream.writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.cfg.send_buffer)
            with contextlib.suppress(AttributeError, RuntimeError):
                link.stream.writer.transport.set_write_buffer_limits(high=self.cfg.send_buffer // 2)
        self.links.add(link)
        link.tasks = [self.spawn(self._reader(link))]
        if not self.cfg.serial_upload:  # else the node's one uploader serves every link (_upload_loop)
            link.tasks.append(self.spawn(self._uploader(link)))

    async def _reader(self, link: Link) -> None:
        cfg = self.cfg
        reason = "closed by the other side"
        try:
            while not link.closed:
                if link.partner:
                    timeout = 3 * cfg.stale_after
                else:
                    timeout = 2 * cfg.connect_timeout if link.state == "asking" else cfg.idle_timeout
                msg = await link.stream.recv(timeout)
                if msg is None:
                    break
                link.last_rx = time.time()
                try:
                    self.dispatch(link, msg)
                except wire.WireError as exc:  # a message we could not answer (e.g. out-of-range values)
                    self.bad(link, f"{msg.TYPE.name}: {exc}", "protocol")
                if link.bad >= cfg.max_bad_frames:
                    reason = f"{link.bad} bad frames or messages"
                    break
        except TimeoutError:
            reason = "idle"
        except wire.WireError as exc:
            reason = f"garbage: {exc}"
        except (OSError, ConnectionError) as exc:
            reason = f"connection error: {exc}"
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug costs one connection, never the node
            reason = "internal error"
            self.ctx.log.emit("node_error", where="reader", peer=link.peer, error=f"{type(exc).__name__}: {exc}")
        if not link.closed:
            await self.close_link(link, reason)

    async def _upload_loop(self) -> None:
        """``serial_upload``: the node's uplink serves one chunk at a time, the chunk requests of all its
        partners in the order they came, each written to its connection, and the next one only once this one has
        (nearly) left the socket's send queue (``SIOCOUTQ``, at most ``serial_wait`` seconds). Sending one chunk
        per connection at once shares the uplink between them: each chunk then takes as long as all of them
        together, none can be forwarded before the end, and behind a NAT gateway (which shapes the upload without
        the host's TCP feeling it) seconds of data queue up in front of this node's acknowledgements, buffer maps
        and requests. (Serving the oldest chunk first instead was tried: the source's partners then sent every
        child the same chunks, the children had nothing to exchange, and the overlay fell behind.)"""
        while True:
            self.up_wake.clear()
            pick = self._next_upload()
            if pick is None:
                await self.up_wake.wait()
                continue
            link, cid = pick
            try:
                if await self._send_chunk(link, cid):
                    await self._wait_sent(link)
            except (OSError, ConnectionError):
                if not link.closed:
                    self.spawn(self.close_link(link, "connection error while sending"))
            except Exception as exc:  # noqa: BLE001 - one bad send must not stop every upload
                self.ctx.log.emit("node_error", where="uploader", peer=link.peer, error=f"{type(exc).__name__}: {exc}")

    def _next_upload(self) -> tuple[Link, int] | None:
        """The request that came first of those queued on all connections (removed from its queue)."""
        best: Link | None = None
        for lk in self.links:
            self._expire(lk)
            self._drop_late(lk)
            if not lk.closed and lk.queue and (best is None or lk.queue[0].arrival < best.queue[0].arrival):
                best = lk
        if best is None:
            return None
        return best, best.queue.popleft().chunk

    def _expire(self, link: Link) -> None:
        """Forget the requests at the head of ``link``'s queue that waited longer than ``queue_expiry``: their
        requester has given up on them (its timeout) and asked elsewhere, so sending them would waste upload."""
        expiry = self.cfg.queue_expiry
        if expiry is None:
            return
        now = time.time()
        while link.queue and now - link.queue[0].at > expiry:
            link.queue.popleft()
            self.expired_requests += 1

    def _drop_late(self, link: Link) -> None:
        """Drop the requests at the head of ``link``'s queue whose chunk can no longer reach the requester before
        the deadline it gave (``serve_deadline``): sending it would only take upload from chunks still in time.
        The requester is told (ERROR busy) so that it stops waiting for it."""
        if not self.cfg.serve_deadline:
            return
        now = time.time()
        # the chunk at the head goes out next; with one uploader per connection it shares the uplink with the
        # other connections that have chunks to send
        sharing = 1 if self.cfg.serial_upload else sum(1 for lk in self.links if lk.queue or lk is link)
        while link.queue and now + sharing * self._transfer_s() > link.queue[0].due:
            q = link.queue.popleft()
            self.late_refusals += 1
            link.send(wire.Error(ErrorCode.BUSY, MsgType.CHUNK_REQ, f"chunk {q.chunk}"))

    def _transfer_s(self) -> float:
        """Seconds one chunk takes on this node's uplink at the measured upload rate (0 until measured)."""
        if not self.up_rate:
            return 0.0
        size = self.info.chunk_bytes if self.info is not None else 65536
        return size / self.up_rate

    def _wait_s(self, link: Link) -> float:
        """Seconds until one more request on ``link`` would be sent, at the measured upload rate: with one uploader
        per connection the links share the uplink, so each other link sends as many of its queued chunks as this
        one has ahead (at most); the serial uploader serves every queued request first."""
        ahead = len(link.queue)
        if self.cfg.serial_upload:
            queued = sum(len(lk.queue) for lk in self.links)
        else:
            queued = sum(min(len(lk.queue), ahead + 1) for lk in self.links if lk is not link) + ahead
        return (queued + 1) * self._transfer_s()

    def _too_late(self, link: Link, msg: wire.ChunkReq) -> bool:
        """``serve_deadline``: the requested chunk would reach the requester after the deadline it gave."""
        return bool(self.cfg.serve_deadline and msg.due_ms and self._wait_s(link) > msg.due_ms / 1000)

    async def _send_chunk(self, link: Link, cid: int) -> bool:
        """Write one requested chunk to ``link`` (ERROR no-such-chunk when it is no longer held); True if a chunk
        was written."""
        chunk = self.buffer.get(cid) if self.buffer is not None else None
        if chunk is None:
            link.send(wire.Error(ErrorCode.NO_SUCH_CHUNK, MsgType.CHUNK_REQ, f"chunk {cid}"))
            return False
        msg = chunk.message(self.cfg.content, self.chunk_data(chunk))
        before = link.stream.counters.data_up
        if not link.send(msg):
            return False
        link.chunks_up += 1
        link.last_exchange = time.time()
        self.on_chunk_sent(link, chunk, link.stream.counters.data_up - before)
        await link.stream.writer.drain()
        if any(lk.queue for lk in self.links):
            self._backlogged = True
        return True

    async def _wait_sent(self, link: Link) -> None:
        """Until the socket of ``link`` has at most 16 KB left to send (acknowledged by the receiver), or what the
        uplink sends in ``serial_overlap`` seconds if that is more, at most ``serial_wait`` seconds (a slow
        receiver does not hold up the others for longer). On a fast uplink the next chunk then starts while the
        last one is still in flight: a connection that waited its turn restarts TCP slow start, and a 10 Mbit/s
        uploader that let each chunk drain first sent 3.5 Mbit/s (2026-12-06); on 1 Mbit/s it changes nothing."""
        until = time.monotonic() + self.cfg.serial_wait
        threshold = max(16384.0, self.cfg.serial_overlap * (self.up_rate or 0.0))
        while not link.closed and time.monotonic() < until:
            left = self._unsent(link)
            if left is None or left <= threshold:
                return
            await asyncio.sleep(0.01)

    @staticmethod
    def _unsent(link: Link) -> int | None:
        """Bytes of ``link`` in the kernel's send queue, not yet acknowledged (``SIOCOUTQ``; None: unknown)."""
        sock = link.stream.writer.get_extra_info("socket")
        if sock is None:
            return None
        try:
            return int(struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0])
        except (OSError, ValueError):
            return None

    async def _uploader(self, link: Link) -> None:
        content = self.cfg.content
        try:
            while not link.closed:
                await link.wake.wait()
                link.wake.clear()
                while not link.closed:
                    self._expire(link)
                    self._drop_late(link)
                    if not link.queue:
                        break
                    cid = link.queue.popleft().chunk
                    chunk = self.buffer.get(cid) if self.buffer is not None else None
                    if chunk is None:
                        link.send(wire.Error(ErrorCode.NO_SUCH_CHUNK, MsgType.CHUNK_REQ, f"chunk {cid}"))
                        continue
                    msg = chunk.message(content, self.chunk_data(chunk))
                    before = link.stream.counters.data_up
                    if not link.send(msg):
                        return
                    link.chunks_up += 1
                    link.last_exchange = time.time()
                    self.on_chunk_sent(link, chunk, link.stream.counters.data_up - before)
                    await link.stream.writer.drain()
                    if link.queue:
                        self._backlogged = True
        except (OSError, ConnectionError):
            if not link.closed:
                self.spawn(self.close_link(link, "connection error while sending"))

    async def close_link(self, link: Link, reason: str, code: int | None = None) -> None:
        if link.closed:
            return
        link.closed = True
        ov = link.overlay
        if link.partner:
            link.state = "closed"
            if link.peer is not None and ov.partners.get(link.peer) is link:
                del ov.partners[link.peer]
            fields: dict[str, Any] = {"overlay": ov.side, "peer": link.peer, "ip": link.ip, "reason": reason,
                                      "inbound": link.inbound, "chunks_up": link.chunks_up,
                                      "chunks_down": link.chunks_down,
                                      "s": round(time.time() - link.added_at, 3)}
            if code is not None:
                fields["code"] = PartnerReason(code).name.lower() if code in PartnerReason._value2member_map_ \
                    else code
            self.ctx.log.emit("partner_drop", **fields)
            try:
                self.on_partner_removed(link)
            except Exception as exc:  # noqa: BLE001
                self.ctx.log.emit("node_error", where="partner_removed", error=f"{type(exc).__name__}: {exc}")
            if link.main and ov.mains is not None and link.peer is not None and ov.mains.lost(link.peer):
                self.share_changed(ov)
        link.state = "closed"
        if not link.inbound and link.peer is not None:
            ov.connecting.discard(link.peer)
        self.links.discard(link)
        self.totals.add(link.stream.counters)
        await link.close()

    def drop(self, link: Link, why: str, code: int) -> None:
        """End a partnership on our side, telling the partner (PARTNERSHIP_REMOVE)."""
        link.send(wire.PartnershipRemove(self.cfg.content, link.overlay.me or 1, code))
        if link.peer is not None and why != "corrupt":
            link.overlay.mcache.failed(link.peer, time.time(), self.cfg.retry_after)
        self.spawn(self.close_link(link, why, code))

    def become_partner(self, link: Link) -> None:
        ov, now = link.overlay, time.time()
        assert link.peer is not None
        link.state = "partner"
        link.added_at = link.last_exchange = link.bm_at = link.last_rx = now
        ov.partners[link.peer] = link
        ov.connecting.discard(link.peer)
        member = ov.mcache.get(link.peer)
        if member is not None:
            member.fails = 0
        self.ctx.log.emit("partner_add", overlay=ov.side, peer=link.peer, ip=link.ip, port=link.port,
                          inbound=link.inbound, server=link.server, main=link.main, partners=len(ov.partners))
        if self.buffer is not None:
            link.send(self._told_map(self.buffer.buffer_map()))
        if link.main and ov.mains is not None and ov.mains.alive(link.peer):
            self.share_changed(ov)
        self.on_partner_added(link)

    def partner_problem(self, link: Link, now: float) -> str | None:
        """Why the member scheduler should replace this partner (None: keep it)."""
        cfg = self.cfg
        # stale: silent for stale_after, or no buffer map for three times that (on a congested link buffer maps
        # wait behind chunk data; the partner is alive as long as its messages keep coming)
        if now - link.last_rx > cfg.stale_after or now - link.bm_at > 3 * cfg.stale_after:
            return "stale"
        if link.main:
            return None  # mains of one ad-hoc network always stay partners
        if now - max(link.added_at, link.last_exchange) > cfg.useless_after:
            return "useless"
        return None

    def partner_links(self) -> list[Link]:
        return [lk for ov in self.overlays for lk in ov.partners.values()]

    # -- messages ---------------------------------------------------------------------------------------------
    def bad(self, link: Link, reason: str, kind: str, nbytes: int = 0) -> None:
        link.bad += 1
        if link.logged_bad < self.cfg.max_bad_frames:
            link.logged_bad += 1
            self.ctx.log.emit("bad_frame", src=link.ip, peer=link.peer, reason=reason, kind=kind, bytes=nbytes)

    def dispatch(self, link: Link, msg: wire.Message) -> None:
        cfg, ov, now = self.cfg, link.overlay, time.time()
        content = getattr(msg, "content", None)
        if content not in (None, 0) and content != cfg.content and not isinstance(msg, wire.PartnershipReq):
            self.bad(link, f"{msg.TYPE.name} for content {content}, not carried here", "protocol")
            if isinstance(msg, wire.MembersReq | wire.ChunkReq | wire.ContentInfoReq):
                link.send(wire.Error(ErrorCode.UNKNOWN_CONTENT, msg.TYPE, f"no content {content}"))
            return
        if isinstance(msg, wire.ChunkResp):
            self._chunk_resp(link, msg)
        elif isinstance(msg, wire.ChunkReq):
            self._chunk_req(link, msg)
        elif isinstance(msg, wire.BufferMap):
            if link.partner:
                link.set_bm(msg, now)
                self.on_buffer_map(link)
        elif isinstance(msg, wire.Membership):
            self._membership(link, msg, now)
        elif isinstance(msg, wire.PartnershipReq):
            ov.on_request(link, msg)
        elif isinstance(msg, wire.PartnershipResp):
            ov.on_answer(link, msg)
        elif isinstance(msg, wire.PartnershipRemove | wire.Leave):
            if isinstance(msg, wire.Leave) or (link.partner and msg.peer == link.peer):
                code = msg.reason if isinstance(msg, wire.PartnershipRemove) else PartnerReason.LEAVING
                self.spawn(self.close_link(link, "removed by the partner", code))
            else:
                self.bad(link, "PARTNERSHIP_REMOVE of no partnership", "protocol")
        elif isinstance(msg, wire.MembersReq):
            exclude = {ov.me} | ({link.peer} if link.peer is not None else set())
            entries = [ov.my_entry()] if ov.me else []
            entries += ov.mcache.sample(max(0, msg.want - len(entries)), exclude, self.ctx.rng.sample)
            link.send(wire.MembersResp(cfg.content, tuple(entries[:msg.want])))
            self.ctx.log.emit("members_served", overlay=ov.side, to_peer=link.peer, src=link.ip,
                              members=len(entries[:msg.want]))
        elif isinstance(msg, wire.MembersResp):
            ov.mcache.learn(msg.members, now)
        elif isinstance(msg, wire.ContentInfoReq):
            if self.info is not None:
                link.send(self.info)
            else:
                link.send(wire.Error(ErrorCode.UNKNOWN_CONTENT, msg.TYPE, "content info not known yet"))
        elif isinstance(msg, wire.ContentInfo):
            if self.key is not None and not msg.signed_by(self.key):
                self.bad(link, "CONTENT_INFO_RESP without the source's signature", "protocol")
            elif self.info is None:
                self.set_info(msg, link)
        elif isinstance(msg, wire.ContentsReq):
            link.send(wire.ContentsResp(tuple(self.contents(msg.word))))
        elif isinstance(msg, wire.ContentsResp):
            self.ctx.log.emit("search_result", src=link.name, peer=link.peer,
                              contents=[c.fields() for c in msg.contents])
            self.searched = self.searched or bool(msg.contents)
        elif isinstance(msg, wire.ReachProbe):
            link.send(wire.ReachAck(msg.token))
            self.ctx.log.emit("reach_probe_answered", src=link.ip)
        elif isinstance(msg, wire.Error):
            self._error(link, msg)
        else:
            self.bad(link, f"{msg.TYPE.name} is not a peer message", "protocol")
            link.send(wire.Error(ErrorCode.UNSUPPORTED, msg.TYPE, "not a peer message"))

    def contents(self, word: str) -> list[wire.ContentEntry]:
        """The search engine's answer (3.3.2.6): the contents carried here whose title contains ``word``."""
        title = self.info.title if self.info is not None and self.info.title else f"content {self.cfg.content}"
        if word.casefold() not in title.casefold():
            return []
        return [wire.ContentEntry(self.cfg.content, title, min(len(self.partner_links()), 0xFFFF))]

    def _membership(self, link: Link, msg: wire.Membership, now: float) -> None:
        ov = link.overlay
        if link.peer is None:
            link.peer, link.port = msg.peer, msg.port
        direct = msg.peer == link.peer
        news = ov.mcache.heard(msg, now, direct=direct)
        if direct and link.main and ov.mains is not None and ov.mains.alive(msg.peer):
            self.share_changed(ov)
        if news and self.cfg.gossip_fanout and msg.peer != ov.me:
            others = sorted((lk for lk in ov.partners.values() if lk is not link and lk.peer != msg.peer),
                            key=lambda lk: lk.id)
            for lk in self.ctx.rng.sample(others, min(self.cfg.gossip_fanout, len(others))):
                lk.send(msg)

    def _chunk_req(self, link: Link, msg: wire.ChunkReq) -> None:
        if not link.partner:
            self.bad(link, "CHUNK_REQ from a node that is not a partner", "protocol")
            link.send(wire.Error(ErrorCode.UNEXPECTED, msg.TYPE, "not a partner"))
        elif self.buffer is None or not self.buffer.has(msg.chunk):
            link.send(wire.Error(ErrorCode.NO_SUCH_CHUNK, msg.TYPE, f"chunk {msg.chunk}"))
        elif (len(link.queue) >= self.cfg.max_queue or self._overloaded(msg.chunk, msg.due_ms)
              or self.refuse_chunk(link, msg.chunk)):
            self.busy_refusals += 1
            link.send(wire.Error(ErrorCode.BUSY, msg.TYPE, f"chunk {msg.chunk}"))
        elif self._too_late(link, msg):
            self.late_refusals += 1
            link.send(wire.Error(ErrorCode.BUSY, msg.TYPE, f"chunk {msg.chunk}"))
        else:
            now = time.time()
            link.queue.append(Queued(next(self._arrivals), msg.chunk, now,
                                     now + msg.due_ms / 1000 if msg.due_ms else math.inf))
            link.wake.set()
            self.up_wake.set()

    def _overloaded(self, chunk: int, due_ms: int = 0) -> bool:
        """Admission control: one more chunk would wait longer than ``serve_horizon`` behind those queued for
        upload (at the upload rate measured while there was a queue). A requester told busy asks another partner
        at once instead of waiting in a queue that would make it late, and a fresh chunk waits to spread to
        partners with time to spare instead of deepening the queues of the few that hold it. A request due within
        ``serve_urgent`` seconds (its ``due_ms``) is always accepted (``serve_deadline`` still refuses it when it
        cannot make it): that viewer needs it soon. Likewise, live, a chunk made ``serve_old`` seconds ago or
        more (for requesters that send no deadline)."""
        horizon = self.cfg.serve_horizon * (4 if self.cfg.mode == "download" else 1)
        if not horizon or not self.up_rate:
            return False
        if due_ms and self.cfg.serve_urgent is not None and due_ms / 1000 <= self.cfg.serve_urgent:
            return False
        if self.cfg.serve_old is not None and isinstance(self.buffer, LiveBuffer):
            held = self.buffer.get(chunk)
            if held is not None and held.created_us and time.time() - held.created_us / 1e6 >= self.cfg.serve_old:
                return False
        size = self.info.chunk_bytes if self.info is not None else 65536
        queued = sum(len(lk.queue) for lk in self.links) + 1
        return queued * size / self.up_rate > horizon

    def _acked(self) -> int:
        """Bytes that have left this node: written to partner connections minus what still waits in the kernel's
        socket send queues (SIOCOUTQ), so socket buffers do not count as upload."""
        c = self.counters()
        total = c.data_up + c.control_up
        for link in self.links:
            total -= self._unsent(link) or 0
        return total

    def _measure_upload(self, now: float) -> None:
        """The upload rate, sampled once a second over the seconds in which chunks were waiting to go out. The
        first call only sets the mark: a sample from time 0 divided the first second's bytes by the Unix time, and
        the node, thinking it uploaded a few bytes a second, refused every request from then on (so no backlog
        ever measured it again: one VDSL peer of five sent 2 chunks in a 90 s run, 2026-12-07)."""
        sent = self._acked()
        if self._up_mark is None:
            self._up_mark = (now, sent)
            self._backlogged = any(lk.queue for lk in self.links)
            return
        t0, sent0 = self._up_mark
        if self._backlogged and now > t0:
            sample = (sent - sent0) / (now - t0)
            self.up_rate = sample if self.up_rate is None else 0.5 * self.up_rate + 0.5 * sample
        self._backlogged = any(lk.queue for lk in self.links)
        self._up_mark = (now, sent)

    def _chunk_resp(self, link: Link, msg: wire.ChunkResp) -> None:
        if not link.partner:
            self.bad(link, f"CHUNK_RESP {msg.chunk} from a node that is not a partner", "protocol")
            return
        if self.key is not None and not wire.chunk_signed_by(msg, self.key):
            self.rejected_chunks += 1
            why = "no signature" if msg.sig_kind != wire.SigKind.HMAC_SHA256 else "bad signature"
            self.ctx.log.emit("chunk_rejected", chunk=msg.chunk, bytes=len(msg.data), reason=why, peer=link.peer,
                              **{"from": link.name})
            if link.peer is not None:
                link.overlay.mcache.ban(link.peer, time.time(), self.cfg.ban_for)
            self.drop(link, "corrupt", PartnerReason.OTHER)
            return
        self.on_chunk(link, msg)

    def _error(self, link: Link, msg: wire.Error) -> None:
        if msg.about == MsgType.CHUNK_REQ and msg.code in (ErrorCode.NO_SUCH_CHUNK, ErrorCode.BUSY):
            m = CHUNK_REASON.fullmatch(msg.reason)
            if m:
                self.on_refused(link, int(m.group(1)))
                return
        if msg.about == MsgType.CONTENT_INFO_REQ and msg.code == ErrorCode.UNKNOWN_CONTENT:
            return  # a partner that does not know the content info yet: another one is asked later
        if link.logged_bad < self.cfg.max_bad_frames:
            link.logged_bad += 1
            self.ctx.log.emit("error_received", src=link.ip, peer=link.peer, code=msg.code, about=msg.about,
                              reason=msg.reason)

    # -- periodic work ----------------------------------------------------------------------------------------
    def _member_round(self, now: float) -> None:
        for ov in self.overlays:
            ov.tick(now)
        self.tick(now)

    def _trim_heap(self, now: float) -> None:
        """Give the C heap's free pages back to the system (glibc ``malloc_trim``): start-up leaves a few MB of
        freed memory behind, and many node processes share one machine."""
        if self._libc is None:
            self._libc = _libc() or False
        if self._libc:
            self._libc.malloc_trim(0)

    def _push_maps(self, now: float) -> None:
        """New chunks since the last buffer map: tell the partners now rather than at the next period (each hop of
        a chunk through the overlay waits for its holder's buffer map)."""
        if self.bm_dirty:
            self._send_maps(now)

    def _send_maps(self, now: float) -> None:
        self.bm_dirty = False
        if self.buffer is None:
            return
        bm = self._told_map(self.buffer.buffer_map())
        for link in self.partner_links():
            link.send(bm)

    def _told_map(self, bm: wire.BufferMap) -> wire.BufferMap:
        """The buffer map with this node's upload backlog and rate (``backlog_ms``, ``up_kbps``): the rate measured
        while chunks waited to go out, else the ``upload_capacity`` it says."""
        backlog_ms = min(wire.U32, round(1000 * self._backlog_s()))
        up_kbps = min(wire.U32, round(self.up_rate * 8 / 1000) if self.up_rate else self.cfg.upload_capacity // 1000)
        if backlog_ms or up_kbps:
            bm = dataclasses.replace(bm, backlog_ms=backlog_ms, up_kbps=up_kbps)
        return bm

    def _backlog_s(self) -> float:
        """Seconds until this node's uplink could start one more chunk, at the measured upload rate: the chunks
        queued on all connections plus what is written but not yet sent (asyncio's write buffers and the
        kernel's send queues, i.e. the chunk in flight). A new request waits at least that long; the partners are
        told in the buffer map (``backlog_ms``). 0 until the upload rate is measured."""
        if not self.up_rate:
            return 0.0
        size = self.info.chunk_bytes if self.info is not None else 65536
        waiting = 0
        for lk in self.links:
            waiting += len(lk.queue) * size + (self._unsent(lk) or 0)
            transport = lk.stream.writer.transport
            if transport is not None and not transport.is_closing():
                waiting += transport.get_write_buffer_size()
        return waiting / self.up_rate

    def _announce(self, now: float) -> None:
        for ov in self.overlays:
            if ov.me and ov.partners:
                msg = ov.membership()
                for link in ov.partners.values():
                    link.send(msg)

    def counters(self) -> wire.ByteCounters:
        total = wire.ByteCounters()
        total.add(self.totals)
        for link in self.links:
            total.add(link.stream.counters)
        return total

    def _traffic(self, now: float) -> None:
        c = self.counters()
        r = self._reported
        self.ctx.log.emit("traffic", data_up=c.data_up - r.data_up, data_down=c.data_down - r.data_down,
                          control_up=c.control_up - r.control_up, control_down=c.control_down - r.control_down,
                          partners=len(self.partner_links()), connections=len(self.links),
                          chunks=self.buffer.count if self.buffer is not None else 0, dups=self.dup_chunks,
                          rejected=self.rejected_chunks, busy=self.busy_refusals, expired=self.expired_requests,
                          late=self.late_refusals,
                          up_kbps=round(self.up_rate * 8 / 1000, 1) if self.up_rate else None,
                          **self.extra_traffic())
        self._reported = c
