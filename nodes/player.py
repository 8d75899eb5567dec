"""Player adapter of the streaming peer (document 3.3.2.5 and 4.5.2.1): from the chunk buffer to the player.

:class:`LivePlayer` is a state machine driven by the peer with the current time (``step(now)``); it never reads a
clock itself, so tests drive it with a fake one. It logs the viewer events of docs/bundle.md through ``emit``:

- ``play_request`` when the viewer asks for the stream (:meth:`request`);
- buffering: once the start chunk ``s`` is chosen (:meth:`start_at`), playback starts when the ``startup``
  chunks ``s .. s + startup - 1`` are all in the buffer, and not before ``not_before`` (the peer passes the time
  chunk ``s`` was made plus its lag behind the source): ``playback_start``; with ``startup_wait``, playback also
  starts that long after it could first have started, with start-up chunks still missing (``playback_start``
  with ``missing``; the missing ones are then due like any other), so that a viewer of a starved overlay plays
  what it gets rather than waiting forever;
- chunk ``s + k`` is due at ``D(s + k) = playback_start + k * duration`` (+ the time lost in stalls, see below):
  ``chunk_due`` with ``on_time`` (it was in the buffer at its deadline), ``played``, ``bytes``, ``created``;
- a chunk missing at its deadline, by ``on_missing``:
  ``skip`` (default for live: the player skips it, as CoolStreaming's continuity index assumes; deadlines stay
  fixed, so the playback lag stays constant): ``chunk_due`` with ``on_time`` false and ``played`` false;
  ``stall``: playback freezes (``stall_start``) until the chunk arrives (``stall_end``, ``chunk_due`` on_time
  false, played true) or ``max_stall`` seconds pass (``stall_end``, the chunk is skipped); every later deadline
  moves by the time lost, so the lag behind the live edge grows with each stall;
- ``playback_end`` (:meth:`end`).

Token bucket (4.5.2.1): the adapter hands chunks to the player (``sink``, e.g. a decoder) in order, one token per
chunk; a token is made every ``duration`` seconds from ``playback_start`` and at most ``bucket`` are kept (the
player's own buffer), so the player gets at most ``bucket`` chunks ahead and is never flooded when chunks arrive
in a burst; tokens saved while data was missing let it catch up afterwards. A chunk skipped at its deadline is
never handed over. Handing over does not change what is logged: ``on_time`` is about the chunk being in the
buffer at its deadline.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal, Protocol

from nodes.chunk_buffer import Chunk

OnMissing = Literal["skip", "stall"]


class Emit(Protocol):
    def __call__(self, event: str, t: float | None = None, **fields: Any) -> None: ...


class LivePlayer:
    """Buffering, deadlines, skips or stalls, and the token bucket of one viewer session."""

    def __init__(self, emit: Emit, stream: int, duration: float, *, startup: int = 5, on_missing: OnMissing = "skip",
                 max_stall: float = 5.0, bucket: int = 4, sink: Callable[[Chunk], None] | None = None,
                 startup_wait: float | None = None):
        if duration <= 0 or startup < 1 or bucket < 1 or max_stall < 0:
            raise ValueError("duration > 0, startup >= 1, bucket >= 1 and max_stall >= 0 are required")
        self.emit = emit
        self.stream = stream
        self.duration = duration
        self.startup = startup
        self.on_missing = on_missing
        self.max_stall = max_stall
        self.bucket = bucket
        self.sink = sink
        self.state: Literal["idle", "waiting", "buffering", "playing", "stalled", "ended"] = "idle"
        self.start: int | None = None  # first chunk of the session
        self.not_before = 0.0  # playback does not start earlier
        self.startup_wait = startup_wait  # start anyway this long after buffering could have ended (None: never)
        self.wait_until: float | None = None
        self.next: int = 0  # next chunk due
        self.next_deadline = math.inf
        self.started_at: float | None = None
        self.stall_since: float | None = None
        self.stall_time = 0.0
        # token bucket
        self.tokens = 0.0
        self.token_clock = 0.0
        self.released = 0  # next chunk to hand to the player
        # counters for playback_end
        self.due = 0
        self.on_time = 0
        self.skipped = 0
        self.stalls = 0
        self.handed = 0

    # -- session ----------------------------------------------------------------------------------------------
    def request(self, now: float) -> None:
        self.state = "waiting"
        self.emit("play_request", t=now, stream=self.stream)

    def start_at(self, chunk: int, not_before: float = 0.0) -> None:
        """Choose the first chunk (the peer knows the live edge); buffering starts. Playback will not start before
        ``not_before`` (the peer keeps a fixed lag behind the source even when the stream has just begun)."""
        if self.state == "waiting":
            self.start = self.next = self.released = chunk
            self.not_before = not_before
            self.state = "buffering"

    @property
    def playing(self) -> bool:
        return self.state in ("playing", "stalled")

    def needed_from(self) -> int | None:
        """The oldest chunk still wanted for playback (None before the start is chosen)."""
        return None if self.start is None else self.next

    def deadline(self, chunk: int, now: float) -> float:
        """When ``chunk`` is (or would be) due; before playback it is as if playback started now."""
        if self.state == "buffering" or self.start is None:
            return now + (chunk - (self.start or 0)) * self.duration
        if self.state == "stalled":
            return now + (chunk - self.next) * self.duration
        return self.next_deadline + (chunk - self.next) * self.duration

    # -- the clock --------------------------------------------------------------------------------------------
    def step(self, now: float, get: Callable[[int], Chunk | None]) -> float:
        """Advance to ``now`` with the buffer's ``get``; returns when the next step is needed (inf: on arrival)."""
        if self.state == "buffering":
            if now < self.not_before:
                return self.not_before
            if self.wait_until is None and self.startup_wait is not None:
                self.wait_until = now + self.startup_wait
            missing = 0 if self.start is None else sum(get(c) is None
                                                       for c in range(self.start, self.start + self.startup))
            if self.start is not None and (not missing or (self.wait_until is not None and now >= self.wait_until)):
                self.state = "playing"
                self.started_at = now
                self.next_deadline = now
                self.tokens, self.token_clock = float(self.bucket), now
                extra = {"missing": missing} if missing else {}
                self.emit("playback_start", t=now, stream=self.stream, chunk=self.start, **extra)
            else:
                return self.wait_until if self.wait_until is not None else math.inf
        while self.state in ("playing", "stalled"):
            if self.state == "stalled":
                if not self._stalled(now, get):
                    break
                continue
            if now < self.next_deadline:
                break
            chunk = get(self.next)
            if chunk is not None:
                self._due(self.next_deadline, self.next, chunk, on_time=True, played=True)
                self._advance(self.next_deadline + self.duration)
            elif self.on_missing == "skip" or self.max_stall == 0:
                self._due(self.next_deadline, self.next, None, on_time=False, played=False)
                self.skipped += 1
                self._advance(self.next_deadline + self.duration)
            else:
                self.state = "stalled"
                self.stall_since = self.next_deadline
                self.stalls += 1
                self.emit("stall_start", t=self.next_deadline, stream=self.stream, chunk=self.next)
        self._hand_over(now, get)
        if self.state == "stalled":
            assert self.stall_since is not None
            return self.stall_since + self.max_stall
        return self.next_deadline if self.state == "playing" else math.inf

    def _stalled(self, now: float, get: Callable[[int], Chunk | None]) -> bool:
        """Resolve a stall if the chunk came or the stall lasted ``max_stall``; True if playback went on."""
        assert self.stall_since is not None
        chunk = get(self.next)
        if chunk is None and now < self.stall_since + self.max_stall:
            return False
        at = now if chunk is not None else self.stall_since + self.max_stall
        lost = at - self.stall_since
        self.stall_time += lost
        self.emit("stall_end", t=at, stream=self.stream, chunk=self.next, stalled_s=round(lost, 3))
        self.state = "playing"
        self.stall_since = None
        if chunk is not None:  # played late: everything after it moves by the time lost
            self._due(at, self.next, chunk, on_time=False, played=True)
            self._advance(at + self.duration)
        else:  # given up: skipped, and the next chunk is due at once (the stall was the freeze)
            self._due(at, self.next, None, on_time=False, played=False)
            self.skipped += 1
            self._advance(at)
        return True

    def _due(self, t: float, cid: int, chunk: Chunk | None, *, on_time: bool, played: bool) -> None:
        self.due += 1
        self.on_time += on_time
        if not played and self.released <= cid:  # a skipped chunk is never handed to the player
            self.released = cid + 1
        fields: dict[str, Any] = {"chunk": cid, "on_time": on_time, "played": played}
        if chunk is not None:
            fields["bytes"] = len(chunk.data)
            if chunk.created_us:
                fields["created"] = chunk.created_us / 1e6
        self.emit("chunk_due", t=t, **fields)

    def _advance(self, next_deadline: float) -> None:
        self.next += 1
        self.next_deadline = next_deadline

    def _hand_over(self, now: float, get: Callable[[int], Chunk | None]) -> None:
        """Token bucket: one token per chunk duration since playback started, at most ``bucket`` saved; chunks go
        to the player in order, and the hand-over waits at a missing chunk until it arrives or is skipped."""
        if self.started_at is None:
            return
        if now > self.token_clock:
            self.tokens = min(float(self.bucket), self.tokens + (now - self.token_clock) / self.duration)
            self.token_clock = now
        while self.tokens >= 1.0 - 1e-9:  # (tokens are summed in small steps)
            chunk = get(self.released)
            if chunk is None:
                break
            if self.sink is not None:
                self.sink(chunk)
            self.handed += 1
            self.released += 1
            self.tokens -= 1.0

    def end(self, now: float, reason: str) -> None:
        if self.state in ("idle", "ended"):
            return
        if self.state == "stalled" and self.stall_since is not None:
            self.stall_time += max(0.0, now - self.stall_since)
            self.emit("stall_end", t=now, stream=self.stream, chunk=self.next,
                      stalled_s=round(now - self.stall_since, 3))
        self.state = "ended"
        self.emit("playback_end", t=now, stream=self.stream, reason=reason, due=self.due, on_time=self.on_time,
                  skipped=self.skipped, stalls=self.stalls, stall_s=round(self.stall_time, 3), handed=self.handed)
