"""Support for the fast streaming tests (no tests of its own): a tracker, sources and peers as objects in one
asyncio loop on loopback (no emulated network), each with its own event log and seed.

``Cluster`` gives every node a distinct 127.0.0.x address (``bind``), so trackers see distinct addresses and
scopes can be tested; ports are free ones found at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nodes import peer, source, source_config, tracker
from nodes.args_view import Args
from nodes.eventlog import EventLog
from nodes.roles import child_args
from nodes.runtime import NodeContext

USERS = {f"u{i}": f"pw{i}" for i in range(40)}


def child_view(role: str, args: dict[str, Any]) -> Args:
    """What a role process of that role gets as ``cfg``: the runner's validated, completed args as a read-only view."""
    return Args(child_args(role, args)["args"])


def free_port(ip: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return int(s.getsockname()[1])


class Cluster:
    """Streaming nodes in one event loop. Use inside ``asyncio.run``; ``await cluster.stop()`` at the end."""

    def __init__(self, folder: Path, seed: int = 1):
        self.folder = folder
        self.seed = seed
        self.hosts: dict[str, str] = {}
        self.logs: dict[str, EventLog] = {}
        self.tasks: dict[str, asyncio.Task[Any]] = {}
        self.nodes: dict[str, Any] = {}
        self.ports: dict[str, int] = {}
        self._next_ip = 1
        self._users = iter(USERS.items())

    def address(self, name: str, ip: str | None = None) -> str:
        if name not in self.hosts:
            if ip is None:
                self._next_ip += 1
                ip = f"127.0.0.{self._next_ip}"
            self.hosts[name] = ip
        return self.hosts[name]

    def ctx(self, name: str, role: str) -> NodeContext:
        log = EventLog(self.folder / "events" / f"{name}.jsonl", node=name, role=role, proc=role, flush_interval=0.05)
        self.logs[name] = log
        seed = self.seed * 1000 + len(self.logs)
        return NodeContext(node=name, proc=role, role=role, seed=seed, hosts=self.hosts, log=log)

    def user(self) -> tuple[str, str]:
        return next(self._users)

    async def tracker(self, name: str = "trk", ip: str | None = None, **args: Any) -> str:
        host = self.address(name, ip)
        port = free_port(host)
        args = {"users": USERS, "bind": host, "port": port, "reach_timeout": 0.5, "stats_interval": 1.0,
                "member_timeout": 6.0} | args
        cfg = child_view("tracker", args)
        self.ports[name] = port
        self.tasks[name] = asyncio.ensure_future(tracker.main(self.ctx(name, "tracker"), cfg))
        await asyncio.sleep(0.1)
        return host

    def _common(self, name: str, trk: str, ip: str | None, args: dict[str, Any]) -> dict[str, Any]:
        host = self.address(name, ip)
        user, secret = self.user()
        out = {"tracker": trk, "tracker_port": self.ports[trk], "user": user, "secret": secret, "bind": host,
               "listen_port": free_port(host), "key": "k3y", "connect_timeout": 1.0, "retry_after": 1.0,
               "bm_interval": 0.5, "member_interval": 0.5}
        return out | args

    async def source(self, name: str = "src", trk: str = "trk", ip: str | None = None,
                     **args: Any) -> source.SourceNode:
        cfg = child_view("source", self._common(name, trk, ip, {"bitrate": 200_000} | args))
        ctx = self.ctx(name, "source")
        node = source.SourceNode(ctx, cfg)
        await node.prepare()
        self.nodes[name] = node
        self.tasks[name] = asyncio.ensure_future(node.run())
        await asyncio.sleep(0.05)
        return node

    async def peer(self, name: str, trk: str = "trk", ip: str | None = None, **args: Any) -> peer.PeerNode:
        cfg = child_view("peer", self._common(name, trk, ip, {"start_lag": 3.0, "startup_buffer": 2.0} | args))
        node = peer.PeerNode(self.ctx(name, "peer"), cfg)
        self.nodes[name] = node
        self.tasks[name] = asyncio.ensure_future(node.run())
        return node

    async def stop(self, *names: str) -> None:
        for name in names or list(self.tasks):
            task = self.tasks.pop(name, None)
            if task is None:
                continue
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(task, 5)
            self.logs[name].flush()

    def events(self, name: str, event: str | None = None) -> list[dict[str, Any]]:
        self.logs[name].flush()
        path = self.folder / "events" / f"{name}.jsonl"
        out = []
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if event is None or rec["event"] == event:
                out.append(rec)
        return out

    async def until(self, what: str, cond: Callable[[], Any], timeout: float = 20.0) -> Any:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while loop.time() < end:
            value = cond()
            if value:
                return value
            await asyncio.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}")



async def source_holding(c: Cluster, chunks: int, size: int, **args: Any) -> source.SourceNode:
    """A source node (not running its loops) on its own loopback address, holding chunks 0..chunks-1 of ``size``
    bytes each (chunk i's bytes are all i), configured with ``args``."""
    from nodes.chunk_buffer import Chunk

    host = c.address("src")
    cfg = source_config.Config.model_validate({"tracker": "127.0.0.1", "user": "u", "secret": "s", "bind": host,
                                               "listen_port": free_port(host), **args})
    node = source.SourceNode(c.ctx("src", "source"), cfg)
    await node.prepare()
    assert node.buffer is not None
    for cid in range(chunks):
        node.buffer.put(Chunk(cid, bytes([cid % 256]) * size))
    return node


async def partner_links(node: source.SourceNode, names: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, Any],
                                                                                  asyncio.AbstractServer]:
    """Real loopback connections to ``node``, one per name, each attached on the node's side as an inbound
    partnership (a ``Link`` in state partner): (links by name, far ends by name, the listening server)."""
    from nodes.peer_link import Link
    from nodes.wire import FramedStream

    host = node.cfg.bind
    accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    server = await asyncio.start_server(lambda r, w: accepted.put_nowait((r, w)), host, 0)
    port = server.sockets[0].getsockname()[1]
    links: dict[str, Any] = {}
    far: dict[str, Any] = {}
    for name in names:
        far[name] = FramedStream(*await asyncio.open_connection(host, port))
        link = Link(FramedStream(*await accepted.get()), node.overlays[0], inbound=True, name=name,
                    now=time.time(), peer=len(links) + 1)
        link.state = "partner"
        node.links.add(link)
        links[name] = link
    return links, far, server


async def close_partner_links(links: dict[str, Any], far: dict[str, Any], server: asyncio.AbstractServer) -> None:
    """Close what :func:`partner_links` opened: both ends of each connection and the listening server."""
    for lk in links.values():
        await lk.close()
    for fs in far.values():
        await fs.close()
    server.close()
