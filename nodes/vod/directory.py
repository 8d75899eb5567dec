"""The VoD server's directory: who holds which video from when, whose upload is free, which multicast
channels run (the paper's server "is responsible for establishing every client-collaboration process").

Pure bookkeeping, no I/O: the role (:mod:`nodes.vod_server`) feeds it requests and departures with the wall
clock (seconds), the run's policy (:mod:`nodes.vod.policies`) reads and updates it and returns a
:class:`Decision`. The rules are those of :mod:`analysis.vod_sim`, in seconds instead of minutes:

* a peer has upload *slots* (one slot of ``c = O/Pr`` of a stream when ``c <= 1``, else ``floor(c)`` slots of a
  whole stream); a slot carries ``round(c * stripes)`` stripes and is busy until the stream it feeds ends;
* peer *k* (arrived at ``a_k``, offset ``x_k`` in its multicast channel) may feed a stream that starts at ``t``
  while ``t - a_k <= w_k``, its collaboration window (see each policy);
* :meth:`Directory.take` gives a stream the free slots of eligible peers, in the order given, up to a whole
  stream; the server sends the stripes nobody took (partial-stream collaboration of section 2.1).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from nodes.vod.content import Geometry, popcount, take_stripes

EPS = 1e-6


@dataclass(frozen=True)
class PolicyParams:
    """What a policy needs to know besides the requests (all times in seconds, rates in bit/s)."""

    geometry: Geometry
    upload_bps: float
    buffer_s: float
    patch_window_s: dict[int, float] = field(default_factory=dict)  # per video (content id); default buffer_s
    extended_buffer: bool = True
    reserve_sources: bool = True
    partial_multicast: bool = True
    needy: frozenset[int] = frozenset()  # videos whose collaboration group is too small (helpers)

    @property
    def c(self) -> float:
        return self.upload_bps / self.geometry.rate_bps

    @property
    def N(self) -> float:  # noqa: N802 - the paper's symbol
        return self.geometry.rate_bps / self.upload_bps

    @property
    def X(self) -> float:  # noqa: N802
        return max(1.0, self.N) if self.extended_buffer else 1.0

    @property
    def vs_size(self) -> int:
        return max(1, math.ceil(self.N - 1e-9))

    @property
    def helper_count(self) -> int:
        return max(0, math.ceil(self.N - 1e-9) - 1)

    def window(self, video: int) -> float:
        return min(self.patch_window_s.get(video, self.buffer_s), self.buffer_s)

    def slots(self, share: float | None = None) -> tuple[int, int]:
        """(number of slots, stripes per slot) of a peer uploading ``share`` of a stream (default ``c``)."""
        c = self.c if share is None else share
        s = self.geometry.stripes
        if c <= 1 + EPS:
            return 1, max(1, min(s, int(round(c * s))))
        return int(math.floor(c + EPS)), s


@dataclass(eq=False)
class Peer:
    """One client session as a possible supplier."""

    key: int  # the directory's id
    session: int  # the client's session id (VOD_PULL's supplier)
    video: int
    a: float
    x: float
    w: float
    nslots: int
    slot_stripes: int
    ip: str
    port: int
    multicast: bool
    rank: int = 0
    reserved: int = -1  # video it helps, -1 if none
    watching: bool = True
    alive: bool = True
    free: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.free:
            self.free = [0.0] * self.nslots

    def free_slots(self, t: float) -> int:
        return sum(1 for f in self.free if f <= t + EPS)


@dataclass(eq=False)
class Channel:
    """A multicast channel of one video: started at ``t0`` (chunk c sent at ``t0 + c d``), opened by a request at
    ``opened`` (``t0`` minus the join lag); windows and offsets count from ``opened``, as the model's from the
    opening request, so the emulated rules give the simulation's channels and patch lengths."""

    key: int
    video: int
    group: str
    port: int
    t0: float
    members: int = 1
    sources: list[tuple[Peer | None, int]] = field(default_factory=list)  # (peer or None = server, stripes)
    peers: list[Peer] = field(default_factory=list)  # its members (Pn2Pm: the group that stores it)
    opened: float = -1.0  # time of the opening request (default: t0)

    def __post_init__(self) -> None:
        if self.opened < 0:
            self.opened = self.t0


@dataclass
class Part:
    """One part of a session's video: ``kind`` server | multicast | peer, chunks ``[first, end)`` of ``mask``."""

    kind: str
    first: int
    end: int
    mask: int
    t0: float
    peer: Peer | None = None
    channel: Channel | None = None
    why: str = "stream"  # stream | patch | channel | cover


