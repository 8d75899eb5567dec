"""Data scheduler of the streaming peer (document 3.3.2.4): which missing chunk to request from which partner.

Pure logic, no I/O and no clock of its own: the peer gives it the time, the candidate chunks (with their
playback deadline and the partners whose buffer maps hold them) and the responses, and it answers with requests
``(chunk, partner)``. Partners are opaque hashable keys (the peer uses its connection objects).

Bookkeeping per partner (:class:`Supplier`): a bandwidth estimate from its past responses (exponentially
weighted; the transfer of a response is taken to start when the previous response on the same connection ended,
because a partner serves one connection's requests in order), the bytes and requests outstanding, timeouts.
The expected completion time of one more request to partner p is ``now + max(queued bytes of p / bw(p), backlog of
p) + size / bw(p)``, where the backlog is what p last said its upload queue (the requests of all its partners) takes
to send (buffer map ``backlog_ms``, counted down since): without it, every requester saw only its own requests and
all of them picked the same fastest suppliers, which then refused most (herding). ``bw(p)`` is capped by the upload
rate p tells (buffer map ``up_kbps``): a partner that refused every request was never measured and kept the
optimistic prior, so it was asked first again and again.

Policies (``policy``):

- ``deadline`` (default; DONet's heuristic): candidates are ordered by urgency, then rarity: first the chunks due
  within ``urgent`` seconds, then the others; within each group the chunk with the fewest suppliers first, then
  the earliest deadline (download mode: no deadlines, rarest first with seeded random ties). Each goes to the
  supplier whose expected completion is before the deadline (enough bandwidth and time left), the earliest such
  one; if none can make it, the earliest anyway (best effort).
- ``round_robin``: the naive baseline: missing chunks in playback order, each requested from the next partner in
  turn that holds it; bandwidth and deadlines are ignored (and the peer puts no deadline in its requests, so the
  suppliers do not do the deadline scheduling for it: ``tell_deadline`` in nodes/peer_config.py).

Both share everything else: at most ``max_outstanding`` requests per partner, one active request per chunk, and a
per-request timeout of ``timeout_factor`` x the expected transfer time, clamped to [``timeout_min``,
``timeout_max``], and at most until ``rescue`` seconds before the chunk's deadline (so a late request is given up
while there is still time to get the chunk elsewhere; never below ``timeout_min`` nor twice the expected transfer
time). A timed-out request frees
its slot, halves the partner's bandwidth estimate and makes the chunk a candidate again, asked from another
supplier where there is one (3.3.2.4: "timers to determine when a request/response have been lost and must be
resent"). A response that arrives after its timeout is still
accepted by the peer and still measures the partner.
"""

from __future__ import annotations

import math
import random
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Literal

Policy = Literal["deadline", "round_robin"]


@dataclass(slots=True)
class Supplier:
    """What the scheduler knows about one partner as a supplier."""

    bw: float  # bytes/s estimate
    outstanding: int = 0
    queued_bytes: int = 0
    last_done: float = 0.0  # when the last response on this connection arrived
    responses: int = 0
    timeouts: int = 0
    timeouts_in_row: int = 0
    refusals: int = 0
    backlog_until: float = 0.0  # when the upload queue it last told of (buffer map ``backlog_ms``) is sent
    told_rate: float = 0.0  # the upload rate it last told (buffer map ``up_kbps``, bytes/s; 0 unknown)

    def rate(self) -> float:
        """Bytes/s one more chunk is expected to come at: the measured bandwidth, but no more than the partner's
        own uplink as it told it (a partner that refused every request so far was never measured)."""
        return min(self.bw, self.told_rate) if self.told_rate else self.bw

    def expected_done(self, now: float, size: int) -> float:
        """When one more chunk of ``size`` bytes would arrive: after our own requests queued there, or after the
        queue the partner told of (requests of all its partners), whichever is longer, plus its transfer."""
        rate = self.rate()
        return now + max(self.queued_bytes / rate, self.backlog_until - now) + size / rate


@dataclass(slots=True)
class Request:
    chunk: int
    partner: Hashable
    size: int
    sent: float
    expected: float
    timeout_at: float
    rescue: bool = False  # the timeout is the deadline's (time to ask elsewhere), not the partner's slowness


