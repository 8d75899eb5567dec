"""Content manager of the streaming peer and source (document 3.3.2.3, 3.3.3): one chunk buffer per content.

- :class:`LiveBuffer`: the sliding windowed buffer of 3.3.3.2, a circular array of ``window`` slots (chunk ``i``
  lives in slot ``i % window``) with an indexer: it holds the ``window`` newest chunk ids at most, so storing a
  newer chunk evicts the ones that fall out of the window. Its buffer map (3.3.3.3) covers ``base`` ..
  ``base + window - 1`` with ``base = max(0, newest - window + 1)``.
- :class:`FileBuffer`: download mode; the content is a file of fixed-size chunks written in place into a
  (sparse) file as they arrive, so a peer's memory does not grow with the file. Its buffer map covers the whole
  file (base 0, window = number of chunks, at most ``wire.MAX_WINDOW``).

Both keep, per chunk, the source's ``created`` time and signature so that a peer forwards a chunk exactly as the
source signed it. Chunk data is kept as the ``bytes`` object that arrived (no copies).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from nodes import wire


@dataclass(slots=True)
class Chunk:
    """One data chunk as the source made it (3.3.3.1): id, data, creation time, signature."""

    id: int
    data: bytes
    created_us: int = 0
    sig_kind: int = wire.SigKind.NONE
    sig: bytes = b""

    @classmethod
    def of(cls, msg: wire.ChunkResp) -> Chunk:
        return cls(msg.chunk, msg.data, msg.created_us, msg.sig_kind, msg.sig)

    def message(self, content: int, data: bytes | None = None) -> wire.ChunkResp:
        """The CHUNK_RESP carrying this chunk (``data`` replaces the data, e.g. to corrupt it on purpose)."""
        return wire.ChunkResp(content, self.id, self.data if data is None else data, self.created_us, self.sig_kind,
                              self.sig)


class LiveBuffer:
    """Circular buffer of the ``window`` newest chunks of one live content."""

    def __init__(self, content: int, window: int = wire.DEFAULT_WINDOW):
        if not 1 <= window <= wire.MAX_WINDOW:
            raise ValueError(f"window {window} not in [1, {wire.MAX_WINDOW}]")
        self.content = content
        self.window = window
        self._slots: list[Chunk | None] = [None] * window
        self.newest = -1  # highest chunk id ever stored
        self.count = 0  # chunks held now
        self.evicted = 0  # chunks dropped because the window slid past them

    @property
    def base(self) -> int:
        """The oldest chunk id the window can hold."""
        return max(0, self.newest - self.window + 1)

    def has(self, chunk: int) -> bool:
        slot = self._slots[chunk % self.window]
        return slot is not None and slot.id == chunk

    def get(self, chunk: int) -> Chunk | None:
        slot = self._slots[chunk % self.window]
        return slot if slot is not None and slot.id == chunk else None

    def put(self, chunk: Chunk) -> bool:
        """Store a chunk; False if it is already held or too old for the window (below ``base``)."""
        cid = chunk.id
        if cid < self.base or self.has(cid):
            return False
        if cid > self.newest:
            self._slide(cid)
        self._slots[cid % self.window] = chunk
        self.count += 1
        return True

    def _slide(self, newest: int) -> None:
        """Advance the window so that ``newest`` is its last id, evicting chunks that fall out of it."""
        # each slot of the ids newly covered now belongs to that id: drop what it held (at most one pass over
        # the window, also when the window jumps past everything it held)
        first = max(self.newest + 1, newest - self.window + 1)
        for cid in range(first, newest + 1):
            i = cid % self.window
            if self._slots[i] is not None:
                self._slots[i] = None
                self.count -= 1
                self.evicted += 1
        self.newest = newest

    def chunk_ids(self) -> list[int]:
        base = self.base
        return [c.id for c in self._slots if c is not None and c.id >= base]

    def buffer_map(self) -> wire.BufferMap:
        return wire.BufferMap.from_chunks(self.content, self.base, self.chunk_ids(), self.window)

    def missing(self, lo: int, hi: int) -> list[int]:
        """Chunk ids in [lo, hi] that are not held."""
        return [c for c in range(max(lo, 0), hi + 1) if not self.has(c)]


class FileBuffer:
    """The chunks of one downloaded file, written in place into ``path`` (download mode)."""

    def __init__(self, content: int, info: wire.ContentInfo, path: str | Path, *, complete: bool = False):
        if info.mode != wire.ContentMode.DOWNLOAD:
            raise ValueError("FileBuffer is for download contents")
        if not 1 <= info.chunks <= wire.MAX_WINDOW:
            raise ValueError(f"{info.chunks} chunks: a buffer map covers 1..{wire.MAX_WINDOW} (use bigger chunks)")
        self.content = content
        self.info = info
        self.path = Path(path)
        self.window = info.chunks
        self.base = 0
        if complete:  # the source's own file, read only
            self._fd = os.open(self.path, os.O_RDONLY)
            if os.fstat(self._fd).st_size != info.total_bytes:
                raise ValueError(f"{self.path}: size differs from the content info")
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            os.ftruncate(self._fd, info.total_bytes)
        self._have = bytearray([1 if complete else 0]) * info.chunks
        self._meta: dict[int, tuple[int, int, bytes]] = {}  # chunk -> (created_us, sig kind, sig)
        self.count = info.chunks if complete else 0
        self.newest = info.chunks - 1 if complete else -1

    def set_signatures(self, meta: dict[int, tuple[int, int, bytes]]) -> None:
        self._meta.update(meta)

    def has(self, chunk: int) -> bool:
        return 0 <= chunk < self.info.chunks and bool(self._have[chunk])

    def get(self, chunk: int) -> Chunk | None:
        if not self.has(chunk):
            return None
        size = self.info.chunk_size(chunk)
        data = os.pread(self._fd, size, chunk * self.info.chunk_bytes)
        created, kind, sig = self._meta.get(chunk, (0, wire.SigKind.NONE, b""))
        return Chunk(chunk, data, created, kind, sig)

    def put(self, chunk: Chunk) -> bool:
        """Write a chunk in place; False if held already or of the wrong id/size."""
        cid = chunk.id
        if not 0 <= cid < self.info.chunks or self._have[cid] or len(chunk.data) != self.info.chunk_size(cid):
            return False
        os.pwrite(self._fd, chunk.data, cid * self.info.chunk_bytes)
        self._have[cid] = 1
        self._meta[cid] = (chunk.created_us, chunk.sig_kind, chunk.sig)
        self.count += 1
        self.newest = max(self.newest, cid)
        return True

    @property
    def complete(self) -> bool:
        return self.count == self.info.chunks

    def chunk_ids(self) -> list[int]:
        return [i for i, h in enumerate(self._have) if h]

    def missing(self, lo: int = 0, hi: int | None = None) -> list[int]:
        top = self.info.chunks - 1 if hi is None else min(hi, self.info.chunks - 1)
        return [i for i in range(max(lo, 0), top + 1) if not self._have[i]]

    def buffer_map(self) -> wire.BufferMap:
        bits = bytearray((self.window + 7) // 8)
        for i, h in enumerate(self._have):
            if h:
                bits[i >> 3] |= 0x80 >> (i & 7)
        return wire.BufferMap(self.content, 0, self.window, bytes(bits))

    def sha256(self) -> str:
        """The hex SHA-256 of the file as it is on disk."""
        h = hashlib.sha256()
        pos = 0
        while pos < self.info.total_bytes:
            piece = os.pread(self._fd, min(1 << 20, self.info.total_bytes - pos), pos)
            if not piece:
                break
            h.update(piece)
            pos += len(piece)
        return h.hexdigest()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
