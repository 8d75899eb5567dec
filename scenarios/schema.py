"""The scenario model: what an experiment is, as pydantic classes.

A YAML scenario file is parsed by ``scenarios.loader`` into these classes; ``scenarios.checks`` then checks
what a per-field model cannot (names that must exist, events inside the run, ...). Every quantity accepts
the spellings of ``scenarios.units``. ``invoke schema`` exports the JSON Schema for editors.
"""

from __future__ import annotations

import ipaddress
import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from scenarios import units

NAME_PATTERN = r"^[a-z][a-z0-9_]{0,9}$"

Rate = Annotated[
    float,
    BeforeValidator(units.parse_rate),
    Field(gt=0),
    WithJsonSchema({"anyOf": [{"type": "number", "exclusiveMinimum": 0},
                              {"type": "string", "pattern": r"^[0-9.]+\s*([kKmMgG]?(bit|bps))?(/s)?$"}],
                    "description": "bit/s, or a string like '8mbit'"}),
]
Duration = Annotated[
    float,
    BeforeValidator(units.parse_duration),
    Field(ge=0),
    WithJsonSchema({"anyOf": [{"type": "number", "minimum": 0},
                              {"type": "string", "pattern": r"^[0-9.]+\s*(us|ms|s|sec|min|h)?$"}],
                    "description": "seconds, or a string like '10ms'"}),
]
Probability = Annotated[
    float,
    BeforeValidator(units.parse_percent),
    WithJsonSchema({"anyOf": [{"type": "number", "minimum": 0, "maximum": 100},
                              {"type": "string", "pattern": r"^[0-9.]+\s*%?$"}],
                    "description": "a percentage: '2%' or 2 (never a fraction)"}),
]


def default_queue(rate: float | None) -> int:
    """Queue length (packets) when the scenario gives none: about 200 ms at the rate, at least 64 packets."""
    if rate is None:
        return 1000
    return max(64, math.ceil(rate * 0.2 / (8 * 1500)))


class Strict(BaseModel):
    """Base for every scenario class: unknown fields are errors."""

    model_config = ConfigDict(extra="forbid", frozen=False)


class GilbertLoss(Strict):
    """Gilbert-Elliott bursty loss, netem's ``gemodel`` semantics (all values are percentages)."""

    model: Literal["gilbert"]
    p: Probability = Field(description="P(good -> bad) per packet")
    r: Probability = Field(description="P(bad -> good) per packet")
    h: Probability = Field(default=0.0, description="P(delivered | bad state); 0 means every bad packet is lost")
    k: Probability = Field(default=1.0, description="P(delivered | good state); 100% means no good-state loss")

    def mean_loss(self) -> float:
        """Stationary loss probability."""
        if self.p + self.r == 0:
            return 1 - self.k
        pi_bad = self.p / (self.p + self.r)
        return pi_bad * (1 - self.h) + (1 - pi_bad) * (1 - self.k)


class RandomLoss(Strict):
    """Independent (Bernoulli) loss."""

    model: Literal["random"]
    p: Probability


LossSpec = Annotated[Probability | RandomLoss | GilbertLoss, Field(union_mode="left_to_right")]


class DirectionParams(Strict):
    """Emulation parameters of one link direction. Unset fields inherit from the link."""

    rate: Rate | None = Field(default=None, description="HTB rate limit (bit/s); unset = unlimited")
    delay: Duration | None = Field(default=None, description="one-way delay added")
    jitter: Duration | None = Field(default=None, description="delay variation: σ (normal) or half-width (uniform)")
    jitter_distribution: Literal["normal", "uniform"] | None = None
    reorder: bool | None = Field(default=None, description="let jitter reorder packets (default: keep order)")
    loss: LossSpec | None = Field(default=None, description="'2%' random loss, or a {model: random|gilbert} map")
    queue: int | None = Field(default=None, gt=0, le=100000, description="queue length in packets at the rate limit")
    linklayer: Literal["ethernet", "atm"] | None = Field(default=None, description="HTB stab link layer")
    overhead: int | None = Field(default=None, ge=0, le=512, description="per-packet link-layer overhead, bytes")


