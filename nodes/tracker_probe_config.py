"""The ``args`` of role ``tracker_probe`` (nodes/tracker_client.py), validated by the runner. Peers import
nodes/tracker_client.py as a library; neither they nor a probe process import this module (nodes/roles.py).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from nodes import wire


class Config(BaseModel):
    """``args`` of a tracker_probe process."""

    model_config = ConfigDict(extra="forbid")
    tracker: str = Field(description="tracker node name or address")
    port: int = Field(default=6969, ge=1, le=65535)
    user: str = Field(min_length=1, max_length=wire.MAX_NAME)
    secret: str = Field(min_length=1)
    content: int = Field(default=1, ge=1, le=wire.U32)
    want: int = Field(default=20, ge=0, le=wire.MAX_LIST)
    source: bool = Field(default=False, description="join as a source of the content")
    listen_port: int = Field(default=0, ge=0, le=65535,
                             description="accept inbound connections here (connect-back test, members requests); "
                                         "0 = none")
    stay: float = Field(default=0.0, ge=0, description="seconds to stay a member (heartbeats) after the answer")
    leave: bool = Field(default=True, description="send LEAVE before exiting (false: just vanish, to be timed out)")
    redirect: bool = Field(default=True, description="false: ask the tracker for members, never a deputy")
    follow_redirect: bool = Field(default=True, description="on a redirect, ask the deputy for members")
    expect: Literal["any", "members", "redirect", "refused"] = Field(
        default="any", description="exit 4 unless the tracker's answer is this")
    connect_for: float = Field(default=10.0, gt=0, description="keep trying to connect for this long (seconds)")
    timeout: float = Field(default=5.0, gt=0, description="seconds to wait for each answer")
