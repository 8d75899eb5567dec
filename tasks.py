"""streambed's entry points (invoke): run, validate, list, calibrate, clean, test, bench, schema, report, sweep,
compare, rerun.

Every task that touches the network needs root. Exit status: 0 success, 1 a run failed or a node process
crashed, 2 a bad scenario (nothing was built), 130 interrupted.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from invoke import Context, Exit, task
from rich.console import Console
from rich.markup import escape
from rich.table import Table

REPO = Path(__file__).resolve().parent
LIBRARY = REPO / "scenarios" / "library"
console = Console()


def _scenario_path(scenario: str) -> Path:
    p = Path(scenario)
    if p.exists():
        return p
    lib = LIBRARY / f"{scenario}.yaml"
    if lib.exists():
        return lib
    console.print(f"[red]no scenario {scenario!r}[/]: not a file, and not in the library ({LIBRARY})")
    raise Exit(code=2)


def _need_root() -> None:
    if os.geteuid() != 0:
        console.print("[red]streambed builds network namespaces: run it as root[/]")
        raise Exit(code=1)


def _print_problems(err: Exception) -> None:
    for p in getattr(err, "problems", []):
        console.print(f"[red]error[/] {escape(str(p))}", highlight=False, soft_wrap=True)


@task(help={"scenario": "a scenario file or a library name, e.g. default", "impairment": "auto | netem | nfqueue",
            "seed": "override the scenario's seed", "report": "analyse the bundle and write the report"})
def run(c, scenario, impairment="auto", seed=None, report=True):
    """Build a scenario's network, run its processes and timeline, tear down; print a summary per flow."""
    from scenarios.loader import ScenarioError
    from scenarios.run import RunOptions, run_scenario
    from topologies.impair.backends import ImpairmentError
    from topologies.plan import PlanError

    _need_root()
    path = _scenario_path(scenario)
    try:
        outcome = run_scenario(path, RunOptions(impairment=impairment, seed=None if seed is None else int(seed)))
    except ScenarioError as err:
        _print_problems(err)
        raise Exit(code=2) from None
    except (ImpairmentError, PlanError) as err:
        console.print(f"[red]error[/] {err}")
        raise Exit(code=2) from None
    _summarise(outcome.bundle, report)
    _finish(outcome, f"bundle: {outcome.bundle}")


def _finish(outcome, where: str) -> None:  # noqa: ANN001 - a scenarios.run.RunOutcome
    """Print how a run ended (status, error, crashed processes) and exit with the matching status."""
    colour = "green" if outcome.status == "completed" and not outcome.crashes else "red"
    console.print(f"[{colour}]{outcome.status}[/] {where}", highlight=False, soft_wrap=True)
    if outcome.error:
        console.print(f"[red]{escape(outcome.error)}[/] (details: {outcome.bundle / 'error.txt'})")
    for crash in outcome.crashes:
        console.print(f"[red]crashed:[/] {crash['node']}.{crash['proc']} exit code {crash['exit_code']}")
    if outcome.status == "interrupted":
        raise Exit(code=130)
    if outcome.status != "completed" or outcome.crashes:
        raise Exit(code=1)


def _summarise(bundle: Path, report: bool) -> None:
    """Print one line per probe flow (and write flows.csv); optionally build the report."""
    from analysis.events import load_events
    from analysis.flows import flow_table, format_flow_line

    events = load_events(bundle)
    flows = flow_table(events.frame)
    if len(flows):
        flows.to_csv(bundle / "flows.csv", index=False)
        console.print("[bold]flows[/]")
        for _, row in flows.iterrows():
            console.print("  " + format_flow_line(row), highlight=False, soft_wrap=True)
    if report:
        try:
            from analysis.report import build_report
            from analysis.tidy import analyse_bundle

            analyse_bundle(bundle)
            path = build_report(bundle)
            console.print(f"report: {path}")
        except Exception as exc:  # noqa: BLE001 - the run is done; a report failure must not hide it
            console.print(f"[yellow]report not built: {exc}[/]")


@task(help={"scenario": "a file or a library name"})
def validate(c, scenario):
    """Check a scenario file without building anything (exit 2 with file:line: field: message if bad)."""
    from scenarios.loader import ScenarioError, load_scenario
    from topologies.plan import PlanError, make_plan

    path = _scenario_path(scenario)
    try:
        sc, _ = load_scenario(path)
        make_plan(sc)
    except ScenarioError as err:
        _print_problems(err)
        raise Exit(code=2) from None
    except PlanError as err:
        console.print(f"[red]error[/] {path}: {err}")
        raise Exit(code=2) from None
    console.print(f"[green]ok[/] {path}: {sc.name}, {len(sc.nodes)} nodes, {len(sc.links)} links, "
                  f"{len(sc.timeline)} timeline events, {sc.duration:g} s")


