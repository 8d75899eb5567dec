"""Parameter sweeps: one scenario, a grid of ``--set path=v1,v2`` variants times a number of seeds, run one
after another into one sweep folder.

``invoke sweep <scenario> --seeds N --set links.backbone.loss=1%,8% --set duration=10`` builds every
combination of the ``--set`` values (a *variant*), validates all of them before anything runs (a bad path or
value stops the sweep with the ``--set`` named: :class:`SweepError`), writes each variant as a scenario file
and runs every (variant, seed) pair with :func:`scenarios.run.run_scenario`, seed by seed (all variants for
the first seed, then the next seed), so an interrupted sweep still has every variant for the seeds it did.

Paths address the scenario's YAML structure: map keys, list items by index (``timeline.0.at``) or by name
(``links.backbone``, ``nodes.server.processes.down``; a link without a name is ``<a>-<b>``, a process
without one is its role). Values are YAML scalars (``1%``, ``30ms``, ``8``, ``true``); a value list that
starts with ``[`` is read as one YAML flow list, for values that contain commas.

The sweep folder, ``results/<scenario>/sweep-<UTC stamp>/``::

    sweep.json                        the grid; each run's parameters, seed, bundle, status, error
                                      (rewritten after every run)
    variants/v<k>.yaml                each variant as a scenario file (what its runs ran)
    runs/<scenario>/<stamp>-s<seed>/  one run bundle per (variant, seed), analysed (metrics/)
    comparison.csv, ...               written by analysis.compare

A failed run (build error, crashed process, failed status) is recorded and the sweep goes on; Ctrl-C (or
SIGTERM) tears the current run down, marks it and the sweep ``interrupted`` and leaves the rest ``skipped``.
Layout and usage: docs/sweeps.md.
"""

from __future__ import annotations

import copy
import datetime as dt
import io
import itertools
import json
import re
import signal
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn
from rich.text import Text
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError

from scenarios.bundle import Manifest, new_unique_dir, utc_now
from scenarios.loader import ScenarioError, load_scenario, parse_scenario

SWEEP_JSON = "sweep.json"
SWEEP_SCHEMA = "streambed.sweep/1"
VARIANTS_DIR = "variants"
RUNS_DIR = "runs"
RUN_OVERHEAD_S = 4.0
"""Estimated build + teardown + analysis time of one run, for the ETA before the first run has finished."""


class SweepError(Exception):
    """A sweep that cannot start: a ``--set`` that cannot be parsed, addresses nothing or makes an invalid
    variant. ``problems`` lists every finding, each naming its ``--set``; nothing has been built or written."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True)
class SetSpec:
    """One ``--set path.to.field=v1,v2``: the text as given, the path segments and the parsed values."""

    text: str
    path: tuple[str, ...]
    values: tuple[Any, ...]

    @property
    def key(self) -> str:
        """The path as written in sweep.json and comparison tables (``links.backbone.loss``)."""
        return ".".join(self.path)


@dataclass
class Variant:
    """One combination of ``--set`` values: its id (``v1`` ...), parameters (path -> value) and scenario text."""

    id: str
    parameters: dict[str, Any]
    text: str
    file: str = ""
    """Path of the variant's scenario file, relative to the sweep folder (set when written)."""
    duration: float = 0.0
    """The variant's scenario duration in seconds (for the time estimate)."""

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={show_value(v)}" for k, v in self.parameters.items()) or "(no --set)"


@dataclass
class SweepPlan:
    """A validated sweep: the base scenario, the grid, the variants and the seeds. Nothing has run yet."""

    scenario_file: Path
    name: str
    duration: float
    specs: list[SetSpec]
    variants: list[Variant]
    seeds: list[int]
    impairment: str = "auto"

    def order(self) -> list[tuple[Variant, int]]:
        """The runs in the order they run: seed-major (every variant for the first seed, then the next)."""
        return [(v, seed) for seed in self.seeds for v in self.variants]

    def estimate_s(self) -> float:
        """Expected wall time of the whole sweep: each run's duration plus build, teardown and analysis."""
        return sum(v.duration + RUN_OVERHEAD_S for v, _ in self.order())


