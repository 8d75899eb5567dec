"""``invoke calibrate``: measure every shaped or impaired link direction of a scenario against its configuration.

For each direction between two namespaced nodes (hosts or routers), inside the built network:
- a 20 packets/s UDP probe (our probe roles) gives one-way delay (median, p95), RFC 3550 jitter and loss;
- a denser probe gives loss over enough packets for a binomial check;
- iperf3 gives TCP goodput (and UDP throughput at the configured rate).
Each figure gets an expected value, a tolerance and pass/fail; the table goes to ``calibration.csv``.
Directions on switch ports are listed as not measured (a bridge has no namespace to run a probe in).
"""

from __future__ import annotations

import csv
import json
import math
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nodes.roles import ROLE_MODULES, child_args
from scenarios.processes import derived_seed
from scenarios.schema import ResolvedDirection
from topologies.network import EmulatedNetwork
from topologies.plan import Endpoint


@dataclass
class Check:
    link: str
    direction: str
    figure: str
    configured: str
    expected: float | None
    measured: float | None
    low: float | None
    high: float | None
    unit: str
    note: str = ""

    @property
    def verdict(self) -> str:
        if self.measured is None or self.expected is None:
            return "n/a"
        ok = (self.low is None or self.measured >= self.low) and (self.high is None or self.measured <= self.high)
        return "pass" if ok else "FAIL"


def expected_rfc3550_jitter(d: ResolvedDirection) -> float:
    """Mean |D| of two independent delay samples: what RFC 3550 jitter converges to (seconds).

    normal σ: D ~ N(0, 2σ²) -> E|D| = 2σ/√π; uniform ±a: D is triangular on [-2a, 2a] -> E|D| = 2a/3.
    """
    if d.jitter <= 0:
        return 0.0
    if d.jitter_distribution == "uniform":
        return 2 * d.jitter / 3
    return 2 * d.jitter / math.sqrt(math.pi)


def loss_probability(d: ResolvedDirection) -> float:
    return 0.0 if d.loss is None else d.loss.mean_loss()


def binomial_interval(p: float, n: int, z: float = 2.576) -> tuple[float, float]:
    """99% normal-approximation interval of the loss fraction over n packets (Wilson score)."""
    if n == 0:
        return 0.0, 1.0
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


