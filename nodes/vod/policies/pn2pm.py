"""Pn2Pm-like (the paper's [11], our model as in :mod:`analysis.vod_model`): threshold patching with window
``P`` (``patch_window_s``, ``B`` by default) where peers upload at the play rate. A joiner's patch comes from
any free peer of the title with ``t - a_k <= B - x_k`` (newest first), the server sends what they cannot. The
multicast group stores what it receives (members keep disjoint parts, ``B - x_k`` seconds each): a new channel
is sourced by the free members of an earlier channel whose buffers together hold the lag
(``sum (B - x_k) >= t - t_channel``); each sends a share of the stripes in proportion to its part, to the
new group. Otherwise the server opens it. Clients without multicast get unicast from the server.
"""

from __future__ import annotations

from nodes.vod.content import take_stripes
from nodes.vod.directory import Decision, Directory, Part
from nodes.vod.policies.patching import JOIN_LAG_S, join_point
from nodes.vod.policies.unicast_family import PULL_LEAD_S

NAME = "pn2pm"


def decide(d: Directory, r) -> Decision:  # noqa: ANN001 - a policies.Request
    p = d.params
    g = p.geometry
    length = g.chunks * g.chunk_s
    full = g.all_stripes
    B = p.buffer_s  # noqa: N806
    if not r.multicast:
        return Decision([Part("server", 0, g.chunks, full, r.t, why="stream")])
    chs = d.channels_of(r.video, r.t)
    cur = chs[-1] if chs else None
    if cur is not None and r.t - cur.opened <= p.window(r.video):
        x = r.t - cur.opened
        xc = join_point(d, cur.t0, r.t)
        parts = [Part("multicast", xc, g.chunks, full, cur.t0, channel=cur, why="channel")]
        if xc > 0:
            cands = [q for ch in reversed(chs) for q in reversed(ch.peers)]
            got, rest = d.take(cands, r.t, r.t + xc * g.chunk_s, g.stripes,
                               lambda q: r.t - q.a <= B - q.x + 1e-6)
            parts += d.parts_from(got, rest, 0, xc, r.t + PULL_LEAD_S, "patch")
        dec = Decision(parts)
        peer = d.add_peer(r.session, r.video, r.t, x, B - x, r.ip, r.port, True, 1.0)
        cur.peers.append(peer)
        cur.members += 1
        dec.peer = peer
        return dec
    ch_new = d.new_channel(r.video, r.t + JOIN_LAG_S, r.t)
    sources: list = []
    for ch in reversed(chs):
        lag = r.t - ch.opened
        free = sorted((q for q in ch.peers if q.alive and q.free_slots(r.t) > 0), key=lambda q: q.x)
        if sum(B - q.x for q in free) + 1e-6 < lag:
            continue
        chosen, held = [], 0.0
        for q in free:
            if held >= lag - 1e-6:
                break
            chosen.append(q)
            held += B - q.x
        sources = _split(chosen, g.stripes)
        for q, _ in sources:
            i = next(i for i, f in enumerate(q.free) if f <= r.t + 1e-6)
            q.free[i] = r.t + length
        break
    if not sources:
        sources = [(None, full)]
    ch_new.sources = sources
    dec = Decision([Part("multicast", 0, g.chunks, full, ch_new.t0, channel=ch_new, why="channel")],
                   new_channel=ch_new)
    peer = d.add_peer(r.session, r.video, r.t, 0.0, B, r.ip, r.port, True, 1.0)
    ch_new.peers.append(peer)
    dec.peer = peer
    return dec


def _split(chosen: list, stripes: int) -> list:
    """Stripes per chosen member in proportion to its part ``B - x`` of the group's buffer (at least one each)."""
    weights = [max(1e-6, q.w) for q in chosen]
    total = sum(weights)
    counts = [max(1, int(stripes * w / total)) for w in weights]
    while sum(counts) > stripes:
        counts[counts.index(max(counts))] -= 1
    i = 0
    while sum(counts) < stripes:
        counts[i % len(counts)] += 1
        i += 1
    shares, taken = [], 0
    for q, n in zip(chosen, counts, strict=True):
        if n <= 0:
            continue
        mask = take_stripes(n, taken, stripes)
        taken |= mask
        shares.append((q, mask))
    return shares
