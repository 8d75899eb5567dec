"""Multicast routing in router namespaces: one routing daemon per router that has ``multicast_routing``.

Two daemons (``MulticastRouting.daemon``):

- ``smcroute``: static routing. Every configured group is forwarded between all of the router's multicast
  interfaces, as ``(*,G)`` rules that smcrouted turns into kernel ``(S,G)`` entries when traffic arrives.
  To keep rings of smcroute routers loop-free, the router-to-router links that carry multicast form a
  spanning tree (minimum by link cost, computed with networkx over smcroute routers and LAN segments);
  links to hosts, to routers without smcroute and to LANs that are leaves of that tree are always used.
  smcroute speaks no IGMP, so the Linux bridge of each LAN it forwards onto is made the LAN's IGMP querier
  (``mcast_querier 1``, IGMPv3): with a querier, the bridge's IGMP snooping delivers a group only to ports
  with members and honours leaves. smcrouted announces itself with Multicast Router Discovery (``mrdisc``), so
  bridges send it all multicast from their LAN.
- ``pimd``: PIM-SM with a static rendezvous point (``rp``: a router name, its primary address is used; by
  default the router itself). pimd is the IGMP querier on its LANs (IGMPv2, see ``pimd_conf``) and looks up
  RPF interfaces and neighbours in the kernel's unicast table, i.e. in the static routes streambed
  installed. pimd 2.3.2 takes its static RPs into use only 15 s after it started, so the build waits that
  out once, after the last pimd router has started.

Each daemon runs in the router's network namespace and in a mount namespace of its own in which the run
bundle's ``multicast/<router>/run`` is mounted over ``/run``: its pid file, control socket and state dump
(``/run/pimd.pid``, ``/run/pimd/pimd.dump``, ``/run/smcroute.sock``, ...) land in the bundle and two routers
never share one. Configuration and log sit next to it (``multicast/<router>/``). The runner holds the
daemon's PID (foreground mode, ``exec`` all the way down) and stops it at teardown. Debian's smcroute
package conflicts with its pimd package, so smcroute is unpacked into the project (``ensure_smcroute``).

Routers without ``multicast_routing`` run nothing: without a multicast routing socket the kernel forwards
no multicast (``mc_forwarding`` stays 0), which is how unicast-only ISPs are emulated.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx

from scenarios.schema import MulticastRouting
from scenarios.schema import Node as NodeSpec
from topologies.plan import NetworkPlan

REPO = Path(__file__).resolve().parent.parent
# Where Debian's smcroute package is unpacked when it is not installed (see ensure_smcroute).
SMCROUTE_UNPACKED = REPO / ".venv" / "opt" / "smcroute"
READY_TIMEOUT_S = 10.0
STOP_GRACE_S = 3.0
# pimd 2.3.2 adds the static RPs of its configuration once more than 15 s (whole seconds, checked on its 1 s
# timer) have passed since it started (main.c, hard-coded); until then a joined group gets no (*,G) state and
# is only picked up at the next IGMP report. The build waits this long after the last pimd started.
PIMD_RP_DELAY_S = 17.5


class MulticastError(RuntimeError):
    """A multicast routing daemon cannot be configured or started."""


@dataclass(frozen=True)
class Port:
    """One of a router's links, seen from the router."""

    link: str
    intf: str
    peer: str
    cost: float


def router_ports(plan: NetworkPlan, node: str) -> list[Port]:
    """Every link of ``node``, in plan order."""
    out = []
    for lp in plan.links:
        for me, other in ((lp.a, lp.b), (lp.b, lp.a)):
            if me.node == node:
                out.append(Port(lp.name, me.intf, other.node, lp.link.cost))
    return out


def enabled_ports(plan: NetworkPlan, node: str, cfg: MulticastRouting) -> list[Port]:
    """The ports ``cfg.interfaces`` names (link names), or all of them."""
    ports = router_ports(plan, node)
    if cfg.interfaces is None:
        return ports
    known = {p.link for p in ports}
    unknown = [name for name in cfg.interfaces if name not in known]
    if unknown:
        raise MulticastError(f"{node}: multicast_routing.interfaces names {', '.join(unknown)}, which "
                             f"{'is not a link' if len(unknown) == 1 else 'are not links'} of {node} "
                             f"(its links: {', '.join(sorted(known))})")
    return [p for p in ports if p.link in cfg.interfaces]