class Prober:
    """Runs measurement programs between two nodes of a built network."""

    def __init__(self, net: EmulatedNetwork, workdir: Path, seed: int):
        self.net = net
        self.workdir = workdir
        self.seed = seed
        self.count = 0
        workdir.mkdir(parents=True, exist_ok=True)

    def _role(self, node: str, role: str, name: str, args: dict[str, Any]) -> tuple[subprocess.Popen, Path]:
        self.count += 1
        tag = f"{name}-{self.count}"
        events = self.workdir / f"{tag}.jsonl"
        cfg = {"node": node, "proc": tag, "role": role, "events": str(events),
               "seed": derived_seed(self.seed, "calibrate", tag), "hosts": {}, **child_args(role, args)}
        cfg_path = self.workdir / f"{tag}.json"
        cfg_path.write_text(json.dumps(cfg))
        err = open(self.workdir / f"{tag}.err", "w")  # noqa: SIM115 - child owns it
        proc = self.net.popen(node, [sys.executable, "-m", ROLE_MODULES[role], "--config", str(cfg_path)],
                              label=f"calibrate:{tag}", stdout=err, stderr=err)
        err.close()
        return proc, events

    def udp_probes(self, flows: list[dict[str, Any]], port: int = 47001) -> list[dict[str, Any]]:
        """Run several probe flows at once; each flow is {src, dst, dst_ip, pps, seconds, size?}.

        Returns, per flow, {"sent": n, "recv": [probe_recv records in arrival order]}.
        """
        started = []
        for f in flows:
            sink, sink_events = self._role(f["dst"], "probe_sink", "sink", {"port": port})
            started.append((f, sink, sink_events))
        time.sleep(0.3)
        senders = []
        for f, _sink, _events in started:
            sender, send_events = self._role(f["src"], "probe_sender", "send",
                                             {"dst": f["dst_ip"], "port": port, "rate_pps": f["pps"],
                                              "size": f.get("size", 200), "duration": f["seconds"], "flow": "cal"})
            senders.append((sender, send_events))
        for sender, _ in senders:
            sender.wait(timeout=max(f["seconds"] for f in flows) + 60)
        time.sleep(1.0)  # let the last packets cross the delayed directions
        out = []
        for (_f, sink, sink_events), (_sender, send_events) in zip(started, senders, strict=True):
            sink.send_signal(signal.SIGTERM)
            sink.wait(timeout=10)
            recv = [r for r in _read(sink_events) if r.get("event") == "probe_recv"]
            sent = sum(1 for r in _read(send_events) if r.get("event") == "probe_send")
            out.append({"sent": sent, "recv": recv})
        return out

    def udp_probe(self, src: str, dst: str, dst_ip: str, pps: float, seconds: float,
                  size: int = 200) -> dict[str, Any]:
        """One probe flow: {"sent": n, "recv": [...]}."""
        return self.udp_probes([{"src": src, "dst": dst, "dst_ip": dst_ip, "pps": pps, "seconds": seconds,
                                 "size": size}])[0]

    def iperf3(self, src: str, dst: str, dst_ip: str, seconds: float, udp_rate: float | None = None,
               port: int = 47002, reverse: bool = False, length: int | None = None) -> float | None:
        """Received bit/s of an iperf3 test from src to dst (TCP, or UDP at ``udp_rate``).

        ``reverse``: the client still runs in ``src`` (so it works from behind a NAT) but data flows dst -> src.
        """
        server = self.net.popen(dst, ["iperf3", "-s", "-1", "-p", str(port)], label="calibrate:iperf3-server",
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)
        argv = ["iperf3", "-c", dst_ip, "-p", str(port), "-t", str(seconds), "-J", "-O", "1"]
        if udp_rate is not None:
            argv += ["-u", "-b", str(int(udp_rate)), "-l", str(length or 1200)]
        elif length is not None:
            argv += ["-M", str(length)]
        if reverse:
            argv += ["-R"]
        client = self.net.popen(src, argv, label="calibrate:iperf3-client", stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        try:
            out, _ = client.communicate(timeout=seconds + 30)
        finally:
            if server.poll() is None:
                server.kill()
            server.wait()
        try:
            end = json.loads(out)["end"]
        except (ValueError, KeyError):
            return None
        s = end.get("sum_received") or (end.get("sum") if udp_rate is not None else None)
        return float(s["bits_per_second"]) if s else None


def _read(path: Path) -> list[dict[str, Any]]:
    out = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def _rfc3550(recv: list[dict[str, Any]]) -> float:
    j = 0.0
    for prev, cur in zip(recv, recv[1:], strict=False):
        d = (cur["t"] - prev["t"]) - (cur["sent"] - prev["sent"])
        j += (abs(d) - j) / 16
    return j


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q * (len(s) - 1)))))]


