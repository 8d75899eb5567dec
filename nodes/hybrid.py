"""Hybrid fixed-mobile mode (document chapter 4): ad-hoc scopes and the main nodes' download share.

Main nodes have an Internet uplink and an ad-hoc (piconet) interface; local nodes only the ad-hoc one. All nodes
of one ad-hoc network form a local overlay around a local tracker; main nodes also belong to the Internet overlay.
Main nodes "share the cost of the download, trying to agree to get different parts of the original content"
(4.2.1): with the rule here every main computes the same split without talking about it:

    the mains = the members of the local overlay flagged SOURCE (a main joins its local tracker as the source of
    the content for its scope), plus itself; sorted by peer id (the ids the local tracker gave them);
    k = how many there are, i = this main's rank; main i fetches from the Internet only chunks with id % k == i
    and gets every other chunk over the ad-hoc network from the main that fetched it (or any local partner).

When a main disappears (its connection closes, or the local tracker stops listing it) the others recompute k
and i at once. Pure functions and a small tracker of the mains' set; no I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence


class Scope:
    """A set of IPv4 networks (the ad-hoc network's subnets); empty = everywhere."""

    def __init__(self, cidrs: Sequence[str] = ()):
        self.nets = [ipaddress.IPv4Network(c, strict=False) for c in cidrs]

    def __bool__(self) -> bool:
        return bool(self.nets)

    def __contains__(self, ip: object) -> bool:
        if not self.nets:
            return True
        try:
            addr = ipaddress.IPv4Address(str(ip))
        except ValueError:
            return False
        return any(addr in n for n in self.nets)

    def __repr__(self) -> str:
        return f"Scope({[str(n) for n in self.nets]})"


def share_of(mains: Iterable[int], me: int) -> tuple[int, int]:
    """(i, k): this main's rank among the mains sorted by peer id, and their number (``me`` always counts)."""
    ordered = sorted(set(mains) | {me})
    return ordered.index(me), len(ordered)


def in_share(chunk: int, i: int, k: int) -> bool:
    """Whether main ``i`` of ``k`` fetches ``chunk`` from the Internet side."""
    return k <= 1 or chunk % k == i


class MainsView:
    """The set of mains a main node currently counts: listed ones, minus those seen gone, plus itself."""

    def __init__(self, me: int = 0):
        self.me = me
        self.listed: set[int] = set()
        self.gone: set[int] = set()
        self.share = (0, 1)

    def update(self, listed: Iterable[int]) -> bool:
        """New list of mains known alive (from the local tracker or gossip); True if the share changed."""
        self.listed = set(listed) - {self.me}
        return self._recompute()

    def lost(self, main: int) -> bool:
        """A main's connection closed: not counted until it shows signs of life again (:meth:`alive`)."""
        self.gone.add(main)
        return self._recompute()

    def alive(self, main: int) -> bool:
        self.gone.discard(main)
        return self._recompute()

    def set_me(self, me: int) -> bool:
        self.me = me
        self.listed.discard(me)
        return self._recompute()

    def mains(self) -> list[int]:
        return sorted((self.listed - self.gone) | {self.me})

    def _recompute(self) -> bool:
        new = share_of(self.listed - self.gone, self.me)
        changed = new != self.share
        self.share = new
        return changed

    def fetches(self, chunk: int) -> bool:
        i, k = self.share
        return in_share(chunk, i, k)
