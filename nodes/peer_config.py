"""The ``args`` of role ``peer`` (nodes/peer.py), validated by the runner; the shared streaming fields are in
nodes/stream_config.py. A peer process does not import this module (nodes/roles.py).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from nodes import wire
from nodes.stream_config import StreamParams


class Config(StreamParams):
    """``args`` of a peer process (the shared fields are in nodes/stream_config.py)."""

    scheduler: Literal["deadline", "round_robin"] = Field(default="deadline", description="data scheduler policy")
    tell_deadline: bool | None = Field(default=None, description="live: put the chunk's deadline in each CHUNK_REQ "
                                                                 "(suppliers refuse or drop what cannot make it, "
                                                                 "serve_deadline); default: with the deadline "
                                                                 "policy, not with the naive round_robin baseline")
    schedule_interval: float = Field(default=0.2, gt=0, description="seconds between scheduling rounds (also "
                                                                    "run at once when a buffer map or chunk arrives)")
    max_outstanding: int = Field(default=4, ge=1, le=64, description="requests in flight per partner")
    urgent: float = Field(default=3.0, ge=0, description="deadline policy: chunks due within this many seconds "
                                                         "are scheduled first")
    timeout_factor: float = Field(default=3.0, gt=0, description="request timeout = factor x expected transfer time")
    timeout_min: float = Field(default=1.0, gt=0)
    timeout_max: float = Field(default=10.0, gt=0)
    rescue: float = Field(default=1.5, ge=0, description="live: a request still unanswered this many seconds "
                                                         "before the chunk's deadline is asked elsewhere")
    chunk_duration: float = Field(default=1.0, gt=0, description="live: seconds per chunk, until the source's "
                                                                 "content info says otherwise")
    startup_buffer: float = Field(default=5.0, gt=0, description="live: seconds of contiguous chunks held before "
                                                                 "playback starts")
    startup_wait: float | None = Field(default=None, gt=0, description="live: start playback this many seconds "
                                                                      "after it could have started even if some of "
                                                                      "the start-up chunks are missing (they are "
                                                                      "skipped or stalled for; default: wait for all)")
    start_lag: float = Field(default=10.0, ge=0, description="live: play this many seconds behind the source (the "
                                                              "first chunk is that far behind the live edge, and "
                                                              "is not played earlier than that after it was made)")
    on_missing: Literal["skip", "stall"] = Field(default="skip", description="live: what the player does when a "
                                                                             "chunk is missing at its deadline")
    max_stall: float = Field(default=5.0, ge=0, description="stall: longest wait for one chunk before skipping it")
    bucket: int = Field(default=4, ge=1, description="token bucket depth = the player's buffer, in chunks")
    decoder: bool = Field(default=False, description="feed the chunks to nodes/decoder.py (ffmpeg)")
    leave_after: float | None = Field(default=None, gt=0, description="leave the overlay after this many seconds")
    output: str | None = Field(default=None, description="download: where to write the file (default: a "
                                                         "temporary file, removed at exit)")
    search: str | None = Field(default=None, max_length=wire.MAX_NAME,
                               description="ask the tracker and the first partner for contents matching this word")
    pollute: float = Field(default=0.0, ge=0, le=1, description="share of served chunks corrupted on purpose "
                                                               "(an attacker, for experiments)")
    refresh_after: float = Field(default=0.0, ge=0, description="live: every this many seconds, a viewer that "
                                                             "missed a chunk since the last time replaces the partner "
                                                             "it exchanged the fewest chunks with in that time "
                                                             "(either way; not the source, a main or a partner younger "
                                                             "than that): CoolStreaming's partner refinement; "
                                                             "0 = never")

    @model_validator(mode="after")
    def _peer(self) -> Config:
        if self.timeout_max < self.timeout_min:
            raise ValueError("timeout_max must be at least timeout_min")
        return self
