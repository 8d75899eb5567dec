"""NAT on home gateways (routers with ``nat:``), in RFC 4787 terms, built with nftables in the gateway's namespace.

Why nftables, and how
---------------------
Linux's own NAT (``snat`` / ``masquerade`` with conntrack) keeps a mapping only as long as one conntrack entry
(one 5-tuple) lives, and filters inbound packets by that 5-tuple. That is address-and-port-dependent filtering,
and *port preservation* rather than a real endpoint-independent mapping: two inside hosts using the same source
port would share or lose an external port depending on the destinations. Full cone and address-restricted need
state that outlives a 5-tuple. This module keeps that state in nftables *dynamic maps* learned from the packet path
(no helper process, nothing to crash, all of it inside the gateway's namespace, gone with it):

- ``eim``: inside ``ip . port`` -> outside ``ip . port``. The first UDP packet of an inside endpoint is translated
  port-preserving (``snat to G``), or to a random port when that port is already somebody else's mapping; every
  later new flow of the same endpoint, to any destination, is SNATed through this map: endpoint-independent
  mapping (EIM).
- ``rev``: outside port -> inside ``ip . port`` (the owner of each external UDP port), for inbound DNAT and
  hairpinning.
- ``adf``: ``outside port . remote address``: which remote addresses an inside endpoint has sent to.

The maps are refreshed by every outbound packet (``update``, 300 s idle timeout, RFC 4787 REQ-5) in a filter chain
hooked at postrouting right after source NAT, where the packet already carries its external source.

Per type (G = the gateway's address on the ``outside`` link):

============================  ===============================  ============================================
``type``                      mapping (new flow -> G:port)     inbound filtering (unsolicited -> G:port)
============================  ===============================  ============================================
``full-cone``                 EIM via ``eim``                  any source: DNAT via ``rev`` (EIF)
``address-restricted``        EIM via ``eim``                  DNAT via ``rev`` only if ``port . saddr`` is in ``adf``
``port-restricted``           EIM via ``eim``                  none: only conntrack replies (APDF)
``symmetric``                 ``snat to G fully-random``:      none: only conntrack replies (APDF)
                              a new random port per 5-tuple
============================  ===============================  ============================================

TCP and other protocols are translated port-preserving (``snat to G``; ``fully-random`` for symmetric) and
filtered by conntrack. Static port forwards (UDP or TCP) are DNAT rules on ``G:port``. A forward filter drops
everything that arrives on the outside interface and is neither a reply (conntrack) nor DNATed, so inside hosts are
unreachable even when the upstream router has routes to their subnets; new inbound TCP/UDP addressed to the
gateway itself is dropped too (silently, like a home gateway, and before conntrack confirms the entry, so a
blocked probe does not occupy the reply tuple a later outbound flow needs).

Hairpinning (``hairpin: true``): a packet from the inside to ``G:port`` is DNATed like an inbound one (mapped
ports of any inside endpoint, regardless of the filtering type, and port forwards), marked, and SNATed to the
sender's own external mapping, so the receiver sees ``G:mapped-port`` of the sender (RFC 4787 REQ-9).

Limits: mappings are UDP only (TCP is port-preserving, not EIM); a random port chosen for an endpoint whose
preferred port is taken may (rarely, with probability mappings / 64512) hit another endpoint's mapped port; the
gateway's outside address is static (taken from the plan). See docs/nat.md.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from scenarios.schema import NatConfig

TABLE = "streambed_nat"
HAIRPIN_MARK = 0x4E4154  # "NAT": set on the first packet of a hairpinned flow in prerouting, matched in postrouting
MAPPING_TIMEOUT_S = 300
MAP_SIZE = 65536
EIM_TYPES = ("full-cone", "address-restricted", "port-restricted")


@dataclass(frozen=True)
class Forward:
    """A resolved static port forward: ``G:port`` (proto) -> ``ip:to_port``."""

    proto: str
    port: int
    ip: str
    to_port: int


def nat_ruleset(nat_type: str, outside_intf: str, outside_ip: str, hairpin: bool = False,
                forwards: list[Forward] | None = None, own_ips: list[str] | None = None) -> str:
    """The nftables ruleset (an ``nft -f`` file) of one gateway. Pure: builds text, touches nothing."""
    if nat_type not in (*EIM_TYPES, "symmetric"):
        raise ValueError(f"unknown NAT type {nat_type!r}")
    ipaddress.IPv4Address(outside_ip)
    out, g = f'"{outside_intf}"', outside_ip
    own = sorted({g, *(own_ips or [])})
    self_set = "{ " + ", ".join(own) + " }"
    eim = nat_type in EIM_TYPES
    timeout = f"flags dynamic, timeout; timeout {MAPPING_TIMEOUT_S}s; size {MAP_SIZE};"
    lines = [f"table ip {TABLE} {{"]
    if eim:
        lines.append(f"  map eim {{ type ipv4_addr . inet_service : ipv4_addr . inet_service; {timeout} }}")
    lines.append(f"  map rev {{ type inet_service : ipv4_addr . inet_service; {timeout} }}")
    if nat_type == "address-restricted":
        lines.append(f"  set adf {{ type inet_service . ipv4_addr; {timeout} }}")

    # -- inbound: port forwards, cone filtering, hairpin (DNAT) -------------------------------------------------
    lines += ["  chain prerouting {", "    type nat hook prerouting priority dstnat; policy accept;"]
    for fw in forwards or []:
        target = f"dnat ip to {fw.ip}:{fw.to_port}"
        match = f"ip daddr {g} meta l4proto {fw.proto} th dport {fw.port}"
        lines.append(f"    iifname {out} {match} {target}")
        if hairpin:
            lines.append(f"    iifname != {out} {match} meta mark set {HAIRPIN_MARK:#x} {target}")
    to_owner = "dnat ip to udp dport map @rev"
    if nat_type == "full-cone":
        lines.append(f"    iifname {out} ip daddr {g} udp dport @rev {to_owner}")
    elif nat_type == "address-restricted":
        lines.append(f"    iifname {out} ip daddr {g} udp dport . ip saddr @adf {to_owner}")
    if hairpin:
        lines.append(f"    iifname != {out} ip daddr {g} udp dport @rev meta mark set {HAIRPIN_MARK:#x} {to_owner}")
    lines.append("  }")

    # -- outbound: mapping (SNAT) ----------------------------------------------------------------------------
    lines += ["  chain postrouting {", "    type nat hook postrouting priority srcnat; policy accept;"]
    if eim:
        lines += [
            f"    oifname {out} ip saddr != {self_set} snat ip to ip saddr . udp sport map @eim",
            f"    oifname {out} ip saddr != {self_set} udp sport @rev snat ip to {g} random",
            f"    oifname {out} snat ip to {g}",
        ]
        if hairpin:
            lines += [
                f"    meta mark {HAIRPIN_MARK:#x} snat ip to ip saddr . udp sport map @eim",
                f"    meta mark {HAIRPIN_MARK:#x} snat ip to {g}",
            ]
    else:
        lines.append(f"    oifname {out} snat ip to {g} fully-random")
        if hairpin:
            lines.append(f"    meta mark {HAIRPIN_MARK:#x} snat ip to {g} fully-random")
    lines.append("  }")

    # -- learning: refresh the maps from every outbound UDP packet (already translated here) -----------------
    orig = "ct original ip saddr . ct original proto-src"
    reply = "ct reply ip saddr . ct reply proto-src"
    ext = "ip saddr . udp sport"
    lines += ["  chain learn {", "    type filter hook postrouting priority srcnat + 1; policy accept;"]
    for direction, inside, who in (("original", orig, "ct original ip saddr"), ("reply", reply, "ct reply ip saddr")):
        cond = f"oifname {out} meta l4proto udp ct direction {direction} {who} != {self_set}"
        if eim:
            lines.append(f"    {cond} update @eim {{ {inside} : {ext} }}")
        lines.append(f"    {cond} update @rev {{ udp sport : {inside} }}")
    if nat_type == "address-restricted":
        lines.append(f"    oifname {out} meta l4proto udp update @adf {{ udp sport . ip daddr }}")
    lines.append("  }")

    # -- firewall: nothing unsolicited gets in ---------------------------------------------------------------
    lines += [
        "  chain forward {", "    type filter hook forward priority filter; policy accept;",
        f"    iifname {out} ct state established,related accept",
        f"    iifname {out} ct status dnat accept",
        f"    iifname {out} ip daddr 224.0.0.0/4 accept",  # multicast the gateway routes in (IGMP-proxy-like)
        f"    iifname {out} drop",
        "  }",
        "  chain input {", "    type filter hook input priority filter; policy accept;",
        f"    iifname {out} ct status dnat accept",
        f"    iifname {out} ip daddr 224.0.0.0/4 accept",
        f"    iifname {out} meta l4proto {{ tcp, udp }} ct state new drop",
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def _endpoint(net: Any, node: str, link_name: str) -> Any:
    try:
        lp = net.plan.link(link_name)
    except StopIteration:
        raise RuntimeError(f"NAT on {node}: no link named {link_name!r} (nat.outside)") from None
    for ep in (lp.a, lp.b):
        if ep.node == node:
            if ep.ip is None:
                raise RuntimeError(f"NAT on {node}: its end of link {link_name!r} has no IPv4 address")
            return ep
    raise RuntimeError(f"NAT on {node}: link {link_name!r} does not end at {node}")


def _resolve_inside(net: Any, node: str, outside_intf: str, to: str) -> str:
    """A forward's ``to`` (address or node name) -> address, preferring the target's address on a subnet of the
    gateway's inside interfaces, else the node's primary address (``plan.hosts_table()``)."""
    try:
        return str(ipaddress.IPv4Address(to))
    except ValueError:
        pass
    inside_nets = [ep.ip.network for lp in net.plan.links for ep in (lp.a, lp.b)
                   if ep.node == node and ep.intf != outside_intf and ep.ip is not None]
    for lp in net.plan.links:
        for ep in (lp.a, lp.b):
            if ep.node == to and ep.ip is not None and any(ep.ip.ip in n for n in inside_nets):
                return str(ep.ip.ip)
    hosts = net.plan.hosts_table()
    if to not in hosts:
        raise RuntimeError(f"NAT on {node}: port forward target {to!r} is neither an address nor a node with one")
    return hosts[to]


def apply_nat(net: Any, node: str, cfg: NatConfig) -> None:
    """Install ``cfg`` in gateway ``node`` (an ``EmulatedNetwork``); raise RuntimeError if the kernel refuses."""
    ep = _endpoint(net, node, cfg.outside)
    own = [str(e.ip.ip) for lp in net.plan.links for e in (lp.a, lp.b) if e.node == node and e.ip is not None]
    forwards = [Forward(f.proto, f.port, _resolve_inside(net, node, ep.intf, f.to), f.to_port or f.port)
                for f in cfg.forwards]
    text = nat_ruleset(cfg.type, ep.intf, str(ep.ip.ip), cfg.hairpin, forwards, own)
    folder = net.workdir / "net"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"nat-{node}.nft"
    path.write_text(text)
    cmds = [f"nft -f {path}"]
    if cfg.hairpin:  # hairpinned packets leave by the interface they came in: no ICMP redirects for them
        cmds.append("sysctl -qw net.ipv4.conf.all.send_redirects=0")
        cmds += [f"sysctl -qw net.ipv4.conf.{e.intf}.send_redirects=0" for lp in net.plan.links
                 for e in (lp.a, lp.b) if e.node == node]
    for cmd in cmds:
        out = net.run(node, f"{cmd} 2>&1; echo __rc=$?")
        body, _, rc = out.rpartition("__rc=")
        if rc.strip() != "0":
            raise RuntimeError(f"NAT on {node} ({cfg.type}): `{cmd}` failed (exit {rc.strip() or '?'}): "
                               f"{body.strip()[:800]}")
    check = net.run(node, f"nft list table ip {TABLE} 2>&1")
    if f"table ip {TABLE}" not in check:
        raise RuntimeError(f"NAT on {node}: table {TABLE} missing after loading it: {check.strip()[:400]}")


def nat_rules_dump(net: Any, node: str) -> str:
    """The gateway's NAT table with its learned maps, and its conntrack entries (for the bundle)."""
    parts = []
    for cmd in (f"nft list table ip {TABLE}", "conntrack -L"):
        parts.append(f"$ {cmd}\n{net.run(node, cmd + ' 2>&1')}")
    return "\n".join(parts)
