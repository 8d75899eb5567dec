"""``invoke bench scale``: build and teardown time of generated networks of 20, 60 and 120 hosts.

Each size is a real run (``scenarios.generate.scale_scenario``: 6 routers in a ring, one LAN each, probe
flows across routers, 3 s of traffic). The baseline, measured in the same run, is the bare kernel cost of
the same number of namespaces and veth pairs made with ``ip`` alone; the ratio shows streambed's overhead.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from scenarios.generate import scale_scenario
from scenarios.run import RunOptions, run_scenario


def bare_namespaces(n: int) -> tuple[float, float]:
    """Seconds to create / delete n named namespaces, each with a veth to a common namespace."""
    tag = f"sbb{int(time.time()) % 100000}"
    hub = f"{tag}-hub"
    t0 = time.monotonic()
    subprocess.run(["ip", "netns", "add", hub], check=True)
    try:
        for i in range(n):
            ns = f"{tag}-{i}"
            subprocess.run(["ip", "netns", "add", ns], check=True)
            subprocess.run(["ip", "-n", ns, "link", "add", "e0", "type", "veth", "peer", "name", f"p{i}", "netns", hub],
                           check=True)
            subprocess.run(["ip", "-n", ns, "link", "set", "e0", "up"], check=True)
        build = time.monotonic() - t0
    finally:
        t1 = time.monotonic()
        for i in range(n):
            subprocess.run(["ip", "netns", "del", f"{tag}-{i}"], check=False)
        subprocess.run(["ip", "netns", "del", hub], check=False)
    return build, time.monotonic() - t1


def main() -> None:
    console = Console()
    table = Table("hosts", "nodes", "build s", "teardown s", "bare ns build s", "build ratio", "status")
    with tempfile.TemporaryDirectory() as tmp:
        for hosts in (20, 60, 120):
            path = Path(tmp) / f"scale{hosts}.json"
            path.write_text(json.dumps(scale_scenario(hosts, duration=3)))
            out = run_scenario(path, RunOptions(results=Path(tmp) / "results"))
            m = json.loads((out.bundle / "manifest.json").read_text())
            bare_build, _ = bare_namespaces(hosts + 6)
            build = m.get("build_s") or float("nan")
            table.add_row(str(hosts), str(hosts + 12), f"{build:.2f}", f"{m.get('teardown_s', float('nan')):.2f}",
                          f"{bare_build:.2f}", f"{build / bare_build:.1f}x", out.status)
    console.print(table)


if __name__ == "__main__":
    main()
