"""Throughput/accuracy benchmark of the delay line, plus the namespace and UDP-traffic helpers its tests use.

``python -m topologies.impair.bench_delayline`` builds two namespaces joined by a veth pair, delays one
direction by 20 ms through the delay line and steps the offered UDP packet rate up (~5 s per step). Each
datagram carries its sequence number and send time; the receiver takes the kernel receive timestamp
(SO_TIMESTAMPNS, the same CLOCK_REALTIME as the sender), so one-way delay is exact. Printed per step:
offered pps, delivered pps, unintended loss %, delay error p50/p99 (ms), delay-line CPU %. Everything
created (namespaces, veths, rules, processes) is removed at the end.

The sender and receiver roles are this module's hidden sub-commands ``_send`` / ``_recv``, run inside a
namespace with ``ip netns exec``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from topologies.impair import nfqueue_rules

NS_PREFIX = "sbt-"
_HDR = struct.Struct("!QQ")  # sequence number, send time (ns, CLOCK_REALTIME)
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)


# ----------------------------------------------------------------------------------------------------
# namespaces
# ----------------------------------------------------------------------------------------------------
def sh(argv: list[str], check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run a command, capture its output; raise with its stderr if it fails and ``check``."""
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


def nsx(ns: str, argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command inside namespace ``ns``."""
    return sh(["ip", "netns", "exec", ns, *argv], check=check)


@dataclass
class NsPair:
    """Two namespaces joined by one veth: a (ip_a on if_a) <-> b (ip_b on if_b)."""

    a: str
    b: str
    if_a: str
    if_b: str
    ip_a: str
    ip_b: str


@contextlib.contextmanager
def ns_pair() -> Iterator[NsPair]:
    """Create ``sbt-<random>-a`` / ``-b`` with a veth between them; both are deleted on exit."""
    tag = secrets.token_hex(3)
    pair = NsPair(a=f"{NS_PREFIX}{tag}-a", b=f"{NS_PREFIX}{tag}-b", if_a=f"sbt{tag}a", if_b=f"sbt{tag}b",
                  ip_a="10.201.0.1", ip_b="10.201.0.2")
    made: list[str] = []
    try:
        for ns in (pair.a, pair.b):
            sh(["ip", "netns", "add", ns])
            made.append(ns)
        sh(["ip", "link", "add", pair.if_a, "netns", pair.a, "type", "veth", "peer", "name", pair.if_b,
            "netns", pair.b])
        for ns, ifname, ip in ((pair.a, pair.if_a, pair.ip_a), (pair.b, pair.if_b, pair.ip_b)):
            nsx(ns, ["ip", "link", "set", "lo", "up"])
            nsx(ns, ["ip", "addr", "add", f"{ip}/24", "dev", ifname])
            nsx(ns, ["ip", "link", "set", ifname, "up"])
        # static neighbours: no ARP round trip at the start of a measurement
        mac_a = nsx(pair.a, ["cat", f"/sys/class/net/{pair.if_a}/address"]).stdout.strip()
        mac_b = nsx(pair.b, ["cat", f"/sys/class/net/{pair.if_b}/address"]).stdout.strip()
        neighbours = ((pair.a, pair.ip_b, mac_b, pair.if_a), (pair.b, pair.ip_a, mac_a, pair.if_b))
        for ns, ip, mac, ifname in neighbours:
            nsx(ns, ["ip", "neigh", "replace", ip, "lladdr", mac, "dev", ifname, "nud", "permanent"])
        yield pair
    finally:
        for ns in made:
            sh(["ip", "netns", "del", ns], check=False)  # takes the veth and the ns's rules with it


@contextlib.contextmanager
def steered(ns: str, direction: nfqueue_rules.Direction, interface: str, queue_num: int) -> Iterator[None]:
    """Install one NFQUEUE steering rule inside ``ns`` for the duration of the block."""
    nsx(ns, nfqueue_rules.steer_argv(direction, interface, queue_num, "-A"))
    try:
        yield
    finally:
        nsx(ns, nfqueue_rules.steer_argv(direction, interface, queue_num, "-D"), check=False)


# ----------------------------------------------------------------------------------------------------
# the delay line process
# ----------------------------------------------------------------------------------------------------
class DelayLineProc:
    """A delay line started inside a namespace with ``ip netns exec`` (config file in ``workdir``)."""

    def __init__(self, ns: str, queues: list[dict[str, Any]], workdir: Path, **extra: Any) -> None:
        self.ns = ns
        self.workdir = workdir
        tag = secrets.token_hex(3)
        self.config_path = workdir / f"delayline-{tag}.json"
        self.stats_path = workdir / f"delayline-{tag}.stats.json"
        self.ready_path = workdir / f"delayline-{tag}.ready"
        self.stderr_path = workdir / f"delayline-{tag}.stderr"
        self.config: dict[str, Any] = {"queues": queues, "stats_file": str(self.stats_path),
                                       "ready_file": str(self.ready_path), **extra}
        self.proc: subprocess.Popen[bytes] | None = None

    def write_config(self) -> None:
        self.config_path.write_text(json.dumps(self.config, indent=1))

    def start(self, timeout: float = 15.0) -> DelayLineProc:
        self.write_config()
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, sys.executable, "-m", "topologies.impair.delayline",
                 "--config", str(self.config_path)], stdout=subprocess.DEVNULL, stderr=err)
        end = time.monotonic() + timeout
        while not self.ready_path.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"delay line exited {self.proc.returncode}: {self.stderr()}")
            if time.monotonic() > end:
                self.kill()
                raise RuntimeError(f"delay line not ready after {timeout} s: {self.stderr()}")
            time.sleep(0.02)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text()
        except OSError:
            return ""

    def reconfigure(self, queues: list[dict[str, Any]]) -> None:
        """Rewrite the config and send SIGHUP."""
        self.config["queues"] = queues
        self.write_config()
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)

    def stats(self, refresh: bool = False, timeout: float = 5.0) -> dict[str, Any]:
        """The stats file; with ``refresh`` ask the running process for a fresh one (SIGUSR1)."""
        if refresh:
            assert self.proc is not None
            before = self.stats_path.stat().st_mtime_ns if self.stats_path.exists() else 0
            self.proc.send_signal(signal.SIGUSR1)
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                if self.stats_path.exists() and self.stats_path.stat().st_mtime_ns != before:
                    break
                time.sleep(0.01)
        return json.loads(self.stats_path.read_text())

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait; SIGKILL if it does not exit in time. Returns the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return int(self.proc.returncode)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> DelayLineProc:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ----------------------------------------------------------------------------------------------------
# traffic: sender / receiver roles and their launchers
# ----------------------------------------------------------------------------------------------------
def _role_cmd(ns: str, *args: str) -> list[str]:
    return ["ip", "netns", "exec", ns, sys.executable, "-m", "topologies.impair.bench_delayline", *args]


class Receiver:
    """A UDP receiver running in a namespace; writes (seq, one-way delay ns) pairs to ``out``.

    The receive time is the kernel's (SO_TIMESTAMPNS), taken when the packet enters the receiver's stack:
    right for delays applied before that (egress of the sender), too early for a delay on the receiver's
    own ingress (PREROUTING comes after the timestamp): pass ``kernel_clock=False`` there to use the time
    recvmsg() returns instead.
    """

    def __init__(self, ns: str, port: int, out: Path, duration: float, idle: float = 1.0,
                 expect: int = 0, kernel_clock: bool = True) -> None:
        self.out = out
        self.proc = subprocess.Popen(
            _role_cmd(ns, "_recv", "--port", str(port), "--out", str(out), "--duration", str(duration),
                      "--idle", str(idle), "--expect", str(expect), *([] if kernel_clock else ["--user-clock"])),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            self.proc.kill()
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise RuntimeError(f"receiver failed: {line} {err}")

    def result(self, timeout: float = 60.0) -> tuple[list[int], list[int]]:
        """Wait for the receiver to finish; return (sequence numbers in arrival order, delays in ns)."""
        try:
            self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            raise
        raw = array("q")
        raw.frombytes(self.out.read_bytes())
        return list(raw[0::2]), list(raw[1::2])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


def send(ns: str, dst: str, port: int, rate: float, count: int, size: int = 64,
         first_seq: int = 0) -> dict[str, Any]:
    """Send ``count`` timestamped datagrams at ``rate`` pps from namespace ``ns``; return its summary."""
    r = sh(_role_cmd(ns, "_send", "--dst", dst, "--port", str(port), "--rate", str(rate), "--count",
                     str(count), "--size", str(size), "--first-seq", str(first_seq)),
           timeout=count / rate + 60)
    if r.returncode != 0:
        raise RuntimeError(f"sender failed: {r.stderr}")
    return json.loads(r.stdout)


def _send_role(a: argparse.Namespace) -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:  # held packets stay charged to this socket: a small sndbuf would throttle the sender
        s.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 64 << 20)
    except OSError:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 << 20)
    s.connect((a.dst, a.port))
    buf = bytearray(max(a.size, _HDR.size))
    pack_into = _HDR.pack_into
    sendf = s.send
    now_ns = time.time_ns
    mono = time.monotonic
    sleep = time.sleep
    rate = float(a.rate)
    count = int(a.count)
    seq0 = int(a.first_seq)
    errors = 0
    i = 0
    start = mono()
    max_burst = max(8, int(rate * 0.002))  # a starved sender slips its schedule instead of bursting
    while i < count:
        due = min(count, int((mono() - start) * rate) + 1)
        if due - i > max_burst:
            start += (due - i - max_burst) / rate
            due = i + max_burst
        if due <= i:
            sleep(max(0.0, min(0.0002, (i + 1) / rate - (mono() - start))))
            continue
        while i < due:
            pack_into(buf, 0, seq0 + i, now_ns())
            try:
                sendf(buf)
            except OSError:
                errors += 1
            i += 1
    elapsed = mono() - start
    print(json.dumps({"sent": count - errors, "attempted": count, "errors": errors, "elapsed": elapsed,
                      "rate": count / elapsed if elapsed > 0 else 0.0}))
    return 0


def _recv_role(a: argparse.Namespace) -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
    except OSError:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 20)
    if not a.user_clock:
        s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    s.bind(("0.0.0.0", a.port))
    s.settimeout(0.1)
    print("ready", flush=True)
    out = array("q")
    append = out.append
    unpack_from = _HDR.unpack_from
    recvmsg = s.recvmsg
    cspace = socket.CMSG_SPACE(16)
    mono = time.monotonic
    deadline = mono() + a.duration
    expect = 2 * a.expect
    last = 0.0
    while True:
        try:
            data, anc, _flags, _addr = recvmsg(64, cspace)
        except TimeoutError:
            now = mono()
            if now > deadline or (last and now - last > a.idle):
                break
            continue
        last = mono()
        rx = 0
        for _lvl, typ, cd in anc:
            if typ == SO_TIMESTAMPNS:
                sec, nsec = struct.unpack("qq", cd[:16])
                rx = sec * 1_000_000_000 + nsec
        if len(data) < _HDR.size:
            continue
        seq, tx = unpack_from(data)
        append(seq)
        append((rx or time.time_ns()) - tx)
        if (expect and len(out) >= expect) or last > deadline:
            break
    Path(a.out).write_bytes(out.tobytes())
    return 0


# ----------------------------------------------------------------------------------------------------
# the benchmark
# ----------------------------------------------------------------------------------------------------
def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    ys = sorted(xs)
    return ys[min(len(ys) - 1, int(q * len(ys)))]


def bench_step(pair: NsPair, rate: int, seconds: float, delay_s: float, sched_fifo: int, direction: str,
               port: int, workdir: Path) -> dict[str, Any]:
    """One offered rate through a fresh delay line: offered/delivered pps, loss %, delay error, CPU %."""
    import psutil

    qnum = 7
    ns, ifname = (pair.a, pair.if_a) if direction == "egress" else (pair.b, pair.if_b)
    count = int(rate * seconds)
    line = DelayLineProc(ns, [{"queue_num": qnum, "direction": f"{pair.a}->{pair.b}", "delay_s": delay_s,
                               "jitter_s": 0.0, "loss": {"model": "none"}, "seed": 1}],
                         workdir, sched_fifo_priority=sched_fifo)
    with line, steered(ns, direction, ifname, qnum):  # type: ignore[arg-type]
        rx = Receiver(pair.b, port, workdir / f"rx-{rate}.bin", duration=seconds + 10, idle=1.0, expect=count)
        try:
            proc = psutil.Process(line.pid)
            c0 = proc.cpu_times()
            t0 = time.monotonic()
            tx = send(pair.a, pair.ip_b, port, rate, count)
            seqs, delays = rx.result()
            wall = time.monotonic() - t0
            c1 = proc.cpu_times()
        finally:
            rx.kill()
        rc = line.stop()
    if rc != 0:
        raise RuntimeError(f"delay line exited {rc}: {line.stderr()}")
    q = line.stats()["queues"][0]
    cpu = 100.0 * ((c1.user - c0.user) + (c1.system - c0.system)) / max(wall, 1e-9)
    delivered = len(set(seqs))
    err_ms = [d / 1e6 - delay_s * 1e3 for d in delays]
    kern = q.get("kernel") or {}
    return {
        "rate": rate,
        "offered_pps": tx["rate"],
        "delivered_pps": delivered / tx["elapsed"],
        "loss_pct": 100.0 * (count - delivered) / count,
        "p50_ms": _pct(err_ms, 0.50),
        "p99_ms": _pct(err_ms, 0.99),
        "max_ms": max(err_ms) if err_ms else float("nan"),
        "cpu_pct": cpu,
        "send_errors": tx["errors"],
        "kernel_drops": kern.get("queue_dropped", 0) + kern.get("user_dropped", 0),
        "max_held": q["max_held"],
        "dl_late_p99_ms": 1e3 * (q["lateness_p99_s"] or 0.0),
    }


def run_bench(rates: list[int], seconds: float, delay_s: float, sched_fifo: int, direction: str) -> int:
    """Step the rate up; print one row per step and the final one-line figure."""
    if os.geteuid() != 0:
        print("bench_delayline: needs root (namespaces, iptables)", file=sys.stderr)
        return 1
    best: dict[str, Any] | None = None
    fails = 0
    with tempfile.TemporaryDirectory(prefix="sbt-bench-") as tmp, ns_pair() as pair:
        workdir = Path(tmp)
        os.chmod(workdir, 0o755)
        sched = f"SCHED_FIFO {sched_fifo}" if sched_fifo else "SCHED_OTHER"
        print(f"{direction} of the {pair.a} -> {pair.b} veth delayed {delay_s * 1e3:g} ms, "
              f"{seconds:g} s per step, delay line {sched}")
        print(f"{'offered pps':>12} {'delivered pps':>14} {'loss %':>8} {'err p50 ms':>11} "
              f"{'err p99 ms':>11} {'err max ms':>11} {'DL CPU %':>9} {'DL late p99 ms':>15} "
              f"{'max held':>9} {'kern drop':>10}")
        for i, rate in enumerate(rates):
            r = bench_step(pair, rate, seconds, delay_s, sched_fifo, direction, 9000 + i, workdir)
            ok = r["loss_pct"] < 0.1 and r["p99_ms"] <= 1.0
            print(f"{r['offered_pps']:12.0f} {r['delivered_pps']:14.0f} {r['loss_pct']:8.3f} "
                  f"{r['p50_ms']:11.3f} {r['p99_ms']:11.3f} {r['max_ms']:11.3f} {r['cpu_pct']:9.1f} "
                  f"{r['dl_late_p99_ms']:15.3f} {r['max_held']:9d} {r['kernel_drops']:10d}"
                  + ("" if ok else "   <- target missed"), flush=True)
            if ok:
                best = r
                fails = 0
            else:
                fails += 1
                if fails >= 2:
                    break
    if best is None:
        print(f"sustained 0 packets/s at {delay_s * 1e3:g} ms: no step met < 0.1% loss and p99 error <= 1 ms")
        return 1
    print(f"sustained {best['delivered_pps']:.0f} packets/s at {delay_s * 1e3:g} ms, "
          f"p50 error {best['p50_ms']:.3f} ms, p99 error {best['p99_ms']:.3f} ms")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("_send", "_recv"):
        rp = argparse.ArgumentParser(prog=f"bench_delayline {argv[0]}")
        if argv[0] == "_send":
            rp.add_argument("--dst", required=True)
            rp.add_argument("--rate", type=float, required=True)
            rp.add_argument("--count", type=int, required=True)
            rp.add_argument("--size", type=int, default=64)
            rp.add_argument("--first-seq", type=int, default=0)
        else:
            rp.add_argument("--out", required=True)
            rp.add_argument("--duration", type=float, required=True)
            rp.add_argument("--idle", type=float, default=1.0)
            rp.add_argument("--expect", type=int, default=0)
            rp.add_argument("--user-clock", action="store_true", help="receive time from user space")
        rp.add_argument("--port", type=int, required=True)
        ra = rp.parse_args(argv[1:])
        return _send_role(ra) if argv[0] == "_send" else _recv_role(ra)
    ap = argparse.ArgumentParser(prog="python -m topologies.impair.bench_delayline",
                                 description="highest packet rate the delay line sustains with < 0.1% loss")
    ap.add_argument("--rates", default="5000,10000,20000,30000,40000,50000,60000",
                    help="comma-separated offered rates (pps)")
    ap.add_argument("--seconds", type=float, default=5.0, help="duration of each step")
    ap.add_argument("--delay-ms", type=float, default=20.0)
    ap.add_argument("--sched-fifo", type=int, default=10,
                    help="SCHED_FIFO priority of the delay line (0: SCHED_OTHER); 10 is its default")
    ap.add_argument("--direction", choices=["egress", "ingress"], default="egress",
                    help="steer egress of the sender's veth, or ingress of the receiver's")
    a = ap.parse_args(argv)
    rates = [int(float(x)) for x in a.rates.split(",") if x.strip()]
    return run_bench(rates, a.seconds, a.delay_ms / 1e3, a.sched_fifo, a.direction)


if __name__ == "__main__":
    sys.exit(main())
