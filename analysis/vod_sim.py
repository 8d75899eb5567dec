"""Discrete-event simulation of the VoD delivery policies of :mod:`analysis.vod_model` on a request schedule.

Sits between the closed forms and the emulation: the same policies, driven by the exact request schedule
of a :class:`scenarios.workload.Workload` and a seed (the one an emulated scenario's clients follow), with
every peer, buffer, window and upload slot explicit. ``simulate(policy, params, requests)`` walks the
requests in time order, keeps the per-title state each policy needs and records every server stream as
an interval ``(start, end, share)`` (share 1 = a whole stream at the play rate; partial streams count their
share). :class:`SimResult` turns the intervals into the mean and peak of concurrent server streams over
``[warmup, horizon]`` and a time series. ``python -m analysis.vod_sim --hours 10 --seeds 5`` prints mean ±
95 % CI over the seeds next to the formula of every policy.

Mechanisms (each is what the corresponding formula of :mod:`analysis.vod_model` assumes; see its docstring):

* ``unicast``: a server stream of ``L`` per request.
* ``patching`` / ``patching_opt``: per title, a server multicast opened by a request arriving more than ``T``
  after the current channel started; a joiner within ``T`` gets a server patch as long as its offset.
* ``chaining``, ``promise``, ``dynapeer_unicast`` ("unicast family"): every peer has upload slots (one slot
  of ``c = O/Pr`` if ``c <= 1``, else ``floor(c)`` slots of a whole stream; Chaining: one slot, its
  successor only) and a collaboration window ``W`` (Chaining ``B``, PROMISE ``L``, DynaPeer ``min(L, X B)``);
  a request takes the free slots of the title's peers that arrived at most ``W`` before it, oldest first,
  until it has a whole stream, and the server sends the rest. Used slots stay busy for ``L`` (the serving
  peer stays online until it has sent it).
* ``dynapeer_multicast``: channels and patching window ``P`` as in patching; peer *k* (offset ``x_k`` in its
  channel) is eligible for a stream starting at ``t`` iff ``t - a_k <= X (B - x_k)`` and a slot is free. A
  channel's first ``ceil(N)`` members are its virtual server (``reserve_sources``): they send no patches. A
  joiner's patch takes eligible slots of the other peers, newest first, for its duration; a new channel
  takes eligible slots oldest first (any peer), the server sends the rest (``partial_multicast``), or all
  of it when the peers cannot make a whole stream and partial streams are off.
* ``dynapeer_helpers``: in addition, every new channel of a *needy* title (``lambda_i B < N``) gets
  ``ceil(N) - 1`` helpers (kept from the previous channel if unused, else recruited): viewers of the other
  titles, still watching, with a free slot, not reserved, chosen for the longest usable window
  ``min(X (B - x_h), a_h + L - t)``. A helper joins the channel at its start and counts as an eligible
  peer of the title while ``t - attach <= X (B - x_h)`` and it is still watching. A candidate found busy
  or reserved when looked at leaves the candidate pool (cheap, slightly pessimistic).
* ``pn2pm`` / ``pn2pm_opt``: patching with window ``P`` (``B``, or each title's best from the model) and peers
  uploading at the play rate; a joiner's patch comes from
  any free peer of the title with ``t - a_k <= B - x_k``; a new channel is sourced by the free members of an
  earlier channel of the title whose buffers together hold the lag, ``sum (B - x_k) >= t - t_channel``
  (the largest buffers are used; they are then busy for ``L``), else by the server.

Every policy walks the same requests; nothing is random inside the simulation, so a schedule gives one
result. Speed: plain Python over the requests (about 6,000 per 10 simulated hours at Table 2); all policies
for 10 hours take well under a second (``python -m analysis.bench_vod``).
"""

from __future__ import annotations

import argparse
import heapq
import math
import sys
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from analysis.vod_model import LABELS, PAPER_TABLE2, POLICIES, VoDParams, patch_windows, server_load

EPS = 1e-9
T975: dict[int, float] = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
                          9: 2.262, 10: 2.228, 15: 2.131, 20: 2.086, 30: 2.042}
