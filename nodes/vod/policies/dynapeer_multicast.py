"""DynaPeer multicast (section 2.3), optionally with Helpers.

* Patching window ``P`` (``patch_window_s``, the paper's ``P = B`` by default): a request within ``P`` of the
  title's latest channel joins it; its patch (the missed prefix) comes from the title's idle peers that are not
  a channel's virtual server (newest first) and the server sends the stripes they cannot.
* Later requests open a new channel, sourced by the title's virtual server: the eligible peers (oldest first)
  send their stripes *to the multicast group* (peers multicast, "from the client's side"); a VS too small for a
  whole stream sends part of it and the server the rest (partial-stream collaboration).
* Peer *k* (offset ``x_k`` in its channel) is eligible while ``t - a_k <= X (B - x_k)`` (extended buffer after
  the patching look-ahead); a channel's first ``ceil(N)`` members are its VS and send no patches
  (``reserve_sources``), as in :mod:`analysis.vod_sim`.
* Helpers (``helpers_on``): every new channel of a *needy* title (``lambda_i B < N``, given by the generator)
  gets ``ceil(N) - 1`` helpers: viewers of the other titles, still watching, with a free slot, not reserved,
  beyond their own channel's VS, the longest usable window first. The server tells a helper to join the
  channel (a VOD_PLAN for the helped video on the helper's session); it then stores the channel and counts as a
  peer of the helped title while ``t - attach <= X (B - x_h)``. An unused helper is kept for the next channel.
* Clients in ISPs without multicast are served in DynaPeer unicast mode, among themselves
  (:mod:`nodes.vod.policies.dynapeer_unicast`).
"""

from __future__ import annotations

import heapq

from nodes.vod.directory import Decision, Directory, Part, Peer
from nodes.vod.policies import dynapeer_unicast
from nodes.vod.policies.patching import JOIN_LAG_S, join_point
from nodes.vod.policies.unicast_family import PULL_LEAD_S

NAME = "dynapeer_multicast"


def _state(d: Directory) -> tuple[dict[int, list[tuple[Peer, float]]], list[tuple[float, float, int, Peer]]]:
    attached = d.state.setdefault("attached", {})
    pool = d.state.setdefault("pool", [])
    return attached, pool  # type: ignore[return-value]


def decide(d: Directory, r, helpers_on: bool = False) -> Decision:  # noqa: ANN001 - a policies.Request
    p = d.params
    g = p.geometry
    length = g.chunks * g.chunk_s
    full = g.all_stripes
    if not r.multicast:
        return dynapeer_unicast.decide(d, r, multicast=False)
    X, B = p.X, p.buffer_s  # noqa: N806
    n_vs = p.vs_size if p.reserve_sources else 0
    attached, pool = _state(d)
    dq = d.title_peers(r.video, r.t, X * B + length, multicast=True)
    dq = [q for q in dq if q.video == r.video]

    def usable_helpers() -> list[Peer]:
        return [h for h, at in attached.get(r.video, [])
                if h.alive and r.t - at <= X * (B - h.x) + 1e-6 and r.t <= h.a + length]

    ch = d.current_channel(r.video)
    if ch is not None and r.t - ch.opened <= p.window(r.video):
        x = r.t - ch.opened
        xc = join_point(d, ch.t0, r.t)
        parts = [Part("multicast", xc, g.chunks, full, ch.t0, channel=ch, why="channel")]
        if xc > 0:
            until = r.t + xc * g.chunk_s
            got, need = [], g.stripes
            if helpers_on:
                got, need = d.take(usable_helpers(), r.t, until, need, lambda q: q.reserved == r.video)
            more, rest = d.take(list(reversed(dq)), r.t, until, need,
                                lambda q: q.reserved < 0 and q.rank >= n_vs and r.t - q.a <= q.w + 1e-6)
            parts += d.parts_from(got + more, rest, 0, xc, r.t + PULL_LEAD_S, "patch")
        dec = Decision(parts)
        peer = d.add_peer(r.session, r.video, r.t, x, X * max(0.0, B - x), r.ip, r.port, True)
        peer.rank = ch.members
        ch.members += 1
    else:
        helpers = usable_helpers() if helpers_on else []
        got, need = d.take(helpers, r.t, r.t + length, g.stripes, lambda q: q.reserved == r.video)
        more, rest = d.take(dq, r.t, r.t + length, need, lambda q: q.reserved < 0 and r.t - q.a <= q.w + 1e-6)
        ch = d.new_channel(r.video, r.t + JOIN_LAG_S, r.t)
        src = d.parts_from(got + more, rest, 0, g.chunks, ch.t0, "channel")
        ch.sources = [(s.peer, s.mask) for s in src]
        dec = Decision([Part("multicast", 0, g.chunks, full, ch.t0, channel=ch, why="channel")], new_channel=ch)
        if helpers_on:
            _renew_helpers(d, r, ch, attached, pool, length)
        peer = d.add_peer(r.session, r.video, r.t, 0.0, X * B, r.ip, r.port, True)
        peer.rank = 0
        ch.members = 1
    dec.peer = peer
    if helpers_on and r.video not in p.needy and peer.rank >= n_vs:
        serial = int(d.state.get("serial", 0)) + 1  # type: ignore[call-overload]
        d.state["serial"] = serial
        heapq.heappush(pool, (peer.x, -peer.a, serial, peer))
    return dec


def _renew_helpers(d: Directory, r, ch, attached, pool, length: float) -> None:  # noqa: ANN001
    """Keep the title's unused helpers for the new channel, recruit the missing ones (needy titles only)."""
    p = d.params
    X, B = p.X, p.buffer_s  # noqa: N806
    kept: list[tuple[Peer, float]] = []
    for h, _ in attached.get(r.video, []):
        if h.alive and all(f <= r.t + 1e-6 for f in h.free) and r.t < h.a + length:
            kept.append((h, r.t))
        else:
            h.reserved = -1
    attached[r.video] = kept
    if r.video not in p.needy or len(kept) >= p.helper_count:
        for h, _ in kept:
            d.state.setdefault("attach_list", []).append((h, ch))  # type: ignore[union-attr]
        return
    wanted = p.helper_count - len(kept)

    def usable_for(q: Peer) -> float:
        return min(X * (B - q.x), q.a + length - r.t)

    spare = []
    while pool and len(spare) < 4 * wanted + 8:
        item = heapq.heappop(pool)
        q = item[3]
        if q.reserved >= 0 or not q.alive or r.t >= q.a + length or any(f > r.t + 1e-6 for f in q.free):
            continue
        spare.append(item)
    spare.sort(key=lambda it: -usable_for(it[3]))
    for item in spare:
        q = item[3]
        if wanted > 0 and usable_for(q) > 0:
            q.reserved = r.video
            kept.append((q, r.t))
            wanted -= 1
        else:
            heapq.heappush(pool, item)
    for h, _ in kept:
        d.state.setdefault("attach_list", []).append((h, ch))  # type: ignore[union-attr]
