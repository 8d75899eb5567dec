"""Step 2 of the analysis flow (events -> metrics -> plots -> report): per-flow probe metrics.

From the probe events of docs/bundle.md (``probe_start``, ``probe_send``, ``probe_stop`` written by
``nodes.probe_sender``; ``probe_recv`` written by ``nodes.probe_sink``) build one row per flow and
receiving node (a multicast flow has one row per receiver): packets sent, received (unique),
duplicates, reordered, loss (sender-based and RFC 3550 A.3), RFC 3550 jitter, one-way delay statistics
and goodput. The definitions live in :mod:`analysis.metrics`; this module only selects and groups.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analysis.events import Problem
from analysis.metrics import delay_stats, goodput_bps, rfc3550_jitter, rtp_loss, sender_loss

PROBE_EVENTS = ("probe_start", "probe_send", "probe_stop", "probe_recv")

FLOW_COLUMNS: dict[str, str] = {
    "sent": "packets",
    "in_flight_at_stop": "packets",
    "received": "packets",
    "duplicates": "packets",
    "reordered": "packets",
    "bytes_received": "bytes",
    "loss_pct": "%",
    "lost_rfc3550": "packets",
    "loss_rfc3550_pct": "%",
    "jitter_ms": "ms",
    "delay_mean_ms": "ms",
    "delay_p50_ms": "ms",
    "delay_p95_ms": "ms",
    "delay_p99_ms": "ms",
    "delay_min_ms": "ms",
    "delay_max_ms": "ms",
    "goodput_kbps": "kbit/s",
}
"""Metric columns of :func:`flow_table` and their units (NaN in a row = no data for that metric)."""

LABEL_COLUMNS = ("entity", "flow", "src", "dst", "first_recv_t", "last_recv_t")
"""Non-metric columns of :func:`flow_table`: row label, flow id, nodes, first/last arrival (epoch s)."""


@dataclass
class FlowResult:
    """Everything :func:`analyse_flows` finds: the table, per-row packet series and problems."""

    table: pd.DataFrame
    packets: dict[str, pd.DataFrame] = field(default_factory=dict)
    """entity -> arrival-ordered frame with columns ``t`` (receive, epoch s), ``seq``, ``delay_ms``."""
    problems: list[Problem] = field(default_factory=list)


def _empty_table() -> pd.DataFrame:
    cols: dict[str, pd.Series] = {c: pd.Series(dtype=object) for c in LABEL_COLUMNS[:4]}
    cols.update({c: pd.Series(dtype="float64") for c in LABEL_COLUMNS[4:]})
    cols.update({c: pd.Series(dtype="float64") for c in FLOW_COLUMNS})
    return pd.DataFrame(cols)


def _str(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value)


def _labels(values: pd.Series) -> np.ndarray:
    """Values as label strings, cheaply (via their distinct values); 3.0 from a sparse float column -> "3"."""
    codes, uniques = pd.factorize(values.astype(object), use_na_sentinel=True)

    def text(v: Any) -> str:
        if isinstance(v, float) and v.is_integer():
            return str(int(v))
        return str(v)

    names = np.asarray([text(u) for u in uniques] + [""], dtype=object)
    return names[codes]  # code -1 (missing) picks the trailing ""


def _first_file(rows: pd.DataFrame) -> str:
    return str(rows["file"].iloc[0]) if "file" in rows.columns and len(rows) else "events/"


def _sender_info(rows: pd.DataFrame) -> tuple[str | None, int | None, float | None, list[str]]:
    """(src node, packets sent, payload size, notes) from one flow's sender-side records."""
    notes: list[str] = []
    src_nodes = [n for n in pd.unique(rows["node"].astype(object)) if _str(n)]
    src = str(src_nodes[0]) if src_nodes else None
    if len(src_nodes) > 1:
        notes.append(f"sender records from several nodes {sorted(map(str, src_nodes))}; using {src}")
    event = rows["event"].astype(object).to_numpy()
    sent: int | None = None
    if "sent" in rows.columns:
        stop_sent = pd.to_numeric(rows.loc[event == "probe_stop", "sent"], errors="coerce").dropna()
        if len(stop_sent):
            sent = int(stop_sent.max())
    sends = rows.loc[event == "probe_send"]
    if len(sends):
        n_send = int(pd.to_numeric(sends["seq"], errors="coerce").nunique()) if "seq" in sends else len(sends)
        if sent is None:
            sent = n_send
            if not (event == "probe_stop").any():
                notes.append("no probe_stop: packets sent counted from probe_send records (sender killed?)")
        elif n_send < sent:
            notes.append(f"probe_stop says {sent} sent but only {n_send} probe_send records were logged")
    size = None
    if "size" in rows.columns:
        carriers = np.isin(event, ("probe_start", "probe_send"))
        sizes = pd.to_numeric(rows.loc[carriers, "size"], errors="coerce").dropna()
        if len(sizes):
            size = float(sizes.iloc[0])
    return src, sent, size, notes


