"""Rate shaping of one link direction with HTB (plus ``stab`` link-layer overhead, e.g. the ATM cell tax).

Produces tc command lines for the sending interface: an HTB root with one class at the configured rate and
a packet FIFO of the configured length under it. The impairment backend may hang its own qdisc under the
class instead of the FIFO (netem) or leave the FIFO (NFQUEUE works in netfilter, not in tc).
"""

from __future__ import annotations

from scenarios.schema import ResolvedDirection

HTB_ROOT = "1:"
HTB_CLASS = "1:1"
LEAF_HANDLE = "10:"


def _quantum(rate: int) -> int:
    """HTB's quantum in bytes, kept inside the range it accepts without warnings."""
    return max(1514, min(60000, rate // 8 // 100))


def htb_commands(dev: str, d: ResolvedDirection, leaf: str | None = None) -> list[str]:
    """tc commands (without the leading 'tc') that shape ``dev`` to the direction's rate.

    ``leaf`` replaces the default ``pfifo limit <d.queue>`` under the HTB class (e.g. a netem qdisc spec).
    """
    assert d.rate is not None
    rate = int(d.rate)
    stab = ""
    if d.linklayer == "atm" or d.overhead:
        stab = f" stab linklayer {d.linklayer} overhead {d.overhead} mtu 2048 tsize 512"
    # burst: at least one MTU-sized packet and ~2 ms of traffic, so that HTB can keep up at high rates
    burst = max(3200, int(rate / 8 * 0.002))
    return [
        f"qdisc replace dev {dev} root handle {HTB_ROOT}{stab} htb default 1",
        f"class add dev {dev} parent {HTB_ROOT} classid {HTB_CLASS} htb rate {rate}bit ceil {rate}bit "
        f"burst {burst} cburst {burst} quantum {_quantum(rate)}",
        f"qdisc add dev {dev} parent {HTB_CLASS} handle {LEAF_HANDLE} " + (leaf or f"pfifo limit {d.queue}"),
    ]


def htb_change_commands(dev: str, d: ResolvedDirection) -> list[str]:
    """Change the rate (and queue) of an already shaped direction in place."""
    assert d.rate is not None
    rate = int(d.rate)
    burst = max(3200, int(rate / 8 * 0.002))
    return [
        f"class change dev {dev} parent {HTB_ROOT} classid {HTB_CLASS} htb rate {rate}bit ceil {rate}bit "
        f"burst {burst} cburst {burst} quantum {_quantum(rate)}",
        f"qdisc change dev {dev} parent {HTB_CLASS} handle {LEAF_HANDLE} pfifo limit {d.queue}",
    ]