@dataclass
class SweepResult:
    """What :func:`run_sweep` did: the sweep folder, its final status and every run's record."""

    folder: Path
    status: str
    runs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(1 for r in self.runs if r["status"] == "failed")

    @property
    def completed(self) -> int:
        return sum(1 for r in self.runs if r["status"] == "completed")


# --------------------------------------------------------------------------------------------------------------
# --set parsing and path resolution


_INDEX = re.compile(r"\[(-?\d+)\]")
_INT = re.compile(r"-?\d+")


def show_value(value: Any) -> str:
    """A parameter value as text (``1%``, ``8``, ``true``, ``{model: gilbert, p: 1%}``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, dict | list):
        return json.dumps(value, default=str, ensure_ascii=False).replace('"', "")
    return str(value)


def _yaml_value(text: str) -> Any:
    yaml = YAML(typ="safe", pure=True)
    try:
        return yaml.load(text)
    except YAMLError as exc:
        raise ValueError(f"{text!r} is not a YAML value: {str(exc).splitlines()[0]}") from None


def parse_values(text: str) -> list[Any]:
    """``1%,8%`` -> ['1%', '8%']; ``[1%, {model: random, p: 2%}]`` -> one YAML flow list."""
    text = text.strip()
    if not text:
        raise ValueError("no values after '='")
    if text.startswith("["):
        values = _yaml_value(text)
        if not isinstance(values, list) or not values:
            raise ValueError(f"{text!r} is not a non-empty YAML list")
        return values
    items = [s.strip() for s in text.split(",")]
    if any(not s for s in items):
        raise ValueError("an empty value (two commas in a row, or a trailing comma)")
    return [_yaml_value(s) for s in items]


def parse_set(text: str) -> SetSpec:
    """Parse one ``--set path.to.field=v1,v2`` (``links[1].loss`` works too); raises SweepError."""
    if "=" not in text:
        raise SweepError([f"--set {text}: expected path.to.field=value1,value2,... (no '=' found)"])
    raw_path, raw_values = text.split("=", 1)
    path = tuple(p.strip() for p in _INDEX.sub(r".\1", raw_path.strip()).split("."))
    if not path or any(not p for p in path):
        raise SweepError([f"--set {text}: the path {raw_path.strip()!r} has an empty segment"])
    if path == ("seed",):
        raise SweepError([f"--set {text}: the seed is not a --set parameter; use --seeds N (and --seed-base)"])
    try:
        values = parse_values(raw_values)
    except ValueError as exc:
        raise SweepError([f"--set {text}: {exc}"]) from None
    seen: set[str] = set()
    for v in values:
        key = json.dumps(v, sort_keys=True, default=str)
        if key in seen:
            raise SweepError([f"--set {text}: the value {show_value(v)} is given twice"])
        seen.add(key)
    return SetSpec(text, path, tuple(values))


def item_name(item: Any) -> str | None:
    """The name a list item is addressed by: its ``name``, else ``<a>-<b>`` (links), else its ``role``."""
    if not isinstance(item, dict):
        return None
    name = item.get("name")
    if isinstance(name, str):
        return name
    if isinstance(item.get("a"), str) and isinstance(item.get("b"), str):
        return f"{item['a']}-{item['b']}"
    role = item.get("role")
    return role if isinstance(role, str) else None


def list_index(items: list[Any], seg: str, where: str) -> int:
    """The index a path segment addresses in a list: a number, or the unique item of that name."""
    if _INT.fullmatch(seg):
        idx = int(seg)
        if not -len(items) <= idx < len(items):
            raise ValueError(f"{where} has {len(items)} item(s); index {idx} is out of range")
        return idx % len(items)
    found = [k for k, item in enumerate(items) if item_name(item) == seg]
    if not found:
        names = [n for n in (item_name(it) for it in items) if n is not None]
        known = f" (items: {', '.join(names)})" if names else " (its items have no names: use an index)"
        raise ValueError(f"{where} has no item named {seg!r}{known}")
    if len(found) > 1:
        raise ValueError(f"{where} has {len(found)} items named {seg!r}; use an index")
    return found[0]


def assign(data: Any, path: Sequence[str], value: Any) -> str:
    """Set ``value`` at ``path`` in a loaded YAML tree; returns the field as the loader names it
    (``links[1].loss``). A missing map key is created (the scenario validation then rejects unknown fields);
    a list item that does not exist, or a path through a scalar, raises ValueError."""
    node = data
    field_path = ""
    where = "the scenario"
    for i, seg in enumerate(path):
        last = i == len(path) - 1
        if isinstance(node, list):
            idx = list_index(node, seg, where)
            field_path += f"[{idx}]"
            where = field_path
            if last:
                node[idx] = value
                return field_path
            node = node[idx]
        elif isinstance(node, dict):
            field_path = f"{field_path}.{seg}" if field_path else seg
            if last:
                node[seg] = value
                return field_path
            if node.get(seg) is None:
                if _INT.fullmatch(path[i + 1]):
                    raise ValueError(f"{field_path} does not exist, so it has no item {path[i + 1]}")
                node[seg] = CommentedMap()
            node = node[seg]
            where = field_path
        else:
            raise ValueError(f"{where} is the value {show_value(node)!r}, not a mapping or a list: "
                             f"cannot address {seg!r} inside it")
    return field_path


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Every leaf of a scenario tree as ``path -> value``, with list items named as ``--set`` addresses them
    (by name where they have one, else by index). Used to find what differs between unrelated bundles."""
    out: dict[str, Any] = {}
    if isinstance(data, dict):
        if not data and prefix:
            out[prefix] = {}
        for k, v in data.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(data, list):
        names = [item_name(it) for it in data]
        unique = all(n is not None for n in names) and len(set(names)) == len(names)
        if not data and prefix:
            out[prefix] = []
        for k, v in enumerate(data):
            seg = names[k] if unique else str(k)
            out.update(flatten(v, f"{prefix}.{seg}" if prefix else str(seg)))
    else:
        out[prefix] = data
    return out


