"""Step 2 of the analysis flow (events -> metrics -> plots -> report): the metric definitions.

Pure functions, no I/O: each takes plain sequences or an event frame and returns numbers. Every function
cites the definition it implements; the normative list is /work/shared/DESIGN.md, "Metrics
(definitions to use)". Times are in seconds (epoch floats from the event log) unless a name says ms.

Packet flows: :func:`rtp_loss`, :func:`sender_loss`, :func:`rfc3550_jitter`, :func:`delay_stats`,
:func:`goodput_bps`. Streaming roles: :func:`viewer_metrics` (startup latency, continuity index,
stalls, rebuffering ratio, playback lag, peer contribution), :func:`server_load`, :func:`savings`,
:func:`peer_contribution`. The event names the streaming functions read are listed in
:data:`VIEWER_EVENTS` and :data:`SERVER_EVENTS` (and in docs/bundle.md, "Viewer events (streaming roles)").
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, overload

import numpy as np
import pandas as pd

ArrayLike = Sequence[float] | np.ndarray | pd.Series

# --------------------------------------------------------------------------------------------------
# Event vocabulary of streaming roles (documented in docs/bundle.md, "Viewer events (streaming roles)")
# --------------------------------------------------------------------------------------------------

VIEWER_EVENTS: dict[str, str] = {
    "play_request": "the viewer asks to join a channel / play a video (starts a session); "
    "fields: `stream` (channel or video id)",
    "playback_start": "the first frame of the session is played; fields: `stream`",
    "chunk_recv": "a chunk (segment) arrived; fields: `chunk` (id), `bytes`, `source` "
    "(`server`, `peer`, or another word such as `multicast`), optional `from` (sending node)",
    "chunk_due": "a chunk's playback deadline is reached; fields: `chunk`, `on_time` (bool: it arrived "
    "before the deadline), optional `bytes`, optional `played` (bool, default = `on_time`: a late chunk "
    "played after a stall sets it true), optional `created` (epoch s the source produced it)",
    "stall_start": "playback freezes because the next chunk is missing (not for the initial buffering "
    "before `playback_start`, which is startup latency)",
    "stall_end": "playback resumes after a stall",
    "playback_end": "the session ends (user left, video over, node stopped); fields: optional `reason`",
}
"""Viewer event name -> meaning and fields. Every record also has the common fields (t, node, role, ...)."""

SERVER_EVENTS: dict[str, str] = {
    "stream_start": "the server starts sending one stream (unicast stream, patch, multicast channel); "
    "fields: `stream` (id unique within the server process), optional `client`, optional `rate_bps`",
    "stream_end": "that stream stops; fields: `stream`",
    "bytes_sent": "payload bytes the server sent since its previous `bytes_sent` record (or since it "
    "started); fields: `bytes`. Emit periodically (e.g. every second) and once at exit",
}
"""Server event name -> meaning and fields."""


def _as_float_array(values: ArrayLike | Iterable[float]) -> np.ndarray:
    if isinstance(values, np.ndarray | pd.Series):
        return np.asarray(values, dtype=np.float64)
    return np.asarray(list(values), dtype=np.float64)


# --------------------------------------------------------------------------------------------------
# Loss
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LossStats:
    """Sequence-number accounting of one packet stream (see :func:`rtp_loss`)."""

    received: int
    """Packets received, duplicates included (RFC 3550 A.3 ``received``)."""
    unique: int
    """Distinct sequence numbers received."""
    duplicates: int
    """``received - unique``."""
    reordered: int
    """First arrivals whose number is lower than one that arrived before them."""
    base_seq: int | None
    """First sequence number received (RFC 3550 A.1 ``base_seq``, set by ``init_seq``)."""
    highest_seq: int | None
    """Highest sequence number received."""
    expected: int
    """``highest_seq - base_seq + 1`` (0 when nothing was received)."""
    lost: int
    """``expected - received``: may be negative (duplicates, or late packets below ``base_seq``)."""

    @property
    def fraction_lost(self) -> float | None:
        """``lost / expected`` as RFC 3550 A.3 computes it (not clamped; None when nothing expected)."""
        return self.lost / self.expected if self.expected > 0 else None


def rtp_loss(seqs: Sequence[int] | np.ndarray) -> LossStats:
    """Loss from received sequence numbers, in arrival order, per RFC 3550 appendix A.3.

    RFC 3550 A.3: ``expected = highest_seq - base_seq + 1``; ``lost = expected - received``.
    As in the RFC, ``base_seq`` is the *first* sequence number received (A.1 ``init_seq``) and
    ``received`` counts every packet that arrived, duplicates included, so duplicates mask losses and
    ``lost`` can be negative (the RFC's "cumulative number of packets lost" is signed for this reason).
    A packet that arrives late with a number below ``base_seq`` is counted as received but not expected.
    Differences from a full RTP receiver, which do not matter for streambed's probes: numbers are plain
    unbounded integers (no 16-bit wrap, no ``MAX_DROPOUT`` restart logic, no probation).

    Also reported: ``unique`` distinct numbers, ``duplicates = received - unique`` and ``reordered``:
    first arrivals whose number is below the highest number seen before them (RFC 4737's notion of a
    reordered packet). For the sender-based figure use :func:`sender_loss`.
    """
    arr = np.asarray(seqs, dtype=np.int64).reshape(-1)
    n = int(arr.size)
    if n == 0:
        return LossStats(0, 0, 0, 0, None, None, 0, 0)
    uniq, first_idx = np.unique(arr, return_index=True)
    unique = int(uniq.size)
    is_first = np.zeros(n, dtype=bool)
    is_first[first_idx] = True
    prev_max = np.maximum.accumulate(arr)
    before = np.empty(n, dtype=np.int64)
    before[0] = arr[0]
    before[1:] = prev_max[:-1]
    reordered = int(np.count_nonzero(is_first[1:] & (arr[1:] < before[1:])))
    base = int(arr[0])
    highest = int(prev_max[-1])
    expected = highest - base + 1
    return LossStats(
        received=n,
        unique=unique,
        duplicates=n - unique,
        reordered=reordered,
        base_seq=base,
        highest_seq=highest,
        expected=expected,
        lost=expected - n,
    )


def sender_loss(sent: int | None, unique_received: int) -> float | None:
    """Sender-based loss fraction: ``1 - unique received / sent`` (None when ``sent`` is unknown or 0).

    Unlike RFC 3550 A.3 this sees losses at the end of a stream and is not masked by duplicates,
    because the number sent comes from the sender's own log (``probe_stop.sent`` or its ``probe_send``
    records).
    """
    if sent is None or sent <= 0:
        return None
    return 1.0 - unique_received / sent


# --------------------------------------------------------------------------------------------------
# Jitter
# --------------------------------------------------------------------------------------------------


@overload
def rfc3550_jitter(
    send_times: ArrayLike, recv_times: ArrayLike, *, series: Literal[False] = ...
) -> float | None: ...


@overload
def rfc3550_jitter(
    send_times: ArrayLike, recv_times: ArrayLike, *, series: Literal[True]
) -> tuple[float | None, np.ndarray]: ...


def rfc3550_jitter(
    send_times: ArrayLike, recv_times: ArrayLike, *, series: bool = False
) -> float | None | tuple[float | None, np.ndarray]:
    """Interarrival jitter, RFC 3550 section 6.4.1, over packets given in arrival order.

    For consecutive arrivals i-1, i with send times S and receive times R:
    ``D = (R_i - R_{i-1}) - (S_i - S_{i-1})`` and ``J += (|D| - J) / 16``, starting from J = 0.
    This is what iperf3 reports too. Units are those of the inputs (seconds in the event log; the RFC
    uses RTP timestamp units). Returns the final J, or None with fewer than two packets (no D exists).
    With ``series=True`` also returns J after every packet (J[0] = 0), an array as long as the input.
    """
    s = _as_float_array(send_times)
    r = _as_float_array(recv_times)
    if s.shape != r.shape:
        raise ValueError(f"send_times and recv_times differ in length: {s.size} != {r.size}")
    n = int(s.size)
    if n < 2:
        return (None, np.zeros(n)) if series else None
    d = np.abs(np.diff(r) - np.diff(s)).tolist()
    j = 0.0
    if series:
        out = np.empty(n, dtype=np.float64)
        out[0] = 0.0
        for i, di in enumerate(d, 1):
            j += (di - j) / 16.0
            out[i] = j
        return j, out
    for di in d:
        j += (di - j) / 16.0
    return j


# --------------------------------------------------------------------------------------------------
# Delay and goodput
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DelayStats:
    """Summary of one-way delays (same unit as the input)."""

    count: int
    mean: float
    p50: float
    p95: float
    p99: float
    min: float
    max: float


def percentile(values: ArrayLike, q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation between order statistics.

    That is numpy's default ("linear", Hyndman & Fan type 7): position ``(n - 1) * q / 100`` in the
    sorted values, interpolating between neighbours. None for no values.
    """
    arr = _as_float_array(values)
    arr = arr[~np.isnan(arr)]
    if arr.size == 0:
        return None
    return float(np.percentile(arr, q))


