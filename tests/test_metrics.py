"""Unit tests of analysis.metrics and analysis.flows against hand-worked examples."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from analysis.flows import flow_table, format_flow_line
from analysis.metrics import (
    delay_stats,
    goodput_bps,
    peer_contribution,
    percentile,
    rfc3550_jitter,
    rtp_loss,
    savings,
    sender_loss,
    server_load,
    time_weighted_level,
    viewer_metrics,
)

# ---------------------------------------------------------------------------------------------- jitter


def test_rfc3550_jitter_hand_worked() -> None:
    # Send times S and receive times R in ms (the function is unit-agnostic); J starts at 0.
    #   i=1: D = (62-50) - (10-0) =  2  -> J = 0        + (2 - 0)/16        = 0.125
    #   i=2: D = (70-62) - (20-10) = -2 -> J = 0.125    + (2 - 0.125)/16    = 0.125 + 0.1171875 = 0.2421875
    #   i=3: D = (85-70) - (30-20) =  5 -> J = 0.2421875 + (5 - 0.2421875)/16
    #                                     = 0.2421875 + 4.7578125/16 = 0.2421875 + 0.29736328125 = 0.53955078125
    # All values are binary fractions, so the float result is exact.
    send = [0, 10, 20, 30]
    recv = [50, 62, 70, 85]
    assert rfc3550_jitter(send, recv) == 0.53955078125
    final, series = rfc3550_jitter(send, recv, series=True)
    assert final == 0.53955078125
    assert series.tolist() == [0.0, 0.125, 0.2421875, 0.53955078125]


def test_rfc3550_jitter_constant_delay_is_zero_and_short_input_is_none() -> None:
    send = np.arange(100) * 0.02
    assert rfc3550_jitter(send, send + 0.030) == pytest.approx(0.0, abs=1e-12)
    assert rfc3550_jitter([1.0], [1.5]) is None
    assert rfc3550_jitter([], []) is None
    with pytest.raises(ValueError):
        rfc3550_jitter([1.0, 2.0], [1.0])


def test_rfc3550_jitter_seconds_match_milliseconds() -> None:
    send_ms = [0, 10, 20, 30]
    recv_ms = [50, 62, 70, 85]
    j_s = rfc3550_jitter([x / 1000 for x in send_ms], [x / 1000 for x in recv_ms])
    assert j_s is not None
    assert j_s * 1000 == pytest.approx(0.53955078125, rel=1e-9)


# ------------------------------------------------------------------------------------------------ loss


def test_rtp_loss_with_reordering_and_duplicates() -> None:
    # The sender sent 0..7 (8 packets); 6 was lost, 2 arrived twice, 2 and 4 arrived late.
    # Arrival order: 0 1 3 2 2 5 4 7
    #   RFC 3550 A.3: base_seq = 0 (first received), highest = 7, expected = 7 - 0 + 1 = 8
    #                 received = 8 (duplicates count), lost = 8 - 8 = 0   <- the duplicate masks the loss
    #   unique = {0,1,2,3,4,5,7} = 7, duplicates = 8 - 7 = 1
    #   reordered: 2 arrives after 3, 4 arrives after 5 -> 2 (the second 2 is a duplicate, not counted)
    #   sender-based: 1 - 7/8 = 0.125
    stats = rtp_loss([0, 1, 3, 2, 2, 5, 4, 7])
    assert (stats.base_seq, stats.highest_seq, stats.expected) == (0, 7, 8)
    assert (stats.received, stats.lost, stats.fraction_lost) == (8, 0, 0.0)
    assert (stats.unique, stats.duplicates, stats.reordered) == (7, 1, 2)
    assert sender_loss(8, stats.unique) == 0.125


def test_rtp_loss_can_be_negative_and_handles_empty() -> None:
    # Arrival order 2 3 1 4: base_seq = 2 (first received), highest 4 -> expected 3, received 4, lost -1.
    stats = rtp_loss([2, 3, 1, 4])
    assert (stats.expected, stats.received, stats.lost) == (3, 4, -1)
    assert stats.reordered == 1
    # Plain loss: 0 1 2 4 5 -> expected 6, received 5, lost 1, fraction 1/6.
    stats = rtp_loss([0, 1, 2, 4, 5])
    assert (stats.expected, stats.lost) == (6, 1)
    assert stats.fraction_lost == pytest.approx(1 / 6)
    empty = rtp_loss([])
    assert (empty.received, empty.expected, empty.lost, empty.fraction_lost) == (0, 0, 0, None)
    assert sender_loss(None, 3) is None
    assert sender_loss(0, 0) is None


@given(st.lists(st.integers(min_value=0, max_value=50), min_size=1, max_size=200))
def test_rtp_loss_invariants(seqs: list[int]) -> None:
    stats = rtp_loss(seqs)
    assert stats.unique + stats.duplicates == stats.received == len(seqs)
    assert stats.unique == len(set(seqs))
    assert 0 <= stats.reordered <= stats.unique - 1 or stats.unique == 1 and stats.reordered == 0
    assert stats.lost == stats.expected - stats.received
    assert stats.base_seq == seqs[0]
    assert stats.highest_seq == max(seqs)


# ----------------------------------------------------------------------------------------------- delay


def test_delay_percentiles_hand_worked() -> None:
    # Sorted: 10 20 30 40 50 (n = 5). Linear interpolation at position (n-1)*q/100:
    #   p50: 4*0.50 = 2.0  -> 30
    #   p95: 4*0.95 = 3.8  -> 40 + 0.8*(50-40) = 48
    #   p99: 4*0.99 = 3.96 -> 40 + 0.96*10   = 49.6
    #   mean = 150/5 = 30
    stats = delay_stats([50, 10, 40, float("nan"), 20, 30])
    assert stats is not None
    assert stats.count == 5
    assert stats.mean == 30
    assert stats.p50 == 30
    assert stats.p95 == pytest.approx(48)
    assert stats.p99 == pytest.approx(49.6)
    assert (stats.min, stats.max) == (10, 50)
    assert delay_stats([]) is None
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([], 50) is None


def test_goodput() -> None:
    # 1000 bytes in 2 s = 8000 bit / 2 s = 4000 bit/s.
    assert goodput_bps(1000, 10.0, 12.0) == 4000.0
    assert goodput_bps(1000, 10.0, 10.0) is None
    assert goodput_bps(1000, 12.0, 10.0) is None


# ------------------------------------------------------------------------------------------ streaming


def _frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows)


def test_viewer_stall_timeline_hand_worked() -> None:
    # play_request 0, playback_start 2       -> startup latency 2 s
    # stalls 10..13 and 20..21               -> 2 stalls, 3 + 1 = 4 s stalled
    # playback_end 30                        -> play time = (30 - 2) - 4 = 24 s
    # rebuffering = 4 / (4 + 24) = 1/7
    # chunks due: 4, on time: 3              -> continuity 0.75
    # lag = due t - created: 3-1, 4-1, 5-2, 6-2 = 2, 3, 3, 4 -> mean 3, max 4
    # bytes played: on-time chunks (100 each, one late and not played) = 300; 150 from peers -> 0.5
    ev = _frame([
        {"t": 0.0, "event": "play_request"},
        {"t": 2.0, "event": "playback_start"},
        {"t": 3.0, "event": "chunk_due", "on_time": True, "bytes": 100, "created": 1.0},
        {"t": 4.0, "event": "chunk_due", "on_time": True, "bytes": 100, "created": 1.0},
        {"t": 5.0, "event": "chunk_due", "on_time": False, "bytes": 100, "created": 2.0},
        {"t": 6.0, "event": "chunk_due", "on_time": True, "bytes": 100, "created": 2.0},
        {"t": 2.5, "event": "chunk_recv", "bytes": 150, "source": "peer"},
        {"t": 2.6, "event": "chunk_recv", "bytes": 250, "source": "server"},
        {"t": 10.0, "event": "stall_start"},
        {"t": 13.0, "event": "stall_end"},
        {"t": 20.0, "event": "stall_start"},
        {"t": 21.0, "event": "stall_end"},
        {"t": 30.0, "event": "playback_end"},
    ])
    vm = viewer_metrics(ev)
    assert vm.sessions == 1
    assert vm.startup_latency_s == 2.0
    assert vm.stalls == 2
    assert vm.stall_time_s == 4.0
    assert vm.play_time_s == 24.0
    assert vm.rebuffering_ratio == pytest.approx(1 / 7)
    assert (vm.chunks_due, vm.chunks_on_time, vm.continuity_index) == (4, 3, 0.75)
    assert (vm.playback_lag_mean_s, vm.playback_lag_max_s) == (3.0, 4.0)
    assert (vm.bytes_played, vm.bytes_from_peers, vm.bytes_from_server) == (300.0, 150.0, 250.0)
    assert vm.peer_contribution == 0.5
    assert vm.session_intervals == ((0.0, 30.0),)


def test_viewer_two_sessions_and_open_stall() -> None:
    # Session 1: request 0, start 1.5 (startup 1.5), stall from 5 never ends; next request at 8 ends it:
    #            stall 5..8 = 3 s, play = (8 - 1.5) - 3 = 3.5 s
    # Session 2: request 8, start 8.5 (startup 0.5), no end event: closed at end_time 18:
    #            play = 18 - 8.5 = 9.5 s
    # rebuffering = 3 / (3 + 3.5 + 9.5) = 3/16
    ev = _frame([
        {"t": 0.0, "event": "play_request"},
        {"t": 1.5, "event": "playback_start"},
        {"t": 5.0, "event": "stall_start"},
        {"t": 8.0, "event": "play_request"},
        {"t": 8.5, "event": "playback_start"},
    ])
    vm = viewer_metrics(ev, end_time=18.0)
    assert vm.sessions == 2
    assert vm.startup_latencies_s == (1.5, 0.5)
    assert vm.startup_latency_s == 1.5
    assert vm.stalls == 1
    assert vm.stall_time_s == 3.0
    assert vm.play_time_s == 13.0
    assert vm.rebuffering_ratio == 3 / 16
    assert vm.continuity_index is None and vm.peer_contribution is None
    assert any("stalled" in n for n in vm.notes)


def test_viewer_that_never_played() -> None:
    vm = viewer_metrics(_frame([{"t": 1.0, "event": "play_request"}]), end_time=5.0)
    assert vm.sessions == 1
    assert vm.startup_latency_s is None
    assert vm.play_time_s is None and vm.rebuffering_ratio is None


def test_time_weighted_level_and_server_load() -> None:
    # Streams: a 0..10, b 5..20 over [0, 20]: level 1 on 0..5, 2 on 5..10, 1 on 10..20
    #   mean = (1*5 + 2*5 + 1*10) / 20 = 25/20 = 1.25, peak 2
    # Upload: 1000 B at t=1.0 and 3000 B at t=2.5 -> 4000 B over 20 s = 32000 bit / 20 s = 1600 bit/s mean;
    #   1 s bins: [1,2) holds 1000 B -> 8000 bit/s, [2,3) holds 3000 B -> 24000 bit/s = peak
    ev = _frame([
        {"t": 0.0, "event": "stream_start", "stream": "a", "node": "s", "proc": "srv"},
        {"t": 5.0, "event": "stream_start", "stream": "b", "node": "s", "proc": "srv"},
        {"t": 10.0, "event": "stream_end", "stream": "a", "node": "s", "proc": "srv"},
        {"t": 12.0, "event": "stream_end", "stream": "zzz", "node": "s", "proc": "srv"},  # never started
        {"t": 20.0, "event": "stream_end", "stream": "b", "node": "s", "proc": "srv"},
        {"t": 1.0, "event": "bytes_sent", "bytes": 1000, "node": "s", "proc": "srv"},
        {"t": 2.5, "event": "bytes_sent", "bytes": 3000, "node": "s", "proc": "srv"},
    ])
    load = server_load(ev)
    assert load is not None
    assert (load.start, load.end) == (0.0, 20.0)
    assert load.streams_mean == 1.25
    assert load.streams_peak == 2.0
    assert load.bytes_sent == 4000.0
    assert load.upload_bps_mean == 1600.0
    assert load.upload_bps_peak == 24000.0
    assert load.upload_bps[:3].tolist() == [0.0, 8000.0, 24000.0]
    assert server_load(_frame([{"t": 1.0, "event": "play_request"}])) is None

    level = time_weighted_level([(2.0, 1), (4.0, 1), (6.0, -2)], 0.0, 10.0)
    assert level is not None
    # 0 on 0..2, 1 on 2..4, 2 on 4..6, 0 on 6..10 -> (2 + 4) / 10 = 0.6
    assert level.mean == pytest.approx(0.6)
    assert level.peak == 2.0
    assert time_weighted_level([], 5.0, 5.0) is None


def test_savings_and_peer_contribution() -> None:
    # S = 2 streams instead of 8 for unicast: savings = 1 - 2/8 = 0.75
    assert savings(2.0, 8.0) == 0.75
    assert savings(2.0, 0.0) is None
    assert savings(None, 8.0) is None
    assert peer_contribution(300.0, 400.0) == 0.75
    assert peer_contribution(300.0, 0.0) is None
    assert peer_contribution(None, 400.0) is None


# ----------------------------------------------------------------------------------------------- flows


def _probe_events() -> pd.DataFrame:
    # Flow f1 h1 -> h2: 10 packets 0..9 sent every 10 ms from t=100; delay 20 ms, except seq 3 (+5 ms).
    # The sink receives 0 1 3 2 2 5 4 7 8 (6 and 9 lost, 2 duplicated, 2 and 4 reordered).
    rows = [{"t": 100.0, "node": "h1", "proc": "snd", "event": "probe_start", "flow": "f1", "size": 100,
             "count": 10, "file": "events/h1.snd.jsonl", "line": 1}]
    for i in range(10):
        rows.append({"t": 100 + i * 0.01, "node": "h1", "proc": "snd", "event": "probe_send", "flow": "f1",
                     "seq": i, "size": 100, "file": "events/h1.snd.jsonl", "line": i + 2})
    rows.append({"t": 100.1, "node": "h1", "proc": "snd", "event": "probe_stop", "flow": "f1", "sent": 10,
                 "file": "events/h1.snd.jsonl", "line": 12})
    arrivals = [0, 1, 3, 2, 2, 5, 4, 7, 8]
    for line, seq in enumerate(arrivals, 1):
        delay = 0.025 if seq == 3 else 0.020
        rows.append({"t": 100 + seq * 0.01 + delay + (0.001 if line == 5 else 0.0), "node": "h2",
                     "proc": "sink", "event": "probe_recv", "flow": "f1", "seq": seq,
                     "sent": 100 + seq * 0.01, "size": 100, "src": "10.0.0.1",
                     "file": "events/h2.sink.jsonl", "line": line})
    return pd.DataFrame(rows).sort_values("t", kind="stable").reset_index(drop=True)


def test_flow_table_hand_worked() -> None:
    table = flow_table(_probe_events())
    assert len(table) == 1
    row = table.iloc[0]
    assert (row["flow"], row["src"], row["dst"]) == ("f1", "h1", "h2")
    # sent 10 (probe_stop); unique received {0,1,2,3,4,5,7,8} = 8 -> loss 1 - 8/10 = 20 %
    assert (row["sent"], row["received"], row["duplicates"], row["reordered"]) == (10, 8, 1, 2)
    assert row["loss_pct"] == pytest.approx(20.0)
    # RFC 3550: base 0, highest 8 -> expected 9, received 9 (with the duplicate) -> lost 0
    assert row["lost_rfc3550"] == 0 and row["loss_rfc3550_pct"] == 0
    # Delays of first arrivals: seven at 20 ms, one (seq 3) at 25 ms -> mean 20.625, p50 20, max 25
    assert row["delay_mean_ms"] == pytest.approx(20.625)
    assert row["delay_p50_ms"] == pytest.approx(20.0)
    assert row["delay_max_ms"] == pytest.approx(25.0)
    # Jitter over first arrivals in arrival order: transit times (ms) 20 20 25 20 20 20 20 20
    #   D: 0, 5, 5, 0, 0, 0, 0 -> J = 0; 5/16 = 0.3125; 0.3125 + (5-0.3125)/16 = 0.60546875;
    #   then four decays by 15/16: 0.60546875 * (15/16)^4
    assert row["jitter_ms"] == pytest.approx(0.60546875 * (15 / 16) ** 4, rel=1e-6)
    # 800 unique bytes between first (100.02) and last (100.10) arrival: 6400 bit / 0.08 s = 80 kbit/s
    assert row["goodput_kbps"] == pytest.approx(80.0, rel=1e-6)


def test_flow_without_receiver_and_receiver_without_sender() -> None:
    ev = _probe_events()
    only_sender = ev[ev["event"] != "probe_recv"]
    row = flow_table(only_sender).iloc[0]
    assert row["received"] == 0 and row["loss_pct"] == 100.0
    assert math.isnan(row["jitter_ms"]) and math.isnan(row["delay_p50_ms"]) and row["dst"] is None
    only_recv = ev[ev["event"] == "probe_recv"]
    row = flow_table(only_recv).iloc[0]
    assert math.isnan(row["sent"]) and math.isnan(row["loss_pct"])
    assert row["received"] == 8
    assert flow_table(pd.DataFrame()).empty


def test_format_flow_line() -> None:
    row = {"entity": "f1", "flow": "f1", "src": "h1", "dst": "h2", "sent": 400, "received": 392,
           "loss_pct": 2.0, "jitter_ms": 3.14, "delay_p50_ms": 30.21, "delay_p95_ms": 38.94,
           "duplicates": 0, "reordered": 0}
    assert format_flow_line(row) == (
        "f1 h1->h2: sent 400 recv 392 loss 2.00% jitter 3.1 ms delay p50 30.2 ms p95 38.9 ms"
    )
    row.update(duplicates=1, reordered=3, jitter_ms=float("nan"))
    assert format_flow_line(pd.Series(row)).endswith("jitter n/a delay p50 30.2 ms p95 38.9 ms (1 dup, 3 reordered)")


def test_streaming_event_names_are_documented() -> None:
    from pathlib import Path

    from analysis.metrics import SERVER_EVENTS, VIEWER_EVENTS

    doc = (Path(__file__).resolve().parents[1] / "docs" / "bundle.md").read_text(encoding="utf-8")
    section = doc[doc.index("## Viewer events (streaming roles)"):]
    for name in (*VIEWER_EVENTS, *SERVER_EVENTS):
        assert f"| `{name}` |" in section, name


def test_multicast_flow_has_one_row_per_receiver() -> None:
    rows = [{"t": 0.0, "node": "s", "proc": "tx", "event": "probe_stop", "flow": "m1", "sent": 3}]
    for node, seqs in (("a", [0, 1, 2]), ("b", [0, 2])):
        for line, seq in enumerate(seqs, 1):
            rows.append({"t": 1.0 + seq, "node": node, "proc": "sink", "event": "probe_recv", "flow": "m1",
                         "seq": seq, "sent": 0.5 + seq, "size": 10, "file": f"events/{node}.sink.jsonl",
                         "line": line})
    table = flow_table(pd.DataFrame(rows)).set_index("entity")
    assert list(table.index) == ["m1:a", "m1:b"]
    assert table.loc["m1:a", "loss_pct"] == 0.0
    assert table.loc["m1:b", "loss_pct"] == pytest.approx(100 / 3)
    assert (table["src"] == "s").all()
