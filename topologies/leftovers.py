"""Record what a run creates on the machine, so that anything it leaves behind can be removed later.

Every run writes ``/run/streambed/<run-id>.json`` as it builds: the runner's PID, every process it starts
(PID plus kernel start time, so a recycled PID is never mistaken for ours), the bridges and root-namespace
interfaces it creates. Teardown deletes the file last. If the runner was killed (SIGKILL), the next run or
``invoke clean`` finds the file of a dead runner and removes exactly what it lists: processes by PID (plus any process
inside the network namespaces of those processes, which only that run created), then bridges and
interfaces by name. Network namespaces are unnamed (Mininet's), so they disappear with the
last process inside them, and their veths and netfilter rules with them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

STATE_DIR = Path(os.environ.get("STREAMBED_STATE_DIR", "/run/streambed"))


def proc_start_time(pid: int) -> int | None:
    """Kernel start time of a process (clock ticks since boot), or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def pid_alive(pid: int, start: int | None) -> bool:
    now = proc_start_time(pid)
    return now is not None and (start is None or now == start)


@dataclass
class RunState:
    """What one run has created; saved to disk after every change."""

    run_id: str
    runner_pid: int = field(default_factory=os.getpid)
    runner_start: int | None = None
    bundle: str = ""
    processes: list[tuple[int, int | None, str]] = field(default_factory=list)  # pid, start time, label
    bridges: list[str] = field(default_factory=list)
    root_intfs: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.runner_start is None:
            self.runner_start = proc_start_time(self.runner_pid)

    @property
    def path(self) -> Path:
        return STATE_DIR / f"{self.run_id}.json"

    def save(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        tmp.replace(self.path)

    def add_process(self, pid: int, label: str) -> None:
        self.processes.append((pid, proc_start_time(pid), label))
        self.save()

    def add_bridge(self, name: str) -> None:
        self.bridges.append(name)
        self.save()

    def add_root_intf(self, name: str) -> None:
        self.root_intfs.append(name)
        self.save()

    def forget(self) -> None:
        self.path.unlink(missing_ok=True)


def _link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def _netns_of(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None


def _strays_in(namespaces: set[str], known: set[int]) -> list[tuple[int, int | None, str]]:
    """Processes inside the run's own network namespaces that the state file does not list.

    A runner killed between starting a node program and recording its PID leaves such a process; it lives in
    a namespace only that run created, so it is the run's and is removed with the rest."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in known or int(entry.name) == os.getpid():
            continue
        if _netns_of(int(entry.name)) in namespaces:
            out.append((int(entry.name), proc_start_time(int(entry.name)), "unrecorded process in the run's namespace"))
    return out


def remove_state(state: RunState, grace: float = 1.0) -> list[str]:
    """Remove everything ``state`` lists that still exists; return what was removed (for the log)."""
    removed: list[str] = []
    alive = [(pid, st, label) for pid, st, label in state.processes if pid_alive(pid, st)]
    root_ns = _netns_of(1)
    namespaces = {ns for pid, _st, _l in alive if (ns := _netns_of(pid)) is not None and ns != root_ns}
    alive += _strays_in(namespaces, {pid for pid, _st, _l in alive})
    for pid, _st, label in alive:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        removed.append(f"process {pid} ({label})")
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(pid_alive(p, s) for p, s, _ in alive):
        time.sleep(0.05)
    for pid, st, _label in alive:
        if pid_alive(pid, st):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    for pid, st, _label in alive:  # namespaces vanish when their last process is reaped
        for _ in range(100):
            if not pid_alive(pid, st):
                break
            time.sleep(0.02)
    for name in state.root_intfs + state.bridges:
        if _link_exists(name):
            subprocess.run(["ip", "link", "del", name], capture_output=True, check=False)
            removed.append(f"link {name}")
    state.forget()
    return removed


def stale_states() -> list[RunState]:
    """State files of runs whose runner is no longer alive."""
    out = []
    if not STATE_DIR.is_dir():
        return out
    for path in sorted(STATE_DIR.glob("*.json")):
        try:
            data = json.loads(path.read_text())
            state = RunState(**{k: data[k] for k in data if k in RunState.__dataclass_fields__})
        except (OSError, ValueError, TypeError):
            path.unlink(missing_ok=True)
            continue
        state.processes = [tuple(p) for p in state.processes]  # type: ignore[misc]
        if not pid_alive(state.runner_pid, state.runner_start):
            out.append(state)
    return out
