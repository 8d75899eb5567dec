"""Sweeps, comparisons and reruns end to end (``invoke sweep``, ``invoke compare``, ``invoke rerun``).

The acceptance: a sweep of the default scenario over two backbone loss values x 3 seeds (shortened to 8 s
per run) yields a comparison table and figure in which the measured loss of the downstream flow is higher at
8 % than at 1 %. Also: a run that fails inside a sweep is recorded and the sweep goes on; a bad ``--set``
stops the sweep with exit status 2 before anything runs; Ctrl-C ends a sweep after tearing down the
current run. About 2 minutes in all.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from scenarios.sweep import SweepError, plan_sweep
from tests.conftest import REPO

DEFAULT = REPO / "scenarios" / "library" / "default.yaml"
SHORT = ["--set", "duration=8", "--set", "timeline.0.at=4"]
"""Shorten the default scenario (25 s, delay change at 12 s) to 8 s, moving its timeline event to 4 s."""


def invoke(*args: str, results: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, STREAMBED_RESULTS=str(results))
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def only_sweep(results: Path) -> Path:
    sweeps = sorted((results / "default").glob("sweep-*"))
    assert len(sweeps) == 1, sweeps
    return sweeps[0]


def test_loss_sweep_measured_loss_follows_configured_loss(no_leftovers, results_dir) -> None:
    proc = invoke("sweep", "default", "--seeds", "3", "--set", "links.backbone.loss=1%,8%", *SHORT,
                  results=results_dir, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    sweep = only_sweep(results_dir)

    record = json.loads((sweep / "sweep.json").read_text())
    assert record["status"] == "completed"
    assert record["counts"] == {"total": 6, "completed": 6}
    assert [g["path"] for g in record["grid"]] == ["links.backbone.loss", "duration", "timeline.0.at"]
    seen = set()
    for run in record["runs"]:
        bundle = sweep / run["bundle"]
        assert (bundle / "metrics" / "metrics.csv").is_file(), run
        manifest = json.loads((bundle / "manifest.json").read_text())
        assert manifest["status"] == "completed" and manifest["seed"] == run["seed"]
        assert manifest["sweep"]["parameters"] == run["parameters"]
        assert "duration: 8" in (bundle / "scenario.yaml").read_text()
        seen.add((run["parameters"]["links.backbone.loss"], run["seed"]))
    assert seen == {(loss, seed) for loss in ("1%", "8%") for seed in (1, 2, 3)}
    for v in record["variants"]:
        assert (sweep / v["file"]).is_file()

    table = pd.read_csv(sweep / "comparison.csv", dtype={"links.backbone.loss": str})
    down = table[(table["entity_kind"] == "flow") & (table["entity"] == "downstream") & (table["metric"] == "loss_pct")]
    by = down.set_index("links.backbone.loss")
    lo, hi = by.loc["1%"], by.loc["8%"]
    print("\ndownstream loss_pct over 3 seeds (mean ± 95% CI):")
    for name, row in (("1%", lo), ("8%", hi)):
        print(f"  configured {name}: {row['mean']:.2f} ± {row['ci95']:.2f} % (n={row['n']}, "
              f"min {row['min']:.2f}, max {row['max']:.2f})")
    assert lo["n"] == 3 and hi["n"] == 3
    assert lo["ci95"] > 0 and hi["ci95"] > 0  # the CIs are reported
    assert hi["mean"] > lo["mean"]
    assert lo["mean"] < 3 and 4 < hi["mean"] < 12  # and roughly where configured
    assert (sweep / "comparison_runs.csv").is_file()
    png = sweep / "comparison_flow_loss_pct.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert "mean ± 95% CI" in proc.stdout and "downstream" in proc.stdout

    again = invoke("compare", str(sweep), results=results_dir, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "links.backbone.loss" in again.stdout and "8%" in again.stdout and "loss_pct" in again.stdout


def test_failed_run_is_recorded_and_the_sweep_goes_on(no_leftovers, results_dir) -> None:
    # The home sink cannot bind an address its node does not have: it exits non-zero at run time.
    proc = invoke("sweep", "default", "--seed-base", "7",
                  "--set", "nodes.home.processes.sink.args.bind=192.0.2.1,0.0.0.0",
                  "--set", "duration=3", "--set", "timeline.0.at=2", results=results_dir, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    sweep = only_sweep(results_dir)
    record = json.loads((sweep / "sweep.json").read_text())
    assert record["status"] == "completed"
    assert record["counts"] == {"total": 2, "failed": 1, "completed": 1}
    failed, ok = record["runs"]
    assert failed["status"] == "failed" and "home.sink" in failed["error"] and failed["seed"] == 7
    assert (sweep / failed["bundle"] / "manifest.json").is_file()
    assert ok["status"] == "completed" and ok["parameters"]["nodes.home.processes.sink.args.bind"] == "0.0.0.0"
    comparison = json.loads((sweep / "comparison.json").read_text())
    assert [e["run"].endswith("v1-s7") for e in comparison["excluded"]] == [True]

    # Rerun the completed run from its bundle: same seed, a new bundle outside the sweep.
    bundle = sweep / ok["bundle"]
    rerun = invoke("rerun", str(bundle), "--no-report", results=results_dir, timeout=120)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    new = [p for p in (results_dir / "default").iterdir() if not p.name.startswith("sweep-")]
    assert len(new) == 1
    manifest = json.loads((new[0] / "manifest.json").read_text())
    assert manifest["seed"] == 7 and manifest["status"] == "completed"
    assert manifest["rerun_of"] == str(bundle.resolve())
    assert str(bundle) in rerun.stdout and str(new[0]) in rerun.stdout


@pytest.mark.parametrize("bad, message", [
    ("links.backbon.loss=1%,8%", "no item named 'backbon'"),
    ("links.backbone.loss=1%,150%", "value 150%"),
    ("nodes.server.processes.down.args.bitrat=1000000", "args.bitrat:"),
])
def test_bad_set_exits_2_before_any_run(no_leftovers, results_dir, bad: str, message: str) -> None:
    proc = invoke("sweep", "default", "--seeds", "3", "--set", bad, *SHORT, results=results_dir, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"--set {bad}" in proc.stdout and message in proc.stdout, proc.stdout
    assert not results_dir.exists() or not any(results_dir.rglob("*"))


def test_set_paths_by_name_index_and_default_names() -> None:
    plan = plan_sweep(DEFAULT, ["links.home-isp.b_to_a.rate=4mbit,8mbit", "nodes.server.processes.down.args.size=500",
                                "links[1].loss=[1%, {model: gilbert, p: 1%, r: 30%}]", "duration=8",
                                "timeline.0.at=4"], seeds=2, seed_base=5)
    assert len(plan.variants) == 4 and plan.seeds == [5, 6] and len(plan.order()) == 8
    assert plan.order()[:4] == [(v, 5) for v in plan.variants]  # seed-major
    text = plan.variants[-1].text
    assert "model: gilbert" in text and "size: 500" in text and "b_to_a: {rate: 8mbit}" in text
    with pytest.raises(SweepError, match="timeline.0.at=99"):
        plan_sweep(DEFAULT, ["timeline.0.at=99"])
    with pytest.raises(SweepError, match="variant"):
        plan_sweep(DEFAULT, ["duration=8"])  # the 12 s timeline event no longer fits: named by variant
    with pytest.raises(SweepError, match="use --seeds"):
        plan_sweep(DEFAULT, ["seed=1,2"])


def test_ctrl_c_stops_the_sweep_after_teardown(no_leftovers, results_dir) -> None:
    env = dict(os.environ, STREAMBED_RESULTS=str(results_dir))
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "sweep", "default", "--seeds", "2", "--set", "duration=6",
                             "--set", "timeline.0.at=3"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    running = False
    while time.monotonic() < deadline and not running:
        for m in results_dir.glob("default/sweep-*/runs/default/*/manifest.json"):
            with contextlib.suppress(ValueError):
                running = running or json.loads(m.read_text()).get("phase") == "running"
        time.sleep(0.1)
    assert running, "the first run never started"
    time.sleep(1)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    sweep = only_sweep(results_dir)
    record = json.loads((sweep / "sweep.json").read_text())
    assert record["status"] == "interrupted" and record["end"] is not None
    assert [r["status"] for r in record["runs"]] == ["interrupted", "skipped"]
    manifest = json.loads((sweep / record["runs"][0]["bundle"] / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
