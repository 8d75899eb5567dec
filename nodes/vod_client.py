"""Role ``vod_client``: one process per host, playing that host's share of the VoD request schedule (several
sessions at once if the schedule says so) and serving other peers from what its sessions hold.

``requests`` lists ``[time_s, video, client]`` (seconds after the process was spawned, content id, the request's
client id from :meth:`scenarios.workload.Workload.requests`); session ids are ``client + 1``, unique in the run.
Each session is a :class:`nodes.vod.session.ClientSession`. The process listens on ``listen_port`` for VOD_PULL
from other clients and sends the asked share of one of its sessions' videos, paced at the share of the play
rate (its access line caps its upload; ``upload_bps`` is the share the server's directory plans with, logged
when a pull would exceed it).

Viewer events (docs/bundle.md) are logged per session, with ``proc`` = ``<proc>.s<session>`` and a
``session`` field, so that the analysis sees one viewer per session (a process plays several at once).
Serving is logged as ``serve_start`` / ``serve_end`` (``to``, ``supplier``, ``mode`` unicast | multicast,
``stripes``, ``chunks``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, Literal

from pydantic import BaseModel, Field

from nodes.runtime import NodeContext, run_role
from nodes.vod.content import popcount
from nodes.vod.mcast import sender_socket
from nodes.vod.senders import send_multicast, send_tcp
from nodes.vod.session import ClientSession, Held, SessionOptions
from nodes.wire import Error, ErrorCode, FramedStream, Rejected, VodPull


class Config(BaseModel):
    """``vod_client`` args."""

    server: str
    port: int = Field(default=7700, ge=1, le=65535)
    listen_port: int = Field(default=7800, ge=1, le=65535)
    requests: list[tuple[float, int, int]] = Field(default_factory=list, description="[time_s, video, client]")
    multicast: bool = Field(default=False, description="the host's ISP routes IP multicast")
    upload_bps: float = Field(default=0.0, ge=0, description="upload share planned by the server (0: not checked)")
    policy: str = Field(default="", description="for the logs; the server's policy decides")
    prebuffer_s: float = Field(default=2.0, gt=0)
    peer_timeout_s: float = Field(default=2.0, gt=0)
    ttl: int = Field(default=16, ge=1, le=255)
    schedule_from: Literal["spawn", "ready"] = Field(
        default="spawn", description="time 0 of requests: the process's spawn (emulation) or its start (in-process)")


class Client:
    def __init__(self, ctx: NodeContext, cfg: Config) -> None:
        self.ctx, self.cfg = ctx, cfg
        self.sessions: dict[int, ClientSession] = {}
        self.in_use: dict[int, int] = {}  # supplier session -> stripes being sent
        self.msock = sender_socket(cfg.ttl, ctx.hosts.get(ctx.node))
        self.tasks: set[asyncio.Task] = set()
        self.opts = SessionOptions(ctx.resolve(cfg.server), cfg.port, cfg.listen_port, cfg.multicast,
                                   cfg.prebuffer_s, cfg.peer_timeout_s)

    def spawn(self, coro) -> asyncio.Task:  # noqa: ANN001
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def emitter(self, session: int):  # noqa: ANN201
        proc = f"{self.ctx.proc}.s{session}"

        def emit(event: str, **fields: Any) -> None:
            self.ctx.log.emit(event, proc=proc, session=session, **fields)

        return emit

    async def play(self, at: float, video: int, client: int, t_start: float) -> None:
        await asyncio.sleep(max(0.0, t_start + at - time.time()))
        sid = client + 1
        s = ClientSession(sid, video, self.opts, self.emitter(sid), self.serve_multicast)
        self.sessions[sid] = s
        await s.run()

    def budget(self, supplier: int, mask: int, held: Held) -> None:
        """Log when a pull would take this session over the upload share the server plans with."""
        if not self.cfg.upload_bps or held.geometry is None:
            return
        g = held.geometry
        c = self.cfg.upload_bps / g.rate_bps
        cap = g.stripes * int(c + 1e-9) if c >= 1 else int(round(c * g.stripes))
        now = self.in_use.get(supplier, 0) + popcount(mask)
        if now > cap:
            self.ctx.log.emit("upload_overbook", supplier=supplier, stripes=now, cap=cap)

    def serve_multicast(self, s: ClientSession, pull: VodPull, held: Held) -> None:
        """The server asks session ``s`` to send its stripes of a new channel to the group."""
        self.spawn(self.send_share(s.session, pull, held, None))

    async def send_share(self, supplier: int, pull: VodPull, held: Held, conn: FramedStream | None) -> None:
        g = held.geometry
        if g is None:
            return
        mode = "multicast" if conn is None else "unicast"
        self.budget(supplier, pull.mask, held)
        self.in_use[supplier] = self.in_use.get(supplier, 0) + popcount(pull.mask)
        self.ctx.log.emit("serve_start", supplier=supplier, to=pull.session, video=pull.video, mode=mode,
                          group=pull.group if conn is None else None, stripes=popcount(pull.mask),
                          first=pull.first, end=pull.end)
        t0 = pull.t0_us / 1e6
        sent = 0

        async def get(c: int) -> bytes | None:
            return await held.store.wait(c, t0 + c * g.chunk_s + 5.0 - time.time())

        def count(n: int) -> None:
            nonlocal sent
            sent += n

        try:
            if conn is None:
                await send_multicast(self.msock, pull.group, pull.gport, pull.session, pull.video, g, pull.first,
                                     pull.end, pull.mask, t0, get, count)
            else:
                await send_tcp(conn, pull.video, g, pull.first, pull.end, pull.mask, t0, get, count)
        except (OSError, ConnectionError):
            pass
        finally:
            self.in_use[supplier] -= popcount(pull.mask)
            self.ctx.log.emit("serve_end", supplier=supplier, to=pull.session, mode=mode, bytes=sent)

    async def on_pull(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        src = "?"

        def on_reject(rej: Rejected) -> None:
            self.ctx.log.emit("bad_request", src=src, reason=rej.reason, kind="framing")

        me = asyncio.current_task()
        if me is not None:  # cancelled with the process's other tasks: a stopped client drops its pulls at once
            self.tasks.add(me)
            me.add_done_callback(self.tasks.discard)
        conn = FramedStream(reader, writer, max_payload=1 << 12, on_reject=on_reject, max_rejected_bytes=1 << 14)
        src = f"{conn.peername[0]}:{conn.peername[1]}"
        try:
            msg = await conn.recv(timeout=5.0)
            if not isinstance(msg, VodPull) or msg.group != "0.0.0.0":
                self.ctx.log.emit("bad_request", src=src, reason="expected a unicast VOD_PULL", kind="protocol",
                                  type=getattr(getattr(msg, "TYPE", None), "name", None))
                if msg is not None:
                    await conn.send(Error(ErrorCode.UNEXPECTED, msg.TYPE, "VOD_PULL expected"))
                return
            s = self.sessions.get(msg.supplier)
            held = s.held.get(msg.video) if s is not None else None
            if held is None or held.geometry is None or msg.stripes != held.geometry.stripes \
                    or msg.end > held.geometry.chunks:
                self.ctx.log.emit("bad_request", src=src, reason="no such session, video or range", kind="protocol",
                                  supplier=msg.supplier, video=msg.video)
                await conn.send(Error(ErrorCode.UNKNOWN_CONTENT, msg.TYPE, "not held here"))
                return
            await self.send_share(msg.supplier, msg, held, conn)
        except (TimeoutError, OSError, ConnectionError) as exc:
            self.ctx.log.emit("bad_request", src=src, reason=f"{type(exc).__name__}", kind="protocol")
        except Exception as exc:  # noqa: BLE001 - one connection, never the process
            self.ctx.log.emit("vod_error", src=src, error=f"{type(exc).__name__}: {exc}")
        finally:
            await conn.close()


def process_start_time() -> float:
    """When this process was created (epoch seconds, 10 ms resolution, from /proc), else now.

    The runner spawns every client at the same planned instant; Python's start-up then takes 1-2 s, differently
    on each host of a busy machine. Counting the request schedule from the spawn keeps the clients' clocks
    within the spawn spread (tens of ms) instead of the start-up spread, so the server sees the schedule's gaps."""
    import os

    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat", encoding="ascii") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith("btime"))
        t = btime + ticks / os.sysconf("SC_CLK_TCK")
        return t if 0 <= time.time() - t < 60 else time.time()
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


async def main(ctx: NodeContext, cfg: Config) -> int:
    t_start = process_start_time() if cfg.schedule_from == "spawn" else time.time()
    cl = Client(ctx, cfg)
    server = await asyncio.start_server(cl.on_pull, "0.0.0.0", cfg.listen_port)
    ctx.log.emit("vod_client_ready", sessions=len(cfg.requests), multicast=cfg.multicast, policy=cfg.policy,
                 listen_port=cfg.listen_port, epoch=t_start)
    plays = [cl.spawn(cl.play(at, video, client, t_start)) for at, video, client in cfg.requests]
    try:
        async with server:
            await asyncio.gather(*plays, return_exceptions=True)
            await asyncio.Event().wait()  # stay a peer until the run ends
    finally:
        for s in cl.sessions.values():
            with contextlib.suppress(Exception):
                await s.close()
        for task in list(cl.tasks):
            task.cancel()
        await asyncio.gather(*cl.tasks, return_exceptions=True)
        cl.msock.close()
    return 0


if __name__ == "__main__":
    run_role(main, Config)
