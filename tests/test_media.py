"""The live source's media (nodes/media.py) and the player's real decoder (nodes/decoder.py), without a network.

The generated MPEG-TS file must be constant-rate (so 1-s chunks are a fixed size and really hold 1 s of
stream), and ffmpeg fed the chunks must decode the frames they carry: all of them in order, fewer with a gap.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from nodes import media
from nodes.decoder import Decoder
from nodes.eventlog import EventLog


@pytest.fixture(scope="module")
def ts_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return media.ensure_ts(500_000, 20)


def test_test_pattern_is_constant_rate_transport_stream(ts_file: Path) -> None:
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=format_name,duration,bit_rate",
                            "-of", "json", str(ts_file)], capture_output=True, text=True, check=True)
    fmt = json.loads(probe.stdout)["format"]
    assert fmt["format_name"] == "mpegts"
    assert float(fmt["duration"]) == pytest.approx(20, abs=0.1)
    assert int(fmt["bit_rate"]) == pytest.approx(500_000, rel=0.01)
    size = media.chunk_size(500_000, 1.0)
    assert size % media.TS_PACKET == 0 and abs(size - 62_500) < media.TS_PACKET
    assert media.chunk_count(ts_file, size) == pytest.approx(20, abs=1)
    # Every chunk starts on a TS packet (sync byte 0x47), and the stream loops past the file's end.
    first = media.read_chunk(ts_file, 0, size)
    assert first[0] == 0x47 and media.read_chunk(ts_file, 3, size)[0] == 0x47
    assert media.read_chunk(ts_file, media.chunk_count(ts_file, size), size) == first
    assert media.ensure_ts(500_000, 20) == ts_file  # cached, not regenerated


def _decode(ts_file: Path, chunks: list[int], log_path: Path) -> tuple[int, list[dict]]:
    size = media.chunk_size(500_000, 1.0)

    async def run() -> int:
        with EventLog(log_path, node="n", role="test", proc="dec") as log:
            dec = await Decoder.start(log)
            assert dec is not None
            for i in chunks:
                await dec.feed(media.read_chunk(ts_file, i, size))
            return await dec.close()

    frames = asyncio.run(run())
    return frames, [json.loads(line) for line in log_path.read_text().splitlines()]


def test_decoder_counts_frames_and_fewer_after_a_gap(ts_file: Path, tmp_path: Path) -> None:
    full, events = _decode(ts_file, list(range(10)), tmp_path / "full.jsonl")
    # 10 s at 25 frames/s; a chunk boundary cuts a frame or two, and the decoder may hold back the last GOP's tail.
    assert 235 <= full <= 252, full
    end = [e for e in events if e["event"] == "decoder_end"]
    assert end and end[0]["frames"] == full and end[0]["status"] == 0
    assert end[0]["fed_bytes"] == 10 * media.chunk_size(500_000, 1.0)
    gappy, _ = _decode(ts_file, [0, 1, 2, 3, 6, 7, 8, 9], tmp_path / "gap.jsonl")
    assert full - 60 <= gappy <= full - 40, (full, gappy)
