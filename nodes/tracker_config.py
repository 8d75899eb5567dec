"""The ``args`` of role ``tracker`` (nodes/tracker.py), validated by the runner. A tracker process does not import
this module (nodes/roles.py).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nodes import wire
from nodes.tracker import SERVE_FILLED, SERVE_USER


class ServeParams(BaseModel):
    """A peer or source the tracker runs in its own process (its ``args`` without the tracker fields).

    Validation completes ``args`` like the runner does for a process of that role (nodes/roles.py): every default
    filled in, so the tracker process only adds ``tracker``, ``tracker_port``, ``user`` and ``secret``."""

    model_config = ConfigDict(extra="forbid")
    role: Literal["peer", "source"]
    args: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _complete(self) -> ServeParams:
        from nodes.roles import role_config_class

        filled = [k for k in SERVE_FILLED if k in self.args]
        if filled:
            raise ValueError(f"serve.args: {', '.join(filled)} are filled in by the tracker")
        placeholders = {"tracker": "127.0.0.1", "tracker_port": 6969, "user": SERVE_USER, "secret": "secret"}
        full = role_config_class(self.role).model_validate({**self.args, **placeholders})
        self.args = full.model_dump(mode="json", exclude=set(SERVE_FILLED))
        return self


class Config(BaseModel):
    """``args`` of a tracker process."""

    model_config = ConfigDict(extra="forbid")
    port: int = Field(default=6969, ge=1, le=65535)
    bind: str = Field(default="0.0.0.0")
    users: dict[str, str] = Field(description="user name -> secret", min_length=1)
    contents: dict[int, str] = Field(default_factory=lambda: {1: "live"}, description="content id -> title")
    allow_publish: bool = Field(default=True, description="a JOIN flagged SOURCE may add a content")
    member_timeout: float = Field(default=15.0, gt=0, description="seconds without a heartbeat before a member "
                                                                  "is dropped; heartbeat period = a third of it")
    deputy_threshold: int | None = Field(default=50, ge=0,
                                         description="redirect joins once a content has more members than this; "
                                                     "null = never")
    redirect_fraction: float = Field(default=1.0, ge=0, le=1, description="share of eligible joins redirected")
    redirect_memory: float = Field(default=30.0, gt=0, description="seconds a join redirected to a deputy counts "
                                                                   "in the deputy's load")
    answer_size: int = Field(default=20, ge=1, le=wire.MAX_LIST, description="most members in one answer")
    reach_test: bool = Field(default=True, description="connect back to each joining peer's listening port")
    reach_timeout: float = Field(default=1.0, gt=0)
    auth_timeout: float = Field(default=5.0, gt=0, description="seconds to complete HELLO..AUTH")
    max_bad_frames: int = Field(default=8, ge=1, description="rejections on one connection before hanging up")
    max_bad_bytes: int = Field(default=65536, ge=1, description="rejected bytes on one connection before hanging up")
    max_connections: int = Field(default=256, ge=1)
    stats_interval: float = Field(default=5.0, gt=0)
    local: bool = Field(default=False, description="a main node's local tracker (chapter 4)")
    upstream: str | None = Field(default=None, description="local mode: the upstream tracker (node or address)")
    upstream_port: int = Field(default=6969, ge=1, le=65535)
    upstream_user: str | None = None
    upstream_secret: str | None = None
    serve: ServeParams | None = Field(default=None, description="run a peer or source in this process, "
                                                                "registered with this tracker")

    @model_validator(mode="after")
    def _local(self) -> Config:
        if self.serve is not None and SERVE_USER in self.users:
            raise ValueError(f"user {SERVE_USER!r} is reserved for the tracker's own node (serve)")
        if self.local and not (self.upstream and self.upstream_user and self.upstream_secret):
            raise ValueError("local: true needs upstream, upstream_user and upstream_secret")
        if not self.local and self.upstream is not None:
            raise ValueError("upstream is only for local: true")
        for user in self.users:
            wire.Hello(user, bytes(wire.NONCE_SIZE))  # a name the wire can carry
        for content, title in self.contents.items():
            wire.ContentEntry(content, title)
        return self
