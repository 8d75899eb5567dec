"""Parsing of the quantities scenario files use: bit rates, durations, percentages, byte sizes.

Accepted spellings (case-insensitive, spaces allowed between number and unit):
- rate: ``8mbit``, ``1.5 Mbit/s``, ``800kbit``, ``2gbit``, ``64000bit``, or a bare number of bit/s.
- duration: ``10ms``, ``250us``, ``2s``, ``1.5min``, or a bare number of seconds.
- percent: ``2%``, ``0.5 %``, or a bare number meaning percent (``2`` = 2 %, never a fraction).
- size: ``1500``, ``64kb``, ``1mb`` (bytes; k = 1000, ki = 1024).
"""

from __future__ import annotations

import re

_NUM = r"(?P<num>-?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"

_RATE_UNITS = {"": 1.0, "bit": 1.0, "bps": 1.0, "kbit": 1e3, "kbps": 1e3, "mbit": 1e6, "mbps": 1e6,
               "gbit": 1e9, "gbps": 1e9}
_TIME_UNITS = {"": 1.0, "s": 1.0, "sec": 1.0, "ms": 1e-3, "us": 1e-6, "min": 60.0, "h": 3600.0}
_SIZE_UNITS = {"": 1, "b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2}


def _split(text: str, what: str) -> tuple[float, str]:
    m = re.fullmatch(_NUM + r"\s*(?P<unit>[a-zA-Z%/]*)", text.strip())
    if not m:
        raise ValueError(f"cannot read {text!r} as a {what}")
    return float(m.group("num")), m.group("unit").lower()


def parse_rate(value: object) -> float:
    """Return a bit rate in bit/s."""
    if isinstance(value, bool):
        raise ValueError("a rate must be a number of bit/s or a string like '8mbit'")
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str):
        raise ValueError("a rate must be a number of bit/s or a string like '8mbit'")
    num, unit = _split(value, "rate")
    unit = unit.removesuffix("/s")
    if unit not in _RATE_UNITS:
        raise ValueError(f"unknown rate unit {unit!r} in {value!r} (use bit, kbit, mbit, gbit)")
    return num * _RATE_UNITS[unit]


def parse_duration(value: object) -> float:
    """Return a duration in seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration must be a number of seconds or a string like '10ms'")
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str):
        raise ValueError("a duration must be a number of seconds or a string like '10ms'")
    num, unit = _split(value, "duration")
    if unit not in _TIME_UNITS:
        raise ValueError(f"unknown time unit {unit!r} in {value!r} (use us, ms, s, min)")
    return num * _TIME_UNITS[unit]


def parse_percent(value: object) -> float:
    """Return a probability in [0, 1] from a percentage (``2%`` or ``2`` both mean 0.02)."""
    if isinstance(value, bool):
        raise ValueError("a percentage must be a number or a string like '2%'")
    if isinstance(value, int | float):
        num = float(value)
    elif isinstance(value, str):
        num, unit = _split(value, "percentage")
        if unit not in ("", "%"):
            raise ValueError(f"a percentage takes no unit but %, got {value!r}")
    else:
        raise ValueError("a percentage must be a number or a string like '2%'")
    if not 0.0 <= num <= 100.0:
        raise ValueError(f"a percentage must lie between 0 and 100, got {value!r}")
    return num / 100.0


def parse_size(value: object) -> int:
    """Return a size in bytes."""
    if isinstance(value, bool):
        raise ValueError("a size must be a number of bytes or a string like '64kb'")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, str):
        raise ValueError("a size must be a number of bytes or a string like '64kb'")
    num, unit = _split(value, "size")
    if unit not in _SIZE_UNITS:
        raise ValueError(f"unknown size unit {unit!r} in {value!r} (use b, kb, kib, mb, mib)")
    return int(num * _SIZE_UNITS[unit])


def format_rate(bps: float) -> str:
    """Short human form of a bit rate, e.g. ``8 Mbit/s``."""
    for unit, scale in (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if bps >= scale:
            return f"{bps / scale:g} {unit}"
    return f"{bps:g} bit/s"
