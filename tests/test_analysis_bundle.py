"""End-to-end tests of the analysis flow on synthetic run bundles: loading damaged event logs, metrics on
disk, plots and the HTML/Markdown report."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from analysis.__main__ import main
from analysis.events import load_events
from analysis.report import build_report, format_value
from analysis.tidy import analyse_bundle

T0 = 1_700_000_000.0
REPO = Path(__file__).resolve().parents[1]


def _line(**rec: Any) -> str:
    return json.dumps(rec, separators=(",", ":")) + "\n"


def _png(path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 1))
    fig.subplots().plot([0, 1], [0, 1])
    FigureCanvasAgg(fig).print_png(str(path))


def make_bundle(root: Path) -> Path:
    """A bundle with a probe flow (sink file damaged), a flow whose sink file is missing, a viewer, a server.

    f1 h1 -> h2: 20 packets sent (seq 0..19). The sink file holds, in arrival order, complete lines for
    0 1 2 3 4 6 8 7 9 10 .. 18 (5 lost, 7 reordered), a garbled line (11), a probe_bad record and a
    truncated last line (21: seq 19, cut off): so 18 unique packets count -> loss 1 - 18/20 = 10 %.
    f2 h3 -> h4: 5 packets sent; the sink process's file is missing (processes.jsonl lists it).
    """
    b = root / "results" / "demo" / "20240101T000000Z-s1"
    ev = b / "events"
    ev.mkdir(parents=True)
    (b / "resolved.json").write_text(json.dumps(
        {"name": "two-homes <demo>", "description": "Two homes & one server; <script>alert(1)</script>"}
    ))
    (b / "manifest.json").write_text(json.dumps({
        "status": "completed", "seed": 1, "start_epoch": T0, "end_epoch": T0 + 60,
        "git": {"commit": "abc123", "dirty": False}, "versions": {"kernel": "6.18", "python": "3.11.2"},
        "impairment_backend": "nfqueue", "exit_codes": {"h1.snd": 0},
    }))
    procs = [("h1", "snd"), ("h2", "sink"), ("h3", "snd2"), ("h4", "sink"), ("v1", "viewer"), ("s1", "server")]
    (b / "processes.jsonl").write_text("".join(_line(node=n, proc=p, event="start") for n, p in procs))
    _png(b / "topology.png")
    (b / "calibration.csv").write_text("link,direction,configured_mbit,measured_mbit\nh1-r1,up,1,0.98\n"
                                       "h1-r1,down,8,7.9 <approx>\n")

    snd = [_line(t=T0, node="h1", role="probe_sender", proc="snd", event="probe_start", flow="f1",
                 dst="10.0.0.2", port=5001, rate_pps=100, size=200, count=20)]
    for i in range(20):
        snd.append(_line(t=T0 + 1 + i * 0.01, node="h1", role="probe_sender", proc="snd", event="probe_send",
                         flow="f1", seq=i, size=200))
    snd.append(_line(t=T0 + 1.3, node="h1", role="probe_sender", proc="snd", event="probe_stop", flow="f1",
                     sent=20))
    (ev / "h1.snd.jsonl").write_text("".join(snd))

    sink = []
    order = [0, 1, 2, 3, 4, 6, 8, 7, *range(9, 19)]
    for k, seq in enumerate(order):
        sink.append(_line(t=T0 + 1 + seq * 0.01 + 0.030 + (0.002 if seq % 3 == 0 else 0.0), node="h2",
                          role="probe_sink", proc="sink", event="probe_recv", flow="f1", seq=seq,
                          sent=T0 + 1 + seq * 0.01, size=200, src="10.0.0.1"))
        if k == 9:
            sink.append("this is {not json\n")  # garbled: line 11
        if k == 12:
            sink.append(_line(t=T0 + 1.15, node="h2", role="probe_sink", proc="sink", event="probe_bad",
                              reason="short datagram", src="10.0.0.9", size=3))
    text = "".join(sink) + '{"t":%r,"node":"h2","role":"probe_sink","ev' % (T0 + 1.22)  # truncated: line 21
    (ev / "h2.sink.jsonl").write_text(text)

    snd2 = [_line(t=T0 + 2, node="h3", role="probe_sender", proc="snd2", event="probe_start", flow="f2",
                  size=100, count=5)]
    snd2 += [_line(t=T0 + 2 + i * 0.1, node="h3", role="probe_sender", proc="snd2", event="probe_send",
                   flow="f2", seq=i, size=100) for i in range(5)]
    snd2.append(_line(t=T0 + 2.6, node="h3", role="probe_sender", proc="snd2", event="probe_stop", flow="f2",
                      sent=5))
    (ev / "h3.snd2.jsonl").write_text("".join(snd2))

    # Viewer: request at +1, first frame at +3 (startup 2 s); stall 10..12; end at +21
    #   -> stall 2 s, play (21-3) - 2 = 16 s, rebuffering 2/18; chunks due 4, on time 3 -> continuity 0.75
    v = dict(node="v1", role="viewer", proc="viewer")
    viewer = [
        _line(t=T0 + 1, event="play_request", stream="ch1", **v),
        _line(t=T0 + 3, event="playback_start", stream="ch1", **v),
        _line(t=T0 + 4, event="chunk_recv", chunk=1, bytes=1000, source="peer", **v),
        _line(t=T0 + 4.5, event="chunk_recv", chunk=2, bytes=1000, source="server", **v),
        *[_line(t=T0 + 5 + i, event="chunk_due", chunk=i, on_time=i != 2, bytes=1000, **v) for i in range(4)],
        _line(t=T0 + 10, event="stall_start", **v),
        _line(t=T0 + 12, event="stall_end", **v),
        _line(t=T0 + 21, event="playback_end", reason="left", **v),
    ]
    (ev / "v1.viewer.jsonl").write_text("".join(viewer))

    # Server: one stream +1..+21 in a 60 s run -> mean 1/3, peak 1; 2 x 5000 B -> 80000 bit / 60 s.
    s = dict(node="s1", role="server", proc="server")
    server = [
        _line(t=T0 + 1, event="stream_start", stream="a", client="v1", **s),
        _line(t=T0 + 5, event="bytes_sent", bytes=5000, **s),
        _line(t=T0 + 10, event="bytes_sent", bytes=5000, **s),
        _line(t=T0 + 21, event="stream_end", stream="a", **s),
    ]
    (ev / "s1.server.jsonl").write_text("".join(server))
    (ev / "h9.idle.jsonl").write_text("")
    return b


class TagBalance(HTMLParser):
    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.imgs: list[str] = []
        self.cells: dict[str, str] = {}
        self._cell: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a.get("src") or "")
        if tag in self.VOID:
            return
        self.stack.append(tag)
        if tag == "td" and a.get("data-metric"):
            self._cell = a["data-metric"]
            self._text = []

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}>, open: {self.stack[-3:]}")
            return
        self.stack.pop()
        if tag == "td" and self._cell is not None:
            self.cells[self._cell] = "".join(self._text)
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._text.append(data)


def _summary_values(summary: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for metric, value in summary.get("run", {}).items():
        out[f"run/run/{metric}"] = value
    for section in ("flows", "viewers", "servers"):
        for entity, entry in summary.get(section, {}).items():
            for metric, value in entry.items():
                if metric not in ("flow", "src", "dst"):
                    out[f"{section}/{entity}/{metric}"] = value
    return out


@pytest.fixture()
def analysed(tmp_path: Path) -> Path:
    bundle = make_bundle(tmp_path)
    assert main([str(bundle)]) == 0
    return bundle


def test_loader_reports_damage_and_keeps_the_rest(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path)
    loaded = load_events(bundle)
    kinds = {(p.file, p.line, p.kind) for p in loaded.problems}
    assert ("events/h2.sink.jsonl", 11, "not_json") in kinds
    assert ("events/h2.sink.jsonl", 21, "truncated_line") in kinds
    assert ("events/h4.sink.jsonl", None, "missing_file") in kinds
    assert ("events/h9.idle.jsonl", None, "empty_file") in kinds
    frame = loaded.frame
    assert list(frame.columns[:7]) == ["t", "node", "role", "proc", "event", "file", "line"]
    assert (frame["event"] == "probe_recv").sum() == 18
    assert frame["t"].is_monotonic_increasing
    assert {"flow", "seq", "sent", "on_time", "stream", "bytes"} <= set(frame.columns)
    by_file = {f.file: f for f in loaded.files}
    assert by_file["events/h2.sink.jsonl"].events == 19  # 18 probe_recv + 1 probe_bad
    assert by_file["events/h2.sink.jsonl"].rejected == 2


def test_loader_garbage_of_every_kind(tmp_path: Path) -> None:
    ev = tmp_path / "events"
    ev.mkdir()
    (ev / "a.p.jsonl").write_bytes(
        b'{"t":1,"event":"x"}\n\n[1,2]\n"str"\n{"event":"no t"}\n{"t":"1","event":"y"}\n{"t":true,"event":"z"}\n'
        b'{"t":NaN,"event":"n"}\n{"t":2,"event":""}\n{"t":3}\n\xff\xfe\n{"t":4,"event":"ok","line":7,"nested":{"a":[1]}}\n'
    )
    (ev / "b.q.jsonl").write_bytes(b"\x00\x01\x02 binary junk")
    (ev / "c.r.jsonl").mkdir()  # a directory with the right suffix
    loaded = load_events(tmp_path)
    assert loaded.frame["event"].tolist() == ["x", "ok"]
    assert loaded.frame["line_field"].tolist()[1] == 7  # a clashing field is kept under another name
    assert loaded.frame["node"].tolist() == ["a", "a"]  # node / proc fall back to the file name
    lines = sorted(p.line for p in loaded.problems if p.file == "events/a.p.jsonl")
    assert lines == [3, 4, 5, 6, 7, 8, 9, 10, 11]
    assert any(p.file == "events/b.q.jsonl" and p.kind == "truncated_line" for p in loaded.problems)
    missing = load_events(tmp_path / "nope")
    assert missing.frame.empty and missing.problems[0].kind == "missing_dir"


def test_metrics_on_disk(analysed: Path) -> None:
    mdir = analysed / "metrics"
    with open(mdir / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["entity_kind", "entity", "metric", "value", "unit"]
    tidy = {(r["entity_kind"], r["entity"], r["metric"]): (float(r["value"]), r["unit"]) for r in rows}
    assert tidy[("flow", "f1", "loss_pct")] == (10.0, "%")
    assert tidy[("flow", "f1", "received")] == (18, "packets")
    assert tidy[("flow", "f1", "reordered")] == (1, "packets")
    # RFC 3550: base 0, highest 18 -> expected 19, received 18 -> lost 1 = 5.26316 %
    assert tidy[("flow", "f1", "lost_rfc3550")] == (1, "packets")
    assert tidy[("flow", "f1", "loss_rfc3550_pct")][0] == pytest.approx(100 / 19, rel=1e-5)
    assert tidy[("flow", "f1", "delay_min_ms")][0] == pytest.approx(30.0, rel=1e-4)

    summary = json.loads((mdir / "summary.json").read_text())
    assert summary["scenario"]["name"] == "two-homes <demo>"
    f1, f2 = summary["flows"]["f1"], summary["flows"]["f2"]
    assert (f1["src"], f1["dst"], f1["sent"], f1["received"]) == ("h1", "h2", 20, 18)
    # f2 has no receiver: loss is known (100 %) but delay and jitter are ABSENT, not zero.
    assert f2["sent"] == 5 and f2["received"] == 0 and f2["loss_pct"] == 100.0
    assert "jitter_ms" not in f2 and "delay_p50_ms" not in f2 and "dst" not in f2
    v1 = summary["viewers"]["v1"]
    assert v1["startup_latency_s"] == 2.0
    assert v1["stalls"] == 2 - 1  # one stall
    assert v1["stall_time_s"] == 2.0 and v1["play_time_s"] == 16.0
    assert v1["rebuffering_ratio"] == pytest.approx(2 / 18, rel=1e-5)
    assert v1["continuity_index"] == 0.75
    assert v1["peer_contribution"] == pytest.approx(1000 / 3000, rel=1e-5)
    s1 = summary["servers"]["s1"]
    assert s1["streams_mean"] == pytest.approx(20 / 60, rel=1e-5) and s1["streams_peak"] == 1
    assert s1["upload_kbps_mean"] == pytest.approx(80_000 / 60 / 1000, rel=1e-5)
    run = summary["run"]
    assert run["flows"] == 2 and run["packets_sent"] == 25 and run["packets_received"] == 18
    assert run["loss_pct"] == pytest.approx(100 * 7 / 25, rel=1e-5)
    assert run["savings"] == pytest.approx(0.0, abs=1e-9)  # one viewer, one unicast stream
    assert summary["units"]["jitter_ms"] == "ms"
    # Every tidy row is in summary.json with the same value.
    values = _summary_values(summary)
    for (kind, entity, metric), (value, _unit) in tidy.items():
        section = {"flow": "flows", "viewer": "viewers", "server": "servers", "run": "run"}[kind]
        assert values[f"{section}/{entity}/{metric}"] == pytest.approx(value, rel=0, abs=0)

    problems = json.loads((mdir / "problems.json").read_text())
    listed = {(p["file"], p["line"], p["kind"]) for p in problems["problems"]}
    assert ("events/h2.sink.jsonl", 21, "truncated_line") in listed
    assert ("events/h2.sink.jsonl", 11, "not_json") in listed
    assert ("events/h4.sink.jsonl", None, "missing_file") in listed
    assert any(p["kind"] == "flow_incomplete" and "f2" in p["detail"] for p in problems["problems"])
    assert any(p["kind"] == "probe_bad" and "h2: 1 datagrams" in p["detail"] for p in problems["problems"])


def test_report_html(analysed: Path) -> None:
    mdir = analysed / "metrics"
    page = (mdir / "report.html").read_text(encoding="utf-8")
    parser = TagBalance()
    parser.feed(page)
    parser.close()
    assert parser.errors == []
    assert parser.stack == []
    # Escaped scenario name and description, never raw markup from the bundle.
    assert "two-homes &lt;demo&gt;" in page and "<demo>" not in page and "<script>" not in page
    assert "7.9 &lt;approx&gt;" in page  # calibration table
    # Every image exists and is non-empty; topology and at least the flow/viewer/server figures are there.
    assert "../topology.png" in parser.imgs
    for src in parser.imgs:
        img = (mdir / src).resolve()
        assert img.is_file() and img.stat().st_size > 0, src
    for name in ("delay_f1.png", "flows_overview.png", "startup_cdf.png", "continuity.png", "server_load.png"):
        assert name in parser.imgs
    # Report numbers are exactly the summary.json values, formatted one way.
    summary = json.loads((mdir / "summary.json").read_text())
    values = _summary_values(summary)
    assert set(parser.cells) == set(values)
    for key, value in values.items():
        assert parser.cells[key] == format_value(value), key
        assert float(parser.cells[key]) == value, key
    # Problems section names the missing and garbled files.
    problems = page[page.index('id="problems"'):]
    for name in ("events/h4.sink.jsonl", "events/h2.sink.jsonl", "truncated_line", "not_json", "missing_file"):
        assert name in problems
    assert "abc123" in page and "versions.kernel" in page  # manifest table


def test_report_markdown_twin(analysed: Path) -> None:
    md = (analysed / "metrics" / "report.md").read_text(encoding="utf-8")
    summary = json.loads((analysed / "metrics" / "summary.json").read_text())
    assert md.startswith("# streambed run report: two-homes &lt;demo&gt;")
    run_rows = {line.split(" | ")[0].lstrip("| "): line for line in md.splitlines() if line.startswith("| ")}
    for metric, value in summary["run"].items():
        assert f"| {format_value(value)} |" in run_rows[metric]
    f1_row = next(line for line in md.splitlines() if line.startswith("| f1 |"))
    for metric, value in summary["flows"]["f1"].items():
        if metric not in ("flow", "src", "dst"):
            assert f"| {format_value(value)} |" in f1_row
    assert "events/h4.sink.jsonl" in md and "truncated\\_line" not in md and "truncated_line" in md
    for line in md.splitlines():
        if line.startswith("![") and not line.startswith("![topology"):
            target = line[line.index("](") + 2 : -1]
            assert (analysed / "metrics" / target).stat().st_size > 0


def test_broken_bundles_never_crash(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    a = analyse_bundle(empty)
    kinds = {p.kind for p in a.problems}
    assert {"missing_dir", "missing_file"} <= kinds
    assert set(a.summary) == {"schema", "bundle", "events", "units"}  # no flows/viewers/servers/run at all
    report = build_report(empty)
    text = report.read_text()
    assert "No metrics" in text and "missing_dir" in text

    odd = tmp_path / "odd"
    (odd / "events").mkdir(parents=True)
    (odd / "manifest.json").write_text("[1, 2")
    (odd / "resolved.json").write_text('"just a string"')
    (odd / "processes.jsonl").write_text('{"node": "x", "proc": "y", "crashed": true, "exit_code": -9}\nzzz\n')
    (odd / "events" / "x.y.jsonl").write_text(
        _line(t=T0, node="x", proc="y", event="probe_recv", flow="f9", seq="oops", sent=None)
        + _line(t=T0 + 1, node="x", proc="y", event="stall_end")
        + _line(t=T0 + 2, node="x", proc="y", event="bytes_sent", bytes="many")
        + _line(t=T0 + 3, node="x", proc="y", event="chunk_due", on_time="yes")
    )
    assert main([str(odd)]) == 0
    problems = json.loads((odd / "metrics" / "problems.json").read_text())["problems"]
    kinds = {p["kind"] for p in problems}
    assert {"not_json", "not_object", "process_crashed"} <= kinds
    assert not any(p["kind"] == "analysis_error" for p in problems), problems
    parser = TagBalance()
    parser.feed((odd / "metrics" / "report.html").read_text())
    assert parser.errors == [] and parser.stack == []


def test_command_line(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "analysis", str(bundle)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "f1 h1->h2: sent 20 recv 18 loss 10.00%" in proc.stdout
    assert str(bundle / "metrics" / "report.html") in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "analysis", str(tmp_path / "nope")], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2


def test_report_right_after_analyse_draws_the_plots(tmp_path: Path) -> None:
    # The pattern of `invoke report`: analyse_bundle, then build_report (no explicit make_plots).
    bundle = make_bundle(tmp_path)
    analyse_bundle(bundle)
    page = build_report(bundle).read_text(encoding="utf-8")
    assert 'src="delay_f1.png"' in page
    assert (bundle / "metrics" / "delay_f1.png").stat().st_size > 0


def test_packets_in_flight_when_the_sink_stops_are_not_counted_as_lost(tmp_path) -> None:
    """A sink that stops at t=10 s while packets with 50 ms delay are still coming: the last ones are in
    flight, not lost; loss over the rest is exact (every 10th packet dropped -> 10 %)."""
    import json

    from analysis.events import load_events
    from analysis.flows import flow_table

    ev = tmp_path / "events"
    ev.mkdir()
    t0 = 1_000_000.0
    snd, rcv = [], []
    for seq in range(1000):  # 100 packets/s for 10 s
        ts = t0 + seq * 0.01
        snd.append({"t": ts, "node": "a", "role": "probe_sender", "proc": "tx", "event": "probe_send",
                    "flow": "f", "seq": seq, "size": 100})
        if seq % 10 != 9 and ts + 0.05 < t0 + 9.9:
            rcv.append({"t": ts + 0.05, "node": "b", "role": "probe_sink", "proc": "rx", "event": "probe_recv",
                        "flow": "f", "seq": seq, "sent": ts, "size": 100})
    snd.append({"t": t0 + 10, "node": "a", "role": "probe_sender", "proc": "tx", "event": "probe_stop",
                "flow": "f", "sent": 1000})
    rcv.append({"t": t0 + 9.9, "node": "b", "role": "probe_sink", "proc": "rx", "event": "process_stop"})
    (ev / "a.tx.jsonl").write_text("".join(json.dumps(r) + "\n" for r in snd))
    (ev / "b.rx.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rcv))
    row = flow_table(load_events(tmp_path).frame).iloc[0]
    # cutoff = 9.9 - (1.5 * 0.05 + 0.1) = 9.725 s -> packets 0..972 count (973 packets)
    assert row["sent"] == 973
    assert row["in_flight_at_stop"] == 27
    assert abs(row["loss_pct"] - 100 * 97 / 973) < 1e-9
