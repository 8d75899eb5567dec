"""A real decoder behind the player adapter: ffmpeg reads the played MPEG-TS chunks and discards the frames.

The player adapter (token bucket of the source document's 4.5.2.1) hands each chunk it releases to
:meth:`Decoder.feed`; ffmpeg decodes the stream from its stdin into the ``null`` muxer and reports progress once
a second on its stdout (``-progress``), which becomes ``decoder_progress`` events (``frames`` decoded so far).
:meth:`Decoder.close` ends the input, waits for ffmpeg and logs ``decoder_end`` with the final frame count and
ffmpeg's exit status. A missing chunk is simply not fed: ffmpeg resynchronises on the next TS packet, as a set-top
box would, and the frame count shows what was lost.

Events: ``decoder_start`` (``pid``), ``decoder_progress`` (``frames``, ``fed_bytes``), ``decoder_end``
(``frames``, ``fed_bytes``, ``status``, ``errors``: the last lines ffmpeg printed on stderr, if any),
``decoder_error`` (``error``) when ffmpeg cannot be started or dies; the player keeps playing without it.
"""

from __future__ import annotations

import asyncio
import contextlib

from nodes.eventlog import EventLog

ARGV = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-f", "mpegts", "-i", "pipe:0",
        "-f", "null", "-", "-progress", "pipe:1", "-stats_period", "1"]


class Decoder:
    """One ffmpeg process decoding the played stream."""

    def __init__(self, proc: asyncio.subprocess.Process, log: EventLog):
        self.proc = proc
        self.log = log
        self.frames = 0
        self.fed_bytes = 0
        self.dead = False
        self._stderr: list[str] = []
        self._readers = [asyncio.ensure_future(self._progress()), asyncio.ensure_future(self._errors())]

    @classmethod
    async def start(cls, log: EventLog) -> Decoder | None:
        """Start ffmpeg; None (and a ``decoder_error`` event) when it cannot run."""
        try:
            proc = await asyncio.create_subprocess_exec(*ARGV, stdin=asyncio.subprocess.PIPE,
                                                        stdout=asyncio.subprocess.PIPE,
                                                        stderr=asyncio.subprocess.PIPE)
        except OSError as exc:
            log.emit("decoder_error", error=f"cannot start ffmpeg: {exc}")
            return None
        log.emit("decoder_start", pid=proc.pid)
        return cls(proc, log)

    async def _progress(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            line = raw.decode(errors="replace").strip()
            if line.startswith("frame="):
                with contextlib.suppress(ValueError):
                    self.frames = int(line.split("=", 1)[1])
            elif line.startswith("progress="):
                self.log.emit("decoder_progress", frames=self.frames, fed_bytes=self.fed_bytes)

    async def _errors(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            self._stderr = (self._stderr + [raw.decode(errors="replace").strip()])[-5:]

    async def feed(self, data: bytes) -> None:
        """Give ffmpeg the next played chunk (never raises: a dead decoder is logged once and ignored)."""
        if self.dead or self.proc.stdin is None:
            return
        try:
            self.proc.stdin.write(data)
            await self.proc.stdin.drain()
            self.fed_bytes += len(data)
        except (ConnectionError, OSError) as exc:
            self.dead = True
            self.log.emit("decoder_error", error=f"ffmpeg stopped reading: {exc}")

    async def close(self, timeout: float = 10.0) -> int:
        """End the stream, wait for ffmpeg, log ``decoder_end``; the number of frames decoded."""
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self.proc.stdin.wait_closed()
        try:
            status = await asyncio.wait_for(self.proc.wait(), timeout)
        except (TimeoutError, asyncio.CancelledError):
            self.proc.kill()
            status = await self.proc.wait()
        for reader in self._readers:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(reader, 2.0)
        self.log.emit("decoder_end", frames=self.frames, fed_bytes=self.fed_bytes, status=status,
                      errors=self._stderr)
        return self.frames
