"""MGEN role: runs the real MGEN 5 (``mgen``) inside a node as an independent UDP traffic source or sink.

The role writes an MGEN script into the events folder (``<node>.<proc>.mgn``), runs ``mgen`` as a child
process with its log at ``<events dir>/<node>.<proc>.mgen.log`` (line-flushed, so a killed MGEN loses
nothing) and waits for it; on SIGTERM it stops the child by its PID (SIGTERM, then SIGKILL after a grace
period). A sender logs every transmission (``txlog``: ``SEND`` lines) and exits after ``duration``; a
receiver logs every datagram (``RECV`` lines with sequence number, send time and size) until stopped.
MGEN writes times of day in UTC (``HH:MM:SS.uuuuuu``, verified against ``TZ``; the child also gets
``TZ=UTC``): :mod:`analysis.crosscheck` turns them into epoch seconds using the ``mgen_start`` event.

Events: ``mgen_start`` (``mode``, ``pid``, ``argv``, ``script``, ``log``; a sender adds ``dst``, ``port``,
``flow`` (MGEN flow id), ``rate_pps``, ``size``, ``pattern``, ``duration``; a receiver ``port``) and
``mgen_stop`` (``exit_code``, ``reason`` (``done`` or ``signal``), ``log``, and the number of ``SEND``
lines (``sent``) or ``RECV`` lines (``received``) in the log).

Arguments (``args``): ``mode`` (``sender`` or ``receiver``); sender: ``dst`` (node name or IPv4), ``port``,
``rate_pps``, ``size`` (UDP payload bytes, MGEN header included), ``duration`` (seconds; default until
stopped), ``pattern`` (``periodic`` or ``poisson``), ``flow`` (MGEN flow id), ``src_port``; receiver:
``port``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nodes.iperf3 import _die_with_parent, stop_child
from nodes.runtime import NodeContext, run_role

SOCKET_BUFFER = 4 << 20
"""Socket buffer MGEN asks for (same as the probe sink's receive buffer)."""

_SENDER_ONLY = ("dst", "rate_pps", "size", "duration", "pattern", "flow", "src_port")


class Config(BaseModel):
    """``args`` of an mgen process."""

    model_config = ConfigDict(extra="forbid")
    mode: Literal["sender", "receiver"]
    port: int = Field(default=5002, ge=1, le=65535, description="destination (sender) or listening (receiver) port")
    dst: str | None = Field(default=None, description="sender: destination node name or IPv4 address")
    rate_pps: float | None = Field(default=None, gt=0, le=100000, description="sender: messages per second")
    size: int = Field(default=512, ge=64, le=8192, description="sender: UDP payload bytes per message")
    duration: float | None = Field(default=None, gt=0, description="sender: seconds to send; default until stopped")
    pattern: Literal["periodic", "poisson"] = "periodic"
    flow: int = Field(default=1, ge=1, le=1_000_000, description="sender: MGEN flow id")
    src_port: int | None = Field(default=None, ge=1, le=65535, description="sender: UDP source port")

    @model_validator(mode="after")
    def _mode_fields(self) -> Config:
        if self.mode == "sender":
            if not self.dst:
                raise ValueError("a sender needs dst")
            if self.rate_pps is None:
                raise ValueError("a sender needs rate_pps")
        else:
            given = [f for f in _SENDER_ONLY if f in self.model_fields_set]
            if given:
                raise ValueError(f"sender arguments given to a receiver: {', '.join(given)}")
        return self


def mgen_script(cfg: Config, dst_ip: str | None) -> str:
    """The MGEN script of a process (times are seconds after mgen starts)."""
    if cfg.mode == "receiver":
        return f"0.0 LISTEN UDP {cfg.port}\n"
    src = f" SRC {cfg.src_port}" if cfg.src_port else ""
    rate = f"{cfg.rate_pps:.6g}"
    lines = [f"0.0 ON {cfg.flow} UDP{src} DST {dst_ip}/{cfg.port} {cfg.pattern.upper()} [{rate} {cfg.size}]"]
    if cfg.duration is not None:
        lines.append(f"{cfg.duration:.6f} OFF {cfg.flow}")
    return "\n".join(lines) + "\n"


def mgen_argv(cfg: Config, script: Path, log: Path) -> list[str]:
    argv = ["mgen", "ipv4", "input", str(script), "output", str(log), "flush"]
    if cfg.mode == "sender":
        argv += ["txlog", "txbuffer", str(SOCKET_BUFFER)]
    else:
        argv += ["rxbuffer", str(SOCKET_BUFFER)]
    return argv


def count_lines(log: Path, word: str) -> int | None:
    """Number of ``<time> <word> ...`` lines in an MGEN log (None if it cannot be read)."""
    needle = f" {word} ".encode()
    try:
        with open(log, "rb") as fh:
            return sum(1 for line in fh if needle in line[:40])
    except OSError:
        return None


async def main(ctx: NodeContext, cfg: Config) -> int:
    dst_ip = ctx.resolve(cfg.dst) if cfg.dst else None
    events_dir = Path(ctx.log.path).parent
    script = events_dir / f"{ctx.node}.{ctx.proc}.mgn"
    log = events_dir / f"{ctx.node}.{ctx.proc}.mgen.log"
    script.write_text(mgen_script(cfg, dst_ip))
    argv = mgen_argv(cfg, script, log)
    env = dict(os.environ, TZ="UTC")
    proc = await asyncio.create_subprocess_exec(*argv, stdin=subprocess.DEVNULL, env=env,
                                                preexec_fn=_die_with_parent)
    if cfg.mode == "sender":
        ctx.log.emit("mgen_start", mode=cfg.mode, pid=proc.pid, argv=argv, script=script.name, log=log.name,
                     dst=dst_ip, port=cfg.port, flow=cfg.flow, rate_pps=cfg.rate_pps, size=cfg.size,
                     pattern=cfg.pattern, duration=cfg.duration)
    else:
        ctx.log.emit("mgen_start", mode=cfg.mode, pid=proc.pid, argv=argv, script=script.name, log=log.name,
                     port=cfg.port)
    ctx.log.flush()
    reason = "done"
    try:
        await proc.wait()
    except asyncio.CancelledError:
        reason = "signal"
        await stop_child(proc)
        raise
    finally:
        word = "SEND" if cfg.mode == "sender" else "RECV"
        count = count_lines(log, word)
        key = "sent" if cfg.mode == "sender" else "received"
        ctx.log.emit("mgen_stop", exit_code=proc.returncode, reason=reason, log=log.name, **{key: count})
    return 0 if proc.returncode == 0 else 1


if __name__ == "__main__":
    run_role(main, Config)
