"""Role ``source``: publishes one content to the overlay, as a live stream or as a file to download.

Live (``mode: live``): a real MPEG-TS media file (``media``, or a CBR test pattern made by nodes/media.py at
``bitrate``) is cut into time-fixed chunks of ``chunk_duration`` seconds (document 3.3.3.1; ``media.chunk_size``
bytes each, a multiple of 188, looping over the file), produced in real time: chunk i is made at
``t0 + i * chunk_duration`` and stored in a sliding buffer of ``window`` chunks. Download (``mode: download``): a
file (``file``, or ``generate_bytes`` of seeded random content) split into ``chunk_bytes`` chunks, all available
at once. Every chunk is signed with the content ``key`` (wire SigKind 2, HMAC-SHA256), and so is the content info
(CONTENT_INFO_RESP: chunk duration and start time, or size, chunk count and the file's SHA-256).

The source registers with the tracker as a member flagged SOURCE (JOIN flags SOURCE | NO_REDIRECT), opens no
partnerships itself (``partners: 0`` by default) and accepts up to ``max_partners``: "the tracker is the only
partner and it has a full buffer map with all the content parts available" (3.3.5). It logs the server events of
docs/bundle.md so the analysis computes the server load: ``bytes_sent`` (bytes written to partners since the
previous one) every ``bytes_interval`` seconds and at exit, and ``stream_start`` / ``stream_end`` per partner
served (a partnership counts as one server stream).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nodes import wire
from nodes.chunk_buffer import Chunk, FileBuffer, LiveBuffer
from nodes.peer_link import Link
from nodes.runtime import NodeContext, run_role
from nodes.stream_node import StreamNode
from nodes.wire import JoinFlag

if TYPE_CHECKING:
    from nodes.source_config import Config

try:  # the lead's media helpers (ffmpeg test pattern); a stand-in with the same interface until they exist
    from nodes import media as _media  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - depends on the tree
    _media = None


# -- media (nodes/media.py when present) ------------------------------------------------------------------------


def chunk_size(bitrate_bps: int, chunk_duration: float) -> int:
    if _media is not None:
        return int(_media.chunk_size(bitrate_bps, chunk_duration))
    return max(188, int(bitrate_bps * chunk_duration / 8) // 188 * 188)


def ensure_ts(bitrate_bps: int, duration_s: float) -> Path:
    if _media is not None:
        return Path(_media.ensure_ts(bitrate_bps, duration_s))
    # stand-in: seeded random bytes of the right size, cached (not decodable media)
    folder = Path(tempfile.gettempdir()) / "streambed-media"
    folder.mkdir(exist_ok=True)
    path = folder / f"standin-{bitrate_bps}-{duration_s:g}.bin"
    size = max(188, int(bitrate_bps * duration_s / 8) // 188 * 188)
    if not path.exists() or path.stat().st_size != size:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(random.Random(bitrate_bps * 1000 + int(duration_s)).randbytes(size))
        tmp.replace(path)
    return path


def read_chunk(path: Path, index: int, size: int) -> bytes:
    if _media is not None:
        return bytes(_media.read_chunk(path, index, size))
    total = path.stat().st_size
    out = bytearray()
    pos = (index * size) % total
    with open(path, "rb") as fh:
        while len(out) < size:
            fh.seek(pos)
            piece = fh.read(size - len(out))
            out += piece
            pos = 0
    return bytes(out)


# -- the source -------------------------------------------------------------------------------------------------


class SourceNode(StreamNode):
    role_label = "source"
    cfg: Config

    def __init__(self, ctx: NodeContext, cfg: Config):
        super().__init__(ctx, cfg)
        self._sent_reported = 0
        self._tmp_file: Path | None = None
        self.media: Path | None = None
        self.size = 0
        self.t0 = 0.0
        self.copies: dict[int, int] = {}  # live: chunk -> times sent (seed_copies)

    def join_flags(self) -> int:
        return JoinFlag.SOURCE | JoinFlag.NO_REDIRECT

    def _sign(self, content: int, cid: int, data: bytes, created_us: int) -> tuple[int, bytes]:
        if self.key is None:
            return wire.SigKind.NONE, b""
        return wire.SigKind.HMAC_SHA256, wire.chunk_mac(self.key, content, cid, created_us, data)

    def _publish_info(self, info: wire.ContentInfo) -> None:
        self.info = info.signed(self.key) if self.key is not None else info

    async def prepare(self) -> None:
        """Media file and content info (live), or the file, its hash and chunk signatures (download)."""
        cfg = self.cfg
        if cfg.mode == "live":
            self.media = Path(cfg.media) if cfg.media else await asyncio.to_thread(ensure_ts, cfg.bitrate,
                                                                                    cfg.media_duration)
            self.size = chunk_size(cfg.bitrate, cfg.chunk_duration)
            self.buffer = LiveBuffer(cfg.content, cfg.window)
            self.t0 = time.time()
            self._publish_info(wire.ContentInfo(cfg.content, wire.ContentMode.LIVE, self.size,
                                                round(cfg.chunk_duration * 1e6), start_us=round(self.t0 * 1e6),
                                                title=cfg.title))
            return
        path, sha, meta = await asyncio.to_thread(self._prepare_file)
        size = path.stat().st_size
        chunks = -(-size // cfg.chunk_bytes)
        info = wire.ContentInfo(cfg.content, wire.ContentMode.DOWNLOAD, cfg.chunk_bytes, total_bytes=size,
                                chunks=chunks, sha256=sha, title=cfg.title)
        self._publish_info(info)
        buf = FileBuffer(cfg.content, info, path, complete=True)
        buf.set_signatures(meta)
        self.buffer = buf

    def _prepare_file(self) -> tuple[Path, bytes, dict[int, tuple[int, int, bytes]]]:
        cfg = self.cfg
        if cfg.file is not None:
            path = Path(cfg.file)
        else:
            assert cfg.generate_bytes is not None
            rng = random.Random(self.ctx.seed)
            fd, name = tempfile.mkstemp(prefix="streambed-source-", suffix=".bin")
            path = self._tmp_file = Path(name)
            with os.fdopen(fd, "wb") as fh:
                left = cfg.generate_bytes
                while left > 0:
                    n = min(left, 1 << 20)
                    fh.write(rng.randbytes(n))
                    left -= n
        whole = hashlib.sha256()
        meta: dict[int, tuple[int, int, bytes]] = {}
        with open(path, "rb") as fh:
            cid = 0
            while piece := fh.read(cfg.chunk_bytes):
                whole.update(piece)
                meta[cid] = (0, *self._sign(cfg.content, cid, piece, 0))
                cid += 1
        if not meta:
            raise ValueError(f"{path}: empty file, nothing to publish")
        if cid > wire.MAX_WINDOW:
            raise ValueError(f"{path}: {cid} chunks; at most {wire.MAX_WINDOW} (raise chunk_bytes)")
        return path, whole.digest(), meta

    # -- hooks ------------------------------------------------------------------------------------------------
    def tasks(self) -> list[Any]:
        out: list[Any] = [self._bytes_loop()]
        if self.cfg.mode == "live":
            out.append(self._produce())
        return out

    def on_chunk_sent(self, link: Link, chunk: Chunk, nbytes: int) -> None:
        if self.cfg.mode == "live":
            self.copies[chunk.id] = self.copies.get(chunk.id, 0) + 1
            if len(self.copies) > 2 * self.cfg.window:
                self.copies = {c: k for c, k in self.copies.items() if c > chunk.id - self.cfg.window}

    def refuse_chunk(self, link: Link, chunk: int) -> bool:
        """Fresh chunks first: a chunk already sent ``seed_copies`` times waits for an idle moment."""
        n = self.cfg.seed_copies
        return bool(n) and self.cfg.mode == "live" and self.copies.get(chunk, 0) >= n and self.upload_busy()

    def on_partner_added(self, link: Link) -> None:
        self.ctx.log.emit("stream_start", stream=f"{link.overlay.side}:{link.peer}", client=link.ip,
                          rate_bps=self.cfg.bitrate if self.cfg.mode == "live" else None)

    def on_partner_removed(self, link: Link) -> None:
        self.ctx.log.emit("stream_end", stream=f"{link.overlay.side}:{link.peer}")

    def _sent(self) -> int:
        c = self.counters()
        return c.data_up + c.control_up

    def _report_bytes(self) -> None:
        sent = self._sent()
        self.ctx.log.emit("bytes_sent", bytes=sent - self._sent_reported)
        self._sent_reported = sent

    async def _bytes_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.bytes_interval)
            self._report_bytes()

    async def _produce(self) -> None:
        """Chunk i is made at t0 + i * duration (real time), signed, and put in the buffer."""
        cfg = self.cfg
        assert self.media is not None and isinstance(self.buffer, LiveBuffer)
        i = 0
        while cfg.produce_for is None or i * cfg.chunk_duration < cfg.produce_for:
            due = self.t0 + i * cfg.chunk_duration
            delay = due - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            data = read_chunk(self.media, i, self.size)
            created = round(due * 1e6)
            kind, sig = self._sign(cfg.content, i, data, created)
            self.buffer.put(Chunk(i, data, created, kind, sig))
            self.bm_dirty = True
            self.ctx.log.emit("chunk_made", chunk=i, bytes=len(data), created=due,
                              late_ms=round((time.time() - due) * 1000, 1))
            i += 1

    async def finish(self) -> None:
        self._report_bytes()
        if isinstance(self.buffer, FileBuffer):
            self.buffer.close()
        if self._tmp_file is not None:
            self._tmp_file.unlink(missing_ok=True)


async def main(ctx: NodeContext, cfg: Config) -> int:
    node = SourceNode(ctx, cfg)
    try:
        await node.prepare()
    except (ValueError, OSError, RuntimeError) as exc:  # no media (ffmpeg), a bad file, too many chunks
        ctx.log.emit("source_error", error=f"{type(exc).__name__}: {exc}")
        return 2
    info = node.info
    assert info is not None
    ctx.log.emit("source_ready", port=cfg.listen_port, content=cfg.content, mode=cfg.mode, title=cfg.title,
                 chunk_bytes=info.chunk_bytes, chunk_s=cfg.chunk_duration if cfg.mode == "live" else None,
                 bytes=info.total_bytes or None, chunks=info.chunks or None, sha256=info.sha256.hex()
                 if cfg.mode == "download" else None, max_partners=cfg.max_partners,
                 media=str(node.media) if node.media else None, stand_in_media=_media is None)
    return await node.run()


if __name__ == "__main__":
    run_role(main)
