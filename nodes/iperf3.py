"""iperf3 role: runs the real ``iperf3`` (server or client) inside a node, as an independent measurement tool.

The role starts ``iperf3 ... -J`` as a child process and waits for it. When the child ends, or when the role
is stopped (SIGTERM: the child is sent SIGTERM by its PID, and iperf3 still prints its JSON), the role writes
what iperf3 printed to ``<events dir>/<node>.<proc>.iperf3.json`` and emits one ``iperf3_result`` event per
test with the summary figures.

Which figures are logged. For UDP, loss and RFC 3550 jitter are computed by the *receiver* of the data (the
server, unless ``reverse``). iperf3 3.12 copies the server's jitter and loss counter into the client's
``end.sum``, but mixes them with client-side counts (and with ``--omit`` the client's ``end.sum`` still counts
the losses of the omitted seconds). The client therefore runs with ``--get-server-output`` and the role takes
the receiver's own report: the embedded ``server_output_json`` (normal tests), the client's own JSON
(``reverse``), or the server's JSON (server mode, when the server received). ``iperf3_result`` fields:

- always: ``mode``, ``protocol`` (``udp``/``tcp``), ``test`` (index of the test in the output), ``complete``
  (iperf3 finished the test), ``error`` (iperf3's error text or null), ``exit_code``, ``json`` (file name),
  ``side`` (whose figures: ``receiver`` or ``sender``), ``source`` (the JSON object they were read from),
  ``dst``/``port`` (client), ``reverse``, ``omit``;
- UDP: ``jitter_ms`` (final RFC 3550 jitter), ``lost_packets``, ``packets`` (packets the receiver expected:
  highest sequence number seen, iperf3's ``sum_received.packets``), ``sent_packets`` (sender's count),
  ``lost_percent`` (iperf3's own figure: lost / packets sent), ``out_of_order``, ``bits_per_second``
  (received), ``interval_jitter_ms`` (the receiver's jitter at the end of each non-omitted report interval),
  ``omitted_lost_packets`` (losses the receiver counted during the ``omit`` seconds);
- TCP: ``sent_bps``, ``received_bps``, ``retransmits``.

Arguments (``args``): ``mode`` (``server`` or ``client``); server: ``port``, ``one_off`` (exit after one test);
client: ``dst`` (node name or IPv4), ``port``, ``udp``, ``bitrate`` (bit/s; iperf3's UDP default is 1 Mbit/s),
``length`` (bytes per write / UDP payload), ``duration`` (whole seconds of measurement), ``reverse``,
``omit`` (seconds sent before the measurement starts, iperf3 ``-O``; e.g. to let a timeline event take effect).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import signal
import subprocess
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nodes.runtime import NodeContext, run_role

STOP_GRACE_S = 2.0
"""Seconds the iperf3 child gets to print its JSON after SIGTERM (the runner waits 3 s before SIGKILL)."""

_CLIENT_ONLY = ("dst", "udp", "bitrate", "length", "duration", "reverse", "omit")


class Config(BaseModel):
    """``args`` of an iperf3 process."""

    model_config = ConfigDict(extra="forbid")
    mode: Literal["server", "client"]
    port: int = Field(default=5201, ge=1, le=65535)
    one_off: bool = Field(default=False, description="server: handle one test, then exit (iperf3 -1)")
    dst: str | None = Field(default=None, description="client: server node name or IPv4 address")
    udp: bool = Field(default=False, description="client: UDP instead of TCP")
    bitrate: float | None = Field(default=None, gt=0, description="client: target bit/s (iperf3 -b)")
    length: int | None = Field(default=None, ge=16, le=65507, description="client: bytes per write / datagram (-l)")
    duration: int = Field(default=10, ge=1, le=86400, description="client: seconds of measurement (-t)")
    reverse: bool = Field(default=False, description="client: the server sends (-R)")
    omit: int = Field(default=0, ge=0, le=3600, description="client: seconds sent but left out of the results (-O)")

    @model_validator(mode="after")
    def _mode_fields(self) -> Config:
        if self.mode == "client":
            if not self.dst:
                raise ValueError("a client needs dst")
            if self.one_off:
                raise ValueError("one_off is a server argument")
        else:
            given = [f for f in _CLIENT_ONLY if f in self.model_fields_set]
            if given:
                raise ValueError(f"client arguments given to a server: {', '.join(given)}")
        return self


def iperf3_argv(cfg: Config, dst_ip: str | None) -> list[str]:
    """The iperf3 command line of a process (JSON output always)."""
    if cfg.mode == "server":
        argv = ["iperf3", "-s", "-p", str(cfg.port), "-J"]
        if cfg.one_off:
            argv.append("-1")
        return argv
    argv = ["iperf3", "-c", str(dst_ip), "-p", str(cfg.port), "-J", "--get-server-output",
            "-t", str(cfg.duration)]
    if cfg.udp:
        argv.append("-u")
    if cfg.bitrate is not None:
        argv += ["-b", str(int(round(cfg.bitrate)))]
    if cfg.length is not None:
        argv += ["-l", str(cfg.length)]
    if cfg.reverse:
        argv.append("-R")
    if cfg.omit:
        argv += ["-O", str(cfg.omit)]
    return argv


# --------------------------------------------------------------------------------------------------
# JSON output -> summary (pure functions; analysis.crosscheck uses them too)
# --------------------------------------------------------------------------------------------------


def split_json_documents(text: str) -> tuple[list[dict[str, Any]], str | None]:
    """iperf3's stdout -> the JSON objects it holds (a server prints one per test) and a note on leftovers."""
    decoder = json.JSONDecoder()
    docs: list[dict[str, Any]] = []
    pos, n = 0, len(text)
    note: str | None = None
    while pos < n:
        while pos < n and text[pos].isspace():
            pos += 1
        if pos >= n:
            break
        try:
            value, end = decoder.raw_decode(text, pos)
        except ValueError as exc:
            # Not JSON here (a stray message line, a truncated object): skip to the next line that opens
            # an object, and say what was skipped.
            note = note or f"unparsable output at character {pos}: {exc}"
            nxt = text.find("\n{", pos + 1)
            if nxt < 0:
                break
            pos = nxt + 1
            continue
        if isinstance(value, dict):
            docs.append(value)
        else:
            note = f"JSON value that is not an object at character {pos}"
        pos = end
    return docs, note


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _int(value: Any) -> int | None:
    number = _num(value)
    return None if number is None else int(number)


