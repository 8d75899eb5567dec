"""Cross-field checks of a parsed scenario: names that must exist or be unique, events inside the run,
role arguments. Each problem is returned as (location path, message) so the loader can name the line.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from nodes.roles import ROLE_MODULES, role_config_class
from scenarios.schema import LinkSet, Move, NodeAction, ProcessSignal, Scenario

Problem = tuple[tuple[Any, ...], str]


def check_scenario(sc: Scenario) -> list[Problem]:
    """Every problem found, in file order as far as possible."""
    problems: list[Problem] = []
    nodes: dict[str, int] = {}
    for i, node in enumerate(sc.nodes):
        if node.name in nodes:
            first = nodes[node.name]
            problems.append((("nodes", i, "name"), f"duplicate node name {node.name!r} (first at nodes[{first}])"))
        else:
            nodes[node.name] = i
        if node.kind != "switch" and node.subnet is not None:
            problems.append((("nodes", i, "subnet"), "only a switch (a LAN) takes a subnet"))
        if node.kind != "router" and node.nat is not None:
            problems.append((("nodes", i, "nat"), "only a router (a gateway) can do NAT"))
        if node.kind != "router" and node.multicast_routing is not None:
            problems.append((("nodes", i, "multicast_routing"), "only a router runs multicast routing"))
        if node.kind == "switch" and node.processes:
            problems.append((("nodes", i, "processes"), "a switch runs no processes (it is a bridge, not a host)"))
        proc_names: set[str] = set()
        for j, proc in enumerate(node.processes):
            loc = ("nodes", i, "processes", j)
            if proc.proc_name in proc_names:
                problems.append(((*loc, "name"), f"duplicate process name {proc.proc_name!r} in node {node.name!r}"))
            proc_names.add(proc.proc_name)
            if proc.role not in ROLE_MODULES:
                problems.append(((*loc, "role"), f"unknown process role {proc.role!r}; known roles: "
                                 + ", ".join(sorted(ROLE_MODULES))))
            else:
                try:
                    role_config_class(proc.role).model_validate(proc.args)
                except ValidationError as exc:
                    for err in exc.errors():
                        problems.append(((*loc, "args", *err["loc"]), err["msg"]))
            if proc.start >= sc.duration:
                problems.append(((*loc, "start"),
                                 f"starts at {proc.start:g} s, not before the end ({sc.duration:g} s)"))

    kinds = {n.name: n.kind for n in sc.nodes}
    link_names: dict[str, int] = {}
    pairs: dict[frozenset[str], int] = {}
    for i, link in enumerate(sc.links):
        for end in ("a", "b"):
            name = getattr(link, end)
            if name not in nodes:
                problems.append((("links", i, end), f"link end {name!r} is not a node of this scenario"))
        if link.a == link.b:
            problems.append((("links", i, "b"), "a link needs two different ends"))
        if link.link_name in link_names:
            problems.append((("links", i, "name"), f"duplicate link name {link.link_name!r}"))
        link_names[link.link_name] = i
        pair = frozenset((link.a, link.b))
        if pair in pairs and len(pair) == 2:
            problems.append((("links", i), f"a second link between {link.a!r} and {link.b!r} (give one link per pair)"))
        pairs[pair] = i
        if link.addresses is not None:
            for key in link.addresses:
                if key not in (link.a, link.b):
                    problems.append((("links", i, "addresses", key), f"{key!r} is not an end of this link"))
        if kinds.get(link.a) == "switch" and kinds.get(link.b) == "switch":
            if any(link.resolved(e).impaired for e in (link.a, link.b)):
                problems.append((("links", i), "delay/jitter/loss on a link between two switches is not supported; "
                                 "put the impairment on a host or router link"))
            if link.addresses:
                problems.append((("links", i, "addresses"), "a link between two switches carries no addresses"))

    for i, node in enumerate(sc.nodes):
        if node.nat is not None:
            lk = next((lk for lk in sc.links if lk.link_name == node.nat.outside), None)
            if lk is None or node.name not in (lk.a, lk.b):
                problems.append((("nodes", i, "nat", "outside"),
                                 f"{node.nat.outside!r} is not a link of {node.name!r}"))

    for i, ev in enumerate(sc.timeline):
        loc = ("timeline", i)
        if ev.at > sc.duration:
            problems.append(((*loc, "at"), f"event at {ev.at:g} s is after the end of the run ({sc.duration:g} s)"))
        if hasattr(ev, "link") and ev.link not in link_names:
            problems.append(((*loc, "link"), f"no link named {ev.link!r}; links: " + ", ".join(sorted(link_names))))
        if isinstance(ev, ProcessSignal | NodeAction | Move) and ev.node not in nodes:
            problems.append(((*loc, "node"), f"no node named {ev.node!r}"))
        if isinstance(ev, ProcessSignal) and ev.node in nodes:
            procs = {p.proc_name for p in sc.nodes[nodes[ev.node]].processes}
            if ev.process not in procs:
                problems.append(((*loc, "process"), f"node {ev.node!r} has no process {ev.process!r}"))
        if isinstance(ev, LinkSet) and ev.set is None and ev.a_to_b is None and ev.b_to_a is None:
            problems.append((loc, "link_set needs 'set', 'a_to_b' or 'b_to_a'"))
    return problems
