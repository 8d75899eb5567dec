"""A 60-host, 6-router network builds, carries traffic for 10 s and tears down; two runs with one seed send
the same packet schedule and give metrics within run-to-run noise."""

from __future__ import annotations

import json
from pathlib import Path

from analysis.events import load_events
from analysis.flows import flow_table
from scenarios.generate import scale_scenario
from scenarios.run import RunOptions, run_scenario
from tests.conftest import REPO


def test_60_hosts_6_routers_build_run_teardown(no_leftovers, results_dir, tmp_path) -> None:
    path = tmp_path / "scale60.yaml"
    path.write_text(json.dumps(scale_scenario(60, routers=6, duration=10)))
    out = run_scenario(path, RunOptions(results=results_dir))
    assert out.status == "completed", out.error
    m = json.loads((out.bundle / "manifest.json").read_text())
    print(f"60 hosts: build {m['build_s']} s, teardown {m['teardown_s']} s")
    flows = flow_table(load_events(out.bundle).frame)
    assert len(flows) == 6
    assert (flows["received"] > 400).all()  # 50 packets/s for ~9.5 s across two or more routers


def _send_offsets(bundle: Path) -> dict[str, list[float]]:
    """Per sender: the planned offset of every packet (``due``) — the workload, free of scheduling noise."""
    out: dict[str, list[float]] = {}
    for f in sorted((bundle / "events").glob("*.jsonl")):
        sends = [json.loads(x) for x in f.read_text().splitlines() if '"probe_send"' in x]
        if sends:
            out[f.name] = [s["due"] for s in sends]
    return out


def test_same_seed_same_schedule_and_metrics(no_leftovers, results_dir) -> None:
    default = REPO / "scenarios" / "library" / "default.yaml"
    runs = [run_scenario(default, RunOptions(results=results_dir / str(i))) for i in range(2)]
    assert all(r.status == "completed" for r in runs)
    a, b = (_send_offsets(r.bundle) for r in runs)
    assert a.keys() == b.keys() and a
    for name in a:  # Poisson and CBR schedules come from the seed: the same packets at the same planned offsets
        n = min(len(a[name]), len(b[name]))
        # the count differs only by when the sender's Python got going and when the run ended (~0.1 s of packets)
        assert abs(len(a[name]) - len(b[name])) <= max(3, 0.01 * n)
        assert a[name][:n] == b[name][:n], name
    fa, fb = (flow_table(load_events(r.bundle).frame).set_index("flow") for r in runs)
    for flow in fa.index:
        la, lb = fa.loc[flow, "loss_pct"], fb.loc[flow, "loss_pct"]
        print(f"{flow}: loss {la:.2f}% vs {lb:.2f}%, p50 delay {fa.loc[flow, 'delay_p50_ms']:.2f} vs "
              f"{fb.loc[flow, 'delay_p50_ms']:.2f} ms")
        assert abs(fa.loc[flow, "delay_p50_ms"] - fb.loc[flow, "delay_p50_ms"]) < 2.0
        assert abs(la - lb) < 2.0
    ma, mb = (json.loads((r.bundle / "manifest.json").read_text()) for r in runs)
    assert ma["seed"] == mb["seed"] == 1 and ma["git"] == mb["git"]


def test_default_scenario_report_is_valid_and_matches_summary(no_leftovers, results_dir) -> None:
    """The report of a real default run: balanced HTML, every image there and non-empty (topology included),
    and every number in it equal to summary.json."""
    from analysis.__main__ import main
    from analysis.report import format_value
    from tests.test_analysis_bundle import TagBalance, _summary_values

    out = run_scenario(REPO / "scenarios" / "library" / "default.yaml", RunOptions(results=results_dir))
    assert out.status == "completed"
    assert main([str(out.bundle)]) == 0
    mdir = out.bundle / "metrics"
    parser = TagBalance()
    parser.feed((mdir / "report.html").read_text(encoding="utf-8"))
    parser.close()
    assert parser.errors == [] and parser.stack == []
    assert "../topology.png" in parser.imgs and "flows_overview.png" in parser.imgs
    for src in parser.imgs:
        img = (mdir / src).resolve()
        assert img.is_file() and img.stat().st_size > 1000, src
    values = _summary_values(json.loads((mdir / "summary.json").read_text()))
    assert values and set(parser.cells) == set(values)
    for key, value in values.items():
        assert parser.cells[key] == format_value(value), key
