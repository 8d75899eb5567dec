"""``invoke calibrate`` measures each shaped/impaired direction against its configuration, writes
calibration.csv into a bundle and exits 0 only when every figure passes."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

from tests.conftest import REPO


def test_invoke_calibrate_passes_and_writes_csv(no_leftovers, results_dir) -> None:
    env = dict(os.environ, STREAMBED_RESULTS=str(results_dir), COLUMNS="200")
    scenario = REPO / "tests" / "scenarios" / "calib.yaml"
    out = subprocess.run([sys.executable, "-m", "invoke", "calibrate", str(scenario)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    print(out.stdout[-3000:])
    assert out.returncode == 0, out.stdout + out.stderr
    [bundle] = list((results_dir / "calib").iterdir())
    with open(bundle / "calibration.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    figures = {r["figure"]: r for r in rows if r["direction"] == "a->b"}
    assert {"delay p50", "jitter (RFC 3550)", "loss", "TCP goodput", "UDP throughput @90%"} <= set(figures)
    assert all(r["verdict"] in ("pass", "n/a") for r in rows)
    assert float(figures["delay p50"]["measured"]) > 19.0
    assert not any(r["direction"] == "b->a" for r in rows)  # nothing configured, nothing to calibrate