def _segments(plan: NetworkPlan) -> dict[str, str]:
    """Switch -> name of its LAN segment (switches joined by links form one segment)."""
    g = nx.Graph()
    g.add_nodes_from(n for n, k in plan.kinds.items() if k == "switch")
    g.add_edges_from((lp.a.node, lp.b.node) for lp in plan.links
                     if plan.kinds[lp.a.node] == plan.kinds[lp.b.node] == "switch")
    out = {}
    for comp in nx.connected_components(g):
        head = sorted(comp)[0]
        for s in comp:
            out[s] = head
    return out


def smcroute_ports(plan: NetworkPlan, specs: dict[str, NodeSpec]) -> dict[str, list[Port]]:
    """For every smcroute router, the ports it forwards multicast between.

    Graph: smcroute routers and LAN segments as vertices; an edge per enabled router port onto a LAN, and per
    link between two smcroute routers with the link enabled at both ends; weight = link cost. Its minimum
    spanning forest (Kruskal, ties broken by plan order) decides which of those edges carry multicast. Ports
    to anything else (hosts, routers without smcroute) cannot close a loop and are always used.
    """
    routers = sorted(n for n, s in specs.items() if plan.kinds.get(n) == "router"
                     and s.multicast_routing is not None and s.multicast_routing.daemon == "smcroute")
    enabled = {r: enabled_ports(plan, r, specs[r].multicast_routing) for r in routers}  # type: ignore[arg-type]
    enabled_links = {(r, p.link) for r in routers for p in enabled[r]}
    seg = _segments(plan)
    g = nx.MultiGraph()
    chosen: dict[str, set[str]] = {r: set() for r in routers}
    for r in routers:
        g.add_node(("router", r))
    for lp in plan.links:  # plan order: deterministic tie-breaking
        for me, other in ((lp.a, lp.b), (lp.b, lp.a)):
            r = me.node
            if r not in chosen or (r, lp.name) not in enabled_links:
                continue
            if plan.kinds[other.node] == "switch":
                g.add_edge(("router", r), ("lan", seg[other.node]), key=lp.name, weight=lp.link.cost)
            elif other.node in chosen and (other.node, lp.name) in enabled_links:
                if r < other.node:
                    g.add_edge(("router", r), ("router", other.node), key=lp.name, weight=lp.link.cost)
            else:
                chosen[r].add(lp.name)
    tree = nx.minimum_spanning_tree(g, weight="weight", algorithm="kruskal")
    for u, v, key in tree.edges(keys=True):
        for end in (u, v):
            if end[0] == "router":
                chosen[end[1]].add(key)
    return {r: [p for p in enabled[r] if p.link in chosen[r]] for r in routers}


def smcroute_conf(node: str, ports: list[Port], all_ports: list[Port], cfg: MulticastRouting) -> str:
    """smcroute.conf: the forwarding ports as phyints, and per port a (*,G) rule to all the others."""
    lines = [f"# smcroute.conf of {node}, written by streambed (topologies/multicast.py).",
             "# smcrouted runs with -N: only the phyints enabled here become multicast VIFs.",
             f"# Forwarding ports (spanning tree of the smcroute routers + leaf links): "
             f"{', '.join(p.link for p in ports) or 'none'}"]
    used = {p.intf for p in ports}
    for p in all_ports:
        if p.intf in used:
            lines.append(f"phyint {p.intf} enable mrdisc  # link {p.link} to {p.peer}")
        else:
            lines.append(f"phyint {p.intf} disable  # link {p.link} to {p.peer}: not a forwarding port")
    for p in ports:
        others = [q.intf for q in ports if q.intf != p.intf]
        if not others:
            continue
        for group in cfg.groups:
            lines.append(f"mroute from {p.intf} group {group} to {' '.join(others)}")
    return "\n".join(lines) + "\n"


def rp_address(plan: NetworkPlan, node: str, cfg: MulticastRouting) -> str:
    """The rendezvous point's address: the primary address of router ``cfg.rp`` (default ``node``)."""
    rp = cfg.rp or node
    if plan.kinds.get(rp) != "router":
        raise MulticastError(f"{node}: multicast_routing.rp {rp!r} is not a router of this scenario")
    addr = plan.hosts_table().get(rp)
    if addr is None:
        raise MulticastError(f"{node}: rendezvous point {rp!r} has no address")
    return addr