class LossModel(BaseModel):
    """Resolved loss of a direction, as fractions in [0, 1] (no percent parsing here)."""

    model: Literal["random", "gilbert"]
    p: float = Field(ge=0, le=1)
    r: float = Field(default=0.0, ge=0, le=1)
    h: float = Field(default=0.0, ge=0, le=1)
    k: float = Field(default=1.0, ge=0, le=1)

    def mean_loss(self) -> float:
        """Stationary loss probability (for gilbert: pi_bad (1-h) + pi_good (1-k))."""
        if self.model == "random":
            return self.p
        if self.p + self.r == 0:
            return 1 - self.k
        pi_bad = self.p / (self.p + self.r)
        return pi_bad * (1 - self.h) + (1 - pi_bad) * (1 - self.k)


def resolve_loss(spec: float | RandomLoss | GilbertLoss | LossModel | None) -> LossModel | None:
    """A scenario's loss spelling -> a LossModel, or None when nothing is lost."""
    if spec is None or isinstance(spec, LossModel):
        return spec if spec is None or spec.mean_loss() > 0 or spec.model == "gilbert" else None
    if isinstance(spec, float | int):
        return LossModel(model="random", p=float(spec)) if spec > 0 else None
    if isinstance(spec, RandomLoss):
        return LossModel(model="random", p=spec.p) if spec.p > 0 else None
    return LossModel(model="gilbert", p=spec.p, r=spec.r, h=spec.h, k=spec.k)


class ResolvedDirection(BaseModel):
    """A link direction with every parameter decided (what the builder applies)."""

    src: str
    dst: str
    rate: float | None
    delay: float
    jitter: float
    jitter_distribution: Literal["normal", "uniform"]
    reorder: bool
    loss: LossModel | None
    queue: int
    linklayer: Literal["ethernet", "atm"]
    overhead: int

    @property
    def impaired(self) -> bool:
        """True when delay, jitter or loss must be emulated (beyond a rate limit)."""
        return self.delay > 0 or self.jitter > 0 or self.loss is not None


class Link(DirectionParams):
    """A point-to-point link (or a node's port on a switch) with per-direction parameters."""

    name: str | None = Field(default=None, description="defaults to '<a>-<b>'")
    a: str
    b: str
    a_to_b: DirectionParams | None = None
    b_to_a: DirectionParams | None = None
    addresses: dict[str, ipaddress.IPv4Interface] | None = Field(
        default=None, description="{<a>: 10.0.0.1/30, <b>: 10.0.0.2/30}; automatic when unset")
    cost: float = Field(default=1.0, gt=0, description="routing cost (shortest paths)")

    @property
    def link_name(self) -> str:
        return self.name or f"{self.a}-{self.b}"

    def resolved(self, src: str) -> ResolvedDirection:
        """Parameters of the direction leaving ``src`` (link-level values overridden per direction)."""
        if src == self.a:
            override, dst = self.a_to_b, self.b
        elif src == self.b:
            override, dst = self.b_to_a, self.a
        else:
            raise KeyError(src)

        def pick(field: str) -> Any:
            if override is not None and getattr(override, field) is not None:
                return getattr(override, field)
            return getattr(self, field)

        loss = resolve_loss(pick("loss"))
        return ResolvedDirection(
            src=src, dst=dst, rate=pick("rate"), delay=pick("delay") or 0.0, jitter=pick("jitter") or 0.0,
            jitter_distribution=pick("jitter_distribution") or "normal", reorder=bool(pick("reorder")),
            loss=loss, queue=pick("queue") or default_queue(pick("rate")), linklayer=pick("linklayer") or "ethernet",
            overhead=pick("overhead") or 0,
        )


class Process(Strict):
    """A program started inside a node: ``python -m nodes.<role>`` with a JSON config built from ``args``."""

    role: str = Field(description="one of the roles in nodes/roles.py (invoke roles)")
    name: str | None = Field(default=None, pattern=NAME_PATTERN, description="defaults to the role name")
    args: dict[str, Any] = Field(default_factory=dict, description="the role's configuration")
    start: Duration = Field(default=0.0, description="seconds after the network is up")

    @property
    def proc_name(self) -> str:
        return self.name or self.role


class PortForward(Strict):
    """A static port forward on a NAT gateway: outside port -> inside host and port."""

    proto: Literal["udp", "tcp"] = "udp"
    port: int = Field(ge=1, le=65535, description="port on the gateway's outside address")
    to: str = Field(description="inside node name or IPv4 address")
    to_port: int | None = Field(default=None, ge=1, le=65535, description="defaults to port")


