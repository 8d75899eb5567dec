"""The library's party scenario: hybrid fixed-mobile live streaming over 3G and a Bluetooth-like scatternet.

Runs scenarios/library/party.yaml (shortened) and checks chapter 4's promises with the figures of
analysis/party_figures.py: all twelve phones play; the nine phones without Internet access get every chunk from
addresses inside the scatternet (never from a server) and the Internet tracker never sees them; the three main
nodes split the Internet download (each fetched a share, the 3G bytes well below twelve unicast streams, printed);
the ffmpeg decoder behind l9's player decoded frames. The run tears down cleanly and draws its picture
(tests/test_library.py does that for the other library scenarios).
"""

from __future__ import annotations

from pathlib import Path

from analysis.party_figures import LOCALS, MAINS, party_figures
from scenarios.run import RunOptions, run_scenario
from tests.conftest import REPO

PARTY = REPO / "scenarios" / "library" / "party.yaml"
FULL, SHORT = "duration: 70", "duration: 40"


def test_party_hybrid_streaming(no_leftovers, results_dir: Path, tmp_path: Path) -> None:
    text = PARTY.read_text()
    assert FULL in text
    path = tmp_path / "party.yaml"
    path.write_text(text.replace(FULL, SHORT))
    out = run_scenario(path, RunOptions(results=results_dir))
    assert out.status == "completed", out.error
    assert not out.crashes, out.crashes
    picture = out.bundle / "topology.png"  # 3G phones, two piconets and the bridge p1, drawn
    assert picture.exists() and picture.stat().st_size > 10_000
    fig = party_figures(out.bundle)
    for line in fig.lines():
        print(line)

    # All twelve phones play, each with at least 15 chunks due.
    assert set(fig.continuity) == set(MAINS) | set(LOCALS)
    assert all(n >= 15 for n in fig.chunks_due.values()), fig.chunks_due
    assert all(c is not None and c >= 0.95 for c in fig.continuity.values()), fig.continuity

    # Piconet-only phones: every chunk from an address of the scatternet, none from a server; the Internet
    # tracker never sees them (nor any ad-hoc address).
    assert fig.local_senders and not fig.outside, fig.outside
    assert fig.local_from_server == 0
    assert not fig.tracker_saw, fig.tracker_saw

    # The mains split the Internet download: each fetched a share and got chunks over the piconets; far less
    # than twelve unicast streams (ideally one stream's worth, 1/12) crossed 3G.
    assert all(fig.internet_bytes[m] > 0 and fig.adhoc_bytes[m] > 0 for m in MAINS), fig
    ratio = fig.ratio
    assert ratio is not None and ratio < 1 / 3, ratio

    # The real decoder behind l9's player.
    assert fig.decoder_frames.get("l9", 0) > 200, fig.decoder_frames
