"""Step 4, the end of the analysis flow (events -> metrics -> plots -> report): the human-readable report.

:func:`build_report` writes ``<bundle>/metrics/report.html`` (one page, self-contained except for
relative ``<img>`` links to the PNGs next to it and to ``../topology.png``) and its Markdown twin
``report.md``. Everything comes from files on disk, so the numbers shown are exactly the values of
``metrics/summary.json`` (printed with :func:`format_value`): scenario name and description
(``resolved.json``), topology picture, calibration table (``calibration.csv``), summary metrics, the
figures listed in ``metrics/plots.json``, the manifest, and the problems (``metrics/problems.json``).
If the bundle has not been analysed (or plotted) yet, :func:`build_report` does that first.
All text is escaped (``html.escape``).
"""

from __future__ import annotations

import csv
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from analysis.plots import PLOTS_JSON, make_plots
from analysis.tidy import METRICS_DIR, PROBLEMS_JSON, SUMMARY_JSON, Analysis, analyse_bundle, recent_analysis

REPORT_HTML = "report.html"
REPORT_MD = "report.md"
MAX_CALIBRATION_ROWS = 500
MAX_PROBLEM_ROWS = 500
SECTION_TITLES = {"flows": "Flows", "viewers": "Viewers", "servers": "Servers"}
LABEL_KEYS = ("flow", "src", "dst")


def format_value(value: Any) -> str:
    """How every figure is printed: integers as such, floats in Python's shortest round-trip form.

    summary.json already holds values rounded to 6 significant digits (see
    :func:`analysis.tidy.round_value`), so ``float(format_value(v)) == v`` for every number shown.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


def metric_key(kind: str, entity: str, metric: str) -> str:
    """The ``data-metric`` attribute of a report cell: ``<section>/<entity>/<metric>``."""
    return f"{kind}/{entity}/{metric}"


@dataclass
class _Inputs:
    bundle: Path
    summary: dict[str, Any] = field(default_factory=dict)
    problems: list[dict[str, Any]] = field(default_factory=list)
    files: list[dict[str, Any]] = field(default_factory=list)
    plots: list[dict[str, Any]] = field(default_factory=list)
    plot_failures: list[dict[str, Any]] = field(default_factory=list)
    resolved: dict[str, Any] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)
    calibration: list[list[str]] = field(default_factory=list)
    calibration_truncated: int = 0
    topology: bool = False
    notes: list[str] = field(default_factory=list)


def _read_json(path: Path, notes: list[str], rel: str) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        notes.append(f"{rel}: cannot be read ({type(exc).__name__})")
        return None


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _gather(bundle: Path) -> _Inputs:
    mdir = bundle / METRICS_DIR
    inp = _Inputs(bundle)
    inp.summary = _as_dict(_read_json(mdir / SUMMARY_JSON, inp.notes, f"{METRICS_DIR}/{SUMMARY_JSON}"))
    probs = _as_dict(_read_json(mdir / PROBLEMS_JSON, inp.notes, f"{METRICS_DIR}/{PROBLEMS_JSON}"))
    inp.problems = [p for p in probs.get("problems", []) if isinstance(p, dict)]
    inp.files = [f for f in probs.get("files", []) if isinstance(f, dict)]
    plots = _as_dict(_read_json(mdir / PLOTS_JSON, inp.notes, f"{METRICS_DIR}/{PLOTS_JSON}"))
    for item in plots.get("plots", []):
        if isinstance(item, dict) and isinstance(item.get("file"), str):
            png = mdir / Path(item["file"]).name
            if png.is_file() and png.stat().st_size > 0:
                inp.plots.append(item)
            else:
                inp.notes.append(f"{METRICS_DIR}/{item['file']}: listed in plots.json but missing or empty")
    inp.plot_failures = [f for f in plots.get("failed", []) if isinstance(f, dict)]
    inp.resolved = _as_dict(_read_json(bundle / "resolved.json", inp.notes, "resolved.json"))
    inp.manifest = _as_dict(_read_json(bundle / "manifest.json", inp.notes, "manifest.json"))
    topo = bundle / "topology.png"
    inp.topology = topo.is_file() and topo.stat().st_size > 0
    cal = bundle / "calibration.csv"
    if cal.is_file():
        try:
            with open(cal, newline="", encoding="utf-8", errors="replace") as fh:
                rows = [row for row in csv.reader(fh) if row]
            inp.calibration = rows[: MAX_CALIBRATION_ROWS + 1]
            inp.calibration_truncated = max(0, len(rows) - 1 - MAX_CALIBRATION_ROWS)
        except (OSError, csv.Error) as exc:
            inp.notes.append(f"calibration.csv: cannot be read ({type(exc).__name__})")
    return inp


def _flatten(data: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested manifest -> (dotted key, leaf value) rows."""
    if isinstance(data, dict):
        rows: list[tuple[str, Any]] = []
        for key, value in data.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, dict) and value:
                rows.extend(_flatten(value, name))
            else:
                rows.append((name, value))
        return rows
    return [(prefix, data)]


