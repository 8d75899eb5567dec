"""Piconet profiles and the range rule: which members of a Bluetooth-like piconet are active at a position.

Profiles (shared capacity for all members and both directions, per-hop delay, per-hop loss):
- ``bt-classic``: Bluetooth 1.2 ACL, 723.2 kbit/s asymmetric maximum, ~10 ms per hop (baseband ARQ hides loss).
- ``bt-edr``: Bluetooth 2.0 + EDR, 2.1 Mbit/s, ~10 ms per hop.
- ``wifi-adhoc``: 802.11g ad-hoc (IBSS) goodput, ~20 Mbit/s, ~2 ms per hop.
A piconet has at most 7 active slaves (3-bit active member address); the others are parked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MAX_ACTIVE_SLAVES = 7


@dataclass(frozen=True)
class PiconetProfile:
    capacity: float  # bit/s, shared
    delay: float  # s per hop
    loss: float = 0.0  # fraction per hop


PICONET_PROFILES: dict[str, PiconetProfile] = {
    "bt-classic": PiconetProfile(capacity=723_200, delay=0.010),
    "bt-edr": PiconetProfile(capacity=2_100_000, delay=0.010),
    "wifi-adhoc": PiconetProfile(capacity=20_000_000, delay=0.002),
}


def link_name(piconet: str, node: str) -> str:
    """Name of the generated link between ``node`` and the piconet's LAN."""
    return f"{piconet}_{node}"


def in_range(a: tuple[float, float] | None, b: tuple[float, float] | None, rng: float) -> bool:
    """Within range (a node without a position is taken to be in range)."""
    if a is None or b is None:
        return True
    return math.dist(a, b) <= rng


def active_members(members: list[str], master_pos: tuple[float, float] | None,
                   positions: dict[str, tuple[float, float] | None], rng: float,
                   currently_active: list[str]) -> tuple[list[str], list[str]]:
    """(active, refused): members in range, keeping those already active first, at most 7; the rest in range
    are refused (parked) until a slot frees."""
    want = [m for m in members if in_range(positions.get(m), master_pos, rng)]
    keep = [m for m in currently_active if m in want]
    new = [m for m in want if m not in keep]
    slots = MAX_ACTIVE_SLAVES - len(keep)
    return keep + new[:max(0, slots)], new[max(0, slots):]
