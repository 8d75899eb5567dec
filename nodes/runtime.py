"""What every node program shares at start-up: reading its JSON config, its event log, its seeded
random generator, name resolution of other nodes, and an asyncio main loop that stops cleanly on SIGTERM.

The runner writes one JSON config per process::

    {"node": "h1", "proc": "p", "role": "peer", "events": ".../events/h1.p.jsonl",
     "seed": 1234, "hosts": {"h2": "10.0.0.2", ...}, "args": {...role config...}, "args_form": "normalised"}

(``args_form`` only for the roles whose args the runner completes), and a role hands its ``args`` to its ``main``
in one of two ways (nodes/roles.py says which, per role):

- ``run_role(main)``: the runner has validated the args and filled in every default (``args_form: normalised``,
  written by nodes/roles.py ``child_args``); ``main`` gets a read-only attribute view of them (nodes/args_view.py)
  and the process never imports pydantic (peer, source, tracker, tracker_probe, probe_sink). A config without that
  mark is refused (exit 2) with a message saying so, rather than failing later on a missing field;
- ``run_role(main, Config)``: the args are as the scenario gave them and are validated here with the role's
  pydantic ``Config`` (exit 2 on a validation error).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nodes.args_view import ARGS_FORM, Args
from nodes.eventlog import EventLog

if TYPE_CHECKING:
    from pydantic import BaseModel


@dataclass
class NodeContext:
    """Identity and shared services of one node process."""

    node: str
    proc: str
    role: str
    seed: int
    hosts: dict[str, str]
    log: EventLog
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def resolve(self, name_or_ip: str) -> str:
        """A node name of the scenario -> its primary IPv4 address; an address is returned as is."""
        return self.hosts.get(name_or_ip, name_or_ip)


def run_role(main: Callable[[NodeContext, Any], Awaitable[int | None]],
             config_cls: type[BaseModel] | None = None) -> None:
    """Parse ``--config``, take the role's args (see the module docstring), run ``main`` until it returns or
    SIGTERM/SIGINT arrives."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    ns = parser.parse_args()
    with open(ns.config, encoding="utf-8") as fh:
        raw: dict[str, Any] = json.load(fh)
    args: Any
    if config_cls is None:
        if raw.get("args_form") != ARGS_FORM:
            print(f"bad configuration for role {raw.get('role')}: its args were not validated and completed by the "
                  f"runner (no \"args_form\": \"{ARGS_FORM}\"); write the config with nodes/roles.py child_args",
                  file=sys.stderr)
            sys.exit(2)
        args = Args(raw.get("args", {}))
    else:
        from pydantic import ValidationError

        try:
            args = config_cls.model_validate(raw.get("args", {}))
        except ValidationError as exc:
            print(f"bad configuration for role {raw.get('role')}: {exc}", file=sys.stderr)
            sys.exit(2)
    log = EventLog(raw["events"], node=raw["node"], role=raw["role"], proc=raw["proc"])
    ctx = NodeContext(node=raw["node"], proc=raw["proc"], role=raw["role"], seed=int(raw["seed"]),
                      hosts=dict(raw.get("hosts", {})), log=log)
    code = 0
    try:
        code = asyncio.run(_supervise(ctx, args, main)) or 0
    finally:
        log.close()
    sys.exit(code)


async def _supervise(ctx: NodeContext, args: Any, main: Callable[[NodeContext, Any], Awaitable[int | None]]) -> int:
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(main(ctx, args))
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    ctx.log.emit("process_start", pid=_pid())
    flusher = asyncio.ensure_future(_flush_periodically(ctx))
    try:
        result = await task
    except asyncio.CancelledError:
        ctx.log.emit("process_stop", reason="signal", **_usage())
        return 0
    finally:
        flusher.cancel()
    ctx.log.emit("process_stop", reason="done", **_usage())
    return int(result or 0)


async def _flush_periodically(ctx: NodeContext, every: float = 0.25) -> None:
    """Flush the event log even when nothing new is written, so that the file is never far behind."""
    while True:
        await asyncio.sleep(every)
        ctx.log.flush()


def _usage() -> dict[str, Any]:
    """What this program cost, logged with ``process_stop``: peak RSS, CPU seconds (user + system), and at exit the
    private (``Private_*``) and proportional (``Pss``) memory of ``/proc/self/smaps_rollup``: RSS counts the
    interpreter's and libraries' file pages in every process, private memory is what one more process adds."""
    import os

    times = os.times()
    out: dict[str, Any] = {"max_rss_kb": _max_rss_kb(), "cpu_s": round(times.user + times.system, 3)}
    try:
        rollup = dict(line.split(":", 1) for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:])
        out["private_kb"] = sum(int(rollup[k].split()[0]) for k in ("Private_Clean", "Private_Dirty"))
        out["pss_kb"] = int(rollup["Pss"].split()[0])
    except (OSError, ValueError, KeyError, IndexError):
        pass
    return out


def _max_rss_kb() -> int:
    """Peak resident set size of this program so far, in KiB (benchmarks read it from ``process_stop``).

    ``VmHWM`` of ``/proc/self/status`` belongs to the address space made at ``exec``; ``getrusage``'s ``ru_maxrss``
    does not: it keeps the peak of the process before ``exec``, i.e. the forked copy of the (large) runner that
    started us, so every role would report the runner's size."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _pid() -> int:
    import os

    return os.getpid()
