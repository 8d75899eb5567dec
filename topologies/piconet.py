"""Run-time side of Bluetooth-like piconets: shared capacity, relaying through the master, the range rule.

- Shared capacity: every packet to or from the master's piconet interface, in both directions, is redirected
  (tc ``mirred``) into one IFB device in the master's namespace, shaped there by one HTB tree: a parent class
  at the piconet's capacity and one child per member (fair share guaranteed, the whole capacity borrowable).
  So four members pulling at once share the capacity instead of getting it four times.
- Relaying: the member ports of the piconet's bridge are isolated (they can only talk to the master's port)
  and the master answers ARP for the members (``proxy_arp_pvlan``) and forwards, so member-to-member traffic
  crosses the master twice, as in a real piconet.
- Range: members farther than ``range`` from the master are parked (their link is down); at most 7 are active;
  a member that comes into range when 7 are active is refused until a slot frees. ``move`` events re-apply it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from scenarios.piconets import PICONET_PROFILES, active_members, link_name
from scenarios.schema import Piconet


class Network(Protocol):
    plan: Any
    nodes: dict[str, Any]
    workdir: Path

    def run(self, node: str, command: str) -> str: ...

    def set_link(self, name: str, up: bool) -> None: ...


def _checked(out: str, what: str) -> None:
    if out.strip():
        raise RuntimeError(f"{what}: {out.strip()}")


@dataclass
class PiconetService:
    net: Network
    spec: Piconet
    positions: dict[str, tuple[float, float] | None]
    active: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    @property
    def log_path(self) -> Path:
        return self.net.workdir / f"piconet-{self.spec.name}.jsonl"

    def _log(self, **rec: Any) -> None:
        with open(self.log_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"t": time.time(), "piconet": self.spec.name, **rec}) + "\n")

    def start(self) -> None:
        spec = self.spec
        prof = PICONET_PROFILES[spec.profile]
        capacity = int(spec.capacity if spec.capacity is not None else prof.capacity)
        plan = self.net.plan
        mlink = plan.link(link_name(spec.name, spec.master))
        m_ep = mlink.a if mlink.a.node == spec.master else mlink.b
        m = spec.master
        ifb = f"{spec.name}_ifb"
        cmds = [
            "sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.send_redirects=0",
            f"sysctl -qw net.ipv4.conf.{m_ep.intf}.proxy_arp=1 net.ipv4.conf.{m_ep.intf}.proxy_arp_pvlan=1 "
            f"net.ipv4.conf.{m_ep.intf}.send_redirects=0",
            f"ip link add name {ifb} type ifb && ip link set {ifb} up",
            f"tc qdisc add dev {ifb} root handle 1: htb default 99",
            f"tc class add dev {ifb} parent 1: classid 1:1 htb rate {capacity}bit ceil {capacity}bit",
        ]
        members = spec.members
        share = max(8000, capacity // (len(members) + 1))
        cmds.append(f"tc class add dev {ifb} parent 1:1 classid 1:99 htb rate {share}bit ceil {capacity}bit")
        for i, member in enumerate(members):
            lp = plan.link(link_name(spec.name, member))
            ep = lp.a if lp.a.node == member else lp.b
            cls = f"1:{10 + i}"
            cmds.append(f"tc class add dev {ifb} parent 1:1 classid {cls} htb rate {share}bit ceil {capacity}bit")
            cmds.append(f"tc filter add dev {ifb} parent 1: protocol ip prio 1 u32 match ip dst {ep.ip.ip}/32 "
                        f"flowid {cls}")
            cmds.append(f"tc filter add dev {ifb} parent 1: protocol ip prio 2 u32 match ip src {ep.ip.ip}/32 "
                        f"flowid {cls}")
        cmds += [
            f"tc qdisc add dev {m_ep.intf} root handle 1: htb default 1",
            f"tc filter add dev {m_ep.intf} parent 1: protocol all prio 1 u32 match u32 0 0 "
            f"action mirred egress redirect dev {ifb}",
            f"tc qdisc add dev {m_ep.intf} handle ffff: ingress",
            f"tc filter add dev {m_ep.intf} parent ffff: protocol all prio 1 u32 match u32 0 0 "
            f"action mirred egress redirect dev {ifb}",
        ]
        for cmd in cmds:
            _checked(self.net.run(m, cmd), f"piconet {spec.name} at {m}: {cmd}")
        sw = self.net.nodes[f"{spec.name}_bt"]
        for member in members:
            lp = plan.link(link_name(spec.name, member))
            port = lp.b if lp.a.node == member else lp.a
            _checked(sw.cmd(f"bridge link set dev {port.intf} isolated on"), f"isolating {port.intf}")
        self._log(event="start", master=m, capacity_bps=capacity, members=members)
        self.update()

    def update(self) -> None:
        """Apply the range rule at the current positions (links of parked members down)."""
        spec = self.spec
        active, refused = active_members(spec.members, self.positions.get(spec.master), self.positions,
                                         spec.range, self.active)
        for member in spec.members:
            was, now = member in self.active, member in active
            if was != now or not self.active:
                self.net.set_link(link_name(spec.name, member), now)
            if was != now:
                self._log(event="join" if now else "leave", member=member, position=self.positions.get(member))
        for member in refused:
            if member not in self.refused:
                self._log(event="refused", member=member, reason="7 active slaves already")
        self.active, self.refused = active, refused

    def move(self, node: str, to: tuple[float, float]) -> None:
        self.positions[node] = to
        if node == self.spec.master or node in self.spec.members:
            self.update()

    def stop(self) -> None:
        self._log(event="stop", active=self.active)

    def dump(self) -> str:
        return self.net.run(self.spec.master, f"tc -s class show dev {self.spec.name}_ifb")
