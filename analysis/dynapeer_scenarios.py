"""Emulated DynaPeer VoD scenarios, generated from the seeded workload (``scenarios.workload``).

:func:`vod_scenario` turns a :class:`VodSetup` (policy, network kind, seed, scaling) into a scenario dict:

* the paper's Table 2 workload scaled with :meth:`Workload.scaled` (time / ``time_factor``, bit rates /
  ``rate_factor``, a few titles ``keep``): by default 2-minute videos at 150 kbit/s, peers uploading 75 kbit/s
  (``O/Pr = 0.5``) with a 20-second buffer, titles of rank 10 and 50 (about 22 concurrent viewers);
* the request schedule of the scenario's seed (``Workload.requests(seed)``), cut into hosts: each request goes
  to a host that is idle (not watching and not committed to serve, i.e. busy until ``t + L + W``), so one host
  plays one session at a time and its access line's upload really is one peer's (``O'``; ``Pr'`` for Chaining
  and Pn2Pm, their own assumption), with a 25 % margin for TCP/IP headers;
* two ISPs joined by a backbone (10 ms): ``multicast`` (both route multicast, smcroute), ``unicast`` (neither)
  or ``mixed`` (ISP ``a`` does, ``b`` does not); the server on fibre in ``a``, the client hosts alternately in
  ``a`` and ``b`` on their own uplinks (public addresses, no NAT: peers accept connections). Access lines have
  no delay (so no delay line runs on them; the backbone's 10 ms does).
* optionally a SIGKILL of one client process (``kill_at``): the host whose latest session of the most popular
  title started shortly before, so it is likely collaborating.

The server's arguments carry what the policies need from the model (per-title patching windows ``min(T*, B)``
for Patching, the needy titles for Helpers), computed with :mod:`analysis.vod_model` at the scaled parameters,
so formula, simulation and emulation use the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd

from analysis.vod_model import VoDParams, patch_windows
from scenarios.workload import Workload, scale_peer

NETWORKS = ("multicast", "unicast", "mixed")
SERVER = "vsrv"


@dataclass(frozen=True)
class VodSetup:
    """One emulated VoD experiment."""

    policy: str = "unicast"
    network: str = "mixed"
    seed: int = 1
    time_factor: float = 45.0  # 90 min -> 2 min
    rate_factor: float = 10.0  # 1500 -> 150 kbit/s
    keep: tuple[int, ...] = (9, 49)
    warmup_l: float = 1.0  # warm-up, in video lengths
    measure_l: float = 2.0  # measured, in video lengths
    chunk_s: float = 0.5
    kill_at: float | None = None  # seconds after the clients start
    max_hosts: int = 60
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def workload(self) -> Workload:
        base = Workload(duration_min=90.0 * (self.warmup_l + self.measure_l))
        return base.scaled(self.time_factor, self.rate_factor, self.keep)

    @property
    def params(self) -> VoDParams:
        b, o = scale_peer(15.0, 750.0, self.time_factor, self.rate_factor)
        return VoDParams(workload=self.workload, upload_kbps=o, buffer_min=b)

    @property
    def warmup_min(self) -> float:
        return self.warmup_l * self.workload.length_min

    def name(self) -> str:
        return f"vod_{self.policy}_{self.network}" + ("_kill" if self.kill_at is not None else "")


def commit_window_s(policy: str, prm: VoDParams) -> float:
    """How long after its request a session may be asked to start serving (its collaboration window)."""
    L, B, X = prm.L, prm.B, prm.X  # noqa: N806
    w = {"unicast": 0.0, "patching": 0.0, "chaining": B, "promise": L, "pn2pm": B,
         "dynapeer_unicast": min(L, X * B), "dynapeer_multicast": X * B, "dynapeer_helpers": X * B}[policy]
    return 60.0 * w


def assign_hosts(req: pd.DataFrame, busy_s: float, max_hosts: int) -> list[int]:
    """Host index per request: the idle host used longest ago, a new one if none (at most ``max_hosts``)."""
    free_at: list[float] = []
    out = []
    for t in req["time_s"].to_numpy(dtype=float):
        idle = [i for i, f in enumerate(free_at) if f <= t]
        if idle:
            i = min(idle, key=lambda k: free_at[k])
        elif len(free_at) < max_hosts:
            free_at.append(0.0)
            i = len(free_at) - 1
        else:
            i = min(range(len(free_at)), key=lambda k: free_at[k])
        free_at[i] = max(free_at[i], t) + busy_s
        out.append(i)
    return out


def _line(up_bps: float) -> dict[str, Any]:
    return {"profile": "custom", "down": "6mbit", "up": f"{int(math.ceil(up_bps / 1000))}kbit", "delay": "0ms"}


def vod_scenario(setup: VodSetup) -> dict[str, Any]:
    """The scenario dict of one experiment (see the module docstring)."""
    if setup.network not in NETWORKS:
        raise ValueError(f"network must be one of {NETWORKS}")
    prm = setup.params
    wl = prm.workload
    req = wl.requests(setup.seed)
    length_s = wl.length_min * 60.0
    rate_bps = int(round(wl.play_rate_kbps * 1000))
    upload_bps = prm.upload_kbps * 1000
    share = 1.0 if setup.policy in ("chaining", "pn2pm") else prm.c
    busy = length_s + commit_window_s(setup.policy, prm) + 3.0
    hosts = assign_hosts(req, busy, setup.max_hosts)
    nhosts = max(hosts) + 1 if hosts else 1
    client_start = 3.0
    per_host: list[list[list[float]]] = [[] for _ in range(nhosts)]
    for (t, v, c), h in zip(req[["time_s", "video", "client"]].itertuples(index=False), hosts, strict=True):
        per_host[h].append([round(float(t), 3), int(v) + 1, int(c)])
    mc = {"multicast": (True, True), "unicast": (False, False), "mixed": (True, False)}[setup.network]
    titles = [int(v) + 1 for v in wl.titles]
    windows = dict(zip(titles, (60.0 * patch_windows("patching", prm)).round(3).tolist(), strict=True))
    srv_args: dict[str, Any] = {
        "policy": setup.policy, "videos": titles, "length_s": length_s, "rate_bps": rate_bps,
        "chunk_s": setup.chunk_s, "upload_bps": upload_bps, "buffer_s": round(prm.B * 60.0, 3),
        "needy": [int(v) + 1 for v, n in zip(wl.titles, prm.needy(), strict=True) if n],
        **setup.extra,
    }
    if setup.policy == "patching":
        srv_args["patch_window_s"] = windows
    nodes: list[dict[str, Any]] = [{
        "name": SERVER, "uplink": {"isp": "a", "access": {"profile": "custom", "down": "100mbit", "up": "100mbit",
                                                            "delay": "0ms"}},
        "processes": [{"role": "vod_server", "name": "vod", "args": srv_args}],
    }]
    names = []
    for h in range(nhosts):
        isp = "a" if h % 2 == 0 else "b"
        name = f"v{h:02d}"
        names.append(name)
        nodes.append({"name": name, "uplink": {"isp": isp, "access": _line(1.25 * share * rate_bps)},
                      "processes": [{"role": "vod_client", "name": "vc", "start": client_start, "args": {
                          "server": SERVER, "requests": per_host[h], "multicast": mc[0] if isp == "a" else mc[1],
                          "upload_bps": share * rate_bps, "policy": setup.policy}}]})
    horizon_s = wl.duration_min * 60.0
    scenario: dict[str, Any] = {
        "name": setup.name(),
        "description": (f"DynaPeer VoD emulation: {setup.policy} in a {setup.network} network, {len(req)} requests "
                        f"for titles {titles} ({wl.length_min * 60:.0f} s at {wl.play_rate_kbps:g} kbit/s), "
                        f"{nhosts} client hosts"),
        "seed": setup.seed,
        "duration": round(client_start + horizon_s + 2.0, 1),
        "metadata": {"teaches": "P2P video on demand: server load per delivery policy (docs/dynapeer.md)",
                     "vod": {"policy": setup.policy, "network": setup.network, "time_factor": setup.time_factor,
                             "rate_factor": setup.rate_factor, "keep": list(setup.keep),
                             "warmup_s": setup.warmup_min * 60.0, "horizon_s": horizon_s,
                             "length_s": length_s, "rate_bps": rate_bps, "client_start": client_start}},
        "isps": [{"name": "a", "multicast": mc[0], "daemon": "smcroute"},
                 {"name": "b", "multicast": mc[1], "daemon": "smcroute"}],
        "backbone": {"delay": "10ms", "multicast": True},
        "nodes": nodes,
    }
    if not any(mc):
        scenario["isps"] = [{"name": "a"}, {"name": "b"}]
    if setup.kill_at is not None:
        busy_at = supplying_at(setup, srv_args, req, mc, hosts, setup.kill_at)
        top = int(wl.titles[0])
        before = req[(req["video"] == top) & (req["time_s"] <= setup.kill_at - 5.0)]
        victim = None
        if busy_at:  # the host predicted to serve the most viewers at the kill time
            victim = names[max(busy_at, key=lambda h: (len(busy_at[h]), -h))]
        elif not before.empty:
            victim = names[hosts[int(before.index[-1])]]
        if victim is not None:
            scenario["timeline"] = [{"at": round(client_start + setup.kill_at, 1), "action": "process_kill",
                                     "node": victim, "process": "vc"}]
            scenario["metadata"]["vod"]["killed"] = victim
    return scenario


def supplying_at(setup: VodSetup, srv_args: dict[str, Any], req: pd.DataFrame, mc: tuple[bool, bool],
                 hosts: list[int], at: float) -> dict[int, set[int]]:
    """Host -> the sessions it is predicted to be serving ``at`` seconds after the clients start.

    The request schedule is replayed through the server's own directory and policy (:mod:`nodes.vod.policies`)
    with the schedule's times; a host serves a viewer while one of its sessions sends that viewer a peer part
    or sources the viewer's multicast channel (more than 3 s of it left, so that the kill hits it mid-way).
    """
    from nodes.vod.content import Geometry
    from nodes.vod.directory import Directory, PolicyParams
    from nodes.vod.policies import Request, policy

    g = Geometry(srv_args["length_s"], srv_args["rate_bps"], srv_args["chunk_s"])
    prm = PolicyParams(g, srv_args["upload_bps"], srv_args["buffer_s"],
                       {int(k): float(v) for k, v in srv_args.get("patch_window_s", {}).items()},
                       needy=frozenset(srv_args.get("needy", [])))
    d = Directory(prm)
    decide = policy(setup.policy)
    host_of: dict[int, int] = {}
    members: dict[int, list[tuple[int, float]]] = {}  # channel key -> (session, its end)
    sourcing: list[tuple[int, int, float, float]] = []  # (supplier session, channel key, from, to)
    serving: dict[int, set[int]] = {}
    length = g.chunks * g.chunk_s
    for (t, v, c), h in zip(req[["time_s", "video", "client"]].itertuples(index=False), hosts, strict=True):
        sid = int(c) + 1
        host_of[sid] = h
        multicast = mc[0] if h % 2 == 0 else mc[1]
        dec = decide(d, Request(sid, int(v) + 1, float(t), f"h{h}", 7800, multicast))
        for part in dec.parts:
            end = float(t) + (part.end - part.first) * g.chunk_s
            if part.kind == "peer" and part.peer is not None and part.first < part.end and \
                    float(t) + 3.0 <= at <= end - 3.0:
                serving.setdefault(host_of[part.peer.session], set()).add(sid)
            if part.kind == "multicast" and part.channel is not None:
                members.setdefault(part.channel.key, []).append((sid, float(t) + length))
        if dec.new_channel is not None:
            ch = dec.new_channel
            for peer, _ in ch.sources:
                if peer is not None:
                    sourcing.append((peer.session, ch.key, ch.t0, ch.t0 + length))
    for sup, key, lo, hi in sourcing:
        if lo + 3.0 <= at <= hi - 3.0:
            for sid, end in members.get(key, []):
                if end > at + 3.0 and host_of.get(sid) != host_of[sup]:
                    serving.setdefault(host_of[sup], set()).add(sid)
    return serving


def replay_load(setup: VodSetup) -> float:
    """Mean server streams over the measured window when the schedule is replayed through the server's own
    policy rules (:mod:`nodes.vod.policies`) at the schedule's times, every client multicast-capable, no network:
    what the emulation should measure if the network were perfect (compare with :func:`analysis.vod_sim.simulate`).
    """
    from nodes.vod.content import Geometry, popcount
    from nodes.vod.directory import Directory, PolicyParams
    from nodes.vod.policies import Request, policy

    a = vod_scenario(replace(setup, kill_at=None))["nodes"][0]["processes"][0]["args"]
    g = Geometry(a["length_s"], a["rate_bps"], a["chunk_s"])
    prm = PolicyParams(g, a["upload_bps"], a["buffer_s"],
                       {int(k): float(v) for k, v in a.get("patch_window_s", {}).items()},
                       needy=frozenset(a.get("needy", [])))
    d = Directory(prm)
    decide = policy(setup.policy)
    lo, hi = setup.warmup_min * 60.0, setup.workload.duration_min * 60.0
    total = 0.0
    for t, v, c in setup.workload.requests(setup.seed)[["time_s", "video", "client"]].itertuples(index=False):
        dec = decide(d, Request(int(c) + 1, int(v) + 1, float(t), "x", 7800, True))
        spans = [(p.t0 + p.first * g.chunk_s, p.t0 + p.end * g.chunk_s, p.mask) for p in dec.parts
                 if p.kind == "server"]
        if dec.new_channel is not None:
            ch = dec.new_channel
            spans += [(ch.t0, ch.t0 + g.chunks * g.chunk_s, m) for peer, m in ch.sources if peer is None]
        for a0, a1, mask in spans:
            total += popcount(mask) / g.stripes * max(0.0, min(a1, hi) - max(a0, lo))
    return total / (hi - lo)


def with_policy(setup: VodSetup, policy: str) -> VodSetup:
    return replace(setup, policy=policy)


def write_yaml(sc: dict[str, Any], path: str, header: str) -> None:
    """Write a scenario as YAML with a comment header (how it was generated)."""
    import io

    from ruamel.yaml import YAML

    y = YAML()
    y.default_flow_style = None  # innermost lists and maps in flow style: one line per request, per access line
    y.width = 118
    buf = io.StringIO()
    y.dump(sc, buf)
    comment = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    with open(path, "w", encoding="utf-8") as f:
        f.write(comment + buf.getvalue())


def main(argv: list[str] | None = None) -> int:
    """``python -m analysis.dynapeer_scenarios``: write one generated scenario (e.g. the library's vod_mixed)."""
    import argparse
    import shlex
    import sys

    from analysis.dynapeer_compare import POLICIES, QUICK

    ap = argparse.ArgumentParser(prog="python -m analysis.dynapeer_scenarios")
    ap.add_argument("--policy", default="dynapeer_multicast", choices=POLICIES)
    ap.add_argument("--network", default="mixed", choices=NETWORKS)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="the comparison's quick scale (30-s videos)")
    ap.add_argument("--name", default=None, help="scenario name (default: vod_<policy>_<network>)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    setup = VodSetup(policy=a.policy, network=a.network, seed=a.seed, **(QUICK if a.quick else {}))
    sc = vod_scenario(setup)
    if a.name:
        sc["name"] = a.name
    cmd = "python -m analysis.dynapeer_scenarios " + " ".join(shlex.quote(x) for x in (argv or sys.argv[1:]))
    header = (f"Generated by `{cmd}` (analysis/dynapeer_scenarios.py; do not edit by hand, re-generate).\n"
              f"{sc['description']}.\nThe request schedule of seed {a.seed} is embedded: every run replays it. "
              f"ISP a routes IP multicast (smcroute),\nISP b does not: DynaPeer multicast serves a's clients with "
              f"multicast channels sourced by their virtual\nservers and b's clients in DynaPeer unicast mode. "
              f"See docs/dynapeer.md.")
    write_yaml(sc, a.out, header)
    print(f"wrote {a.out}: {sc['description']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
