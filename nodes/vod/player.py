"""The client's player: plays a session's chunks against their deadlines and logs the viewer events of
docs/bundle.md (``playback_start``, ``chunk_due``, ``stall_start`` / ``stall_end``, ``playback_end``).

Playback starts once the first ``prebuffer_s`` of video (rounded up to whole chunks) are in the store; then
chunk c is due at ``start + c * chunk_s`` plus the time spent stalled so far. A chunk still missing at its
deadline is logged ``on_time: false``, playback stalls until it arrives (or ``max_stall_s`` passes: it is
skipped, ``played: false``), then goes on. ``repair_lead_s`` before a deadline a missing chunk is reported to
``on_missing`` (the session asks the server for it if its source was a multicast channel or failed).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

from nodes.vod.content import Geometry
from nodes.vod.store import ChunkStore

Emit = Callable[..., None]


class Player:
    """Plays one session; ``run()`` returns when the video is over."""

    def __init__(self, emit: Emit, store: ChunkStore, g: Geometry, video: int, prebuffer_s: float = 2.0,
                 max_stall_s: float = 10.0, repair_lead_s: float = 0.8,
                 on_missing: Callable[[int, bool], None] | None = None) -> None:
        self.emit, self.store, self.g, self.video = emit, store, g, video
        self.prebuffer = max(1, min(g.chunks, math.ceil(prebuffer_s / g.chunk_s - 1e-9)))
        self.max_stall_s = max_stall_s
        self.repair_lead_s = repair_lead_s
        self.on_missing = on_missing or (lambda c, urgent: None)
        self.on_time = 0
        self.due = 0
        self.stalls = 0
        self.started_at: float | None = None

    async def run(self, startup_timeout: float = 30.0) -> None:
        deadline = time.time() + startup_timeout
        for c in range(self.prebuffer):
            left = deadline - time.time()
            if await self.store.wait(c, max(0.0, left)) is None:
                self.on_missing(c, True)
                if await self.store.wait(c, 5.0) is None:
                    self.emit("playback_end", stream=self.video, reason="startup timeout")
                    return
        start = time.time()
        self.started_at = start
        self.emit("playback_start", stream=self.video, t=start)
        shift = 0.0
        for c in range(self.g.chunks):
            due = start + c * self.g.chunk_s + shift
            if not self.store.has(c):
                early = due - self.repair_lead_s - time.time()
                if early > 0:
                    await self.store.wait(c, early)
                if not self.store.has(c):
                    self.on_missing(c, False)
                    await self.store.wait(c, due - time.time())
            self.due += 1
            if self.store.has(c):
                self.on_time += 1
                self.emit("chunk_due", chunk=c, on_time=True, bytes=len(self.store.chunks[c]))
                continue
            stalled_at = time.time()
            self.emit("stall_start", chunk=c)
            self.stalls += 1
            got = await self.store.wait(c, 1.0)
            if got is None:
                self.on_missing(c, True)
                got = await self.store.wait(c, self.max_stall_s - 1.0)
            self.emit("chunk_due", t=stalled_at, chunk=c, on_time=False, played=got is not None,
                      bytes=self.g.chunk_bytes)
            self.emit("stall_end", chunk=c, skipped=got is None)
            shift += time.time() - stalled_at
        await asyncio.sleep(max(0.0, start + self.g.chunks * self.g.chunk_s + shift - time.time()))
        self.emit("playback_end", stream=self.video, reason="video over")