def pimd_conf(plan: NetworkPlan, node: str, cfg: MulticastRouting) -> str:
    """pimd.conf: phyint enable/disable per link, a static RP for every configured group range."""
    rp = rp_address(plan, node, cfg)
    enabled = {p.intf for p in enabled_ports(plan, node, cfg)}
    lines = [f"# pimd.conf of {node}, written by streambed (topologies/multicast.py).",
             "# pimd runs with -N: only the phyints enabled here take part in PIM and IGMP.",
             "default-route-distance 101",
             "default-route-metric 1024"]
    for p in router_ports(plan, node):
        # IGMPv2: pimd 2.3.2 ignores IGMPv3 leaves (CHANGE_TO_INCLUDE with no source, igmp_proto.c), so with
        # v3 a leaving host would get the group until its membership times out. v2 queries put the hosts'
        # kernels in IGMPv2 mode, whose Leave pimd answers with a group-specific query.
        state = "enable igmpv2" if p.intf in enabled else "disable"
        lines.append(f"phyint {p.intf} {state}  # link {p.link} to {p.peer}")
    for group in cfg.groups:
        lines.append(f"rp-address {rp} {group}  # rendezvous point: {cfg.rp or node}")
    return "\n".join(lines) + "\n"


def find_binary(name: str) -> str:
    """A daemon's executable: on PATH (plus the sbin folders), else unpacked into the project (smcroute)."""
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])
    found = shutil.which(name, path=search)
    if found:
        return found
    if name.startswith("smcroute"):
        path = SMCROUTE_UNPACKED / "usr" / "sbin" / name
        if not path.is_file():
            ensure_smcroute()
        return str(path)
    raise MulticastError(f"{name} not found (apt-get install pimd; ./bootstrap installs it)")


def ensure_smcroute() -> Path:
    """Unpack Debian's smcroute package into the project (``SMCROUTE_UNPACKED``) unless it is there.

    Debian's smcroute and pimd packages conflict (one multicast router per host), but each daemon here runs
    in its own network namespace, so both are usable: pimd is installed, smcroute only unpacked
    (``apt-get download`` + ``dpkg-deb -x``, the ordinary Debian tools; no maintainer scripts run).
    """
    target = SMCROUTE_UNPACKED
    if (target / "usr" / "sbin" / "smcrouted").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        got = subprocess.run(["apt-get", "download", "smcroute"], cwd=tmp, capture_output=True, text=True,
                             check=False)
        debs = sorted(Path(tmp).glob("smcroute_*.deb"))
        if got.returncode != 0 or not debs:
            raise MulticastError("smcrouted not found and 'apt-get download smcroute' failed "
                                 f"(run apt-get update?): {got.stderr.strip()[-300:]}")
        unpacked = Path(tmp) / "root"
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(unpacked)], check=True, capture_output=True)
        if not (target / "usr" / "sbin" / "smcrouted").is_file():  # another run may have won the race
            shutil.rmtree(target, ignore_errors=True)
            os.replace(unpacked, target)
    return target


