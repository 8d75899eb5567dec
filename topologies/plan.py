"""From a validated scenario to a network plan: interface names, LAN segments, addresses, static routes,
and the parameters of every link direction. Pure data (no kernel calls), so it is unit-tested and stored
in the run bundle before anything is built.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from scenarios.schema import Link, ResolvedDirection, Scenario


@dataclass
class Endpoint:
    """One end of a link: the node, its interface name, and its address (None on a switch port)."""

    node: str
    intf: str
    ip: ipaddress.IPv4Interface | None
    segment: str = ""  # the L2 segment: "lan:<first switch>" or "p2p:<link>"


@dataclass
class LinkPlan:
    link: Link
    a: Endpoint
    b: Endpoint
    a_to_b: ResolvedDirection
    b_to_a: ResolvedDirection

    @property
    def name(self) -> str:
        return self.link.link_name

    def directions(self) -> Iterator[tuple[ResolvedDirection, Endpoint, Endpoint]]:
        """(parameters, sending end, receiving end) for both directions."""
        yield self.a_to_b, self.a, self.b
        yield self.b_to_a, self.b, self.a


@dataclass
class NetworkPlan:
    kinds: dict[str, str]
    links: list[LinkPlan]
    segments: dict[str, ipaddress.IPv4Network] = field(default_factory=dict)  # switch -> subnet
    routes: dict[str, list[tuple[ipaddress.IPv4Network, ipaddress.IPv4Address, str]]] = field(default_factory=dict)
    nat_outside: dict[str, str] = field(default_factory=dict)  # NAT gateway -> its outside interface

    def primary_ip(self, node: str) -> ipaddress.IPv4Address | None:
        """The node's first address; a NAT gateway's outside address (its public identity)."""
        outside = self.nat_outside.get(node)
        for lp in self.links:
            for ep in (lp.a, lp.b):
                if outside is not None and ep.node == node and ep.intf == outside and ep.ip is not None:
                    return ep.ip.ip
        for lp in self.links:
            for ep in (lp.a, lp.b):
                if ep.node == node and ep.ip is not None:
                    return ep.ip.ip
        return None

    def hosts_table(self) -> dict[str, str]:
        """Node name -> primary address, given to every process for name resolution."""
        out = {}
        for name, kind in self.kinds.items():
            ip = self.primary_ip(name) if kind != "switch" else None
            if ip is not None:
                out[name] = str(ip)
        return out

    def link(self, name: str) -> LinkPlan:
        return next(lp for lp in self.links if lp.name == name)

    def to_json(self) -> dict:
        return {
            "segments": {k: str(v) for k, v in self.segments.items()},
            "links": [
                {"name": lp.name,
                 "a": {"node": lp.a.node, "intf": lp.a.intf, "ip": str(lp.a.ip) if lp.a.ip else None},
                 "b": {"node": lp.b.node, "intf": lp.b.intf, "ip": str(lp.b.ip) if lp.b.ip else None},
                 "a_to_b": lp.a_to_b.model_dump(mode="json"), "b_to_a": lp.b_to_a.model_dump(mode="json")}
                for lp in self.links],
            "routes": {n: [[str(d), str(g), i] for d, g, i in rs] for n, rs in self.routes.items()},
        }


class PlanError(ValueError):
    """The scenario is valid but cannot be laid out (e.g. the address pool is too small)."""


def intf_name(node: str, index: int) -> str:
    return f"{node}-e{index}"


def make_plan(sc: Scenario) -> NetworkPlan:
    kinds = {n.name: n.kind for n in sc.nodes}
    counters: dict[str, int] = {}

    def next_intf(node: str) -> str:
        i = counters.get(node, 0)
        counters[node] = i + 1
        return intf_name(node, i)

    # LAN segments: connected groups of switches share one subnet.
    sw = nx.Graph()
    sw.add_nodes_from(n for n, k in kinds.items() if k == "switch")
    sw.add_edges_from((lk.a, lk.b) for lk in sc.links if kinds[lk.a] == kinds[lk.b] == "switch")
    segment_of: dict[str, str] = {}
    segments: dict[str, ipaddress.IPv4Network] = {}
    explicit = {n.name: n.subnet for n in sc.nodes if n.subnet is not None}
    lan_pool = sc.addressing.lan_pool.subnets(new_prefix=sc.addressing.lan_prefix)
    used = {s for s in explicit.values()}
    for comp in sorted(nx.connected_components(sw), key=lambda c: sorted(c)[0]):
        head = sorted(comp)[0]
        given = [explicit[s] for s in sorted(comp) if s in explicit]
        if given:
            subnet = given[0]
        else:
            subnet = next((s for s in lan_pool if not any(s.overlaps(u) for u in used)), None)
            if subnet is None:
                raise PlanError(f"addressing.lan_pool {sc.addressing.lan_pool} has no free /{sc.addressing.lan_prefix}")
            used.add(subnet)
        segments[head] = subnet
        for s in comp:
            segment_of[s] = head
    lan_free: dict[str, Iterator[ipaddress.IPv4Address]] = {h: iter(n.hosts()) for h, n in segments.items()}
    taken: set[ipaddress.IPv4Address] = set()
    for lk in sc.links:
        for ip in (lk.addresses or {}).values():
            taken.add(ip.ip)
    p2p_pool = sc.addressing.p2p_pool.subnets(new_prefix=30)
    lan_taken: dict[str, set[ipaddress.IPv4Address]] = {}

    links: list[LinkPlan] = []
    for lk in sc.links:
        eps: dict[str, Endpoint] = {}
        a_sw, b_sw = kinds[lk.a] == "switch", kinds[lk.b] == "switch"
        given = lk.addresses or {}
        if not a_sw and not b_sw:
            if lk.a in given and lk.b in given:
                ips = (given[lk.a], given[lk.b])
            else:
                net = next((n for n in p2p_pool if not any(t in n for t in taken)), None)
                if net is None:
                    raise PlanError(f"addressing.p2p_pool {sc.addressing.p2p_pool} is exhausted")
                h = list(net.hosts())
                ips = (ipaddress.IPv4Interface(f"{h[0]}/30"), ipaddress.IPv4Interface(f"{h[1]}/30"))
            eps[lk.a] = Endpoint(lk.a, next_intf(lk.a), ips[0], f"p2p:{lk.link_name}")
            eps[lk.b] = Endpoint(lk.b, next_intf(lk.b), ips[1], f"p2p:{lk.link_name}")
        else:
            for node, is_sw, other in ((lk.a, a_sw, lk.b), (lk.b, b_sw, lk.a)):
                if is_sw:
                    eps[node] = Endpoint(node, next_intf(node), None, f"lan:{segment_of[node]}")
                    continue
                seg = segment_of[other]
                net = segments[seg]
                if node in given:
                    ip = given[node]
                    if ip.network != net:
                        raise PlanError(f"link {lk.link_name}: {ip} is not in the LAN subnet {net} of {other}")
                else:
                    addr = next((a for a in lan_free[seg] if a not in taken and a not in lan_taken.get(seg, ())),
                                None)
                    if addr is None:
                        raise PlanError(f"LAN subnet {net} of {other} has no free address for {node}")
                    ip = ipaddress.IPv4Interface(f"{addr}/{net.prefixlen}")
                lan_taken.setdefault(seg, set()).add(ip.ip)
                eps[node] = Endpoint(node, next_intf(node), ip, f"lan:{seg}")
        links.append(LinkPlan(lk, eps[lk.a], eps[lk.b], lk.resolved(lk.a), lk.resolved(lk.b)))

    plan = NetworkPlan(kinds=kinds, links=links, segments=segments)
    for node in sc.nodes:
        if node.nat is not None:
            lp = next(lp for lp in links if lp.name == node.nat.outside)
            plan.nat_outside[node.name] = (lp.a if lp.a.node == node.name else lp.b).intf
    plan.routes = compute_routes(plan)
    return plan


def compute_routes(plan: NetworkPlan, down: set[str] | frozenset[str] = frozenset(),
                   ) -> dict[str, list[tuple[ipaddress.IPv4Network, ipaddress.IPv4Address, str]]]:
    """Static shortest-path routes (by link cost) for every host and router to every subnet it may reach.

    Only routers forward: paths pass through routers, never through other hosts. A NAT gateway is split in
    an inside and an outside half: traffic may go from inside to outside, never the other way, so the
    subnets behind a NAT (which may repeat from home to home, e.g. 192.168.1.0/24) are not routed from
    outside, as on the real Internet. Subnets are graph nodes keyed by segment, not by prefix.
    Links named in ``down`` are left out (the routes the network converges to while they are down).
    """
    g = nx.DiGraph()
    attached: dict[str, list[tuple[str, Endpoint, float]]] = {}
    for lp in plan.links:
        if lp.name in down:
            continue
        for ep in (lp.a, lp.b):
            if ep.ip is not None:
                attached.setdefault(ep.node, []).append((ep.segment, ep, lp.link.cost))

    def half(node: str, ep: Endpoint) -> Any:
        outside = plan.nat_outside.get(node)
        if outside is None:
            return node
        return (node, "out") if ep.intf == outside else (node, "in")

    prefix: dict[str, ipaddress.IPv4Network] = {}
    addr_on: dict[tuple[str, str], ipaddress.IPv4Address] = {}
    for node, segs in attached.items():
        for seg, ep, cost in segs:
            prefix[seg] = ep.ip.network  # type: ignore[union-attr]
            addr_on[(node, seg)] = ep.ip.ip  # type: ignore[union-attr]
            g.add_edge(("seg", seg), half(node, ep), weight=cost / 2)
            if plan.kinds[node] == "router":
                g.add_edge(half(node, ep), ("seg", seg), weight=cost / 2)
        if node in plan.nat_outside:
            g.add_edge((node, "in"), (node, "out"), weight=0.0)

    routes: dict[str, list[tuple[ipaddress.IPv4Network, ipaddress.IPv4Address, str]]] = {}
    for node, segs in attached.items():
        own = {seg: ep for seg, ep, _ in segs}
        source = ("src", node)
        for seg, _ep, cost in segs:
            g.add_edge(source, ("seg", seg), weight=cost / 2)
        _, paths = nx.single_source_dijkstra(g, source)
        g.remove_node(source)
        out = []
        seen: set[ipaddress.IPv4Network] = {prefix[s] for s in own}
        reachable = [(len(paths[("seg", s)]), s) for s in prefix if ("seg", s) in paths and s not in own]
        for _, seg in sorted(reachable, key=lambda x: (x[0], x[1])):
            path = paths[("seg", seg)]
            if len(path) < 4 or prefix[seg] in seen:
                continue
            first_seg = path[1][1]
            hop = path[2][0] if isinstance(path[2], tuple) else path[2]
            seen.add(prefix[seg])
            out.append((prefix[seg], addr_on[(hop, first_seg)], own[first_seg].intf))
        routes[node] = sorted(out, key=lambda r: (int(r[0].network_address), r[0].prefixlen))
    return routes
