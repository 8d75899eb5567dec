"""Tests of the NFQUEUE delay line on real namespaces: delay, jitter/reordering, loss models, SIGHUP, SIGTERM,
no silent bypass when it dies; plus the iptables argv helpers and the loss/jitter sampler."""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

if os.geteuid() != 0 or shutil.which("iptables") is None or shutil.which("ip") is None:
    reason = "delay-line tests need root, ip and iptables (network namespaces, NFQUEUE rules)"
    print(f"SKIP tests/test_delayline.py: {reason}", file=sys.stderr)
    pytest.skip(reason, allow_module_level=True)

from topologies.impair import nfqueue_rules  # noqa: E402
from topologies.impair.bench_delayline import (  # noqa: E402
    DelayLineProc,
    NsPair,
    Receiver,
    ns_pair,
    send,
    steered,
)
from topologies.impair.delayline import DelaySampler, QueueParams  # noqa: E402

_ports = itertools.count(9500)


@pytest.fixture(scope="module")
def pair() -> Iterator[NsPair]:
    with ns_pair() as p:
        yield p


@pytest.fixture
def wd(tmp_path: Path) -> Path:
    os.chmod(tmp_path, 0o755)
    return tmp_path


def queue(num: int, delay_s: float, **kw: Any) -> dict[str, Any]:
    return {"queue_num": num, "direction": f"q{num}", "delay_s": delay_s, "jitter_s": 0.0,
            "jitter_distribution": "normal", "reorder": False, "loss": {"model": "none"}, "seed": 12345} | kw


def traffic(src_ns: str, dst_ns: str, dst_ip: str, wd: Path, rate: float, count: int,
            idle: float = 0.5, kernel_clock: bool = True) -> tuple[list[int], list[float]]:
    """Send ``count`` probes src -> dst; return (sequence numbers in arrival order, one-way delays in ms).

    ``kernel_clock=False`` when the delay sits on the receiver's ingress (see ``Receiver``)."""
    port = next(_ports)
    rx = Receiver(dst_ns, port, wd / f"rx-{port}.bin", duration=count / rate + 15, idle=idle, expect=count,
                  kernel_clock=kernel_clock)
    try:
        send(src_ns, dst_ip, port, rate, count)
        seqs, delays = rx.result()
    finally:
        rx.kill()
    return seqs, [d / 1e6 for d in delays]


def inversions(seqs: list[int]) -> int:
    return sum(1 for a, b in itertools.pairwise(seqs) if b < a)


def loss_bursts(received: list[int], count: int) -> list[int]:
    got = set(received)
    runs = [len(list(g)) for lost, g in itertools.groupby(range(count), key=lambda s: s not in got) if lost]
    return runs


# ---------------------------------------------------------------------------------------------------
# pure helpers
# ---------------------------------------------------------------------------------------------------
def test_rule_argv() -> None:
    assert nfqueue_rules.egress_add("h1-eth0", 11) == [
        "iptables", "-t", "mangle", "-A", "POSTROUTING", "-o", "h1-eth0", "-j", "NFQUEUE", "--queue-num", "11"]
    assert nfqueue_rules.egress_delete("h1-eth0", 11)[3:5] == ["-D", "POSTROUTING"]
    assert nfqueue_rules.ingress_add("r1-eth1", 3) == [
        "iptables", "-t", "mangle", "-A", "PREROUTING", "-i", "r1-eth1", "-j", "NFQUEUE", "--queue-num", "3"]
    assert nfqueue_rules.ingress_delete("r1-eth1", 3, iptables="ip6tables")[:5] == [
        "ip6tables", "-t", "mangle", "-D", "PREROUTING"]
    assert "--queue-bypass" not in nfqueue_rules.egress_add("x", 1)
    with pytest.raises(ValueError):
        nfqueue_rules.egress_add("bad name", 1)
    with pytest.raises(ValueError):
        nfqueue_rules.ingress_add("eth0", 70000)


def test_sampler_reproducible_and_gilbert_statistics() -> None:
    params = QueueParams(queue_num=1, delay_s=0.02, jitter_s=0.005, seed=7,
                         loss={"model": "gilbert", "p": 0.02, "r": 0.25, "h": 0.0, "k": 1.0})
    a, b = DelaySampler(params), DelaySampler(params)
    assert a.block() == b.block()
    lost = [d < 0 for _ in range(100) for d in a.block()]
    rate = sum(lost) / len(lost)
    assert rate == pytest.approx(0.02 / 0.27, rel=0.1)
    bursts = [len(list(g)) for k, g in itertools.groupby(lost) if k]
    assert statistics.mean(bursts) == pytest.approx(1 / 0.25, rel=0.1)  # bad-state sojourn, h=0
    kept = [d for d in b.block() if d >= 0]
    assert statistics.mean(kept) == pytest.approx(0.02, abs=0.001)
    assert statistics.stdev(kept) == pytest.approx(0.005, rel=0.15)


