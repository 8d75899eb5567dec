"""streambed's loss, RFC 3550 jitter and one-way delay against independent tools: iperf3 3.12 and MGEN 5.

One run of the library scenario ``crosscheck`` (scenarios/library/crosscheck.yaml): three concurrent 2 Mbit/s
UDP flows with 250-byte payloads (1000 packets/s, 70 s, about 70,000 packets each) from h1 to h2 over one
path whose r1 -> h2 direction has 30 ms delay, 5 ms jitter and 2 % loss: streambed's probe, iperf3 and MGEN.
``analysis.crosscheck`` puts the figures side by side. Acceptance, with the thresholds of the brief:

1. Loss: streambed's loss equals iperf3's and the MGEN-derived loss within 0.3 percentage points.
2. Jitter: streambed's RFC 3550 jitter is within 10 % of iperf3's (and of the MGEN-derived one).
3. Delay: streambed's mean one-way delay is within 1 ms of the MGEN-derived mean delay.

How the statistics were made honest (nothing was loosened; where the literal comparison could not hold, the
run or the estimator was changed, and each choice is checked or printed):

- Different flows see different random loss draws. At 2 % loss one flow of n packets has a standard deviation
  of sqrt(0.02 * 0.98 / n); two independent flows differ by sqrt(2) times that. With the suggested 1000-byte
  packets at 250/s for 30 s (7,500 packets) that is 0.23 points, so a 0.3-point test would fail about one
  run in five for no fault of the code. The scenario therefore sends 250-byte packets (still 2 Mbit/s) for
  70 s: 0.075 points between two flows, so 0.3 points is a 4-sigma test. The test asserts, from the actual
  packet counts, that 0.3 points is at least 3.5 sigma (so a shortened scenario fails loudly, not randomly).
- Loss is also checked on the same packets, exactly: the delay line counts every packet it drops, every
  flow crosses that one lossy direction, so the losses the three tools count must add up to the delay line's
  count (a few packets of slack: iperf3's TCP control segments share the queue, and iperf3 stops counting
  when its end-of-test message arrives, which with reordering can overtake its last datagrams).
- RFC 3550 jitter J is an exponential average over ~16 packets: its value after the last packet is one
  noisy sample (about 10-15 % spread between flows of the same path), so "final J within 10 %" between two
  different flows fails often whatever the code does. The test compares the per-second mean of J (iperf3
  reports the receiver's J at the end of every 1 s interval; streambed's and MGEN's J series are sampled
  the same way). Final J values are printed, not asserted.
- The link lets jitter reorder packets (``reorder: true``). With the default FIFO jitter and packets 1 ms
  apart the delay line releases packets in bunches and J mostly measures each sender's own packet gaps:
  MGEN and iperf3 pace evenly, the probe sender (asyncio timers) sends pairs, and its J came out 10-15 %
  lower than iperf3's on identical links. With independent per-packet delays J is a property of the path
  (about 2 sigma / sqrt(pi) = 5.6 ms here) whatever the pacing, which is what a cross-check of the metric
  code needs.
- The metric code itself is also checked on identical input: streambed's analysis (analysis.flows) run on
  MGEN's own packets must give the same loss, jitter and delay as analysis.crosscheck's independent
  implementation over MGEN's log (to 1e-6).
- Every sender stops 5 s before the run ends, so nothing is in flight when the receivers are stopped.

The jitter and delay comparisons assume a machine that is not overloaded: streambed's probe sink stamps
arrivals in a Python process, which falls behind sooner than MGEN or iperf3 (C) when other work takes the
CPUs (e.g. other emulation runs with real-time delay lines). A failure then shows as a long delay tail on
streambed's side only; the test prints that diagnosis and the load average with the failure.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from analysis.crosscheck import (
    analyse_crosscheck,
    crosscheck_table,
    format_crosscheck,
    loss_accounting,
    parse_mgen_log,
    tod_to_epoch,
)
from analysis.events import load_events
from analysis.flows import analyse_flows
from scenarios.run import RunOptions, run_scenario
from tests.conftest import REPO

SCENARIO = REPO / "scenarios" / "library" / "crosscheck.yaml"

LOSS_PP = 0.3
"""Largest loss difference between streambed and a tool, percentage points."""
JITTER_REL = 0.10
"""Largest relative jitter difference."""
DELAY_MS = 1.0
"""Largest mean one-way delay difference, ms."""
MIN_SIGMAS = 3.5
"""LOSS_PP must be at least this many standard deviations of the loss difference of two flows."""
ACCOUNTING_SLACK = 20
"""Packets by which the tools' summed losses may differ from the delay line's drops (see the docstring)."""
SAME_PACKETS_TOL = 1e-6
"""streambed's analysis vs the independent implementation on MGEN's packets (%, ms)."""


def _one(table: pd.DataFrame, tool: str) -> dict[str, Any]:
    rows = table.loc[table["tool"] == tool]
    assert len(rows) == 1, f"expected one {tool} row, found {len(rows)}:\n{format_crosscheck(table)}"
    return rows.iloc[0].to_dict()


def _f(value: Any) -> float:
    number = float(value)
    assert math.isfinite(number), f"missing figure: {value!r}"
    return number


@pytest.mark.slow
def test_crosscheck_against_iperf3_and_mgen(results_dir, no_leftovers) -> None:
    outcome = run_scenario(SCENARIO, RunOptions(results=results_dir))
    assert outcome.status == "completed", outcome.error
    assert not outcome.crashes, outcome.crashes

    cc = analyse_crosscheck(outcome.bundle)
    print(f"\nbundle {outcome.bundle}")
    print(format_crosscheck(cc.table))
    for problem in cc.problems:
        print(f"problem: {problem}")
    probe, iperf, mgen = (_one(cc.table, t) for t in ("streambed", "iperf3", "mgen"))
    assert "receiver" in str(iperf["source"]), iperf["source"]

    failures: list[str] = []

    def check(name: str, ok: bool, detail: str) -> None:
        print(f"  {'ok  ' if ok else 'FAIL'} {name}: {detail}")
        if not ok:
            failures.append(f"{name}: {detail}")

    print("same packets: streambed's analysis vs the independent implementation, on MGEN's log")
    for key in ("loss_pct", "loss_rfc3550_pct", "jitter_ms", "jitter_mean_ms", "delay_mean_ms"):
        ours, theirs = _f(mgen[f"ours_{key}"]), _f(mgen[key])
        check(f"MGEN packets {key}", abs(ours - theirs) <= SAME_PACKETS_TOL,
              f"streambed {ours:.9f} vs independent {theirs:.9f}")

    print("loss (different flows, same path, same seconds)")
    p_loss, i_loss, m_loss = _f(probe["loss_pct"]), _f(iperf["loss_pct"]), _f(mgen["loss_pct"])
    p = p_loss / 100.0
    for name, other, n_other in (("iperf3", i_loss, _f(iperf["sent"])), ("MGEN", m_loss, _f(mgen["sent"]))):
        sigma_pp = 100.0 * math.sqrt(p * (1 - p) * (1 / _f(probe["sent"]) + 1 / n_other))
        check(f"enough packets for a {LOSS_PP} pp test vs {name}", MIN_SIGMAS * sigma_pp <= LOSS_PP,
              f"sigma of the difference {sigma_pp:.3f} pp -> {LOSS_PP / sigma_pp:.1f} sigma")
        check(f"loss streambed vs {name}", abs(p_loss - other) <= LOSS_PP,
              f"{p_loss:.3f}% vs {other:.3f}% (difference {p_loss - other:+.3f} pp = "
              f"{(p_loss - other) / sigma_pp:+.1f} sigma)")

    acc = loss_accounting(cc)
    if acc["link_dropped"] is None:
        print("  (no delay-line statistics: the same-packet loss accounting is skipped)")
    else:
        check("loss accounting: tools' lost packets vs delay-line drops",
              abs(acc["difference"]) <= ACCOUNTING_SLACK,
              f"{acc['tools_lost']:.0f} counted ({', '.join(f'{k} {v:.0f}' for k, v in acc['by_flow'].items())})"
              f" vs {acc['link_dropped']} dropped, difference {acc['difference']:+.0f}")

    print("jitter (RFC 3550 J, per-second mean; final J printed for information)")
    p_j, i_j, m_j = _f(probe["jitter_mean_ms"]), _f(iperf["jitter_mean_ms"]), _f(mgen["jitter_mean_ms"])
    check("jitter streambed vs iperf3", abs(p_j - i_j) <= JITTER_REL * i_j,
          f"{p_j:.3f} ms vs {i_j:.3f} ms ({100 * (p_j - i_j) / i_j:+.1f}%)")
    check("jitter streambed vs MGEN", abs(p_j - m_j) <= JITTER_REL * m_j,
          f"{p_j:.3f} ms vs {m_j:.3f} ms ({100 * (p_j - m_j) / m_j:+.1f}%)")
    print(f"  info final J: streambed {_f(probe['jitter_ms']):.3f} ms, iperf3 {_f(iperf['jitter_ms']):.3f} ms, "
          f"MGEN {_f(mgen['jitter_ms']):.3f} ms")

    print("one-way delay (mean)")
    p_d, m_d = _f(probe["delay_mean_ms"]), _f(mgen["delay_mean_ms"])
    check("delay streambed vs MGEN", abs(p_d - m_d) <= DELAY_MS, f"{p_d:.3f} ms vs {m_d:.3f} ms ({p_d - m_d:+.3f})")

    load = os.getloadavg()
    print(f"  info load average now {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs")
    if failures:
        # Evidence to tell a metric error from a starved receiver: the probe's timestamps are taken in a
        # Python process, so on an overloaded machine its delay tail grows while MGEN's (C) does not.
        flows = analyse_flows(load_events(outcome.bundle).frame)
        pk = flows.packets.get(str(probe["flow"]))
        mg = cc.mgen_packets.get(str(mgen["flow"]))
        if pk is not None and mg is not None and len(pk) and len(mg):
            md = 1000.0 * (mg["recv"] - mg["sent"])
            failures.append(
                f"diagnosis: delay p50/p99/max streambed {pk['delay_ms'].quantile(0.5):.1f}/"
                f"{pk['delay_ms'].quantile(0.99):.1f}/{pk['delay_ms'].max():.1f} ms, MGEN {md.quantile(0.5):.1f}/"
                f"{md.quantile(0.99):.1f}/{md.max():.1f} ms; load average {load[0]:.2f} (a long streambed-only "
                "tail means the probe sink was starved of CPU, e.g. by other runs on this machine)")

    assert not failures, "cross-check failed:\n" + "\n".join(failures)


# --------------------------------------------------------------------------------------------------
# The parsers on hand-made bundles: midnight, garbled and missing content (no network needed)
# --------------------------------------------------------------------------------------------------

MIDNIGHT = 1795392000.0  # 2026-11-23 00:00:00 UTC


def _tod(epoch: float) -> str:
    s = epoch % 86400
    return f"{int(s // 3600):02d}:{int(s % 3600 // 60):02d}:{s % 60:09.6f}"


def _write_mgen_bundle(bundle: Path, lost: set[int], garble: bool) -> None:
    """A sender and a receiver MGEN log around midnight: 200 packets, 10 ms apart, 30 ms + 0..2 ms delay."""
    events = bundle / "events"
    events.mkdir(parents=True)
    t0 = MIDNIGHT - 1.0
    send = [f"{_tod(t0 - 0.01)} START Mgen Version 5.02b", f"{_tod(t0)} ON flow>1 srcPort>0 dst>10.0.0.2/5002 "]
    recv = [f"{_tod(t0 - 0.5)} START Mgen Version 5.02b", f"{_tod(t0 - 0.5)} LISTEN proto>UDP port>5002"]
    for seq in range(200):
        ts = t0 + 0.01 * seq
        send.append(f"{_tod(ts)} SEND proto>UDP flow>1 seq>{seq} srcPort>4000 dst>10.0.0.2/5002 size>250 ")
        if seq in lost:
            continue
        tr = ts + 0.030 + 0.002 * (seq % 2)
        recv.append(f"{_tod(tr)} RECV proto>UDP flow>1 seq>{seq} src>10.0.0.1/4000 dst>10.0.0.2/5002 "
                    f"sent>{_tod(ts)} size>250 gps>INVALID,999.000000,999.000000,4294966297 ")
        if garble and seq == 50:
            recv.append("00:00:0x RECV proto>UDP flow>1 seq>oops")
            recv.append("\x00\x01 binary junk")
    if garble:
        recv.append(f"{_tod(t0 + 2.1)} RECV proto>UDP flow>1 seq>1")  # truncated last line (no sent>)
    (events / "h1.tx.mgen.log").write_text("\n".join(send) + "\n")
    (events / "h2.rx.mgen.log").write_text("\n".join(recv) + "\n")
    start = {"node": "h1", "role": "mgen", "proc": "tx", "event": "mgen_start", "mode": "sender",
             "log": "h1.tx.mgen.log", "dst": "10.0.0.2", "port": 5002, "flow": 1, "rate_pps": 100, "size": 250,
             "t": t0 - 0.02}
    (events / "h1.tx.jsonl").write_text(json.dumps(start) + "\n")
    rstart = {"node": "h2", "role": "mgen", "proc": "rx", "event": "mgen_start", "mode": "receiver",
              "log": "h2.rx.mgen.log", "port": 5002, "t": t0 - 0.5}
    (events / "h2.rx.jsonl").write_text(json.dumps(rstart) + "\n")


def test_tod_to_epoch_across_midnight() -> None:
    ref = MIDNIGHT - 0.5
    got = tod_to_epoch([86399.9, 0.1, 50000.0], ref)
    assert got[0] == pytest.approx(MIDNIGHT - 0.1)
    assert got[1] == pytest.approx(MIDNIGHT + 0.1)
    assert got[2] == pytest.approx(MIDNIGHT - 86400 + 50000.0)  # 10 h before, not 14 h after


def test_mgen_logs_around_midnight(tmp_path: Path) -> None:
    lost = {3, 77, 150}
    _write_mgen_bundle(tmp_path, lost, garble=False)
    frame, problems = parse_mgen_log(tmp_path / "events" / "h2.rx.mgen.log", MIDNIGHT - 1.5)
    assert not problems
    assert len(frame) == 197
    delays = (frame["recv"] - frame["sent"]).to_numpy()
    assert delays.min() == pytest.approx(0.030, abs=2e-6) and delays.max() == pytest.approx(0.032, abs=2e-6)
    cc = analyse_crosscheck(tmp_path)
    row = cc.table.loc[cc.table["tool"] == "mgen"].iloc[0]
    assert row["flow"] == "mgen:h1.tx" and row["src"] == "h1" and row["dst"] == "h2"
    assert row["sent"] == 200 and row["received"] == 197 and row["lost"] == 3
    assert row["loss_pct"] == pytest.approx(1.5) and row["ours_loss_pct"] == pytest.approx(1.5)
    assert row["delay_mean_ms"] == pytest.approx(31.0, abs=0.05)
    assert row["ours_delay_mean_ms"] == pytest.approx(row["delay_mean_ms"], abs=1e-9)
    assert row["jitter_ms"] == pytest.approx(row["ours_jitter_ms"], abs=1e-9)
    assert row["jitter_ms"] > 1.0  # |D| alternates 2 ms (and 0 around the lost packets)


def test_bad_content_is_reported_not_raised(tmp_path: Path) -> None:
    _write_mgen_bundle(tmp_path, {10}, garble=True)
    events = tmp_path / "events"
    (events / "h1.ip.iperf3.json").write_text('{"start": {"connecting_to": {"host": "10.0.0.2", "port": 5201}, ')
    (events / "h2.ips.iperf3.json").write_text("[1, 2, {\"error\": \"unable to connect\"}]")
    (events / "h2.other.mgen.log").write_bytes(b"\xff\xfe garbage\n12:00:00.000000 RECV flow>x\n")
    (events / "h2.sink.jsonl").write_text('{"t": 1, "event": "probe_recv", "flow": "f", "seq": "x"}\n{"t":')
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "delayline-h2.json").write_text("{not json")
    cc = analyse_crosscheck(tmp_path)
    text = "\n".join(cc.problems)
    assert "garbled RECV" in text and "h1.ip.iperf3.json" in text
    row = cc.table.loc[cc.table["flow"] == "mgen:h1.tx"].iloc[0]
    assert row["received"] == 199 and row["sent"] == 200
    assert cc.link_drops == {}
    assert isinstance(crosscheck_table(tmp_path / "does-not-exist"), pd.DataFrame)
    print(format_crosscheck(cc.table))
