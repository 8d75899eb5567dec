"""The VoD catalogue's bytes: a video is CBR, cut into chunks of ``chunk_s`` seconds, each chunk's content
derived from (video, chunk) so that any receiver can check what it got; chunks are spread over ``stripes``
stripes (chunk c belongs to stripe ``c % stripes``) so that several sources can share one stream.

A *share* of a stream is a set of stripes (a bit mask). :data:`ORDER` hands stripes out in bit-reversed
order, so that a share of k stripes is spread evenly over time (8 of 16 stripes = every other chunk) and a
source paces at its share of the play rate without bursts.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Geometry:
    """How every video of the catalogue is cut: ``chunks`` chunks of ``chunk_s`` seconds, ``chunk_bytes`` each
    (``rate_bps * chunk_s / 8``), over ``stripes`` stripes."""

    length_s: float
    rate_bps: int
    chunk_s: float = 0.5
    stripes: int = 16

    @property
    def chunks(self) -> int:
        return max(1, int(round(self.length_s / self.chunk_s)))

    @property
    def chunk_bytes(self) -> int:
        return max(1, int(round(self.rate_bps * self.chunk_s / 8)))

    @property
    def chunk_ms(self) -> int:
        return int(round(self.chunk_s * 1000))

    @property
    def all_stripes(self) -> int:
        return (1 << self.stripes) - 1

    def chunk_of(self, t0: float, now: float) -> int:
        """The first chunk whose send time ``t0 + c * chunk_s`` is not yet past at ``now``."""
        return max(0, math.ceil((now - t0) / self.chunk_s - 1e-9))


def chunk_data(video: int, chunk: int, size: int) -> bytes:
    """The bytes of chunk ``chunk`` of ``video``: an 8-byte header (video, chunk) then a sha256 pattern."""
    head = video.to_bytes(4, "big") + chunk.to_bytes(4, "big")
    seed = hashlib.sha256(b"streambed-vod" + head).digest()
    body = seed * (size // 32 + 1)
    return (head + body)[:size]


def chunk_ok(video: int, chunk: int, data: bytes, size: int) -> bool:
    """True if ``data`` is chunk ``chunk`` of ``video``."""
    return len(data) == size and data == chunk_data(video, chunk, size)


def _bit_reversed(n: int) -> tuple[int, ...]:
    bits = max(1, (n - 1).bit_length())
    order = sorted(range(1 << bits), key=lambda i: int(f"{i:0{bits}b}"[::-1], 2))
    return tuple(i for i in order if i < n)


def stripe_order(stripes: int) -> tuple[int, ...]:
    """Stripes in the order they are handed out (bit-reversed: evenly spread shares)."""
    return _bit_reversed(stripes)


def take_stripes(count: int, taken: int, stripes: int) -> int:
    """A mask of ``count`` stripes not in ``taken``, the first ones in :func:`stripe_order`."""
    mask = 0
    for s in stripe_order(stripes):
        if count <= 0:
            break
        if not taken >> s & 1:
            mask |= 1 << s
            count -= 1
    return mask


def popcount(mask: int) -> int:
    return bin(mask).count("1")


def in_share(chunk: int, mask: int, stripes: int) -> bool:
    return bool(mask >> (chunk % stripes) & 1)


def share_chunks(first: int, end: int, mask: int, stripes: int) -> list[int]:
    """The chunks of ``[first, end)`` in the share ``mask``."""
    return [c for c in range(first, end) if mask >> (c % stripes) & 1]