def _entity_tables(summary: dict[str, Any]) -> list[tuple[str, list[str], list[str], list[str]]]:
    """For flows / viewers / servers present in the summary: (section, entities, labels, metrics)."""
    out = []
    for section in ("flows", "viewers", "servers"):
        entries = summary.get(section)
        if not isinstance(entries, dict) or not entries:
            continue
        labels = [k for k in LABEL_KEYS if any(isinstance(e, dict) and k in e for e in entries.values())]
        if "flow" in labels and all(_as_dict(e).get("flow") == name for name, e in entries.items()):
            labels.remove("flow")  # the row label already is the flow id
        metrics: list[str] = []
        for entry in entries.values():
            if isinstance(entry, dict):
                for key in entry:
                    if key not in LABEL_KEYS and key not in metrics:
                        metrics.append(key)
        out.append((section, list(entries), labels, metrics))
    return out


_UNIT_SUFFIXES = ("_ms", "_s", "_pct", "_kbps")


def _header(summary: dict[str, Any], metric: str) -> str:
    """Column header of a metric: its name, plus the unit when the name does not already say it."""
    unit = _unit(summary, metric)
    if not unit or any(metric.endswith(x) or f"{x}_" in metric for x in _UNIT_SUFFIXES):
        return metric
    return f"{metric} ({unit})"


def _unit(summary: dict[str, Any], metric: str) -> str:
    units = summary.get("units")
    return str(units.get(metric, "")) if isinstance(units, dict) else ""