"""Two-sided 95 % Student t critical values by degrees of freedom (linear between, 1.96 beyond 30)."""


def t975(df: int) -> float:
    """0.975 quantile of Student's t with ``df`` degrees of freedom (table, interpolated)."""
    if df < 1:
        return float("nan")
    if df in T975:
        return T975[df]
    keys = sorted(T975)
    if df > keys[-1]:
        return 1.96
    lo = max(k for k in keys if k < df)
    hi = min(k for k in keys if k > df)
    return T975[lo] + (T975[hi] - T975[lo]) * (df - lo) / (hi - lo)


@dataclass
class SimResult:
    """Server streams of one policy on one schedule: intervals ``(start, end, share)`` in minutes."""

    policy: str
    starts: np.ndarray
    ends: np.ndarray
    shares: np.ndarray
    horizon: float
    warmup: float
    requests: int
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def window(self) -> float:
        return self.horizon - self.warmup

    @property
    def mean(self) -> float:
        """Time-average of concurrent server streams over ``[warmup, horizon]``."""
        lo = np.maximum(self.starts, self.warmup)
        hi = np.minimum(self.ends, self.horizon)
        return float((self.shares * np.clip(hi - lo, 0.0, None)).sum() / self.window)

    def _steps(self) -> tuple[np.ndarray, np.ndarray, float]:
        keep = (self.ends > self.warmup) & (self.starts < self.horizon)
        s = np.maximum(self.starts[keep], self.warmup)
        e = np.minimum(self.ends[keep], self.horizon)
        w = self.shares[keep]
        at_start = s <= self.warmup
        base = float(w[at_start].sum())
        times = np.concatenate([s[~at_start], e])
        delta = np.concatenate([w[~at_start], -w])
        order = np.lexsort((delta, times))  # ends (negative) before starts at the same instant
        return times[order], np.cumsum(delta[order]) + base, base

    @property
    def peak(self) -> float:
        """Largest number of concurrent server streams over ``[warmup, horizon]``."""
        _, level, base = self._steps()
        return float(max(base, level.max() if level.size else base))

    def series(self, step_min: float = 1.0) -> pd.DataFrame:
        """Concurrent server streams sampled every ``step_min`` minutes over ``[warmup, horizon)``."""
        grid = np.arange(self.warmup, self.horizon, step_min)
        times, level, base = self._steps()
        idx = np.searchsorted(times, grid, side="right") - 1
        values = np.where(idx >= 0, level[np.maximum(idx, 0)], base)
        return pd.DataFrame({"time_min": grid, "server_streams": values})


class _Peer:
    __slots__ = ("a", "x", "w", "free", "size", "reserved", "video", "rank")

    def __init__(self, a: float, x: float, w: float, nslots: int, size: float, video: int) -> None:
        self.a = a            # arrival (minutes)
        self.x = x            # offset in its channel (patching look-ahead)
        self.w = w            # collaboration window from its arrival
        self.free = [0.0] * nslots  # each slot free from this time on
        self.size = size      # share of a stream per slot
        self.reserved = -1    # title it is reserved for as a helper, -1 if none
        self.video = video
        self.rank = 0         # member number in its channel (0: the request that opened it)


def _slots(c: float) -> tuple[int, float]:
    return (1, c) if c <= 1 + EPS else (int(math.floor(c + EPS)), 1.0)


class _Recorder:
    def __init__(self) -> None:
        self.starts: list[float] = []
        self.ends: list[float] = []
        self.shares: list[float] = []
        self.counts = {"server_full": 0, "partial": 0, "peers_full": 0}
        self.helper_x: list[float] = []

    def stream(self, t: float, duration: float, share: float) -> None:
        if share > EPS:
            self.starts.append(t)
            self.ends.append(t + duration)
            self.shares.append(share)
        if share >= 1 - EPS:
            self.counts["server_full"] += 1
        elif share > EPS:
            self.counts["partial"] += 1
        else:
            self.counts["peers_full"] += 1


