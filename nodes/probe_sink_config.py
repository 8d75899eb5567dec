"""The ``args`` of role ``probe_sink`` (nodes/probe_sink.py), validated by the runner, which writes them complete;
a probe_sink process does not import this module (nodes/roles.py). The idle sink is the memory baseline of
``invoke bench streaming``: the bare runtime of a role process, without pydantic.
"""

from __future__ import annotations

import ipaddress

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Config(BaseModel):
    """``args`` of a probe_sink process."""

    model_config = ConfigDict(extra="forbid")
    port: int = Field(default=5001, ge=1, le=65535)
    bind: str = Field(default="0.0.0.0", description="local address to bind")
    group: str | None = Field(default=None, description="IPv4 multicast group to join (224.0.0.0/4)")
    iface: str | None = Field(default=None, max_length=15,
                              description="interface to join the group on; default: every interface but lo")
    leave_after: float | None = Field(default=None, gt=0, description="seconds after start to leave the group")

    @field_validator("group")
    @classmethod
    def _multicast(cls, value: str | None) -> str | None:
        if value is not None and not ipaddress.IPv4Address(value).is_multicast:
            raise ValueError(f"{value} is not an IPv4 multicast group (224.0.0.0/4)")
        return value

    @model_validator(mode="after")
    def _needs_group(self) -> Config:
        if self.group is None and (self.leave_after is not None or self.iface is not None):
            raise ValueError("iface and leave_after need a group")
        return self
