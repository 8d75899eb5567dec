"""Impairment backends: how delay, jitter and loss of a link direction are put into the kernel's path.

- ``netem``: the kernel qdisc, hung under the direction's HTB class (or as root when there is no rate).
- ``nfqueue``: iptables steers the direction's packets into an NFQUEUE and the user-space delay line
  (``topologies.impair.delayline``) holds and releases them. Used where the kernel has no netem.

``choose_backend`` probes the kernel and returns the backend to use plus the reason, which goes into
the manifest. A configured impairment is never dropped: a backend that cannot apply one raises.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from scenarios.schema import ResolvedDirection
from topologies.impair.nfqueue_rules import egress_add, ingress_add


class ImpairmentError(RuntimeError):
    """An impairment cannot be applied with the chosen backend."""


def netem_available() -> bool:
    """True when this kernel has the netem qdisc (probed in a throwaway network namespace)."""
    probe = subprocess.run(["unshare", "--net", "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"],
                           capture_output=True, text=True, check=False)
    return probe.returncode == 0


def nfqueue_available() -> bool:
    """True when iptables' NFQUEUE target can be installed (probed in a throwaway network namespace)."""
    probe = subprocess.run(["unshare", "--net", "iptables", "-t", "mangle", "-A", "POSTROUTING", "-j", "NFQUEUE",
                            "--queue-num", "1"], capture_output=True, text=True, check=False)
    return probe.returncode == 0


def choose_backend(requested: str) -> tuple[str, str]:
    """(backend name, reason) for ``--impairment auto|netem|nfqueue``; raises ImpairmentError if impossible."""
    has_netem = netem_available()
    if requested == "netem":
        if not has_netem:
            raise ImpairmentError("--impairment netem was asked for, but this kernel has no netem qdisc "
                                  "('Specified qdisc kind is unknown'); use --impairment nfqueue or auto")
        return "netem", "requested; kernel has netem"
    if requested == "nfqueue":
        if not nfqueue_available():
            raise ImpairmentError("--impairment nfqueue was asked for, but iptables' NFQUEUE target is unavailable")
        return "nfqueue", "requested"
    if requested != "auto":
        raise ImpairmentError(f"unknown impairment backend {requested!r} (auto, netem, nfqueue)")
    if has_netem:
        return "netem", "auto: kernel has netem"
    if nfqueue_available():
        return "nfqueue", "auto: kernel has no netem qdisc; using the NFQUEUE user-space delay line"
    raise ImpairmentError("no impairment backend: the kernel has neither netem nor iptables NFQUEUE")


Runner = Callable[[str, str], str]  # (node name, shell command) -> output


class Backend(Protocol):
    name: str

    def netem_leaf(self, d: ResolvedDirection) -> str | None: ...

    def start(self, directions: list[DirectionSite], run: Runner, popen: Callable[..., Any], workdir: Path) -> None: ...

    def change(self, site: DirectionSite, d: ResolvedDirection, run: Runner) -> None: ...

    def stop(self) -> dict[str, Any]: ...


@dataclass
class DirectionSite:
    """Where one impaired direction is applied: which node's namespace, interface and hook."""

    link: str
    direction: str  # "a_to_b" or "b_to_a"
    params: ResolvedDirection
    node: str  # namespace in which the hook lives
    intf: str
    hook: str  # "egress" (sender's interface) or "ingress" (receiver's interface)
    queue_num: int = 0

    @property
    def label(self) -> str:
        return f"{self.params.src}->{self.params.dst}"


def netem_spec(d: ResolvedDirection) -> str:
    """The netem qdisc arguments for a direction."""
    parts = [f"netem limit {d.queue}"]
    if d.delay > 0 or d.jitter > 0:
        parts.append(f"delay {d.delay * 1000:.3f}ms")
        if d.jitter > 0:
            parts.append(f"{d.jitter * 1000:.3f}ms distribution {d.jitter_distribution}")
    if d.loss is not None and d.loss.model == "random":
        parts.append(f"loss random {d.loss.p * 100:.4f}%")
    elif d.loss is not None:
        g = d.loss
        parts.append(f"loss gemodel {g.p * 100:.4f}% {g.r * 100:.4f}% {(1 - g.h) * 100:.4f}% {(1 - g.k) * 100:.4f}%")
    return " ".join(parts)


class NetemBackend:
    """Kernel netem under the HTB class of the sending interface."""

    name = "netem"

    def __init__(self) -> None:
        self.sites: list[DirectionSite] = []

    def netem_leaf(self, d: ResolvedDirection) -> str | None:
        return netem_spec(d) if d.impaired else None

    def start(self, directions: list[DirectionSite], run: Runner, popen: Callable[..., Any], workdir: Path) -> None:
        for site in directions:
            if site.hook != "egress":
                raise ImpairmentError(f"netem applies on egress only ({site.label})")
            if site.params.rate is None:  # no HTB: netem is the root qdisc
                out = run(site.node, f"tc qdisc replace dev {site.intf} root handle 10: {netem_spec(site.params)}")
                if out.strip():
                    raise ImpairmentError(f"netem on {site.label}: {out.strip()}")
            if site.params.jitter > 0 and not site.params.reorder:
                # a FIFO child keeps netem from reordering jittered packets
                run(site.node, f"tc qdisc add dev {site.intf} parent 10:1 pfifo limit {site.params.queue}")
            self.sites.append(site)

    def change(self, site: DirectionSite, d: ResolvedDirection, run: Runner) -> None:
        out = run(site.node, f"tc qdisc change dev {site.intf} handle 10: {netem_spec(d)}")
        if out.strip():
            raise ImpairmentError(f"netem change on {site.label}: {out.strip()}")
        site.params = d

    def stop(self) -> dict[str, Any]:
        return {}