def _signed(value: Any) -> int | None:
    """A counter iperf3 3.12 prints as an unsigned 64-bit number although it can go negative (per-interval
    loss after out-of-order arrivals, differences across ``--omit``): back to a signed integer."""
    if isinstance(value, bool):
        return None
    number = value if isinstance(value, int) else _int(value)  # no float detour: 2**64 - 5 must stay exact
    if number is not None and number >= 2**63:
        number -= 2**64
    return number


def _protocol(doc: dict[str, Any]) -> str | None:
    proto = _get(doc, "start", "test_start", "protocol")
    return str(proto).lower() if isinstance(proto, str) else None


def _is_client(doc: dict[str, Any]) -> bool | None:
    start = doc.get("start")
    if not isinstance(start, dict):
        return None
    if "connecting_to" in start:
        return True
    if "accepted_connection" in start:
        return False
    return None


def _reverse(doc: dict[str, Any]) -> bool:
    return bool(_get(doc, "start", "test_start", "reverse"))


def receiver_document(doc: dict[str, Any]) -> tuple[dict[str, Any], str, str]:
    """(document with the receiver's figures, side, source) for one test's JSON.

    Client, normal test: the server received; its own report is ``server_output_json`` (from
    ``--get-server-output``), else the client's JSON (whose ``end.sum_received`` carries the server's
    counters). Client with ``-R``, or a server: the document itself; ``side`` says whether its process
    received the data.
    """
    client = _is_client(doc)
    reverse = _reverse(doc)
    if client:
        if reverse:
            return doc, "receiver", "client"
        server = doc.get("server_output_json")
        if isinstance(server, dict) and isinstance(server.get("end"), dict) and server["end"]:
            return server, "receiver", "server_output_json"
        return doc, "receiver", "client end.sum_received (server counters)"
    if client is False:
        return doc, ("sender" if reverse else "receiver"), "server"
    return doc, "unknown", "unknown"


