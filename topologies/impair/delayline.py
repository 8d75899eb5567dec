"""User-space delay line: emulates link delay, jitter and loss on NFQUEUE queues (this kernel has no netem).

Run inside a node's network namespace as ``python -m topologies.impair.delayline --config PATH``.
iptables rules (see :mod:`topologies.impair.nfqueue_rules`) steer each emulated link direction into an
NFQUEUE; this process holds every queued packet until its release time and then issues ACCEPT, or DROP
for emulated loss. The rules carry no ``--queue-bypass``: if this process dies the link goes dark.

Design (one thread, no locks): an event loop ``select()``s on the queues' netlink sockets plus a signal
wake-up socket, with a timeout equal to the next release time. ``netfilterqueue`` binds the queues and
reads them (COPY_META: no payload copied); only each packet's id and release time are kept, the kernel
holds the packet. Without reordering a queue is a FIFO (``release_i = max(release_{i-1}, arrival_i + delay
+ jitter_i)``) and everything due is released by one NFQNL_MSG_VERDICT_BATCH message written straight to
the netlink socket; with ``reorder: true`` it is a heap and due packets get one verdict each (still one
write). Lost packets are dropped on arrival. Per-packet delays and loss decisions are drawn in numpy blocks
from the queue's seeded generator, so a run is reproducible.

Config (JSON)::

    {"queues": [{"queue_num": 11, "direction": "h1->r1", "delay_s": 0.02, "jitter_s": 0.005,
                 "jitter_distribution": "normal" | "uniform", "reorder": false,
                 "loss": {"model": "none"} | {"model": "random", "p": 0.01}
                       | {"model": "gilbert", "p": 0.01, "r": 0.3, "h": 0.0, "k": 1.0},
                 "seed": 12345}],
     "stats_file": "/path/delayline-h1.json", "ready_file": "/path/delayline-h1.ready",
     "kernel_queue_maxlen": 65536, "sched_fifo_priority": 10, "late_threshold_s": 0.001, "coalesce_s": 0}

The last four keys are optional (defaults shown). ``sched_fifo_priority`` runs the process SCHED_FIFO
(like netem, which runs in softirq, link emulation then preempts applications); 0 keeps SCHED_OTHER, and
without the privilege it falls back to SCHED_OTHER with a note on stderr. ``coalesce_s`` > 0 sleeps that
long after each read so that arrivals are read in batches: fewer wake-ups (about 40 % less CPU at 20k
packets/s with 1e-4) for up to that much extra delay; worth it only at high packet rates.

Signals: SIGHUP re-reads the config and applies new delay/jitter/loss/reorder parameters to the bound
queues (packets already held keep their release times); SIGUSR1 writes the stats file now; SIGTERM or
SIGINT accepts every held packet, writes the stats file and exits 0. Exit status 2: bad config or a queue
that cannot be bound (message on stderr).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import heapq
import json
import math
import os
import select
import signal
import socket
import struct
import sys
import time
import warnings
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

BLOCK = 2048  # packets per block of pre-drawn delays / loss decisions
HIST_BIN_S = 10e-6  # lateness histogram resolution
HIST_BINS = 10_000  # 10 us x 10_000 = 100 ms; later releases land in the last bin
DEFAULT_QUEUE_MAXLEN = 65536
DEFAULT_SCHED_FIFO = 10
SOCK_RCVBUF = 16 * 1024 * 1024
_LOST = -1.0
_ID = struct.Struct("!I")


class ConfigError(ValueError):
    """The delay-line config is malformed."""


@dataclass
class QueueParams:
    """Link-direction parameters of one queue (the part SIGHUP may change)."""

    queue_num: int
    direction: str = ""
    delay_s: float = 0.0
    jitter_s: float = 0.0
    jitter_distribution: str = "normal"
    reorder: bool = False
    loss: dict[str, Any] = field(default_factory=lambda: {"model": "none"})
    seed: int = 0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QueueParams:
        try:
            qn = int(d["queue_num"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"queue entry without a valid queue_num: {d!r}") from exc
        if not 0 <= qn <= 65535:
            raise ConfigError(f"queue_num {qn} out of range 0..65535")
        p = cls(
            queue_num=qn,
            direction=str(d.get("direction", "")),
            delay_s=float(d.get("delay_s", 0.0)),
            jitter_s=float(d.get("jitter_s", 0.0)),
            jitter_distribution=str(d.get("jitter_distribution", "normal")),
            reorder=bool(d.get("reorder", False)),
            loss=dict(d.get("loss") or {"model": "none"}),
            seed=int(d.get("seed", 0)),
        )
        p.validate()
        return p

    def validate(self) -> None:
        q = f"queue {self.queue_num}"
        if not (self.delay_s >= 0 and math.isfinite(self.delay_s)):
            raise ConfigError(f"{q}: delay_s must be >= 0")
        if not (self.jitter_s >= 0 and math.isfinite(self.jitter_s)):
            raise ConfigError(f"{q}: jitter_s must be >= 0")
        if self.jitter_distribution not in ("normal", "uniform"):
            raise ConfigError(f"{q}: jitter_distribution must be 'normal' or 'uniform'")
        model = self.loss.get("model", "none")
        if model == "none":
            return
        if model == "random":
            _prob(self.loss, "p", q)
        elif model == "gilbert":
            _prob(self.loss, "p", q)
            _prob(self.loss, "r", q)
            self.loss.setdefault("h", 0.0)
            self.loss.setdefault("k", 1.0)
            _prob(self.loss, "h", q)
            _prob(self.loss, "k", q)
        else:
            raise ConfigError(f"{q}: unknown loss model {model!r} (none, random, gilbert)")


def _prob(d: dict[str, Any], key: str, where: str) -> float:
    try:
        v = float(d[key])
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: loss.{key} missing or not a number") from exc
    if not 0.0 <= v <= 1.0:
        raise ConfigError(f"{where}: loss.{key}={v} is not a probability")
    return v


@dataclass
class Config:
    """The whole config file."""

    queues: list[QueueParams]
    stats_file: str | None
    ready_file: str | None
    kernel_queue_maxlen: int = DEFAULT_QUEUE_MAXLEN
    sched_fifo_priority: int = DEFAULT_SCHED_FIFO
    late_threshold_s: float = 0.001
    coalesce_s: float = 0.0

    @classmethod
    def load(cls, path: str | Path) -> Config:
        try:
            raw = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from exc
        if not isinstance(raw, dict) or not isinstance(raw.get("queues"), list) or not raw["queues"]:
            raise ConfigError("config needs a non-empty 'queues' list")
        queues = [QueueParams.from_dict(q) for q in raw["queues"]]
        nums = [q.queue_num for q in queues]
        if len(set(nums)) != len(nums):
            raise ConfigError(f"duplicate queue_num in {nums}")
        return cls(
            queues=queues,
            stats_file=raw.get("stats_file"),
            ready_file=raw.get("ready_file"),
            kernel_queue_maxlen=int(raw.get("kernel_queue_maxlen", DEFAULT_QUEUE_MAXLEN)),
            sched_fifo_priority=int(raw.get("sched_fifo_priority", DEFAULT_SCHED_FIFO)),
            late_threshold_s=float(raw.get("late_threshold_s", 0.001)),
            coalesce_s=max(0.0, float(raw.get("coalesce_s", 0.0))),
        )


class DelaySampler:
    """Draws per-packet delays (seconds) or ``_LOST`` in blocks, from one seeded generator."""

    def __init__(self, params: QueueParams) -> None:
        self.rng = np.random.default_rng(params.seed)
        self.params = params
        self.bad = False  # Gilbert-Elliott state, carried across blocks and parameter changes

    def block(self, n: int = BLOCK) -> list[float]:
        p = self.params
        rng = self.rng
        if p.jitter_s > 0:
            if p.jitter_distribution == "normal":
                d = p.delay_s + rng.normal(0.0, p.jitter_s, n)
            else:
                d = p.delay_s + rng.uniform(-p.jitter_s, p.jitter_s, n)
            np.maximum(d, 0.0, out=d)
        else:
            d = np.full(n, p.delay_s)
        lost = self.loss_mask(n)
        if lost is not None:
            d[lost] = _LOST
        return d.tolist()

    def loss_mask(self, n: int) -> np.ndarray | None:
        loss = self.params.loss
        model = loss.get("model", "none")
        if model == "random":
            prob = float(loss["p"])
            return self.rng.random(n) < prob if prob > 0 else None
        if model == "gilbert":
            bad = self.gilbert_states(n, float(loss["p"]), float(loss["r"]))
            u = self.rng.random(n)
            p_bad = 1.0 - float(loss.get("h", 0.0))
            p_good = 1.0 - float(loss.get("k", 1.0))
            return np.where(bad, u < p_bad, u < p_good)
        return None

    def gilbert_states(self, n: int, p: float, r: float) -> np.ndarray:
        """State (True = bad) of the next n packets, netem gemodel semantics.

        A packet is judged in the state it finds; then the chain moves good->bad with probability p and
        bad->good with probability r. Sojourns are geometric, so the sequence is built from run lengths
        drawn 256 at a time (vectorised); memorylessness lets a block start a fresh run in the carried-over
        state when its last run was cut by the block end.
        """
        parts = []
        remaining = n
        state = self.bad
        m = 256
        while remaining > 0:
            run_state = np.empty(m, dtype=bool)
            run_state[0::2] = state
            run_state[1::2] = not state
            leave = np.where(run_state, r, p)
            runs = np.full(m, n + 1, dtype=np.int64)  # leave == 0: the state lasts beyond the block
            ok = leave > 0.0
            if ok.any():
                runs[ok] = self.rng.geometric(leave[ok])
            cum = np.cumsum(runs)
            k = int(np.searchsorted(cum, remaining))  # first run that reaches the end of the block
            if k >= m:  # all m runs (an even number) end inside the block: same state again
                parts.append(np.repeat(run_state, runs))
                remaining -= int(cum[-1])
                continue
            take = runs[: k + 1].copy()
            take[k] -= int(cum[k]) - remaining
            parts.append(np.repeat(run_state[: k + 1], take))
            state = (not run_state[k]) if int(cum[k]) == remaining else bool(run_state[k])
            remaining = 0
        self.bad = bool(state)
        return np.concatenate(parts)


class ReleaseClock:
    """Earliest release time over a process's queues; lets the read path release in the middle of a burst."""

    def __init__(self) -> None:
        self.next_due = math.inf
        self.queues: list[DelayQueue] = []

    def release_due(self, now: float) -> float:
        nxt = math.inf
        for q in self.queues:
            t = q.release(now)
            if t < nxt:
                nxt = t
        self.next_due = nxt
        return nxt


