"""iptables argv builders that steer one link direction into an NFQUEUE served by the delay line.

Pure functions: they return argv lists and execute nothing. Run them inside the node's namespace (e.g.
``node.cmd`` / ``ip netns exec``). The rules deliberately carry no ``--queue-bypass``: without a delay line
bound to the queue the kernel drops the packets, so a dead delay line is visible, never a silent bypass.

- egress of an interface:  ``iptables -t mangle -A POSTROUTING -o IF -j NFQUEUE --queue-num N``
- ingress of an interface: ``iptables -t mangle -A PREROUTING -i IF -j NFQUEUE --queue-num N``
"""

from __future__ import annotations

from typing import Literal

Direction = Literal["egress", "ingress"]
Op = Literal["-A", "-I", "-D", "-C"]

_CHAIN = {"egress": ("POSTROUTING", "-o"), "ingress": ("PREROUTING", "-i")}


def _check(interface: str, queue_num: int) -> None:
    if not interface or len(interface) > 15 or any(c.isspace() or c in "/:" for c in interface):
        raise ValueError(f"bad interface name {interface!r}")
    if not 0 <= int(queue_num) <= 65535:
        raise ValueError(f"queue number {queue_num} out of range 0..65535")


def steer_argv(direction: Direction, interface: str, queue_num: int, op: Op = "-A",
               iptables: str = "iptables") -> list[str]:
    """argv of one rule operation; ``iptables="ip6tables"`` for IPv6 traffic."""
    if direction not in _CHAIN:
        raise ValueError(f"direction must be 'egress' or 'ingress', not {direction!r}")
    _check(interface, queue_num)
    chain, flag = _CHAIN[direction]
    return [iptables, "-t", "mangle", op, chain, flag, interface,
            "-j", "NFQUEUE", "--queue-num", str(int(queue_num))]


def egress_add(interface: str, queue_num: int, iptables: str = "iptables") -> list[str]:
    """Packets leaving ``interface`` go to queue ``queue_num``."""
    return steer_argv("egress", interface, queue_num, "-A", iptables)


def egress_delete(interface: str, queue_num: int, iptables: str = "iptables") -> list[str]:
    """Undo :func:`egress_add`."""
    return steer_argv("egress", interface, queue_num, "-D", iptables)


def ingress_add(interface: str, queue_num: int, iptables: str = "iptables") -> list[str]:
    """Packets arriving on ``interface`` go to queue ``queue_num``."""
    return steer_argv("ingress", interface, queue_num, "-A", iptables)


def ingress_delete(interface: str, queue_num: int, iptables: str = "iptables") -> list[str]:
    """Undo :func:`ingress_add`."""
    return steer_argv("ingress", interface, queue_num, "-D", iptables)