@dataclass(slots=True)
class Candidate:
    """A chunk the peer wants: its deadline (None in download mode), its suppliers, its expected size."""

    chunk: int
    deadline: float | None
    holders: Sequence[Hashable]
    size: int


@dataclass
class DataScheduler:
    policy: Policy = "deadline"
    max_outstanding: int = 4
    urgent: float = 3.0
    timeout_factor: float = 3.0
    timeout_min: float = 1.0
    timeout_max: float = 10.0
    rescue: float = 1.5
    ewma: float = 0.3
    rng: random.Random = field(default_factory=random.Random)
    suppliers: dict[Hashable, Supplier] = field(default_factory=dict)
    pending: dict[int, Request] = field(default_factory=dict)  # chunk -> its active request
    tried: dict[int, dict[Hashable, float]] = field(default_factory=dict)  # chunk -> partner -> not asked again
    # for it before this time (its late answer may still come; it said it does not have it)
    _now: float = 0.0
    _rr: int = 0  # round robin pointer
    order: list[Hashable] = field(default_factory=list)  # partners in the order they were added

    # -- partners ---------------------------------------------------------------------------------------------
    def add_partner(self, partner: Hashable, prior_bw: float) -> None:
        if partner not in self.suppliers:
            self.suppliers[partner] = Supplier(bw=max(prior_bw, 1.0))
            self.order.append(partner)

    def remove_partner(self, partner: Hashable) -> list[int]:
        """Forget a partner; its outstanding chunks become candidates again (returned)."""
        self.suppliers.pop(partner, None)
        if partner in self.order:
            self.order.remove(partner)
        lost = [c for c, r in self.pending.items() if r.partner == partner]
        for c in lost:
            del self.pending[c]
        for tried in self.tried.values():
            tried.pop(partner, None)
        return lost

    def on_backlog(self, partner: Hashable, at: float, seconds: float, rate: float = 0.0) -> None:
        """The partner told (at time ``at``) that its queued uploads take ``seconds`` to send, and that it uploads
        at ``rate`` bytes/s (0: not told)."""
        s = self.suppliers.get(partner)
        if s is not None:
            s.backlog_until = at + seconds
            s.told_rate = rate

    def is_pending(self, chunk: int) -> bool:
        return chunk in self.pending

    # -- decisions --------------------------------------------------------------------------------------------
    def plan(self, now: float, candidates: Sequence[Candidate]) -> list[Request]:
        """New requests for some of ``candidates`` (chunks already pending are skipped)."""
        self._now = now
        todo = [c for c in candidates if c.chunk not in self.pending and c.holders]
        if not todo:
            return []
        if self.policy == "round_robin":
            todo.sort(key=lambda c: c.chunk)
            return [r for c in todo if (r := self._round_robin(now, c)) is not None]
        todo.sort(key=lambda c: self._rank(now, c))
        return [r for c in todo if (r := self._deadline(now, c)) is not None]

    def _rank(self, now: float, c: Candidate) -> tuple[int, int, float, float]:
        if c.deadline is None:
            return (1, len(c.holders), math.inf, self.rng.random())
        urgent = 0 if c.deadline - now <= self.urgent else 1
        return (urgent, len(c.holders), c.deadline, 0.0)

    def _free(self, c: Candidate) -> list[Hashable]:
        """Holders with a free request slot that are not excluded for this chunk (a request of it to them timed
        out and may still be answered, or they said they do not have it)."""
        tried = self.tried.get(c.chunk, {})
        return [p for p in c.holders if p in self.suppliers and self.suppliers[p].outstanding < self.max_outstanding
                and tried.get(p, 0.0) <= self._now]

    def _deadline(self, now: float, c: Candidate) -> Request | None:
        free = self._free(c)
        if not free:
            return None
        done = {p: self.suppliers[p].expected_done(now, c.size) for p in free}
        in_time = [p for p in free if c.deadline is None or done[p] <= c.deadline]
        pool = in_time or free
        best = min(done[p] for p in pool)
        ties = [p for p in pool if done[p] == best]
        partner = ties[0] if len(ties) == 1 else max(ties, key=lambda p: (self.suppliers[p].rate(), self.rng.random()))
        return self._request(now, c, partner)

    def _round_robin(self, now: float, c: Candidate) -> Request | None:
        free = set(self._free(c))
        if not free or not self.order:
            return None
        n = len(self.order)
        for step in range(n):
            partner = self.order[(self._rr + step) % n]
            if partner in free:
                self._rr = (self._rr + step + 1) % n
                return self._request(now, c, partner)
        return None

    def _request(self, now: float, c: Candidate, partner: Hashable) -> Request:
        s = self.suppliers[partner]
        expected = s.expected_done(now, c.size)
        timeout = min(self.timeout_max, max(self.timeout_min, self.timeout_factor * (expected - now)))
        rescue = False
        if c.deadline is not None and c.deadline - self.rescue - now < timeout:
            # give up in time to ask someone else before the deadline (but give the request a fair chance: twice
            # its expected transfer time)
            timeout = max(self.timeout_min, 2 * (expected - now), min(timeout, c.deadline - self.rescue - now))
            rescue = True
        req = Request(c.chunk, partner, c.size, now, expected, now + timeout, rescue)
        s.outstanding += 1
        s.queued_bytes += c.size
        if s.outstanding == 1:
            s.last_done = now  # the connection was idle: this transfer starts now
        self.pending[c.chunk] = req
        return req

    # -- outcomes ---------------------------------------------------------------------------------------------
    def _release(self, req: Request) -> Supplier | None:
        s = self.suppliers.get(req.partner)
        if s is not None:
            s.outstanding = max(0, s.outstanding - 1)
            s.queued_bytes = max(0, s.queued_bytes - req.size)
        return s

    def on_response(self, now: float, chunk: int, partner: Hashable, nbytes: int) -> Request | None:
        """A chunk arrived from ``partner``: update its bandwidth; returns the request it answers (None if the
        chunk was not pending from this partner, e.g. after a timeout)."""
        req = self.pending.get(chunk)
        s = self.suppliers.get(partner)
        if req is not None and req.partner == partner:
            del self.pending[chunk]
            self._release(req)
            start = max(req.sent, s.last_done) if s is not None else req.sent
        else:
            req = None
            start = s.last_done if s is not None else now
        self.tried.pop(chunk, None)
        self._now = max(self._now, now)
        if s is not None:
            sample = nbytes / max(now - start, 1e-3)
            s.bw = (1 - self.ewma) * s.bw + self.ewma * sample
            s.last_done = now
            s.responses += 1
            s.timeouts_in_row = 0
        return req

    def on_refused(self, chunk: int, partner: Hashable) -> None:
        """The partner said it does not have the chunk (or is busy): ask someone else (not it again for
        ``timeout_min``), no bandwidth penalty."""
        req = self.pending.get(chunk)
        if req is not None and req.partner == partner:
            del self.pending[chunk]
            s = self._release(req)
            if s is not None:
                s.refusals += 1
            self.tried.setdefault(chunk, {})[partner] = self._now + self.timeout_min

    def expire(self, now: float) -> list[Request]:
        """Requests whose timeout has passed: their slot is freed and the chunk becomes a candidate again, not to be
        asked of the same partner while its answer may still come (``timeout_max``). A partner that was too slow
        (its own timeout, not the deadline's) has its bandwidth estimate halved."""
        self._now = now
        late = [r for r in self.pending.values() if r.timeout_at <= now]
        for r in late:
            del self.pending[r.chunk]
            s = self._release(r)
            if s is not None:
                s.timeouts += 1
                if not r.rescue or now - r.sent >= self.timeout_factor * max(r.expected - r.sent, 1e-3):
                    s.timeouts_in_row += 1
                    s.bw = max(1.0, s.bw / 2)
            self.tried.setdefault(r.chunk, {})[r.partner] = now + self.timeout_max
        return late

    def forget(self, below: int) -> None:
        """Drop what is known about chunks below ``below`` (they are past; live mode)."""
        for c in [c for c in self.tried if c < below]:
            del self.tried[c]
        for c in [c for c in self.pending if c < below]:
            self._release(self.pending.pop(c))