def _take(peers: Iterable[_Peer], t: float, until: float, need: float, ok) -> float:
    """Take free slots of eligible peers (``ok(peer)``) for ``[t, until)`` until ``need`` is covered."""
    for p in peers:
        if need <= EPS:
            break
        if not ok(p):
            continue
        for s, free_at in enumerate(p.free):
            if free_at <= t + EPS:
                p.free[s] = until
                need -= min(p.size, need)
                if need <= EPS:
                    break
    return max(0.0, need)


def _schedule(requests: pd.DataFrame, params: VoDParams) -> tuple[np.ndarray, np.ndarray]:
    titles = params.workload.titles
    pos = {int(v): i for i, v in enumerate(titles)}
    t = requests["time_s"].to_numpy(dtype=float) / 60.0
    try:
        v = np.fromiter((pos[int(x)] for x in requests["video"].to_numpy()), dtype=int, count=len(requests))
    except KeyError as err:
        raise ValueError(f"request for title {err.args[0]} which the workload does not have") from None
    return t, v


def _sim_unicast(t: np.ndarray, v: np.ndarray, params: VoDParams, rec: _Recorder) -> None:
    L = params.L  # noqa: N806
    for ti in t:
        rec.stream(float(ti), L, 1.0)


def _sim_patching(policy: str, t: np.ndarray, v: np.ndarray, params: VoDParams, rec: _Recorder) -> None:
    L = params.L  # noqa: N806
    T = patch_windows(policy, params)  # noqa: N806
    start = np.full(len(params.rates), -np.inf)
    for ti, vi in zip(t.tolist(), v.tolist(), strict=True):
        x = ti - start[vi]
        if x <= T[vi]:
            rec.stream(ti, x, 1.0)
        else:
            start[vi] = ti
            rec.stream(ti, L, 1.0)


def _sim_unicast_family(policy: str, t: np.ndarray, v: np.ndarray, params: VoDParams, rec: _Recorder) -> None:
    L, B = params.L, params.B  # noqa: N806
    if policy == "chaining":
        c, window = min(1.0, params.chaining_c), B
        nslots, size = 1, c
    else:
        c = params.c
        window = L if policy == "promise" else params.unicast_window
        nslots, size = _slots(c)
    peers: list[deque[_Peer]] = [deque() for _ in range(len(params.rates))]
    for ti, vi in zip(t.tolist(), v.tolist(), strict=True):
        dq = peers[vi]
        while dq and ti - dq[0].a > window + EPS:
            dq.popleft()
        need = _take(dq, ti, ti + L, 1.0, lambda p: True)
        rec.stream(ti, L, need)
        dq.append(_Peer(ti, 0.0, window, nslots, size, vi))


@dataclass
class _Channel:
    start: float
    members: list[_Peer]


