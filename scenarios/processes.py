"""Node processes of a run: start each role as its own OS process inside its node, capture its output,
signal it, and notice when it exits (a non-zero exit or a death by signal we did not send is a crash).
"""

from __future__ import annotations

import compileall
import hashlib
import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from nodes.roles import ROLE_MODULES, child_args
from scenarios.bundle import JsonLines
from scenarios.schema import Process, Scenario

ROLE_PACKAGES = ("nodes", "topologies")
"""The project's packages that node processes and delay lines import."""


def ensure_bytecode() -> None:
    """Write the missing or stale ``.pyc`` files of :data:`ROLE_PACKAGES`. Where ``PYTHONDONTWRITEBYTECODE`` is set
    (as on the development machine) Python never writes them, so every role process compiled its modules from
    source at start: a peer, source and tracker import took 1.57 s of CPU and 37.2 MB of RSS, against 0.83 s and
    35.0 MB from bytecode (2026-12-06), which counts when a run starts a hundred peers on two cores. Up-to-date
    files are left alone; a tree that cannot be written is run from source as before."""
    root = Path(__file__).resolve().parent.parent
    for pkg in ROLE_PACKAGES:
        compileall.compile_dir(root / pkg, quiet=2)


def derived_seed(seed: int, *parts: str) -> int:
    """A stable 32-bit seed for one random stream of the run (same scenario seed -> same streams)."""
    digest = hashlib.sha256(("/".join([str(seed), *parts])).encode()).digest()
    return int.from_bytes(digest[:4], "big")


class Spawner(Protocol):
    def popen(self, node: str, argv: list[str], label: str, **kwargs: Any) -> subprocess.Popen: ...


@dataclass
class Running:
    node: str
    spec: Process
    proc: subprocess.Popen
    started: float
    signalled: str | None = None
    reported: bool = False


class ProcessTable:
    """Every node process of one run, by (node, process name)."""

    def __init__(self, sc: Scenario, bundle: Path, spawner: Spawner, hosts: dict[str, str]):
        self.sc = sc
        self.bundle = bundle
        self.spawner = spawner
        self.hosts = hosts
        self.running: dict[tuple[str, str], Running] = {}
        self.history = JsonLines(bundle / "processes.jsonl")
        self.exits: list[dict[str, Any]] = []
        for folder in ("config", "events", "logs"):
            (bundle / folder).mkdir(exist_ok=True)
        ensure_bytecode()

    def spec(self, node: str, name: str) -> Process:
        return next(p for p in self.sc.node(node).processes if p.proc_name == name)

    def start(self, node: str, name: str) -> None:
        key = (node, name)
        if key in self.running and self.running[key].proc.poll() is None:
            self.history.write(t=time.time(), node=node, proc=name, event="start_skipped", reason="already running")
            return
        spec = self.spec(node, name)
        cfg = {"node": node, "proc": name, "role": spec.role,
               "events": str(self.bundle / "events" / f"{node}.{name}.jsonl"),
               "seed": derived_seed(self.sc.seed, "process", node, name),
               "hosts": self.hosts, **child_args(spec.role, spec.args)}
        cfg_path = self.bundle / "config" / f"{node}.{name}.json"
        cfg_path.write_text(json.dumps(cfg, indent=1))
        out = open(self.bundle / "logs" / f"{node}.{name}.out", "ab")  # noqa: SIM115 - child owns it
        err = open(self.bundle / "logs" / f"{node}.{name}.err", "ab")  # noqa: SIM115
        argv = [sys.executable, "-m", ROLE_MODULES[spec.role], "--config", str(cfg_path)]
        proc = self.spawner.popen(node, argv, label=f"{node}.{name}", stdout=out, stderr=err)
        out.close()
        err.close()
        self.running[key] = Running(node, spec, proc, time.time())
        self.history.write(t=time.time(), node=node, proc=name, role=spec.role, event="start", pid=proc.pid)

    def signal(self, node: str, name: str, sig: signal.Signals) -> bool:
        run = self.running.get((node, name))
        if run is None or run.proc.poll() is not None:
            return False
        run.signalled = sig.name
        run.proc.send_signal(sig)
        return True

    def stop_node(self, node: str) -> None:
        for (n, name) in list(self.running):
            if n == node:
                self.signal(n, name, signal.SIGKILL)

    def poll(self) -> list[dict[str, Any]]:
        """Record processes that have exited since the last call; return the crashes among them."""
        crashes = []
        for (node, name), run in self.running.items():
            code = run.proc.poll()
            if code is None or run.reported:
                continue
            run.reported = True
            crashed = run.signalled is None and code != 0
            rec = {"t": time.time(), "node": node, "proc": name, "role": run.spec.role, "event": "exit",
                   "exit_code": code, "signal": signal.Signals(-code).name if code < 0 else None,
                   "signalled_by_runner": run.signalled, "crashed": crashed,
                   "ran_s": round(time.time() - run.started, 3)}
            self.history.write(**rec)
            self.exits.append(rec)
            if crashed:
                crashes.append(rec)
        return crashes

    def stop_all(self, grace: float = 3.0) -> None:
        """SIGTERM every process still running, then SIGKILL what remains after ``grace`` seconds."""
        for (node, name), run in self.running.items():
            if run.proc.poll() is None:
                self.signal(node, name, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(r.proc.poll() is None for r in self.running.values()):
            time.sleep(0.05)
        for (node, name), run in self.running.items():
            if run.proc.poll() is None:
                self.signal(node, name, signal.SIGKILL)
                run.proc.wait()
        self.poll()