class NatConfig(Strict):
    """NAT on a router (a home gateway), in RFC 4787 terms."""

    type: Literal["full-cone", "address-restricted", "port-restricted", "symmetric"]
    outside: str = Field(description="name of the link on the public side")
    hairpin: bool = Field(default=False, description="inside hosts reach each other via the outside address")
    forwards: list[PortForward] = Field(default_factory=list)


class MulticastRouting(Strict):
    """A multicast routing daemon in a router (IGMP towards hosts, routes between interfaces)."""

    daemon: Literal["pimd", "smcroute"] = "pimd"
    groups: list[ipaddress.IPv4Network] = Field(default_factory=lambda: [ipaddress.IPv4Network("239.0.0.0/8")])
    rp: str | None = Field(default=None, description="pimd: rendezvous point (router name); default: this router")
    interfaces: list[str] | None = Field(default=None, description="link names to enable; default: all")


class Node(Strict):
    """A host, a router (forwards IP) or a switch (a LAN: a Linux bridge)."""

    name: str = Field(pattern=NAME_PATTERN, description="lower case, digits, '_', at most 10 characters")
    kind: Literal["host", "router", "switch"] = "host"
    processes: list[Process] = Field(default_factory=list)
    subnet: ipaddress.IPv4Network | None = Field(default=None, description="switch only: the LAN's subnet")
    igmp_snooping: bool = Field(default=True, description="switch only")
    position: tuple[float, float] | None = Field(default=None, description="metres, for piconet range")
    uplink: Uplink | None = Field(default=None, description="an access line of the node's own to an ISP")
    nat: NatConfig | None = Field(default=None, description="router only: NAT towards the 'outside' link")
    multicast_routing: MulticastRouting | None = Field(default=None, description="router only")


class LinkDown(Strict):
    at: Duration
    action: Literal["link_down"]
    link: str


class LinkUp(Strict):
    at: Duration
    action: Literal["link_up"]
    link: str


class LinkSet(Strict):
    """Change some parameters of a link mid-run (both directions, or one via a_to_b / b_to_a)."""

    at: Duration
    action: Literal["link_set"]
    link: str
    set: DirectionParams | None = None
    a_to_b: DirectionParams | None = None
    b_to_a: DirectionParams | None = None


class ProcessSignal(Strict):
    """Stop (SIGTERM), kill (SIGKILL) or (re)start one process of a node."""

    at: Duration
    action: Literal["process_stop", "process_kill", "process_start"]
    node: str
    process: str


class Move(Strict):
    """Move a node to a new position; piconet memberships follow the range rule."""

    at: Duration
    action: Literal["move"]
    node: str
    to: tuple[float, float]


class SetAccess(Strict):
    """Change an access line to another profile mid-run (a line retrained, a phone from 3G to Wi-Fi ...).

    ``line`` is a home (its ``<home>_line``) or a node with an uplink (its ``<node>_up``)."""

    at: Duration
    action: Literal["set_access"]
    line: str
    access: ProfileName | AccessSpec


class NodeAction(Strict):
    """Take a whole node off the network (interfaces down, processes killed) or bring it back."""

    at: Duration
    action: Literal["node_stop", "node_start"]
    node: str


Event = Annotated[LinkDown | LinkUp | LinkSet | ProcessSignal | NodeAction | Move | SetAccess,
                  Field(discriminator="action")]


ProfileName = Literal["adsl", "adsl2plus", "vdsl2", "ftth", "3g"]


class AccessSpec(Strict):
    """An access line: a named profile with fields overridden, or (``profile: custom``) all fields given."""

    profile: ProfileName | Literal["custom"]
    down: Rate | None = None
    up: Rate | None = None
    delay: Duration | None = None
    jitter: Duration | None = None
    loss: Probability | None = None
    linklayer: Literal["ethernet", "atm"] | None = None
    overhead: int | None = Field(default=None, ge=0, le=512)
    queue_down: int | None = Field(default=None, gt=0, le=100000)
    queue_up: int | None = Field(default=None, gt=0, le=100000)


class Isp(Strict):
    """An ISP island: a core router and access routers (DSLAM/BRAS), with its own address plan.

    Generated nodes: ``<name>_c`` (core), ``<name>_a1`` .. ``<name>_a<n>`` (access routers).
    """

    name: str = Field(pattern=r"^[a-z][a-z0-9]{0,5}$", description="at most 6 characters")
    multicast: bool = Field(default=False, description="routers run a multicast routing daemon")
    daemon: Literal["pimd", "smcroute"] = "pimd"
    access_routers: int = Field(default=1, ge=1, le=8)
    core_rate: Rate | None = Field(default=None, description="rate of core<->access links; unlimited if unset")
    core_delay: Duration = Field(default=0.001)
    plan: ipaddress.IPv4Network | None = Field(default=None, description="address plan; default 10.<100+k>.0.0/16")


