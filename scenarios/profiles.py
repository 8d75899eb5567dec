"""Named access-line profiles (xDSL, FTTH, 3G/HSPA): per-direction rate, link-layer overhead, line delay
and buffer, as a home's or a phone's uplink uses them. A scenario names a profile and may override fields.

Figures are typical sync rates and line characteristics, not vendor promises:
- ADSL (ITU G.992.1): 8 / 1 Mbit/s, ATM cells (AAL5 + PPPoE LLC: 32 bytes of overhead per packet before the
  48-in-53 cell tax), interleaving adds ~10 ms each way.
- ADSL2+ (G.992.5): 24 / 1 Mbit/s, ATM as ADSL, interleaving ~8 ms.
- VDSL2 (G.993.2, profile 17a): 50 / 10 Mbit/s, PTM (Ethernet-like framing, ~8 bytes), ~4 ms.
- FTTH (GPON residential): 100 / 100 Mbit/s, ~1 ms.
- 3G/HSPA: 7.2 / 1.4 Mbit/s, ~50 ms each way (~100 ms RTT) with jitter, deep buffers.
Buffers are modem-like: the upstream buffer of xDSL is the classic ~0.5-1 s of bufferbloat.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class AccessLine:
    """Resolved parameters of an access line (down = network -> subscriber, up = subscriber -> network)."""

    name: str
    down: float  # bit/s
    up: float
    delay: float  # one-way, seconds, each direction
    jitter: float = 0.0
    loss: float = 0.0  # fraction, each direction
    linklayer: str = "ethernet"
    overhead: int = 0
    queue_down: int = 128  # packets
    queue_up: int = 64


PROFILES: dict[str, AccessLine] = {
    "adsl": AccessLine("adsl", down=8e6, up=1e6, delay=0.010, linklayer="atm", overhead=32,
                       queue_down=128, queue_up=64),
    "adsl2plus": AccessLine("adsl2plus", down=24e6, up=1e6, delay=0.008, linklayer="atm", overhead=32,
                            queue_down=256, queue_up=64),
    "vdsl2": AccessLine("vdsl2", down=50e6, up=10e6, delay=0.004, overhead=8, queue_down=512, queue_up=256),
    "ftth": AccessLine("ftth", down=100e6, up=100e6, delay=0.001, queue_down=1000, queue_up=1000),
    "3g": AccessLine("3g", down=7.2e6, up=1.4e6, delay=0.050, jitter=0.005, queue_down=256, queue_up=128),
}


def access_line(name: str, **overrides: object) -> AccessLine:
    """A profile with some fields replaced (``None`` values are ignored)."""
    base = PROFILES[name]
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]
