"""Chaining: a client forwards what it plays to a later client of the title arriving within its buffer ``B``,
uploading at the play rate (Chaining's own assumption: one slot of a whole stream)."""

from __future__ import annotations

from nodes.vod.directory import Decision, Directory
from nodes.vod.policies.unicast_family import decide_unicast

NAME = "chaining"


def decide(d: Directory, r) -> Decision:  # noqa: ANN001 - a policies.Request
    return decide_unicast(d, r, d.params.buffer_s, 1.0)