# --------------------------------------------------------------------------------------------------------------
# Building and validating the variants


def _dump(data: Any) -> str:
    yaml = YAML(typ="rt")
    yaml.width = 120
    yaml.indent(mapping=2, sequence=4, offset=2)
    buf = io.StringIO()
    yaml.dump(data, buf)
    return buf.getvalue()


def _attribute(specs: Sequence[SetSpec], fields: dict[str, str], problem_field: str) -> list[SetSpec]:
    """The --set(s) whose field a problem is about (the problem's field lies inside it, or it inside the
    problem's field, e.g. a loss value vs. the whole link)."""
    out = []
    for spec in specs:
        f = fields.get(spec.key, "")
        if f and (problem_field == f or problem_field.startswith((f + ".", f + "["))
                  or f.startswith((problem_field + ".", problem_field + "["))):
            out.append(spec)
    return out


def build_variants(base_text: str, fname: str, specs: Sequence[SetSpec]) -> list[Variant]:
    """Every combination of the ``--set`` values applied to the base scenario, each validated (schema,
    checks, network plan); raises SweepError listing every problem, each naming its ``--set``."""
    from topologies.plan import PlanError, make_plan

    yaml = YAML(typ="rt")
    problems: list[str] = []
    fields: dict[str, str] = {}
    # The paths first, applied in order on one copy (a --set may rename what a later one addresses).
    data = yaml.load(base_text)
    for spec in specs:
        try:
            fields[spec.key] = assign(data, spec.path, copy.deepcopy(spec.values[0]))
        except ValueError as exc:
            problems.append(f"--set {spec.text}: {exc}")
    if problems:
        raise SweepError(problems)

    variants: list[Variant] = []
    combos = list(itertools.product(*[spec.values for spec in specs]))
    width = len(str(len(combos)))
    for k, combo in enumerate(combos, 1):
        data = yaml.load(base_text)
        params: dict[str, Any] = {}
        for spec, value in zip(specs, combo, strict=True):
            assign(data, spec.path, copy.deepcopy(value))
            params[spec.key] = value
        vid = f"v{k:0{width}d}"
        variant = Variant(vid, params, "")
        variant.text = (f"# streambed sweep variant {vid} of {fname}\n# {variant.label}\n" + _dump(data))
        try:
            sc = parse_scenario(variant.text, f"{fname} [{variant.label}]")
            variant.duration = sc.duration
            make_plan(sc)
        except ScenarioError as err:
            for p in err.problems:
                blamed = _attribute(specs, fields, p.field)
                where = f"{p.field}: " if p.field else ""
                if blamed:
                    problems += [f"--set {s.text}: value {show_value(params[s.key])}: {where}{p.message}"
                                 for s in blamed]
                else:
                    problems.append(f"--set {', --set '.join(s.text for s in specs)}: variant "
                                    f"[{variant.label}]: {where}{p.message}")
        except PlanError as err:
            problems.append(f"--set {', --set '.join(s.text for s in specs)}: variant [{variant.label}]: "
                            f"network plan: {err}")
        variants.append(variant)
    if problems:
        raise SweepError(list(dict.fromkeys(problems)))
    return variants