@task(name="list")
def list_(c):
    """The scenario library with one-line descriptions."""
    from scenarios.loader import ScenarioError, load_scenario

    table = Table("scenario", "duration", "description")
    for path in sorted(LIBRARY.glob("*.yaml")):
        try:
            sc, _ = load_scenario(path)
            first = sc.description.strip().split(". ")[0].rstrip(".")
            table.add_row(path.stem, f"{sc.duration:g} s", first + ".")
        except ScenarioError as err:
            table.add_row(path.stem, "", f"[red]invalid: {err.problems[0]}[/]")
    console.print(table)


@task(help={"scenario": "a file or a library name", "impairment": "auto | netem | nfqueue"})
def calibrate(c, scenario, impairment="auto"):
    """Measure every shaped/impaired link direction against its configuration (calibration.csv)."""
    from scenarios.calibrate import calibrate_network
    from scenarios.loader import ScenarioError
    from scenarios.run import RunOptions, run_scenario

    _need_root()
    path = _scenario_path(scenario)
    checks = []

    def body(net, bundle, phase):
        checks.extend(calibrate_network(net, bundle, net.state.runner_pid, phase))

    try:
        outcome = run_scenario(path, RunOptions(impairment=impairment), body=body)
    except ScenarioError as err:
        _print_problems(err)
        raise Exit(code=2) from None
    table = Table("link", "direction", "figure", "configured", "expected", "measured", "range", "verdict",
                  title=f"calibration ({outcome.bundle.name})")
    for ch in checks:
        rng = "" if ch.low is None and ch.high is None else f"{_f(ch.low)} .. {_f(ch.high)} {ch.unit}"
        colour = {"pass": "green", "FAIL": "red"}.get(ch.verdict, "dim")
        table.add_row(ch.link, ch.direction, ch.figure, ch.configured, _f(ch.expected), _f(ch.measured), rng,
                      f"[{colour}]{ch.verdict}[/]")
    console.print(table)
    console.print(f"calibration.csv: {outcome.bundle / 'calibration.csv'}")
    if outcome.status != "completed":
        console.print(f"[red]{outcome.status}: {outcome.error}[/]")
        raise Exit(code=1)
    if any(ch.verdict == "FAIL" for ch in checks):
        raise Exit(code=1)


def _f(x):
    return "" if x is None else f"{x:.3g}"


@task
def clean(c):
    """Remove what killed runs left behind (processes, namespaces, veths, bridges), by their records."""
    from scenarios.run import clean_killed_runs

    _need_root()
    removed = clean_killed_runs()
    for r in removed:
        console.print(f"removed {r}")
    console.print(f"[green]clean[/]: {len(removed)} leftover item(s) removed")


@task(help={"k": "pytest -k expression", "extra": "more pytest arguments"})
def test(c, k="", extra=""):
    """Run the test suite (needs root: tests build real emulated networks)."""
    _need_root()
    subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=REPO, check=True)
    argv = [sys.executable, "-m", "pytest", "-ra", "--timeout=600"]
    if k:
        argv += ["-k", k]
    argv += extra.split()
    code = subprocess.run(argv, cwd=REPO, check=False).returncode
    raise Exit(code=code)


@task(help={"what": "impair | scale | analysis | vod | streaming",
            "args": "options passed to the benchmark's module, e.g. --args '--sizes 100 --delay'"})
def bench(c, what, args=""):
    """Benchmarks that print figures: impair (delay-line packets/s), scale (build/teardown), analysis, vod,
    streaming (peers sustained at 500 kbit/s, RSS per peer)."""
    _need_root()
    modules = {"impair": "topologies.impair.bench_delayline", "scale": "topologies.bench_scale",
               "analysis": "analysis.bench", "vod": "analysis.bench_vod", "streaming": "analysis.bench_streaming"}
    if what not in modules:
        console.print(f"[red]unknown benchmark {what!r}[/]; choose from {', '.join(modules)}")
        raise Exit(code=2)
    code = subprocess.run([sys.executable, "-m", modules[what], *shlex.split(args)], cwd=REPO, check=False).returncode
    raise Exit(code=code)


@task(iterable=["case"], help={"case": "mesh | capacity | hetero | churn | nat | download (repeatable; default all)",
                               "seeds": "hetero: how many seeds (default 16, two runs of 1.6 min each per seed)",
                               "seed_base": "hetero: first seed (default 1)", "results": "where the runs go"})