class Backbone(Strict):
    """The router ``bb`` that joins the ISPs' core routers."""

    delay: Duration = Field(default=0.010, description="one-way delay of each core<->backbone link")
    rate: Rate | None = None
    multicast: bool = Field(default=True, description="route multicast between multicast ISPs")


class HomeHost(Strict):
    name: str | None = Field(default=None, pattern=NAME_PATTERN)
    processes: list[Process] = Field(default_factory=list)


class Home(Strict):
    """A home: gateway (with NAT) + LAN + hosts on an access line to one of its ISP's access routers.

    Generated nodes: ``<name>_gw`` (router), ``<name>_sw`` (LAN), hosts ``<name>_1`` ... unless named.
    """

    name: str = Field(pattern=r"^[a-z][a-z0-9]{0,6}$", description="at most 7 characters")
    isp: str
    access_router: int | None = Field(default=None, ge=1, description="which access router; default round robin")
    access: ProfileName | AccessSpec = "adsl"
    nat: Literal["full-cone", "address-restricted", "port-restricted", "symmetric", "none"] = "port-restricted"
    hairpin: bool = False
    forwards: list[PortForward] = Field(default_factory=list)
    hosts: int | list[HomeHost] = Field(default=1, description="a count, or hosts with names/processes")
    subnet: ipaddress.IPv4Network = ipaddress.IPv4Network("192.168.1.0/24")


class Uplink(Strict):
    """A node's own access line to an ISP (a phone's 3G, a PC's xDSL without a home gateway)."""

    isp: str
    access: ProfileName | AccessSpec = "3g"
    access_router: int | None = Field(default=None, ge=1)


class Piconet(Strict):
    """A Bluetooth-like piconet (or a Wi-Fi ad-hoc cell): a master and up to 7 active slaves sharing one capacity.

    Generated: a LAN ``<name>_bt`` whose slave ports can only talk to the master (the master relays), a
    capacity shared by all members' traffic in both directions (one HTB tree at the master), per-hop delay
    and loss on every member's link. Members out of ``range`` of the master are parked (link down).
    """

    name: str = Field(pattern=r"^[a-z][a-z0-9]{0,6}$", description="at most 7 characters")
    profile: Literal["bt-classic", "bt-edr", "wifi-adhoc"] = "bt-edr"
    master: str
    members: list[str] = Field(default_factory=list, description="nodes that may join (in range, up to 7 at once)")
    range: float = Field(default=10.0, gt=0, description="metres")
    capacity: Rate | None = Field(default=None, description="override the profile's shared capacity")
    delay: Duration | None = Field(default=None, description="override the profile's per-hop delay")
    loss: Probability | None = Field(default=None, description="override the profile's per-hop loss")


class Addressing(Strict):
    """Where automatic addresses come from."""

    lan_pool: ipaddress.IPv4Network = ipaddress.IPv4Network("10.0.0.0/16")
    lan_prefix: int = Field(default=24, ge=8, le=29)
    p2p_pool: ipaddress.IPv4Network = ipaddress.IPv4Network("10.255.0.0/16")


class Scenario(Strict):
    """One experiment: a network, the programs in it, a timeline, a duration and a seed."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    seed: int = Field(default=1, ge=0)
    duration: Duration = Field(gt=0, le=86400)
    metadata: dict[str, Any] = Field(default_factory=dict)
    addressing: Addressing = Field(default_factory=Addressing)
    nodes: list[Node] = Field(default_factory=list)
    links: list[Link] = Field(default_factory=list)
    timeline: list[Event] = Field(default_factory=list)
    isps: list[Isp] = Field(default_factory=list, description="ISP islands (building blocks)")
    backbone: Backbone | None = Field(default=None, description="joins the ISPs; default when there are ISPs")
    homes: list[Home] = Field(default_factory=list, description="homes behind access lines (building blocks)")
    piconets: list[Piconet] = Field(default_factory=list, description="Bluetooth-like ad-hoc segments")

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def link(self, name: str) -> Link:
        return next(lk for lk in self.links if lk.link_name == name)


Node.model_rebuild()
Scenario.model_rebuild()