# Raw verdict messages (nfnetlink_queue), written straight to the queue's netlink socket: one
# NFQNL_MSG_VERDICT_BATCH accepts every queued packet up to an id in a single syscall.
_NLMSG = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, portid
_NFGEN = struct.Struct("!BBH")  # nfgenmsg: family, version, res_id (queue number, big endian)
_ATTR = struct.Struct("=HH")  # nlattr: len, type
_VHDR = struct.Struct("!II")  # nfqnl_msg_verdict_hdr: verdict, packet id
_NFNL_SUBSYS_QUEUE = 3
_NFQNL_MSG_VERDICT = 1
_NFQNL_MSG_VERDICT_BATCH = 3
_NFQA_VERDICT_HDR = 2
_NLM_F_REQUEST = 1
NF_DROP = 0
NF_ACCEPT = 1
_VERDICT_LEN = _NLMSG.size + _NFGEN.size + _ATTR.size + _VHDR.size
_ID_OFFSET = _VERDICT_LEN - 4


def verdict_msg(queue_num: int, verdict: int, pkt_id: int, batch: bool) -> bytearray:
    """One verdict message; with ``batch`` it applies to every queued packet with an id <= ``pkt_id``."""
    mtype = (_NFNL_SUBSYS_QUEUE << 8) | (_NFQNL_MSG_VERDICT_BATCH if batch else _NFQNL_MSG_VERDICT)
    return bytearray(_NLMSG.pack(_VERDICT_LEN, mtype, _NLM_F_REQUEST, 0, 0)
                     + _NFGEN.pack(socket.AF_UNSPEC, 0, queue_num)
                     + _ATTR.pack(_ATTR.size + _VHDR.size, _NFQA_VERDICT_HDR) + _VHDR.pack(verdict, pkt_id))


