"""The run lifecycle: validate -> plan -> build -> start processes -> play the timeline -> tear down.

Teardown always runs (normal end, Ctrl-C / SIGTERM, an exception, a crashed node process), and the
leftovers of a runner that was killed outright are removed by the next run (``topologies.leftovers``).
The bundle's manifest says how far a run got and how it ended.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from scenarios.bundle import REPO, JsonLines, Manifest, git_state, new_bundle_dir, utc_now, versions
from scenarios.loader import load_scenario
from scenarios.processes import ProcessTable, derived_seed
from scenarios.schema import (
    DirectionParams,
    LinkDown,
    LinkSet,
    LinkUp,
    Move,
    NodeAction,
    ProcessSignal,
    ResolvedDirection,
    Scenario,
    resolve_loss,
)
from topologies.impair.backends import Backend, NetemBackend, NfqueueBackend, choose_backend
from topologies.leftovers import RunState, remove_state, stale_states
from topologies.network import EmulatedNetwork
from topologies.picture import draw_topology
from topologies.plan import make_plan


@dataclass
class RunOptions:
    impairment: str = "auto"
    results: Path = field(default_factory=lambda: Path(os.environ.get("STREAMBED_RESULTS", REPO / "results")))
    seed: int | None = None
    console: Console = field(default_factory=lambda: Console(stderr=True))


@dataclass
class RunOutcome:
    bundle: Path
    status: str
    crashes: list[dict[str, Any]]
    error: str | None = None


class _Stop(Exception):
    """Raised in the main thread by SIGTERM, handled like Ctrl-C."""


def apply_changes(old: ResolvedDirection, *changes: DirectionParams | None) -> ResolvedDirection:
    """A direction's parameters after a ``link_set`` (only the fields the event sets change)."""
    data = dict(old)
    for ch in changes:
        if ch is None:
            continue
        for key in ch.model_fields_set:
            value = getattr(ch, key)
            if value is not None:
                data[key] = resolve_loss(value) if key == "loss" else value
    return ResolvedDirection(**data)


def make_backend(name: str, seed: int) -> Backend:
    if name == "netem":
        return NetemBackend()
    return NfqueueBackend(seed_for=lambda key: derived_seed(seed, "impair", key))


def clean_killed_runs() -> list[str]:
    """Remove what runs killed outright (SIGKILL) left behind, and mark their bundles as killed."""
    removed: list[str] = []
    for state in stale_states():
        removed += [f"{state.run_id}: {r}" for r in remove_state(state)]
        manifest = Path(state.bundle) / "manifest.json"
        try:
            data = json.loads(manifest.read_text())
        except (OSError, ValueError):
            continue
        if data.get("status") == "running":
            Manifest(manifest, data).update(status="killed", error="the runner was killed; leftovers removed later",
                                            cleaned=utc_now())
    return removed