def delay_stats(delays: ArrayLike) -> DelayStats | None:
    """One-way delay statistics: mean, p50, p95, p99, min, max (None when there are no samples).

    Definition (DESIGN.md): one-way delay = receive time - send time, both from the one machine clock.
    Percentiles as in :func:`percentile` (linear interpolation, numpy's default). NaNs are ignored.
    """
    arr = _as_float_array(delays)
    arr = arr[~np.isnan(arr)]
    if arr.size == 0:
        return None
    p50, p95, p99 = np.percentile(arr, [50, 95, 99])
    return DelayStats(
        count=int(arr.size),
        mean=float(arr.mean()),
        p50=float(p50),
        p95=float(p95),
        p99=float(p99),
        min=float(arr.min()),
        max=float(arr.max()),
    )


def goodput_bps(nbytes: float, start: float, end: float) -> float | None:
    """Goodput in bit/s: ``8 * bytes received / (end - start)`` (None if the interval is not positive).

    The caller chooses the active interval; for probe flows streambed uses first to last arrival and
    counts every unique payload byte received (so n packets over n-1 gaps: a slight overestimate of
    at most one packet per interval).
    """
    span = end - start
    if not (span > 0) or not math.isfinite(span):
        return None
    return 8.0 * nbytes / span


# --------------------------------------------------------------------------------------------------
# Streaming: time-weighted levels, viewers, servers
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Level:
    """A step function over [start, end]: time-weighted mean, peak and the steps themselves."""

    mean: float
    peak: float
    start: float
    end: float
    times: np.ndarray
    values: np.ndarray