class DelayQueue:
    """One bound NFQUEUE queue and the packets it holds (by packet id; the kernel keeps the packets).

    FIFO mode keeps two parallel deques (release times, ids): ids and release times both grow, so
    releasing "everything due" is one batch ACCEPT up to the last due id. Reorder mode keeps a heap of
    (release time, id) and sends one ACCEPT per packet (all due ones in a single write).
    """

    def __init__(self, params: QueueParams, late_threshold_s: float, clock: ReleaseClock | None = None) -> None:
        self.params = params
        self.clock = clock or ReleaseClock()
        self.num = params.queue_num
        self.sampler = DelaySampler(params)
        self._delays: list[float] = []
        self._i = 0
        self._n = 0
        self.fifo = not params.reorder
        self.times: deque[float] = deque()
        self.ids: deque[int] = deque()
        self.heap: list[tuple[float, int]] = []
        self._last = 0.0
        self.late_threshold_s = late_threshold_s
        self.seen = 0
        self.passed = 0
        self.dropped = 0
        self.max_held = 0
        self.flushed_at_exit = 0
        self.hist = [0] * (HIST_BINS + 1)
        self.nfq: Any = None
        self.fd = -1
        self.passthrough = False
        self._batch = verdict_msg(self.num, NF_ACCEPT, 0, batch=True)
        self._single = bytes(verdict_msg(self.num, NF_ACCEPT, 0, batch=False))

    # -- binding --------------------------------------------------------------------------------
    def bind(self, maxlen: int) -> None:
        from netfilterqueue import COPY_META, NetfilterQueue

        nfq = NetfilterQueue()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                nfq.bind(self.num, self._on_packet, max_len=maxlen, mode=COPY_META, range=0,
                         sock_len=SOCK_RCVBUF)
        except OSError as exc:
            raise OSError(f"cannot bind NFQUEUE {self.num} ({self.params.direction}): {exc} "
                          "(another process bound to it? not root?)") from exc
        self.nfq = nfq
        self.fd = nfq.get_fd()
        os.set_blocking(self.fd, False)

    def unbind(self) -> None:
        if self.nfq is not None:
            self.nfq.unbind()
            self.nfq = None

    # -- parameters -----------------------------------------------------------------------------
    def apply(self, params: QueueParams) -> None:
        """New link parameters: applied to packets arriving from now on; held packets keep their times."""
        self.sampler.params = params  # same generator and Gilbert state: the run stays reproducible
        self.params = params
        self._i = self._n = 0  # discard pre-drawn values of the old parameters
        if params.reorder and self.fifo:
            self.heap = list(zip(self.times, self.ids, strict=True))  # sorted, hence a heap
            self.times.clear()
            self.ids.clear()
            self.fifo = False
        elif not params.reorder and not self.fifo:
            # Held packets are released one by one (their ids are not in release order); the FIFO
            # takes new packets only once they are gone, see release().
            self.fifo = True
            self._last = max((t for t, _ in self.heap), default=0.0)

    # -- hot path -------------------------------------------------------------------------------
    def _on_packet(self, pkt: Any) -> None:
        self.seen += 1
        if self.passthrough:
            pkt.accept()
            self.passed += 1
            self.flushed_at_exit += 1
            return
        i = self._i
        if i >= self._n:
            self._delays = self.sampler.block()
            self._n = len(self._delays)
            i = 0
        d = self._delays[i]
        self._i = i + 1
        if d < 0.0:
            pkt.drop()
            self.dropped += 1
            return
        now = time.monotonic()
        t = now + d
        if self.fifo:
            if t < self._last:
                t = self._last
            self._last = t
            times = self.times
            times.append(t)
            self.ids.append(pkt.id)
            n = len(times) + len(self.heap)
        else:
            heap = self.heap
            heapq.heappush(heap, (t, pkt.id))
            n = len(heap)
        if n > self.max_held:
            self.max_held = n
        clock = self.clock
        if now >= clock.next_due:  # a long burst is being read: release what fell due meanwhile
            clock.release_due(now)

    def poll(self) -> None:
        """Read every packet waiting on the netlink socket (non-blocking)."""
        self.nfq.run(False)

    def release(self, now: float) -> float:
        """Accept every packet due at ``now``; return the next release time (inf if none held)."""
        if self.heap:
            self._release_heap(now)
            if not self.fifo:
                return self.heap[0][0] if self.heap else math.inf
            if self.heap:  # reorder -> FIFO switch still draining the old heap
                return min(self.heap[0][0], self.times[0] if self.times else math.inf)
        times = self.times
        if not times or times[0] > now:
            return times[0] if times else math.inf
        hist = self.hist
        top = HIST_BINS
        scale = 1.0 / HIST_BIN_S
        popt = times.popleft
        popid = self.ids.popleft
        n = 0
        last_id = 0
        while times and times[0] <= now:
            b = int((now - popt()) * scale)
            hist[b if b < top else top] += 1
            last_id = popid()
            n += 1
        msg = self._batch
        _ID.pack_into(msg, _ID_OFFSET, last_id)
        os.write(self.fd, msg)
        self.passed += n
        return times[0] if times else math.inf

    def _release_heap(self, now: float) -> None:
        heap = self.heap
        hist = self.hist
        top = HIST_BINS
        scale = 1.0 / HIST_BIN_S
        out = []
        single = self._single
        pop = heapq.heappop
        while heap and heap[0][0] <= now:
            t, pid = pop(heap)
            b = int((now - t) * scale)
            hist[b if b < top else top] += 1
            out.append(single[:_ID_OFFSET] + _ID.pack(pid))
        if out:
            self._write_all(out)
            self.passed += len(out)

    def _write_all(self, msgs: list[bytes]) -> None:
        """Several verdict messages, up to ~64 KiB per write."""
        per = 65536 // _VERDICT_LEN
        for k in range(0, len(msgs), per):
            os.write(self.fd, b"".join(msgs[k:k + per]))

    def held(self) -> int:
        return len(self.times) + len(self.heap)

    def flush(self) -> None:
        """Accept everything still held, in release order (shutdown)."""
        n = self.held()
        if self.heap:
            single = self._single
            self._write_all([single[:_ID_OFFSET] + _ID.pack(pid) for _, pid in sorted(self.heap)])
            self.heap = []
        if self.ids:
            msg = self._batch
            _ID.pack_into(msg, _ID_OFFSET, self.ids[-1])
            os.write(self.fd, msg)
            self.times.clear()
            self.ids.clear()
        self.passed += n
        self.flushed_at_exit += n

    # -- stats ----------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        total = sum(self.hist)
        thr_bin = int(self.late_threshold_s / HIST_BIN_S)
        late = sum(self.hist[thr_bin:])

        def pct(q: float) -> float | None:
            if total == 0:
                return None
            want = q * total
            acc = 0
            for b, c in enumerate(self.hist):
                acc += c
                if acc >= want:
                    return (b + 1) * HIST_BIN_S  # upper edge of the bin
            return None

        return {
            "queue_num": self.num,
            "direction": self.params.direction,
            "delay_s": self.params.delay_s,
            "jitter_s": self.params.jitter_s,
            "reorder": self.params.reorder,
            "loss": self.params.loss,
            "seen": self.seen,
            "passed": self.passed,
            "dropped_by_loss": self.dropped,
            "held": self.held(),
            "max_held": self.max_held,
            "flushed_at_exit": self.flushed_at_exit,
            "late_threshold_s": self.late_threshold_s,
            "late_releases": late,
            "lateness_p50_s": pct(0.50),
            "lateness_p99_s": pct(0.99),
            "lateness_max_bin_s": next(((b + 1) * HIST_BIN_S for b in range(HIST_BINS, -1, -1)
                                        if self.hist[b]), None),
            "kernel": kernel_queue_stats().get(self.num),
        }


