"""Wire format of the UDP probe: what a probe sender puts in each datagram and how a sink checks it.

Layout (network byte order): magic ``SBPR`` (4 bytes), version (1), flow-name length (1), sequence
number (uint32), send time (float64 epoch seconds), flow name (UTF-8), zero padding up to the configured size.
"""

from __future__ import annotations

import struct

MAGIC = b"SBPR"
VERSION = 1
_HEAD = struct.Struct("!4sBBId")
HEADER_SIZE = _HEAD.size


class BadProbe(ValueError):
    """A datagram that is not a well-formed probe."""


def min_size(flow: str) -> int:
    return HEADER_SIZE + len(flow.encode())


def encode(flow: str, seq: int, sent: float, size: int) -> bytes:
    name = flow.encode()
    head = _HEAD.pack(MAGIC, VERSION, len(name), seq, sent) + name
    if size < len(head):
        raise ValueError(f"probe size {size} is below the minimum {len(head)} for flow {flow!r}")
    return head + bytes(size - len(head))


def decode(data: bytes) -> tuple[str, int, float]:
    """Return (flow, seq, send time); raise BadProbe for anything else."""
    if len(data) < HEADER_SIZE:
        raise BadProbe("short datagram")
    magic, version, name_len, seq, sent = _HEAD.unpack_from(data)
    if magic != MAGIC:
        raise BadProbe("bad magic")
    if version != VERSION:
        raise BadProbe(f"unknown version {version}")
    end = HEADER_SIZE + name_len
    if len(data) < end:
        raise BadProbe("truncated flow name")
    try:
        flow = data[HEADER_SIZE:end].decode()
    except UnicodeDecodeError as exc:
        raise BadProbe("flow name is not UTF-8") from exc
    if sent != sent or sent <= 0:  # NaN or nonsense
        raise BadProbe("bad send time")
    return flow, seq, sent