def time_weighted_level(
    changes: Iterable[tuple[float, float]], start: float, end: float, initial: float = 0.0
) -> Level | None:
    """Integrate a level that changes by ``delta`` at time ``t`` for each ``(t, delta)``.

    Changes before ``start`` set the initial level; changes after ``end`` are ignored. The mean is the
    time average over [start, end] (Little's-law style "mean concurrent streams"); the peak is the
    highest level held at any instant in [start, end]. None if ``end <= start``.
    """
    if not (end > start):
        return None
    items = sorted(changes, key=lambda c: c[0])
    level = initial
    times = [start]
    values: list[float] = []
    for t, delta in items:
        if t <= start:
            level += delta
    values.append(level)
    for t, delta in items:
        if start < t <= end:
            level += delta
            if t == times[-1]:
                values[-1] = level
            else:
                times.append(t)
                values.append(level)
    times_arr = np.asarray(times, dtype=np.float64)
    values_arr = np.asarray(values, dtype=np.float64)
    widths = np.diff(np.append(times_arr, end))
    mean = float(np.sum(widths * values_arr) / (end - start))
    held = values_arr[widths > 0] if np.any(widths > 0) else values_arr
    return Level(mean, float(held.max()), start, end, times_arr, values_arr)


@dataclass(frozen=True)
class ViewerMetrics:
    """Quality-of-experience figures of one viewer (see :func:`viewer_metrics`). None = no data."""

    sessions: int
    startup_latency_s: float | None
    startup_latencies_s: tuple[float, ...]
    chunks_due: int
    chunks_on_time: int
    continuity_index: float | None
    stalls: int
    stall_time_s: float
    play_time_s: float | None
    rebuffering_ratio: float | None
    playback_lag_mean_s: float | None
    playback_lag_max_s: float | None
    bytes_played: float | None
    bytes_from_peers: float | None
    bytes_from_server: float | None
    peer_contribution: float | None
    session_intervals: tuple[tuple[float, float], ...] = field(default=())
    notes: tuple[str, ...] = field(default=())


