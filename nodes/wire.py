"""The one binary wire format of every streaming role (tracker, peers, sources, probes): frames, messages, streams.

A frame is::

    magic "\\xb5\\xed" (2) | version 1 (1) | type (1) | length (4, big-endian) | payload (length) | CRC32 (4)

The CRC32 (``zlib.crc32``, big-endian) covers every byte before it, magic included. ``length`` is checked
against the type's own bounds before anything waits for the payload (a chunk response may carry up to
``MAX_PAYLOAD`` = 4 MiB, every control message much less), so a false header found in garbage is disproved
at once in most cases and can at worst hold back the frames behind it until its claimed length has arrived.

:class:`FrameDecoder` takes a byte stream in pieces of any size and returns the messages it carries. Bytes
that are not part of a valid frame are skipped: it scans for the next magic, checks version, type, length and
CRC, and decodes the payload with every field validated. Nothing it is fed can make it raise; each rejection
is recorded as a :class:`Rejected` (reason, bytes) and counted, so a receiver can log it and decide to hang up.
A well-formed frame of a type it does not know is rejected at its header. The decoder's decisions depend only
on the bytes, not on how they were split, and ``accepted + rejected + pending`` always equals the bytes fed.

Messages are frozen dataclasses (:data:`MESSAGE_TYPES`); constructing one validates it, ``encode(msg)`` gives
its frame and ``decode_frame(frame)`` / ``FrameDecoder`` give it back. Payloads are packed with ``struct``,
integers big-endian, strings UTF-8 with a one-byte length (no control characters). Semantic checks that need
the receiver's state (e.g. a chunk of a content it does not carry: :func:`require_content`) are the receiver's.

:class:`FramedStream` reads and writes messages on an asyncio ``StreamReader``/``StreamWriter`` and counts
bytes in both directions, split into control and data (``CHUNK_RESP`` frames) bytes.
The message set and its mapping to the source document: docs/streaming-protocol.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import hmac
import ipaddress
import struct
import zlib
from collections import deque
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

MAGIC = b"\xb5\xed"
VERSION = 1
HEADER = struct.Struct(">2sBBI")  # magic, version, type, payload length
HEADER_SIZE = HEADER.size  # 8
CRC_SIZE = 4
OVERHEAD = HEADER_SIZE + CRC_SIZE
MAX_PAYLOAD = 4 << 20
"""Largest payload of any frame (a chunk response); control messages have much smaller limits."""
CONTROL_MAX = 64 << 10
"""Largest payload of a control message with a list (members, contents)."""
NONCE_SIZE = 16
PROOF_SIZE = 32
MAX_NAME = 64
MAX_TEXT = 255
MAX_LIST = 1000
MAX_CONTENTS = 64
DEFAULT_WINDOW = 120
MAX_WINDOW = 4096
U32 = 0xFFFFFFFF


class WireError(ValueError):
    """A frame or payload that is not valid in this format (also raised when building an invalid message)."""


class UnknownContent(WireError):
    """A well-formed message about a content the receiver does not carry (a semantic error)."""


class MsgType(enum.IntEnum):
    """The type byte of a frame."""

    HELLO = 0x01
    CHALLENGE = 0x02
    AUTH = 0x03
    AUTH_OK = 0x04
    AUTH_FAIL = 0x05
    REACH_PROBE = 0x06
    REACH_ACK = 0x07
    JOIN = 0x10
    JOIN_OK = 0x11
    REDIRECT = 0x12
    LEAVE = 0x13
    MEMBERSHIP = 0x20
    MEMBERS_REQ = 0x21
    MEMBERS_RESP = 0x22
    PARTNERSHIP_REQ = 0x30
    PARTNERSHIP_RESP = 0x31
    PARTNERSHIP_REMOVE = 0x32
    BUFFER_MAP = 0x40
    CONTENTS_REQ = 0x50
    CONTENTS_RESP = 0x51
    CONTENT_INFO_REQ = 0x52
    CONTENT_INFO_RESP = 0x53
    CHUNK_REQ = 0x60
    CHUNK_RESP = 0x61
    ERROR = 0x7F
    VOD_PLAY = 0x80
    VOD_PLAN = 0x81
    VOD_PULL = 0x82
    VOD_STATUS = 0x83
    VOD_LOST = 0x84
    VOD_PIECE = 0x85


class ErrorCode(enum.IntEnum):
    """``Error.code`` values."""

    NOT_AUTHENTICATED = 1
    UNKNOWN_CONTENT = 2
    UNEXPECTED = 3
    UNSUPPORTED = 4
    BAD_REQUEST = 5
    NO_SUCH_CHUNK = 6
    BUSY = 7


class AuthFailCode(enum.IntEnum):
    """``AuthFail.code`` values (the tracker never says which of user or secret was wrong)."""

    BAD_CREDENTIALS = 1
    PROTOCOL = 2
    TIMEOUT = 3


class MemberFlag(enum.IntFlag):
    """Bits of ``MemberEntry.flags``."""

    REACHABLE = 0x01  # accepts inbound connections (the tracker's connect-back test passed)
    SOURCE = 0x02  # produces the content
    TRACKER = 0x04  # a local tracker (chapter 4: a main node's tracker for its ad-hoc scope)


class JoinFlag(enum.IntFlag):
    """Bits of ``Join.flags``."""

    SOURCE = 0x01  # the joining peer is a source of the content (may publish a content the tracker lacks)
    NO_REDIRECT = 0x02  # answer with members, never with a deputy (sources, local trackers, redirected peers)
    LOCAL_TRACKER = 0x04  # a local tracker registering its scope with its upstream


class Reach(enum.IntEnum):
    """``JoinOk.reachable``: the result of the tracker's connect-back test of the joining peer."""

    NO = 0
    YES = 1
    UNTESTED = 2  # the peer gave no listening port


class PartnerReason(enum.IntEnum):
    """``PartnershipResp.reason`` / ``PartnershipRemove.reason``."""

    OK = 0
    FULL = 1
    UNKNOWN_CONTENT = 2
    LEAVING = 3
    POOR = 4  # the member scheduler replaces a partner whose buffer maps are stale or useless
    OTHER = 5


class SigKind(enum.IntEnum):
    """``ChunkResp.sig_kind``: what ``ChunkResp.sig`` holds."""

    NONE = 0  # no signature (sig is empty)
    SHA256 = 1  # sha256(data); checked by the decoder
    HMAC_SHA256 = 2  # HMAC-SHA256(source key, content | chunk | created_us | data); checked by the receiver


class ContentMode(enum.IntEnum):
    """``ContentInfo.mode``: how a content is distributed."""

    LIVE = 0  # time-fixed chunks produced in real time; viewers play them against deadlines
    DOWNLOAD = 1  # a file split into fixed-size chunks; fetched rarest-first, no deadlines


# -- payload reading and writing --------------------------------------------------------------------------------


