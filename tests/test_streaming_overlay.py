"""The streaming roles running together on loopback (no emulated network): tracker, source and peers as objects in
one asyncio loop (tests/test_streaming_kit.py). Live streaming with deputies, the round-robin baseline, download
mode byte for byte, the tracker serving content itself (to a viewer with a real decoder), a polluting partner,
refused credentials, and the hybrid
fixed-mobile mode (two main nodes sharing the Internet download, local nodes confined to their ad-hoc scope).
Viewer and server figures come from the analysis pipeline's own functions (analysis/metrics.py)."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from analysis.metrics import server_load, viewer_metrics
from nodes import wire
from nodes.peer_link import Queued
from tests.test_streaming_kit import Cluster, free_port


def metrics(c: Cluster, name: str) -> Any:
    return viewer_metrics(pd.DataFrame(c.events(name)))


def test_live_overlay_plays_on_time_and_peers_carry_most_of_it(tmp_path: Path) -> None:
    peers = [f"p{i}" for i in range(6)]

    async def body() -> Cluster:
        c = Cluster(tmp_path, seed=2)
        await c.tracker(deputy_threshold=3)
        await c.source(max_partners=2)
        for i, p in enumerate(peers):
            await c.peer(p, partners=3)
            await asyncio.sleep(0.3 if i < 4 else 0.0)
        await asyncio.sleep(11)
        await c.stop()
        return c

    c = asyncio.run(body())
    from_peers = from_server = 0.0
    for p in peers:
        vm = metrics(c, p)
        assert vm.continuity_index is not None and vm.continuity_index >= 0.95, (p, vm)
        assert vm.chunks_due >= 6 and vm.startup_latency_s is not None and vm.startup_latency_s < 5
        from_peers += vm.bytes_from_peers or 0
        from_server += vm.bytes_from_server or 0
        for rec in c.events(p, "chunk_recv"):
            assert (rec["source"] == "server") == (rec["from"] == "src")
        assert not c.events(p, "node_error") and not c.events(p, "bad_frame")
    assert from_peers > from_server > 0
    # later joins were redirected to a deputy, which answered with the members it knows
    redirected = [p for p in peers if c.events(p, "join_answer")[0]["outcome"] == "redirect"]
    assert redirected and all(c.events(p, "deputy_answer")[0].get("members") for p in redirected)
    # the source: capped partners, server events for the analysis
    src = c.events("src")
    assert max(e["partners"] for e in src if e["event"] == "partner_add") <= 2
    load = server_load(pd.DataFrame(src))
    assert load is not None and load.bytes_sent and load.streams is not None and load.streams.peak <= 2
    assert load.bytes_sent >= from_server  # it sent at least what the peers got from it


def test_round_robin_baseline_streams_and_spreads_requests(tmp_path: Path) -> None:
    async def body() -> Cluster:
        c = Cluster(tmp_path, seed=3)
        await c.tracker()
        await c.source(max_partners=3)
        await c.peer("a", scheduler="round_robin", partners=3)
        await asyncio.sleep(3)
        for p in ("b", "c"):  # they find their first chunks at the source and at a
            await c.peer(p, scheduler="round_robin", partners=3)
        await asyncio.sleep(6)
        await c.stop()
        return c

    c = asyncio.run(body())
    for p in ("a", "b", "c"):
        assert metrics(c, p).continuity_index >= 0.9
    # the chunks made before b and c joined are held by several partners: asked in turn, not from the fastest
    assert any(len({r["to"] for r in c.events(p, "chunk_req")}) >= 2 for p in ("b", "c"))
    # each request says how many partners held the chunk then (the choice the scheduler had): at least the one
    # asked, at most the three partners (whether b or c ever had a choice depends on timing: not asserted)
    reqs = [r for p in ("a", "b", "c") for r in c.events(p, "chunk_req")]
    assert reqs and all(1 <= r["holders"] <= 3 for r in reqs)


def test_download_mode_gives_byte_identical_files(tmp_path: Path) -> None:
    peers = ("d1", "d2", "d3")

    async def body() -> tuple[Cluster, bytes]:
        c = Cluster(tmp_path, seed=4)
        await c.tracker(contents={1: "Holiday video", 2: "Party live"})
        src = await c.source(mode="download", generate_bytes=3_000_000, chunk_bytes=128 * 1024, max_partners=1,
                             title="holiday video")
        assert src.buffer is not None
        original = src.buffer.path.read_bytes()  # type: ignore[union-attr]
        for p in peers:
            await c.peer(p, mode="download", output=str(tmp_path / f"{p}.bin"), search="holiday")
        await c.until("every download", lambda: all(c.events(p, "download_complete") for p in peers), 40)
        await c.stop()
        return c, original

    c, original = asyncio.run(body())
    assert len(original) == 3_000_000
    from_peers = 0
    for p in peers:
        (done,) = c.events(p, "download_complete")
        assert done["ok"] and done["bytes"] == len(original) and done["chunks"] == 23
        assert (tmp_path / f"{p}.bin").read_bytes() == original
        from_peers += sum(r["bytes"] for r in c.events(p, "chunk_recv") if r["source"] == "peer")
        results = c.events(p, "search_result")  # the tracker's titles, and a partner's (the source's title)
        assert [[(e["content"], e["title"]) for e in r["contents"]] for r in results if r["src"] == "tracker"] == [
            [(1, "Holiday video")]]
    # partners answer with what they carry (nothing matches before they know the content's title)
    assert any([(e["content"], e["title"]) for e in r["contents"]] == [(1, "holiday video")]
               for p in peers for r in c.events(p, "search_result") if r["src"] != "tracker")
    assert from_peers > len(original)  # the source had one partner slot: the others got most from peers


def test_tracker_serves_the_content_itself(tmp_path: Path) -> None:
    async def body() -> Cluster:
        c = Cluster(tmp_path, seed=5)
        ip = c.address("trk")
        await c.tracker(serve={"role": "source", "args": {"bitrate": 200_000, "listen_port": free_port(ip),
                                                          "key": "k3y", "bind": ip, "max_partners": 4}})
        await asyncio.sleep(0.5)
        await c.peer("x")
        await c.peer("y", decoder=True)  # the played chunks go through ffmpeg (nodes/decoder.py)
        await asyncio.sleep(6)
        await c.stop()
        return c

    c = asyncio.run(body())
    trk = c.events("trk")
    assert any(e["event"] == "tracker_serves" for e in trk)
    assert any(e["event"] == "join" and e["source"] and e["user"] == "tracker-self" for e in trk)
    assert any(e["event"] == "bytes_sent" and e["bytes"] > 0 for e in trk)
    for p in ("x", "y"):
        got = c.events(p, "chunk_recv")
        assert any(r["from"] == "trk" and r["source"] == "server" for r in got)
        assert metrics(c, p).continuity_index >= 0.9
    (end,) = c.events("y", "decoder_end")
    played = sum(d["bytes"] for d in c.events("y", "chunk_due") if d["played"])
    assert end["frames"] > 25 and played <= end["fed_bytes"] <= played + 4 * 25_004  # at most `bucket` ahead


def test_a_full_source_replaces_its_slowest_partner_by_a_faster_uploader(tmp_path: Path) -> None:
    async def body() -> Cluster:
        c = Cluster(tmp_path, seed=3)
        await c.tracker()
        await c.source(max_partners=2, prefer_uploaders=4)
        only_src = {"partners": 1, "max_partners": 1, "retry_after": 0.5}  # one partner each: the source
        await c.peer("slow1", upload_capacity=500_000, **only_src)
        await c.until("slow1 partners with the source", lambda: c.events("src", "partner_add"))
        await c.peer("slow2", upload_capacity=1_000_000, **only_src)
        await c.until("both slow peers partner with the source",
                      lambda: len(c.events("src", "partner_add")) >= 2)
        await c.peer("same", upload_capacity=1_500_000, **only_src)  # not 4x faster than anyone: refused
        await c.until("the source refuses it",
                      lambda: [r for r in c.events("same", "partner_refused") if r["ip"] == c.hosts["src"]])
        await c.stop("same")  # (it would take the next peer as its partner)
        await c.peer("fast", upload_capacity=10_000_000, **only_src)
        await c.until("the fast peer partners with the source",
                      lambda: [a for a in c.events("src", "partner_add") if a["ip"] == c.hosts["fast"]])
        await asyncio.sleep(0.5)
        await c.stop()
        return c

    c = asyncio.run(body())
    replaced = [d for d in c.events("src", "partner_drop") if d["reason"] == "replaced"]
    assert [d["ip"] for d in replaced] == [c.hosts["slow1"]]  # the slowest, and only it
    assert {r["reason"] for r in c.events("same", "partner_refused") if r["ip"] == c.hosts["src"]} == {"full"}
    assert c.hosts["same"] not in [a["ip"] for a in c.events("src", "partner_add")]
    assert max(a["partners"] for a in c.events("src", "partner_add")) <= 3  # one over while the slowest leaves
    removed = [r for r in c.events("slow1", "partner_drop") if r["ip"] == c.hosts["src"]]
    assert removed and removed[0]["reason"] == "removed by the partner" and removed[0]["code"] == "full"


def test_a_viewer_that_misses_chunks_replaces_its_least_useful_partner(tmp_path: Path) -> None:
    """``refresh_after``: nothing is dropped while the viewer misses nothing; once it has missed chunks, the partner
    it exchanged the fewest chunks with since the last look is dropped (not one partnered for less than
    ``refresh_after``), and the member scheduler finds another partner."""
    picked: dict[str, Any] = {}

    async def body() -> Cluster:
        c = Cluster(tmp_path, seed=4)
        await c.tracker()
        await c.source(max_partners=1)
        await c.peer("a", partners=3)
        await c.until("a partners with the source", lambda: c.events("src", "partner_add"))
        for p in ("b", "c", "d", "e"):
            await c.peer(p, partners=3)
        v = await c.peer("v", partners=3, refresh_after=30.0)
        await c.until("v has three partners and plays",
                      lambda: len(v.partner_links()) == 3 and v.player is not None and v.player.started_at)
        links = sorted(v.partner_links(), key=lambda lk: lk.id)
        assert not any(lk.server for lk in links)  # the source took one partner: a
        now = time.time()
        for lk in links:
            lk.added_at = now - 60
        v._refresh_at = 0.0
        v._refresh_partners(now)  # the first look: marks only
        assert all(lk in v.partner_links() for lk in links)
        # no chunk missed since: nobody is dropped, however little they exchanged
        v._refresh_at = 0.0
        v.player.on_time = v.player.due
        v._refresh_partners(now)
        assert v.partner_links() and all(not lk.closed for lk in links)
        # chunks missed; the partner that exchanged least is the youngest, so the next one goes
        young, least, busy = links
        v.player.due += 3
        young.added_at = now
        for lk, extra in ((young, 0), (least, 1_000), (busy, 5_000)):
            lk.chunks_down += extra
        v._refresh_at = 0.0
        v._refresh_partners(now)
        picked.update(least=least.ip, kept={young.ip, busy.ip})
        await c.until("the dropped partner is replaced",
                      lambda: len(v.partner_links()) == 3 and least.closed)
        await asyncio.sleep(0.3)
        picked["stop"] = time.time()
        await c.stop()
        return c

    c = asyncio.run(body())
    refreshed = [d for d in c.events("v", "partner_drop") if d["reason"] == "refresh"]
    assert [d["ip"] for d in refreshed] == [picked["least"]]
    # the others stayed until the end (when the nodes stop and leave)
    gone = [d for d in c.events("v", "partner_drop") if d["ip"] in picked["kept"] and d["t"] < picked["stop"]]
    assert not gone, gone
    later = [a for a in c.events("v", "partner_add") if a["t"] > refreshed[0]["t"]]
    assert later and later[0]["ip"] != picked["least"]


def test_only_the_deadline_policy_tells_suppliers_its_deadlines(tmp_path: Path) -> None:
    got: dict[str, list[int]] = {}

    async def body() -> Cluster:
        c = Cluster(tmp_path, seed=5)
        await c.tracker()

        def recording(node: Any) -> None:  # what reaches each supplier, by requester
            serve = node._chunk_req

            def record(link: Any, msg: wire.ChunkReq) -> None:
                got.setdefault(link.ip, []).append(msg.due_ms)
                serve(link, msg)

            node._chunk_req = record

        recording(await c.source(max_partners=3))
        recording(await c.peer("dl", partners=1))
        recording(await c.peer("rr", scheduler="round_robin", partners=1))
        recording(await c.peer("told", scheduler="round_robin", tell_deadline=True, partners=1))
        await c.until("all play", lambda: all(c.events(p, "playback_start") for p in ("dl", "rr", "told")))
        await asyncio.sleep(3)
        await c.stop()
        return c

    c = asyncio.run(body())
    # the naive baseline knows no deadlines: its requests carry none, so suppliers cannot refuse or drop them by
    # deadline on its behalf (unless told to: tell_deadline); requests sent while buffering carry none either
    assert got[c.hosts["rr"]] and not any(got[c.hosts["rr"]])
    assert any(got[c.hosts["dl"]]) and any(got[c.hosts["told"]])


def test_buffer_maps_tell_the_upload_rate_and_backlog_and_the_requester_counts_them(tmp_path: Path) -> None:
    told: dict[str, Any] = {}

    async def body() -> Cluster:
        c = Cluster(tmp_path, seed=4)
        await c.tracker()
        await c.source(max_partners=1)
        a = await c.peer("a", upload_capacity=400_000, partners=2)
        await c.until("a plays", lambda: c.events("a", "playback_start"))
        b = await c.peer("b", partners=1, max_partners=1)  # its only partner: a
        await c.until("b plays", lambda: c.events("b", "playback_start"))
        link = await c.until("b's partner a", lambda: next((lk for lk in b.partner_links()
                                                            if lk.ip == c.hosts["a"] and lk.bm is not None), None))
        sup = b.sched.suppliers[link]
        told.update(up_kbps=link.bm.up_kbps, told_rate=sup.told_rate, measured=a.up_rate)
        # a's own view of its backlog is what it tells: a queue of requests of 0.5 s each takes their sum
        a.up_rate = 40_000.0
        lk_b = next(lk for lk in a.partner_links() if lk.ip == c.hosts["b"])
        size = a.info.chunk_bytes
        for i in range(3):
            lk_b.queue.append(Queued(10_000 + i, 10_000 + i, 0.0))
        told["backlog"] = a._backlog_s()
        told["per_chunk"] = size / 40_000.0
        lk_b.queue.clear()
        await c.stop()
        return c

    asyncio.run(body())
    # a says its upload: the line's 400 kbit/s until it has measured its own rate while it had chunks waiting
    assert told["up_kbps"] > 0 and told["told_rate"] == told["up_kbps"] * 125
    if told["measured"] is None:
        assert told["up_kbps"] == 400
    assert told["backlog"] >= 3 * told["per_chunk"]  # three queued chunks (and whatever is still in flight)


def test_a_background_task_that_fails_is_logged_and_the_node_goes_on(tmp_path: Path) -> None:
    async def body() -> Cluster:
        c = Cluster(tmp_path, seed=4)
        await c.tracker()
        await c.source()
        node = await c.peer("p")

        async def broken() -> None:
            raise ValueError("bang")

        node.spawn(broken())
        await c.until("the peer plays on", lambda: c.events("p", "chunk_recv"))
        await c.stop()
        return c

    c = asyncio.run(body())
    errors = c.events("p", "node_error")
    assert [(e["where"], e["error"]) for e in errors] == [
        ("test_a_background_task_that_fails_is_logged_and_the_node_goes_on.<locals>.body.<locals>.broken",
         "ValueError: bang")]


def test_a_polluting_partner_is_rejected_and_dropped(tmp_path: Path) -> None:
    async def body() -> tuple[Cluster, Any]:
        c = Cluster(tmp_path, seed=6)
        await c.tracker()
        await c.source(max_partners=1)
        await c.peer("bad", pollute=1.0, partners=1)
        await c.until("the polluter partners with the source",
                      lambda: c.events("bad", "partner_add") and c.events("bad", "chunk_recv"))
        victim = await c.peer("victim", partners=2)
        await c.until("a rejection", lambda: c.events("victim", "chunk_rejected"), 10)
        await asyncio.sleep(1.5)
        await c.stop()
        return c, victim

    c, victim = asyncio.run(body())
    rejected = c.events("victim", "chunk_rejected")
    assert rejected and all(r["from"] == "bad" and r["reason"] == "bad signature" for r in rejected)
    drops = [d for d in c.events("victim", "partner_drop") if d["reason"] == "corrupt"]
    assert drops and drops[0]["ip"] == c.hosts["bad"]
    assert c.events("bad", "chunk_polluted")
    assert not [r for r in c.events("victim", "chunk_recv") if r["from"] == "bad"]
    key = b"k3y"
    for cid in victim.buffer.chunk_ids():  # nothing stored (so nothing forwarded) fails the source's signature
        chunk = victim.buffer.get(cid)
        assert wire.chunk_signed_by(chunk.message(1), key)
    # it is not taken back as a partner while banned
    assert len([a for a in c.events("victim", "partner_add") if a["ip"] == c.hosts["bad"]]) == 1


def test_wrong_credentials_are_refused(tmp_path: Path) -> None:
    async def body() -> tuple[Cluster, int]:
        c = Cluster(tmp_path, seed=7)
        await c.tracker()
        await c.peer("mallory", secret="guessed")
        code = await asyncio.wait_for(c.tasks.pop("mallory"), 10)
        await c.stop()
        return c, code

    c, code = asyncio.run(body())
    assert code == 3
    (answer,) = c.events("mallory", "join_answer")
    assert answer["outcome"] == "refused" and answer["reason"] == "bad credentials"
    assert any(e["event"] == "auth_fail" and e["reason"] == "wrong proof" for e in c.events("trk"))


def test_hybrid_mains_split_the_internet_download_and_locals_stay_in_scope(tmp_path: Path) -> None:
    adhoc = "127.0.1.0/24"
    mains = {"m1": "127.0.1.11", "m2": "127.0.1.12"}
    locals_ = ("l1", "l2", "l3")

    async def body() -> Cluster:
        c = Cluster(tmp_path, seed=8)
        await c.tracker("trk")
        await c.source(max_partners=4)
        local_users = {"m1": "m1pw", "m2": "m2pw", "l1": "l1pw", "l2": "l2pw", "l3": "l3pw"}
        await c.tracker("ltrk", ip="127.0.1.1", local=True, upstream="trk", upstream_port=c.ports["trk"],
                        upstream_user="u39", upstream_secret="pw39", users=local_users, member_timeout=3.0)
        for m, ip in mains.items():
            await c.peer(m, bind="0.0.0.0", partners=2,
                         hybrid={"role": "main", "scope": [adhoc], "local_tracker": "ltrk",
                                 "local_port": c.ports["ltrk"], "local_user": m, "local_secret": f"{m}pw",
                                 "bind": ip, "local_partners": 3, "share_fallback": None})
        for i, n in enumerate(locals_):
            await c.peer(n, trk="ltrk", ip=f"127.0.1.{21 + i}", user=n, secret=f"{n}pw", partners=3,
                         hybrid={"role": "local", "scope": [adhoc]})
        await c.until("both mains count two mains",
                      lambda: all(any(e["k"] == 2 for e in c.events(m, "hybrid_share")) for m in mains), 15)
        await asyncio.sleep(7)
        await c.stop("m2")  # a main leaves: the other one fetches everything
        await c.until("m1 alone", lambda: c.events("m1", "hybrid_share")[-1]["k"] == 1, 10)
        await asyncio.sleep(5)
        await c.stop()
        return c

    c = asyncio.run(body())
    net = ipaddress.IPv4Network(adhoc)
    for m in mains:
        shares = c.events(m, "hybrid_share")
        two = next(e for e in shares if e["k"] == 2)
        lone = next(e for e in shares if e["k"] == 1 and e["t"] > two["t"]) if m == "m1" else None
        for rec in c.events(m, "chunk_recv"):
            if rec.get("via") == "adhoc":
                continue
            if two["t"] < rec["t"] and (lone is None or rec["t"] < lone["t"] - 1.0):
                # between the agreement and the loss of the other main, only this main's share came from the
                # Internet (requests made a moment before the agreement may still arrive just after it)
                assert rec["chunk"] % 2 == two["i"] or rec["t"] - two["t"] < 1.5, (m, rec, two)
        assert any(r.get("via") == "adhoc" for r in c.events(m, "chunk_recv"))  # the other half: from the other main
    m1_two = next(e for e in c.events("m1", "hybrid_share") if e["k"] == 2)
    m1_alone = c.events("m1", "hybrid_share")[-1]
    assert any(r["t"] > m1_alone["t"] + 1 and r.get("via") != "adhoc" and r["chunk"] % 2 != m1_two["i"]
               for r in c.events("m1", "chunk_recv"))  # after m2 left, m1 fetches the other half too
    for n in locals_:
        adds = c.events(n, "partner_add")
        assert adds and all(ipaddress.IPv4Address(a["ip"]) in net for a in adds)
        for rec in c.events(n, "chunk_recv"):
            assert rec["source"] == "peer" and ipaddress.IPv4Address(c.hosts.get(rec["from"], rec["from"])) in net
        vm = metrics(c, n)
        assert vm.continuity_index is not None and vm.continuity_index >= 0.9, (n, vm)


@pytest.mark.parametrize("role", ["peer", "source"])
def test_roles_validate_their_args(role: str) -> None:
    from nodes import peer_config, source_config

    module = peer_config if role == "peer" else source_config
    base = {"tracker": "trk", "user": "u", "secret": "s"}
    module.Config.model_validate(base)
    with pytest.raises(ValueError):
        module.Config.model_validate(base | {"max_partners": 1, "partners": 3})
    with pytest.raises(ValueError):
        module.Config.model_validate(base | {"hybrid": {"role": "main", "scope": ["10.0.0.0/24"]}})
    with pytest.raises(ValueError):
        module.Config.model_validate(base | {"unknown_field": 1})
    if role == "source":
        with pytest.raises(ValueError):
            module.Config.model_validate(base | {"mode": "download"})  # neither file nor generate_bytes