def streaming_accept(c, case=None, seeds=None, seed_base=1, results="results"):
    """Run the live-streaming acceptance experiments in emulated networks and print their figures."""
    _need_root()
    from analysis.streaming_accept import CASES, HETERO_SEEDS, main

    cases = case or list(CASES)
    unknown = [x for x in cases if x not in CASES]
    try:
        count, base = (len(HETERO_SEEDS) if seeds is None else int(seeds)), int(seed_base)
    except ValueError:
        count = base = 0
    if unknown:
        console.print(f"[red]unknown case(s) {unknown}[/]; choose from {', '.join(CASES)}")
        raise Exit(code=2)
    if count < 1 or base < 0:
        console.print(f"[red]--seeds {seeds!r} / --seed-base {seed_base!r}[/]: --seeds is a count >= 1, --seed-base "
                      "a seed >= 0")
        raise Exit(code=2)
    raise Exit(code=main(cases, Path(results), range(base, base + count)))


@task(iterable=["policy"], help={"policy": "a VoD policy (repeatable; default all eight)", "seeds": "seeds 1..N",
                                 "network": "multicast | unicast | mixed", "quick": "1-minute videos, short runs",
                                 "kill_at": "SIGKILL one client this many seconds in", "results": "where runs go"})
def dynapeer_compare(c, policy=None, seeds=3, network="multicast", quick=False, kill_at=None, results="results"):
    """DynaPeer VoD: server load per policy from formula, simulation and emulation, with continuity and startup."""
    _need_root()
    from analysis.dynapeer_compare import POLICIES, compare

    policies = policy or list(POLICIES)
    unknown = [x for x in policies if x not in POLICIES]
    if unknown or network not in ("multicast", "unicast", "mixed"):
        console.print(f"[red]unknown policy {unknown} or network {network!r}[/]; policies: {', '.join(POLICIES)}")
        raise Exit(code=2)
    compare(policies, range(1, int(seeds) + 1), network, bool(quick), Path(results),
            None if kill_at is None else float(kill_at))


@task(help={"out": "where to write the JSON Schema"})
def schema(c, out="scenarios/scenario.schema.json"):
    """Export the scenario format as JSON Schema (for editors' YAML language servers)."""
    from scenarios.schema import Scenario

    Path(out).write_text(json.dumps(Scenario.model_json_schema(), indent=1) + "\n")
    console.print(f"wrote {out}")


@task(help={"bundle": "a run bundle folder"})
def report(c, bundle):
    """Analyse a run bundle and (re)build its metrics, plots and report."""
    from analysis.report import build_report
    from analysis.tidy import analyse_bundle

    analyse_bundle(Path(bundle))
    console.print(f"report: {build_report(Path(bundle))}")


@task(iterable=["set_"],
      help={"scenario": "a scenario file or a library name, e.g. default",
            "set_": "path.to.field=v1,v2 (repeatable): a grid dimension, e.g. links.backbone.loss=1%,8%",
            "seeds": "runs per variant, seeds seed-base .. seed-base+N-1", "seed_base": "first seed (default 1)",
            "impairment": "auto | netem | nfqueue", "dry_run": "validate and list the grid, run nothing",
            "compare": "compare the runs when the sweep ends (comparison.csv, plots)"})
def sweep(c: Context, scenario: str, seeds: int = 1, set_: list[str] | None = None, seed_base: int | None = None,
          impairment: str = "auto", dry_run: bool = False, compare: bool = True) -> None:
    """Run a scenario over a grid of --set values x seeds, one run after another, into one sweep folder."""
    import shlex

    from rich.markup import escape

    from scenarios.loader import ScenarioError
    from scenarios.run import RunOptions
    from scenarios.sweep import SweepError, plan_sweep, run_sweep, show_value
    from topologies.impair.backends import ImpairmentError, choose_backend
    from topologies.plan import PlanError

    path = _scenario_path(scenario)
    try:
        plan = plan_sweep(path, set_ or [], seeds=int(seeds), seed_base=None if seed_base is None else int(seed_base),
                          impairment=impairment)
        if not dry_run:
            _need_root()
            choose_backend(impairment)
    except ScenarioError as err:
        _print_problems(err)
        raise Exit(code=2) from None
    except SweepError as err:
        for p in err.problems:
            console.print(f"[red]error[/] {escape(p)}", highlight=False, soft_wrap=True)
        raise Exit(code=2) from None
    except (ImpairmentError, PlanError) as err:
        console.print(f"[red]error[/] {err}")
        raise Exit(code=2) from None
    runs = len(plan.order())
    if dry_run:
        table = Table("variant", *[s.key for s in plan.specs], title=f"sweep of {plan.name}: {len(plan.variants)} "
                      f"variant(s) x seeds {plan.seeds[0]}..{plan.seeds[-1]} = {runs} run(s), about "
                      f"{plan.estimate_s() / 60:.1f} min")
        for v in plan.variants:
            table.add_row(v.id, *[show_value(x) for x in v.parameters.values()])
        console.print(table)
        return
    result = run_sweep(plan, RunOptions().results, console=Console(stderr=True),
                       command=shlex.join(["invoke", *sys.argv[1:]]))
    colour = "green" if result.status == "completed" and not result.failed else "red"
    console.print(f"[{colour}]sweep {result.status}[/]: {result.completed} completed, {result.failed} failed, "
                  f"{len(result.runs) - result.completed - result.failed} not run or interrupted; {result.folder}")
    if compare and result.completed and result.status != "interrupted":
        _compare_and_print([result.folder], out=None, all_metrics=False, include_failed=False)
    elif result.completed:
        console.print(f"compare what ran: invoke compare {result.folder}", highlight=False, soft_wrap=True)
    if result.status == "interrupted":
        raise Exit(code=130)
    if result.failed:
        raise Exit(code=1)


