"""The shared wire format (nodes/wire.py): round trips of every message type, and a decoder that nothing can
crash: random bytes, truncated frames, huge lengths, bad CRCs, unknown types, invalid payloads, garbage between
valid frames (it resynchronises and yields every valid frame), any split of the stream. No network needed."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import struct
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodes import wire
from nodes.wire import FrameDecoder, MemberFlag, WireError, decode_frame, encode

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, wire.U32)
pos32 = st.integers(1, wire.U32)
port = st.integers(0, 0xFFFF)
ip = st.ip_addresses(v=4).map(str)
nonce = st.binary(min_size=wire.NONCE_SIZE, max_size=wire.NONCE_SIZE)
proof = st.binary(min_size=wire.PROOF_SIZE, max_size=wire.PROOF_SIZE)


def text(max_bytes: int, min_size: int = 0) -> st.SearchStrategy[str]:
    chars = st.characters(blacklist_categories=("Cc", "Cs"))
    return st.text(chars, min_size=min_size, max_size=max_bytes).filter(lambda s: len(s.encode()) <= max_bytes)


@st.composite
def member(draw: st.DrawFn) -> wire.MemberEntry:
    p = draw(port)
    flags = draw(st.integers(0, 7))
    if p == 0:
        flags &= ~MemberFlag.REACHABLE
    return wire.MemberEntry(draw(pos32), draw(ip), p, flags, draw(u16))


members = st.lists(member(), max_size=30).map(tuple)


@st.composite
def reachable_member(draw: st.DrawFn) -> wire.MemberEntry:
    m = draw(member())
    return wire.MemberEntry(m.peer, m.ip, draw(st.integers(1, 0xFFFF)), m.flags | MemberFlag.REACHABLE, m.partners)


@st.composite
def buffer_map(draw: st.DrawFn) -> wire.BufferMap:
    window = draw(st.one_of(st.just(wire.DEFAULT_WINDOW), st.integers(1, wire.MAX_WINDOW)))
    base = draw(st.integers(0, wire.U32 + 1 - window))
    have = draw(st.sets(st.integers(0, window - 1), max_size=window))
    bm = wire.BufferMap.from_chunks(draw(pos32), base, (base + i for i in have), window)
    maybe = st.one_of(st.just(0), u32)
    return dataclasses.replace(bm, backlog_ms=draw(maybe), up_kbps=draw(maybe))


@st.composite
def chunk_resp(draw: st.DrawFn) -> wire.ChunkResp:
    content, chunk, data = draw(pos32), draw(u32), draw(st.binary(max_size=3000))
    created = draw(st.integers(0, 2**64 - 1))
    kind = draw(st.sampled_from(list(wire.SigKind)))
    if kind == wire.SigKind.SHA256:
        return wire.ChunkResp.hashed(content, chunk, data, created)
    sig = draw(proof) if kind == wire.SigKind.HMAC_SHA256 else b""
    return wire.ChunkResp(content, chunk, data, created, kind, sig)


def codes(enum_cls: type) -> st.SearchStrategy[int]:
    return st.sampled_from([m.value for m in enum_cls])


@st.composite
def content_info(draw: st.DrawFn) -> wire.ContentInfo:
    content, chunk_bytes = draw(pos32), draw(st.integers(1, wire.MAX_PAYLOAD))
    signed = draw(st.booleans())
    kind, sig = (wire.SigKind.HMAC_SHA256, draw(proof)) if signed else (wire.SigKind.NONE, b"")
    title = draw(text(wire.MAX_TEXT))
    if draw(st.booleans()):
        return wire.ContentInfo(content, wire.ContentMode.LIVE, chunk_bytes, draw(st.integers(1, wire.U32)), 0,
                                draw(st.integers(0, 2**64 - 1)), 0, bytes(32), title, kind, sig)
    total = draw(st.integers(0, chunk_bytes * 1000))
    return wire.ContentInfo(content, wire.ContentMode.DOWNLOAD, chunk_bytes, 0, total, 0, -(-total // chunk_bytes),
                            draw(st.binary(min_size=32, max_size=32)), title, kind, sig)


@st.composite
def stripe_range(draw: st.DrawFn, stripes: int = 16, chunks: int = wire.U32) -> tuple[int, int, int]:
    first = draw(st.integers(0, chunks))
    return first, draw(st.integers(first, chunks)), draw(st.integers(1, (1 << stripes) - 1))


@st.composite
def vod_plan(draw: st.DrawFn) -> wire.VodPlan:
    chunks, stripes = draw(st.integers(1, 1 << 20)), draw(st.integers(1, wire.VOD_MAX_STRIPES))
    sources = []
    for _ in range(draw(st.integers(0, 4))):
        first, end, mask = draw(stripe_range(stripes, chunks))
        sources.append(wire.VodSource(draw(codes(wire.VodKind)), draw(ip), draw(port), first, end, mask,
                                      draw(st.integers(0, 2**64 - 1)), draw(u32)))
    return wire.VodPlan(draw(pos32), draw(pos32), chunks, draw(st.integers(1, 60_000)),
                        draw(st.integers(1, wire.MAX_PAYLOAD - 64)), stripes, tuple(sources))


@st.composite
def vod_pull(draw: st.DrawFn) -> wire.VodPull:
    stripes = draw(st.integers(1, wire.VOD_MAX_STRIPES))
    first, end, mask = draw(stripe_range(stripes))
    group = draw(st.one_of(st.just("0.0.0.0"), st.integers(0xE0000000, 0xEFFFFFFF).map(
        lambda n: str(ipaddress.IPv4Address(n)))))
    return wire.VodPull(draw(pos32), draw(pos32), draw(pos32), first, end, stripes, mask,
                        draw(st.integers(0, 2**64 - 1)), group, draw(port))


@st.composite
def vod_lost(draw: st.DrawFn) -> wire.VodLost:
    first, end, mask = draw(stripe_range(wire.VOD_MAX_STRIPES))
    return wire.VodLost(draw(pos32), draw(u32), draw(codes(wire.VodKind)), first, end, mask)


@st.composite
def vod_piece(draw: st.DrawFn) -> wire.VodPiece:
    chunk_len = draw(st.integers(1, 20_000))
    pieces = -(-chunk_len // wire.VOD_MAX_PIECE)
    piece = draw(st.integers(0, pieces - 1))
    size = min(wire.VOD_MAX_PIECE, chunk_len - piece * wire.VOD_MAX_PIECE)
    return wire.VodPiece(draw(pos32), draw(u32), piece, pieces, chunk_len,
                         draw(st.binary(min_size=size, max_size=size)))


MESSAGES: dict[type[wire.Message], st.SearchStrategy[wire.Message]] = {
    wire.Hello: st.builds(wire.Hello, text(wire.MAX_NAME, 1), nonce),
    wire.Challenge: st.builds(wire.Challenge, nonce),
    wire.Auth: st.builds(wire.Auth, proof),
    wire.AuthOk: st.builds(wire.AuthOk, pos32, ip, port, st.integers(1, wire.U32), proof),
    wire.AuthFail: st.builds(wire.AuthFail, codes(wire.AuthFailCode), text(wire.MAX_TEXT)),
    wire.ReachProbe: st.builds(wire.ReachProbe, nonce),
    wire.ReachAck: st.builds(wire.ReachAck, nonce),
    wire.Join: st.builds(wire.Join, pos32, port, st.integers(0, wire.MAX_LIST), st.integers(0, 7)),
    wire.JoinOk: st.builds(wire.JoinOk, pos32, codes(wire.Reach), members),
    wire.Redirect: st.builds(wire.Redirect, pos32, codes(wire.Reach), reachable_member()),
    wire.Leave: st.builds(wire.Leave, u32),
    wire.Membership: st.builds(wire.Membership, pos32, ip, port, u32, st.integers(1, 0xFFFF), u16,
                               st.lists(pos32, max_size=wire.MAX_CONTENTS).map(tuple)),
    wire.MembersReq: st.builds(wire.MembersReq, pos32, st.integers(0, wire.MAX_LIST)),
    wire.MembersResp: st.builds(wire.MembersResp, pos32, members),
    wire.PartnershipReq: st.builds(wire.PartnershipReq, pos32, pos32, u32),
    wire.PartnershipResp: st.builds(wire.PartnershipResp, pos32, pos32, st.booleans(), codes(wire.PartnerReason)),
    wire.PartnershipRemove: st.builds(wire.PartnershipRemove, pos32, pos32, codes(wire.PartnerReason)),
    wire.BufferMap: buffer_map(),
    wire.ContentsReq: st.builds(wire.ContentsReq, text(wire.MAX_NAME)),
    wire.ContentsResp: st.builds(wire.ContentsResp, st.lists(
        st.builds(wire.ContentEntry, pos32, text(wire.MAX_TEXT), u16), max_size=20).map(tuple)),
    wire.ChunkReq: st.builds(wire.ChunkReq, pos32, u32, u32),
    wire.ChunkResp: chunk_resp(),
    wire.Error: st.builds(wire.Error, codes(wire.ErrorCode), u8, text(wire.MAX_TEXT)),
    wire.ContentInfoReq: st.builds(wire.ContentInfoReq, pos32),
    wire.ContentInfo: content_info(),
    wire.VodPlay: st.builds(wire.VodPlay, pos32, pos32, port, st.integers(0, 1)),
    wire.VodPlan: vod_plan(),
    wire.VodPull: vod_pull(),
    wire.VodStatus: st.builds(wire.VodStatus, pos32, codes(wire.VodState)),
    wire.VodLost: vod_lost(),
    wire.VodPiece: vod_piece(),
}
any_message = st.one_of(*MESSAGES.values())


def test_every_type_has_a_strategy() -> None:
    assert set(MESSAGES) == set(wire.MESSAGE_TYPES.values())


def decode_all(data: bytes, pieces: list[int] | None = None) -> tuple[list[wire.Message], FrameDecoder]:
    """Feed ``data`` (in pieces of the given sizes, then the rest), flush, check the byte accounting."""
    dec = FrameDecoder()
    out: list[wire.Message] = []
    pos = 0
    for n in pieces or []:
        out += dec.feed(data[pos:pos + n])
        pos += n
    out += dec.feed(data[pos:])
    out += dec.flush()
    assert dec.pending == 0
    assert dec.control_bytes + dec.data_bytes + dec.rejected_bytes == dec.fed_bytes == len(data)
    assert dec.frames == len(out)
    return out, dec


# -- round trips -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", list(MESSAGES), ids=lambda c: c.__name__)
@given(data=st.data())
@FUZZ
def test_round_trip(cls: type[wire.Message], data: st.DataObject) -> None:
    msg = data.draw(MESSAGES[cls])
    frame = encode(msg)
    assert frame[:2] == wire.MAGIC and frame[2] == wire.VERSION and frame[3] == cls.TYPE
    assert struct.unpack(">I", frame[4:8])[0] == len(frame) - wire.OVERHEAD
    assert decode_frame(frame) == msg
    byte_by_byte, dec = decode_all(frame, [1] * len(frame))
    assert byte_by_byte == [msg] and dec.rejected_bytes == 0
    assert (dec.data_bytes if cls.DATA else dec.control_bytes) == len(frame)
    msg.fields()  # loggable


@given(st.lists(any_message, min_size=1, max_size=12))
@FUZZ
def test_a_stream_of_frames_decodes_in_order(msgs: list[wire.Message]) -> None:
    out, dec = decode_all(b"".join(encode(m) for m in msgs))
    assert out == msgs and dec.rejected_bytes == 0 and dec.rejected_frames == 0


def test_sizes_are_compact() -> None:
    bm = wire.BufferMap.from_chunks(1, 1000, range(1000, 1120, 2))
    assert len(encode(bm)) == wire.OVERHEAD + 10 + 15  # a 120-chunk window is 15 bytes of bitmap
    assert bm.chunks() == list(range(1000, 1120, 2)) and bm.has(1002) and not bm.has(1003) and not bm.has(999)
    chunk = wire.ChunkResp.hashed(1, 7, bytes(1000))
    assert len(encode(chunk)) == wire.OVERHEAD + 17 + 32 + 4 + 1000
    assert len(encode(wire.ChunkReq(1, 7))) == wire.OVERHEAD + 8
    assert len(encode(wire.ChunkReq(1, 7, 2500))) == wire.OVERHEAD + 12  # with the requester's deadline
    assert len(encode(wire.PartnershipReq(1, 7))) == wire.OVERHEAD + 8
    assert len(encode(wire.PartnershipReq(1, 7, 10_000))) == wire.OVERHEAD + 12  # with the asker's upload
    busy = dataclasses.replace(bm, backlog_ms=1500)  # with the supplier's upload backlog
    assert len(encode(busy)) == wire.OVERHEAD + 10 + 15 + 4
    assert decode_frame(encode(busy)) == busy and busy.chunks() == bm.chunks()
    told = dataclasses.replace(busy, up_kbps=512)  # and its upload rate
    assert len(encode(told)) == wire.OVERHEAD + 10 + 15 + 8 and decode_frame(encode(told)) == told
    idle = dataclasses.replace(told, backlog_ms=0)  # the rate alone: the backlog is sent as 0
    assert len(encode(idle)) == wire.OVERHEAD + 10 + 15 + 8 and decode_frame(encode(idle)) == idle


# -- hostile input -----------------------------------------------------------------------------------------------


@given(st.binary(max_size=20000))
@FUZZ
def test_random_bytes_never_crash(data: bytes) -> None:
    out, dec = decode_all(data)
    assert out == [] or all(isinstance(m, wire.Message) for m in out)


@given(st.lists(st.one_of(st.binary(max_size=40), st.just(wire.MAGIC), st.just(wire.MAGIC + b"\x01")),
                max_size=60))
@FUZZ
def test_magic_soup_never_crashes(parts: list[bytes]) -> None:
    decode_all(b"".join(parts))


@st.composite
def garbage(draw: st.DrawFn) -> bytes:
    """Bytes that contain no valid frame but try hard to look like one."""
    kind = draw(st.sampled_from(["random", "magic", "header", "truncated", "flipped", "unknown", "empty"]))
    if kind == "random":
        return draw(st.binary(min_size=1, max_size=300))
    if kind == "magic":
        return draw(st.binary(max_size=10)) + wire.MAGIC + draw(st.binary(max_size=3))
    if kind == "header":  # a plausible header (known type, any length) and some bytes
        t = draw(st.sampled_from(list(wire.MESSAGE_TYPES)))
        return wire.HEADER.pack(wire.MAGIC, wire.VERSION, t, draw(u32)) + draw(st.binary(max_size=50))
    if kind == "unknown":  # a well-formed frame of a type nobody knows
        t = draw(st.integers(0, 255).filter(lambda x: x not in wire.MESSAGE_TYPES))
        body = wire.HEADER.pack(wire.MAGIC, wire.VERSION, t, 5) + b"hello"
        return body + struct.pack(">I", zlib.crc32(body))
    if kind == "empty":
        return b""
    frame = encode(draw(any_message))
    if kind == "truncated":  # at least 5 bytes short: the rest can never complete it by chance
        return frame[:draw(st.integers(0, len(frame) - 5))]
    i = draw(st.integers(0, len(frame) - 1))  # flipped: one byte changed, CRC32 catches it
    return frame[:i] + bytes([frame[i] ^ draw(st.integers(1, 255))]) + frame[i + 1:]


@given(st.lists(st.tuples(garbage(), any_message), max_size=10), garbage(), st.data())
@FUZZ
def test_garbage_between_frames_resynchronises(pairs: list[tuple[bytes, wire.Message]], tail: bytes,
                                               data: st.DataObject) -> None:
    stream = b"".join(g + encode(m) for g, m in pairs) + tail
    msgs = [m for _, m in pairs]
    out, dec = decode_all(stream)
    assert out == msgs
    assert dec.rejected_bytes == len(stream) - sum(len(encode(m)) for m in msgs)
    # the same, fed in arbitrary pieces: same messages, same accounting
    pieces = data.draw(st.lists(st.integers(0, 200), max_size=40))
    out2, dec2 = decode_all(stream, pieces)
    assert out2 == msgs
    assert (dec2.rejected_bytes, dec2.rejected_frames) == (dec.rejected_bytes, dec.rejected_frames)


@given(st.lists(any_message, min_size=2, max_size=8), st.data())
@FUZZ
def test_one_corrupted_frame_costs_only_itself(msgs: list[wire.Message], data: st.DataObject) -> None:
    frames = [encode(m) for m in msgs]
    k = data.draw(st.integers(0, len(frames) - 1))
    i = data.draw(st.integers(0, len(frames[k]) - 1))
    bad = bytearray(frames[k])
    bad[i] ^= data.draw(st.integers(1, 255))
    frames[k] = bytes(bad)
    out, dec = decode_all(b"".join(frames))
    assert out == msgs[:k] + msgs[k + 1:]
    assert dec.rejected_bytes == len(frames[k])


def with_crc(body: bytes) -> bytes:
    return body + struct.pack(">I", zlib.crc32(body))


@pytest.mark.parametrize("type_byte", sorted(wire.MESSAGE_TYPES))
def test_huge_lengths_are_refused_at_the_header(type_byte: int) -> None:
    valid = encode(wire.Leave(3))
    for length in (wire.MAX_PAYLOAD + 1, 0xFFFFFFFF):
        dec = FrameDecoder()
        out = dec.feed(wire.HEADER.pack(wire.MAGIC, wire.VERSION, type_byte, length) + valid)
        assert out == [wire.Leave(3)]  # no waiting for 4 GiB that will never come
        assert dec.rejected_frames == 1 and dec.pending == 0
        assert "length" in dec.take_rejections()[0].reason


def test_a_false_chunk_header_holds_frames_back_until_disproved() -> None:
    valid = encode(wire.Leave(3))
    fake = wire.HEADER.pack(wire.MAGIC, wire.VERSION, wire.MsgType.CHUNK_RESP, 1000)
    dec = FrameDecoder()
    assert dec.feed(fake + valid) == []  # might be a 1000-byte chunk
    assert dec.feed(bytes(1000)) == [wire.Leave(3)]  # its CRC fails: resynchronised, the frame inside is found
    dec = FrameDecoder()
    assert dec.feed(fake + valid) == [] and dec.flush() == [wire.Leave(3)]  # or the stream ends
    assert [r.reason for r in dec.take_rejections() if r.frame] == ["CHUNK_RESP: truncated frame (24 of 1012 bytes)"]


def test_decoder_limit_smaller_than_the_format() -> None:
    chunk = encode(wire.ChunkResp(1, 2, bytes(70000)))
    dec = FrameDecoder(max_payload=wire.CONTROL_MAX)  # e.g. the tracker: no data chunks
    assert dec.feed(chunk + encode(wire.Leave(0))) == [wire.Leave(0)]
    assert dec.rejected_frames == 1


def test_bad_crc_and_unknown_type_and_version_are_rejected_and_counted() -> None:
    good = encode(wire.ChunkReq(1, 2))
    bad_crc = good[:-1] + bytes([good[-1] ^ 1])
    unknown = with_crc(wire.HEADER.pack(wire.MAGIC, wire.VERSION, 0x99, 3) + b"abc")
    version2 = with_crc(wire.HEADER.pack(wire.MAGIC, 2, wire.MsgType.CHUNK_REQ, 8) + good[8:16])
    out, dec = decode_all(bad_crc + good + unknown + good + version2 + good)
    assert out == [wire.ChunkReq(1, 2)] * 3
    reasons = [r.reason for r in dec.take_rejections() if r.frame]
    assert reasons == ["CHUNK_REQ: bad CRC", "unknown type 0x99", "version 2 (expected 1)"]
    assert dec.rejected_frames == 3
    assert dec.rejected_bytes == len(bad_crc) + len(unknown) + len(version2)


INVALID_PAYLOADS = {
    "JOIN unknown flag bits": (wire.MsgType.JOIN, struct.pack(">IHHB", 1, 0, 20, 0x80)),
    "JOIN content 0": (wire.MsgType.JOIN, struct.pack(">IHHB", 0, 0, 20, 0)),
    "JOIN want too large": (wire.MsgType.JOIN, struct.pack(">IHHB", 1, 0, 5000, 0)),
    "AUTH_FAIL unknown code": (wire.MsgType.AUTH_FAIL, b"\x09\x00"),
    "HELLO empty user": (wire.MsgType.HELLO, b"\x00" + bytes(17)),
    "HELLO user not UTF-8": (wire.MsgType.HELLO, b"\x02\xff\xfe" + bytes(16)),
    "HELLO user with a control character": (wire.MsgType.HELLO, b"\x02a\n" + bytes(16)),
    "HELLO string longer than the payload": (wire.MsgType.HELLO, b"\x40abc" + bytes(16)),
    "BUFFER_MAP bits past the window": (wire.MsgType.BUFFER_MAP, struct.pack(">IIH", 1, 0, 4) + b"\x0f"),
    "BUFFER_MAP window 0": (wire.MsgType.BUFFER_MAP, struct.pack(">IIH", 1, 0, 0) + b"\x00"),
    "BUFFER_MAP past chunk id 2^32": (wire.MsgType.BUFFER_MAP, struct.pack(">IIH", 1, wire.U32, 8) + b"\x80"),
    "PARTNERSHIP_RESP accept 2": (wire.MsgType.PARTNERSHIP_RESP, struct.pack(">IIBB", 1, 2, 2, 0)),
    "MEMBERS_RESP count beyond the payload": (wire.MsgType.MEMBERS_RESP, struct.pack(">IH", 1, 3)),
    "MEMBERS_RESP reachable member without port": (
        wire.MsgType.MEMBERS_RESP, struct.pack(">IH", 1, 1) + wire.MEMBER_ENTRY.pack(5, bytes(4), 0, 1, 0)),
    "MEMBERS_RESP trailing bytes": (wire.MsgType.MEMBERS_RESP, struct.pack(">IH", 1, 0) + b"x"),
    "REDIRECT to an unreachable deputy": (
        wire.MsgType.REDIRECT, struct.pack(">IB", 1, 1) + wire.MEMBER_ENTRY.pack(5, bytes(4), 7000, 0, 0)),
    "CHUNK_RESP sha256 mismatch": (
        wire.MsgType.CHUNK_RESP, wire.CHUNK_HEAD.pack(1, 2, 0, 1) + bytes(32) + struct.pack(">I", 3) + b"abc"),
    "CHUNK_RESP unknown sig kind": (
        wire.MsgType.CHUNK_RESP, wire.CHUNK_HEAD.pack(1, 2, 0, 9) + struct.pack(">I", 0)),
    "CHUNK_RESP data length beyond the payload": (
        wire.MsgType.CHUNK_RESP, wire.CHUNK_HEAD.pack(1, 2, 0, 0) + struct.pack(">I", 100) + b"abc"),
    "ERROR unknown code": (wire.MsgType.ERROR, struct.pack(">HB", 999, 0) + b"\x00"),
}


@pytest.mark.parametrize("case", list(INVALID_PAYLOADS))
def test_invalid_payloads_are_rejected_and_the_stream_goes_on(case: str) -> None:
    type_byte, payload = INVALID_PAYLOADS[case]
    frame = with_crc(wire.HEADER.pack(wire.MAGIC, wire.VERSION, type_byte, len(payload)) + payload)
    out, dec = decode_all(frame + encode(wire.Leave(1)))
    assert out == [wire.Leave(1)]
    [rej] = [r for r in dec.take_rejections() if r.frame]
    assert "bad payload" in rej.reason or "length" in rej.reason, rej
    assert dec.rejected_bytes == len(frame)
    with pytest.raises(WireError):
        decode_frame(frame)


@pytest.mark.parametrize("build", [
    lambda: wire.Join(0),
    lambda: wire.Join(1, port=70000),
    lambda: wire.Hello("", bytes(16)),
    lambda: wire.Hello("x" * 65, bytes(16)),
    lambda: wire.Hello("alice", bytes(15)),
    lambda: wire.MemberEntry(1, "10.0.0.300", 1),
    lambda: wire.MemberEntry(1, "10.0.0.1", 0, MemberFlag.REACHABLE),
    lambda: wire.BufferMap(1, 0, 8, b"\x00\x00"),
    lambda: wire.ChunkResp(1, 2, b"abc", sig_kind=wire.SigKind.SHA256, sig=bytes(32)),
    lambda: wire.Membership(1, "10.0.0.1", 1, 1, 0),
    lambda: wire.PartnershipResp(1, 2, 1),  # type: ignore[arg-type]
    lambda: wire.Error(42),
    lambda: wire.MembersResp(1, tuple(wire.MemberEntry(i, "10.0.0.1", 1) for i in range(1, 1002))),
])
def test_invalid_messages_cannot_be_built(build) -> None:
    with pytest.raises(WireError):
        build()


def test_a_chunk_of_an_unknown_content_is_the_receivers_semantic_error() -> None:
    msg = decode_frame(encode(wire.ChunkResp.hashed(999, 5, b"data")))  # well-formed: the decoder accepts it
    assert isinstance(msg, wire.ChunkResp) and msg.content == 999
    with pytest.raises(wire.UnknownContent):
        wire.require_content(msg, known={1, 2})
    wire.require_content(wire.ChunkResp.hashed(1, 5, b"data"), known={1, 2})
    wire.require_content(wire.Leave(0), known={1})  # content 0 = every content


def test_proofs_bind_user_nonces_and_direction() -> None:
    a, b = bytes(16), bytes([1]) * 16
    p = wire.client_proof("s3cret", "alice", a, b)
    assert len(p) == 32
    assert p != wire.client_proof("s3cret", "alice", b, a)
    assert p != wire.client_proof("s3cret", "bob", a, b)
    assert p != wire.client_proof("other", "alice", a, b)
    assert p != wire.server_proof("s3cret", "alice", a, b)


# -- asyncio streams ---------------------------------------------------------------------------------------------


class _Writer:
    def __init__(self) -> None:
        self.out = bytearray()

    def write(self, data: bytes) -> None:
        self.out += data

    async def drain(self) -> None:
        return None

    def close(self) -> None:
        return None

    async def wait_closed(self) -> None:
        return None

    def get_extra_info(self, name: str) -> tuple[str, int]:
        return ("192.0.2.1", 4000)


def test_framed_stream_counts_control_and_data_bytes() -> None:
    async def go() -> None:
        reader = asyncio.StreamReader()
        writer = _Writer()
        rejected: list[wire.Rejected] = []
        s = wire.FramedStream(reader, writer, on_reject=rejected.append)  # type: ignore[arg-type]
        ctrl, chunk = encode(wire.ChunkReq(1, 2)), encode(wire.ChunkResp(1, 2, bytes(500)))
        reader.feed_data(b"junk" + ctrl + chunk[:100])
        assert await s.recv(1) == wire.ChunkReq(1, 2)
        reader.feed_data(chunk[100:])
        reader.feed_eof()
        assert await s.recv(1) == wire.ChunkResp(1, 2, bytes(500))
        assert await s.recv(1) is None
        c = s.counters
        assert (c.control_down, c.data_down, c.rejected_bytes) == (4 + len(ctrl), len(chunk), 4)
        assert [r.nbytes for r in rejected] == [4]
        await s.send(wire.ChunkResp(1, 3, bytes(10)))
        s.write(wire.BufferMap.from_chunks(1, 0, [0, 1]))
        assert c.data_up == wire.OVERHEAD + 17 + 4 + 10 and c.control_up == wire.OVERHEAD + 10 + 15
        assert c.frames_up == 2 and c.frames_down == 2
        assert decode_all(bytes(writer.out))[0][0] == wire.ChunkResp(1, 3, bytes(10))
        s2 = wire.FramedStream(asyncio.StreamReader(), _Writer(), max_rejected_bytes=100)  # type: ignore[arg-type]
        s2.reader.feed_data(bytes(101))
        with pytest.raises(WireError):
            await s2.recv(1)
        with pytest.raises(TimeoutError):
            await wire.FramedStream(asyncio.StreamReader(), _Writer()).recv(0.05)  # type: ignore[arg-type]

    asyncio.run(go())


def test_counters_survive_a_flood_of_garbage_quickly() -> None:
    import random
    import time

    rng = random.Random(1)
    blob = rng.randbytes(1 << 20) + (wire.MAGIC + b"\x01") * 50000
    t0 = time.perf_counter()
    out, dec = decode_all(blob + encode(wire.Leave(2)), [65536] * 20)
    assert out == [wire.Leave(2)]
    assert time.perf_counter() - t0 < 5.0
    assert dec.rejected_frames >= 50000  # every fake header refused at once