def _sim_dynapeer_multicast(t: np.ndarray, v: np.ndarray, params: VoDParams, rec: _Recorder,
                            helpers_on: bool) -> None:
    L, B, X = params.L, params.B, params.X  # noqa: N806
    P = patch_windows("dynapeer_helpers" if helpers_on else "dynapeer_multicast", params)  # noqa: N806
    nslots, size = _slots(params.c)
    n_titles = len(params.rates)
    needy = params.needy() if helpers_on else np.zeros(n_titles, dtype=bool)
    k_help = params.helper_count
    n_vs = params.vs_size if params.reserve_sources else 0
    max_w = X * B
    peers: list[deque[_Peer]] = [deque() for _ in range(n_titles)]
    channel_start = np.full(n_titles, -np.inf)
    members = [0] * n_titles  # members of the title's current channel so far
    attached: list[list[tuple[_Peer, float]]] = [[] for _ in range(n_titles)]  # (helper, attach time)
    pool: list[tuple[float, float, int, _Peer]] = []  # helper candidates: (x, -a, serial, peer)
    serial = 0

    def own_ok(ti: float):
        def ok(p: _Peer) -> bool:
            return p.reserved < 0 and ti - p.a <= p.w + EPS
        return ok

    def patch_ok(ti: float):
        def ok(p: _Peer) -> bool:
            return p.reserved < 0 and p.rank >= n_vs and ti - p.a <= p.w + EPS
        return ok

    def helper_ok(vi: int):
        def ok(p: _Peer) -> bool:
            return p.reserved == vi
        return ok

    def usable_helpers(ti: float, vi: int) -> list[_Peer]:
        return [h for h, at in attached[vi] if ti - at <= X * (B - h.x) + EPS and ti <= h.a + L]

    def usable_for(p: _Peer, ti: float) -> float:
        return min(X * (B - p.x), p.a + L - ti)

    def recruit(ti: float, vi: int, count: int) -> list[_Peer]:
        spare: list[tuple[float, float, int, _Peer]] = []
        while pool and len(spare) < 4 * count + 8:
            item = heapq.heappop(pool)
            p = item[3]
            if p.reserved >= 0 or ti >= p.a + L or any(f > ti + EPS for f in p.free):
                continue  # reserved, gone or busy: leaves the candidate pool
            spare.append(item)
        spare.sort(key=lambda it: -usable_for(it[3], ti))
        found: list[_Peer] = []
        for item in spare:
            if len(found) < count and usable_for(item[3], ti) > 0:
                item[3].reserved = vi
                found.append(item[3])
            else:
                heapq.heappush(pool, item)
        return found

    for ti, vi in zip(t.tolist(), v.tolist(), strict=True):
        dq = peers[vi]
        while dq and ti - dq[0].a > max_w + EPS:
            dq.popleft()
        x = ti - channel_start[vi]
        if x <= P[vi] + EPS:
            # joiner: a patch of x minutes from the title's helpers, then the newest eligible peers that are
            # not a channel's virtual server; the server sends the rest
            need = 1.0
            if helpers_on and attached[vi]:
                need = _take(usable_helpers(ti, vi), ti, ti + x, need, helper_ok(vi))
            need = _take(reversed(dq), ti, ti + x, need, patch_ok(ti))
            rec.stream(ti, x, need)
            peer = _Peer(ti, x, X * (B - x), nslots, size, vi)
            peer.rank = members[vi]
            members[vi] += 1
        else:
            # new channel: from helpers, then the oldest eligible peers; the server sends the rest, or all of it
            cands = usable_helpers(ti, vi) if helpers_on else []
            ok = own_ok(ti)
            free_share = sum(p.size * sum(1 for f in p.free if f <= ti + EPS) for p in cands)
            if not params.partial_multicast:
                free_share += sum(p.size * sum(1 for f in p.free if f <= ti + EPS) for p in dq if ok(p))
            if params.partial_multicast or free_share >= 1 - EPS:
                need = _take(cands, ti, ti + L, 1.0, helper_ok(vi))
                need = _take(dq, ti, ti + L, need, ok)
            else:
                need = 1.0
            rec.stream(ti, L, need)
            channel_start[vi] = ti
            if helpers_on:
                kept: list[tuple[_Peer, float]] = []
                for h, _ in attached[vi]:
                    if all(f <= ti + EPS for f in h.free) and ti < h.a + L:
                        kept.append((h, ti))  # unused: joins the new channel at its start
                    else:
                        h.reserved = -1  # gone, or busy sending: no longer this title's helper
                attached[vi] = kept
                if needy[vi] and len(kept) < k_help:
                    wanted = k_help - len(kept)
                    new = recruit(ti, vi, wanted)
                    kept.extend((h, ti) for h in new)
                    rec.counts["helpers_recruited"] = rec.counts.get("helpers_recruited", 0) + len(new)
                    rec.counts["helpers_missing"] = rec.counts.get("helpers_missing", 0) + wanted - len(new)
                    rec.helper_x.extend(h.x for h in new)
            peer = _Peer(ti, 0.0, X * B, nslots, size, vi)
            peer.rank = 0
            members[vi] = 1
        dq.append(peer)
        if helpers_on and not needy[vi] and peer.rank >= n_vs:
            serial += 1
            heapq.heappush(pool, (peer.x, -peer.a, serial, peer))