def analyse_flows(events: pd.DataFrame) -> FlowResult:
    """Compute the flow table plus per-packet series and problems (see :func:`flow_table`)."""
    if events.empty or "flow" not in events.columns:
        return FlowResult(_empty_table())
    ev_names = events["event"].astype(object).to_numpy()
    probe = events.loc[np.isin(ev_names, PROBE_EVENTS)]
    if probe.empty:
        return FlowResult(_empty_table())
    probe = probe.loc[probe["flow"].notna()]
    names = probe["event"].astype(object).to_numpy()
    flows_all = _labels(probe["flow"])
    recv_mask = names == "probe_recv"
    sender = probe.loc[~recv_mask]
    recv = probe.loc[recv_mask]
    sender_flows = flows_all[~recv_mask]
    recv_flows = flows_all[recv_mask]

    problems: list[Problem] = []
    sender_by_flow: dict[str, pd.DataFrame] = {
        f: sender.loc[sender_flows == f] for f in pd.unique(sender_flows)
    }
    recv_groups: dict[str, dict[str, pd.DataFrame]] = {}
    if len(recv):
        recv_nodes = _labels(recv["node"])
        for f in pd.unique(recv_flows):
            in_flow = recv_flows == f
            recv_groups[f] = {
                n: recv.loc[in_flow & (recv_nodes == n)] for n in pd.unique(recv_nodes[in_flow])
            }

    stops = _stop_times(events)
    rows: list[dict[str, Any]] = []
    packets: dict[str, pd.DataFrame] = {}
    for flow in sorted(set(sender_by_flow) | set(recv_groups), key=_natural_key):
        srows = sender_by_flow.get(flow)
        src, sent, size, notes = (None, None, None, []) if srows is None else _sender_info(srows)
        for note in notes:
            problems.append(Problem(_first_file(srows), None, "flow_incomplete", f"flow {flow}: {note}"))
        receivers = recv_groups.get(flow, {})
        if srows is None:
            some = next(iter(receivers.values()))
            problems.append(
                Problem(_first_file(some), None, "flow_incomplete",
                        f"flow {flow}: no sender records (probe_start/probe_send/probe_stop): sent unknown")
            )
        if not receivers:
            problems.append(
                Problem(_first_file(srows), None, "flow_incomplete",  # type: ignore[arg-type]
                        f"flow {flow}: no probe_recv records from any receiver")
            )
            row: dict[str, Any] = {"entity": flow, "flow": flow, "src": src, "dst": None, "sent": sent,
                                   "received": 0, "bytes_received": 0}
            loss = sender_loss(sent, 0)
            if loss is not None:
                row["loss_pct"] = 100.0 * loss
            rows.append(row)
            continue
        for dst, rrows in sorted(receivers.items(), key=lambda kv: _natural_key(kv[0])):
            entity = flow if len(receivers) == 1 else f"{flow}:{dst}"
            sink_proc = _str(rrows["proc"].iloc[0]) if "proc" in rrows.columns and len(rrows) else None
            row, pk, bad = _receiver_row(rrows, flow, src, dst, sent, size, stops.get((dst, sink_proc)),
                                         _send_times(srows))
            row["entity"] = entity
            if bad:
                problems.append(
                    Problem(_first_file(rrows), None, "bad_field",
                            f"flow {flow} at {dst}: {bad} probe_recv records without a usable seq/sent time")
                )
            rows.append(row)
            packets[entity] = pk
        for dst in _silent_members(events, srows, set(receivers)):
            # a multicast subscriber that joined the flow's group and got nothing: say so, do not leave it out
            rows.append({"entity": f"{flow}:{dst}", "flow": flow, "src": src, "dst": dst, "sent": sent,
                         "received": 0, "bytes_received": 0, "loss_pct": 100.0 if sent else np.nan})
    table = pd.DataFrame(rows)
    for col in (*LABEL_COLUMNS, *FLOW_COLUMNS):
        if col not in table.columns:
            table[col] = np.nan
    table = table[[*LABEL_COLUMNS, *FLOW_COLUMNS]]
    for col in FLOW_COLUMNS:
        table[col] = pd.to_numeric(table[col], errors="coerce").astype("float64")
    return FlowResult(table, packets, problems)


