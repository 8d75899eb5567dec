"""Command line of the analysis flow (events -> metrics -> plots -> report): ``python -m analysis <bundle>``.

Runs :func:`analysis.tidy.analyse_bundle`, :func:`analysis.plots.make_plots` and
:func:`analysis.report.build_report` on one run bundle, prints one line per probe flow and where the
report is. Exit status 0 when the report was written (even if the bundle had problems, which the
report lists), 2 when the argument is not a bundle directory.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analysis.flows import format_flow_line
from analysis.plots import make_plots
from analysis.report import REPORT_MD, build_report
from analysis.tidy import analyse_bundle


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m analysis", description="Analyse a streambed run bundle: metrics, plots, report."
    )
    parser.add_argument("bundle", type=Path, help="run bundle directory (results/<scenario>/<stamp>-s<seed>)")
    parser.add_argument("--no-plots", action="store_true", help="skip the figures")
    args = parser.parse_args(argv)
    bundle: Path = args.bundle
    if not bundle.is_dir():
        print(f"analysis: not a directory: {bundle}", file=sys.stderr)
        return 2
    analysis = analyse_bundle(bundle)
    if not args.no_plots:
        make_plots(analysis)
    for _, row in analysis.flows.table.iterrows():
        print(format_flow_line(row))
    if analysis.problems:
        print(f"{len(analysis.problems)} problem(s) in the bundle, e.g.: {analysis.problems[0]}")
    report = build_report(bundle, analysis=analysis, plots=not args.no_plots)
    print(f"report: {report}")
    print(f"        {report.with_name(REPORT_MD)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