def _sim_pn2pm(policy: str, t: np.ndarray, v: np.ndarray, params: VoDParams, rec: _Recorder) -> None:
    L, B = params.L, params.B  # noqa: N806
    P = patch_windows(policy, params)  # noqa: N806
    if params.pn2pm_c < 1 - EPS:
        raise ValueError("the Pn2Pm model needs peers uploading at least the play rate (pn2pm_upload_kbps)")
    nslots, size = _slots(params.pn2pm_c)
    n_titles = len(params.rates)
    channels: list[deque[_Channel]] = [deque() for _ in range(n_titles)]
    for ti, vi in zip(t.tolist(), v.tolist(), strict=True):
        chs = channels[vi]
        while chs and ti - chs[0].start > L + EPS:
            chs.popleft()
        cur = chs[-1] if chs else None
        if cur is not None and ti - cur.start <= P[vi] + EPS:
            x = ti - cur.start
            cands = [p for ch in reversed(chs) for p in reversed(ch.members)]
            need = _take(cands, ti, ti + x, 1.0, lambda p, ti=ti: ti - p.a <= B - p.x + EPS)
            rec.stream(ti, x, need)
            cur.members.append(_Peer(ti, x, B - x, nslots, size, vi))
            continue
        sourced = False
        for ch in reversed(chs):
            lag = ti - ch.start
            free = sorted((p for p in ch.members if any(f <= ti + EPS for f in p.free)), key=lambda p: p.x)
            if sum(B - p.x for p in free) + EPS < lag:
                continue
            held = 0.0
            for p in free:
                if held >= lag - EPS:
                    break
                s = next(i for i, f in enumerate(p.free) if f <= ti + EPS)
                p.free[s] = ti + L
                held += B - p.x
            sourced = True
            break
        rec.stream(ti, L, 0.0 if sourced else 1.0)
        chs.append(_Channel(ti, [_Peer(ti, 0.0, B, nslots, size, vi)]))


def simulate(policy: str, params: VoDParams = PAPER_TABLE2, requests: pd.DataFrame | None = None, seed: int = 1,
             warmup_min: float | None = None) -> SimResult:
    """Run ``policy`` on ``requests`` (default: ``params.workload.requests(seed)``); measure after ``warmup_min``
    (default ``2 L``, capped at half the duration)."""
    if requests is None:
        requests = params.workload.requests(seed)
    t, v = _schedule(requests, params)
    horizon = params.workload.duration_min
    warmup = min(2 * params.L, horizon / 2) if warmup_min is None else warmup_min
    if not 0 <= warmup < horizon:
        raise ValueError(f"warm-up {warmup} must lie in [0, duration {horizon})")
    rec = _Recorder()
    if policy == "unicast":
        _sim_unicast(t, v, params, rec)
    elif policy in ("patching", "patching_opt"):
        _sim_patching(policy, t, v, params, rec)
    elif policy in ("chaining", "promise", "dynapeer_unicast"):
        _sim_unicast_family(policy, t, v, params, rec)
    elif policy == "dynapeer_multicast":
        _sim_dynapeer_multicast(t, v, params, rec, helpers_on=False)
    elif policy == "dynapeer_helpers":
        _sim_dynapeer_multicast(t, v, params, rec, helpers_on=True)
    elif policy in ("pn2pm", "pn2pm_opt"):
        _sim_pn2pm(policy, t, v, params, rec)
    else:
        raise ValueError(f"unknown policy {policy!r}; known: {', '.join(POLICIES)}")
    if rec.helper_x:
        rec.counts["helper_offset_mean_ms"] = int(round(60_000 * float(np.mean(rec.helper_x))))
    return SimResult(policy, np.asarray(rec.starts, dtype=float), np.asarray(rec.ends, dtype=float),
                     np.asarray(rec.shares, dtype=float), horizon, warmup, len(t), rec.counts)