class _Reader:
    """A cursor over one payload; every read checks that the bytes are there."""

    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes):
        self.buf = buf
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.buf):
            raise WireError(f"{what}: payload ends after {len(self.buf)} bytes")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        return int.from_bytes(self.take(2, what), "big")

    def u32(self, what: str) -> int:
        return int.from_bytes(self.take(4, what), "big")

    def u64(self, what: str) -> int:
        return int.from_bytes(self.take(8, what), "big")

    def text(self, what: str) -> str:
        raw = self.take(self.u8(what), what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise WireError(f"{what}: not UTF-8") from None

    def ip(self, what: str) -> str:
        return str(ipaddress.IPv4Address(self.take(4, what)))

    def end(self, what: str) -> None:
        if self.pos != len(self.buf):
            raise WireError(f"{what}: {len(self.buf) - self.pos} unexpected bytes after the last field")


def _text(value: str) -> bytes:
    raw = value.encode("utf-8")
    return bytes([len(raw)]) + raw


def _check_int(name: str, value: Any, lo: int, hi: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise WireError(f"{name}: {value!r} is not an integer in [{lo}, {hi}]")


def _check_text(name: str, value: Any, max_bytes: int, *, empty: bool = True) -> None:
    if not isinstance(value, str):
        raise WireError(f"{name}: not a string")
    if not empty and not value:
        raise WireError(f"{name}: empty")
    if len(value.encode("utf-8", "surrogatepass")) > max_bytes:
        raise WireError(f"{name}: longer than {max_bytes} bytes")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 or 0xD800 <= ord(c) <= 0xDFFF for c in value):
        raise WireError(f"{name}: control or surrogate characters")


def _check_bytes(name: str, value: Any, size: int | None = None, max_size: int | None = None) -> None:
    if not isinstance(value, bytes):
        raise WireError(f"{name}: not bytes")
    if size is not None and len(value) != size:
        raise WireError(f"{name}: {len(value)} bytes, expected {size}")
    if max_size is not None and len(value) > max_size:
        raise WireError(f"{name}: {len(value)} bytes, at most {max_size}")


def _check_ip(name: str, value: Any) -> None:
    if not isinstance(value, str):
        raise WireError(f"{name}: not an IPv4 address")
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        raise WireError(f"{name}: {value!r} is not an IPv4 address") from None


def _check_enum(name: str, value: Any, enum_cls: type[enum.IntEnum]) -> None:
    _check_int(name, value, 0, 0xFFFF)
    if value not in {m.value for m in enum_cls}:
        raise WireError(f"{name}: {value} is not a known {enum_cls.__name__}")


def _check_flags(name: str, value: Any, flag_cls: type[enum.IntFlag]) -> None:
    _check_int(name, value, 0, 0xFF)
    known = 0
    for member in flag_cls:
        known |= member.value
    if value & ~known:
        raise WireError(f"{name}: unknown bits 0x{value & ~known:02x}")


# -- messages ---------------------------------------------------------------------------------------------------


class Message:
    """Base of every message: its type byte, payload bounds, validation, payload packing."""

    __slots__ = ()
    TYPE: ClassVar[MsgType]
    MIN_LEN: ClassVar[int] = 0
    MAX_LEN: ClassVar[int] = CONTROL_MAX
    DATA: ClassVar[bool] = False  # counted as data bytes (chunk payloads), not control bytes

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise WireError if a field is out of range."""

    def pack(self) -> bytes:
        raise NotImplementedError

    @classmethod
    def unpack(cls, r: _Reader) -> Message:
        raise NotImplementedError

    def fields(self) -> dict[str, Any]:
        """The fields as plain JSON-able values (bytes as hex), for event logs."""
        out: dict[str, Any] = {}
        for f in fields(self):  # type: ignore[arg-type]
            out[f.name] = _plain(getattr(self, f.name))
        return out


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex() if len(value) <= 64 else f"<{len(value)} bytes>"
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, Message | MemberEntry | ContentEntry):
        return value.fields()
    return value


@dataclass(frozen=True, slots=True)
class Hello(Message):
    """Client -> tracker, first message: who I am, and a fresh nonce for the tracker's proof."""

    TYPE: ClassVar[MsgType] = MsgType.HELLO
    MIN_LEN: ClassVar[int] = 2 + NONCE_SIZE
    MAX_LEN: ClassVar[int] = 1 + MAX_NAME + NONCE_SIZE
    user: str
    nonce: bytes

    def validate(self) -> None:
        _check_text("user", self.user, MAX_NAME, empty=False)
        _check_bytes("nonce", self.nonce, NONCE_SIZE)

    def pack(self) -> bytes:
        return _text(self.user) + self.nonce

    @classmethod
    def unpack(cls, r: _Reader) -> Hello:
        return cls(r.text("user"), r.take(NONCE_SIZE, "nonce"))


@dataclass(frozen=True, slots=True)
class Challenge(Message):
    """Tracker -> client: the tracker's nonce; ``alg`` 1 = HMAC-SHA256 (the only one)."""

    TYPE: ClassVar[MsgType] = MsgType.CHALLENGE
    MIN_LEN: ClassVar[int] = NONCE_SIZE + 1
    MAX_LEN: ClassVar[int] = NONCE_SIZE + 1
    nonce: bytes
    alg: int = 1

    def validate(self) -> None:
        _check_bytes("nonce", self.nonce, NONCE_SIZE)
        _check_int("alg", self.alg, 1, 1)

    def pack(self) -> bytes:
        return self.nonce + bytes([self.alg])

    @classmethod
    def unpack(cls, r: _Reader) -> Challenge:
        return cls(r.take(NONCE_SIZE, "nonce"), r.u8("alg"))


@dataclass(frozen=True, slots=True)
class Auth(Message):
    """Client -> tracker: the proof that the user knows the secret (see :func:`client_proof`)."""

    TYPE: ClassVar[MsgType] = MsgType.AUTH
    MIN_LEN: ClassVar[int] = PROOF_SIZE
    MAX_LEN: ClassVar[int] = PROOF_SIZE
    proof: bytes

    def validate(self) -> None:
        _check_bytes("proof", self.proof, PROOF_SIZE)

    def pack(self) -> bytes:
        return self.proof

    @classmethod
    def unpack(cls, r: _Reader) -> Auth:
        return cls(r.take(PROOF_SIZE, "proof"))


@dataclass(frozen=True, slots=True)
class AuthOk(Message):
    """Tracker -> client: the peer id, the address the tracker sees, the heartbeat period, the tracker's proof."""

    TYPE: ClassVar[MsgType] = MsgType.AUTH_OK
    MIN_LEN: ClassVar[int] = 4 + 4 + 2 + 4 + PROOF_SIZE
    MAX_LEN: ClassVar[int] = MIN_LEN
    peer: int
    ip: str
    port: int
    heartbeat_ms: int
    proof: bytes

    def validate(self) -> None:
        _check_int("peer", self.peer, 1, U32)
        _check_ip("ip", self.ip)
        _check_int("port", self.port, 0, 0xFFFF)
        _check_int("heartbeat_ms", self.heartbeat_ms, 1, U32)
        _check_bytes("proof", self.proof, PROOF_SIZE)

    def pack(self) -> bytes:
        return struct.pack(">I4sHI", self.peer, ipaddress.IPv4Address(self.ip).packed, self.port,
                           self.heartbeat_ms) + self.proof

    @classmethod
    def unpack(cls, r: _Reader) -> AuthOk:
        return cls(r.u32("peer"), r.ip("ip"), r.u16("port"), r.u32("heartbeat_ms"), r.take(PROOF_SIZE, "proof"))


@dataclass(frozen=True, slots=True)
class AuthFail(Message):
    """Tracker -> client: refused; the connection is closed after it."""

    TYPE: ClassVar[MsgType] = MsgType.AUTH_FAIL
    MIN_LEN: ClassVar[int] = 2
    MAX_LEN: ClassVar[int] = 2 + MAX_TEXT
    code: int
    reason: str = ""

    def validate(self) -> None:
        _check_enum("code", self.code, AuthFailCode)
        _check_text("reason", self.reason, MAX_TEXT)

    def pack(self) -> bytes:
        return bytes([self.code]) + _text(self.reason)

    @classmethod
    def unpack(cls, r: _Reader) -> AuthFail:
        return cls(r.u8("code"), r.text("reason"))


@dataclass(frozen=True, slots=True)
class ReachProbe(Message):
    """Tracker -> a peer's listening port (connect-back test): answer with REACH_ACK and the same token."""

    TYPE: ClassVar[MsgType] = MsgType.REACH_PROBE
    MIN_LEN: ClassVar[int] = NONCE_SIZE
    MAX_LEN: ClassVar[int] = NONCE_SIZE
    token: bytes

    def validate(self) -> None:
        _check_bytes("token", self.token, NONCE_SIZE)

    def pack(self) -> bytes:
        return self.token

    @classmethod
    def unpack(cls, r: _Reader) -> ReachProbe:
        return cls(r.take(NONCE_SIZE, "token"))


@dataclass(frozen=True, slots=True)
class ReachAck(Message):
    """Peer -> tracker on the connect-back connection: the token of the REACH_PROBE."""

    TYPE: ClassVar[MsgType] = MsgType.REACH_ACK
    MIN_LEN: ClassVar[int] = NONCE_SIZE
    MAX_LEN: ClassVar[int] = NONCE_SIZE
    token: bytes

    def validate(self) -> None:
        _check_bytes("token", self.token, NONCE_SIZE)

    def pack(self) -> bytes:
        return self.token

    @classmethod
    def unpack(cls, r: _Reader) -> ReachAck:
        return cls(r.take(NONCE_SIZE, "token"))


MEMBER_ENTRY = struct.Struct(">I4sHBH")  # peer, ip, port, flags, partners


@dataclass(frozen=True, slots=True)
class MemberEntry:
    """One member in a list: how to reach it, whether it accepts inbound connections, how loaded it is."""

    peer: int
    ip: str
    port: int
    flags: int = 0
    partners: int = 0

    def __post_init__(self) -> None:
        _check_int("member.peer", self.peer, 1, U32)
        _check_ip("member.ip", self.ip)
        _check_int("member.port", self.port, 0, 0xFFFF)
        _check_flags("member.flags", self.flags, MemberFlag)
        _check_int("member.partners", self.partners, 0, 0xFFFF)
        if self.port == 0 and self.flags & MemberFlag.REACHABLE:
            raise WireError("member: reachable without a port")

    @property
    def reachable(self) -> bool:
        return bool(self.flags & MemberFlag.REACHABLE)

    def pack(self) -> bytes:
        return MEMBER_ENTRY.pack(self.peer, ipaddress.IPv4Address(self.ip).packed, self.port, self.flags,
                                 self.partners)

    @classmethod
    def unpack(cls, r: _Reader) -> MemberEntry:
        peer, ip, port, flags, partners = MEMBER_ENTRY.unpack(r.take(MEMBER_ENTRY.size, "member"))
        return cls(peer, str(ipaddress.IPv4Address(ip)), port, flags, partners)

    def fields(self) -> dict[str, Any]:
        return {"peer": self.peer, "ip": self.ip, "port": self.port, "reachable": self.reachable,
                "source": bool(self.flags & MemberFlag.SOURCE), "tracker": bool(self.flags & MemberFlag.TRACKER),
                "partners": self.partners}


def _check_members(members: Any) -> None:
    if not isinstance(members, tuple):
        raise WireError("members: not a tuple")
    if len(members) > MAX_LIST:
        raise WireError(f"members: more than {MAX_LIST}")
    for m in members:
        if not isinstance(m, MemberEntry):
            raise WireError("members: not a MemberEntry")


def _pack_members(members: tuple[MemberEntry, ...]) -> bytes:
    return struct.pack(">H", len(members)) + b"".join(m.pack() for m in members)


def _unpack_members(r: _Reader) -> tuple[MemberEntry, ...]:
    n = r.u16("member count")
    if n > MAX_LIST:
        raise WireError(f"member count {n} > {MAX_LIST}")
    return tuple(MemberEntry.unpack(r) for _ in range(n))


@dataclass(frozen=True, slots=True)
class Join(Message):
    """Peer -> tracker: join a content (the tracker's membership of it); ``port`` 0 = accepts no inbound."""

    TYPE: ClassVar[MsgType] = MsgType.JOIN
    MIN_LEN: ClassVar[int] = 9
    MAX_LEN: ClassVar[int] = 9
    content: int
    port: int = 0
    want: int = 20
    flags: int = 0

    def validate(self) -> None:
        _check_int("content", self.content, 1, U32)
        _check_int("port", self.port, 0, 0xFFFF)
        _check_int("want", self.want, 0, MAX_LIST)
        _check_flags("flags", self.flags, JoinFlag)

    def pack(self) -> bytes:
        return struct.pack(">IHHB", self.content, self.port, self.want, self.flags)

    @classmethod
    def unpack(cls, r: _Reader) -> Join:
        return cls(r.u32("content"), r.u16("port"), r.u16("want"), r.u8("flags"))


@dataclass(frozen=True, slots=True)
class JoinOk(Message):
    """Tracker -> peer: a (seeded random) subset of the content's members; ``reachable`` = the connect-back result."""

    TYPE: ClassVar[MsgType] = MsgType.JOIN_OK
    MIN_LEN: ClassVar[int] = 7
    MAX_LEN: ClassVar[int] = 7 + MAX_LIST * MEMBER_ENTRY.size
    content: int
    reachable: int
    members: tuple[MemberEntry, ...] = ()

    def validate(self) -> None:
        _check_int("content", self.content, 1, U32)
        _check_enum("reachable", self.reachable, Reach)
        _check_members(self.members)

    def pack(self) -> bytes:
        return struct.pack(">IB", self.content, self.reachable) + _pack_members(self.members)

    @classmethod
    def unpack(cls, r: _Reader) -> JoinOk:
        return cls(r.u32("content"), r.u8("reachable"), _unpack_members(r))


@dataclass(frozen=True, slots=True)
class Redirect(Message):
    """Tracker -> peer: ask this deputy (a member) for members instead (load balancing, section 3.3.5)."""

    TYPE: ClassVar[MsgType] = MsgType.REDIRECT
    MIN_LEN: ClassVar[int] = 5 + MEMBER_ENTRY.size
    MAX_LEN: ClassVar[int] = MIN_LEN
    content: int
    reachable: int
    deputy: MemberEntry

    def validate(self) -> None:
        _check_int("content", self.content, 1, U32)
        _check_enum("reachable", self.reachable, Reach)
        if not isinstance(self.deputy, MemberEntry):
            raise WireError("deputy: not a MemberEntry")
        if not self.deputy.reachable:
            raise WireError("deputy: not reachable")

    def pack(self) -> bytes:
        return struct.pack(">IB", self.content, self.reachable) + self.deputy.pack()

    @classmethod
    def unpack(cls, r: _Reader) -> Redirect:
        return cls(r.u32("content"), r.u8("reachable"), MemberEntry.unpack(r))


@dataclass(frozen=True, slots=True)
class Leave(Message):
    """Peer -> tracker (or partner): leaving a content; content 0 = every content."""

    TYPE: ClassVar[MsgType] = MsgType.LEAVE
    MIN_LEN: ClassVar[int] = 4
    MAX_LEN: ClassVar[int] = 4
    content: int = 0

    def validate(self) -> None:
        _check_int("content", self.content, 0, U32)

    def pack(self) -> bytes:
        return struct.pack(">I", self.content)

    @classmethod
    def unpack(cls, r: _Reader) -> Leave:
        return cls(r.u32("content"))


@dataclass(frozen=True, slots=True)
class Membership(Message):
    """Periodic announcement (and tracker heartbeat): id, contact, sequence, time to live, partners, contents."""

    TYPE: ClassVar[MsgType] = MsgType.MEMBERSHIP
    MIN_LEN: ClassVar[int] = 19
    MAX_LEN: ClassVar[int] = 19 + 4 * MAX_CONTENTS
    peer: int
    ip: str
    port: int
    seq: int
    ttl: int
    partners: int = 0
    contents: tuple[int, ...] = ()

    def validate(self) -> None:
        _check_int("peer", self.peer, 1, U32)
        _check_ip("ip", self.ip)
        _check_int("port", self.port, 0, 0xFFFF)
        _check_int("seq", self.seq, 0, U32)
        _check_int("ttl", self.ttl, 1, 0xFFFF)
        _check_int("partners", self.partners, 0, 0xFFFF)
        if not isinstance(self.contents, tuple) or len(self.contents) > MAX_CONTENTS:
            raise WireError(f"contents: not a tuple of at most {MAX_CONTENTS}")
        for c in self.contents:
            _check_int("contents[]", c, 1, U32)

    def pack(self) -> bytes:
        return (struct.pack(">I4sHIHHB", self.peer, ipaddress.IPv4Address(self.ip).packed, self.port, self.seq,
                            self.ttl, self.partners, len(self.contents))
                + b"".join(struct.pack(">I", c) for c in self.contents))

    @classmethod
    def unpack(cls, r: _Reader) -> Membership:
        peer, ip, port = r.u32("peer"), r.ip("ip"), r.u16("port")
        seq, ttl, partners = r.u32("seq"), r.u16("ttl"), r.u16("partners")
        n = r.u8("content count")
        return cls(peer, ip, port, seq, ttl, partners, tuple(r.u32("content") for _ in range(n)))


@dataclass(frozen=True, slots=True)
class MembersReq(Message):
    """Ask a member (or the tracker) for up to ``want`` members sharing a content."""

    TYPE: ClassVar[MsgType] = MsgType.MEMBERS_REQ
    MIN_LEN: ClassVar[int] = 6
    MAX_LEN: ClassVar[int] = 6
    content: int
    want: int = 20

    def validate(self) -> None:
        _check_int("content", self.content, 1, U32)
        _check_int("want", self.want, 0, MAX_LIST)

    def pack(self) -> bytes:
        return struct.pack(">IH", self.content, self.want)

    @classmethod
    def unpack(cls, r: _Reader) -> MembersReq:
        return cls(r.u32("content"), r.u16("want"))


@dataclass(frozen=True, slots=True)
class MembersResp(Message):
    """The members the answering node knows for the content."""

    TYPE: ClassVar[MsgType] = MsgType.MEMBERS_RESP
    MIN_LEN: ClassVar[int] = 6
    MAX_LEN: ClassVar[int] = 6 + MAX_LIST * MEMBER_ENTRY.size
    content: int
    members: tuple[MemberEntry, ...] = ()

    def validate(self) -> None:
        _check_int("content", self.content, 1, U32)
        _check_members(self.members)

    def pack(self) -> bytes:
        return struct.pack(">I", self.content) + _pack_members(self.members)

    @classmethod
    def unpack(cls, r: _Reader) -> MembersResp:
        return cls(r.u32("content"), _unpack_members(r))


@dataclass(frozen=True, slots=True)
class PartnershipReq(Message):
    """Ask a member to become partners for a content (``peer`` = the asking peer's id). ``upload_kbps``: the upload
    the asking node says it has (0 = not said; the field is then left out, so the payload is 8 or 12 bytes); a
    node that prefers uploaders (the source) may replace a much slower partner by it when full."""

    TYPE: ClassVar[MsgType] = MsgType.PARTNERSHIP_REQ
    MIN_LEN: ClassVar[int] = 8
    MAX_LEN: ClassVar[int] = 12
    content: int
    peer: int
    upload_kbps: int = 0

    def validate(self) -> None:
        _check_int("content", self.content, 1, U32)
        _check_int("peer", self.peer, 1, U32)
        _check_int("upload_kbps", self.upload_kbps, 0, U32)

    def pack(self) -> bytes:
        if self.upload_kbps:
            return struct.pack(">III", self.content, self.peer, self.upload_kbps)
        return struct.pack(">II", self.content, self.peer)

    @classmethod
    def unpack(cls, r: _Reader) -> PartnershipReq:
        content, peer = r.u32("content"), r.u32("peer")
        return cls(content, peer, r.u32("upload_kbps") if r.pos < len(r.buf) else 0)


@dataclass(frozen=True, slots=True)
class PartnershipResp(Message):
    """Accept or refuse a partnership (``peer`` = the answering peer's id)."""

    TYPE: ClassVar[MsgType] = MsgType.PARTNERSHIP_RESP
    MIN_LEN: ClassVar[int] = 10
    MAX_LEN: ClassVar[int] = 10
    content: int
    peer: int
    accept: bool
    reason: int = PartnerReason.OK

    def validate(self) -> None:
        _check_int("content", self.content, 1, U32)
        _check_int("peer", self.peer, 1, U32)
        if not isinstance(self.accept, bool):
            raise WireError("accept: not a bool")
        _check_enum("reason", self.reason, PartnerReason)

    def pack(self) -> bytes:
        return struct.pack(">IIBB", self.content, self.peer, int(self.accept), self.reason)

    @classmethod
    def unpack(cls, r: _Reader) -> PartnershipResp:
        content, peer, accept = r.u32("content"), r.u32("peer"), r.u8("accept")
        if accept > 1:
            raise WireError(f"accept: {accept} is not 0 or 1")
        return cls(content, peer, bool(accept), r.u8("reason"))


@dataclass(frozen=True, slots=True)
class PartnershipRemove(Message):
    """End a partnership; no answer (both sides drop it)."""

    TYPE: ClassVar[MsgType] = MsgType.PARTNERSHIP_REMOVE
    MIN_LEN: ClassVar[int] = 9
    MAX_LEN: ClassVar[int] = 9
    content: int
    peer: int
    reason: int = PartnerReason.OK

    def validate(self) -> None:
        _check_int("content", self.content, 1, U32)
        _check_int("peer", self.peer, 1, U32)
        _check_enum("reason", self.reason, PartnerReason)

    def pack(self) -> bytes:
        return struct.pack(">IIB", self.content, self.peer, self.reason)

    @classmethod
    def unpack(cls, r: _Reader) -> PartnershipRemove:
        return cls(r.u32("content"), r.u32("peer"), r.u8("reason"))


@dataclass(frozen=True, slots=True)
class BufferMap(Message):
    """Which chunks ``base`` .. ``base + window - 1`` of a content the sender holds (bit i of the bitmap, MSB first
    = chunk ``base + i``; the bits past ``window`` in the last byte are zero). ``backlog_ms``: how long the chunk
    requests the sender has queued for upload (from all its partners) take at its measured upload rate, so a
    requester can tell a busy supplier from an idle one before it asks (0 = none or unknown). ``up_kbps``: the
    sender's upload rate (measured while it had chunks to send, else what it says it has; 0 = unknown). Both are
    optional: left out when 0, ``backlog_ms`` (4 bytes) is sent when either is set, ``up_kbps`` (4) after it."""

    TYPE: ClassVar[MsgType] = MsgType.BUFFER_MAP
    MIN_LEN: ClassVar[int] = 11
    MAX_LEN: ClassVar[int] = 18 + MAX_WINDOW // 8
    content: int
    base: int
    window: int
    bitmap: bytes
    backlog_ms: int = 0
    up_kbps: int = 0

    def validate(self) -> None:
        _check_int("content", self.content, 1, U32)
        _check_int("window", self.window, 1, MAX_WINDOW)
        _check_int("base", self.base, 0, U32 + 1 - self.window)
        _check_bytes("bitmap", self.bitmap, (self.window + 7) // 8)
        spare = len(self.bitmap) * 8 - self.window
        if spare and self.bitmap[-1] & ((1 << spare) - 1):
            raise WireError("bitmap: bits set past the window")
        _check_int("backlog_ms", self.backlog_ms, 0, U32)
        _check_int("up_kbps", self.up_kbps, 0, U32)

    @classmethod
    def from_chunks(cls, content: int, base: int, have: Iterable[int], window: int = DEFAULT_WINDOW) -> BufferMap:
        """The map of the chunks in ``have`` that fall in the window (others are ignored)."""
        bits = bytearray((window + 7) // 8)
        for chunk in have:
            i = chunk - base
            if 0 <= i < window:
                bits[i >> 3] |= 0x80 >> (i & 7)
        return cls(content, base, window, bytes(bits))

    def has(self, chunk: int) -> bool:
        i = chunk - self.base
        return 0 <= i < self.window and bool(self.bitmap[i >> 3] & (0x80 >> (i & 7)))

    def chunks(self) -> list[int]:
        """The chunk ids the map says are held, ascending."""
        return [self.base + i for i in range(self.window) if self.bitmap[i >> 3] & (0x80 >> (i & 7))]

    def pack(self) -> bytes:
        head = struct.pack(">IIH", self.content, self.base, self.window) + self.bitmap
        if self.up_kbps:
            return head + struct.pack(">II", self.backlog_ms, self.up_kbps)
        return head + struct.pack(">I", self.backlog_ms) if self.backlog_ms else head

    @classmethod
    def unpack(cls, r: _Reader) -> BufferMap:
        content, base, window = r.u32("content"), r.u32("base"), r.u16("window")
        if not 1 <= window <= MAX_WINDOW:
            raise WireError(f"window: {window} not in [1, {MAX_WINDOW}]")
        bitmap = r.take((window + 7) // 8, "bitmap")
        backlog = r.u32("backlog_ms") if r.pos < len(r.buf) else 0
        return cls(content, base, window, bitmap, backlog, r.u32("up_kbps") if r.pos < len(r.buf) else 0)


@dataclass(frozen=True, slots=True)
class ContentsReq(Message):
    """Ask for the contents whose title contains ``word`` (case-insensitive; empty = all)."""

    TYPE: ClassVar[MsgType] = MsgType.CONTENTS_REQ
    MIN_LEN: ClassVar[int] = 1
    MAX_LEN: ClassVar[int] = 1 + MAX_NAME
    word: str = ""

    def validate(self) -> None:
        _check_text("word", self.word, MAX_NAME)

    def pack(self) -> bytes:
        return _text(self.word)

    @classmethod
    def unpack(cls, r: _Reader) -> ContentsReq:
        return cls(r.text("word"))


@dataclass(frozen=True, slots=True)
class ContentEntry:
    """One content in a CONTENTS_RESP: id, title, members known (its popularity)."""

    content: int
    title: str
    members: int = 0

    def __post_init__(self) -> None:
        _check_int("content", self.content, 1, U32)
        _check_text("title", self.title, MAX_TEXT)
        _check_int("members", self.members, 0, 0xFFFF)

    def fields(self) -> dict[str, Any]:
        return {"content": self.content, "title": self.title, "members": self.members}


@dataclass(frozen=True, slots=True)
class ContentsResp(Message):
    """The contents matching a CONTENTS_REQ."""

    TYPE: ClassVar[MsgType] = MsgType.CONTENTS_RESP
    MIN_LEN: ClassVar[int] = 2
    MAX_LEN: ClassVar[int] = CONTROL_MAX
    contents: tuple[ContentEntry, ...] = ()

    def validate(self) -> None:
        if not isinstance(self.contents, tuple) or len(self.contents) > MAX_LIST:
            raise WireError(f"contents: not a tuple of at most {MAX_LIST}")
        if not all(isinstance(c, ContentEntry) for c in self.contents):
            raise WireError("contents: not a ContentEntry")
        if len(self.pack()) > self.MAX_LEN:
            raise WireError("contents: the list does not fit in one message")

    def pack(self) -> bytes:
        return struct.pack(">H", len(self.contents)) + b"".join(
            struct.pack(">I", c.content) + _text(c.title) + struct.pack(">H", c.members) for c in self.contents)

    @classmethod
    def unpack(cls, r: _Reader) -> ContentsResp:
        n = r.u16("content count")
        if n > MAX_LIST:
            raise WireError(f"content count {n} > {MAX_LIST}")
        return cls(tuple(ContentEntry(r.u32("content"), r.text("title"), r.u16("members")) for _ in range(n)))


@dataclass(frozen=True, slots=True)
class ChunkReq(Message):
    """Ask a partner for one chunk; ``due_ms``: milliseconds until the requester plays it (0 = no deadline, e.g.
    download mode; the field is then left out, so the payload is 8 or 12 bytes). A supplier does not send a chunk
    that cannot arrive in time."""

    TYPE: ClassVar[MsgType] = MsgType.CHUNK_REQ
    MIN_LEN: ClassVar[int] = 8
    MAX_LEN: ClassVar[int] = 12
    content: int
    chunk: int
    due_ms: int = 0

    def validate(self) -> None:
        _check_int("content", self.content, 1, U32)
        _check_int("chunk", self.chunk, 0, U32)
        _check_int("due_ms", self.due_ms, 0, U32)

    def pack(self) -> bytes:
        if self.due_ms:
            return struct.pack(">III", self.content, self.chunk, self.due_ms)
        return struct.pack(">II", self.content, self.chunk)

    @classmethod
    def unpack(cls, r: _Reader) -> ChunkReq:
        content, chunk = r.u32("content"), r.u32("chunk")
        return cls(content, chunk, r.u32("due_ms") if r.pos < len(r.buf) else 0)


CHUNK_HEAD = struct.Struct(">IIQB")  # content, chunk, created_us, sig_kind
SIG_SIZES = {SigKind.NONE: 0, SigKind.SHA256: 32, SigKind.HMAC_SHA256: 32}


@dataclass(frozen=True, slots=True)
class ChunkResp(Message):
    """One data chunk: content, id, when the source made it (µs since the epoch, 0 unknown), signature, data."""

    TYPE: ClassVar[MsgType] = MsgType.CHUNK_RESP
    MIN_LEN: ClassVar[int] = CHUNK_HEAD.size + 4
    MAX_LEN: ClassVar[int] = MAX_PAYLOAD
    DATA: ClassVar[bool] = True
    content: int
    chunk: int
    data: bytes
    created_us: int = 0
    sig_kind: int = SigKind.NONE
    sig: bytes = b""

    def validate(self) -> None:
        _check_int("content", self.content, 1, U32)
        _check_int("chunk", self.chunk, 0, U32)
        _check_int("created_us", self.created_us, 0, 2**64 - 1)
        _check_enum("sig_kind", self.sig_kind, SigKind)
        _check_bytes("sig", self.sig, SIG_SIZES[SigKind(self.sig_kind)])
        _check_bytes("data", self.data, max_size=MAX_PAYLOAD - self.MIN_LEN - len(self.sig))
        if self.sig_kind == SigKind.SHA256 and hashlib.sha256(self.data).digest() != self.sig:
            raise WireError("sig: sha256 does not match the data")

    @classmethod
    def hashed(cls, content: int, chunk: int, data: bytes, created_us: int = 0) -> ChunkResp:
        """A chunk carrying the sha256 of its data (the decoder checks it)."""
        return cls(content, chunk, data, created_us, SigKind.SHA256, hashlib.sha256(data).digest())

    def pack(self) -> bytes:
        return (CHUNK_HEAD.pack(self.content, self.chunk, self.created_us, self.sig_kind) + self.sig
                + struct.pack(">I", len(self.data)) + self.data)

    @classmethod
    def unpack(cls, r: _Reader) -> ChunkResp:
        content, chunk, created, kind = CHUNK_HEAD.unpack(r.take(CHUNK_HEAD.size, "chunk header"))
        if kind not in SIG_SIZES:
            raise WireError(f"sig_kind: {kind} unknown")
        sig = r.take(SIG_SIZES[SigKind(kind)], "sig")
        data = r.take(r.u32("data length"), "data")
        return cls(content, chunk, data, created, kind, sig)

    def fields(self) -> dict[str, Any]:
        return {"content": self.content, "chunk": self.chunk, "bytes": len(self.data),
                "created_us": self.created_us, "sig_kind": self.sig_kind}


@dataclass(frozen=True, slots=True)
class Error(Message):
    """Something the receiver of ``about`` (a message type, 0 = none) could not do."""

    TYPE: ClassVar[MsgType] = MsgType.ERROR
    MIN_LEN: ClassVar[int] = 4
    MAX_LEN: ClassVar[int] = 4 + MAX_TEXT
    code: int
    about: int = 0
    reason: str = ""

    def validate(self) -> None:
        _check_enum("code", self.code, ErrorCode)
        _check_int("about", self.about, 0, 0xFF)
        _check_text("reason", self.reason, MAX_TEXT)

    def pack(self) -> bytes:
        return struct.pack(">HB", self.code, self.about) + _text(self.reason)

    @classmethod
    def unpack(cls, r: _Reader) -> Error:
        return cls(r.u16("code"), r.u8("about"), r.text("reason"))


CHUNK_MAC_LABEL = b"streambed-chunk-v1\0"
INFO_MAC_LABEL = b"streambed-info-v1\0"


def chunk_mac(key: bytes, content: int, chunk: int, created_us: int, data: bytes) -> bytes:
    """The source's signature of a chunk (SigKind.HMAC_SHA256): HMAC-SHA256(key, label | content | chunk |
    created_us | data), integers big-endian (4, 4, 8 bytes)."""
    mac = hmac.new(key, CHUNK_MAC_LABEL + struct.pack(">IIQ", content, chunk, created_us), hashlib.sha256)
    mac.update(data)
    return mac.digest()


def sign_chunk(key: bytes, content: int, chunk: int, data: bytes, created_us: int = 0) -> ChunkResp:
    """A CHUNK_RESP signed with the source key (SigKind.HMAC_SHA256)."""
    return ChunkResp(content, chunk, data, created_us, SigKind.HMAC_SHA256,
                     chunk_mac(key, content, chunk, created_us, data))


def chunk_signed_by(msg: ChunkResp, key: bytes) -> bool:
    """True if ``msg`` carries a valid HMAC-SHA256 signature made with ``key`` (constant-time comparison)."""
    return msg.sig_kind == SigKind.HMAC_SHA256 and hmac.compare_digest(
        msg.sig, chunk_mac(key, msg.content, msg.chunk, msg.created_us, msg.data))


@dataclass(frozen=True, slots=True)
class ContentInfoReq(Message):
    """Ask a partner (or the source) how a content is cut into chunks (answered with CONTENT_INFO_RESP)."""

    TYPE: ClassVar[MsgType] = MsgType.CONTENT_INFO_REQ
    MIN_LEN: ClassVar[int] = 4
    MAX_LEN: ClassVar[int] = 4
    content: int

    def validate(self) -> None:
        _check_int("content", self.content, 1, U32)

    def pack(self) -> bytes:
        return struct.pack(">I", self.content)

    @classmethod
    def unpack(cls, r: _Reader) -> ContentInfoReq:
        return cls(r.u32("content"))


INFO_HEAD = struct.Struct(">IBIIQQI32s")  # content, mode, chunk_us, chunk_bytes, total_bytes, start_us, chunks, sha256


@dataclass(frozen=True, slots=True)
class ContentInfo(Message):
    """How a content is cut into chunks, as its source published it; relayed unchanged by peers.

    Live: ``chunk_us`` (duration of a chunk, µs), ``chunk_bytes`` (nominal size), ``start_us`` (epoch µs at
    which chunk 0 was made: chunk i is made at start + i * duration); ``total_bytes``, ``chunks`` and ``sha256``
    are 0. Download: ``chunk_bytes`` (every chunk but the last), ``total_bytes``, ``chunks`` (=
    ceil(total / chunk_bytes)), ``sha256`` of the whole file; ``chunk_us`` and ``start_us`` are 0. The source
    signs it like its chunks (SigKind 2: HMAC-SHA256 with the content key over every field before the
    signature, see :func:`info_mac`), so a peer cannot lie about the file's hash.
    """

    TYPE: ClassVar[MsgType] = MsgType.CONTENT_INFO_RESP
    MIN_LEN: ClassVar[int] = INFO_HEAD.size + 1 + 1
    MAX_LEN: ClassVar[int] = INFO_HEAD.size + 1 + 32 + 1 + MAX_TEXT
    content: int
    mode: int
    chunk_bytes: int
    chunk_us: int = 0
    total_bytes: int = 0
    start_us: int = 0
    chunks: int = 0
    sha256: bytes = bytes(32)
    title: str = ""
    sig_kind: int = SigKind.NONE
    sig: bytes = b""

    def validate(self) -> None:
        _check_int("content", self.content, 1, U32)
        _check_enum("mode", self.mode, ContentMode)
        _check_int("chunk_bytes", self.chunk_bytes, 1, MAX_PAYLOAD)
        _check_int("chunk_us", self.chunk_us, 0, U32)
        _check_int("total_bytes", self.total_bytes, 0, 2**64 - 1)
        _check_int("start_us", self.start_us, 0, 2**64 - 1)
        _check_int("chunks", self.chunks, 0, U32)
        _check_bytes("sha256", self.sha256, 32)
        _check_text("title", self.title, MAX_TEXT)
        _check_enum("sig_kind", self.sig_kind, SigKind)
        if self.sig_kind == SigKind.SHA256:
            raise WireError("sig_kind: a content info is signed with HMAC (2) or not at all (0)")
        _check_bytes("sig", self.sig, SIG_SIZES[SigKind(self.sig_kind)])
        if self.mode == ContentMode.LIVE:
            if self.chunk_us == 0:
                raise WireError("chunk_us: a live content needs a chunk duration")
            if self.total_bytes or self.chunks or any(self.sha256):
                raise WireError("live content: total_bytes, chunks and sha256 must be 0")
        else:
            if self.chunk_us or self.start_us:
                raise WireError("download content: chunk_us and start_us must be 0")
            if self.chunks != -(-self.total_bytes // self.chunk_bytes):
                raise WireError(f"chunks: {self.chunks} != ceil({self.total_bytes} / {self.chunk_bytes})")

    def body(self) -> bytes:
        """Every field the signature covers, packed."""
        return (INFO_HEAD.pack(self.content, self.mode, self.chunk_us, self.chunk_bytes, self.total_bytes,
                               self.start_us, self.chunks, self.sha256) + _text(self.title))

    def signed(self, key: bytes) -> ContentInfo:
        """This info with the source's HMAC-SHA256 signature."""
        return ContentInfo(self.content, self.mode, self.chunk_bytes, self.chunk_us, self.total_bytes,
                           self.start_us, self.chunks, self.sha256, self.title, SigKind.HMAC_SHA256,
                           info_mac(key, self.body()))

    def signed_by(self, key: bytes) -> bool:
        return self.sig_kind == SigKind.HMAC_SHA256 and hmac.compare_digest(self.sig, info_mac(key, self.body()))

    def chunk_size(self, chunk: int) -> int:
        """Bytes of chunk ``chunk`` in download mode (the last one may be short); ``chunk_bytes`` when live."""
        if self.mode == ContentMode.LIVE:
            return self.chunk_bytes
        if not 0 <= chunk < self.chunks:
            return 0
        return min(self.chunk_bytes, self.total_bytes - chunk * self.chunk_bytes)

    def pack(self) -> bytes:
        return self.body() + bytes([self.sig_kind]) + self.sig

    @classmethod
    def unpack(cls, r: _Reader) -> ContentInfo:
        head = INFO_HEAD.unpack(r.take(INFO_HEAD.size, "info header"))
        title = r.text("title")
        kind = r.u8("sig_kind")
        if kind not in SIG_SIZES:
            raise WireError(f"sig_kind: {kind} unknown")
        sig = r.take(SIG_SIZES[SigKind(kind)], "sig")
        content, mode, chunk_us, chunk_bytes, total, start, chunks, sha = head
        return cls(content, mode, chunk_bytes, chunk_us, total, start, chunks, sha, title, kind, sig)


def info_mac(key: bytes, body: bytes) -> bytes:
    """HMAC-SHA256(key, label | the info's fields): the source's signature of a CONTENT_INFO_RESP."""
    return hmac.new(key, INFO_MAC_LABEL + body, hashlib.sha256).digest()


# -- video on demand (DynaPeer emulation: nodes/vod_server.py, nodes/vod_client.py; docs/dynapeer.md) ----------

VOD_MAX_STRIPES = 16
VOD_MAX_SOURCES = 32
VOD_MAX_PIECE = 1400


class VodFlag(enum.IntFlag):
    """Bits of ``VodPlay.flags``."""

    MULTICAST = 0x01  # the client's ISP routes IP multicast: it may join channels


class VodKind(enum.IntEnum):
    """``VodSource.kind``: where a part of a video comes from."""

    SERVER = 0  # the server, on the session's control connection (TCP)
    MULTICAST = 1  # an IP multicast channel: ``ip``/``port`` are the group and UDP port
    PEER = 2  # another client (``ip``/``port`` its listener), asked with VOD_PULL


class VodState(enum.IntEnum):
    """``VodStatus.state``."""

    PLAYING = 1  # playback started
    FINISHED = 2  # the video has been played to its end (the client stays a peer until its commitments end)


@dataclass(frozen=True, slots=True)
class VodPlay(Message):
    """Client -> VoD server: open session ``session`` (client-chosen, unique per client) for video ``video``."""

    TYPE: ClassVar[MsgType] = MsgType.VOD_PLAY
    MIN_LEN: ClassVar[int] = 11
    MAX_LEN: ClassVar[int] = 11
    session: int
    video: int
    port: int = 0  # where the client serves other peers (VOD_PULL); 0 = it does not
    flags: int = 0

    def validate(self) -> None:
        _check_int("session", self.session, 1, U32)
        _check_int("video", self.video, 1, U32)
        _check_int("port", self.port, 0, 0xFFFF)
        _check_flags("flags", self.flags, VodFlag)

    def pack(self) -> bytes:
        return struct.pack(">IIHB", self.session, self.video, self.port, self.flags)

    @classmethod
    def unpack(cls, r: _Reader) -> VodPlay:
        return cls(r.u32("session"), r.u32("video"), r.u16("port"), r.u8("flags"))


VOD_SOURCE = struct.Struct(">B4sHIIHQI")  # kind, ip, port, first, end, mask, t0_us, tag


@dataclass(frozen=True, slots=True)
class VodSource:
    """One part of a session's video: chunks ``first <= c < end`` whose stripe ``c % stripes`` is in ``mask``,
    sent by ``kind`` at ``ip:port``, chunk c at ``t0_us + c * chunk duration`` (epoch µs); ``tag`` names the
    source in loss reports (a peer's session, a channel)."""

    kind: int
    ip: str
    port: int
    first: int
    end: int
    mask: int
    t0_us: int
    tag: int

    def __post_init__(self) -> None:
        _check_enum("kind", self.kind, VodKind)
        _check_ip("ip", self.ip)
        _check_int("port", self.port, 0, 0xFFFF)
        _check_int("first", self.first, 0, U32)
        _check_int("end", self.end, self.first, U32)
        _check_int("mask", self.mask, 1, (1 << VOD_MAX_STRIPES) - 1)
        _check_int("t0_us", self.t0_us, 0, (1 << 64) - 1)
        _check_int("tag", self.tag, 0, U32)

    def pack(self) -> bytes:
        return VOD_SOURCE.pack(self.kind, ipaddress.IPv4Address(self.ip).packed, self.port, self.first, self.end,
                               self.mask, self.t0_us, self.tag)

    @classmethod
    def unpack(cls, r: _Reader) -> VodSource:
        kind, ip, port, first, end, mask, t0, tag = VOD_SOURCE.unpack(r.take(VOD_SOURCE.size, "source"))
        return cls(kind, str(ipaddress.IPv4Address(ip)), port, first, end, mask, t0, tag)

    def fields(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class VodPlan(Message):
    """VoD server -> client: the video's geometry and where its parts come from (a first plan, or the cover of
    a lost source). Every source's range lies in ``[0, chunks)`` and its mask in the ``stripes`` stripes."""

    TYPE: ClassVar[MsgType] = MsgType.VOD_PLAN
    MIN_LEN: ClassVar[int] = 22
    MAX_LEN: ClassVar[int] = 22 + VOD_MAX_SOURCES * VOD_SOURCE.size
    session: int
    video: int
    chunks: int
    chunk_ms: int
    chunk_bytes: int
    stripes: int
    sources: tuple[VodSource, ...] = ()

    def validate(self) -> None:
        _check_int("session", self.session, 1, U32)
        _check_int("video", self.video, 1, U32)
        _check_int("chunks", self.chunks, 1, 1 << 20)
        _check_int("chunk_ms", self.chunk_ms, 1, 60_000)
        _check_int("chunk_bytes", self.chunk_bytes, 1, MAX_PAYLOAD - 64)
        _check_int("stripes", self.stripes, 1, VOD_MAX_STRIPES)
        if not isinstance(self.sources, tuple) or len(self.sources) > VOD_MAX_SOURCES:
            raise WireError(f"sources: a tuple of at most {VOD_MAX_SOURCES}")
        for s in self.sources:
            if not isinstance(s, VodSource):
                raise WireError("sources: not a VodSource")
            if s.end > self.chunks or s.mask >> self.stripes:
                raise WireError(f"source {s.tag}: range or stripes outside the video")

    def pack(self) -> bytes:
        return (struct.pack(">IIIIIBB", self.session, self.video, self.chunks, self.chunk_ms, self.chunk_bytes,
                            self.stripes, len(self.sources)) + b"".join(s.pack() for s in self.sources))

    @classmethod
    def unpack(cls, r: _Reader) -> VodPlan:
        head = struct.unpack(">IIIIIBB", r.take(22, "plan header"))
        sources = tuple(VodSource.unpack(r) for _ in range(head[6]))
        r.end("plan")
        return cls(*head[:6], sources)


@dataclass(frozen=True, slots=True)
class VodPull(Message):
    """Client -> supplying peer: send me (or, with a ``group``, the multicast channel) chunks ``first <= c < end``
    of ``video`` whose stripe ``c % stripes`` is in ``mask``, chunk c at ``t0_us + c * chunk duration``, from
    your session ``supplier``. The peer answers with CHUNK_RESP frames, or ERROR (busy, unknown content)."""

    TYPE: ClassVar[MsgType] = MsgType.VOD_PULL
    MIN_LEN: ClassVar[int] = 37
    MAX_LEN: ClassVar[int] = 37
    session: int
    video: int
    supplier: int
    first: int
    end: int
    stripes: int
    mask: int
    t0_us: int
    group: str = "0.0.0.0"  # 0.0.0.0: unicast on this connection
    gport: int = 0

    def validate(self) -> None:
        _check_int("session", self.session, 1, U32)
        _check_int("video", self.video, 1, U32)
        _check_int("supplier", self.supplier, 1, U32)
        _check_int("first", self.first, 0, U32)
        _check_int("end", self.end, self.first, U32)
        _check_int("stripes", self.stripes, 1, VOD_MAX_STRIPES)
        _check_int("mask", self.mask, 1, (1 << self.stripes) - 1)
        _check_int("t0_us", self.t0_us, 0, (1 << 64) - 1)
        _check_ip("group", self.group)
        _check_int("gport", self.gport, 0, 0xFFFF)
        if self.group != "0.0.0.0" and not ipaddress.IPv4Address(self.group).is_multicast:
            raise WireError(f"group: {self.group} is not a multicast address")

    def pack(self) -> bytes:
        return struct.pack(">IIIIIBHQ4sH", self.session, self.video, self.supplier, self.first, self.end,
                           self.stripes, self.mask, self.t0_us, ipaddress.IPv4Address(self.group).packed, self.gport)

    @classmethod
    def unpack(cls, r: _Reader) -> VodPull:
        v = struct.unpack(">IIIIIBHQ4sH", r.take(37, "pull"))
        return cls(*v[:8], str(ipaddress.IPv4Address(v[8])), v[9])


@dataclass(frozen=True, slots=True)
class VodStatus(Message):
    """Client -> VoD server: the session's playback started or finished (:class:`VodState`)."""

    TYPE: ClassVar[MsgType] = MsgType.VOD_STATUS
    MIN_LEN: ClassVar[int] = 5
    MAX_LEN: ClassVar[int] = 5
    session: int
    state: int

    def validate(self) -> None:
        _check_int("session", self.session, 1, U32)
        _check_enum("state", self.state, VodState)

    def pack(self) -> bytes:
        return struct.pack(">IB", self.session, self.state)

    @classmethod
    def unpack(cls, r: _Reader) -> VodStatus:
        return cls(r.u32("session"), r.u8("state"))


@dataclass(frozen=True, slots=True)
class VodLost(Message):
    """Client -> VoD server: source ``tag`` (of ``kind``) stopped; chunks ``first <= c < end`` of the stripes in
    ``mask`` are missing from it. The server answers with a VOD_PLAN of the sources that cover them."""

    TYPE: ClassVar[MsgType] = MsgType.VOD_LOST
    MIN_LEN: ClassVar[int] = 19
    MAX_LEN: ClassVar[int] = 19
    session: int
    tag: int
    kind: int
    first: int
    end: int
    mask: int

    def validate(self) -> None:
        _check_int("session", self.session, 1, U32)
        _check_int("tag", self.tag, 0, U32)
        _check_enum("kind", self.kind, VodKind)
        _check_int("first", self.first, 0, U32)
        _check_int("end", self.end, self.first, U32)
        _check_int("mask", self.mask, 1, (1 << VOD_MAX_STRIPES) - 1)

    def pack(self) -> bytes:
        return struct.pack(">IIBIIH", self.session, self.tag, self.kind, self.first, self.end, self.mask)

    @classmethod
    def unpack(cls, r: _Reader) -> VodLost:
        return cls(*struct.unpack(">IIBIIH", r.take(19, "lost")))


@dataclass(frozen=True, slots=True)
class VodPiece(Message):
    """A piece of a chunk in one UDP datagram (multicast channels): bytes ``piece * VOD_MAX_PIECE`` on of a
    ``chunk_len``-byte chunk cut into ``pieces`` pieces."""

    TYPE: ClassVar[MsgType] = MsgType.VOD_PIECE
    MIN_LEN: ClassVar[int] = 16
    MAX_LEN: ClassVar[int] = 16 + VOD_MAX_PIECE
    DATA: ClassVar[bool] = True
    content: int
    chunk: int
    piece: int
    pieces: int
    chunk_len: int
    data: bytes

    def validate(self) -> None:
        _check_int("content", self.content, 1, U32)
        _check_int("chunk", self.chunk, 0, U32)
        _check_int("chunk_len", self.chunk_len, 1, MAX_PAYLOAD - 64)
        _check_int("pieces", self.pieces, 1, 0xFFFF)
        _check_int("piece", self.piece, 0, self.pieces - 1)
        _check_bytes("data", self.data, max_size=VOD_MAX_PIECE)
        if self.pieces != -(-self.chunk_len // VOD_MAX_PIECE):
            raise WireError(f"pieces: {self.pieces} for a {self.chunk_len}-byte chunk")
        want = min(VOD_MAX_PIECE, self.chunk_len - self.piece * VOD_MAX_PIECE)
        if len(self.data) != want:
            raise WireError(f"data: {len(self.data)} bytes, piece {self.piece} has {want}")

    def pack(self) -> bytes:
        return struct.pack(">IIHHI", self.content, self.chunk, self.piece, self.pieces, self.chunk_len) + self.data

    @classmethod
    def unpack(cls, r: _Reader) -> VodPiece:
        head = struct.unpack(">IIHHI", r.take(16, "piece header"))
        return cls(*head, r.take(len(r.buf) - r.pos, "data"))

    def fields(self) -> dict[str, Any]:
        return {"content": self.content, "chunk": self.chunk, "piece": self.piece, "pieces": self.pieces,
                "chunk_len": self.chunk_len, "data": f"<{len(self.data)} bytes>"}


MESSAGE_TYPES: dict[int, type[Message]] = {cls.TYPE: cls for cls in (
    Hello, Challenge, Auth, AuthOk, AuthFail, ReachProbe, ReachAck, Join, JoinOk, Redirect, Leave, Membership,
    MembersReq, MembersResp, PartnershipReq, PartnershipResp, PartnershipRemove, BufferMap, ContentsReq,
    ContentsResp, ChunkReq, ChunkResp, Error, ContentInfoReq, ContentInfo,
    VodPlay, VodPlan, VodPull, VodStatus, VodLost, VodPiece)}
assert set(MESSAGE_TYPES) == {t.value for t in MsgType}


# -- frames -----------------------------------------------------------------------------------------------------


def encode(msg: Message) -> bytes:
    """The frame of one message."""
    if type(msg) not in MESSAGE_TYPES.values():
        raise WireError(f"not a message: {type(msg).__name__}")
    payload = msg.pack()
    if not msg.MIN_LEN <= len(payload) <= msg.MAX_LEN:
        raise WireError(f"{msg.TYPE.name}: payload of {len(payload)} bytes outside [{msg.MIN_LEN}, {msg.MAX_LEN}]")
    head = HEADER.pack(MAGIC, VERSION, msg.TYPE, len(payload))
    return head + payload + struct.pack(">I", zlib.crc32(payload, zlib.crc32(head)))


def decode_payload(type_byte: int, payload: bytes) -> Message:
    """Validate and decode one payload of a known type; raises WireError."""
    cls = MESSAGE_TYPES.get(type_byte)
    if cls is None:
        raise WireError(f"unknown type 0x{type_byte:02x}")
    if not cls.MIN_LEN <= len(payload) <= cls.MAX_LEN:
        raise WireError(f"{cls.TYPE.name}: length {len(payload)} outside [{cls.MIN_LEN}, {cls.MAX_LEN}]")
    r = _Reader(payload)
    msg = cls.unpack(r)
    r.end(cls.TYPE.name)
    return msg


def decode_frame(frame: bytes) -> Message:
    """Decode exactly one complete frame; raises WireError (use FrameDecoder for streams)."""
    dec = FrameDecoder()
    msgs = dec.feed(frame) + dec.flush()
    if len(msgs) != 1 or dec.rejected_bytes:
        reasons = "; ".join(r.reason for r in dec.take_rejections()) or "not exactly one frame"
        raise WireError(reasons)
    return msgs[0]


@dataclass(frozen=True, slots=True)
class Rejected:
    """One thing the decoder threw away: a frame candidate (``frame`` true) or a run of skipped bytes."""

    reason: str
    nbytes: int
    frame: bool


class FrameDecoder:
    """Stream decoder: ``feed(bytes) -> [Message]``; ``flush()`` at end of stream. See the module docstring."""

    def __init__(self, max_payload: int = MAX_PAYLOAD, keep_rejections: int = 1000):
        self.max_payload = max_payload
        self._buf = bytearray()
        self._pos = 0
        self._skipped = 0  # bytes skipped since the last frame (reported as one "garbage" rejection)
        self._rejections: deque[Rejected] = deque(maxlen=keep_rejections)
        self.fed_bytes = 0
        self.control_bytes = 0  # bytes of accepted control frames
        self.data_bytes = 0  # bytes of accepted data frames
        self.rejected_bytes = 0
        self.rejected_frames = 0
        self.frames = 0

    @property
    def pending(self) -> int:
        """Bytes held back: a partial frame, or a candidate waiting for its claimed length."""
        return len(self._buf) - self._pos

    def take_rejections(self) -> list[Rejected]:
        """The rejections since the last call (the oldest are dropped beyond ``keep_rejections``)."""
        out = list(self._rejections)
        self._rejections.clear()
        return out

    def feed(self, data: bytes | bytearray | memoryview) -> list[Message]:
        self.fed_bytes += len(data)
        self._buf += data
        return self._run(final=False)

    def flush(self) -> list[Message]:
        """End of stream: reject what is still pending, and return the frames found behind it."""
        return self._run(final=True)

    # internals
    def _skip(self, n: int) -> None:
        self._pos += n
        self._skipped += n
        self.rejected_bytes += n

    def _report_skipped(self) -> None:
        if self._skipped:
            self._rejections.append(Rejected(f"skipped {self._skipped} bytes that are not a frame", self._skipped,
                                             False))
            self._skipped = 0

    def _reject_candidate(self, reason: str) -> None:
        self.rejected_frames += 1
        self._report_skipped()
        self._rejections.append(Rejected(reason, 1, True))
        self._skip(1)
        self._skipped -= 1  # counted in the candidate's rejection, not in the next skipped run

    def _run(self, final: bool) -> list[Message]:
        out: list[Message] = []
        buf = self._buf
        while True:
            i = buf.find(MAGIC, self._pos)
            if i < 0:
                keep = 1 if (not final and len(buf) > self._pos and buf[-1] == MAGIC[0]) else 0
                self._skip(len(buf) - self._pos - keep)
                if final:
                    self._report_skipped()
                break
            self._skip(i - self._pos)
            avail = len(buf) - self._pos
            if avail < HEADER_SIZE:
                if final:
                    self._reject_candidate(f"truncated header ({avail} bytes)")
                    continue
                break
            _, version, type_byte, length = HEADER.unpack_from(buf, self._pos)
            if version != VERSION:
                self._reject_candidate(f"version {version} (expected {VERSION})")
                continue
            cls = MESSAGE_TYPES.get(type_byte)
            if cls is None:
                self._reject_candidate(f"unknown type 0x{type_byte:02x}")
                continue
            limit = min(cls.MAX_LEN, self.max_payload)
            if not cls.MIN_LEN <= length <= limit:
                self._reject_candidate(f"{cls.TYPE.name}: length {length} outside [{cls.MIN_LEN}, {limit}]")
                continue
            total = OVERHEAD + length
            if avail < total:
                if final:
                    self._reject_candidate(f"{cls.TYPE.name}: truncated frame ({avail} of {total} bytes)")
                    continue
                break
            end = self._pos + HEADER_SIZE + length
            crc = int.from_bytes(buf[end:end + CRC_SIZE], "big")
            if zlib.crc32(memoryview(buf)[self._pos:end]) != crc:
                self._reject_candidate(f"{cls.TYPE.name}: bad CRC")
                continue
            payload = bytes(buf[self._pos + HEADER_SIZE:end])
            self._report_skipped()
            try:
                msg = decode_payload(type_byte, payload)
            except WireError as exc:
                self.rejected_frames += 1
                self.rejected_bytes += total
                self._rejections.append(Rejected(f"{cls.TYPE.name}: bad payload: {exc}", total, True))
            else:
                out.append(msg)
                self.frames += 1
                if cls.DATA:
                    self.data_bytes += total
                else:
                    self.control_bytes += total
            self._pos += total
        if self._pos == len(buf):
            buf.clear()
            self._pos = 0
        elif self._pos > 65536 and self._pos * 2 > len(buf):
            del buf[:self._pos]
            self._pos = 0
        return out


def require_content(msg: Message, known: Collection[int]) -> None:
    """Raise UnknownContent if ``msg`` is about a content (other than 0 = all) that is not in ``known``."""
    content = getattr(msg, "content", None)
    if content and content not in known:
        raise UnknownContent(f"{msg.TYPE.name}: content {content} is not carried here")


# -- authentication ---------------------------------------------------------------------------------------------


AUTH_LABEL = b"streambed-auth-v1"


def client_proof(secret: str, user: str, server_nonce: bytes, client_nonce: bytes) -> bytes:
    """HMAC-SHA256(secret, label | "client" | user | server nonce | client nonce): what AUTH carries."""
    msg = b"\0".join((AUTH_LABEL, b"client", user.encode())) + b"\0" + server_nonce + client_nonce
    return hmac.new(secret.encode(), msg, hashlib.sha256).digest()


def server_proof(secret: str, user: str, server_nonce: bytes, client_nonce: bytes) -> bytes:
    """HMAC-SHA256(secret, label | "server" | user | client nonce | server nonce): AUTH_OK's proof for the client."""
    msg = b"\0".join((AUTH_LABEL, b"server", user.encode())) + b"\0" + client_nonce + server_nonce
    return hmac.new(secret.encode(), msg, hashlib.sha256).digest()


# -- asyncio streams --------------------------------------------------------------------------------------------


@dataclass
class ByteCounters:
    """Bytes and frames of one connection (or summed over many): up = sent, down = received."""

    control_up: int = 0
    control_down: int = 0
    data_up: int = 0
    data_down: int = 0
    frames_up: int = 0
    frames_down: int = 0
    rejected_frames: int = 0
    rejected_bytes: int = 0

    def add(self, other: ByteCounters) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class FramedStream:
    """Messages over one asyncio stream, with byte counters. ``recv()`` returns None at end of stream."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    max_payload: int = MAX_PAYLOAD
    on_reject: Callable[[Rejected], None] | None = None
    max_rejected_bytes: int | None = None  # recv() raises WireError once more bytes than this were rejected
    counters: ByteCounters = field(default_factory=ByteCounters)
    decoder: FrameDecoder = field(init=False)
    _queue: deque[Message] = field(init=False, default_factory=deque)
    _eof: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self.decoder = FrameDecoder(self.max_payload)

    @property
    def peername(self) -> tuple[str, int]:
        peer = self.writer.get_extra_info("peername")
        return (str(peer[0]), int(peer[1])) if peer else ("?", 0)

    def _sync_down(self) -> None:
        d, c = self.decoder, self.counters
        c.control_down = d.control_bytes + d.rejected_bytes
        c.data_down = d.data_bytes
        c.frames_down = d.frames
        c.rejected_frames = d.rejected_frames
        c.rejected_bytes = d.rejected_bytes
        rejections = d.take_rejections()
        if self.on_reject is not None:
            for r in rejections:
                self.on_reject(r)

    async def recv(self, timeout: float | None = None) -> Message | None:
        """The next valid message; None at end of stream; TimeoutError if none arrives within ``timeout``;
        WireError when the peer has sent more than ``max_rejected_bytes`` bytes that were rejected."""
        async with asyncio.timeout(timeout):
            while not self._queue:
                if self._eof:
                    return None
                data = await self.reader.read(65536)
                if data:
                    self._queue.extend(self.decoder.feed(data))
                else:
                    self._eof = True
                    self._queue.extend(self.decoder.flush())
                self._sync_down()
                if self.max_rejected_bytes is not None and self.decoder.rejected_bytes > self.max_rejected_bytes:
                    raise WireError(f"{self.decoder.rejected_bytes} bytes rejected (limit {self.max_rejected_bytes})")
            return self._queue.popleft()

    def write(self, msg: Message) -> int:
        """Queue one message for sending (no flow control; use ``send`` to wait for the buffer to drain)."""
        frame = encode(msg)
        self.writer.write(frame)
        if msg.DATA:
            self.counters.data_up += len(frame)
        else:
            self.counters.control_up += len(frame)
        self.counters.frames_up += 1
        return len(frame)

    async def send(self, msg: Message) -> int:
        n = self.write(msg)
        await self.writer.drain()
        return n

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, asyncio.TimeoutError, ConnectionError):
            await asyncio.wait_for(self.writer.wait_closed(), 1.0)

    @classmethod
    async def connect(cls, host: str, port: int, timeout: float = 5.0, **kw: Any) -> FramedStream:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        return cls(reader, writer, **kw)
