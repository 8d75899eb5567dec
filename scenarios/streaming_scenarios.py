"""Scenario generators for live P2P streaming experiments too big to write by hand (acceptance runs, benches).

:func:`live_scenario` builds, from a :class:`LiveSetup`, a scenario dict (ready for YAML) with one ISP, a tracker on
fibre, a source with a given upload, and ``peers`` peers on access lines taken in turn from ``access`` (public
peers on their own uplink, or hosts behind home NATs), all watching one live stream; optionally a share of
the peers is killed with SIGKILL at once (churn). :func:`download_scenario` does the same for download mode.
Credentials and the chunk-signing key are derived from the seed, so a generated scenario is reproducible and
self-contained. ``invoke streaming-accept`` and ``invoke bench streaming`` run what these produce.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Any

from scenarios.units import parse_rate

TRACKER = "trk"
SOURCE = "src"
CONTENT = 1

ADSL_1M = {"profile": "custom", "down": "8mbit", "up": "1mbit", "delay": "10ms"}
"""An ADSL-like line, 8 / 1 Mbit/s, without the ATM cell tax (so the upload really is 1 Mbit/s of IP)."""
VDSL_10M = {"profile": "custom", "down": "50mbit", "up": "10mbit", "delay": "4ms"}


@dataclass
class LiveSetup:
    """What a generated live-streaming experiment looks like."""

    peers: int = 30
    stream_bps: int = 500_000
    source_up: str = "2mbit"
    access: list[dict[str, Any]] = field(default_factory=lambda: [dict(ADSL_1M)])
    scheduler: str = "deadline"
    duration: float = 120.0
    join_spread: float = 10.0
    start: float = 4.0
    seed: int = 1
    kill_fraction: float = 0.0
    kill_at: float = 60.0
    nat: dict[str, int] = field(default_factory=dict)
    """NAT type -> number of peers behind a home gateway of that type (taken from ``peers``)."""
    peer_args: dict[str, Any] = field(default_factory=dict)
    source_args: dict[str, Any] = field(default_factory=dict)
    source_partners: int | None = None
    """Partners the source accepts; default: the whole streams 80 % of its upload carries (at least 1), so its
    partners are not served from a standing queue."""
    name: str = "live"


def secret(seed: int, user: str) -> str:
    """The scenario's password of ``user`` (derived from the seed: reproducible, different per user)."""
    return hashlib.sha256(f"streambed-{seed}-{user}".encode()).hexdigest()[:16]


def signing_key(seed: int) -> str:
    return hashlib.sha256(f"streambed-key-{seed}".encode()).hexdigest()


def peer_names(n: int) -> list[str]:
    width = max(2, len(str(n)))
    return [f"p{i:0{width}d}" for i in range(1, n + 1)]


MESH_PEER_ARGS: dict[str, Any] = {"partners": 6, "max_outstanding": 2, "bm_interval": 0.5, "start_lag": 20,
                                  "startup_buffer": 8, "serial_upload": True, "serve_horizon": 2.0,
                                  "serve_urgent": 6.0}
"""Peer settings of the generated experiments (each overridable by ``LiveSetup.peer_args``). On 1 Mbit/s uploads
a 62 KB chunk takes half a second per hop; with the role's CoolStreaming defaults (4 partners, up to 4 requests
queued per partner, buffer maps every second, 10 s behind the live edge) 30 peers reached a mean continuity of
0.79 (seed 1): queues at the first peers grew and the rest of the overlay's upload stayed idle. Six partners, two
requests in flight per partner, buffer maps every 0.5 s and 20 s of lag gave 0.99 for seed 1 (three runs), but
0.858 for seed 2: a chunk reached a peer 12-19 s after it was made (median), so little was left of the 20 s lag.

The upload settings (2026-12-06) shorten that path. ``serial_upload``: a supplier sends one chunk at a time at the
full rate of its uplink (0.5 s) instead of one per connection at once (each then takes as long as all of them), so
the first requester can forward it sooner. ``serve_horizon`` 2 s: a request that would wait longer behind the
queued ones is answered busy, so a fresh chunk waits to spread to partners with idle uplinks instead of deepening
the queues of the few that hold it; ``serve_urgent`` 6 s exempts requests due soon. And (the role's default)
``serve_deadline``: no chunk is sent that cannot arrive before its requester plays it (CHUNK_REQ carries the
deadline). Mesh seeds 1 / 2 / 3 (30 peers): with all of them 1.000 / 1.000 / 1.000 (these three with ``serve_old``
14 s in place of ``serve_urgent``, the same at a 20 s lag), median age of a chunk at arrival 7 s; churn seeds 1-3
and NAT: 1.000 each. Serial upload and deadlines without the horizon 0.908 / 0.963 / 0.996 (median age
12-15 s); the horizon without serial upload 0.993, 0.962, 0.978 (seed 1, 2026-11-22) and 0.890 / 0.944 (seeds 2 /
3); the deadline alone 0.876 (seed 2). Serial upload without deadlines served requests long given up on (churn
0.63, 2026-11-22)."""


