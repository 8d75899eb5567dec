"""Media for the live streaming roles: a real MPEG-TS file, generated with ffmpeg, cut into time-fixed chunks.

The source (``nodes/source.py``) publishes a live stream from a file made here: an ffmpeg test pattern
(``testsrc2`` video in MPEG-2 plus a 440 Hz tone in MP2) muxed into an MPEG transport stream at a constant mux
rate (``-muxrate``: the muxer pads with null packets), so one second of stream is exactly ``bitrate / 8`` bytes
and a time-fixed chunk is a fixed number of bytes. Chunk sizes are whole 188-byte TS packets, so every chunk
starts on a packet boundary and a decoder fed chunks in order (or with gaps) resynchronises at once.

Files are cached by their parameters in ``$STREAMBED_MEDIA_DIR`` (default ``<repo>/.cache/media``), written to a
temporary name and renamed, so concurrent processes never see half a file. ``./bootstrap`` generates the default
500 kbit/s file; any other rate is generated the first time a scenario asks for it (a few seconds).

A live stream longer than the file loops over it (chunk ``i`` is at byte ``(i * size) mod file_size`` ... of a
file whose length is a whole number of chunks): the decoder sees a timestamp jump at each wrap, as at a splice.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

TS_PACKET = 188
REPO = Path(__file__).resolve().parent.parent
DEFAULT_BITRATE = 500_000
DEFAULT_DURATION = 60.0
AUDIO_BPS = 64_000


class MediaError(RuntimeError):
    """ffmpeg is missing or could not make the file."""


def media_dir() -> Path:
    """Where generated media are cached."""
    return Path(os.environ.get("STREAMBED_MEDIA_DIR", REPO / ".cache" / "media"))


def chunk_size(bitrate_bps: int, chunk_duration: float) -> int:
    """Bytes in one time-fixed chunk of a CBR stream: ``bitrate * duration / 8``, rounded to whole TS packets."""
    if bitrate_bps <= 0 or chunk_duration <= 0:
        raise ValueError("bit rate and chunk duration must be positive")
    packets = max(1, round(bitrate_bps * chunk_duration / 8 / TS_PACKET))
    return packets * TS_PACKET


def ts_path(bitrate_bps: int, duration_s: float) -> Path:
    """The cache path of the test-pattern file for these parameters (it may not exist yet)."""
    return media_dir() / f"testpattern-{bitrate_bps}bps-{duration_s:g}s.ts"


def ensure_ts(bitrate_bps: int = DEFAULT_BITRATE, duration_s: float = DEFAULT_DURATION) -> Path:
    """The path of a CBR MPEG-TS test pattern at ``bitrate_bps``, ``duration_s`` long; made with ffmpeg if needed."""
    if bitrate_bps < 150_000:
        raise ValueError(f"bit rate {bitrate_bps} too low for the test pattern (needs >= 150000 bit/s)")
    path = ts_path(bitrate_bps, duration_s)
    if path.is_file() and path.stat().st_size > 0:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    # The mux adds about 10 % (PES/TS headers, PCR); the video gets what is left after the audio.
    video_bps = max(50_000, int(bitrate_bps * 0.8) - AUDIO_BPS)
    fd, tmp = tempfile.mkstemp(prefix=path.stem + ".", suffix=".ts.part", dir=path.parent)
    os.close(fd)
    argv = [
        "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size=320x240:rate=25:duration={duration_s:g}",
        "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={duration_s:g}",
        "-c:v", "mpeg2video", "-b:v", str(video_bps), "-minrate", str(video_bps), "-maxrate", str(video_bps),
        "-bufsize", str(video_bps // 2), "-g", "25",
        "-c:a", "mp2", "-b:a", str(AUDIO_BPS),
        "-f", "mpegts", "-muxrate", str(bitrate_bps), tmp,
    ]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=300)
    except FileNotFoundError as exc:
        os.unlink(tmp)
        raise MediaError("ffmpeg is not installed (./bootstrap installs it)") from exc
    if proc.returncode != 0:
        os.unlink(tmp)
        raise MediaError(f"ffmpeg failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    size = os.path.getsize(tmp)
    if size < TS_PACKET:
        os.unlink(tmp)
        raise MediaError(f"ffmpeg wrote {size} bytes")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path


def chunk_count(path: Path, size: int) -> int:
    """Whole chunks of ``size`` bytes in the file (a live stream loops over these)."""
    return max(1, path.stat().st_size // size)


def read_chunk(path: Path, index: int, size: int) -> bytes:
    """Chunk ``index`` of the stream cut from ``path`` in chunks of ``size`` bytes, looping over the file."""
    if index < 0:
        raise ValueError("chunk index must be >= 0")
    with open(path, "rb") as fh:
        fh.seek((index % chunk_count(path, size)) * size)
        data = fh.read(size)
    if len(data) != size:
        raise MediaError(f"{path}: short chunk {index} ({len(data)} of {size} bytes)")
    return data


def main() -> None:
    """``python -m nodes.media [bitrate] [duration]``: make (or find) the file and print its path."""
    import sys

    bitrate = int(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_BITRATE
    duration = float(sys.argv[2]) if len(sys.argv) > 2 else DEFAULT_DURATION
    print(ensure_ts(bitrate, duration))


if __name__ == "__main__":
    main()