def plan_sweep(scenario: str | Path, sets: Sequence[str], seeds: int = 1, seed_base: int | None = None,
               impairment: str = "auto") -> SweepPlan:
    """Parse and validate a whole sweep without building or writing anything.

    Raises ScenarioError (the base scenario is bad) or SweepError (a --set or a variant is bad).
    """
    path = Path(scenario)
    base, text = load_scenario(path)
    problems: list[str] = []
    if int(seeds) < 1:
        problems.append(f"--seeds {seeds}: at least one seed is needed")
    base_seed = 1 if seed_base is None else int(seed_base)
    if base_seed < 0:
        problems.append(f"--seed-base {seed_base}: seeds are integers >= 0")
    specs: list[SetSpec] = []
    for s in sets:
        try:
            specs.append(parse_set(s))
        except SweepError as err:
            problems += err.problems
    keys = [s.key for s in specs]
    for key in sorted({k for k in keys if keys.count(k) > 1}):
        problems.append(f"--set {key}=...: given more than once; list all its values in one --set")
    if problems:
        raise SweepError(problems)
    variants = build_variants(text, str(path), specs)
    return SweepPlan(path, base.name, base.duration, specs, variants,
                     list(range(base_seed, base_seed + int(seeds))), impairment)


# --------------------------------------------------------------------------------------------------------------
# Running


class _EtaColumn(ProgressColumn):
    """Time left, counted down live from the estimate made when the last run finished."""

    def render(self, task: Task) -> Text:
        eta_at = task.fields.get("eta_at")
        if eta_at is None or task.finished:
            return Text("ETA -:--:--", style="progress.remaining")
        left = max(0, int(eta_at - time.monotonic()))
        guess = "~" if task.fields.get("eta_guess") else ""
        return Text(f"ETA {guess}{left // 3600}:{left // 60 % 60:02d}:{left % 60:02d}", style="progress.remaining")


class _Interrupted(BaseException):
    """SIGTERM between runs, handled like Ctrl-C (a BaseException, so no ``except Exception`` swallows it)."""


def _raise_interrupted(_sig: int, _frame: Any) -> None:
    raise _Interrupted()