def _silent_members(events: pd.DataFrame, srows: pd.DataFrame | None, heard: set[str]) -> list[str]:
    """Nodes whose sinks joined a multicast flow's group (``group_join``) but logged no packet of it."""
    if srows is None or "dst" not in srows.columns or "group" not in events.columns:
        return []
    starts = srows.loc[srows["event"].astype(object).to_numpy() == "probe_start", "dst"].dropna()
    groups = {str(g) for g in starts if str(g).split(".")[0].isdigit() and 224 <= int(str(g).split(".")[0]) <= 239}
    if not groups:
        return []
    joins = events.loc[events["event"].astype(object).to_numpy() == "group_join"]
    members = {str(n) for n, g in zip(joins["node"], joins["group"], strict=True) if str(g) in groups}
    return sorted(members - heard, key=_natural_key)


def _stop_times(events: pd.DataFrame) -> dict[tuple[str, str | None], float]:
    """(node, proc) -> time the process logged ``process_stop`` (it stopped receiving then)."""
    if "proc" not in events.columns:
        return {}
    stops = events.loc[events["event"].astype(object).to_numpy() == "process_stop"]
    out: dict[tuple[str, str | None], float] = {}
    for node, proc, t in zip(_labels(stops["node"]), stops["proc"].astype(object), stops["t"], strict=True):
        key = (str(node), _str(proc))
        out[key] = max(float(t), out.get(key, float("-inf")))
    return out


def _send_times(srows: pd.DataFrame | None) -> np.ndarray | None:
    """Send times (epoch s) of one flow's ``probe_send`` records, or None without them."""
    if srows is None or "seq" not in srows.columns:
        return None
    sends = srows.loc[srows["event"].astype(object).to_numpy() == "probe_send"]
    return sends["t"].to_numpy(dtype=np.float64) if len(sends) else None


def _receiver_row(
    rrows: pd.DataFrame, flow: str, src: str | None, dst: str, sent: int | None, size: float | None,
    sink_stop: float | None = None, send_t: np.ndarray | None = None,
) -> tuple[dict[str, Any], pd.DataFrame, int]:
    """One flow at one receiver: all metrics of the row, the packet series, and the count of bad records.

    Packets still in flight when the sink stopped are not lost by the network: when the sink's stop time
    and the send times are known, packets sent later than ``stop - (1.5 x the largest one-way delay seen in
    the last 2 s + 0.1 s)`` are left out of ``sent`` and of the loss figures (and counted in ``in_flight_at_stop``).
    """
    # Arrival order is the sink's own write order (file, line), not the time stamps.
    if "file" in rrows.columns and "line" in rrows.columns:
        order = np.lexsort((rrows["line"].to_numpy(), _labels(rrows["file"])))
        rrows = rrows.iloc[order]
    t = rrows["t"].to_numpy(dtype=np.float64)
    seq = pd.to_numeric(rrows["seq"], errors="coerce").to_numpy(dtype=np.float64) if "seq" in rrows \
        else np.full(len(rrows), np.nan)
    s_t = pd.to_numeric(rrows["sent"], errors="coerce").to_numpy(dtype=np.float64) if "sent" in rrows \
        else np.full(len(rrows), np.nan)
    ok = np.isfinite(seq) & np.isfinite(s_t)
    bad = int((~ok).sum())
    t, seq_i, s_t = t[ok], seq[ok].astype(np.int64), s_t[ok]
    nbytes = pd.to_numeric(rrows["size"], errors="coerce").to_numpy(dtype=np.float64)[ok] if "size" in rrows \
        else np.full(len(t), np.nan)
    if size is not None:
        nbytes = np.where(np.isnan(nbytes), size, nbytes)

    loss = rtp_loss(seq_i)
    _, first_idx = np.unique(seq_i, return_index=True) if len(seq_i) else (None, np.zeros(0, dtype=np.int64))
    first = np.zeros(len(seq_i), dtype=bool)
    first[first_idx] = True
    delay_ms = (t - s_t) * 1000.0
    row: dict[str, Any] = {
        "flow": flow, "src": src, "dst": dst, "sent": sent,
        "received": loss.unique, "duplicates": loss.duplicates, "reordered": loss.reordered,
    }
    if len(t):
        row["first_recv_t"] = float(t.min())
        row["last_recv_t"] = float(t.max())
        ub = nbytes[first]
        if not np.isnan(ub).all():
            row["bytes_received"] = float(np.nansum(ub))
    unique_counted = loss.unique
    if sink_stop is not None and send_t is not None and sent is not None and len(t):
        first_delays = (t - s_t)[first]
        recent = t[first] >= sink_stop - 2.0  # the delay packets had near the end, not earlier queueing
        worst = float(np.max(first_delays[recent])) if recent.any() else float(np.max(first_delays))
        cutoff = sink_stop - (1.5 * worst + 0.1)
        counted = int((send_t <= cutoff).sum())
        if counted < sent:
            row["in_flight_at_stop"] = sent - counted
            unique_counted = int((s_t[first] <= cutoff).sum())
            sent = counted
            row["sent"] = sent
            row["received"] = unique_counted
    sloss = sender_loss(sent, unique_counted)
    if sloss is not None:
        row["loss_pct"] = 100.0 * sloss
    if loss.expected > 0:
        row["lost_rfc3550"] = loss.lost
        row["loss_rfc3550_pct"] = 100.0 * loss.lost / loss.expected
    # Jitter over first arrivals only: a duplicate is a second copy, not a new interarrival sample.
    jitter = rfc3550_jitter(s_t[first], t[first])
    if jitter is not None:
        row["jitter_ms"] = jitter * 1000.0
    stats = delay_stats(delay_ms[first])
    if stats is not None:
        row.update(
            delay_mean_ms=stats.mean, delay_p50_ms=stats.p50, delay_p95_ms=stats.p95,
            delay_p99_ms=stats.p99, delay_min_ms=stats.min, delay_max_ms=stats.max,
        )
    if len(t) >= 2 and "bytes_received" in row:
        gp = goodput_bps(row["bytes_received"], float(t.min()), float(t.max()))
        if gp is not None:
            row["goodput_kbps"] = gp / 1000.0
    pk = pd.DataFrame({"t": t[first], "seq": seq_i[first], "delay_ms": delay_ms[first]})
    return row, pk, bad