def run_scenario(path: str | Path, opts: RunOptions,
                 body: Callable[[EmulatedNetwork, Path, Callable[[str], None]], None] | None = None) -> RunOutcome:
    """Run a scenario file. ``body`` replaces the process/timeline phase (``invoke calibrate`` uses it).

    Raises ``ScenarioError`` (nothing built) or ``ImpairmentError`` (no backend) before building anything.
    """
    console = opts.console
    sc, text = load_scenario(path)
    if opts.seed is not None:
        sc.seed = opts.seed
    plan = make_plan(sc)
    backend_name, backend_reason = choose_backend(opts.impairment)
    for removed in clean_killed_runs():
        console.print(f"[yellow]removed a leftover of a killed run:[/] {removed}")

    bundle = new_bundle_dir(Path(opts.results), sc.name, sc.seed)
    (bundle / "scenario.yaml").write_text(text)
    resolved = sc.model_dump(mode="json") | {"network": plan.to_json()}
    (bundle / "resolved.json").write_text(json.dumps(resolved, indent=1))
    try:
        draw_topology(sc, plan, bundle / "topology.png")
    except Exception as exc:  # noqa: BLE001 - a picture must never stop a run; say why it is missing
        (bundle / "topology-error.txt").write_text(f"{exc.__class__.__name__}: {exc}\n")
    manifest = Manifest(bundle / "manifest.json", {
        "scenario": sc.name, "scenario_file": str(Path(path).resolve()), "seed": sc.seed,
        "duration_s": sc.duration, "status": "running", "phase": "build",
        "impairment_backend": backend_name, "impairment_reason": backend_reason,
        "impairment_requested": opts.impairment,
        "git": git_state(), "versions": versions(), "start": utc_now(), "end": None,
        "command": "calibrate" if body else "run",
    })
    state = RunState(run_id=f"{sc.name}-{bundle.name}", bundle=str(bundle))
    state.save()
    net = EmulatedNetwork(plan, make_backend(backend_name, sc.seed), state, bundle,
                          specs={n.name: n for n in sc.nodes}, piconets=sc.piconets)
    procs: ProcessTable | None = None
    status, error = "failed", None
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                        TimeElapsedColumn(), console=console, transient=True)
    task = progress.add_task("build", total=sc.duration, info="")

    def phase(msg: str) -> None:
        progress.update(task, description=msg)
        manifest.update(phase=msg)

    built = False
    try:
        with progress:
            t_build = time.monotonic()
            net.build(lambda m: phase(f"build: {m}"))
            built = True
            manifest.update(build_s=round(time.monotonic() - t_build, 3))
            net.dump_state(bundle / "state" / "start")
            if body is not None:
                phase("measure")
                body(net, bundle, phase)
            else:
                procs = ProcessTable(sc, bundle, net, plan.hosts_table())
                _play(sc, net, procs, manifest, bundle, progress, task)
        status = "completed"
    except (KeyboardInterrupt, _Stop):
        status, error = "interrupted", "interrupted by a signal"
        console.print("[yellow]interrupted: tearing down[/]")
    except Exception as exc:  # noqa: BLE001 - any failure must still tear down and be recorded
        status, error = "failed", f"{exc.__class__.__name__}: {exc}"
        (bundle / "error.txt").write_text(traceback.format_exc())
    finally:
        signal.signal(signal.SIGTERM, previous)
        t_down = time.monotonic()
        crashes = _teardown(net, procs, bundle, built)
        leftovers = remove_state(state)
        manifest.update(status=status, error=error, end=utc_now(), phase="done",
                        teardown_s=round(time.monotonic() - t_down, 3),
                        processes=procs.exits if procs else [], crashed_processes=crashes,
                        teardown_leftovers_removed=leftovers)
    return RunOutcome(bundle, status, crashes, error)


def _raise_stop(_sig: int, _frame: Any) -> None:
    raise _Stop()


def _teardown(net: EmulatedNetwork, procs: ProcessTable | None, bundle: Path, built: bool) -> list[dict[str, Any]]:
    """Stop processes, record the end state, remove the network. Each step runs even if one before failed."""
    crashes: list[dict[str, Any]] = []
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not abort the cleanup
    try:
        if procs is not None:
            procs.stop_all()
            crashes = [e for e in procs.exits if e["crashed"]]
        if built:
            try:
                net.dump_state(bundle / "state" / "end")
            except Exception:  # noqa: BLE001
                (bundle / "state" / "end-error.txt").write_text(traceback.format_exc())
        stats = net.stop()
        if stats:
            (bundle / "logs").mkdir(exist_ok=True)
            for node, st in stats.items():
                (bundle / "logs" / f"delayline-{node}.json").write_text(json.dumps(st, indent=1))
        impair_dir = bundle / "impair"
        if impair_dir.is_dir():
            for f in impair_dir.glob("*.err"):
                if f.stat().st_size:
                    shutil.copy(f, bundle / "logs" / f.name)
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    return crashes


