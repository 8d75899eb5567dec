"""Role ``peer``: a CoolStreaming/DONet-like data-driven P2P peer (document chapters 3 and 4) that views a live
stream or downloads a file.

It is the document's peer modules (each its own module in nodes/):

- Membership & Partnership Manager and Member Scheduler: nodes/overlay.py (tracker session, deputies, mCache in
  nodes/membership.py, partnerships, replacing useless partners);
- Network Manager: nodes/peer_link.py (persistent TCP connections over the shared wire format);
- Content Manager, chunk buffer and buffer maps: nodes/chunk_buffer.py;
- Data Scheduler: nodes/data_scheduler.py (policy ``deadline`` or the ``round_robin`` baseline);
- Player Adapter: nodes/player.py (token bucket, skips or stalls; download mode: the file is written in place
  and its SHA-256 checked against the source's signed content info);
- Search Engine: CONTENTS_REQ by word to the tracker (``search``) and to partners, answered by every node;
- hybrid fixed-mobile mode (main and local nodes of an ad-hoc network): nodes/hybrid.py.

The shared engine (messages, serving, integrity, gossip, accounting) is nodes/stream_node.py. What a peer logs and
every ``args`` field: docs/streaming-protocol.md. Exit status: 0, 2 bad configuration (e.g. a tracker outside a
local node's scope, a content of the other mode), 3 refused by the tracker (wrong credentials).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nodes import wire
from nodes.chunk_buffer import Chunk, FileBuffer, LiveBuffer
from nodes.data_scheduler import Candidate, DataScheduler
from nodes.overlay import Overlay
from nodes.peer_link import Link
from nodes.player import LivePlayer
from nodes.runtime import NodeContext, run_role
from nodes.stream_node import StreamNode

if TYPE_CHECKING:
    from nodes.peer_config import Config


class PeerNode(StreamNode):
    """A viewer (live) or downloader, and a supplier to its partners."""

    role_label = "peer"
    cfg: Config

    def __init__(self, ctx: NodeContext, cfg: Config):
        super().__init__(ctx, cfg)
        self.sched = DataScheduler(cfg.scheduler, cfg.max_outstanding, cfg.urgent, cfg.timeout_factor,
                                   cfg.timeout_min, cfg.timeout_max, cfg.rescue, rng=ctx.rng)
        self.kick_event = asyncio.Event()
        self.arrived = asyncio.Event()
        self.t_start = time.time()
        self.player: LivePlayer | None = None
        self.done = False
        self.info_asked = 0.0
        self.timeouts = 0
        self._refresh_at = 0.0  # refresh_after: the next look at the partners
        self._refresh_mark: tuple[int, dict[Link, tuple[int, int]]] = (0, {})  # (chunks missed, per partner chunks
        # received and sent) at the last look
        self._refreshed_out: dict[int, float] = {}  # peer dropped by refresh_after -> not taken back before
        self.out_path: Path | None = None
        self._decode_queue: asyncio.Queue[bytes | None] | None = None
        self._decoder_closed = asyncio.Event()
        if cfg.mode == "live":
            self.buffer = LiveBuffer(cfg.content, cfg.window)
            self.player = LivePlayer(ctx.log.emit, cfg.content, cfg.chunk_duration,
                                     startup=max(1, math.ceil(cfg.startup_buffer / cfg.chunk_duration - 1e-9)),
                                     on_missing=cfg.on_missing, max_stall=cfg.max_stall, bucket=cfg.bucket,
                                     sink=self._to_decoder if cfg.decoder else None, startup_wait=cfg.startup_wait)

    def kick(self) -> None:
        self.kick_event.set()

    # -- hooks ------------------------------------------------------------------------------------------------
    def tasks(self) -> list[Any]:
        out: list[Any] = [self._schedule_loop()]
        if self.player is not None:
            out.append(self._play_loop())
        if self.cfg.leave_after is not None:
            out.append(self._leave_later(self.cfg.leave_after))
        if self.cfg.decoder and self.player is not None:
            out.append(self._decode_loop())
        return out

    def partner_target(self, overlay: Overlay) -> int:
        if self.done:
            return 0  # a finished download stops looking for partners (it still accepts them)
        return super().partner_target(overlay)

    def joined(self, overlay: Overlay) -> None:
        super().joined(overlay)
        if self.cfg.search is not None and overlay.client is not None:
            self.spawn(self._search_tracker(overlay, self.cfg.search))

    async def _search_tracker(self, overlay: Overlay, word: str) -> None:
        client = overlay.client
        if client is None:
            return
        with contextlib.suppress(Exception):
            found = await client.contents(word)
            self.ctx.log.emit("search_result", src="tracker", word=word, contents=[c.fields() for c in found])

    def prior_bw(self) -> float:
        """Bandwidth assumed for a new partner (bytes/s) until its responses are measured."""
        if self.info is None:
            return 65536.0
        if self.info.mode == wire.ContentMode.LIVE:
            return 2.0 * self.info.chunk_bytes / (self.info.chunk_us / 1e6)
        return float(self.info.chunk_bytes)

    def on_partner_added(self, link: Link) -> None:
        self.sched.add_partner(link, self.prior_bw())
        if self.info is None:
            link.send(wire.ContentInfoReq(self.cfg.content))
            self.info_asked = time.time()
        if self.cfg.search is not None and not self.searched:  # ask partners until one knows a match
            link.send(wire.ContentsReq(self.cfg.search))
        self.kick()

    def on_partner_removed(self, link: Link) -> None:
        self.sched.remove_partner(link)
        self.kick()

    def on_buffer_map(self, link: Link) -> None:
        if link.bm is not None:
            self.sched.on_backlog(link, link.bm_at, link.bm.backlog_ms / 1000, link.bm.up_kbps * 125)
        self.kick()

    def on_refused(self, link: Link, chunk: int) -> None:
        self.sched.on_refused(chunk, link)
        self.kick()

    def partner_problem(self, link: Link, now: float) -> str | None:
        why = super().partner_problem(link, now)
        if why is None and not link.main:
            sup = self.sched.suppliers.get(link)
            if sup is not None and sup.timeouts_in_row >= self.cfg.slow_timeouts:
                why = "slow"
        return why

    def tick(self, now: float) -> None:
        links = self.partner_links()
        if self.info is None and links and now - self.info_asked > 3.0:
            self.info_asked = now
            self.ctx.rng.choice(sorted(links, key=lambda lk: lk.id)).send(wire.ContentInfoReq(self.cfg.content))
        self._refresh_partners(now)

    def _refresh_partners(self, now: float) -> None:
        """``refresh_after`` (CoolStreaming's partner refinement, document 3.3.2.2: the member scheduler replaces
        partners that are of little use): every ``refresh_after`` seconds, a viewer that missed a chunk since the
        last look drops the partner it exchanged the fewest chunks with in that time (received or sent, whichever
        is more), among those that have been partners that long (never the source or a main), when its overlay
        has all the partners it wants; the member scheduler then asks another member at once, and the dropped
        one is not taken back for ``refresh_after`` seconds if it asks. A viewer whose partners are all slow or all
        starved goes on looking instead of staying with them."""
        every, player = self.cfg.refresh_after, self.player
        if not every or player is None or player.started_at is None or now < self._refresh_at:
            return
        missed = player.due - player.on_time
        before, marks = self._refresh_mark
        links = self.partner_links()
        self._refresh_at = now + every
        self._refresh_mark = (missed, {lk: (lk.chunks_down, lk.chunks_up) for lk in links})
        if missed <= before:
            return

        def exchanged(lk: Link) -> int:
            down, up = marks.get(lk, (0, 0))
            return max(lk.chunks_down - down, lk.chunks_up - up)

        old = [lk for lk in links if not lk.server and not lk.main and now - lk.added_at >= every
               and len(lk.overlay.partners) >= lk.overlay.target_now()]
        if old:
            worst = min(old, key=lambda lk: (exchanged(lk), lk.id))
            self._refreshed_out = {p: t for p, t in self._refreshed_out.items() if t > now}
            if worst.peer is not None:  # (it would ask again at once: it lost a partner too)
                self._refreshed_out[worst.peer] = now + every
            self.drop(worst, "refresh", wire.PartnerReason.POOR)

    def refuses_partner(self, peer: int, now: float) -> bool:
        return self._refreshed_out.get(peer, 0.0) > now

    def chunk_data(self, chunk: Chunk) -> bytes | None:
        if self.cfg.pollute and self.ctx.rng.random() < self.cfg.pollute and chunk.data:
            bad = bytearray(chunk.data)
            bad[self.ctx.rng.randrange(len(bad))] ^= 0xFF
            self.ctx.log.emit("chunk_polluted", chunk=chunk.id)
            return bytes(bad)
        return None

    def extra_traffic(self) -> dict[str, Any]:
        return {"pending": len(self.sched.pending), "timeouts": self.timeouts}

    def set_info(self, info: wire.ContentInfo, link: Link | None) -> None:
        if self.info is not None:
            return
        expected = wire.ContentMode.LIVE if self.cfg.mode == "live" else wire.ContentMode.DOWNLOAD
        if info.mode != expected:
            self.ctx.log.emit("content_info", error=f"the content is {wire.ContentMode(info.mode).name.lower()}, "
                                                    f"this peer is in {self.cfg.mode} mode")
            self.fail(2)
            return
        self.info = info
        fields: dict[str, Any] = {"src": link.name if link else None, "mode": self.cfg.mode, "title": info.title,
                                  "chunk_bytes": info.chunk_bytes}
        if self.player is not None:
            dur = info.chunk_us / 1e6
            self.player.duration = dur
            self.player.startup = max(1, math.ceil(self.cfg.startup_buffer / dur - 1e-9))
            fields.update(chunk_s=dur, start=info.start_us / 1e6)
        else:
            self.out_path = Path(self.cfg.output) if self.cfg.output else Path(tempfile.gettempdir()) / (
                f"streambed-download-{self.ctx.node}.{self.ctx.proc}-{os.getpid()}.bin")
            self.buffer = FileBuffer(self.cfg.content, info, self.out_path)
            fields.update(bytes=info.total_bytes, chunks=info.chunks, sha256=info.sha256.hex(),
                          output=str(self.out_path))
        self.ctx.log.emit("content_info", **fields)
        for lk in self.partner_links():
            self.sched.add_partner(lk, self.prior_bw())
        self.kick()

    # -- chunks -----------------------------------------------------------------------------------------------
    def on_chunk(self, link: Link, msg: wire.ChunkResp) -> None:
        now = time.time()
        req = self.sched.on_response(now, msg.chunk, link, len(msg.data))
        link.chunks_down += 1
        link.last_exchange = now
        buf = self.buffer
        if buf is None or not buf.put(Chunk.of(msg)):
            self.dup_chunks += 1
            return
        fields: dict[str, Any] = {"chunk": msg.chunk, "bytes": len(msg.data),
                                  "source": "server" if link.server else "peer", "from": link.name}
        if req is not None:
            fields["ms"] = round((now - req.sent) * 1000, 1)
        if link.overlay.side == "adhoc" and self.mains is not None:
            fields["via"] = "adhoc"
        self.ctx.log.emit("chunk_recv", **fields)
        self.bm_dirty = True
        self.arrived.set()
        self.kick()
        if isinstance(buf, FileBuffer) and buf.complete and not self.done:
            self._download_done(now, buf)

    def _download_done(self, now: float, buf: FileBuffer) -> None:
        assert self.info is not None
        self.done = True
        sha = buf.sha256()
        ok = sha == self.info.sha256.hex()
        self.ctx.log.emit("download_complete", bytes=self.info.total_bytes, chunks=self.info.chunks, sha256=sha,
                          ok=ok, seconds=round(now - self.t_start, 3),
                          output=str(self.out_path) if self.cfg.output else None)

    def _allowed(self, link: Link, chunk: int, deadline: float | None, now: float) -> bool:
        """Hybrid main: chunks outside this main's share come over the ad-hoc side (unless nearly due)."""
        h = self.cfg.hybrid
        if self.mains is None or h is None or not h.share or link.overlay.side != "internet":
            return True
        if self.mains.fetches(chunk):
            return True
        return h.share_fallback is not None and deadline is not None and deadline - now <= h.share_fallback

    def candidates(self, now: float) -> list[Candidate]:
        buf = self.buffer
        links = [lk for lk in self.partner_links() if lk.bm is not None]
        if buf is None or not links:
            return []
        out: list[Candidate] = []
        if isinstance(buf, FileBuffer):
            assert self.info is not None
            for c in buf.missing():
                if self.sched.is_pending(c):
                    continue
                holders = [lk for lk in links if lk.has(c)]
                if holders:
                    out.append(Candidate(c, None, holders, self.info.chunk_size(c)))
            return out
        player = self.player
        assert player is not None
        lo = player.needed_from()
        if lo is None:
            return []
        hi = min(max(lk.bm_newest for lk in links), lo + buf.window - 1)
        size = self.info.chunk_bytes if self.info is not None else 65536
        skip = player.on_missing == "skip" and player.playing
        for c in range(max(lo, buf.base), hi + 1):
            if buf.has(c) or self.sched.is_pending(c):
                continue
            deadline = player.deadline(c, now)
            if skip and deadline < now:
                continue
            holders = [lk for lk in links if lk.has(c) and self._allowed(lk, c, deadline, now)]
            if holders:
                out.append(Candidate(c, deadline, holders, size))
        return out

    def _maybe_start(self, now: float) -> None:
        """Choose the first chunk: ``start_lag`` behind the live edge the source's content info implies."""
        player = self.player
        if player is None or player.state != "waiting":
            return
        if self.info is not None:
            dur = self.info.chunk_us / 1e6
            edge = math.floor((now - self.info.start_us / 1e6) / dur)
        else:
            newest = [lk.bm_newest for lk in self.partner_links() if lk.bm is not None]
            if now - self.t_start < 5.0 or not newest:
                return
            dur, edge = self.cfg.chunk_duration, max(newest)
        if edge < 0:
            return
        start = max(0, edge - round(self.cfg.start_lag / dur))
        # play chunk s no earlier than start_lag after it was made: early viewers of a stream that has just
        # begun keep the same slack as the others (the overlay needs it to pass chunks along)
        not_before = self.info.start_us / 1e6 + start * dur + self.cfg.start_lag if self.info is not None else 0.0
        player.start_at(start, not_before)
        self.ctx.log.emit("start_chunk", chunk=start, edge=edge, lag_chunks=edge - start,
                          not_before=round(not_before, 3) if not_before else None)
        self.arrived.set()

    async def _schedule_loop(self) -> None:
        cfg, content = self.cfg, self.cfg.content
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(cfg.schedule_interval):  # (no task per wait, unlike wait_for)
                    await self.kick_event.wait()
            self.kick_event.clear()
            try:
                now = time.time()
                for r in self.sched.expire(now):
                    self.timeouts += 1
                    self.ctx.log.emit("chunk_timeout", chunk=r.chunk, **{"from": r.partner.name})  # type: ignore[attr-defined]
                if self.player is not None:
                    self._maybe_start(now)
                    lo = self.player.needed_from()
                    if lo is not None:
                        self.sched.forget(lo)
                candidates = self.candidates(now)
                holders = {c.chunk: len(c.holders) for c in candidates}
                for r in self.sched.plan(now, candidates):
                    link: Link = r.partner  # type: ignore[assignment]
                    due = self._deadline(r.chunk, now)
                    link.send(wire.ChunkReq(content, r.chunk, self._due_ms(due, now)))
                    # holders: how many partners' buffer maps held the chunk (1: no choice of supplier)
                    self.ctx.log.emit("chunk_req", chunk=r.chunk, to=link.name, holders=holders.get(r.chunk),
                                      due_in=None if due is None else round(due - now, 3))
            except Exception as exc:  # noqa: BLE001 - one bad round must not stop the scheduler
                self.ctx.log.emit("node_error", where="data scheduler", error=f"{type(exc).__name__}: {exc}")

    def _deadline(self, chunk: int, now: float) -> float | None:
        return self.player.deadline(chunk, now) if self.player is not None else None

    def _due_ms(self, due: float | None, now: float) -> int:
        """The deadline a chunk request carries: only while playing and skipping what is late, where a chunk after
        its deadline is worthless (while buffering, stalled, or in stall mode it is still wanted later: 0); and
        only from a scheduler that knows deadlines (``tell_deadline``): the naive baseline tells none, or the
        suppliers would do the deadline scheduling for it."""
        p, tell = self.player, self.cfg.tell_deadline
        if tell is None:
            tell = self.cfg.scheduler == "deadline"
        if not tell or due is None or p is None or p.state != "playing" or p.on_missing != "skip":
            return 0
        return min(wire.U32, max(1, round((due - now) * 1000)))

    # -- playback ---------------------------------------------------------------------------------------------
    async def _play_loop(self) -> None:
        player = self.player
        assert player is not None and self.buffer is not None
        player.request(time.time())
        get = self.buffer.get
        while True:
            self.arrived.clear()
            wake = player.step(time.time(), get)  # type: ignore[arg-type]
            delay = max(0.0, min(wake - time.time(), 1.0))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self.arrived.wait()

    def _to_decoder(self, chunk: Chunk) -> None:
        if self._decode_queue is not None:
            self._decode_queue.put_nowait(chunk.data)

    async def _decode_loop(self) -> None:
        try:
            from nodes.decoder import Decoder  # optional: the ffmpeg decoder of nodes/decoder.py
        except ImportError:
            self.ctx.log.emit("decoder_unavailable", reason="nodes.decoder is not installed")
            return
        dec = await Decoder.start(self.ctx.log)
        if dec is None:  # ffmpeg could not start (logged by the decoder): play without it
            return
        self._decode_queue = asyncio.Queue()
        try:
            while (data := await self._decode_queue.get()) is not None:
                await dec.feed(data)
        finally:
            self._decode_queue = None
            await dec.close(timeout=2.0)
            self._decoder_closed.set()

    async def _leave_later(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self.stop_reason = "left"
        self.stop.set()

    async def finish(self) -> None:
        now = time.time()
        if self.player is not None:
            self.player.end(now, self.stop_reason)
        if self._decode_queue is not None:  # end of stream for the decoder; its last words before we go
            self._decode_queue.put_nowait(None)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.5):
                    await self._decoder_closed.wait()
        if isinstance(self.buffer, FileBuffer):
            if not self.done:
                self.ctx.log.emit("download_incomplete", chunks=self.buffer.count, of=self.buffer.info.chunks)
            self.buffer.close()
            if self.cfg.output is None and self.out_path is not None:
                with contextlib.suppress(OSError):
                    self.out_path.unlink()


async def main(ctx: NodeContext, cfg: Config) -> int:
    node = PeerNode(ctx, cfg)
    ctx.log.emit("peer_ready", port=cfg.listen_port, content=cfg.content, mode=cfg.mode, scheduler=cfg.scheduler,
                 partners=cfg.partners, max_partners=cfg.max_partners, window=cfg.window,
                 hybrid=cfg.hybrid.role if cfg.hybrid else None)
    return await node.run()


if __name__ == "__main__":
    run_role(main)
