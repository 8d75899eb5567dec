"""Test role ``crasher``: runs for ``after`` seconds, then exits with ``code`` (or dies by a signal).

It exists so that tests and teaching demos can show how the runner reports a crashed node process.
"""

from __future__ import annotations

import asyncio
import os
import signal

from pydantic import BaseModel, ConfigDict, Field

from nodes.runtime import NodeContext, run_role


class Config(BaseModel):
    """``args`` of a crasher process."""

    model_config = ConfigDict(extra="forbid")
    after: float = Field(default=1.0, ge=0)
    code: int = Field(default=3, ge=1, le=255)
    signal: str | None = Field(default=None, description="e.g. SIGSEGV: die by this signal instead")


async def main(ctx: NodeContext, cfg: Config) -> int:
    await asyncio.sleep(cfg.after)
    ctx.log.emit("crash", code=cfg.code, signal=cfg.signal)
    ctx.log.flush()
    if cfg.signal:
        os.kill(os.getpid(), getattr(signal, cfg.signal))
    os._exit(cfg.code)


if __name__ == "__main__":
    run_role(main, Config)
