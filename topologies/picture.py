"""The topology picture of a run (``topology.png`` in the bundle): networkx layout, matplotlib drawing.

Routers, hosts and LANs have their own shapes; ISPs are shaded groups labelled with their multicast
capability; home gateways carry their NAT type; access links their profile and rates; piconets are dashed
with their capacity; impaired links show their delay and loss.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import networkx as nx  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Polygon  # noqa: E402

from scenarios.piconets import PICONET_PROFILES  # noqa: E402
from scenarios.schema import AccessSpec, Scenario  # noqa: E402
from scenarios.units import format_rate  # noqa: E402
from topologies.plan import NetworkPlan  # noqa: E402

_SHAPE = {"router": "s", "host": "o", "switch": "D"}
_COLOUR = {"router": "#4C72B0", "host": "#55A868", "switch": "#8172B2"}
_GROUP_COLOURS = ["#C44E52", "#DD8452", "#937860", "#DA8BC3", "#8C8C8C", "#CCB974", "#64B5CD"]


def isp_members(sc: Scenario) -> dict[str, set[str]]:
    """ISP name -> the nodes inside it (its routers, its homes' nodes, nodes on its access lines)."""
    groups: dict[str, set[str]] = {isp.name: {f"{isp.name}_c"} | {f"{isp.name}_a{r}" for r in
                                              range(1, isp.access_routers + 1)} for isp in sc.isps}
    for home in sc.homes:
        if home.isp in groups:
            names = {f"{home.name}_gw", f"{home.name}_sw"}
            names |= {n.name for n in sc.nodes if n.name.startswith(f"{home.name}_")}
            groups[home.isp] |= names
    for node in sc.nodes:
        if node.uplink is not None and node.uplink.isp in groups:
            groups[node.uplink.isp].add(node.name)
    return groups


def _link_label(lp, sc: Scenario, access: dict[str, str]) -> str:  # noqa: ANN001
    parts = []
    if lp.name in access:
        parts.append(access[lp.name])
    up, down = lp.a_to_b, lp.b_to_a
    if up.rate and down.rate and up.rate != down.rate:
        parts.append(f"{format_rate(down.rate)}↓ {format_rate(up.rate)}↑")
    elif up.rate:
        parts.append(format_rate(up.rate))
    if up.delay or down.delay:
        parts.append(f"{max(up.delay, down.delay) * 1000:g} ms")
    if up.loss is not None or down.loss is not None:
        p = max((d.loss.mean_loss() if d.loss else 0.0) for d in (up, down))
        parts.append(f"{p * 100:g}% loss")
    return "\n".join(parts) if len(parts) > 2 else " ".join(parts)


def draw_topology(sc: Scenario, plan: NetworkPlan, path: Path) -> Path:
    """Write the picture of ``sc`` (as planned) to ``path``."""
    g = nx.Graph()
    for name, kind in plan.kinds.items():
        g.add_node(name, kind=kind)
    for lp in plan.links:
        g.add_edge(lp.a.node, lp.b.node, name=lp.name)
    n = g.number_of_nodes()
    size = min(26.0, 7.0 + 0.22 * n)
    fig, ax = plt.subplots(figsize=(size, size * 0.72))
    try:
        pos = nx.kamada_kawai_layout(g) if 1 < n <= 150 else nx.spring_layout(g, seed=sc.seed)
    except Exception:  # noqa: BLE001 - a disconnected graph, say: fall back to a spring layout
        pos = nx.spring_layout(g, seed=sc.seed)

    access: dict[str, str] = {}
    for home in sc.homes:
        spec = home.access if isinstance(home.access, AccessSpec) else None
        access[f"{home.name}_line"] = spec.profile if spec else str(home.access)
    for node in sc.nodes:
        if node.uplink is not None:
            a = node.uplink.access
            access[f"{node.name}_up"] = a.profile if isinstance(a, AccessSpec) else str(a)

    for i, (isp_name, members) in enumerate(isp_members(sc).items()):
        pts = np.array([pos[m] for m in members if m in pos])
        if len(pts) == 0:
            continue
        colour = _GROUP_COLOURS[i % len(_GROUP_COLOURS)]
        centre = pts.mean(axis=0)
        hull = _hull(pts)
        grown = centre + (hull - centre) * 1.15 + np.sign(hull - centre) * 0.04
        ax.add_patch(Polygon(grown, closed=True, facecolor=colour, alpha=0.10, edgecolor=colour, lw=1.5))
        isp = next(x for x in sc.isps if x.name == isp_name)
        mc = f"multicast ({isp.daemon})" if isp.multicast else "unicast only"
        top = grown[np.argmax(grown[:, 1])]
        ax.text(top[0], top[1] + 0.03, f"ISP {isp_name}: {mc}", color=colour, fontsize=11, weight="bold",
                ha="center", va="bottom")

    piconet_links = {f"{pn.name}_{m}" for pn in sc.piconets for m in [pn.master, *pn.members]}
    solid = [(lp.a.node, lp.b.node) for lp in plan.links if lp.name not in piconet_links]
    dashed = [(lp.a.node, lp.b.node) for lp in plan.links if lp.name in piconet_links]
    nx.draw_networkx_edges(g, pos, edgelist=solid, ax=ax, edge_color="#555555", width=1.2)
    nx.draw_networkx_edges(g, pos, edgelist=dashed, ax=ax, edge_color="#1f77b4", style="dashed", width=1.2)
    for kind, shape in _SHAPE.items():
        nodes = [v for v, k in plan.kinds.items() if k == kind]
        nx.draw_networkx_nodes(g, pos, nodelist=nodes, node_shape=shape, node_color=_COLOUR[kind], ax=ax,
                               node_size=420 if kind != "host" else 260, label=kind)
    specs = {node.name: node for node in sc.nodes}
    in_isp = set().union(*isp_members(sc).values()) if sc.isps else set()
    labels = {}
    for v in g.nodes:
        spec = specs.get(v)
        extra = []
        if any(pn.master == v for pn in sc.piconets):
            extra.append("piconet master")
        if spec is not None and spec.nat is not None:
            extra.append(f"NAT {spec.nat.type}")
        if spec is not None and spec.multicast_routing is not None and v not in in_isp:
            extra.append(f"mcast {spec.multicast_routing.daemon}")
        labels[v] = v + ("\n" + ", ".join(extra) if extra else "")
    for v, (x, y) in pos.items():
        ax.text(x, y - 0.035, labels[v], fontsize=8, ha="center", va="top")
    edge_labels = {}
    for lp in plan.links:
        text = _link_label(lp, sc, access)
        if text and lp.name not in piconet_links:
            edge_labels[(lp.a.node, lp.b.node)] = text
    nx.draw_networkx_edge_labels(g, pos, edge_labels=edge_labels, ax=ax, font_size=7, rotate=False,
                                 bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8})
    for pn in sc.piconets:
        prof = PICONET_PROFILES[pn.profile]
        cap = pn.capacity or prof.capacity
        x, y = pos[f"{pn.name}_bt"]
        ax.text(x, y + 0.07, f"piconet {pn.name} ({pn.profile}, {format_rate(cap)} shared)", color="#1f77b4",
                fontsize=9, ha="center", va="bottom")
    ax.set_title(f"{sc.name}: {len(plan.kinds)} nodes, {len(plan.links)} links", fontsize=13)
    ax.legend(loc="lower left", fontsize=9, markerscale=0.7, frameon=True)
    ax.set_axis_off()
    ax.margins(0.08)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _hull(pts: np.ndarray) -> np.ndarray:
    """Convex hull (Andrew's monotone chain) of 2-D points; small sets get a box around them."""
    if len(pts) < 3:
        c = pts.mean(axis=0)
        return np.array([c + d for d in ((-0.06, -0.06), (0.06, -0.06), (0.06, 0.06), (-0.06, 0.06))])
    p = sorted(map(tuple, pts))

    def cross(o: tuple, a: tuple, b: tuple) -> float:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list[tuple] = []
    for q in p:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], q) <= 0:
            lower.pop()
        lower.append(q)
    upper: list[tuple] = []
    for q in reversed(p):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], q) <= 0:
            upper.pop()
        upper.append(q)
    hull = np.array(lower[:-1] + upper[:-1])
    return hull if len(hull) >= 3 else np.array([pts.mean(axis=0) + d for d in ((-0.06, -0.06), (0.06, -0.06),
                                                                                   (0.06, 0.06), (-0.06, 0.06))])
