"""Build a planned network on Mininet (namespaces, veth links, Linux bridges; no controller), configure it,
and take it down again.

Hosts and routers are Mininet hosts (unnamed network namespaces with a shell); routers forward IPv4.
Switches are Linux bridges in the root namespace. Everything created is recorded in the run's
``RunState`` first, so a killed runner's leftovers can be removed later (see ``topologies.leftovers``).
"""

from __future__ import annotations

import subprocess
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mininet.link import Link as MnLink
from mininet.net import Mininet
from mininet.node import Host, Switch

from scenarios.schema import Node as NodeSpec
from scenarios.schema import Piconet, ResolvedDirection
from topologies import shaping
from topologies.impair.backends import Backend, DirectionSite, ImpairmentError
from topologies.leftovers import RunState
from topologies.piconet import PiconetService
from topologies.plan import Endpoint, LinkPlan, NetworkPlan, compute_routes


class BuildError(RuntimeError):
    """The kernel refused part of the network."""


class Router(Host):
    """A host that forwards IPv4 between its interfaces."""

    def config(self, **params: Any) -> Any:
        result = super().config(**params)
        self.cmd("sysctl -qw net.ipv4.ip_forward=1")
        return result


class Bridge(Switch):
    """A Linux bridge (no controller, no OVS); the device is named ``sbr-<switch>``."""

    def __init__(self, name: str, igmp_snooping: bool = True, **params: Any):
        super().__init__(name, dpid=f"{zlib.crc32(name.encode()):016x}", **params)
        self.device = f"sbr-{name}"
        self.igmp_snooping = igmp_snooping

    def start(self, controllers: list[Any]) -> None:
        dev = self.device
        out = self.cmd(f"ip link add name {dev} type bridge forward_delay 0 stp_state 0 "
                       f"mcast_snooping {int(self.igmp_snooping)} && ip link set {dev} up")
        if out.strip():
            raise BuildError(f"bridge {dev}: {out.strip()}")
        for intf in self.intfList():
            if intf.name != "lo":
                self.cmd(f"ip link set {intf.name} master {dev} && ip link set {intf.name} up")

    def stop(self, deleteIntfs: bool = True) -> None:  # noqa: N803 - Mininet's signature
        self.cmd(f"ip link del {self.device}")
        super().stop(deleteIntfs)


def _checked(out: str, what: str) -> None:
    lines = [ln for ln in out.strip().splitlines() if ln.strip()]
    if lines:
        raise BuildError(f"{what}: {' | '.join(lines[:5])}")