def delayline_queue_config(site: DirectionSite, seed: int) -> dict[str, Any]:
    d = site.params
    if d.loss is None:
        loss: dict[str, Any] = {"model": "none"}
    elif d.loss.model == "random":
        loss = {"model": "random", "p": d.loss.p}
    else:
        loss = {"model": "gilbert", "p": d.loss.p, "r": d.loss.r, "h": d.loss.h, "k": d.loss.k}
    return {"queue_num": site.queue_num, "direction": site.label, "delay_s": d.delay, "jitter_s": d.jitter,
            "jitter_distribution": d.jitter_distribution, "reorder": d.reorder, "loss": loss, "seed": seed}


@dataclass
class _DelayLine:
    node: str
    config_path: Path
    stats_path: Path
    proc: Any
    config: dict[str, Any]
    sites: list[DirectionSite] = field(default_factory=list)


class NfqueueBackend:
    """iptables NFQUEUE + one user-space delay-line process per namespace that holds impaired directions."""

    name = "nfqueue"

    def __init__(self, seed_for: Callable[[str], int]):
        self.seed_for = seed_for
        self.lines: dict[str, _DelayLine] = {}

    def netem_leaf(self, d: ResolvedDirection) -> str | None:
        return None

    def start(self, directions: list[DirectionSite], run: Runner, popen: Callable[..., Any], workdir: Path) -> None:
        by_node: dict[str, list[DirectionSite]] = {}
        for site in directions:
            by_node.setdefault(site.node, []).append(site)
        workdir.mkdir(parents=True, exist_ok=True)
        for node, sites in by_node.items():
            for i, site in enumerate(sites):
                site.queue_num = i + 1
            cfg_path = workdir / f"delayline-{node}.config.json"
            stats_path = workdir / f"delayline-{node}.json"
            ready = workdir / f"delayline-{node}.ready"
            ready.unlink(missing_ok=True)
            config = {"queues": [delayline_queue_config(s, self.seed_for(f"{s.link}/{s.direction}")) for s in sites],
                      "stats_file": str(stats_path), "ready_file": str(ready)}
            cfg_path.write_text(json.dumps(config, indent=1))
            err = open(workdir / f"delayline-{node}.err", "w")  # noqa: SIM115 - handed to the child
            proc = popen(node, [sys.executable, "-m", "topologies.impair.delayline", "--config", str(cfg_path)],
                         stdout=err, stderr=err, label=f"delayline@{node}")
            err.close()
            self.lines[node] = _DelayLine(node, cfg_path, stats_path, proc, config, sites)
            deadline = time.monotonic() + 10
            while not ready.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    msg = (workdir / f"delayline-{node}.err").read_text()[-2000:]
                    raise ImpairmentError(f"the delay line in {node} did not start: {msg.strip() or 'timeout'}")
                time.sleep(0.02)
            for site in sites:  # steer traffic only once the queue has a listener
                argv = (ingress_add if site.hook == "ingress" else egress_add)(site.intf, site.queue_num)
                out = run(node, " ".join(argv))
                if out.strip():
                    raise ImpairmentError(f"iptables in {node} for {site.label}: {out.strip()}")

    def change(self, site: DirectionSite, d: ResolvedDirection, run: Runner) -> None:
        line = self.lines.get(site.node)
        if line is None or site not in line.sites:
            raise ImpairmentError(f"{site.label} has no delay line to change (it was not impaired at start); "
                                  "give the link a delay, jitter or loss (e.g. delay: 0ms is not enough) at start")
        site.params = d
        line.config["queues"] = [
            delayline_queue_config(s, self.seed_for(f"{s.link}/{s.direction}")) | {"queue_num": s.queue_num}
            for s in line.sites]
        line.config_path.write_text(json.dumps(line.config, indent=1))
        line.proc.send_signal(signal.SIGHUP)

    def stop(self) -> dict[str, Any]:
        """Stop every delay line (held packets are released) and return their statistics."""
        for line in self.lines.values():
            if line.proc.poll() is None:
                line.proc.send_signal(signal.SIGTERM)
        stats: dict[str, Any] = {}
        for node, line in self.lines.items():
            try:
                line.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                line.proc.kill()
                line.proc.wait()
            try:
                stats[node] = json.loads(line.stats_path.read_text())
            except (OSError, ValueError):
                stats[node] = {"error": f"no statistics (exit code {line.proc.returncode})"}
        self.lines.clear()
        return stats