def _col(events: pd.DataFrame, name: str) -> pd.Series:
    return events[name] if name in events.columns else pd.Series(np.nan, index=events.index, dtype=object)


def _truthy(values: pd.Series) -> np.ndarray:
    """True only for real booleans that are true; anything missing or of another type is False."""
    return np.fromiter(
        (isinstance(v, bool | np.bool_) and bool(v) for v in values.to_numpy(dtype=object)),
        dtype=bool,
        count=len(values),
    )


def _is_bool(values: pd.Series) -> np.ndarray:
    return np.fromiter(
        (isinstance(v, bool | np.bool_) for v in values.to_numpy(dtype=object)), dtype=bool, count=len(values)
    )


def _numbers(values: pd.Series) -> np.ndarray:
    return pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def viewer_metrics(events: pd.DataFrame, *, end_time: float | None = None) -> ViewerMetrics:
    """Startup latency, continuity, stalls, rebuffering, lag and peer contribution of ONE viewer.

    ``events``: that viewer's records (columns ``t``, ``event`` and the fields of :data:`VIEWER_EVENTS`),
    in any order (sorted by ``t`` here, ties kept in input order). ``end_time`` closes a session that has
    no ``playback_end`` (default: the viewer's last event).

    Definitions (DESIGN.md):

    * sessions: each ``play_request`` starts one; it ends at its ``playback_end``, else just before the
      next ``play_request``'s time, else at ``end_time``.
    * startup latency = first ``playback_start`` of the session - its ``play_request`` (first frame
      played minus the moment the viewer asked to join/play). ``startup_latency_s`` is the first
      session's; ``startup_latencies_s`` lists every session that started playing.
    * continuity index (CoolStreaming) = chunks that arrived before their playback deadline / chunks
      due, i.e. ``chunk_due`` records with ``on_time`` true / ``chunk_due`` records with a boolean
      ``on_time`` (records without one are not judged).
    * stalls = number of ``stall_start`` after ``playback_start``; stall time = sum of ``stall_end -
      stall_start`` (an unfinished stall runs to the session end); play time = session end -
      ``playback_start`` - stall time; rebuffering ratio = stall time / (stall time + play time).
    * playback lag = ``chunk_due.t - chunk_due.created`` (mean and max), when ``created`` is logged.
    * peer contribution = bytes of ``chunk_recv`` with ``source == "peer"`` / bytes played, bytes played
      being the ``bytes`` of ``chunk_due`` records with ``played`` (default: ``on_time``) true.
    """
    if events.empty:
        return ViewerMetrics(0, None, (), 0, 0, None, 0, 0.0, None, None, None, None, None, None, None, None)
    times = events["t"].to_numpy(dtype=np.float64)
    order = np.argsort(times, kind="stable")
    ev = events.iloc[order]
    t = times[order]
    name = ev["event"].astype(object).to_numpy()
    close_at = float(end_time) if end_time is not None else float(t[-1])
    notes: list[str] = []

    sessions = _sessions(t, name, close_at, notes)
    startups = tuple(s.start - s.request for s in sessions if s.request is not None and s.start is not None)
    stalls = sum(s.stalls for s in sessions)
    stall_time = float(sum(s.stall_time for s in sessions))
    played_sessions = [s for s in sessions if s.start is not None]
    play_time: float | None = None
    rebuffering: float | None = None
    if played_sessions:
        play_time = float(sum(max(0.0, (s.end - s.start) - s.stall_time) for s in played_sessions))  # type: ignore[operator]
        total = stall_time + play_time
        rebuffering = stall_time / total if total > 0 else None

    due = name == "chunk_due"
    on_time_col = _col(ev, "on_time")
    judged = due & _is_bool(on_time_col)
    on_time = judged & _truthy(on_time_col)
    chunks_due = int(judged.sum())
    chunks_on_time = int(on_time.sum())
    continuity = chunks_on_time / chunks_due if chunks_due else None

    lag_mean = lag_max = None
    if "created" in ev.columns and due.any():
        lag = t[due] - _numbers(ev["created"])[due]
        lag = lag[~np.isnan(lag)]
        if lag.size:
            lag_mean, lag_max = float(lag.mean()), float(lag.max())

    bytes_col = _numbers(_col(ev, "bytes"))
    played_col = _col(ev, "played")
    played = due & np.where(_is_bool(played_col), _truthy(played_col), on_time)
    bytes_played: float | None = None
    if np.any(due & ~np.isnan(bytes_col)):
        bytes_played = float(np.nansum(bytes_col[played]))
    recv = (name == "chunk_recv") & ~np.isnan(bytes_col)
    from_peers = from_server = None
    if recv.any():
        source = _col(ev, "source").astype(object).to_numpy()
        from_peers = float(bytes_col[recv & (source == "peer")].sum())
        from_server = float(bytes_col[recv & (source == "server")].sum())

    return ViewerMetrics(
        sessions=len(sessions),
        startup_latency_s=startups[0] if startups else None,
        startup_latencies_s=startups,
        chunks_due=chunks_due,
        chunks_on_time=chunks_on_time,
        continuity_index=continuity,
        stalls=stalls,
        stall_time_s=stall_time,
        play_time_s=play_time,
        rebuffering_ratio=rebuffering,
        playback_lag_mean_s=lag_mean,
        playback_lag_max_s=lag_max,
        bytes_played=bytes_played,
        bytes_from_peers=from_peers,
        bytes_from_server=from_server,
        peer_contribution=peer_contribution(from_peers, bytes_played),
        session_intervals=tuple(
            (s.request if s.request is not None else s.start, s.end)  # type: ignore[misc]
            for s in sessions
        ),
        notes=tuple(notes),
    )


