"""The party scenario's figures (scenarios/library/party.yaml, hybrid fixed-mobile live streaming) from a bundle.

- continuity per phone (CoolStreaming continuity index of :func:`analysis.metrics.viewer_metrics`: chunks on time
  / chunks due, counted from playback start), with startup latency and chunks due;
- the 3G download: chunk bytes the main nodes received from the Internet side (``chunk_recv`` without
  ``via: adhoc``), per main, against what twelve unicast streams would have carried (every phone's chunks due,
  each the size of a chunk of the stream), and the mains' bytes over the piconets;
- the local (piconet-only) phones' chunk senders, resolved to addresses with each process's host table, and the
  ones outside the ad-hoc scope (must be none), plus chunks they got from a server (must be none);
- what the Internet tracker saw of the ad-hoc side (addresses in scope, local users: must be none);
- frames decoded by the ffmpeg decoder behind a player (``decoder_end``).

``python -m analysis.party_figures <bundle>`` prints them.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis.events import load_events
from analysis.metrics import viewer_metrics

SCOPE = ("10.0.0.0/24", "10.0.1.0/24")
MAINS = ("p1", "p2", "p3")
LOCALS = tuple(f"l{i}" for i in range(1, 10))
TRACKER_NODE = "server"


@dataclass
class PartyFigures:
    """What tests/test_party.py checks and the issue asks to report."""

    continuity: dict[str, float | None] = field(default_factory=dict)
    startup_s: dict[str, float | None] = field(default_factory=dict)
    chunks_due: dict[str, int] = field(default_factory=dict)
    internet_bytes: dict[str, int] = field(default_factory=dict)  # per main, chunks from the Internet side
    adhoc_bytes: dict[str, int] = field(default_factory=dict)  # per main, chunks over the piconets
    chunk_bytes: float = 0.0  # mean size of one chunk of the stream
    unicast_bytes: float = 0.0  # twelve unicast streams: every phone's chunks due x chunk_bytes
    local_senders: set[str] = field(default_factory=set)  # addresses the local phones got chunks from
    outside: list[str] = field(default_factory=list)  # of those, the ones outside the ad-hoc scope
    local_from_server: int = 0  # chunks the local phones got with source "server"
    tracker_saw: list[str] = field(default_factory=list)  # ad-hoc addresses / local users at the Internet tracker
    decoder_frames: dict[str, int] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        """3G download bytes / twelve unicast streams' bytes."""
        return sum(self.internet_bytes.values()) / self.unicast_bytes if self.unicast_bytes else None

    def lines(self) -> list[str]:
        out = []
        for node in sorted(self.continuity, key=lambda n: (n[0] != "p", int(n[1:]) if n[1:].isdigit() else 0)):
            c, s = self.continuity[node], self.startup_s.get(node)
            out.append(f"{node}: continuity {'-' if c is None else f'{c:.3f}'}, startup "
                       f"{'-' if s is None else f'{s:.1f}'} s, chunks due {self.chunks_due.get(node, 0)}")
        mb = {k: round(v / 1e6, 2) for k, v in sorted(self.internet_bytes.items())}
        ad = {k: round(v / 1e6, 2) for k, v in sorted(self.adhoc_bytes.items())}
        out.append(f"3G download per main (MB): {mb}; mains over the piconets (MB): {ad}")
        r = self.ratio
        out.append(f"3G download {sum(self.internet_bytes.values()) / 1e6:.2f} MB / 12 unicast streams "
                   f"{self.unicast_bytes / 1e6:.2f} MB = {'-' if r is None else f'{r:.3f}'}")
        out.append(f"local phones got chunks from {sorted(self.local_senders)}; outside the scope: {self.outside}; "
                   f"from a server: {self.local_from_server}")
        out.append(f"the Internet tracker saw of the ad-hoc side: {self.tracker_saw}")
        out.append(f"decoded frames: {self.decoder_frames}")
        return out


def in_scope(addr: str, scope: tuple[str, ...] = SCOPE) -> bool:
    try:
        ip = ipaddress.IPv4Address(addr.split(":")[0])
    except ValueError:
        return False
    return any(ip in ipaddress.IPv4Network(n) for n in scope)


def _hosts(bundle: Path) -> dict[str, dict[str, str]]:
    """Host table (name -> address) of each node's peer process: chunk senders are logged by name when known."""
    tables: dict[str, dict[str, str]] = {}
    for path in sorted((bundle / "config").glob("*.peer.json")):
        raw = json.loads(path.read_text())
        tables[str(raw.get("node", path.name.split(".")[0]))] = dict(raw.get("hosts", {}))
    return tables


def _col(frame: pd.DataFrame, name: str) -> pd.Series:
    return frame[name] if name in frame else pd.Series(index=frame.index, dtype=object)


def party_figures(bundle: str | Path, scope: tuple[str, ...] = SCOPE, mains: tuple[str, ...] = MAINS,
                  locals_: tuple[str, ...] = LOCALS, tracker_node: str = TRACKER_NODE) -> PartyFigures:
    """Compute :class:`PartyFigures` from a run bundle of the party scenario."""
    bundle = Path(bundle)
    frame = load_events(bundle).frame
    fig = PartyFigures()
    peers = frame[frame["role"].astype(str) == "peer"]
    node_of = peers["node"].astype(str)
    for node, ev in peers.groupby(node_of, observed=True):
        vm = viewer_metrics(ev)
        fig.continuity[str(node)] = vm.continuity_index
        fig.startup_s[str(node)] = vm.startup_latency_s
        fig.chunks_due[str(node)] = vm.chunks_due

    recv = peers[peers["event"] == "chunk_recv"]
    rnode = recv["node"].astype(str)
    via = _col(recv, "via").astype(str)
    for node in mains:
        mine = recv[(rnode == node).to_numpy()]
        adhoc = (via[mine.index] == "adhoc").to_numpy()
        fig.internet_bytes[node] = int(mine.loc[~adhoc, "bytes"].sum())
        fig.adhoc_bytes[node] = int(mine.loc[adhoc, "bytes"].sum())
    fig.chunk_bytes = float(recv["bytes"].mean()) if len(recv) else 0.0
    fig.unicast_bytes = sum(fig.chunks_due.values()) * fig.chunk_bytes

    hosts = _hosts(bundle)
    local_recv = recv[rnode.isin(locals_).to_numpy()]
    for node, sender in zip(local_recv["node"].astype(str), _col(local_recv, "from").astype(str), strict=True):
        fig.local_senders.add(hosts.get(node, {}).get(sender, sender))
    fig.outside = sorted(s for s in fig.local_senders if not in_scope(s, scope))
    fig.local_from_server = int((_col(local_recv, "source").astype(str) != "peer").sum())

    central = frame[(frame["node"].astype(str) == tracker_node) & (frame["role"].astype(str) == "tracker")]
    srcs = set(_col(central, "src").dropna().astype(str))
    users = set(_col(central, "user").dropna().astype(str))
    fig.tracker_saw = sorted([s for s in srcs if in_scope(s, scope)] + [u for u in users if u in locals_])

    dec = frame[frame["event"] == "decoder_end"]
    for node, ev in dec.groupby(dec["node"].astype(str), observed=True):
        fig.decoder_frames[str(node)] = int(ev["frames"].iloc[-1])
    return fig


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", type=Path)
    args = ap.parse_args(argv)
    for line in party_figures(args.bundle).lines():
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
