"""The library's party scenario: hybrid fixed-mobile live streaming over 3G and a Bluetooth-like scatternet.

Runs scenarios/library/party.yaml (shortened) and checks chapter 4's promises in the bundle: all twelve phones
play; the nine phones without Internet access get every chunk from addresses inside the scatternet and never
talk to the Internet side (the server's tracker never sees them); the three main nodes split the Internet download
(each fetched a share, none all of it); the 3G bytes are printed against twelve unicast streams; the decoder
behind l9's player decoded frames.
"""

from __future__ import annotations

import ipaddress

import pandas as pd

from analysis.events import load_events
from analysis.metrics import viewer_metrics
from analysis.streaming_accept import address_book
from scenarios.run import RunOptions, run_scenario
from tests.conftest import REPO

PARTY = REPO / "scenarios" / "library" / "party.yaml"
SCOPE = [ipaddress.IPv4Network("10.0.0.0/24"), ipaddress.IPv4Network("10.0.1.0/24")]
MAINS = {"p1", "p2", "p3"}
LOCALS = {f"l{i}" for i in range(1, 10)}
RATE = 200_000


def _in_scope(addr: str) -> bool:
    try:
        ip = ipaddress.IPv4Address(addr.split(":")[0])
    except ValueError:
        return False
    return any(ip in n for n in SCOPE)


def test_party_hybrid_streaming(no_leftovers, results_dir, tmp_path) -> None:
    text = PARTY.read_text()
    assert "duration: 70" in text
    path = tmp_path / "party.yaml"
    path.write_text(text.replace("duration: 70", "duration: 45"))
    out = run_scenario(path, RunOptions(results=results_dir))
    assert out.status == "completed", out.error
    assert not out.crashes, out.crashes
    frame = load_events(out.bundle).frame
    book = address_book(out.bundle)
    peers = frame[frame["role"].astype(str) == "peer"]

    # All twelve phones play.
    cont = {}
    for node, ev in peers.groupby(peers["node"].astype(str), observed=True):
        vm = viewer_metrics(ev)
        cont[node] = vm.continuity_index
        print(f"{node}: continuity {vm.continuity_index}, startup {vm.startup_latency_s} s, due {vm.chunks_due}")
    assert set(cont) == MAINS | LOCALS
    assert all(c is not None and c >= 0.9 for c in cont.values()), cont

    # Piconet-only phones: every chunk from an address of the scatternet, never from the Internet side.
    recv = peers[peers["event"] == "chunk_recv"]
    local_recv = recv[recv["node"].astype(str).isin(LOCALS)]
    senders = set(local_recv["from"].astype(str))
    reverse = {}
    for ip, node in book.items():
        if _in_scope(ip):
            reverse.setdefault(node, []).append(ip)
    outside = [s for s in senders if not (_in_scope(s) or s in reverse)]
    assert not outside, f"local nodes received chunks from outside the scatternet: {outside}"
    assert (local_recv["source"].astype(str) == "peer").all()
    central = frame[(frame["node"].astype(str) == "server") & (frame["role"].astype(str) == "tracker")]
    srcs = set(central.get("src", pd.Series(dtype=str)).dropna().astype(str))
    assert not [s for s in srcs if _in_scope(s)], f"the Internet tracker saw ad-hoc addresses: {srcs}"
    assert not (set(central.get("user", pd.Series(dtype=str)).dropna().astype(str)) & LOCALS)

    # The mains split the Internet download; report 3G bytes against twelve unicast streams.
    main_recv = recv[recv["node"].astype(str).isin(MAINS)]
    via = main_recv.get("via", pd.Series(index=main_recv.index, dtype=object)).astype(str)
    internet = main_recv[via != "adhoc"]
    per_main = internet.groupby(internet["node"].astype(str), observed=True)["bytes"].sum()
    adhoc = main_recv[via == "adhoc"].groupby(main_recv[via == "adhoc"]["node"].astype(str), observed=True)["bytes"]
    print("bytes from the Internet per main:", per_main.to_dict(), "over the piconets:", adhoc.sum().to_dict())
    assert set(per_main.index) == MAINS
    played = peers[peers["event"] == "chunk_due"]
    play_s = played.groupby(played["node"].astype(str), observed=True).size().sum()  # chunk-seconds played
    ratio = per_main.sum() / (play_s * RATE / 8)
    print(f"3G download {per_main.sum() / 1e6:.2f} MB = {ratio:.3f} of 12 unicast streams")
    assert ratio < 0.6, "the mains should not each fetch the whole stream"
    for node in MAINS:
        assert adhoc.sum().get(node, 0) > 0, f"{node} got nothing over the piconets"

    # The real decoder behind l9's player.
    dec = frame[(frame["node"].astype(str) == "l9") & (frame["event"] == "decoder_end")]
    assert not dec.empty and int(dec["frames"].iloc[-1]) > 200, dec.to_dict("records")
    print(f"l9 decoded {int(dec['frames'].iloc[-1])} frames")