def _compare_and_print(paths: list[str] | list[Path], out: str | None, all_metrics: bool, include_failed: bool) -> None:
    from rich.markup import escape

    from analysis.compare import compare as compare_runs
    from analysis.compare import print_comparison

    try:
        table = compare_runs(paths, out, include_failed=include_failed)
    except (FileNotFoundError, ValueError) as err:
        console.print("[red]error[/] " + escape(str(err)), highlight=False, soft_wrap=True)
        raise Exit(code=2) from None
    print_comparison(table, console, all_metrics=all_metrics)


@task(help={"paths": "a sweep folder or run bundle; several: comma-separated, or more after --",
            "out": "folder for comparison.csv and plots (default: the sweep folder, else comparison-<stamp>)",
            "all_": "print every metric (comparison.csv always has them all)",
            "include_failed": "also use runs that failed or crashed (when they have metrics)"})
def compare(c: Context, paths: str, out: str | None = None, all_: bool = False, include_failed: bool = False) -> None:
    """Mean ± 95% CI per metric and parameter value over bundles and sweeps; comparison.csv and plots."""
    import shlex

    items = [p for p in paths.split(",") if p] + shlex.split(c.remainder or "")
    _compare_and_print(items, out, all_, include_failed)


@task(help={"bundle": "a run bundle folder", "impairment": "override the impairment backend the bundle asked for",
            "report": "analyse the new bundle and write the report"})
def rerun(c: Context, bundle: str, impairment: str | None = None, report: bool = True) -> None:
    """Run a bundle's scenario again with its seed (and impairment choice) into a new bundle; print both."""
    from analysis.events import load_events
    from analysis.flows import flow_table, format_flow_line
    from scenarios.bundle import Manifest
    from scenarios.loader import ScenarioError
    from scenarios.run import RunOptions, run_scenario
    from topologies.impair.backends import ImpairmentError
    from topologies.plan import PlanError

    old = Path(bundle)
    try:
        manifest = json.loads((old / "manifest.json").read_text())
    except (OSError, ValueError) as err:
        console.print(f"[red]not a run bundle[/] {old}: {err}")
        raise Exit(code=2) from None
    scenario_file = old / "scenario.yaml"
    if not scenario_file.is_file():
        console.print(f"[red]not a run bundle[/] {old}: no scenario.yaml")
        raise Exit(code=2)
    seed = manifest.get("seed")
    impairment = impairment or manifest.get("impairment_requested") or "auto"
    _need_root()
    try:
        opts = RunOptions(impairment=impairment, seed=None if seed is None else int(seed))
        outcome = run_scenario(scenario_file, opts)
    except ScenarioError as err:
        _print_problems(err)
        raise Exit(code=2) from None
    except (ImpairmentError, PlanError) as err:
        console.print(f"[red]error[/] {err}")
        raise Exit(code=2) from None
    new_manifest = json.loads((outcome.bundle / "manifest.json").read_text())
    Manifest(outcome.bundle / "manifest.json", new_manifest).update(rerun_of=str(old.resolve()))
    console.print(f"[bold]original[/] {old} (seed {seed}, {manifest.get('status')}, "
                  f"backend {manifest.get('impairment_backend')})", highlight=False, soft_wrap=True)
    try:
        flows = flow_table(load_events(old).frame)
        for _, row in flows.iterrows():
            console.print("  " + format_flow_line(row), highlight=False, soft_wrap=True)
    except Exception as exc:  # noqa: BLE001 - the original's figures are only shown for comparison
        console.print(f"  [yellow]flows not read: {exc}[/]")
    console.print(f"[bold]rerun[/] {outcome.bundle} (seed {seed}, {outcome.status}, "
                  f"backend {new_manifest.get('impairment_backend')})", highlight=False, soft_wrap=True)
    _summarise(outcome.bundle, report)
    _finish(outcome, f"original: {old}  rerun: {outcome.bundle}")