def measure_direction(prober: Prober, link: str, direction: str, d: ResolvedDirection, src: Endpoint,
                      dst: Endpoint, loss_packets: int = 2000, seconds: float = 5.0) -> list[Check]:
    """Every check of one direction (src -> dst are the two ends of the link, one hop apart)."""
    checks: list[Check] = []
    dst_ip = str(dst.ip.ip)  # type: ignore[union-attr]
    size = 200
    ser = size + 28 + 14  # bytes on the wire per probe (IP+UDP+Ethernet)
    tx = 0.0 if d.rate is None else ser * 8 / d.rate
    # delay and jitter: 20 packets/s
    recv = prober.udp_probe(src.node, dst.node, dst_ip, pps=20, seconds=seconds, size=size)["recv"]
    if recv:
        owd = [(r["t"] - r["sent"]) for r in recv]
        med = _pct(owd, 0.5)
        expected = d.delay + tx  # at 20 packets/s FIFO clamping of jitter moves the median by far less than 1 ms
        tol = 0.001 if d.jitter == 0 else max(0.001, 0.25 * d.jitter)
        checks.append(Check(link, direction, "delay p50", f"{d.delay * 1000:g} ms", expected * 1000, med * 1000,
                            (expected - tol) * 1000, (expected + tol) * 1000, "ms"))
        checks.append(Check(link, direction, "delay p95", f"{d.delay * 1000:g} ms", None, _pct(owd, 0.95) * 1000,
                            None, None, "ms", "reported"))
        ej = expected_rfc3550_jitter(d)
        mj = _rfc3550(recv)
        if ej > 0:
            checks.append(Check(link, direction, "jitter (RFC 3550)", f"{d.jitter * 1000:g} ms {d.jitter_distribution}",
                                ej * 1000, mj * 1000, 0.75 * ej * 1000, 1.25 * ej * 1000, "ms"))
        else:
            checks.append(Check(link, direction, "jitter (RFC 3550)", "0 ms", 0.0, mj * 1000, None, 0.5, "ms"))
    else:
        checks.append(Check(link, direction, "delay p50", f"{d.delay * 1000:g} ms", d.delay * 1000, None, None, None,
                            "ms", "no probe arrived"))
    # loss: denser probe
    p = loss_probability(d)
    pps = min(1000.0, loss_packets / seconds)
    if d.rate is not None:
        pps = min(pps, 0.5 * d.rate / (ser * 8))
    rec = prober.udp_probe(src.node, dst.node, dst_ip, pps=pps, seconds=max(seconds, loss_packets / pps), size=size)
    sent = rec["sent"]
    got = len({r["seq"] for r in rec["recv"]})
    if sent:
        lo, hi = binomial_interval(p, sent)
        checks.append(Check(link, direction, "loss", f"{p * 100:g} %", p * 100, (1 - got / sent) * 100,
                            lo * 100, hi * 100, "%", f"{sent} packets, 99% binomial interval"))
    # throughput
    if d.rate is not None:
        tcp = prober.iperf3(src.node, dst.node, dst_ip, seconds=seconds)
        checks.append(Check(link, direction, "TCP goodput", f"{d.rate / 1e6:g} Mbit/s", d.rate / 1e6,
                            None if tcp is None else tcp / 1e6, 0.85 * d.rate / 1e6, d.rate / 1e6, "Mbit/s",
                            "" if p == 0 and d.delay < 0.1 else "loss/delay lower TCP goodput; see note"))
        udp = prober.iperf3(src.node, dst.node, dst_ip, seconds=seconds, udp_rate=d.rate * 0.9)
        checks.append(Check(link, direction, "UDP throughput @90%", f"{d.rate / 1e6:g} Mbit/s",
                            0.9 * d.rate * (1 - p) / 1e6, None if udp is None else udp / 1e6,
                            0.85 * 0.9 * d.rate * (1 - p) / 1e6, 1.02 * 0.9 * d.rate / 1e6, "Mbit/s"))
    return checks


def calibrate_network(net: EmulatedNetwork, bundle: Path, seed: int,
                      phase: Any = lambda _m: None) -> list[Check]:
    """Measure every shaped or impaired direction; write calibration.csv; return the checks."""
    prober = Prober(net, bundle / "calibration", seed)
    checks: list[Check] = []
    for lp in net.plan.links:
        for direction, d in (("a_to_b", lp.a_to_b), ("b_to_a", lp.b_to_a)):
            if d.rate is None and not d.impaired:
                continue
            src, dst = (lp.a, lp.b) if direction == "a_to_b" else (lp.b, lp.a)
            label = f"{src.node}->{dst.node}"
            if src.ip is None or dst.ip is None:
                checks.append(Check(lp.name, label, "all", "", None, None, None, None, "",
                                    "switch port: not measured (no namespace on a bridge)"))
                continue
            phase(f"calibrate {lp.name} {label}")
            checks.extend(measure_direction(prober, lp.name, label, d, src, dst))
    with open(bundle / "calibration.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["link", "direction", "figure", "configured", "expected", "measured", "low", "high", "unit",
                    "verdict", "note"])
        for c in checks:
            w.writerow([c.link, c.direction, c.figure, c.configured, _fmt(c.expected), _fmt(c.measured),
                        _fmt(c.low), _fmt(c.high), c.unit, c.verdict, c.note])
    return checks


def _fmt(x: float | None) -> str:
    return "" if x is None else f"{x:.4g}"
