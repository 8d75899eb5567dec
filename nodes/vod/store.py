"""A session's chunk store: what a client received of one video, with waiters for chunks still to come.

The store keeps every chunk of the session until the process ends or the session is dropped (a 2-minute
video at 150 kbit/s is 2.25 MB): in the emulation memory is not the constraint, the collaboration windows of
the directory (:mod:`nodes.vod.directory`) are, and they decide what a peer is ever asked to send.
"""

from __future__ import annotations

import asyncio
import time


class ChunkStore:
    """Chunks of one video by id, with their arrival time; ``wait`` for one that is not there yet."""

    def __init__(self) -> None:
        self.chunks: dict[int, bytes] = {}
        self.arrived: dict[int, float] = {}
        self._waiters: dict[int, list[asyncio.Future[bytes]]] = {}

    def has(self, chunk: int) -> bool:
        return chunk in self.chunks

    def put(self, chunk: int, data: bytes) -> bool:
        """Store a chunk; False if it was already there (a duplicate)."""
        if chunk in self.chunks:
            return False
        self.chunks[chunk] = data
        self.arrived[chunk] = time.time()
        for fut in self._waiters.pop(chunk, []):
            if not fut.done():
                fut.set_result(data)
        return True

    async def wait(self, chunk: int, timeout: float | None) -> bytes | None:
        """The chunk, waiting up to ``timeout`` seconds (None: for ever); None if it did not come."""
        if chunk in self.chunks:
            return self.chunks[chunk]
        if timeout is not None and timeout <= 0:
            return None
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(chunk, []).append(fut)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            return None
        finally:
            lst = self._waiters.get(chunk)
            if lst and fut in lst:
                lst.remove(fut)
                if not lst:
                    self._waiters.pop(chunk, None)