def kernel_queue_stats() -> dict[int, dict[str, int]]:
    """Per-queue counters of /proc/net/netfilter/nfnetlink_queue in this namespace."""
    out: dict[int, dict[str, int]] = {}
    try:
        lines = Path("/proc/net/netfilter/nfnetlink_queue").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        f = line.split()
        if len(f) >= 8:
            out[int(f[0])] = {"queue_total": int(f[2]), "queue_dropped": int(f[5]),
                              "user_dropped": int(f[6]), "id_sequence": int(f[7])}
    return out


def _tune_process(priority: int) -> None:
    """Tighter timer wake-ups (1 us slack) and, if asked, SCHED_FIFO."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(29, 1000, 0, 0, 0)  # PR_SET_TIMERSLACK, in ns
    except (OSError, AttributeError):
        pass
    if priority > 0:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        except OSError as exc:
            print(f"delayline: SCHED_FIFO {priority} not available ({exc}); running SCHED_OTHER",
                  file=sys.stderr)


class DelayLine:
    """The process: its queues, the event loop and the signal handling."""

    def __init__(self, config_path: str, config: Config) -> None:
        self.config_path = config_path
        self.config = config
        self.clock = ReleaseClock()
        self.queues = [DelayQueue(p, config.late_threshold_s, self.clock) for p in config.queues]
        self.clock.queues = self.queues
        self._stop = False
        self._reload = False
        self._dump = False

    def bind(self) -> None:
        for q in self.queues:
            q.bind(self.config.kernel_queue_maxlen)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            self._stop = True
        elif signum == signal.SIGHUP:
            self._reload = True
        elif signum == signal.SIGUSR1:
            self._dump = True

    def reload(self) -> None:
        try:
            new = Config.load(self.config_path)
        except ConfigError as exc:
            print(f"delayline: SIGHUP ignored, bad config: {exc}", file=sys.stderr)
            return
        by_num = {p.queue_num: p for p in new.queues}
        for q in self.queues:
            p = by_num.pop(q.num, None)
            if p is not None:
                q.apply(p)
        for num in by_num:
            print(f"delayline: SIGHUP: queue {num} is new; only bound queues can change", file=sys.stderr)

    def write_stats(self) -> None:
        path = self.config.stats_file
        if not path:
            return
        data = {"pid": os.getpid(), "time": time.time(), "queues": [q.stats() for q in self.queues]}
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w") as fh:
            json.dump(data, fh, indent=1)
        os.replace(tmp, path)

    def run(self) -> None:
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        old_wakeup = signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
            signal.signal(s, self._on_signal)
        by_fd = {q.fd: q for q in self.queues}
        rlist = [wake_r.fileno(), *by_fd]
        wfd = wake_r.fileno()
        queues = self.queues
        monotonic = time.monotonic
        sel = select.select
        inf = math.inf
        release_due = self.clock.release_due
        coalesce = self.config.coalesce_s
        sleep = time.sleep
        try:
            while not self._stop:
                nxt = release_due(monotonic())
                timeout = None if nxt == inf else max(0.0, nxt - monotonic())
                ready, _, _ = sel(rlist, [], [], timeout)
                for fd in ready:
                    if fd == wfd:
                        try:
                            while wake_r.recv(4096):
                                pass
                        except BlockingIOError:
                            pass
                        if self._reload:
                            self._reload = False
                            self.reload()
                        if self._dump:
                            self._dump = False
                            self.write_stats()
                    else:
                        by_fd[fd].poll()
                        if coalesce:
                            sleep(coalesce)
        finally:
            # Accept (never drop) what is held, then whatever is still waiting in the socket.
            for q in queues:
                q.flush()
                q.passthrough = True
            for q in queues:
                with contextlib.suppress(OSError):
                    q.poll()
            signal.set_wakeup_fd(old_wakeup)
            wake_r.close()
            wake_w.close()
        self.write_stats()
        for q in queues:
            q.unbind()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m topologies.impair.delayline",
                                 description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--config", required=True, help="JSON config file (see module docstring)")
    args = ap.parse_args(argv)
    try:
        config = Config.load(args.config)
    except ConfigError as exc:
        print(f"delayline: bad config: {exc}", file=sys.stderr)
        return 2
    line = DelayLine(args.config, config)
    try:
        line.bind()
    except (OSError, ImportError) as exc:
        print(f"delayline: {exc}", file=sys.stderr)
        for q in line.queues:
            q.unbind()
        return 2
    _tune_process(config.sched_fifo_priority)
    if config.ready_file:
        Path(config.ready_file).write_text(f"{os.getpid()}\n")
    line.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
