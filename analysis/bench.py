"""Benchmark of the analysis flow (events -> metrics -> plots -> report): ``python -m analysis.bench``.

Synthesises a run bundle with N probe events (several flows, realistic fields: 1 % loss, delay jitter
larger than the packet spacing so packets reorder, a few duplicates; sink files in arrival order, as
``nodes.probe_sink`` writes them) into a temporary folder, then, in a fresh child process so that the
synthesis does not count, measures:

* a baseline: the time to merely read the event files' bytes;
* :func:`analysis.tidy.analyse_bundle` wall time and the peak RSS (``resource.getrusage``) after it,
  against the targets (<= 30 s, <= 2 GB), and the ratio to the baseline;
* for information, plots and report times.

Exit status 0 when both targets are met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET_S = 30.0
TARGET_RSS_BYTES = 2 * 1024**3
T0 = 1_732_249_000.0


def synthesise(bundle: Path, n_events: int, n_flows: int = 8, seed: int = 1) -> dict[str, Any]:
    """Write a bundle with about ``n_events`` probe events; return what was written (files, bytes, events)."""
    rng = random.Random(seed)
    ev = bundle / "events"
    ev.mkdir(parents=True, exist_ok=True)
    (bundle / "resolved.json").write_text(json.dumps({"name": "bench", "description": f"{n_events} probe events"}))
    rate = 1000.0
    per_flow = max(4, n_events // n_flows)
    # Each packet gives one probe_send and (unless lost) one probe_recv: packets ~ per_flow / 2.
    packets = max(1, (per_flow - 2) // 2)
    duration = packets / rate
    (bundle / "manifest.json").write_text(json.dumps({
        "scenario": "bench", "status": "completed", "seed": seed,
        "start": {"epoch": T0 - 1.0}, "t0_epoch": T0, "end": {"epoch": T0 + duration + 1.0},
    }))
    sinks: dict[str, list[tuple[float, str]]] = {}
    written = 0
    procs = []
    for f in range(n_flows):
        flow = f"f{f + 1}"
        src = f"h{f + 1}"
        dst = f"r{f % max(1, n_flows // 2) + 1}"  # two flows per receiving node
        procs.append({"node": src, "proc": f"tx{f + 1}", "event": "start"})
        head = f'"node":"{src}","role":"probe_sender","proc":"tx{f + 1}"'
        khead = f'"node":"{dst}","role":"probe_sink","proc":"sink"'
        src_ip = f"10.0.{f}.1"
        recv = sinks.setdefault(dst, [])
        with open(ev / f"{src}.tx{f + 1}.jsonl", "w", encoding="utf-8") as out:
            out.write(f'{{"t":{T0!r},{head},"event":"probe_start","flow":"{flow}","dst":"10.9.0.{f % 250 + 1}",'
                      f'"port":5001,"rate_pps":{rate},"size":1200,"count":{packets}}}\n')
            written += 1
            base_delay = 0.020 + 0.002 * f
            for seq in range(packets):
                ts = T0 + seq / rate + rng.random() * 2e-5
                out.write(f'{{"t":{ts!r},{head},"event":"probe_send","flow":"{flow}","seq":{seq},"size":1200}}\n')
                written += 1
                if rng.random() < 0.01:
                    continue
                copies = 2 if rng.random() < 0.001 else 1
                for _ in range(copies):
                    tr = ts + base_delay + rng.random() * 0.004
                    recv.append((tr, f'{{"t":{tr!r},{khead},"event":"probe_recv","flow":"{flow}","seq":{seq},'
                                     f'"sent":{ts!r},"size":1200,"src":"{src_ip}"}}\n'))
            out.write(f'{{"t":{T0 + duration + 0.001!r},{head},"event":"probe_stop","flow":"{flow}",'
                      f'"sent":{packets}}}\n')
            written += 1
    for dst, items in sinks.items():
        procs.append({"node": dst, "proc": "sink", "event": "start"})
        items.sort(key=lambda x: x[0])  # the sink logs in arrival order
        with open(ev / f"{dst}.sink.jsonl", "w", encoding="utf-8") as out:
            out.writelines(line for _, line in items)
        written += len(items)
        items.clear()
    (bundle / "processes.jsonl").write_text("".join(json.dumps(p) + "\n" for p in procs))
    files = sorted(ev.glob("*.jsonl"))
    return {"files": len(files), "bytes": sum(p.stat().st_size for p in files), "events": written}


def _maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def measure(bundle: Path) -> dict[str, Any]:
    """In this (fresh) process: baseline read, analyse_bundle, plots, report: times and peak RSS."""
    rss_start = _maxrss_bytes()
    files = sorted((bundle / "events").glob("*.jsonl"))
    t = time.perf_counter()
    nbytes = 0
    for path in files:
        nbytes += len(path.read_bytes())
    baseline = time.perf_counter() - t

    from analysis.plots import make_plots
    from analysis.report import build_report
    from analysis.tidy import analyse_bundle

    rss_imported = _maxrss_bytes()
    t = time.perf_counter()
    analysis = analyse_bundle(bundle)
    analyse_s = time.perf_counter() - t
    rss_analyse = _maxrss_bytes()
    t = time.perf_counter()
    make_plots(analysis)
    plots_s = time.perf_counter() - t
    t = time.perf_counter()
    build_report(bundle)
    report_s = time.perf_counter() - t
    return {
        "bytes": nbytes,
        "baseline_s": baseline,
        "analyse_s": analyse_s,
        "plots_s": plots_s,
        "report_s": report_s,
        "rss_start": rss_start,
        "rss_imported": rss_imported,
        "rss_analyse": rss_analyse,
        "rss_end": _maxrss_bytes(),
        "events_loaded": int(len(analysis.events)),
        "flows": int(len(analysis.flows.table)),
        "problems": len(analysis.problems),
    }


def _fmt_bytes(n: float) -> str:
    return f"{n / 1024**3:.2f} GB" if n >= 1024**3 else f"{n / 1024**2:.0f} MB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="probe events to synthesise")
    parser.add_argument("--flows", type=int, default=8)
    parser.add_argument("--keep", action="store_true", help="keep the synthetic bundle and print where")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return 0

    tmp = Path(tempfile.mkdtemp(prefix="streambed-bench-"))
    bundle = tmp / "bench" / "bundle"
    try:
        t = time.perf_counter()
        info = synthesise(bundle, args.events, args.flows)
        synth_s = time.perf_counter() - t
        print(f"analysis bench: {info['events']:,} probe events, {args.flows} flows, {info['files']} files, "
              f"{_fmt_bytes(info['bytes'])} (synthesised in {synth_s:.1f} s)")
        proc = subprocess.run([sys.executable, "-m", "analysis.bench", "--measure", str(bundle)],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return 1
        m = json.loads(proc.stdout.strip().splitlines()[-1])
        ok_t = m["analyse_s"] <= TARGET_S
        ok_m = m["rss_analyse"] <= TARGET_RSS_BYTES
        ratio = m["analyse_s"] / m["baseline_s"] if m["baseline_s"] > 0 else float("inf")
        print(f"  baseline (read the files' bytes)   {m['baseline_s']:8.3f} s")
        print(f"  analyse_bundle                     {m['analyse_s']:8.2f} s   target <= {TARGET_S:.0f} s   "
              f"{'OK' if ok_t else 'TOO SLOW'}   ({ratio:,.0f}x baseline, "
              f"{info['events'] / m['analyse_s']:,.0f} events/s)")
        print(f"  peak RSS after analyse_bundle      {_fmt_bytes(m['rss_analyse']):>10}   target <= 2 GB   "
              f"{'OK' if ok_m else 'TOO BIG'}   (interpreter + imports: {_fmt_bytes(m['rss_imported'])})")
        print(f"  for information: plots {m['plots_s']:.2f} s, report {m['report_s']:.2f} s, "
              f"peak RSS at the end {_fmt_bytes(m['rss_end'])}; {m['events_loaded']:,} events loaded, "
              f"{m['flows']} flows, {m['problems']} problems")
        if args.keep:
            print(f"  bundle kept: {bundle}")
        return 0 if ok_t and ok_m else 1
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
