"""Building blocks -> plain nodes and links: ISP islands, the backbone, homes behind access lines.

A scenario may describe the Internet with ``isps``, ``backbone`` and ``homes`` instead of listing every router
and link. ``expand_blocks`` appends the nodes and links they stand for (names below) to the scenario before the
cross-field checks run, and remembers where each generated element came from, so that an error in one is
reported at the line of the block that made it.

- ISP ``x`` (k-th in the file): core router ``x_c``, access routers ``x_a1..x_an`` (DSLAM/BRAS), links
  core<->access; addresses from the ISP's plan (default 10.<100+k>.0.0/16). Multicast ISPs run the chosen
  daemon in every router (with the backbone router as rendezvous point when the backbone carries multicast).
- Backbone: router ``bb`` linked to every ISP core with the backbone's delay and rate.
- Node uplink: a link ``<node>_up`` from the node to an access router with the profile's parameters.
- Piconet ``p``: LAN ``p_bt`` and a link ``p_<member>`` from the master and every member, with the profile's
  per-hop delay and loss; the master becomes a router (it relays). Capacity sharing, port isolation and
  the range rule are applied at run time by ``topologies.piconet``.
- Home ``h``: gateway ``h_gw`` (NAT towards its access line ``h_line`` unless ``nat: none``), LAN ``h_sw``
  (192.168.1.0/24 by default: every home may use the same private subnet), hosts ``h_1``.. (or named);
  the access line joins the gateway to an access router with the profile's down/up rates, ATM overhead,
  line delay and buffers.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Any

from scenarios.piconets import MAX_ACTIVE_SLAVES, PICONET_PROFILES, active_members
from scenarios.piconets import link_name as piconet_link
from scenarios.profiles import AccessLine, access_line
from scenarios.schema import (
    AccessSpec,
    Backbone,
    DirectionParams,
    Link,
    LinkSet,
    MulticastRouting,
    NatConfig,
    Node,
    Scenario,
    SetAccess,
)

Problem = tuple[tuple[Any, ...], str]


def _pairs(plan: ipaddress.IPv4Network) -> Iterator[tuple[ipaddress.IPv4Interface, ipaddress.IPv4Interface]]:
    for net in plan.subnets(new_prefix=30):
        a, b = list(net.hosts())[:2]
        yield ipaddress.IPv4Interface(f"{a}/30"), ipaddress.IPv4Interface(f"{b}/30")


def _line(spec: str | AccessSpec) -> AccessLine | str:
    """The access line a spec asks for, or what is wrong with it."""
    spec = spec if isinstance(spec, AccessSpec) else AccessSpec(profile=spec)  # type: ignore[arg-type]
    if spec.profile == "custom":
        missing = [f for f in ("down", "up", "delay") if getattr(spec, f) is None]
        if missing:
            return "a custom access line needs " + ", ".join(missing)
        base = "ftth"
    else:
        base = spec.profile
    return access_line(base, down=spec.down, up=spec.up, delay=spec.delay, jitter=spec.jitter, loss=spec.loss,
                       linklayer=spec.linklayer, overhead=spec.overhead, queue_down=spec.queue_down,
                       queue_up=spec.queue_up)


def _access_link(name: str, sub: str, access: str, a: ipaddress.IPv4Interface, b: ipaddress.IPv4Interface,
                 line: AccessLine) -> Link:
    """The link of an access line: ``sub`` (subscriber side) to ``access`` (the access router)."""
    common: dict[str, Any] = {"delay": line.delay, "jitter": line.jitter or None, "loss": line.loss * 100 or None,
                              "linklayer": line.linklayer, "overhead": line.overhead}
    return Link(name=name, a=sub, b=access, addresses={sub: a, access: b},
                a_to_b=DirectionParams(rate=line.up, queue=line.queue_up, **common),
                b_to_a=DirectionParams(rate=line.down, queue=line.queue_down, **common))


def expand_blocks(sc: Scenario) -> tuple[dict[tuple[str, int], tuple[Any, ...]], list[Problem]]:
    """Append the blocks' nodes and links to ``sc``; return (origin of each generated element, problems)."""
    origins: dict[tuple[str, int], tuple[Any, ...]] = {}
    problems: list[Problem] = []
    if not sc.isps and not sc.homes and not sc.piconets and not any(n.uplink for n in sc.nodes):
        return origins, problems

    def add_node(node: Node, loc: tuple[Any, ...]) -> None:
        origins[("nodes", len(sc.nodes))] = loc
        sc.nodes.append(node)

    def add_link(link: Link, loc: tuple[Any, ...]) -> None:
        origins[("links", len(sc.links))] = loc
        sc.links.append(link)

    backbone = sc.backbone or Backbone()
    mcast_isps = [isp for isp in sc.isps if isp.multicast]
    bb_mcast = backbone.multicast and len(mcast_isps) > 0
    plans: dict[str, Iterator[tuple[ipaddress.IPv4Interface, ipaddress.IPv4Interface]]] = {}
    isp_of: dict[str, str] = {}
    if sc.isps:
        daemon = mcast_isps[0].daemon if mcast_isps else "pimd"
        add_node(Node(name="bb", kind="router",
                      multicast_routing=MulticastRouting(daemon=daemon, rp="bb") if bb_mcast else None),
                 ("backbone",) if sc.backbone else ("isps",))
    for k, isp in enumerate(sc.isps):
        loc = ("isps", k)
        plan = isp.plan or ipaddress.IPv4Network(f"10.{100 + k}.0.0/16")
        plans[isp.name] = _pairs(plan)
        rp = "bb" if bb_mcast else f"{isp.name}_c"
        mr = MulticastRouting(daemon=isp.daemon, rp=rp) if isp.multicast else None
        core = f"{isp.name}_c"
        add_node(Node(name=core, kind="router", multicast_routing=mr), loc)
        isp_of[core] = isp.name
        a, b = next(plans[isp.name])
        add_link(Link(name=f"{isp.name}_bb", a=core, b="bb", delay=backbone.delay, rate=backbone.rate,
                      addresses={core: a, "bb": b}), loc)
        for r in range(1, isp.access_routers + 1):
            name = f"{isp.name}_a{r}"
            add_node(Node(name=name, kind="router", multicast_routing=mr), loc)
            isp_of[name] = isp.name
            a, b = next(plans[isp.name])
            add_link(Link(name=f"{isp.name}_c{r}", a=core, b=name, delay=isp.core_delay, rate=isp.core_rate,
                          addresses={core: a, name: b}), loc)

    isps = {isp.name: isp for isp in sc.isps}
    round_robin: dict[str, int] = {}
    for j, home in enumerate(sc.homes):
        loc = ("homes", j)
        isp = isps.get(home.isp)
        if isp is None:
            problems.append(((*loc, "isp"), f"no ISP named {home.isp!r}; ISPs: " + ", ".join(sorted(isps)) or "none"))
            continue
        if home.access_router is not None and home.access_router > isp.access_routers:
            problems.append(((*loc, "access_router"),
                             f"ISP {isp.name!r} has {isp.access_routers} access router(s), not {home.access_router}"))
            continue
        r = home.access_router or round_robin.get(isp.name, 0) % isp.access_routers + 1
        round_robin[isp.name] = round_robin.get(isp.name, 0) + 1
        line = _line(home.access)
        if isinstance(line, str):
            problems.append(((*loc, "access"), line))
            continue
        gw, sw, line_name = f"{home.name}_gw", f"{home.name}_sw", f"{home.name}_line"
        nat = None if home.nat == "none" else NatConfig(type=home.nat, outside=line_name, hairpin=home.hairpin,
                                                         forwards=home.forwards)
        mr = MulticastRouting(daemon=isp.daemon, rp="bb" if bb_mcast else f"{isp.name}_c") if isp.multicast else None
        add_node(Node(name=gw, kind="router", nat=nat, multicast_routing=mr), loc)
        subnet = home.subnet
        if home.nat == "none" and "subnet" not in home.model_fields_set:
            # without NAT the LAN is routed publicly, so it needs a subnet of its own from the ISP's plan
            isp_plan = isp.plan or ipaddress.IPv4Network(f"10.{100 + sc.isps.index(isp)}.0.0/16")
            subnet = list(isp_plan.subnets(new_prefix=24))[128 + j % 128]
        add_node(Node(name=sw, kind="switch", subnet=subnet), loc)
        add_link(Link(a=gw, b=sw), loc)
        access = f"{isp.name}_a{r}"
        a, b = next(plans[isp.name])
        add_link(_access_link(line_name, gw, access, a, b, line), (*loc, "access"))
        hosts = ([None] * home.hosts) if isinstance(home.hosts, int) else list(home.hosts)
        for i, h in enumerate(hosts, start=1):
            name = (h.name if h is not None and h.name else f"{home.name}_{i}")
            add_node(Node(name=name, processes=list(h.processes) if h is not None else []),
                     (*loc, "hosts", i - 1) if h is not None else loc)
            add_link(Link(a=name, b=sw), loc)

    for i, node in enumerate(list(sc.nodes)):
        if node.uplink is None:
            continue
        loc = ("nodes", i, "uplink")
        isp = isps.get(node.uplink.isp)
        if isp is None:
            problems.append(((*loc, "isp"), f"no ISP named {node.uplink.isp!r}"))
            continue
        r = node.uplink.access_router or round_robin.get(isp.name, 0) % isp.access_routers + 1
        round_robin[isp.name] = round_robin.get(isp.name, 0) + 1
        if r > isp.access_routers:
            problems.append(((*loc, "access_router"), f"ISP {isp.name!r} has {isp.access_routers} access router(s)"))
            continue
        line = _line(node.uplink.access)
        if isinstance(line, str):
            problems.append(((*loc, "access"), line))
            continue
        access = f"{isp.name}_a{r}"
        a, b = next(plans[isp.name])
        add_link(_access_link(f"{node.name}_up", node.name, access, a, b, line), loc)

    for k, pn in enumerate(sc.piconets):
        loc = ("piconets", k)
        names = {n.name: n for n in sc.nodes}
        bad = [m for m in [pn.master, *pn.members] if m not in names]
        if bad:
            field = "master" if pn.master in bad else "members"
            problems.append(((*loc, field), f"no node named {bad[0]!r}"))
            continue
        if pn.master in pn.members:
            problems.append(((*loc, "members"), f"the master {pn.master!r} is not also a member"))
            continue
        prof = PICONET_PROFILES[pn.profile]
        master = names[pn.master]
        if master.kind == "host":
            master.kind = "router"  # the master relays between slaves and to its uplink
        pos = {n: names[n].position for n in pn.members}
        active, refused = active_members(pn.members, master.position, pos, pn.range, [])
        if refused:
            problems.append(((*loc, "members"),
                             f"{len(active) + len(refused)} members in range at start, but a piconet has at most "
                             f"{MAX_ACTIVE_SLAVES} active slaves ({', '.join(refused)} would be an extra one)"))
            continue
        sw = f"{pn.name}_bt"
        add_node(Node(name=sw, kind="switch", igmp_snooping=True), loc)
        delay = pn.delay if pn.delay is not None else prof.delay
        loss = pn.loss if pn.loss is not None else prof.loss
        # the per-hop delay and loss sit on the member side only: master <-> member is one hop
        add_link(Link(name=piconet_link(pn.name, pn.master), a=pn.master, b=sw), loc)
        for member in pn.members:
            add_link(Link(name=piconet_link(pn.name, member), a=member, b=sw, delay=delay,
                          loss=loss * 100 if loss else None), loc)
    membership: dict[str, int] = {}
    for pn in sc.piconets:
        for member in pn.members:
            membership[member] = membership.get(member, 0) + 1
    for node in sc.nodes:
        if membership.get(node.name, 0) > 1 and node.kind == "host":
            node.kind = "router"  # a scatternet bridge relays between its piconets

    # set_access events become link_set events on the access line's link
    homes = {h.name for h in sc.homes}
    uplinks = {n.name for n in sc.nodes if n.uplink is not None}
    for i, ev in enumerate(sc.timeline):
        if not isinstance(ev, SetAccess):
            continue
        loc = ("timeline", i)
        if ev.line in homes:
            link = f"{ev.line}_line"
        elif ev.line in uplinks:
            link = f"{ev.line}_up"
        else:
            problems.append(((*loc, "line"), f"{ev.line!r} is neither a home nor a node with an uplink"))
            continue
        line = _line(ev.access)
        if isinstance(line, str):
            problems.append(((*loc, "access"), line))
            continue
        new = _access_link(link, "x", "y", ipaddress.IPv4Interface("0.0.0.1/30"),
                           ipaddress.IPv4Interface("0.0.0.2/30"), line)
        sc.timeline[i] = LinkSet(at=ev.at, action="link_set", link=link, a_to_b=new.a_to_b, b_to_a=new.b_to_a)

    # a host (or router of the scenario's own) attached directly to two ISPs is an error
    attached: dict[str, list[tuple[str, int]]] = {}
    for i, lk in enumerate(sc.links):
        if ("links", i) in origins:
            continue
        for me, other in ((lk.a, lk.b), (lk.b, lk.a)):
            if other in isp_of and me not in isp_of:
                attached.setdefault(me, []).append((isp_of[other], i))
    for node, where in attached.items():
        names = sorted({w for w, _ in where})
        if len(names) > 1:
            last = where[-1][1]
            problems.append((("links", last), f"node {node!r} is placed in two ISPs ({', '.join(names)}): "
                             "attach it to one ISP; the backbone joins them"))
    return origins, problems
