"""One overlay a streaming node belongs to: its tracker session, its mCache and pCache, its member scheduler.

Most nodes belong to one overlay (the content's, around the tracker they were given). A hybrid main node
(chapter 4) belongs to two: the Internet one (its ``tracker``) and its ad-hoc network's (the ``local_tracker``),
with a peer id in each. Everything here is per overlay:

- **tracker session** (3.3.5): authenticate, JOIN, take the member list or follow a REDIRECT to the deputy
  (MEMBERSHIP then MEMBERS_REQ to it; the tracker's MEMBERS_REQ if the deputy fails), heartbeat with MEMBERSHIP,
  ask for more members when the mCache is short, reconnect when the tracker goes away. A refused login ends the
  node (AUTH_FAIL: exit status 3).
- **member scheduler** (3.3.2.2), every ``member_interval``: expire idle members; drop partners that became
  useless (no buffer map for ``stale_after``: ``stale``; ``slow_timeouts`` request timeouts in a row: ``slow``;
  no chunk either way for ``useless_after``: ``useless``), telling them with PARTNERSHIP_REMOVE (reason POOR);
  open partnerships to reachable members (seeded random choice) until ``target`` partners; ask for members
  below ``min_members``. A main node's ad-hoc side always partners with the other mains first.
- **partnerships**: outbound: MEMBERSHIP (who we are) + PARTNERSHIP_REQ; inbound requests accepted up to
  ``max_partners`` (FULL otherwise; with ``prefer_uploaders``, a node that says it uploads that many times more than
  the slowest partner that said so takes that partner's place); two nodes that ask each other at once keep the
  connection opened by the one with the smaller id.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

from nodes import wire
from nodes.hybrid import MainsView, Scope
from nodes.membership import Member, MemberCache
from nodes.peer_link import Link, open_stream
from nodes.tracker_client import AuthRefused, TrackerClient, TrackerError, expect
from nodes.wire import JoinFlag, MemberEntry, MemberFlag, Reach

if TYPE_CHECKING:
    from nodes.stream_node import StreamNode


class Overlay:
    """Membership, partnerships and tracker session of one node in one overlay."""

    def __init__(self, node: StreamNode, side: str, *, tracker: str, port: int, user: str, secret: str,
                 join_flags: int = 0, target: int = 4, scope: Scope | None = None,
                 exclude_scope: Scope | None = None, mains: MainsView | None = None, servers: bool = True,
                 bind: str | None = None):
        self.node = node
        self.side = side  # "net" (the Internet / the only overlay) or "local" (a main's ad-hoc side)
        self.tracker, self.port, self.user, self.secret = tracker, port, user, secret
        self.join_flags = join_flags
        self.target = target
        self.bind = bind or node.cfg.bind  # source address of this overlay's connections
        self.scope = scope or Scope()
        self.mcache = MemberCache(node.cfg.member_idle, self.scope, exclude_scope)
        self.mains = mains  # main node's ad-hoc side: the other mains and the download share
        self.servers = servers  # members flagged SOURCE are the content's server (False: mains of an ad-hoc net)
        self.partners: dict[int, Link] = {}
        self.connecting: set[int] = set()
        self.me = 0
        self.ip = "0.0.0.0"  # our address as the tracker saw it
        self.reach = Reach.UNTESTED
        self.seq = 0
        self.client: TrackerClient | None = None
        self.joined = asyncio.Event()
        self.last_ask = 0.0

    # -- identity ---------------------------------------------------------------------------------------------
    def my_entry(self) -> MemberEntry:
        flags = MemberFlag.REACHABLE if self.reach == Reach.YES else 0
        if self.join_flags & JoinFlag.SOURCE:
            flags |= MemberFlag.SOURCE
        return MemberEntry(self.me, self.ip, self.node.cfg.listen_port, flags, min(len(self.partners), 0xFFFF))

    def membership(self) -> wire.Membership:
        self.seq = (self.seq + 1) & wire.U32
        ttl = max(1, min(0xFFFF, round(3 * self.node.cfg.membership_interval)))
        return wire.Membership(self.me, self.ip, self.node.cfg.listen_port, self.seq, ttl,
                               min(len(self.partners), 0xFFFF), (self.node.cfg.content,))

    def is_server(self, member: Member | None) -> bool:
        return self.servers and member is not None and member.source

    # -- tracker session --------------------------------------------------------------------------------------
    async def tracker_loop(self) -> None:
        node, cfg, log = self.node, self.node.cfg, self.node.ctx.log
        host = node.ctx.resolve(self.tracker)
        if host not in self.scope:
            log.emit("join_answer", overlay=self.side, outcome="error", reason=f"tracker {host} outside the scope")
            node.fail(2)
            return
        first_try = time.monotonic()
        while True:
            client = None
            try:
                try:
                    stream = await open_stream(host, self.port, self.bind, cfg.connect_timeout,
                                               max_payload=wire.CONTROL_MAX)
                except (OSError, TimeoutError) as exc:
                    if time.monotonic() - first_try > cfg.connect_for and not self.joined.is_set():
                        log.emit("join_answer", overlay=self.side, outcome="unreachable", tracker=host,
                                 reason=str(exc) or type(exc).__name__)
                        first_try = time.monotonic()
                    await asyncio.sleep(0.5)
                    continue
                client = self.client = TrackerClient(stream, node.ctx.rng, cfg.connect_timeout)
                await self._session(client, host)
            except AuthRefused as exc:
                log.emit("join_answer", overlay=self.side, outcome="refused", tracker=host, user=self.user,
                         code=exc.code, reason=exc.reason)
                node.fail(3)
                return
            except (OSError, TimeoutError, TrackerError, ConnectionError) as exc:
                log.emit("tracker_lost", overlay=self.side, tracker=host, reason=str(exc) or type(exc).__name__)
                await asyncio.sleep(2.0)
            finally:
                self.client = None
                if client is not None:
                    await client.close()

    async def _session(self, client: TrackerClient, host: str) -> None:
        node, cfg, log = self.node, self.node.cfg, self.node.ctx.log
        ok = await client.authenticate(self.user, self.secret)
        self.me, self.ip = ok.peer, ok.ip
        self.mcache.me = ok.peer
        if self.mains is not None:
            self.mains.set_me(ok.peer)
        log.emit("join_request", overlay=self.side, tracker=host, user=self.user, peer=ok.peer, content=cfg.content,
                 port=cfg.listen_port, flags=self.join_flags)
        ans = await client.join(cfg.content, cfg.listen_port, cfg.want_members, self.join_flags)
        self.reach = Reach(ans.reachable)
        now = time.time()
        if isinstance(ans, wire.Redirect):
            log.emit("join_answer", overlay=self.side, outcome="redirect", peer=ok.peer,
                     reachable=self.reach.name.lower(), deputy=ans.deputy.fields())
            members = await self._ask_deputy(ans.deputy)
            if members is None:
                members = await client.members(cfg.content, cfg.want_members)
            self.mcache.learn(members, now)
        else:
            log.emit("join_answer", overlay=self.side, outcome="members", peer=ok.peer,
                     reachable=self.reach.name.lower(), members=[m.peer for m in ans.members])
            self.mcache.learn(ans.members, now)
        self.joined.set()
        node.joined(self)
        next_beat = time.monotonic() + client.heartbeat_s
        last_ask = time.monotonic()
        while True:
            await asyncio.sleep(min(1.0, client.heartbeat_s))
            if time.monotonic() >= next_beat:
                next_beat += client.heartbeat_s
                await client.heartbeat([cfg.content], cfg.listen_port, len(self.partners))
            # a main asks its local tracker regularly: only the tracker says who the other mains are (gossip
            # carries no flags), and the download share depends on that set
            wants = self.mains is not None or self.short_of_members(time.time())
            if wants and time.monotonic() - last_ask >= cfg.ask_interval:
                last_ask = time.monotonic()
                self.mcache.learn(await client.members(cfg.content, cfg.want_members), time.time())
                self.tick(time.time())

    def short_of_members(self, now: float) -> bool:
        """Fewer members known than ``min_members``, or partners wanted and none of the known ones to ask
        (members heard of only through gossip carry no reachability and are not asked)."""
        if len(self.mcache) < self.node.cfg.min_members:
            return True
        if self.target_now() - len(self.partners) - len(self.connecting) <= 0:
            return False
        exclude = set(self.partners) | self.connecting | {self.me}
        return not self.mcache.candidates(now, exclude, unflagged=self.node.cfg.unflagged)

    async def _ask_deputy(self, deputy: MemberEntry) -> tuple[MemberEntry, ...] | None:
        """3.3.5: Charles repeats his request to Alice (MEMBERSHIP, then MEMBERS_REQ)."""
        cfg, log = self.node.cfg, self.node.ctx.log
        stream = None
        try:
            stream = await open_stream(deputy.ip, deputy.port, self.bind, cfg.connect_timeout,
                                       max_payload=wire.CONTROL_MAX)
            stream.write(self.membership())
            await stream.send(wire.MembersReq(cfg.content, cfg.want_members))
            ans = await expect(stream, wire.MembersResp, timeout=cfg.connect_timeout)
            assert isinstance(ans, wire.MembersResp)
            log.emit("deputy_answer", overlay=self.side, deputy=deputy.peer, members=[m.peer for m in ans.members])
            return ans.members
        except (OSError, TimeoutError, TrackerError, ConnectionError) as exc:
            log.emit("deputy_answer", overlay=self.side, deputy=deputy.peer, error=str(exc) or type(exc).__name__)
            return None
        finally:
            if stream is not None:
                await stream.close()

    # -- member scheduler -------------------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        """One round of the member scheduler (3.3.2.2)."""
        node, cfg = self.node, self.node.cfg
        self.mcache.expire(now, keep=set(self.partners))
        for link in list(self.partners.values()):
            why = node.partner_problem(link, now)
            if why is not None:
                node.drop(link, why, wire.PartnerReason.POOR)
        if self.mains is not None:
            changed = False
            for lk in self.partners.values():  # a partner that asked before the tracker listed it as a main
                member = self.mcache.get(lk.peer) if lk.peer is not None else None
                if not lk.main and member is not None and member.source:
                    lk.main = True
                    changed |= self.mains.alive(lk.peer)
            partner_mains = [lk.peer for lk in self.partners.values() if lk.main and lk.peer is not None]
            changed |= self.mains.update(self.mcache.sources(now) + partner_mains)
            if changed:
                node.share_changed(self)
        if not self.joined.is_set():
            return
        need = self.target_now() - len(self.partners) - len(self.connecting)
        if need > 0:
            exclude = set(self.partners) | self.connecting | {self.me}
            cands = self.mcache.candidates(now, exclude, unflagged=cfg.unflagged)
            node.ctx.rng.shuffle(cands)
            if self.mains is not None:  # the other mains first
                cands.sort(key=lambda m: not m.source)
            for m in cands[:min(need, 2)]:
                self.connecting.add(m.peer)
                node.spawn(self.connect(m))
        if self.partners and now - self.last_ask > cfg.ask_interval and self.short_of_members(now):
            self.last_ask = now
            link = node.ctx.rng.choice(sorted(self.partners.values(), key=lambda lk: lk.id))
            link.send(wire.MembersReq(cfg.content, cfg.want_members))

    def target_now(self) -> int:
        base = self.node.partner_target(self)
        if self.mains is not None:
            base += len(self.mains.mains()) - 1
        return min(base, self.node.cfg.max_partners)

    async def connect(self, m: Member) -> None:
        """Open a connection to member ``m`` and ask it for a partnership (``m`` stays in ``connecting`` until
        the answer)."""
        node, cfg = self.node, self.node.cfg
        try:
            stream = await open_stream(m.ip, m.port, self.bind, cfg.connect_timeout,
                                       max_rejected_bytes=cfg.max_bad_bytes)
        except (OSError, TimeoutError) as exc:
            self.connecting.discard(m.peer)
            self.mcache.failed(m.peer, time.time(), cfg.retry_after)
            node.ctx.log.emit("connect_failed", overlay=self.side, peer=m.peer, ip=m.ip, port=m.port,
                              reason=str(exc) or type(exc).__name__)
            if self.mains is not None and m.source and self.mains.lost(m.peer):
                node.share_changed(self)
            return
        if node.leaving:
            self.connecting.discard(m.peer)
            await stream.close()
            return
        link = Link(stream, self, inbound=False, name=node.name_of(m.ip), now=time.time(), peer=m.peer, port=m.port)
        link.server = self.is_server(m)
        link.main = self.mains is not None and m.source
        link.state = "asking"
        link.send(self.membership())
        link.send(wire.PartnershipReq(cfg.content, self.me, min(cfg.upload_capacity // 1000, wire.U32)))
        node.attach(link)

    # -- partnership requests ---------------------------------------------------------------------------------
    def on_request(self, link: Link, msg: wire.PartnershipReq) -> None:
        node, cfg = self.node, self.node.cfg

        def answer(ok: bool, reason: int) -> None:
            link.send(wire.PartnershipResp(cfg.content, self.me or 1, ok, reason))

        if msg.content != cfg.content:
            answer(False, wire.PartnerReason.UNKNOWN_CONTENT)
            return
        if link.peer is not None and link.peer != msg.peer:
            node.bad(link, f"PARTNERSHIP_REQ for peer {msg.peer} on the connection of {link.peer}", "protocol")
            answer(False, wire.PartnerReason.OTHER)
            return
        if link.partner:
            return  # asked twice: already partners
        link.peer = msg.peer
        now = time.time()
        member = self.mcache.get(msg.peer)
        why = None
        if not self.joined.is_set() or node.leaving:
            why = wire.PartnerReason.LEAVING if node.leaving else wire.PartnerReason.OTHER
        elif self.mcache.banned(msg.peer, now) or node.refuses_partner(msg.peer, now):
            why = wire.PartnerReason.POOR  # it sent us corrupt data, or we just dropped it as of little use
        elif msg.peer in self.partners:
            why = wire.PartnerReason.OTHER  # already partners over another connection
        elif msg.peer in self.connecting and msg.peer > self.me:
            why = wire.PartnerReason.OTHER  # we are asking it too: the smaller id's connection wins
        elif not node.accepts_partners() or (len(self.partners) >= cfg.max_partners
                                             and not self._make_room(msg.upload_kbps)):
            why = wire.PartnerReason.FULL
        if why is not None:
            answer(False, why)
            node.ctx.log.emit("partner_refused", overlay=self.side, peer=msg.peer, ip=link.ip, inbound=True,
                              reason=wire.PartnerReason(why).name.lower())
            return
        answer(True, wire.PartnerReason.OK)
        link.upload_kbps = msg.upload_kbps
        link.server = self.is_server(member)
        link.main = self.mains is not None and member is not None and member.source
        node.become_partner(link)

    def _make_room(self, upload_kbps: int) -> bool:
        """Full: drop the slowest partner that said its upload (not a server or main) if the asking node says it
        uploads ``prefer_uploaders`` times more (a source whose few partners are the overlay's first hop wants them
        on fast uplinks, not the first that asked). True when a place was freed."""
        factor = self.node.cfg.prefer_uploaders
        if factor <= 0 or upload_kbps <= 0:
            return False
        told = [lk for lk in self.partners.values() if lk.upload_kbps > 0 and not lk.server and not lk.main]
        if not told:
            return False
        slowest = min(told, key=lambda lk: (lk.upload_kbps, -lk.added_at))
        if upload_kbps < factor * slowest.upload_kbps:
            return False
        self.node.drop(slowest, "replaced", wire.PartnerReason.FULL)  # leaves the partners at the next loop step
        return True

    def on_answer(self, link: Link, msg: wire.PartnershipResp) -> None:
        node = self.node
        if link.state != "asking" or msg.peer != link.peer or msg.content != node.cfg.content:
            node.bad(link, "unexpected PARTNERSHIP_RESP", "protocol")
            return
        if msg.accept:
            if link.peer in self.partners:  # it accepted ours after we accepted its own request
                node.spawn(node.close_link(link, "duplicate connection"))
                return
            node.become_partner(link)
            return
        if link.peer in self.partners:  # we accepted its own request meanwhile: nothing lost
            node.spawn(node.close_link(link, "duplicate connection"))
            return
        node.ctx.log.emit("partner_refused", overlay=self.side, peer=link.peer, ip=link.ip, inbound=False,
                          reason=wire.PartnerReason(msg.reason).name.lower())
        if link.peer is not None:
            self.mcache.failed(link.peer, time.time(), node.cfg.retry_after)
        node.spawn(node.close_link(link, "partnership refused"))

    async def leave(self) -> None:
        """Tell the tracker we leave (best effort)."""
        client = self.client
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.leave(self.node.cfg.content), 1.0)