@dataclass
class Summary:
    """Mean ± 95 % CI over seeds of one policy, next to its formula."""

    policy: str
    means: list[float]
    peaks: list[float]
    formula: float
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def mean(self) -> float:
        return float(np.mean(self.means))

    @property
    def ci95(self) -> float:
        n = len(self.means)
        return float(t975(n - 1) * np.std(self.means, ddof=1) / math.sqrt(n)) if n > 1 else float("nan")

    @property
    def rel_error(self) -> float:
        """(simulated mean - formula) / formula."""
        return self.mean / self.formula - 1 if self.formula else float("nan")

    def served(self) -> tuple[float, float, float]:
        """Percent of streams (channels, patches, unicast streams) sent wholly by the server, partly, by peers."""
        keys = ("server_full", "partial", "peers_full")
        total = sum(self.counts.get(k, 0) for k in keys)
        return tuple(100.0 * self.counts.get(k, 0) / total if total else float("nan") for k in keys)  # type: ignore


def run_many(policies: Sequence[str] = POLICIES, params: VoDParams = PAPER_TABLE2, seeds: Sequence[int] = (1,),
             warmup_min: float | None = None) -> dict[str, Summary]:
    """Simulate every policy on the same schedule per seed; summarise per policy."""
    out = {p: Summary(p, [], [], server_load(p, params)) for p in policies}
    for seed in seeds:
        req = params.workload.requests(seed)
        for p in policies:
            t0 = time.perf_counter()
            res = simulate(p, params, req, warmup_min=warmup_min)
            out[p].seconds += time.perf_counter() - t0
            out[p].means.append(res.mean)
            out[p].peaks.append(res.peak)
            for k, n in res.counts.items():
                out[p].counts[k] = out[p].counts.get(k, 0) + n
    return out


def summary_text(summaries: dict[str, Summary], params: VoDParams, seeds: int, warmup: float) -> str:
    lines = [
        f"Simulation: {params.workload.duration_min / 60:g} simulated hours per seed, {seeds} seeds, "
        f"warm-up {warmup:g} min excluded; mean concurrent server streams, mean ± 95 % CI over seeds",
        "",
        f"{'policy':30} {'simulated':>17} {'formula':>8} {'sim/formula':>11} {'peak':>6}   "
        f"{'streams by server / partly / peers':>34}",
    ]
    for s in summaries.values():
        ci = f"± {s.ci95:5.1f}" if seeds > 1 else ""
        srv, part, peers = s.served()
        lines.append(f"{LABELS[s.policy]:30} {s.mean:8.1f} {ci:>8} {s.formula:8.1f} {100 * s.rel_error:+10.1f}% "
                     f"{np.mean(s.peaks):6.0f}   {srv:12.0f}% {part:9.0f}% {peers:9.0f}%")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.vod_sim",
                                     description="Simulate the VoD policies at the DynaPeer paper's Table 2.")
    parser.add_argument("--hours", type=float, default=10.0, help="simulated hours per seed (default 10)")
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds, 1..N (default 5)")
    parser.add_argument("--warmup", type=float, default=None, help="warm-up minutes excluded (default 2 L)")
    parser.add_argument("--policy", action="append", choices=POLICIES, help="only these policies (repeatable)")
    parser.add_argument("--patch-window", type=float, help="DynaPeer's patching window P, minutes (default B)")
    args = parser.parse_args(argv)
    params = replace(PAPER_TABLE2, workload=replace(PAPER_TABLE2.workload, duration_min=args.hours * 60.0),
                     patch_window_min=args.patch_window)
    policies = tuple(args.policy) if args.policy else POLICIES
    warmup = min(2 * params.L, params.workload.duration_min / 2) if args.warmup is None else args.warmup
    summaries = run_many(policies, params, range(1, args.seeds + 1), warmup_min=warmup)
    print(summary_text(summaries, params, args.seeds, warmup))
    sim_s = sum(s.seconds for s in summaries.values())
    print(f"\nsimulation time: {sim_s:.2f} s for {len(policies)} policies x {args.seeds} seeds "
          f"({sim_s / max(1, args.seeds):.2f} s per seed for all policies)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

