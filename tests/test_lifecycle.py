"""Teardown leaves nothing behind: after a normal run, Ctrl-C, a crashed node process, an exception during
build, and SIGKILL of the runner followed by ``invoke clean``. Also: crashes are reported, not hidden."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scenarios.run import RunOptions, run_scenario
from tests.conftest import REPO, machine_leftovers
from topologies.network import EmulatedNetwork

SMALL = REPO / "tests" / "scenarios" / "small.yaml"
CRASH = REPO / "tests" / "scenarios" / "crash.yaml"


def invoke(*args: str, results: Path, **kw) -> subprocess.Popen:
    env = dict(os.environ, STREAMBED_RESULTS=str(results))
    return subprocess.Popen([sys.executable, "-m", "invoke", *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def manifest_of(results: Path, name: str) -> dict:
    bundles = sorted((results / name).iterdir())
    assert len(bundles) == 1
    return json.loads((bundles[0] / "manifest.json").read_text())


def wait_for_phase(results: Path, name: str, phase: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if manifest_of(results, name).get("phase") == phase:
                return
        except (FileNotFoundError, AssertionError, ValueError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"run never reached phase {phase!r}")


def test_normal_run_completes_and_cleans_up(no_leftovers, results_dir) -> None:
    proc = invoke("run", str(SMALL), "--no-report", results=results_dir)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    m = manifest_of(results_dir, "small")
    assert m["status"] == "completed"
    assert m["impairment_backend"] in ("netem", "nfqueue")
    assert "h1up h1->srv" in out and "srvdown srv->h1" in out  # the per-flow summary lines
    bundle = next((results_dir / "small").iterdir())
    for f in ("scenario.yaml", "resolved.json", "state/start/r1.txt", "state/end/srv.txt", "events/h1.tx.jsonl",
              "logs/h1.tx.err", "timeline.jsonl", "processes.jsonl", "flows.csv"):
        assert (bundle / f).exists(), f
    assert "iptables" in (bundle / "state/start/srv.txt").read_text()
    for host in ("h1", "h2", "r1", "srv"):  # programs on one node reach each other over loopback
        assert "lo: <LOOPBACK,UP,LOWER_UP>" in (bundle / f"state/start/{host}.txt").read_text(), host
    timeline = [json.loads(x) for x in (bundle / "timeline.jsonl").read_text().splitlines()]
    assert all(t["outcome"] == "ok" for t in timeline)
    assert max(t["lateness_ms"] for t in timeline) < 100
    # each role reports its own peak memory, not that of the runner it was forked from (hundreds of MB)
    stops = [json.loads(x) for x in (bundle / "events/h1.tx.jsonl").read_text().splitlines() if "process_stop" in x]
    assert stops and 5_000 < stops[-1]["max_rss_kb"] < 80_000, stops
    # the runner wrote the roles' bytecode (even under PYTHONDONTWRITEBYTECODE): processes start from .pyc files
    for mod in ("nodes/probe_sender.py", "nodes/runtime.py", "topologies/impair/delayline.py"):
        src = REPO / mod
        pyc = Path(importlib.util.cache_from_source(str(src)))
        assert pyc.exists() and pyc.stat().st_mtime >= src.stat().st_mtime, mod


def test_ctrl_c_marks_interrupted_and_cleans_up(no_leftovers, results_dir) -> None:
    proc = invoke("run", str(SMALL), "--no-report", results=results_dir)
    wait_for_phase(results_dir, "small", "running")
    time.sleep(1)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    m = manifest_of(results_dir, "small")
    assert m["status"] == "interrupted"
    assert m["end"] is not None


def test_crashed_process_is_reported_and_run_cleans_up(no_leftovers, results_dir) -> None:
    proc = invoke("run", str(CRASH), "--no-report", results=results_dir)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, out
    assert "crashed" in out and "a.crasher" in out
    m = manifest_of(results_dir, "crash")
    assert m["status"] == "completed"
    [crash] = m["crashed_processes"]
    assert crash["node"] == "a" and crash["exit_code"] == 3
    healthy = [p for p in m["processes"] if p["proc"] == "probe_sender"]
    assert healthy and not healthy[0]["crashed"]


def test_exception_during_build_tears_down(no_leftovers, results_dir, monkeypatch) -> None:
    def broken(self) -> None:
        raise RuntimeError("injected failure after nodes, links and bridges exist")

    monkeypatch.setattr(EmulatedNetwork, "_impair", broken)
    outcome = run_scenario(SMALL, RunOptions(results=results_dir))
    assert outcome.status == "failed"
    assert "injected failure" in (outcome.error or "")
    assert (outcome.bundle / "error.txt").exists()


def test_sigkill_of_runner_then_invoke_clean(no_leftovers, results_dir) -> None:
    proc = invoke("run", str(SMALL), "--no-report", results=results_dir, start_new_session=True)
    wait_for_phase(results_dir, "small", "running")
    time.sleep(1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(0.5)
    left = machine_leftovers()
    assert left.get("run records") and left.get("processes in other namespaces"), left
    clean = subprocess.run([sys.executable, "-m", "invoke", "clean"], cwd=REPO, capture_output=True, text=True,
                           timeout=60)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "removed" in clean.stdout
    m = manifest_of(results_dir, "small")
    assert m["status"] == "killed"  # the bundle shows the run never finished


@pytest.mark.parametrize("scenario", [SMALL])
def test_next_run_removes_leftovers_of_a_killed_run(no_leftovers, results_dir, scenario) -> None:
    proc = invoke("run", str(scenario), "--no-report", results=results_dir, start_new_session=True)
    wait_for_phase(results_dir, "small", "running")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    outcome = run_scenario(scenario, RunOptions(results=results_dir / "second"))
    assert outcome.status == "completed"


def test_cleanup_also_removes_unrecorded_processes_in_the_runs_namespaces(no_leftovers, tmp_path, monkeypatch) -> None:
    """A runner SIGKILLed between starting a node program and recording its PID leaves a process that no
    record names; it sits in the run's own namespace, so the cleanup finds it there."""
    from topologies import leftovers

    monkeypatch.setattr(leftovers, "STATE_DIR", tmp_path)
    shell = subprocess.Popen(["unshare", "--net", "sleep", "60"])
    time.sleep(0.3)
    stray = subprocess.Popen(["nsenter", f"--net=/proc/{shell.pid}/ns/net", "sleep", "60"])
    time.sleep(0.3)
    state = leftovers.RunState(run_id="killed-run", runner_pid=shell.pid)
    state.processes = [(shell.pid, leftovers.proc_start_time(shell.pid), "shell@h1")]
    removed = leftovers.remove_state(state)
    assert shell.wait(timeout=5) is not None and stray.wait(timeout=5) is not None
    assert any(str(stray.pid) in r for r in removed), removed
