"""Threshold Patching: a request within ``T`` of the title's latest multicast channel joins it and gets the
missed prefix from the server as a unicast patch; a later one opens a new server channel. ``T`` per title is
``patch_window_s`` (the generator passes ``min(T*_i, B)``, as :mod:`analysis.vod_model`'s ``patching``).

Emulation details: a joiner receives the channel from the first chunk sent at least ``join_lag_s`` after its
request (time to get the plan and join the group); the channel itself starts ``join_lag_s`` after its opening
request, so the patch is the time since the opening request (rounded up to whole chunks), as in the model, and
the window ``T`` counts from that request too (``Channel.opened``). Clients whose ISP routes no multicast get
unicast from the server.
"""

from __future__ import annotations

from nodes.vod.directory import Decision, Directory, Part

NAME = "patching"
JOIN_LAG_S = 0.5


def join_point(d: Directory, t0: float, t: float) -> int:
    """First chunk of a channel started at ``t0`` that a request at ``t`` can still get from it."""
    return d.params.geometry.chunk_of(t0, t + JOIN_LAG_S)


def decide(d: Directory, r) -> Decision:  # noqa: ANN001 - a policies.Request
    g = d.params.geometry
    full = g.all_stripes
    if not r.multicast:
        return Decision([Part("server", 0, g.chunks, full, r.t, why="stream")])
    ch = d.current_channel(r.video)
    if ch is not None and r.t - ch.opened <= d.params.window(r.video):
        x = join_point(d, ch.t0, r.t)
        ch.members += 1
        parts = [Part("multicast", x, g.chunks, full, ch.t0, channel=ch, why="channel")]
        if x > 0:
            parts.append(Part("server", 0, x, full, r.t, why="patch"))
        return Decision(parts)
    ch = d.new_channel(r.video, r.t + JOIN_LAG_S, r.t)
    ch.sources = [(None, full)]
    return Decision([Part("multicast", 0, g.chunks, full, ch.t0, channel=ch, why="channel")], new_channel=ch)