SOURCE_PREFERS = 4.0
"""The source's ``prefer_uploaders``: its few partners are the overlay's first hop, so a peer that says it uploads
four times more than the slowest of them takes its place (peers say their line's upload: ``upload_capacity``). Only
overlays of mixed lines are affected; in the heterogeneous runs the first peers to ask were often all on ADSL."""


def _peer_proc(setup: LiveSetup, user: str, start: float, access: dict[str, Any]) -> dict[str, Any]:
    args = {"tracker": TRACKER, "user": user, "secret": secret(setup.seed, user), "content": CONTENT,
            "key": signing_key(setup.seed), "scheduler": setup.scheduler, **MESH_PEER_ARGS, **setup.peer_args}
    if "up" in access:  # what the peer tells the source when it asks to be its partner
        args.setdefault("upload_capacity", int(parse_rate(access["up"])))
    return {"role": "peer", "name": "peer", "start": round(start, 3), "args": args}


def _source_partners(setup: LiveSetup) -> int:
    if setup.source_partners is not None:
        return setup.source_partners
    return max(1, int(0.8 * parse_rate(setup.source_up) // setup.stream_bps))


def live_scenario(setup: LiveSetup) -> dict[str, Any]:
    """A scenario dict for one live-streaming experiment."""
    rng = random.Random(setup.seed)
    names = peer_names(setup.peers)
    users = {n: secret(setup.seed, n) for n in names}
    users[SOURCE] = secret(setup.seed, SOURCE)
    starts = sorted(setup.start + rng.uniform(0, setup.join_spread) for _ in names)
    n_nat = sum(setup.nat.values())
    if n_nat > setup.peers:
        raise ValueError("more NATed peers than peers")
    nodes: list[dict[str, Any]] = [
        {"name": TRACKER, "uplink": {"isp": "net", "access": {"profile": "ftth"}},
         "processes": [{"role": "tracker", "args": {"users": users, "contents": {str(CONTENT): "live"}}}]},
        {"name": SOURCE, "uplink": {"isp": "net", "access": {"profile": "custom", "down": "100mbit",
                                                             "up": setup.source_up, "delay": "2ms"}},
         "processes": [{"role": "source", "name": "source", "start": 1.0,
                        "args": {"tracker": TRACKER, "user": SOURCE, "secret": users[SOURCE], "content": CONTENT,
                                 "key": signing_key(setup.seed), "bitrate": setup.stream_bps,
                                 "max_partners": _source_partners(setup), "prefer_uploaders": SOURCE_PREFERS,
                                 **setup.source_args}}]},
    ]
    homes: list[dict[str, Any]] = []
    nat_types = [t for t, k in sorted(setup.nat.items()) for _ in range(k)]
    timeline: list[dict[str, Any]] = []
    killed = set(rng.sample(range(setup.peers), round(setup.kill_fraction * setup.peers)))
    for i, (name, start) in enumerate(zip(names, starts, strict=True)):
        access = setup.access[i % len(setup.access)]
        proc = _peer_proc(setup, name, start, access)
        if i < len(nat_types):
            homes.append({"name": f"h{name}"[:10], "isp": "net", "access": access, "nat": nat_types[i],
                          "hosts": [{"name": name, "processes": [proc]}]})
        else:
            nodes.append({"name": name, "uplink": {"isp": "net", "access": access}, "processes": [proc]})
        if i in killed:
            timeline.append({"at": setup.kill_at, "action": "process_kill", "node": name, "process": "peer"})
    scenario: dict[str, Any] = {
        "name": setup.name,
        "description": (f"Live P2P streaming: {setup.peers} peers ({n_nat} behind NAT), a {setup.stream_bps} bit/s "
                        f"stream from a source with {setup.source_up} upload, scheduler {setup.scheduler}."),
        "seed": setup.seed,
        "duration": setup.duration,
        "isps": [{"name": "net", "access_routers": min(8, max(1, setup.peers // 8))}],
        "nodes": nodes,
    }
    if homes:
        scenario["homes"] = homes
    if timeline:
        scenario["timeline"] = timeline
    return scenario


def download_scenario(peers: int = 20, size_bytes: int = 50_000_000, source_up: str = "20mbit",
                      access: dict[str, Any] | None = None, duration: float = 150.0, seed: int = 1,
                      peer_args: dict[str, Any] | None = None) -> dict[str, Any]:
    """A scenario in which ``peers`` peers download one ``size_bytes`` file from a source and from each other."""
    setup = LiveSetup(peers=peers, source_up=source_up, access=[access or dict(VDSL_10M)], duration=duration,
                      seed=seed, join_spread=3.0, name="download", source_partners=8,
                      peer_args={"mode": "download", **(peer_args or {})},
                      source_args={"mode": "download", "generate_bytes": size_bytes})
    scenario = live_scenario(setup)
    scenario["description"] = f"Download mode: one {size_bytes} byte file to {peers} peers."
    return scenario