class MulticastService:
    """One routing daemon in one router: started by ``start_multicast_routing``, stopped at teardown."""

    def __init__(self, net: Any, node: str, cfg: MulticastRouting):
        self.net = net
        self.node = node
        self.cfg = cfg
        self.daemon = cfg.daemon
        self.dir = Path(net.workdir) / "multicast" / node
        self.rundir = self.dir / "run"
        self.state_file = Path(net.workdir) / "state" / f"multicast-{node}.txt"
        self.proc: subprocess.Popen | None = None
        self.boot = 0.0  # epoch seconds the daemon was started
        self.ports: list[Port] = []
        self.queriers: list[str] = []  # bridges made IGMP querier for this router (smcroute)
        self.ident = f"smcroute-{node}"

    # -- configuration -------------------------------------------------------------------------------
    def _argv(self) -> list[str]:
        conf = self.dir / f"{self.daemon}.conf"
        if self.daemon == "smcroute":
            self.ports = smcroute_ports(self.net.plan, self.net.specs).get(self.node, [])
            conf.write_text(smcroute_conf(self.node, self.ports, router_ports(self.net.plan, self.node), self.cfg))
            # -n foreground, -N no VIFs but the enabled phyints, -c 0: never flush learned (S,G) entries
            daemon = [find_binary("smcrouted"), "-n", "-N", "-c", "0", "-l", "info", "-f", str(conf),
                      "-i", self.ident, "-P", "/run/smcroute.pid", "-u", "/run/smcroute.sock"]
        else:
            self.ports = enabled_ports(self.net.plan, self.node, self.cfg)
            conf.write_text(pimd_conf(self.net.plan, self.node, self.cfg))
            daemon = [find_binary("pimd"), "-f", "-N", "-c", str(conf), "-s", "info",
                      *os.environ.get("STREAMBED_PIMD_DEBUG", "").split()]
        # A private mount namespace with the bundle's run folder over /run; exec keeps the PID the daemon's.
        return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                'mount --bind "$0" /run && exec "$@"', str(self.rundir), *daemon]

    def _pidfile(self) -> Path:
        return self.rundir / ("smcroute.pid" if self.daemon == "smcroute" else "pimd.pid")

    def _make_queriers(self) -> None:
        """smcroute only: the snooping bridge of each LAN it forwards onto becomes the LAN's IGMP querier."""
        for p in self.ports:
            if self.net.plan.kinds.get(p.peer) != "switch":
                continue
            spec = self.net.specs.get(p.peer)
            if spec is not None and not spec.igmp_snooping:
                continue  # a bridge without snooping floods multicast: no querier needed
            dev = self.net.nodes[p.peer].device
            # IGMPv3 queries keep the hosts in IGMPv3: no report suppression, so every host reports (and
            # leaves) for itself even while the bridge still floods reports to all ports.
            out = self.net.run(p.peer, f"ip link set dev {dev} type bridge mcast_igmp_version 3 mcast_querier 1 "
                                       "2>&1")
            if out.strip():
                raise MulticastError(f"{self.node}: cannot make bridge {dev} an IGMP querier: {out.strip()}")
            self.queriers.append(p.peer)

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> None:
        self.rundir.mkdir(parents=True, exist_ok=True)
        if self.daemon == "pimd":
            (self.rundir / "pimd").mkdir(exist_ok=True)  # pimd writes its dump there but does not create it
        argv = self._argv()
        log = open(self.dir / f"{self.daemon}.log", "ab")  # noqa: SIM115 - the daemon owns it
        log.write(f"# streambed: {' '.join(argv)}\n".encode())
        log.flush()
        self.boot = time.time()
        try:
            self.proc = self.net.popen(self.node, argv, label=f"{self.daemon}@{self.node}",
                                       stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()
        try:
            self._wait_ready()
            if self.daemon == "smcroute":
                self._make_queriers()
            elif self._last_pimd():
                self._wait_for_rps()
            self._write_state("start")
        except BaseException:
            self._cleanup()
            raise

    def _wait_ready(self) -> None:
        assert self.proc is not None
        ready = [self._pidfile()] + ([self.rundir / "smcroute.sock"] if self.daemon == "smcroute" else [])
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise MulticastError(f"{self.daemon} in {self.node} exited with code {self.proc.returncode}: "
                                     f"{self._log_tail()}")
            if all(f.exists() for f in ready) and self._mc_forwarding() == "1":
                pid = self._pidfile().read_text().strip()
                if pid and pid != str(self.proc.pid):  # the daemon forked: this PID would not stop it
                    raise MulticastError(f"{self.daemon} in {self.node} runs as PID {pid}, not {self.proc.pid}")
                if pid:
                    return
            time.sleep(0.05)
        raise MulticastError(f"{self.daemon} in {self.node} not ready after {READY_TIMEOUT_S:g} s "
                             f"(pid file, socket, mc_forwarding): {self._log_tail()}")

    def _last_pimd(self) -> bool:
        """True when this is the last pimd router the network starts (it starts them in ``specs`` order)."""
        pimd = [n for n, s in self.net.specs.items() if self.net.plan.kinds.get(n) == "router"
                and s.multicast_routing is not None and s.multicast_routing.daemon == "pimd"]
        return bool(pimd) and pimd[-1] == self.node

    def _wait_for_rps(self) -> None:
        """Block until every pimd router of the network has had its static RPs added (see PIMD_RP_DELAY_S).

        pimd's state dump does not show the RP set, so this waits out the delay by the clock; the routers
        were started one after the other, this one last.
        """
        boots = [s.boot for s in self.net.services if isinstance(s, MulticastService) and s.daemon == "pimd"]
        until = max([*boots, self.boot]) + PIMD_RP_DELAY_S
        while time.time() < until:
            if self.proc is None or self.proc.poll() is not None:
                raise MulticastError(f"pimd in {self.node} exited: {self._log_tail()}")
            time.sleep(min(0.2, max(0.0, until - time.time())))

    def _mc_forwarding(self) -> str:
        return self.net.run(self.node, "cat /proc/sys/net/ipv4/conf/all/mc_forwarding 2>/dev/null").strip()

    def _log_tail(self) -> str:
        try:
            lines = (self.dir / f"{self.daemon}.log").read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(lines[-5:]) or "(empty log)"

    def _in_daemon_mounts(self, cmd: str) -> str:
        """Run ``cmd`` in the router, inside the daemon's mount namespace (where /run is its folder)."""
        assert self.proc is not None
        return self.net.run(self.node, f"nsenter --mount=/proc/{self.proc.pid}/ns/mnt -- {cmd} 2>&1")

    def _daemon_state(self) -> list[tuple[str, str]]:
        if self.proc is None or self.proc.poll() is not None:
            return [("daemon", f"{self.daemon} is not running")]
        if self.daemon == "smcroute":
            ctl = find_binary("smcroutectl")
            base = f"{ctl} -i {self.ident} -u /run/smcroute.sock -p"
            return [(f"smcroutectl {what}", self._in_daemon_mounts(f"{base} {what}"))
                    for what in ("show interfaces", "show groups", "show routes -d")]
        return [("pimd -r (SIGUSR1, /run/pimd/pimd.dump)", self._pimd_dump())]

    def _pimd_dump(self) -> str:
        assert self.proc is not None
        dump = self.rundir / "pimd" / "pimd.dump"
        before = dump.stat().st_mtime_ns if dump.exists() else None
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            if dump.exists() and dump.stat().st_mtime_ns != before:
                time.sleep(0.05)  # let pimd finish writing
                return dump.read_text(errors="replace")
            time.sleep(0.02)
        return "(pimd wrote no dump within 2 s)"

    def dump(self) -> str:
        """Kernel multicast state (``ip mroute``, ``ip maddr``, mc_forwarding) and the daemon's own view."""
        parts = [("ip -s mroute show", self.net.run(self.node, "ip -s mroute show 2>&1")),
                 ("ip maddr show", self.net.run(self.node, "ip maddr show 2>&1")),
                 ("mc_forwarding", self.net.run(self.node, "grep -H . /proc/sys/net/ipv4/conf/*/mc_forwarding"))]
        parts += self._daemon_state()
        pid = self.proc.pid if self.proc is not None else None
        head = (f"# {self.daemon} (PID {pid}) in {self.node}; forwarding ports: "
                f"{', '.join(f'{p.intf} ({p.link})' for p in self.ports) or 'none'}")
        if self.queriers:
            head += f"; IGMP querier bridges: {', '.join(self.queriers)}"
        return head + "\n" + "\n".join(f"$ {cmd}\n{out.rstrip()}\n" for cmd, out in parts)

    def _write_state(self, when: str) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        mode = "w" if when == "start" else "a"
        with open(self.state_file, mode, encoding="utf-8") as fh:
            fh.write(f"===== {when} ({time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}) =====\n")
            fh.write(self.dump() + "\n")

    def stop(self) -> None:
        """Record the final state, then stop the daemon (SIGTERM, SIGKILL after a grace period)."""
        try:
            if self.proc is not None:
                self._write_state("stop")
        finally:
            self._cleanup()

    def _cleanup(self) -> None:
        """Stop the daemon and give the bridges back their own querier setting."""
        self._kill()
        for sw in self.queriers:
            node = self.net.nodes.get(sw)
            if node is not None:
                self.net.run(sw, f"ip link set dev {node.device} type bridge mcast_querier 0 mcast_igmp_version 2 "
                                 "2>/dev/null")
        self.queriers.clear()

    def _kill(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def kernel_multicast_routing() -> str | None:
    """None if this kernel can route IPv4 multicast, else why not. The kernel's multicast routing (ipmr,
    ``CONFIG_IP_MROUTE``) creates ``/proc/net/ip_mr_vif`` in every network namespace; without it smcrouted and
    pimd cannot open their routing socket ("Kernel does not even support IGMP") and no group crosses a router."""
    if Path("/proc/net/ip_mr_vif").exists():
        return None
    return ("this kernel has no IPv4 multicast routing (CONFIG_IP_MROUTE is not set: /proc/net/ip_mr_vif is "
            "missing), so multicast routers (smcroute, pimd) cannot run")


def start_multicast_routing(net: Any, node: str, cfg: MulticastRouting) -> MulticastService:
    """Start ``cfg.daemon`` in router ``node`` of a built network (``topologies.network.EmulatedNetwork``)."""
    if net.plan.kinds.get(node) != "router":
        raise MulticastError(f"{node}: only a router runs multicast routing")
    missing = kernel_multicast_routing()
    if missing is not None:
        raise MulticastError(f"{node}: multicast_routing: {missing}")
    service = MulticastService(net, node, cfg)
    service.start()
    return service