@dataclass
class _Session:
    request: float | None
    start: float | None = None
    end: float | None = None
    ended: bool = False
    stalls: int = 0
    stall_time: float = 0.0
    stall_open: float | None = None


_CONTROL = ("play_request", "playback_start", "stall_start", "stall_end", "playback_end")


def _sessions(t: np.ndarray, name: np.ndarray, close_at: float, notes: list[str]) -> list[_Session]:
    """Walk the viewer's control events and cut them into sessions (see :func:`viewer_metrics`)."""
    sessions: list[_Session] = []
    cur: _Session | None = None

    def finish(s: _Session, at: float) -> None:
        if s.end is None:
            s.end = at
        floor = s.start if s.start is not None else s.request
        if floor is not None and s.end < floor:
            s.end = floor
        if s.stall_open is not None:
            s.stall_time += max(0.0, s.end - s.stall_open)
            s.stall_open = None
            notes.append("a session ended while stalled; the stall runs to the session end")

    for ti, nm in zip(t[np.isin(name, _CONTROL)], name[np.isin(name, _CONTROL)], strict=True):
        ti = float(ti)
        if nm == "play_request":
            if cur is not None:
                finish(cur, ti)
            cur = _Session(request=ti)
            sessions.append(cur)
            continue
        if cur is None or cur.ended:
            if nm != "playback_start":
                continue
            notes.append("playback_start without a play_request: no startup latency for that session")
            cur = _Session(request=None)
            sessions.append(cur)
        if nm == "playback_start":
            if cur.start is None:
                cur.start = ti
        elif nm == "stall_start":
            if cur.start is not None and cur.stall_open is None:
                cur.stall_open = ti
                cur.stalls += 1
        elif nm == "stall_end":
            if cur.stall_open is not None:
                cur.stall_time += max(0.0, ti - cur.stall_open)
                cur.stall_open = None
        elif nm == "playback_end":
            cur.end = ti
            finish(cur, ti)
            cur.ended = True
    if cur is not None and not cur.ended:
        finish(cur, close_at)
    return sessions


def peer_contribution(bytes_from_peers: float | None, bytes_played: float | None) -> float | None:
    """Peer contribution (DESIGN.md): bytes received from peers / bytes played (None if either unknown or
    nothing was played). Can exceed 1 when peers send chunks that are never played."""
    if bytes_from_peers is None or bytes_played is None or bytes_played <= 0:
        return None
    return bytes_from_peers / bytes_played


def savings(server_streams: float | None, unicast_streams: float | None) -> float | None:
    """Server savings (DESIGN.md): ``1 - S / S_unicast``.

    ``S`` is the mean number of concurrent server streams the scheme needed, ``S_unicast`` what plain
    unicast would have needed for the same viewers (one stream per viewer in session: λL by Little's
    law). None when ``S_unicast`` is unknown or 0.
    """
    if server_streams is None or unicast_streams is None or unicast_streams <= 0:
        return None
    return 1.0 - server_streams / unicast_streams