# ---------------------------------------------------------------------------------------------------
# namespaces
# ---------------------------------------------------------------------------------------------------
def test_delay_accuracy_two_queues_and_100ms(pair: NsPair, wd: Path) -> None:
    """(a) one process, two queues: a->b egress 20 ms, b->a ingress 50 ms; then 100 ms alone."""
    line = DelayLineProc(pair.a, [queue(1, 0.020), queue(2, 0.050)], wd)
    with line, steered(pair.a, "egress", pair.if_a, 1), steered(pair.a, "ingress", pair.if_a, 2):
        _, fwd = traffic(pair.a, pair.b, pair.ip_b, wd, rate=1000, count=500)
        _, rev = traffic(pair.b, pair.a, pair.ip_a, wd, rate=1000, count=500, kernel_clock=False)
    assert len(fwd) == 500 and len(rev) == 500
    assert statistics.median(fwd) == pytest.approx(20.0, abs=1.0)
    assert statistics.median(rev) == pytest.approx(50.0, abs=1.0)
    assert min(fwd) >= 20.0 - 0.2 and min(rev) >= 50.0 - 0.2  # never released early
    stats = {q["queue_num"]: q for q in line.stats()["queues"]}
    assert stats[1]["passed"] == 500 and stats[2]["passed"] == 500

    line = DelayLineProc(pair.a, [queue(3, 0.100)], wd)
    with line, steered(pair.a, "egress", pair.if_a, 3):
        _, d100 = traffic(pair.a, pair.b, pair.ip_b, wd, rate=1000, count=500)
    assert len(d100) == 500
    assert statistics.median(d100) == pytest.approx(100.0, abs=1.0)


def test_jitter_fifo_keeps_order_reorder_reorders(pair: NsPair, wd: Path) -> None:
    """(b) normal jitter sigma 5 ms: no reordering by default, some with reorder=true."""
    results = {}
    for reorder in (False, True):
        line = DelayLineProc(pair.a, [queue(4, 0.020, jitter_s=0.005, reorder=reorder)], wd)
        with line, steered(pair.a, "egress", pair.if_a, 4):
            results[reorder] = traffic(pair.a, pair.b, pair.ip_b, wd, rate=2000, count=2000)
    seqs, delays = results[False]
    assert len(seqs) == 2000
    assert inversions(seqs) == 0
    assert statistics.mean(delays) >= 20.0  # FIFO holds a packet at least until its predecessor
    seqs, delays = results[True]
    assert len(seqs) == 2000
    assert inversions(seqs) > 100
    # the median, as in the engine's delay criterion: robust to the rare late release on a busy 2-core machine
    assert statistics.median(delays) == pytest.approx(20.0, abs=1.0)
    assert statistics.stdev(delays) == pytest.approx(5.0, rel=0.15)


def test_random_loss_within_binomial_interval(pair: NsPair, wd: Path) -> None:
    """(c) Bernoulli 5 % over 20,000 packets: loss inside the 99 % binomial interval, no other loss."""
    n, p = 20_000, 0.05
    line = DelayLineProc(pair.a, [queue(5, 0.001, loss={"model": "random", "p": p})], wd)
    with line, steered(pair.a, "egress", pair.if_a, 5):
        seqs, _ = traffic(pair.a, pair.b, pair.ip_b, wd, rate=10_000, count=n)
    lost = n - len(set(seqs))
    half = 2.576 * math.sqrt(n * p * (1 - p))
    assert n * p - half <= lost <= n * p + half
    q = line.stats()["queues"][0]
    assert q["seen"] == n and q["dropped_by_loss"] == lost and q["passed"] == n - lost


def test_gilbert_elliott_bursts(pair: NsPair, wd: Path) -> None:
    """(d) p=0.02, r=0.25, h=0, k=1: mean loss ~ p/(p+r), bursts longer than random loss of the same mean."""
    n = 20_000
    ge = {"model": "gilbert", "p": 0.02, "r": 0.25, "h": 0.0, "k": 1.0}
    mean = 0.02 / 0.27
    received = {}
    for name, loss in (("gilbert", ge), ("random", {"model": "random", "p": mean})):
        line = DelayLineProc(pair.a, [queue(6, 0.001, loss=loss, seed=99)], wd)
        with line, steered(pair.a, "egress", pair.if_a, 6):
            received[name], _ = traffic(pair.a, pair.b, pair.ip_b, wd, rate=10_000, count=n)
        q = line.stats()["queues"][0]
        assert q["seen"] == n and q["dropped_by_loss"] == n - len(set(received[name]))
    g_lost = n - len(set(received["gilbert"]))
    assert g_lost / n == pytest.approx(mean, rel=0.25)
    g_bursts = loss_bursts(received["gilbert"], n)
    r_bursts = loss_bursts(received["random"], n)
    assert statistics.mean(g_bursts) > 2.5  # expected 1/r = 4
    assert statistics.mean(g_bursts) > 2 * statistics.mean(r_bursts)  # random: ~1.08