class EmulatedNetwork:
    """A built network: its Mininet nodes, plan, impairment backend, and what was applied where."""

    def __init__(self, plan: NetworkPlan, backend: Backend, state: RunState, workdir: Path,
                 specs: dict[str, NodeSpec] | None = None, piconets: list[Piconet] | None = None):
        self.plan = plan
        self.specs = specs or {}
        self.piconet_specs = piconets or []
        self.piconets: list[PiconetService] = []
        self.positions = {name: spec.position for name, spec in self.specs.items()}
        self.routes = dict(plan.routes)
        self.backend = backend
        self.state = state
        self.workdir = workdir
        self.services: list[Any] = []  # started daemons (multicast routing), stopped at teardown
        self.net: Mininet | None = None
        self.nodes: dict[str, Any] = {}
        self.sites: dict[tuple[str, str], DirectionSite] = {}  # (link, direction) -> site (impaired only)
        self.link_up: dict[str, bool] = {}

    # -- building ------------------------------------------------------------------------------------
    def build(self, progress: Callable[[str], None] = lambda _msg: None) -> None:
        Mininet.init()
        self.net = Mininet(topo=None, build=False, controller=None, switch=Bridge, host=Host, link=MnLink,
                           autoSetMacs=False, autoStaticArp=False, waitConnected=False, cleanup=False)
        progress("nodes")
        for name, kind in self.plan.kinds.items():
            if kind == "switch":
                node = self.net.addSwitch(name, cls=Bridge, igmp_snooping=self._spec_flag(name))
                self.state.add_bridge(node.device)
            else:
                node = self.net.addHost(name, cls=Router if kind == "router" else Host, ip=None)
                node.cmd("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 "
                         "net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0; ip link set lo up")
                if kind == "router":
                    node.cmd("sysctl -qw net.ipv4.ip_forward=1")
            self.state.add_process(node.pid, f"shell@{name}")
            self.nodes[name] = node
        progress("links")
        for lp in self.plan.links:
            for ep in (lp.a, lp.b):
                if self.plan.kinds[ep.node] == "switch":
                    self.state.add_root_intf(ep.intf)
            self.net.addLink(self.nodes[lp.a.node], self.nodes[lp.b.node], intfName1=lp.a.intf,
                             intfName2=lp.b.intf)
            self.link_up[lp.name] = True
        progress("addresses and routes")
        self._configure_l3()
        for name, kind in self.plan.kinds.items():
            if kind == "switch":
                self.nodes[name].start([])
        progress("gateways and routing daemons")
        self._node_services()
        progress("shaping")
        self._shape()
        progress("impairments")
        self._impair()

    def _spec_flag(self, name: str) -> bool:
        spec = self.specs.get(name)
        return True if spec is None else spec.igmp_snooping

    def _node_services(self) -> None:
        """NAT in gateways and multicast routing daemons in routers, as the node specs ask."""
        for name, spec in self.specs.items():
            if spec.nat is not None:
                from topologies.nat import apply_nat

                apply_nat(self, name, spec.nat)
            if spec.multicast_routing is not None:
                from topologies.multicast import start_multicast_routing

                self.services.append(start_multicast_routing(self, name, spec.multicast_routing))
        for pn in self.piconet_specs:
            svc = PiconetService(self, pn, self.positions)
            self.services.append(svc)
            self.piconets.append(svc)
            svc.start()

    def _configure_l3(self) -> None:
        per_node: dict[str, list[str]] = {}
        offload: dict[str, list[str]] = {}
        for lp in self.plan.links:
            for ep in (lp.a, lp.b):
                cmds = per_node.setdefault(ep.node, [])
                if ep.ip is not None:
                    cmds.append(f"address add {ep.ip} dev {ep.intf}")
                cmds.append(f"link set {ep.intf} up")
                offload.setdefault(ep.node, []).append(ep.intf)
        for node, routes in self.plan.routes.items():
            for dest, gw, dev in routes:
                per_node.setdefault(node, []).append(f"route add {dest} via {gw} dev {dev}")
        cfg_dir = self.workdir / "net"
        cfg_dir.mkdir(parents=True, exist_ok=True)
        for node, cmds in per_node.items():
            batch = cfg_dir / f"{node}.ip"
            batch.write_text("\n".join(cmds) + "\n")
            _checked(self.nodes[node].cmd(f"ip -batch {batch}"), f"configuring {node}")
            # Offloads make veths pass 64 KB super-packets; shaping and the delay line must see real packets.
            ethtool = "; ".join(f"ethtool -K {i} tso off gso off gro off 2>/dev/null" for i in offload[node])
            self.nodes[node].cmd(ethtool)

    def _shape(self) -> None:
        for lp in self.plan.links:
            for d, src, _dst in lp.directions():
                if d.rate is None:
                    continue
                leaf = self.backend.netem_leaf(d)
                for cmd in shaping.htb_commands(src.intf, d, leaf):
                    _checked(self.nodes[src.node].cmd(f"tc {cmd}"), f"shaping {src.node}:{src.intf} ({lp.name})")

    def site_for(self, lp: LinkPlan, direction: str, d: ResolvedDirection) -> DirectionSite:
        """Where an impaired direction is hooked: at the receiver's ingress when the receiver is a host or
        router (netfilter runs in its namespace), else at the sender's egress. netem always uses egress."""
        src, dst = (lp.a, lp.b) if direction == "a_to_b" else (lp.b, lp.a)
        if self.backend.name == "nfqueue" and self.plan.kinds[dst.node] != "switch":
            return DirectionSite(lp.name, direction, d, dst.node, dst.intf, "ingress")
        if self.plan.kinds[src.node] == "switch" and self.backend.name == "nfqueue":
            raise ImpairmentError(f"link {lp.name}: cannot impair a direction between two switches")
        return DirectionSite(lp.name, direction, d, src.node, src.intf, "egress")

    def _impair(self) -> None:
        sites = []
        for lp in self.plan.links:
            for direction, d in (("a_to_b", lp.a_to_b), ("b_to_a", lp.b_to_a)):
                if d.impaired:
                    site = self.site_for(lp, direction, d)
                    self.sites[(lp.name, direction)] = site
                    sites.append(site)
        self.backend.start(sites, self.run, self.popen, self.workdir / "impair")

    # -- running things in nodes ---------------------------------------------------------------------
    def run(self, node: str, command: str) -> str:
        """Run a shell command in a node (root namespace for switches) and return its output."""
        return self.nodes[node].cmd(command)

    def popen(self, node: str, argv: list[str], label: str, **kwargs: Any) -> subprocess.Popen:
        """Start a long-running process inside a node; it is recorded for cleanup."""
        proc = self.nodes[node].popen(argv, **kwargs)
        self.state.add_process(proc.pid, label)
        return proc

    # -- timeline actions ----------------------------------------------------------------------------
    def set_link(self, name: str, up: bool) -> None:
        """Take a link down or up (both ends), then move routes to the paths that remain."""
        lp = self.plan.link(name)
        state = "up" if up else "down"
        for ep in (lp.a, lp.b):
            self.run(ep.node, f"ip link set {ep.intf} {state}")
        self.link_up[name] = up
        self.reroute()

    def reroute(self) -> None:
        """Recompute shortest-path routes without the links that are down and apply the differences
        (like a routing protocol that converges at once)."""
        down = {n for n, is_up in self.link_up.items() if not is_up}
        new = compute_routes(self.plan, down)
        for node in sorted(set(new) | set(self.routes)):
            old_r = {str(d): (str(g), i) for d, g, i in self.routes.get(node, [])}
            new_r = {str(d): (str(g), i) for d, g, i in new.get(node, [])}
            cmds = [f"route del {d}" for d in old_r if d not in new_r]
            cmds += [f"route replace {d} via {g} dev {i}" for d, (g, i) in new_r.items() if old_r.get(d) != (g, i)]
            if cmds and node in self.nodes:
                batch = self.workdir / "net" / f"{node}.reroute.ip"
                batch.write_text("\n".join(cmds) + "\n")
                self.run(node, f"ip -force -batch {batch} 2>/dev/null")
        self.routes = new

    def move(self, node: str, to: tuple[float, float]) -> None:
        """A node moves: piconet memberships follow the range rule."""
        self.positions[node] = to
        for svc in self.piconets:
            svc.move(node, to)

    def change_link(self, name: str, direction: str, d: ResolvedDirection) -> None:
        lp = self.plan.link(name)
        old = lp.a_to_b if direction == "a_to_b" else lp.b_to_a
        src: Endpoint = lp.a if direction == "a_to_b" else lp.b
        if (d.rate, d.queue, d.linklayer, d.overhead) != (old.rate, old.queue, old.linklayer, old.overhead):
            if old.rate is None or d.rate is None:
                raise ImpairmentError(f"link {name}: a rate limit can be changed mid-run, not added or removed "
                                      "(give the link a rate at start)")
            if (d.linklayer, d.overhead) != (old.linklayer, old.overhead):
                # HTB cannot change its size table in place: rebuild the tree (the queue is lost, as in a retrain)
                self.run(src.node, f"tc qdisc del dev {src.intf} root")
                cmds = shaping.htb_commands(src.intf, d, self.backend.netem_leaf(d))
            else:
                cmds = shaping.htb_change_commands(src.intf, d)
            for cmd in cmds:
                _checked(self.run(src.node, f"tc {cmd}"), f"changing rate of {name}")
        if d.impaired or old.impaired:
            site = self.sites.get((name, direction))
            if site is None:
                raise ImpairmentError(f"link {name} {direction}: delay/jitter/loss can only be changed on a "
                                      "direction that was impaired at start (e.g. give it delay: 1ms)")
            self.backend.change(site, d, self.run)
        if direction == "a_to_b":
            lp.a_to_b = d
        else:
            lp.b_to_a = d

    # -- records -------------------------------------------------------------------------------------
    def dump_state(self, folder: Path) -> None:
        """ip addr / ip route / tc / iptables of every node into ``folder/<node>.txt``."""
        folder.mkdir(parents=True, exist_ok=True)
        for name, node in self.nodes.items():
            if self.plan.kinds[name] == "switch":
                devs = [i.name for i in node.intfList() if i.name != "lo"]
                cmds = [f"ip -d link show {node.device}", f"bridge link show br {node.device}"]
                cmds += [f"tc -s qdisc show dev {d}" for d in devs] + [f"tc -s class show dev {d}" for d in devs]
            else:
                cmds = ["ip addr", "ip route", "tc -s qdisc", "tc -s class show dev lo"]
                cmds += [f"tc -s class show dev {i.name}" for i in node.intfList() if i.name != "lo"]
                cmds += ["iptables-save -c", "nft list ruleset", "sysctl net.ipv4.ip_forward"]
            text = []
            for cmd in cmds:
                text.append(f"$ {cmd}\n{node.cmd(cmd + ' 2>&1')}")
            (folder / f"{name}.txt").write_text("\n".join(text))

    # -- teardown ------------------------------------------------------------------------------------
    def stop(self) -> dict[str, Any]:
        """Stop the impairment backend and remove every node, link and bridge. Returns backend stats."""
        stats: dict[str, Any] = {}
        try:
            for service in reversed(self.services):
                service.stop()
            self.services.clear()
            stats = self.backend.stop()
        finally:
            if self.net is not None:
                for sw in self.net.switches:
                    sw.cmd(f"ip link del {sw.device}")
                for host in self.net.hosts + self.net.switches:
                    host.terminate()
                self.net = None
        return stats