# ------------------------------------------------------------------------------------------------ HTML

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:1200px;
padding:0 1em;color:#222;line-height:1.4}
h1{margin-bottom:.2em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ddd;padding:.25em .55em;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
.scroll{overflow-x:auto}.muted{color:#666}.bad{color:#a00}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{color:#555;font-size:.9em}code{background:#f6f6f6;padding:0 .2em}
"""


def _e(value: Any) -> str:
    return html.escape(format_value(value) if not isinstance(value, str) else value, quote=True)


def _html_table(head: list[str], rows: list[list[str]], *, raw_cells: bool = False) -> str:
    """A table; ``rows`` hold cell HTML when ``raw_cells`` (already escaped), else plain text."""
    parts = ['<div class="scroll"><table>', "<thead><tr>"]
    parts.extend(f"<th>{_e(h)}</th>" for h in head)
    parts.append("</tr></thead><tbody>")
    for row in rows:
        parts.append("<tr>")
        for cell in row:
            parts.append(cell if raw_cells else f"<td>{_e(cell)}</td>")
        parts.append("</tr>")
    parts.append("</tbody></table></div>")
    return "".join(parts)


def _num_cell(kind: str, entity: str, metric: str, value: Any) -> str:
    key = html.escape(metric_key(kind, entity, metric), quote=True)
    return f'<td class="num" data-metric="{key}">{_e(value)}</td>'


def _img(src: str, alt: str) -> str:
    return f'<img src="{html.escape(quote(src), quote=True)}" alt="{_e(alt)}">'


def _render_html(inp: _Inputs) -> str:
    s = inp.summary
    scenario = _as_dict(s.get("scenario"))
    name = inp.resolved.get("name") if isinstance(inp.resolved.get("name"), str) else scenario.get("name")
    desc = inp.resolved.get("description")
    if not isinstance(desc, str):
        desc = scenario.get("description") if isinstance(scenario.get("description"), str) else None
    title = f"streambed run report: {name}" if name else f"streambed run report: {inp.bundle.name}"
    out: list[str] = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
    ]
    if desc:
        out.append(f"<p>{_e(desc)}</p>")
    status = inp.manifest.get("status")
    facts = [f"bundle <code>{_e(inp.bundle.name)}</code>"]
    if isinstance(status, str):
        facts.append(f"status <strong>{_e(status)}</strong>")
    ev = _as_dict(s.get("events"))
    if ev:
        facts.append(f"{_e(ev.get('events', 0))} events from {_e(ev.get('files', 0))} files")
    n_prob = len(inp.problems) + len(inp.plot_failures) + len(inp.notes)
    facts.append(f'<a href="#problems">{_e(n_prob)} problem{"s" if n_prob != 1 else ""}</a>')
    out.append(f'<p class="muted">{" · ".join(facts)}</p>')

    if inp.topology:
        out.append('<h2 id="topology">Topology</h2>')
        out.append(f"<figure>{_img('../topology.png', 'topology of the emulated network')}</figure>")

    if inp.calibration:
        out.append('<h2 id="calibration">Calibration</h2>')
        head, *rows = inp.calibration
        out.append(_html_table(head, rows))
        if inp.calibration_truncated:
            out.append(f'<p class="muted">{_e(inp.calibration_truncated)} more rows in calibration.csv</p>')

    out.append('<h2 id="summary">Summary metrics</h2>')
    run = _as_dict(s.get("run"))
    if run:
        out.append("<h3>Run</h3>")
        rows = [
            [f"<td>{_e(m)}</td>", _num_cell("run", "run", m, v), f"<td>{_e(_unit(s, m))}</td>"]
            for m, v in run.items()
        ]
        out.append(_html_table(["metric", "value", "unit"], rows, raw_cells=True))
    tables = _entity_tables(s)
    for section, entities, labels, metrics in tables:
        out.append(f"<h3>{_e(SECTION_TITLES[section])}</h3>")
        head = [section[:-1], *labels, *[_header(s, m) for m in metrics]]
        rows = []
        for entity in entities:
            entry = _as_dict(s[section].get(entity))
            cells = [f"<td>{_e(entity)}</td>"] + [f"<td>{_e(entry.get(k, ''))}</td>" for k in labels]
            for m in metrics:
                cells.append(_num_cell(section, entity, m, entry[m]) if m in entry else '<td class="num"></td>')
            rows.append(cells)
        out.append(_html_table(head, rows, raw_cells=True))
    if not run and not tables:
        out.append('<p class="bad">No metrics: the run has no usable events (see Problems).</p>')
    out.append('<p class="muted">Blank cells: no events for that metric. Values as in metrics/summary.json.</p>')

    out.append('<h2 id="plots">Plots</h2>')
    if inp.plots:
        for item in inp.plots:
            out.append(
                f"<figure>{_img(Path(item['file']).name, str(item.get('title', item['file'])))}"
                f"<figcaption><strong>{_e(str(item.get('title', '')))}</strong> "
                f"{_e(str(item.get('caption', '')))}</figcaption></figure>"
            )
    else:
        out.append('<p class="muted">No figures (no data to draw, or plots were not made).</p>')

    out.append('<h2 id="manifest">Manifest</h2>')
    if inp.manifest:
        out.append(_html_table(["key", "value"], [[k, format_value(v)] for k, v in _flatten(inp.manifest)]))
    else:
        out.append('<p class="bad">No readable manifest.json.</p>')

    out.append('<h2 id="problems">Problems</h2>')
    out.extend(_problems_html(inp))
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _problem_rows(inp: _Inputs) -> list[list[str]]:
    rows = [
        [str(p.get("file", "")), format_value(p.get("line")), str(p.get("kind", "")), str(p.get("detail", ""))]
        for p in inp.problems[:MAX_PROBLEM_ROWS]
    ]
    rows += [[f"{METRICS_DIR}/{f.get('file', '')}", "", "plot_failed", str(f.get("error", ""))]
             for f in inp.plot_failures]
    rows += [["(report)", "", "unreadable", note] for note in inp.notes]
    return rows


def _problem_files(inp: _Inputs) -> list[str]:
    seen: list[str] = []
    for p in inp.problems:
        f = str(p.get("file", ""))
        if f and f not in seen:
            seen.append(f)
    return seen


def _problems_html(inp: _Inputs) -> list[str]:
    out: list[str] = []
    rows = _problem_rows(inp)
    if not rows:
        out.append("<p>None: every expected file was present and every line parsed.</p>")
    else:
        files = _problem_files(inp)
        if files:
            out.append("<p>Files with problems: " + ", ".join(f"<code>{_e(f)}</code>" for f in files) + "</p>")
        out.append(_html_table(["file", "line", "kind", "detail"], rows))
        if len(inp.problems) > MAX_PROBLEM_ROWS:
            out.append(f"<p class=\"muted\">{_e(len(inp.problems) - MAX_PROBLEM_ROWS)} more in problems.json</p>")
    if inp.files:
        out.append("<h3>Event files read</h3>")
        head = ["file", "bytes", "lines", "events", "rejected"]
        out.append(_html_table(head, [[format_value(f.get(k, "")) for k in head] for f in inp.files]))
    return out


# -------------------------------------------------------------------------------------------- Markdown


def md_escape(value: Any) -> str:
    """Escape text for a Markdown table cell (HTML special characters, pipes, emphasis, links)."""
    text = value if isinstance(value, str) else format_value(value)
    text = html.escape(text, quote=False).replace("\r", " ").replace("\n", " ")
    for ch in ("\\", "`", "*", "[", "]", "|"):
        text = text.replace(ch, "\\" + ch)
    return text


def _md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(md_escape(h) for h in head) + " |", "|" + "---|" * len(head)]
    lines.extend("| " + " | ".join(md_escape(c) for c in row) + " |" for row in rows)
    return lines + [""]


def _render_md(inp: _Inputs) -> str:
    s = inp.summary
    scenario = _as_dict(s.get("scenario"))
    name = inp.resolved.get("name") if isinstance(inp.resolved.get("name"), str) else scenario.get("name")
    desc = inp.resolved.get("description")
    if not isinstance(desc, str):
        desc = scenario.get("description") if isinstance(scenario.get("description"), str) else None
    title = f"streambed run report: {name}" if name else f"streambed run report: {inp.bundle.name}"
    out = [f"# {md_escape(title)}", ""]
    if desc:
        out += [md_escape(desc), ""]
    facts = [f"bundle `{inp.bundle.name.replace('`', '')}`"]
    if isinstance(inp.manifest.get("status"), str):
        facts.append(f"status **{md_escape(inp.manifest['status'])}**")
    ev = _as_dict(s.get("events"))
    if ev:
        facts.append(f"{md_escape(ev.get('events', 0))} events from {md_escape(ev.get('files', 0))} files")
    n_prob = len(inp.problems) + len(inp.plot_failures) + len(inp.notes)
    facts.append(f"{n_prob} problem{'s' if n_prob != 1 else ''}")
    out += [" · ".join(facts), ""]
    if inp.topology:
        out += ["## Topology", "", "![topology of the emulated network](../topology.png)", ""]
    if inp.calibration:
        head, *rows = inp.calibration
        out += ["## Calibration", "", *_md_table(head, rows)]
    out += ["## Summary metrics", ""]
    run = _as_dict(s.get("run"))
    if run:
        out += ["### Run", "", *_md_table(["metric", "value", "unit"],
                                          [[m, format_value(v), _unit(s, m)] for m, v in run.items()])]
    tables = _entity_tables(s)
    for section, entities, labels, metrics in tables:
        head = [section[:-1], *labels, *[_header(s, m) for m in metrics]]
        rows = []
        for entity in entities:
            entry = _as_dict(s[section].get(entity))
            rows.append([entity, *[format_value(entry.get(k, "")) for k in labels],
                         *[format_value(entry[m]) if m in entry else "" for m in metrics]])
        out += [f"### {SECTION_TITLES[section]}", "", *_md_table(head, rows)]
    if not run and not tables:
        out += ["No metrics: the run has no usable events (see Problems).", ""]
    out += ["## Plots", ""]
    if inp.plots:
        for item in inp.plots:
            fname = quote(Path(item["file"]).name)
            out += [f"![{md_escape(str(item.get('title', '')))}]({fname})", "",
                    f"*{md_escape(str(item.get('caption', '')))}*", ""]
    else:
        out += ["No figures (no data to draw, or plots were not made).", ""]
    out += ["## Manifest", ""]
    if inp.manifest:
        out += _md_table(["key", "value"], [[k, format_value(v)] for k, v in _flatten(inp.manifest)])
    else:
        out += ["No readable manifest.json.", ""]
    out += ["## Problems", ""]
    rows = _problem_rows(inp)
    if not rows:
        out += ["None: every expected file was present and every line parsed.", ""]
    else:
        files = _problem_files(inp)
        if files:
            out += ["Files with problems: " + ", ".join(md_escape(f) for f in files), ""]
        out += _md_table(["file", "line", "kind", "detail"], rows)
    if inp.files:
        head = ["file", "bytes", "lines", "events", "rejected"]
        out += ["### Event files read", "", *_md_table(head, [[format_value(f.get(k, "")) for k in head]
                                                               for f in inp.files])]
    return "\n".join(out).rstrip() + "\n"


def _plots_stale(mdir: Path) -> bool:
    """No plots.json, or one older than summary.json (the metrics were recomputed since the plots)."""
    try:
        return (mdir / PLOTS_JSON).stat().st_mtime_ns < (mdir / SUMMARY_JSON).stat().st_mtime_ns
    except OSError:
        return True


def build_report(bundle_dir: str | Path, *, analysis: Analysis | None = None, plots: bool = True) -> Path:
    """Write metrics/report.html and metrics/report.md for a bundle; return the HTML path.

    Uses the bundle's metrics/summary.json, problems.json and plots.json. When summary.json is absent
    the bundle is analysed first; when the plots are missing or older than summary.json they are drawn
    (from ``analysis`` if given, else from the analysis that just wrote summary.json in this process,
    else by analysing again), unless ``plots=False``. Never raises on bad bundle content.
    """
    bundle = Path(bundle_dir)
    mdir = bundle / METRICS_DIR
    if not (mdir / SUMMARY_JSON).is_file():
        analysis = analyse_bundle(bundle)
    if plots and _plots_stale(mdir):
        make_plots(analysis or recent_analysis(bundle) or analyse_bundle(bundle))
    inp = _gather(bundle)
    mdir.mkdir(parents=True, exist_ok=True)
    html_path = mdir / REPORT_HTML
    html_path.write_text(_render_html(inp), encoding="utf-8")
    (mdir / REPORT_MD).write_text(_render_md(inp), encoding="utf-8")
    return html_path
