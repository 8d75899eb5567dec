"""DynaPeer unicast (section 2.2): a virtual server VS(j, s, W) is the set of the title's peers that arrived
within the collaboration window ``W = min(L, X B)`` (extended buffer: a peer keeps only the ``1/N`` share it
sends, so ``B`` holds ``N B`` of it); full-stream collaboration when its free shares make a whole stream,
partial otherwise (the server sends the rest). Every requester joins a new VS."""

from __future__ import annotations

from nodes.vod.directory import Decision, Directory
from nodes.vod.policies.unicast_family import decide_unicast

NAME = "dynapeer_unicast"


def window(d: Directory) -> float:
    g = d.params.geometry
    return min(g.chunks * g.chunk_s, d.params.X * d.params.buffer_s)


def decide(d: Directory, r, multicast: bool | None = None) -> Decision:  # noqa: ANN001 - a policies.Request
    return decide_unicast(d, r, window(d), d.params.c, multicast)
