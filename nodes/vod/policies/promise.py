"""PROMISE-like: several suppliers per client, each uploading ``O`` (a share ``O/Pr`` of a stream); suppliers
keep the whole video (window ``L``) but only supply while in the system."""

from __future__ import annotations

from nodes.vod.directory import Decision, Directory
from nodes.vod.policies.unicast_family import decide_unicast

NAME = "promise"


def decide(d: Directory, r) -> Decision:  # noqa: ANN001 - a policies.Request
    g = d.params.geometry
    return decide_unicast(d, r, g.chunks * g.chunk_s, d.params.c)