@dataclass(frozen=True)
class ServerLoad:
    """Server load over [start, end] (see :func:`server_load`). None = no such events."""

    start: float
    end: float
    streams: Level | None
    bytes_sent: float | None
    upload_bps_mean: float | None
    upload_bps_peak: float | None
    upload_times: np.ndarray
    upload_bps: np.ndarray

    @property
    def streams_mean(self) -> float | None:
        return self.streams.mean if self.streams is not None else None

    @property
    def streams_peak(self) -> float | None:
        return self.streams.peak if self.streams is not None else None


def server_load(
    events: pd.DataFrame, *, start: float | None = None, end: float | None = None, bin_s: float = 1.0
) -> ServerLoad | None:
    """Concurrent server streams and server upload bit rate over time, mean and peak (DESIGN.md).

    ``events``: the server processes' records (:data:`SERVER_EVENTS`); several servers may be mixed,
    streams are keyed by (node, proc, stream). Concurrent streams: +1 at ``stream_start``, -1 at the
    matching ``stream_end`` (an end without a start is ignored; a stream still open at ``end`` counts
    until ``end``); mean = time average over [start, end], peak = highest level held.
    Upload: ``bytes_sent`` records summed into ``bin_s`` bins by their time stamp; rate per bin =
    8 * bytes / ``bin_s``; mean = 8 * all bytes / (end - start); peak = the highest bin (so it depends
    on ``bin_s``). ``start`` / ``end`` default to the first / last of these events.
    None when the frame holds no server events or the interval is empty.
    """
    if events.empty:
        return None
    name = events["event"].astype(object).to_numpy()
    mask = np.isin(name, tuple(SERVER_EVENTS))
    if not mask.any():
        return None
    ev = events.loc[mask]
    name = name[mask]
    t = ev["t"].to_numpy(dtype=np.float64)
    lo = float(t.min()) if start is None else float(start)
    hi = float(t.max()) if end is None else float(end)
    if not (hi > lo):
        return None

    keys = [
        _col(ev, c).astype(object).to_numpy() for c in ("node", "proc", "stream")
    ]
    order = np.argsort(t, kind="stable")
    changes: list[tuple[float, float]] = []
    open_streams: set[tuple[Any, ...]] = set()
    anonymous = 0
    any_stream = False
    for i in order:
        nm = name[i]
        if nm not in ("stream_start", "stream_end"):
            continue
        any_stream = True
        sid = keys[2][i]
        anon = sid is None or (isinstance(sid, float) and math.isnan(sid))
        key = (keys[0][i], keys[1][i], sid)
        if nm == "stream_start":
            if anon:
                anonymous += 1
            elif key in open_streams:
                continue
            else:
                open_streams.add(key)
            changes.append((float(t[i]), 1.0))
        else:
            if anon:
                if anonymous == 0:
                    continue
                anonymous -= 1
            elif key in open_streams:
                open_streams.discard(key)
            else:
                continue
            changes.append((float(t[i]), -1.0))
    streams = time_weighted_level(changes, lo, hi) if any_stream else None

    sent = name == "bytes_sent"
    nbytes = _numbers(_col(ev, "bytes"))
    sent &= ~np.isnan(nbytes)
    bytes_total = mean_bps = peak_bps = None
    bin_times = np.zeros(0)
    bin_bps = np.zeros(0)
    if sent.any():
        st, sb = t[sent], nbytes[sent]
        inside = (st >= lo) & (st <= hi)
        bytes_total = float(sb[inside].sum())
        mean_bps = 8.0 * bytes_total / (hi - lo)
        nbins = max(1, math.ceil((hi - lo) / bin_s - 1e-9))
        edges = lo + bin_s * np.arange(nbins + 1, dtype=np.float64)
        edges[-1] = max(edges[-1], hi)
        sums, _ = np.histogram(st[inside], bins=edges, weights=sb[inside])
        bin_times = edges[:-1]
        bin_bps = 8.0 * sums / bin_s  # a partial last bin is divided by the full width: never inflated
        peak_bps = float(bin_bps.max())
    return ServerLoad(lo, hi, streams, bytes_total, mean_bps, peak_bps, bin_times, bin_bps)