@dataclass
class Decision:
    """What a policy decided for one request."""

    parts: list[Part] = field(default_factory=list)
    new_channel: Channel | None = None  # to be started: its sources send to the group
    helpers: list[tuple[Peer, Channel]] = field(default_factory=list)  # to attach to a channel (helpers)
    peer: Peer | None = None  # the requester, registered as a future supplier

    def server_stripes(self, stripes: int) -> int:
        return sum(popcount(p.mask) for p in self.parts if p.kind == "server")


class Directory:
    """Peers and channels per video (one per server process)."""

    def __init__(self, params: PolicyParams, group_base: str = "239.77.0.0", mcast_port: int = 5800) -> None:
        self.params = params
        self.peers: dict[int, list[Peer]] = {}
        self.channels: dict[int, list[Channel]] = {}
        self.by_key: dict[int, Peer] = {}
        self._next_peer = 0
        self._next_channel = 0
        base = [int(x) for x in group_base.split(".")]
        self._group_base = (base[0] << 24) | (base[1] << 16)
        self.mcast_port = mcast_port
        self.state: dict[str, object] = {}  # per-policy state (e.g. helper pools)

    # -- peers -------------------------------------------------------------------------------------------------

    def add_peer(self, session: int, video: int, t: float, x: float, w: float, ip: str, port: int,
                 multicast: bool, share: float | None = None) -> Peer:
        nslots, per_slot = self.params.slots(share)
        self._next_peer += 1
        p = Peer(self._next_peer, session, video, t, x, w, nslots if port else 0, per_slot, ip, port, multicast)
        if not port:
            p.free = []
        self.peers.setdefault(video, []).append(p)
        self.by_key[p.key] = p
        return p

    def title_peers(self, video: int, t: float, horizon: float, multicast: bool | None = None) -> list[Peer]:
        """Living peers of ``video`` that arrived at most ``horizon`` before ``t`` (oldest first); older ones
        are forgotten. ``multicast`` filters on the peers' mode."""
        lst = self.peers.get(video, [])
        while lst and t - lst[0].a > horizon + EPS and all(f <= t for f in lst[0].free):
            self.by_key.pop(lst[0].key, None)
            lst.pop(0)
        return [p for p in lst if p.alive and (multicast is None or p.multicast == multicast)]

    def take(self, peers: Iterable[Peer], t: float, until: float, need: int,
             ok: Callable[[Peer], bool]) -> tuple[list[tuple[Peer, int]], int]:
        """Free slots of eligible peers for ``[t, until)`` until ``need`` stripes are covered: ([(peer, n)], rest)."""
        got: list[tuple[Peer, int]] = []
        for p in peers:
            if need <= 0:
                break
            if not p.alive or not ok(p):
                continue
            n = 0
            for i, f in enumerate(p.free):
                if f <= t + EPS and need > 0:
                    p.free[i] = until
                    k = min(p.slot_stripes, need)
                    n += k
                    need -= k
            if n:
                got.append((p, n))
        return got, max(0, need)

    def parts_from(self, got: list[tuple[Peer, int]], rest: int, first: int, end: int, t0: float, why: str,
                   taken: int = 0) -> list[Part]:
        """Turn a :meth:`take` result into parts with disjoint stripe masks (the server gets the rest)."""
        stripes = self.params.geometry.stripes
        parts = []
        for p, n in got:
            mask = take_stripes(n, taken, stripes)
            taken |= mask
            parts.append(Part("peer", first, end, mask, t0, peer=p, why=why))
        if rest > 0:
            parts.append(Part("server", first, end, take_stripes(rest, taken, stripes), t0, why=why))
        return parts

    def release(self, peer: Peer, t: float) -> None:
        """A slot of ``peer`` is no longer used (its stream was covered by someone else)."""
        for i, f in enumerate(peer.free):
            if f > t:
                peer.free[i] = t
                return

    def gone(self, peer: Peer) -> None:
        peer.alive = False

    # -- channels ----------------------------------------------------------------------------------------------

    def new_channel(self, video: int, t0: float, opened: float = -1.0) -> Channel:
        self._next_channel += 1
        k = self._next_channel
        g = self._group_base | ((k >> 8) & 0xFF) << 8 | (k & 0xFF)
        group = ".".join(str(g >> s & 0xFF) for s in (24, 16, 8, 0))
        ch = Channel(k, video, group, self.mcast_port, t0, opened=opened)
        self.channels.setdefault(video, []).append(ch)
        return ch

    def current_channel(self, video: int) -> Channel | None:
        chs = self.channels.get(video)
        return chs[-1] if chs else None

    def channels_of(self, video: int, t: float) -> list[Channel]:
        """Channels of ``video`` still running at ``t`` (older ones are forgotten)."""
        length = self.params.geometry.chunks * self.params.geometry.chunk_s
        lst = self.channels.get(video, [])
        while len(lst) > 1 and t - lst[0].t0 > length + 1.0:
            lst.pop(0)
        return [c for c in lst if t - c.t0 <= length + 1.0]