def new_sweep_dir(results: Path, scenario: str) -> Path:
    """A fresh folder ``results/<scenario>/sweep-<UTC timestamp>/`` (suffixed if one exists already)."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return new_unique_dir(Path(results) / scenario, f"sweep-{stamp}")


class SweepRecord:
    """sweep.json, rewritten atomically after every change."""

    def __init__(self, path: Path, data: dict[str, Any]):
        self.path = path
        self.data = data
        self.save()

    def save(self) -> None:
        counts: dict[str, int] = {"total": len(self.data["runs"])}
        for r in self.data["runs"]:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        self.data["counts"] = counts
        self.data["updated"] = utc_now()["utc"]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str, ensure_ascii=False) + "\n", encoding="utf-8")
        tmp.replace(self.path)


def _fmt_s(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def run_sweep(plan: SweepPlan, results: Path, console: Console | None = None, command: str = "",
              analyse: bool = True) -> SweepResult:
    """Run every (variant, seed) of a planned sweep, one after another, into a new sweep folder.

    A failed run is recorded and the sweep goes on; Ctrl-C or SIGTERM ends it after the current run's
    teardown (status ``interrupted``). Each bundle is analysed (metrics/) right after its run.
    """
    from scenarios.run import RunOptions, run_scenario

    console = console or Console(stderr=True)
    folder = new_sweep_dir(results, plan.name)
    (folder / VARIANTS_DIR).mkdir()
    for v in plan.variants:
        v.file = f"{VARIANTS_DIR}/{v.id}.yaml"
        (folder / v.file).write_text(v.text, encoding="utf-8")
    order = plan.order()
    runs: list[dict[str, Any]] = [
        {"index": i, "variant": v.id, "parameters": v.parameters, "seed": seed, "status": "pending",
         "run_status": None, "bundle": None, "error": None, "crashes": [], "start": None, "wall_s": None,
         "analysis": None}
        for i, (v, seed) in enumerate(order)
    ]
    record = SweepRecord(folder / SWEEP_JSON, {
        "schema": SWEEP_SCHEMA, "scenario": plan.name, "scenario_file": str(plan.scenario_file.resolve()),
        "command": command, "impairment_requested": plan.impairment, "status": "running",
        "start": utc_now()["utc"], "end": None, "order": "seed-major",
        "grid": [{"set": s.text, "path": s.key, "values": list(s.values)} for s in plan.specs],
        "seeds": plan.seeds,
        "variants": [{"id": v.id, "parameters": v.parameters, "file": v.file} for v in plan.variants],
        "runs": runs,
    })
    console.print(f"sweep of {plan.name}: {len(plan.variants)} variant(s) x {len(plan.seeds)} seed(s) = "
                  f"{len(order)} run(s) into {folder}")

    progress = Progress(TextColumn("[bold]sweep"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                        TimeElapsedColumn(), _EtaColumn(), console=console)
    nested_ok = hasattr(console, "_live_stack")  # rich >= 14 nests the run's own progress bar inside this one
    bar = progress.add_task("sweep", total=len(order), info=f"{len(order)} left",
                            eta_at=time.monotonic() + plan.estimate_s(), eta_guess=True)
    walls: list[float] = []
    interrupted = False
    current: dict[str, Any] | None = None
    previous_term = signal.signal(signal.SIGTERM, _raise_interrupted)
    opts = RunOptions(impairment=plan.impairment, results=folder / RUNS_DIR, console=console)
    try:
        if nested_ok:
            progress.start()
        for entry, (variant, seed) in zip(runs, order, strict=True):
            current = entry
            t0 = time.monotonic()
            entry.update(status="running", start=utc_now()["utc"])
            record.save()
            done = entry["index"]
            progress.update(bar, info=f"{len(order) - done} left, {sum(r['status'] == 'failed' for r in runs)} "
                            f"failed; now {variant.id} seed {seed}")
            opts.seed = seed
            try:
                outcome = run_scenario(folder / variant.file, opts)
            except (KeyboardInterrupt, _Interrupted):
                raise
            except Exception as exc:  # noqa: BLE001 - a run that cannot even start is recorded; the sweep goes on
                entry.update(status="failed", error=f"{exc.__class__.__name__}: {exc}",
                             traceback=traceback.format_exc(limit=8))
            else:
                bundle = outcome.bundle
                entry.update(bundle=str(bundle.relative_to(folder)), run_status=outcome.status,
                             crashes=[f"{c['node']}.{c['proc']} exit code {c['exit_code']}" for c in outcome.crashes])
                if outcome.status == "interrupted":
                    entry.update(status="interrupted", error=outcome.error)
                    interrupted = True
                elif outcome.status == "completed" and not outcome.crashes:
                    entry.update(status="completed")
                else:
                    crashed = "; ".join(f"crashed: {c}" for c in entry["crashes"])
                    entry.update(status="failed", error="; ".join(x for x in (outcome.error, crashed) if x))
                _annotate_manifest(bundle, folder, entry, variant)
                record.save()
                if analyse and not interrupted:
                    entry["analysis"] = _analyse(bundle)
            current = None
            wall = time.monotonic() - t0
            entry["wall_s"] = round(wall, 2)
            record.save()
            walls.append(wall)
            left = len(order) - entry["index"] - 1
            failed = sum(r["status"] == "failed" for r in runs)
            # Each remaining run: its duration plus the mean overhead (build, teardown, analysis) measured so far.
            overhead = sum(walls) / len(walls) - sum(v.duration for v, _ in order[: len(walls)]) / len(walls)
            rest = sum(v.duration + max(0.0, overhead) for v, _ in order[entry["index"] + 1:])
            progress.update(bar, advance=1, info=f"{left} left, {failed} failed",
                            eta_at=time.monotonic() + rest, eta_guess=False)
            colour = {"completed": "green", "failed": "red"}.get(entry["status"], "yellow")
            console.print(f"[{colour}]{entry['status']}[/] run {entry['index'] + 1}/{len(order)} {variant.id} "
                          f"seed {seed} " + escape(f"[{variant.label}] in {_fmt_s(wall)}"
                                                   + (f": {entry['error']}" if entry["error"] else "")
                                                   + (f" -> {entry['bundle']}" if entry["bundle"] else "")),
                          highlight=False, soft_wrap=True)
            if interrupted:
                break
    except (KeyboardInterrupt, _Interrupted):
        interrupted = True
        if current is not None and current["status"] == "running":
            current.update(status="interrupted", error="interrupted by a signal")
        elif current is not None and current.get("analysis") is None:
            current["analysis"] = "interrupted"
        console.print("[yellow]sweep interrupted[/]")
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        if nested_ok:
            progress.stop()
        for entry in runs:
            if entry["status"] in ("pending", "running"):
                entry["status"] = "skipped" if entry["status"] == "pending" else "interrupted"
        record.data.update(status="interrupted" if interrupted else "completed", end=utc_now()["utc"])
        record.save()
    return SweepResult(folder, record.data["status"], runs)


def _annotate_manifest(bundle: Path, folder: Path, entry: dict[str, Any], variant: Variant) -> None:
    """Note in the run's manifest that it belongs to this sweep (so the bundle alone can be compared)."""
    path = bundle / "manifest.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    Manifest(path, data).update(sweep={"folder": str(folder), "run": entry["index"], "variant": variant.id,
                                       "parameters": variant.parameters, "seed": entry["seed"]})


def _analyse(bundle: Path) -> str:
    """metrics/ of one bundle (and flows.csv, as ``invoke run`` writes it); 'ok' or what went wrong."""
    try:
        from analysis.tidy import analyse_bundle

        a = analyse_bundle(bundle)
        if len(a.flows.table):
            a.flows.table.to_csv(bundle / "flows.csv", index=False)
        return "ok" if not a.problems else f"ok, {len(a.problems)} problem(s): see metrics/problems.json"
    except Exception as exc:  # noqa: BLE001 - an analysis failure is recorded, the sweep goes on
        return f"error: {exc.__class__.__name__}: {exc}"


def read_sweep(folder: str | Path) -> dict[str, Any]:
    """A sweep folder's sweep.json (raises FileNotFoundError / ValueError)."""
    data = json.loads((Path(folder) / SWEEP_JSON).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list):
        raise ValueError(f"{Path(folder) / SWEEP_JSON} is not a sweep record")
    return data