def _natural_key(text: str) -> tuple[Any, ...]:
    """Sort ``f2`` before ``f10``."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", str(text)))


def flow_table(events_df: pd.DataFrame) -> pd.DataFrame:
    """One row per probe flow and receiving node.

    Columns: ``entity`` (row label: the flow id, or ``flow:dst`` when a flow has several receivers),
    ``flow``, ``src`` / ``dst`` (sender / receiver node), ``first_recv_t`` / ``last_recv_t`` and the
    metrics of :data:`FLOW_COLUMNS`: ``sent`` (``probe_stop.sent``, else distinct ``probe_send``
    numbers), ``received`` (unique sequence numbers), ``duplicates``, ``reordered``, ``loss_pct``
    (sender-based, :func:`analysis.metrics.sender_loss`), ``lost_rfc3550`` and ``loss_rfc3550_pct``
    (:func:`analysis.metrics.rtp_loss`), ``jitter_ms`` (RFC 3550 over first arrivals in arrival order),
    one-way delay mean/p50/p95/p99/min/max in ms (first arrivals; receive ``t`` minus the ``sent`` time
    carried in the packet), ``goodput_kbps`` (unique payload bytes over first..last arrival),
    ``in_flight_at_stop`` (packets sent too close to the sink's stop to count; ``sent``, ``received`` and
    ``loss_pct`` then cover only the packets that had time to arrive).
    A metric without data is NaN.
    """
    return analyse_flows(events_df).table


def _num(row: pd.Series | dict[str, Any], key: str) -> float | None:
    value = row.get(key) if isinstance(row, dict) else row.get(key, None)
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def format_flow_line(row: pd.Series | dict[str, Any]) -> str:
    """One human line per flow, e.g.
    ``f1 h1->h2: sent 400 recv 392 loss 2.00% jitter 3.1 ms delay p50 30.2 ms p95 38.9 ms``.
    Missing figures print as ``n/a``; duplicates and reordering are added only when non-zero."""

    def count(key: str) -> str:
        v = _num(row, key)
        return "n/a" if v is None else f"{v:.0f}"

    def fixed(key: str, digits: int, unit: str) -> str:
        v = _num(row, key)
        return "n/a" if v is None else f"{v:.{digits}f}{unit}"

    get = row.get
    entity = _str(get("entity")) or _str(get("flow")) or "?"
    src = _str(get("src")) or "?"
    dst = _str(get("dst")) or "?"
    multicast = ":" in entity
    loss = (f" loss since first packet {fixed('loss_rfc3550_pct', 2, '%')}" if multicast and _num(row, "received")
            else f" loss {fixed('loss_pct', 2, '%')}")
    text = (
        f"{entity} {src}->{dst}: sent {count('sent')} recv {count('received')}"
        f"{loss} jitter {fixed('jitter_ms', 1, ' ms')}"
        f" delay p50 {fixed('delay_p50_ms', 1, ' ms')} p95 {fixed('delay_p95_ms', 1, ' ms')}"
    )
    extras = []
    for key, label in (("duplicates", "dup"), ("reordered", "reordered"),
                       ("in_flight_at_stop", "in flight at the end, not counted")):
        v = _num(row, key)
        if v:
            extras.append(f"{v:.0f} {label}")
    if extras:
        text += f" ({', '.join(extras)})"
    return text