def summarize(doc: dict[str, Any]) -> dict[str, Any]:
    """The ``iperf3_result`` fields of one test's JSON document (missing figures are left out or None)."""
    out: dict[str, Any] = {"protocol": _protocol(doc), "reverse": _reverse(doc)}
    error = doc.get("error")
    out["error"] = str(error) if error is not None else None
    end = doc.get("end")
    out["complete"] = isinstance(end, dict) and bool(end) and error is None
    omit = _int(_get(doc, "start", "test_start", "omit"))
    out["omit"] = omit
    rdoc, side, source = receiver_document(doc)
    out["side"] = side
    out["source"] = source
    if out["protocol"] == "udp":
        rsum = _get(rdoc, "end", "sum_received") or _get(rdoc, "end", "sum") or {}
        ssum = _get(rdoc, "end", "sum") or {}
        out["jitter_ms"] = _num(rsum.get("jitter_ms"))
        out["lost_packets"] = _signed(rsum.get("lost_packets"))
        out["packets"] = _int(rsum.get("packets"))
        out["bits_per_second"] = _num(rsum.get("bits_per_second"))
        out["lost_percent"] = _num(ssum.get("lost_percent"))
        # The sender's count: a client's own end.sum_sent (in a reverse test it reports the server's count).
        # A receiving server's sum_sent mixes the peer's count with its own omit offset (3.12 prints it
        # as a wrapped negative number), so it is not used.
        sent = _int(_get(doc, "end", "sum_sent", "packets")) if _is_client(doc) or _reverse(doc) else None
        out["sent_packets"] = sent if sent is not None and 0 <= sent < 2**53 else None
        ooo = 0
        streams = _get(rdoc, "end", "streams")
        for st in streams if isinstance(streams, list) else []:
            ooo += _int(_get(st, "udp", "out_of_order")) or 0
        out["out_of_order"] = ooo
        jit: list[float] = []
        omitted_lost: int | None = 0
        intervals = rdoc.get("intervals")
        for iv in intervals if isinstance(intervals, list) else []:
            s = _get(iv, "sum")
            if not isinstance(s, dict) or s.get("sender"):
                continue
            if s.get("omitted"):
                lost = s.get("lost_packets")
                if isinstance(lost, int) and omitted_lost is not None:
                    omitted_lost += _signed(lost) or 0
                else:  # e.g. -5 printed as 2**64 - 5 and rounded through a double: not recoverable
                    omitted_lost = None
                continue
            j = _num(s.get("jitter_ms"))
            if j is not None:
                jit.append(j)
        out["interval_jitter_ms"] = jit
        # Losses in the omitted seconds (-O): counted by the receiver, left out of lost_packets. A client's
        # end.sum holds the receiver's whole loss counter (3.12 subtracts the client's own, zero, omit count).
        if source == "server_output_json" and out["lost_packets"] is not None:
            total = _signed(_get(doc, "end", "sum", "lost_packets"))
            omitted_lost = None if total is None else total - out["lost_packets"]
        out["omitted_lost_packets"] = omitted_lost if out["omit"] else 0
    elif out["protocol"] == "tcp":
        out["sent_bps"] = _num(_get(doc, "end", "sum_sent", "bits_per_second"))
        out["received_bps"] = _num(_get(doc, "end", "sum_received", "bits_per_second"))
        out["retransmits"] = _int(_get(doc, "end", "sum_sent", "retransmits"))
    return out


# --------------------------------------------------------------------------------------------------
# The role
# --------------------------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the role process dies (e.g. SIGKILL), so iperf3 never lingers."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


async def stop_child(proc: asyncio.subprocess.Process, grace: float = STOP_GRACE_S) -> None:
    """SIGTERM the child by its PID, then SIGKILL it if it has not exited after ``grace`` seconds."""
    if proc.returncode is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        await asyncio.wait_for(proc.wait(), grace)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


def write_output(path: Path, text: str, docs: list[dict[str, Any]]) -> None:
    """One test: its JSON object; several (a server): a JSON array; nothing parsable: the raw text."""
    if len(docs) == 1:
        path.write_text(json.dumps(docs[0], indent=1))
    elif docs:
        path.write_text(json.dumps(docs, indent=1))
    else:
        path.write_text(text)


async def main(ctx: NodeContext, cfg: Config) -> int:
    dst_ip = ctx.resolve(cfg.dst) if cfg.dst else None
    argv = iperf3_argv(cfg, dst_ip)
    out_path = Path(ctx.log.path).parent / f"{ctx.node}.{ctx.proc}.iperf3.json"
    proc = await asyncio.create_subprocess_exec(*argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                                preexec_fn=_die_with_parent)
    ctx.log.emit("iperf3_start", mode=cfg.mode, argv=argv, pid=proc.pid, dst=dst_ip, port=cfg.port)
    ctx.log.flush()
    assert proc.stdout is not None
    reader = asyncio.ensure_future(proc.stdout.read())
    stopped = False
    try:
        await proc.wait()
    except asyncio.CancelledError:
        stopped = True
        await stop_child(proc)
        raise
    finally:
        try:
            raw = await asyncio.wait_for(reader, STOP_GRACE_S)
        except (TimeoutError, asyncio.CancelledError, OSError):
            raw = b""
        _report(ctx, cfg, out_path, raw.decode(errors="replace"), proc.returncode, dst_ip, stopped)
    return 0 if proc.returncode == 0 else 1


def _report(ctx: NodeContext, cfg: Config, path: Path, text: str, code: int | None, dst_ip: str | None,
            stopped: bool) -> None:
    docs, note = split_json_documents(text)
    write_output(path, text, docs)
    common: dict[str, Any] = {"mode": cfg.mode, "exit_code": code, "json": path.name, "stopped": stopped}
    if cfg.mode == "client":
        common.update(dst=dst_ip, port=cfg.port)
    else:
        common.update(port=cfg.port)
    if not docs:
        ctx.log.emit("iperf3_result", **common, test=0, complete=False,
                     error=note or ("no output" if not text.strip() else "no JSON object in the output"))
        return
    for i, doc in enumerate(docs):
        fields = summarize(doc)
        if note and i == len(docs) - 1:
            fields["note"] = note
        ctx.log.emit("iperf3_result", **common, test=i, **fields)


if __name__ == "__main__":
    run_role(main, Config)
