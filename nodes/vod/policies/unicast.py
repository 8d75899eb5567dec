"""Unicast: the server sends every session the whole video (``lambda L`` server streams, Little's law)."""

from __future__ import annotations

from nodes.vod.directory import Decision, Directory, Part

NAME = "unicast"


def decide(d: Directory, r) -> Decision:  # noqa: ANN001 - a policies.Request
    g = d.params.geometry
    return Decision([Part("server", 0, g.chunks, g.all_stripes, r.t, why="stream")])
