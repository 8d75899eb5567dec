"""Membership side of the Membership & Partnership Manager (document 3.3.2.1): the members cache (mCache).

One :class:`MemberCache` per overlay a node belongs to. Entries come from the tracker's and deputies' member
lists (with their flags: REACHABLE after the tracker's connect-back test, SOURCE, TRACKER) and from MEMBERSHIP
messages (the document's periodic announcements: id, contact, sequence number, time to live, partners, contents).
An entry expires after its time to live (a MEMBERSHIP's ``ttl``, or ``idle`` seconds for listed ones) without
news: the document's idle timer. Members this node failed to connect to, or that refused it, are not candidates
again before a back-off; members that sent corrupt data are banned longer.
"""

from __future__ import annotations

from dataclasses import dataclass

from nodes import wire
from nodes.hybrid import Scope
from nodes.wire import MemberEntry, MemberFlag


@dataclass(slots=True)
class Member:
    peer: int
    ip: str
    port: int
    flags: int = 0
    partners: int = 0
    seq: int = -1
    expires: float = 0.0
    retry_at: float = 0.0  # not a candidate before this (failed connection, refusal)
    fails: int = 0

    @property
    def reachable(self) -> bool:
        return bool(self.flags & MemberFlag.REACHABLE) and self.port > 0

    @property
    def source(self) -> bool:
        return bool(self.flags & MemberFlag.SOURCE)

    def entry(self) -> MemberEntry:
        flags = self.flags & ~MemberFlag.REACHABLE if not self.port else self.flags
        return MemberEntry(self.peer, self.ip, self.port, flags, min(self.partners, 0xFFFF))


class MemberCache:
    """mCache of one overlay: known members by peer id (never this node itself)."""

    def __init__(self, idle: float = 30.0, scope: Scope | None = None, exclude_scope: Scope | None = None):
        self.idle = idle
        self.scope = scope or Scope()
        self.exclude_scope = exclude_scope  # addresses that belong to another overlay (a main's ad-hoc side)
        self.me = 0
        self.members: dict[int, Member] = {}
        self.bans: dict[int, float] = {}  # peer -> until when (it sent corrupt data)

    def __len__(self) -> int:
        return len(self.members)

    def get(self, peer: int) -> Member | None:
        return self.members.get(peer)

    def _allowed(self, ip: str) -> bool:
        if ip not in self.scope:
            return False
        return not (self.exclude_scope and ip in self.exclude_scope)

    def learn(self, entries: tuple[MemberEntry, ...] | list[MemberEntry], now: float) -> int:
        """Members from a tracker's or deputy's list; returns how many were new."""
        new = 0
        for e in entries:
            if e.peer == self.me or e.flags & MemberFlag.TRACKER or not self._allowed(e.ip):
                continue
            m = self.members.get(e.peer)
            if m is None:
                self.members[e.peer] = Member(e.peer, e.ip, e.port, e.flags, e.partners, expires=now + self.idle)
                new += 1
            else:
                m.ip, m.port, m.flags, m.partners = e.ip, e.port, e.flags, e.partners
                m.expires = max(m.expires, now + self.idle)
        return new

    def heard(self, msg: wire.Membership, now: float, *, direct: bool = False) -> bool:
        """A MEMBERSHIP (from the member itself when ``direct``, else forwarded); True if it is news (a newer
        sequence number), which the caller may forward. A direct one from a listening member keeps its flags."""
        if msg.peer == self.me or not self._allowed(msg.ip):
            return False
        m = self.members.get(msg.peer)
        if m is None:
            self.members[msg.peer] = Member(msg.peer, msg.ip, msg.port, 0, msg.partners, msg.seq, now + msg.ttl)
            return True
        if msg.seq <= m.seq and not direct:
            return False
        news = msg.seq > m.seq
        if msg.port != m.port:
            m.flags &= ~MemberFlag.REACHABLE  # a new port is untested
        m.ip, m.port, m.partners = msg.ip, msg.port, msg.partners
        m.seq = max(m.seq, msg.seq)
        m.expires = max(m.expires, now + msg.ttl)
        return news

    def expire(self, now: float, keep: set[int] | frozenset[int] = frozenset()) -> list[int]:
        """Drop members whose time to live passed (partners in ``keep`` stay); returns their ids."""
        gone = [p for p, m in self.members.items() if m.expires <= now and p not in keep]
        for p in gone:
            del self.members[p]
        return gone

    def failed(self, peer: int, now: float, backoff: float) -> None:
        m = self.members.get(peer)
        if m is not None:
            m.fails += 1
            m.retry_at = now + backoff * min(m.fails, 6)

    def ban(self, peer: int, now: float, seconds: float) -> None:
        self.bans[peer] = now + seconds  # kept apart from the entries: it outlives an expired entry

    def banned(self, peer: int, now: float) -> bool:
        until = self.bans.get(peer)
        if until is not None and until <= now:
            del self.bans[peer]
            return False
        return until is not None

    def candidates(self, now: float, exclude: set[int], *, unflagged: bool = False) -> list[Member]:
        """Members this node may connect to: listening, reachable (or any with a port if ``unflagged``), in
        scope, not backing off, not in ``exclude``; sorted by id (the caller picks with its seeded generator)."""
        return [m for p, m in sorted(self.members.items())
                if p not in exclude and m.retry_at <= now and m.port > 0 and (m.reachable or unflagged)
                and not self.banned(p, now)]

    def sample(self, want: int, exclude: set[int], rng_sample) -> list[MemberEntry]:  # noqa: ANN001 - rng.sample
        """Up to ``want`` member entries for a MEMBERS_RESP (not those in ``exclude``)."""
        pool = [m for p, m in sorted(self.members.items()) if p not in exclude]
        if len(pool) > want:
            pool = rng_sample(pool, want)
        return [m.entry() for m in pool]

    def sources(self, now: float) -> list[int]:
        return sorted(p for p, m in self.members.items() if m.source and m.expires > now)
