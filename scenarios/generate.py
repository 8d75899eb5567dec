"""Scenario generators for sizes no one writes by hand (scale tests and benchmarks).

``scale_scenario(hosts, routers)``: routers in a ring, one LAN (a bridge) per router, hosts spread over the
LANs, rate-limited and delayed router-to-router links, and probe flows between hosts on different LANs.
"""

from __future__ import annotations

from typing import Any


def scale_scenario(hosts: int, routers: int = 6, duration: float = 10.0, flows: int = 6,
                   seed: int = 1) -> dict[str, Any]:
    """A scenario (as a dict, ready for YAML/JSON) with ``hosts`` hosts and ``routers`` routers."""
    if routers < 1 or hosts < 2:
        raise ValueError("need at least one router and two hosts")
    nodes: list[dict[str, Any]] = []
    links: list[dict[str, Any]] = []
    for r in range(routers):
        nodes.append({"name": f"r{r}", "kind": "router"})
        nodes.append({"name": f"lan{r}", "kind": "switch"})
        links.append({"a": f"r{r}", "b": f"lan{r}"})
    if routers > 1:
        ring = [(r, (r + 1) % routers) for r in range(routers if routers > 2 else 1)]
        for a, b in ring:
            links.append({"name": f"core{a}_{b}", "a": f"r{a}", "b": f"r{b}", "rate": "100mbit", "delay": "2ms"})
    host_names = []
    for h in range(hosts):
        name = f"h{h}"
        host_names.append(name)
        nodes.append({"name": name, "processes": []})
        links.append({"a": name, "b": f"lan{h % routers}", "rate": "20mbit"})
    by_name = {n["name"]: n for n in nodes}
    for f in range(min(flows, hosts // 2)):
        src = host_names[f]
        dst = host_names[(f + routers // 2 + 1) % hosts] if routers > 1 else host_names[-1 - f]
        if dst == src:
            continue
        by_name[dst]["processes"].append({"role": "probe_sink", "name": f"sink{f}", "args": {"port": 6000 + f}})
        by_name[src]["processes"].append({"role": "probe_sender", "name": f"tx{f}", "start": 0.5,
                                          "args": {"dst": dst, "port": 6000 + f, "rate_pps": 50, "flow": f"f{f}"}})
    for n in nodes:
        if not n.get("processes"):
            n.pop("processes", None)
    return {"name": f"scale{hosts}", "description": f"Scale test: {hosts} hosts on {routers} router LANs in a ring.",
            "seed": seed, "duration": duration, "nodes": nodes, "links": links}