def test_sighup_changes_delay(pair: NsPair, wd: Path) -> None:
    """(e) SIGHUP re-reads the config: 20 ms, then 60 ms."""
    line = DelayLineProc(pair.a, [queue(7, 0.020)], wd)
    with line, steered(pair.a, "egress", pair.if_a, 7):
        _, before = traffic(pair.a, pair.b, pair.ip_b, wd, rate=1000, count=300)
        line.reconfigure([queue(7, 0.060)])
        line.stats(refresh=True)  # SIGHUP and SIGUSR1 are handled in order: the reload is done
        _, after = traffic(pair.a, pair.b, pair.ip_b, wd, rate=1000, count=300)
    assert statistics.median(before) == pytest.approx(20.0, abs=1.0)
    assert statistics.median(after) == pytest.approx(60.0, abs=1.0)
    assert line.stats()["queues"][0]["delay_s"] == 0.060


def test_sigterm_accepts_everything_held(pair: NsPair, wd: Path) -> None:
    """(f) SIGTERM with 200 packets held (5 s delay): all delivered at once, stats written, exit 0."""
    port = next(_ports)
    line = DelayLineProc(pair.a, [queue(8, 5.0)], wd)
    with steered(pair.a, "egress", pair.if_a, 8):
        line.start()
        rx = Receiver(pair.b, port, wd / "rx-term.bin", duration=20, idle=1.0, expect=200)
        try:
            send(pair.a, pair.ip_b, port, 1000, 200)
            held = line.stats(refresh=True)["queues"][0]
            rc = line.stop()
            seqs, delays = rx.result()
        finally:
            rx.kill()
            line.kill()
    assert held["held"] == 200 and held["passed"] == 0
    assert rc == 0
    assert sorted(seqs) == list(range(200))
    assert max(delays) / 1e9 < 4.0  # released by the shutdown, not by the 5 s timer
    q = json.loads(line.stats_path.read_text())["queues"][0]
    assert q["seen"] == 200 and q["passed"] == 200 and q["held"] == 0 and q["flushed_at_exit"] == 200


def test_killed_delay_line_blackholes_the_link(pair: NsPair, wd: Path) -> None:
    """(g) SIGKILL: no silent bypass, the link drops everything until the rule is removed."""
    line = DelayLineProc(pair.a, [queue(9, 0.005)], wd)
    with steered(pair.a, "egress", pair.if_a, 9):
        try:
            line.start()
            ok, _ = traffic(pair.a, pair.b, pair.ip_b, wd, rate=1000, count=100)
            assert proc_alive(line)
            os.kill(line.pid, signal.SIGKILL)
            line.proc.wait(5)  # type: ignore[union-attr]
            dark, _ = traffic(pair.a, pair.b, pair.ip_b, wd, rate=1000, count=100, idle=0.3)
        finally:
            line.kill()
    assert len(ok) == 100
    assert dark == []
    back, _ = traffic(pair.a, pair.b, pair.ip_b, wd, rate=1000, count=50)  # rule gone: link works
    assert len(back) == 50


def proc_alive(line: DelayLineProc) -> bool:
    return line.proc is not None and line.proc.poll() is None


def test_unbindable_queue_exits_nonzero(pair: NsPair, wd: Path) -> None:
    """A queue already bound by another delay line: exit 2 with a clear message, no ready file."""
    first = DelayLineProc(pair.a, [queue(10, 0.01)], wd)
    with first:
        second = DelayLineProc(pair.a, [queue(10, 0.01)], wd)
        with pytest.raises(RuntimeError, match="cannot bind NFQUEUE 10"):
            second.start()
        assert second.proc is not None and second.proc.returncode == 2
        assert not second.ready_path.exists()
    bad = wd / "bad.json"
    bad.write_text(json.dumps({"queues": [queue(11, -1.0)]}))
    r = subprocess.run(["ip", "netns", "exec", pair.a, sys.executable, "-m", "topologies.impair.delayline",
                        "--config", str(bad)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "delay_s" in r.stderr
