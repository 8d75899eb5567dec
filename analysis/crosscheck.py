"""Independent cross-checks of streambed's metric code against real measurement tools (iperf3, MGEN 5).

Role in the analysis flow (events -> metrics -> plots -> report): a side branch that checks step 2. It reads
what the ``iperf3`` and ``mgen`` roles (:mod:`nodes.iperf3`, :mod:`nodes.mgen`) left in a run bundle and puts
their loss, RFC 3550 jitter and one-way delay next to what :mod:`analysis.flows` computes, so that a wrong
definition, a wrong time base or a counting error in streambed shows up as a disagreement with tools that
share none of its code.

Three kinds of figures per row of :func:`crosscheck_table`:

- the tool's own figures. iperf3: what the receiving iperf3 computed and printed (``iperf3_result`` events,
  else the ``*.iperf3.json`` files). MGEN: MGEN only logs packets (``RECV`` lines with sequence number, send
  time, size; ``SEND`` lines with ``txlog``), so this module computes loss (RFC 3550 A.3 over the sequence
  numbers, and sender-based from the sender's log), RFC 3550 jitter and mean one-way delay from the log
  itself, with its own straightforward implementation that shares nothing with :mod:`analysis.metrics`;
- ``ours_*``: streambed's own analysis (:func:`analysis.flows.analyse_flows`) run on that same tool's
  packets (possible for MGEN, whose log has per-packet sequence numbers and times; not for iperf3);
- ``probe_*``: streambed's probe flow on the same path (same source and destination node), as
  :mod:`analysis.flows` reports it.

``jitter_ms`` is RFC 3550's J after the last packet; ``jitter_mean_ms`` is J sampled at the end of every
second of the flow and averaged (for iperf3: the receiver's per-interval jitter, which is the same J sampled
at the end of each report interval). J is an exponential average over ~16 packets, so its final value is
one noisy sample (~10-15 % relative spread between flows of one path); the per-second mean is the stable
figure to compare across flows.

MGEN writes times of day (``HH:MM:SS.uuuuuu``) in UTC, without a date. They become epoch seconds by taking
the day that puts each time nearest to a reference epoch (the process's ``mgen_start`` event, else the
run's start in ``manifest.json``, else the log file's modification time); this is exact for runs shorter
than 12 hours, including runs that cross midnight.

Nothing here raises on bad content: missing files, garbled lines, missing events become entries of
:attr:`CrossCheck.problems` and NaN figures.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.events import load_events
from analysis.flows import analyse_flows
from analysis.metrics import rfc3550_jitter
from nodes.iperf3 import split_json_documents, summarize

TABLE_COLUMNS: tuple[str, ...] = (
    "tool", "flow", "src", "dst", "source",
    "sent", "received", "lost", "lost_all",
    "loss_pct", "loss_rfc3550_pct", "jitter_ms", "jitter_mean_ms", "delay_mean_ms",
    "ours_loss_pct", "ours_loss_rfc3550_pct", "ours_jitter_ms", "ours_jitter_mean_ms", "ours_delay_mean_ms",
    "probe_flow", "probe_sent", "probe_loss_pct", "probe_loss_rfc3550_pct", "probe_jitter_ms",
    "probe_jitter_mean_ms", "probe_delay_mean_ms",
)
"""Columns of :func:`crosscheck_table` (percentages in %, times in ms; NaN = not available). ``lost`` is the
tool's count of lost packets in its measured window (sender-based when the number sent is known), ``lost_all``
adds losses it counted outside that window (iperf3's ``--omit`` seconds)."""

_TEXT_COLUMNS = ("tool", "flow", "src", "dst", "source", "probe_flow")

MGEN_COLUMNS = ("flow", "src", "dst", "seq", "sent", "recv", "size")
"""Columns of a parsed MGEN receive log (:func:`parse_mgen_log`): ``flow`` (MGEN flow id), ``src`` / ``dst``
(``ip/port``), ``seq``, ``sent`` and ``recv`` (epoch seconds), ``size`` (bytes), in log (arrival) order."""

SAMPLE_STEP_S = 1.0
"""Spacing of the J samples averaged into ``jitter_mean_ms`` (iperf3's default report interval)."""

_DAY = 86400.0
_TOD = re.compile(r"^(\d{1,2}):(\d{2}):(\d{2}(?:\.\d+)?)$")


@dataclass
class CrossCheck:
    """Everything :func:`analyse_crosscheck` finds."""

    table: pd.DataFrame
    problems: list[str] = field(default_factory=list)
    mgen_packets: dict[str, pd.DataFrame] = field(default_factory=dict)
    """MGEN flow label -> its received packets (:data:`MGEN_COLUMNS`)."""
    link_drops: dict[str, int] = field(default_factory=dict)
    """Delay-line direction (``r1->h2``) -> packets it dropped as emulated loss (NFQUEUE backend only)."""


# --------------------------------------------------------------------------------------------------
# MGEN logs
# --------------------------------------------------------------------------------------------------


def tod_seconds(text: str) -> float | None:
    """``HH:MM:SS.ffffff`` -> seconds since midnight (None if it is not a time of day)."""
    m = _TOD.match(text)
    if m is None:
        return None
    h, mi, s = int(m.group(1)), int(m.group(2)), float(m.group(3))
    if h > 23 or mi > 59 or s >= 61:
        return None
    return h * 3600 + mi * 60 + s


def tod_to_epoch(tod: np.ndarray | list[float] | float, ref_epoch: float) -> np.ndarray:
    """UTC times of day -> epoch seconds on the day that puts each nearest to ``ref_epoch``."""
    t = np.asarray(tod, dtype=np.float64)
    base = math.floor(ref_epoch / _DAY) * _DAY
    e = base + t
    return e + _DAY * np.round((ref_epoch - e) / _DAY)


def _fields(tokens: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for tok in tokens:
        key, sep, value = tok.partition(">")
        if sep:
            out[key] = value
    return out


def parse_mgen_log(path: str | Path, ref_epoch: float, kind: str = "RECV") -> tuple[pd.DataFrame, list[str]]:
    """Parse the ``RECV`` (or, with ``kind="SEND"``, the ``SEND``) lines of an MGEN text log.

    Returns a frame in log order and a list of problems (unreadable file, garbled lines). RECV rows have
    :data:`MGEN_COLUMNS`; SEND rows have ``flow``, ``seq``, ``src`` (``srcPort``), ``dst``, ``sent``,
    ``size`` (``recv`` is NaN). Lines of other kinds (START, LISTEN, ON, OFF, STOP) are skipped.
    """
    problems: list[str] = []
    name = Path(path).name
    try:
        text = Path(path).read_bytes().decode("utf-8", errors="replace")
    except OSError as exc:
        return _empty_mgen(), [f"{name}: cannot read: {exc.strerror or exc}"]
    flows: list[int] = []
    srcs: list[str] = []
    dsts: list[str] = []
    seqs: list[int] = []
    sent_tod: list[float] = []
    recv_tod: list[float] = []
    sizes: list[float] = []
    bad = 0
    first_bad: str | None = None
    for lineno, line in enumerate(text.splitlines(), 1):
        tokens = line.split()
        if len(tokens) < 2 or tokens[1] != kind:
            continue
        try:
            t = tod_seconds(tokens[0])
            f = _fields(tokens[2:])
            flow, seq = int(f["flow"]), int(f["seq"])
            if kind == "RECV":
                s = tod_seconds(f["sent"])
                src, dst = f["src"], f["dst"]
            else:
                s, src, dst = t, f.get("srcPort", ""), f["dst"]
                t = math.nan
            size = float(f["size"]) if "size" in f else math.nan
            if s is None or (kind == "RECV" and t is None):
                raise ValueError("bad time of day")
        except (KeyError, ValueError):
            bad += 1
            if first_bad is None:
                first_bad = f"line {lineno}"
            continue
        flows.append(flow)
        srcs.append(src)
        dsts.append(dst)
        seqs.append(seq)
        sent_tod.append(s)
        recv_tod.append(math.nan if t is None else t)
        sizes.append(size)
    if bad:
        problems.append(f"{name}: {bad} garbled {kind} line(s), first at {first_bad}")
    frame = pd.DataFrame({
        "flow": np.asarray(flows, dtype=np.int64), "src": srcs, "dst": dsts,
        "seq": np.asarray(seqs, dtype=np.int64),
        "sent": tod_to_epoch(np.asarray(sent_tod, dtype=np.float64), ref_epoch),
        "recv": tod_to_epoch(np.asarray(recv_tod, dtype=np.float64), ref_epoch),
        "size": np.asarray(sizes, dtype=np.float64),
    })
    return frame, problems


def _empty_mgen() -> pd.DataFrame:
    return pd.DataFrame({"flow": pd.Series(dtype="int64"), "src": pd.Series(dtype=object),
                         "dst": pd.Series(dtype=object), "seq": pd.Series(dtype="int64"),
                         "sent": pd.Series(dtype="float64"), "recv": pd.Series(dtype="float64"),
                         "size": pd.Series(dtype="float64")})


# --------------------------------------------------------------------------------------------------
# Independent metric implementation (deliberately not analysis.metrics)
# --------------------------------------------------------------------------------------------------


def rfc3550_loss(seqs: list[int] | np.ndarray) -> tuple[int, int, int]:
    """(expected, received, lost) per RFC 3550 A.3, packet by packet: ``expected = max_seq - base_seq + 1``
    with ``base_seq`` the first number received, ``received`` every packet that arrived."""
    base: int | None = None
    highest: int | None = None
    received = 0
    for s in (int(x) for x in seqs):
        if base is None:
            base = highest = s
        elif s > highest:  # type: ignore[operator]
            highest = s
        received += 1
    if base is None or highest is None:
        return 0, 0, 0
    expected = highest - base + 1
    return expected, received, expected - received


def rfc3550_jitter_series(sent: np.ndarray, recv: np.ndarray) -> list[float]:
    """J after each packet (RFC 3550 6.4.1 in its transit form: ``D = transit_i - transit_{i-1}``,
    ``J += (|D| - J) / 16``; J = 0 after the first packet). Same unit as the inputs."""
    out: list[float] = []
    j = 0.0
    prev: float | None = None
    for s, r in zip(sent.tolist(), recv.tolist(), strict=True):
        transit = r - s
        if prev is not None:
            j += (abs(transit - prev) - j) / 16.0
        prev = transit
        out.append(j)
    return out


def sampled_mean(times: np.ndarray, values: np.ndarray | list[float], step: float = SAMPLE_STEP_S) -> float | None:
    """Mean of a running value sampled every ``step`` seconds after the first time (the value of the last
    packet at or before each sample instant), like iperf3's per-interval jitter. None if under one step."""
    t = np.maximum.accumulate(np.asarray(times, dtype=np.float64)) if len(times) else np.zeros(0)
    v = np.asarray(values, dtype=np.float64)
    if t.size < 2 or v.size != t.size:
        return None
    n = int(math.floor((t[-1] - t[0]) / step))
    if n < 1:
        return None
    instants = t[0] + step * np.arange(1, n + 1)
    idx = np.searchsorted(t, instants, side="right") - 1
    return float(np.mean(v[idx]))


def packet_figures(packets: pd.DataFrame, sent_count: int | None) -> dict[str, Any]:
    """Loss, jitter and delay of one flow's received packets (arrival order), computed independently.

    ``loss_pct`` is sender-based (``1 - unique received / sent_count``), ``loss_rfc3550_pct`` is RFC 3550 A.3;
    jitter and delay use first arrivals only (a duplicate is not a new sample).
    """
    seq = packets["seq"].to_numpy(dtype=np.int64)
    expected, received, lost = rfc3550_loss(seq)
    first = ~pd.Series(seq).duplicated().to_numpy()
    sent = packets["sent"].to_numpy(dtype=np.float64)[first]
    recv = packets["recv"].to_numpy(dtype=np.float64)[first]
    ok = np.isfinite(sent) & np.isfinite(recv)
    sent, recv = sent[ok], recv[ok]
    unique = int(first.sum())
    out: dict[str, Any] = {"sent": sent_count, "received": unique,
                           "lost": sent_count - unique if sent_count is not None else lost}
    if sent_count:
        out["loss_pct"] = 100.0 * (1.0 - unique / sent_count)
    if expected > 0:
        out["loss_rfc3550_pct"] = 100.0 * lost / expected
    if len(sent) >= 2:
        series = rfc3550_jitter_series(sent, recv)
        out["jitter_ms"] = 1000.0 * series[-1]
        mean = sampled_mean(recv, series)
        if mean is not None:
            out["jitter_mean_ms"] = 1000.0 * mean
    if len(sent):
        out["delay_mean_ms"] = 1000.0 * float(sum((recv - sent).tolist()) / len(sent))
    return out


# --------------------------------------------------------------------------------------------------
# streambed's own analysis
# --------------------------------------------------------------------------------------------------


def _flow_figures(row: pd.Series, pk: pd.DataFrame | None) -> dict[str, Any]:
    """The figures of one analysis.flows row (plus the per-second mean of J from its packet series)."""
    out: dict[str, Any] = {}
    for key, col in (("sent", "sent"), ("received", "received"), ("loss_pct", "loss_pct"),
                     ("loss_rfc3550_pct", "loss_rfc3550_pct"), ("jitter_ms", "jitter_ms"),
                     ("delay_mean_ms", "delay_mean_ms")):
        value = row.get(col)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            out[key] = value
    if "sent" in out and "received" in out:
        out["lost"] = out["sent"] - out["received"]
    if pk is not None and len(pk) >= 2:
        recv = pk["t"].to_numpy(dtype=np.float64)
        send = recv - pk["delay_ms"].to_numpy(dtype=np.float64) / 1000.0
        _, series = rfc3550_jitter(send, recv, series=True)
        mean = sampled_mean(recv, series)
        if mean is not None:
            out["jitter_mean_ms"] = 1000.0 * mean
    return out


def ours_on_packets(packets: pd.DataFrame, sent_count: int | None, flow: str, src: str | None,
                    dst: str | None) -> dict[str, Any]:
    """Run :func:`analysis.flows.analyse_flows` on a tool's packets, presented as probe events."""
    n = len(packets)
    recv = pd.DataFrame({
        "t": packets["recv"].to_numpy(dtype=np.float64), "node": dst or "?", "role": "probe_sink",
        "proc": "crosscheck", "event": "probe_recv", "flow": flow,
        "seq": packets["seq"].to_numpy(dtype=np.int64), "sent": packets["sent"].to_numpy(dtype=np.float64),
        "size": packets["size"].to_numpy(dtype=np.float64), "file": "events/crosscheck-recv.jsonl",
        "line": np.arange(1, n + 1),
    })
    frames = [recv]
    if sent_count is not None:
        t_stop = float(np.nanmax(packets["sent"])) if n else 0.0  # about when the sender stopped
        frames.append(pd.DataFrame({
            "t": [t_stop], "node": [src or "?"], "role": ["probe_sender"], "proc": ["crosscheck"],
            "event": ["probe_stop"], "flow": [flow], "seq": [np.nan], "sent": [float(sent_count)],
            "size": [np.nan], "file": ["events/crosscheck-send.jsonl"], "line": [1],
        }))
    events = pd.concat(frames, ignore_index=True)
    result = analyse_flows(events)
    if result.table.empty:
        return {}
    row = result.table.iloc[0]
    return _flow_figures(row, result.packets.get(str(row["entity"])))


# --------------------------------------------------------------------------------------------------
# The bundle
# --------------------------------------------------------------------------------------------------


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def address_map(bundle: Path) -> dict[str, str]:
    """IPv4 address -> node name, from ``resolved.json`` (every interface) and the process configs."""
    out: dict[str, str] = {}
    resolved = _read_json(bundle / "resolved.json")
    links = resolved.get("network", {}).get("links", []) if isinstance(resolved, dict) else []
    for link in links if isinstance(links, list) else []:
        for end in ("a", "b"):
            ep = link.get(end) if isinstance(link, dict) else None
            if isinstance(ep, dict) and isinstance(ep.get("ip"), str) and isinstance(ep.get("node"), str):
                out[ep["ip"].split("/")[0]] = ep["node"]
    for cfg_path in sorted((bundle / "config").glob("*.json")) if (bundle / "config").is_dir() else []:
        cfg = _read_json(cfg_path)
        hosts = cfg.get("hosts") if isinstance(cfg, dict) else None
        if isinstance(hosts, dict):
            for name, ip in hosts.items():
                if isinstance(ip, str):
                    out.setdefault(ip, str(name))
            break
    return out


def _node_of(addr: Any, ips: dict[str, str]) -> str | None:
    if not isinstance(addr, str) or not addr:
        return None
    ip = addr.split("/")[0]
    return ips.get(ip, ip)


def _run_start(bundle: Path) -> float | None:
    manifest = _read_json(bundle / "manifest.json")
    start = manifest.get("start") if isinstance(manifest, dict) else None
    epoch = start.get("epoch") if isinstance(start, dict) else None
    return float(epoch) if isinstance(epoch, int | float) else None


def _records(frame: pd.DataFrame, event: str) -> list[dict[str, Any]]:
    if frame.empty or "event" not in frame.columns:
        return []
    rows = frame.loc[frame["event"].astype(object) == event]
    out = []
    for rec in rows.to_dict("records"):
        out.append({k: v for k, v in rec.items() if not (isinstance(v, float) and math.isnan(v))})
    return out


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def iperf3_documents(text: str) -> tuple[list[dict[str, Any]], str | None]:
    """The test documents in an ``*.iperf3.json`` file: one object, an array of objects (a server that ran
    several tests), or iperf3's raw output (concatenated objects); plus a note on anything unparsable."""
    try:
        value = json.loads(text)
    except ValueError:
        return split_json_documents(text)
    if isinstance(value, dict):
        return [value], None
    if isinstance(value, list):
        docs = [v for v in value if isinstance(v, dict)]
        return docs, None if len(docs) == len(value) else "array items that are not objects"
    return [], "not a JSON object or array"


def _iperf3_records(bundle: Path, frame: pd.DataFrame, problems: list[str]) -> list[dict[str, Any]]:
    """``iperf3_result`` records, one per test: the client's when there is one, else the server's; JSON
    files stand in for processes whose events are missing."""
    recs = _records(frame, "iperf3_result")
    seen_files = {str(r.get("json")) for r in recs}
    events_dir = bundle / "events"
    for path in sorted(events_dir.glob("*.iperf3.json")) if events_dir.is_dir() else []:
        if path.name in seen_files:
            continue
        node, _, rest = path.name.partition(".")
        proc = rest.split(".")[0]
        try:
            docs, note = iperf3_documents(path.read_text(errors="replace"))
        except OSError as exc:
            problems.append(f"{path.name}: cannot read: {exc}")
            continue
        if note:
            problems.append(f"{path.name}: {note}")
        problems.append(f"{path.name}: no iperf3_result event; figures read from the JSON file")
        for i, doc in enumerate(docs):
            fields = summarize(doc)
            start = doc.get("start") if isinstance(doc.get("start"), dict) else {}
            client = "connecting_to" in start
            fields.update(node=node, proc=proc, mode="client" if client else "server", test=i, json=path.name)
            if client and isinstance(start.get("connecting_to"), dict):
                fields.update(dst=start["connecting_to"].get("host"), port=start["connecting_to"].get("port"))
            recs.append(fields)
    clients = [r for r in recs if r.get("mode") == "client"]
    client_ports = {r.get("port") for r in clients}
    chosen = clients + [r for r in recs if r.get("mode") != "client" and r.get("port") not in client_ports]
    for r in chosen:
        if r.get("error"):
            problems.append(f"iperf3 {r.get('node')}.{r.get('proc')} test {r.get('test')}: {r.get('error')}")
    return chosen


def _iperf3_row(rec: dict[str, Any], ips: dict[str, str]) -> dict[str, Any] | None:
    if rec.get("protocol") not in (None, "udp"):
        return None
    node = str(rec.get("node"))
    if rec.get("mode") == "client":
        peer = _node_of(rec.get("dst"), ips)
        src, dst = (peer, node) if rec.get("reverse") else (node, peer)
    else:
        src, dst = None, node
    row: dict[str, Any] = {"tool": "iperf3", "flow": f"iperf3:{node}.{rec.get('proc')}", "src": src, "dst": dst,
                           "source": f"iperf3 {rec.get('side', '?')} ({rec.get('source', '?')})"}
    sent = _finite(rec.get("sent_packets"))
    if sent is not None and 0 <= sent < 2**53:
        row["sent"] = sent
    lost = _finite(rec.get("lost_packets"))
    packets = _finite(rec.get("packets"))
    if lost is not None and packets is not None and 0 < packets < 2**53:
        row["received"] = packets - lost
        row["loss_rfc3550_pct"] = 100.0 * lost / packets
    if lost is not None:
        row["lost"] = lost
        row["lost_all"] = lost + (_finite(rec.get("omitted_lost_packets")) or 0.0)
    row["loss_pct"] = _finite(rec.get("lost_percent"))
    row["jitter_ms"] = _finite(rec.get("jitter_ms"))
    intervals = rec.get("interval_jitter_ms")
    if isinstance(intervals, list | tuple | np.ndarray):
        vals = [float(v) for v in intervals if _finite(v) is not None]
        if vals:
            row["jitter_mean_ms"] = float(np.mean(vals))
    return row


def _mgen_rows(bundle: Path, frame: pd.DataFrame, ips: dict[str, str], problems: list[str],
               packets_out: dict[str, pd.DataFrame]) -> list[dict[str, Any]]:
    events_dir = bundle / "events"
    starts = _records(frame, "mgen_start")
    run_start = _run_start(bundle)
    by_log: dict[str, dict[str, Any]] = {}
    for rec in starts:
        log = rec.get("log")
        if isinstance(log, str):
            by_log[log] = rec
    logs = sorted(events_dir.glob("*.mgen.log")) if events_dir.is_dir() else []
    senders: list[dict[str, Any]] = []
    receivers: list[tuple[Path, dict[str, Any]]] = []
    for path in logs:
        rec = by_log.get(path.name)
        node, _, rest = path.name.partition(".")
        proc = rest.split(".")[0]
        if rec is None:
            problems.append(f"{path.name}: no mgen_start event; times placed by the run start")
            rec = {"node": node, "proc": proc}
        ref = _finite(rec.get("t")) or run_start
        if ref is None:
            try:
                ref = path.stat().st_mtime
            except OSError:
                ref = 0.0
        rec = dict(rec, ref=ref, path=path)
        mode = rec.get("mode")
        if mode is None:
            mode = "sender" if _has_word(path, "SEND") else "receiver"
        if mode == "sender":
            sends, probs = parse_mgen_log(path, ref, kind="SEND")
            problems.extend(probs)
            senders.append(dict(rec, sends=sends))
        else:
            receivers.append((path, rec))
    rows: list[dict[str, Any]] = []
    for path, rec in receivers:
        recv, probs = parse_mgen_log(path, rec["ref"], kind="RECV")
        problems.extend(probs)
        if recv.empty:
            problems.append(f"{path.name}: no RECV lines")
            continue
        rnode = str(rec.get("node"))
        for (flow_id, src), pk in recv.groupby(["flow", "src"], sort=True):
            pk = pk.reset_index(drop=True)
            dst_port = str(pk["dst"].iloc[0]).rpartition("/")[2]
            src_port = str(src).rpartition("/")[2]
            sender = _match_sender(senders, int(flow_id), dst_port, src_port)
            sent_count: int | None = None
            src_node = _node_of(src, ips)
            if sender is not None:
                sends = sender["sends"]
                mine = sends.loc[(sends["flow"] == flow_id)
                                 & (sends["dst"].astype(str).str.rpartition("/")[2] == dst_port)]
                sent_count = int(mine["seq"].nunique()) if len(mine) else None
                if sent_count is None:
                    stop = _finite(sender.get("sent"))
                    sent_count = int(stop) if stop is not None else None
                label = f"mgen:{sender.get('node')}.{sender.get('proc')}"
                src_node = str(sender.get("node", src_node))
            else:
                label = f"mgen:{src}#{flow_id}"
                problems.append(f"{path.name}: flow {flow_id} from {src}: no sender log; sender-based loss unknown")
            packets_out[label] = pk
            row: dict[str, Any] = {"tool": "mgen", "flow": label, "src": src_node, "dst": rnode,
                                   "source": f"MGEN logs {path.name}" + (" + sender txlog" if sender else "")}
            row.update(packet_figures(pk, sent_count))
            ours = ours_on_packets(pk, sent_count, label, src_node, rnode)
            row.update({f"ours_{k}": v for k, v in ours.items() if f"ours_{k}" in TABLE_COLUMNS})
            rows.append(row)
    return rows


def _has_word(path: Path, word: str) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    return f" {word} ".encode() in head


def _match_sender(senders: list[dict[str, Any]], flow_id: int, dst_port: str,
                  src_port: str) -> dict[str, Any] | None:
    fallback = None
    for s in senders:
        sends = s["sends"]
        flow, port = _finite(s.get("flow")), _finite(s.get("port"))
        if flow is not None and int(flow) != flow_id:
            continue
        if port is not None and str(int(port)) != dst_port:
            continue
        ports = set(sends.loc[sends["flow"] == flow_id, "src"].astype(str)) if len(sends) else set()
        if src_port in ports:
            return s
        fallback = fallback or s
    return fallback


def _link_drops(bundle: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    logs = bundle / "logs"
    for path in sorted(logs.glob("delayline-*.json")) if logs.is_dir() else []:
        data = _read_json(path)
        queues = data.get("queues") if isinstance(data, dict) else None
        for q in queues if isinstance(queues, list) else []:
            if isinstance(q, dict) and isinstance(q.get("direction"), str):
                dropped = _finite(q.get("dropped_by_loss"))
                if dropped is not None:
                    out[q["direction"]] = int(dropped)
    return out


def analyse_crosscheck(bundle_dir: str | Path) -> CrossCheck:
    """Build the cross-check table of a bundle (see :func:`crosscheck_table`) plus problems and packets."""
    bundle = Path(bundle_dir)
    problems: list[str] = []
    load = load_events(bundle)
    frame = load.frame
    problems += [f"{p.file}{'' if p.line is None else f':{p.line}'}: {p.detail}" for p in load.problems]
    ips = address_map(bundle)
    rows: list[dict[str, Any]] = []
    probes: list[dict[str, Any]] = []
    try:
        flows = analyse_flows(frame)
        for _, frow in flows.table.iterrows():
            fig = _flow_figures(frow, flows.packets.get(str(frow["entity"])))
            row = {"tool": "streambed", "flow": str(frow["entity"]), "src": frow.get("src"),
                   "dst": frow.get("dst"), "source": "analysis.flows (probe_send / probe_recv events)"}
            row.update(fig)
            row.update({f"ours_{k}": v for k, v in fig.items() if f"ours_{k}" in TABLE_COLUMNS})
            probes.append(row)
    except Exception as exc:  # noqa: BLE001 - a cross-check reports, it never stops on content
        problems.append(f"analysis.flows failed: {type(exc).__name__}: {exc}")
    rows += probes
    try:
        for rec in _iperf3_records(bundle, frame, problems):
            row = _iperf3_row(rec, ips)
            if row is not None:
                rows.append(row)
    except Exception as exc:  # noqa: BLE001
        problems.append(f"iperf3 results could not be read: {type(exc).__name__}: {exc}")
    mgen_packets: dict[str, pd.DataFrame] = {}
    try:
        rows += _mgen_rows(bundle, frame, ips, problems, mgen_packets)
    except Exception as exc:  # noqa: BLE001
        problems.append(f"MGEN logs could not be read: {type(exc).__name__}: {exc}")
    for row in rows:
        probe = next((p for p in probes if p.get("src") == row.get("src") and p.get("dst") == row.get("dst")),
                     None)
        if probe is None and row.get("src") is None:
            probe = next((p for p in probes if p.get("dst") == row.get("dst")), None)
        if probe is not None:
            row["probe_flow"] = probe["flow"]
            for key in ("sent", "loss_pct", "loss_rfc3550_pct", "jitter_ms", "jitter_mean_ms", "delay_mean_ms"):
                if key in probe:
                    row[f"probe_{key}"] = probe[key]
    for row in rows:
        if row.get("lost_all") is None and row.get("lost") is not None:
            row["lost_all"] = row["lost"]
    table = pd.DataFrame(rows)
    for col in TABLE_COLUMNS:
        if col not in table.columns:
            table[col] = None if col in _TEXT_COLUMNS else np.nan
    table = table[list(TABLE_COLUMNS)]
    for col in TABLE_COLUMNS:
        if col not in _TEXT_COLUMNS:
            table[col] = pd.to_numeric(table[col], errors="coerce").astype("float64")
    return CrossCheck(table, problems, mgen_packets, _link_drops(bundle))


def loss_accounting(cc: CrossCheck) -> dict[str, Any]:
    """Packets the delay line dropped (all directions) against the losses the tools counted (``lost_all``).

    Meaningful when every flow of the table crosses the same single lossy direction (as in the library
    scenario ``crosscheck``): then each dropped packet belongs to exactly one flow, and the sum of the tools'
    counts must equal the delay line's count up to packets no tool counts (other traffic in the queue, e.g.
    iperf3's TCP control connection) or counts without a drop (a receiver that stopped counting while
    datagrams were still in flight). ``link_dropped`` is None without delay-line statistics (netem).
    """
    lost = {str(r["flow"]): float(r["lost_all"]) for _, r in cc.table.iterrows()
            if _finite(r.get("lost_all")) is not None}
    dropped = sum(cc.link_drops.values()) if cc.link_drops else None
    total = sum(lost.values())
    return {"link_dropped": dropped, "tools_lost": total, "by_flow": lost,
            "difference": None if dropped is None else total - dropped}


def crosscheck_table(bundle: str | Path) -> pd.DataFrame:
    """One row per tool and flow of a bundle: loss %, jitter ms, mean one-way delay ms.

    ``tool`` is ``streambed`` (a probe flow, from :mod:`analysis.flows`), ``iperf3`` (one test, the
    receiver's figures) or ``mgen`` (one MGEN flow, figures computed here from MGEN's logs). Columns: see
    :data:`TABLE_COLUMNS` and the module docstring (tool figures; ``ours_*`` = streambed's analysis on the
    same packets; ``probe_*`` = streambed's probe flow with the same source and destination node).
    """
    return analyse_crosscheck(bundle).table


def _text(value: Any) -> str:
    return "?" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def format_crosscheck(table: pd.DataFrame) -> str:
    """A fixed-width text rendering of :func:`crosscheck_table` (figures, then the probe on the same path)."""

    def f(v: Any, digits: int) -> str:
        x = _finite(v)
        return "n/a" if x is None else f"{x:.{digits}f}"

    lines = [f"{'tool':<10} {'flow':<16} {'path':<9} {'sent':>7} {'recv':>7} {'loss%':>7} {'rfc%':>7} "
             f"{'J ms':>6} {'Jmean':>6} {'delay':>7} | {'ours loss%':>10} {'J':>6} {'Jmean':>6} {'delay':>7} | "
             f"{'probe loss%':>11} {'J':>6} {'Jmean':>6} {'delay':>7}"]
    for _, r in table.iterrows():
        path = f"{_text(r['src'])}->{_text(r['dst'])}"
        lines.append(
            f"{str(r['tool']):<10} {str(r['flow'])[:16]:<16} {path:<9} {f(r['sent'], 0):>7} {f(r['received'], 0):>7} "
            f"{f(r['loss_pct'], 3):>7} {f(r['loss_rfc3550_pct'], 3):>7} {f(r['jitter_ms'], 3):>6} "
            f"{f(r['jitter_mean_ms'], 3):>6} {f(r['delay_mean_ms'], 3):>7} | {f(r['ours_loss_pct'], 3):>10} "
            f"{f(r['ours_jitter_ms'], 3):>6} {f(r['ours_jitter_mean_ms'], 3):>6} {f(r['ours_delay_mean_ms'], 3):>7} | "
            f"{f(r['probe_loss_pct'], 3):>11} {f(r['probe_jitter_ms'], 3):>6} {f(r['probe_jitter_mean_ms'], 3):>6} "
            f"{f(r['probe_delay_mean_ms'], 3):>7}")
    return "\n".join(lines)