def _schedule(sc: Scenario) -> list[tuple[float, int, Any]]:
    items: list[tuple[float, int, Any]] = []
    order = 0
    for node in sc.nodes:
        for proc in node.processes:
            items.append((proc.start, order, ("start", node.name, proc.proc_name)))
            order += 1
    for ev in sc.timeline:
        items.append((ev.at, order, ev))
        order += 1
    return sorted(items, key=lambda x: (x[0], x[1]))


def _play(sc: Scenario, net: EmulatedNetwork, procs: ProcessTable, manifest: Manifest, bundle: Path,
          progress: Progress, task: Any) -> None:
    timeline_log = JsonLines(bundle / "timeline.jsonl")
    items = _schedule(sc)
    t0 = time.monotonic()
    manifest.update(phase="running", t0_epoch=time.time())
    progress.update(task, description="running", completed=0)
    lateness: list[float] = []
    i = 0
    while True:
        now = time.monotonic() - t0
        while i < len(items) and items[i][0] <= now:
            at, _, item = items[i]
            fired = time.monotonic() - t0
            outcome = _fire(item, net, procs, sc)
            late_ms = (fired - at) * 1000
            lateness.append(late_ms)
            desc = item if isinstance(item, tuple) else item.model_dump(mode="json")
            timeline_log.write(planned_s=at, fired_s=round(fired, 6), lateness_ms=round(late_ms, 3),
                               epoch=time.time(), item=desc, outcome=outcome)
            i += 1
        for crash in procs.poll():
            progress.console.print(f"[red]process crashed:[/] {crash['node']}.{crash['proc']} "
                                   f"(exit code {crash['exit_code']}); see logs/{crash['node']}.{crash['proc']}.err")
        if now >= sc.duration:
            break
        progress.update(task, completed=min(now, sc.duration), info=f"{now:5.1f}/{sc.duration:g} s")
        next_at = items[i][0] if i < len(items) else sc.duration
        time.sleep(max(0.0, min(0.05, next_at - now, sc.duration - now)))
    if lateness:
        manifest.update(timeline_lateness_ms={"max": round(max(lateness), 3),
                                              "mean": round(sum(lateness) / len(lateness), 3),
                                              "events": len(lateness)})


def _fire(item: Any, net: EmulatedNetwork, procs: ProcessTable, sc: Scenario) -> str:
    """Carry out one timeline item; returns 'ok' or what went wrong (the run goes on)."""
    try:
        if isinstance(item, tuple) and item[0] == "start":
            procs.start(item[1], item[2])
        elif isinstance(item, LinkDown | LinkUp):
            net.set_link(item.link, isinstance(item, LinkUp))
        elif isinstance(item, LinkSet):
            lp = net.plan.link(item.link)
            for direction, own in (("a_to_b", item.a_to_b), ("b_to_a", item.b_to_a)):
                if item.set is None and own is None:
                    continue
                old = lp.a_to_b if direction == "a_to_b" else lp.b_to_a
                net.change_link(item.link, direction, apply_changes(old, item.set, own))
        elif isinstance(item, ProcessSignal):
            if item.action == "process_start":
                procs.start(item.node, item.process)
            else:
                sig = signal.SIGTERM if item.action == "process_stop" else signal.SIGKILL
                if not procs.signal(item.node, item.process, sig):
                    return "not running"
        elif isinstance(item, Move):
            net.move(item.node, item.to)
        elif isinstance(item, NodeAction):
            if item.action == "node_stop":
                procs.stop_node(item.node)
                for lp in net.plan.links:
                    if item.node in (lp.a.node, lp.b.node):
                        net.set_link(lp.name, False)
            else:
                for lp in net.plan.links:
                    if item.node in (lp.a.node, lp.b.node):
                        net.set_link(lp.name, True)
                for proc in sc.node(item.node).processes:
                    procs.start(item.node, proc.proc_name)
        return "ok"
    except Exception as exc:  # noqa: BLE001 - a failed event is recorded, the run goes on
        return f"error: {exc.__class__.__name__}: {exc}"
