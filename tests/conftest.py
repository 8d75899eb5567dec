"""Shared test fixtures: root check, a leftover audit after every test, scenario helpers."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from topologies.multicast import kernel_multicast_routing

REPO = Path(__file__).resolve().parent.parent


def machine_leftovers() -> dict[str, list[str]]:
    """Emulation leftovers in the root namespace: veths, bridges, named namespaces, mnexec processes, run records."""

    def lines(argv: list[str]) -> list[str]:
        out = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
        return [ln for ln in out.splitlines() if ln.strip()]

    veth = lines(["ip", "-o", "link", "show", "type", "veth"])
    bridges = [b for b in lines(["ip", "-o", "link", "show", "type", "bridge"]) if "docker0" not in b]
    netns = lines(["ip", "netns", "list"])
    mnexec = lines(["pgrep", "-x", "mnexec"])
    state_dir = Path(os.environ.get("STREAMBED_STATE_DIR", "/run/streambed"))
    states = [str(p) for p in state_dir.glob("*.json")] if state_dir.is_dir() else []
    own_ns = os.readlink("/proc/self/ns/net")
    foreign = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if os.readlink(proc / "ns" / "net") != own_ns and proc.name != "1":
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:120]
                foreign.append(f"{proc.name} {cmd}")
        except OSError:
            continue
    found = {"processes in other namespaces": foreign, "veth": veth, "bridges": bridges, "netns": netns,
             "mnexec": mnexec, "run records": states}
    return {k: v for k, v in found.items() if v}


@pytest.fixture
def no_leftovers():
    """Fail the test if it leaves anything of an emulated network behind."""
    before = machine_leftovers()
    yield
    after = machine_leftovers()
    new = {k: [x for x in v if x not in before.get(k, [])] for k, v in after.items()}
    new = {k: v for k, v in new.items() if v}
    assert not new, f"leftovers after the test: {new}"


MULTICAST_ROUTING_MISSING = kernel_multicast_routing()
needs_multicast_routing = pytest.mark.skipif(MULTICAST_ROUTING_MISSING is not None,
                                             reason=MULTICAST_ROUTING_MISSING or "")
"""For tests whose network has multicast routers (smcroute, pimd): they skip, with the reason, on a kernel
without IPv4 multicast routing; what does not need routing is covered by tests that run there."""


def pytest_collection_modifyitems(config, items):
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="streambed tests build network namespaces and need root")
        for item in items:
            item.add_marker(skip)


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    return tmp_path / "results"
