"""The unicast P2P policies' common rule (Chaining, PROMISE-like, DynaPeer unicast): a request takes the free
upload slots of the title's earlier peers that arrived at most ``window`` before it, oldest first, up to a
whole stream; the server sends the stripes nobody took. Every session then becomes a peer of the title with
that window. Peers in any ISP serve by unicast (TCP), so the rule is the same in every network.
"""

from __future__ import annotations

from nodes.vod.directory import Decision, Directory

PULL_LEAD_S = 0.1  # time for the client to connect to its suppliers before the first chunk is due


def decide_unicast(d: Directory, r, window: float, share: float,  # noqa: ANN001 - a policies.Request
                   multicast: bool | None = None) -> Decision:
    g = d.params.geometry
    length = g.chunks * g.chunk_s
    peers = d.title_peers(r.video, r.t, window + length, multicast)
    got, rest = d.take(peers, r.t, r.t + length, g.stripes, lambda p: r.t - p.a <= p.w + 1e-6)
    dec = Decision(d.parts_from(got, rest, 0, g.chunks, r.t + PULL_LEAD_S, "stream"))
    dec.peer = d.add_peer(r.session, r.video, r.t, 0.0, window, r.ip, r.port, r.multicast, share)
    return dec
