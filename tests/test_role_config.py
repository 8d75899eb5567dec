"""How a role process gets its ``args`` (nodes/roles.py, nodes/runtime.py): the streaming roles take the runner's
validated, completed args and import no pydantic, checked on real processes; a config the runner did not write
is refused with a clear message."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from nodes.args_view import Args
from nodes.roles import ROLES, child_args, role_config_class
from tests.conftest import REPO
from tests.test_streaming_kit import free_port

PYDANTIC_FREE = ("nodes.peer", "nodes.source", "nodes.tracker", "nodes.tracker_client", "nodes.probe_sink")


def test_streaming_role_modules_import_no_pydantic() -> None:
    code = (f"import sys; import {', '.join(PYDANTIC_FREE)}; "
            "print([m for m in sys.modules if m.split('.')[0] in ('pydantic', 'pydantic_core')])")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                         check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("role", sorted(r for r, spec in ROLES.items() if spec.normalised))
def test_the_runner_fills_in_every_field(role: str) -> None:
    minimal: dict[str, Any] = {
        "peer": {"tracker": "trk", "user": "u", "secret": "s"},
        "source": {"tracker": "trk", "user": "u", "secret": "s"},
        "tracker": {"users": {"u": "s"}, "serve": {"role": "peer", "args": {"hybrid": {"role": "local",
                                                                                       "scope": ["10.1.0.0/24"]}}}},
        "tracker_probe": {"tracker": "trk", "user": "u", "secret": "s"},
        "probe_sink": {"port": 6000},
    }[role]
    out = child_args(role, minimal)
    assert out["args_form"] == "normalised"
    cls = role_config_class(role)
    assert set(out["args"]) == set(cls.model_fields)
    assert cls.model_validate(out["args"]).model_dump(mode="json") == out["args"]  # a fixed point
    json.dumps(out)
    if role == "tracker":
        served = out["args"]["serve"]["args"]  # completed too, without the fields the tracker fills in
        assert served["window"] == 120 and served["hybrid"]["local_port"] == 6969 and "tracker" not in served


def test_the_view_is_read_only_and_names_a_missing_field() -> None:
    cfg = Args({"window": 120, "hybrid": {"scope": ["10.0.0.0/24"], "bind": None}, "users": {"a": "x"}})
    assert cfg.window == 120 and cfg.hybrid.scope == ["10.0.0.0/24"] and cfg.hybrid.bind is None
    assert cfg.users.get("a") == "x" and "b" not in cfg.users and dict(cfg.users.items()) == {"a": "x"}
    with pytest.raises(AttributeError, match="args.hybrid has no field 'share'.*runner"):
        _ = cfg.hybrid.share
    with pytest.raises(AttributeError, match="read-only"):
        cfg.window = 60


def _start(folder: Path, name: str, role: str, config: dict[str, Any]) -> subprocess.Popen[bytes]:
    cfg = {"node": name, "proc": role, "role": role, "events": str(folder / f"{name}.jsonl"), "seed": 7,
           "hosts": {}} | config
    path = folder / f"{name}.json"
    path.write_text(json.dumps(cfg))
    return subprocess.Popen([sys.executable, "-m", ROLES[role].program, "--config", str(path)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _events(path: Path, event: str) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("event") == event:
            out.append(rec)
    return out


def test_a_config_the_runner_did_not_complete_is_refused(tmp_path: Path) -> None:
    proc = _start(tmp_path, "p", "peer", {"args": {"tracker": "127.0.0.1", "user": "u", "secret": "s"}})
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert b"not validated and completed by the runner" in err and b"child_args" in err


def test_a_serving_tracker_runs_on_the_completed_args_without_pydantic(tmp_path: Path) -> None:
    """A real tracker process started as the runner starts it, serving a source in the same process (the tracker's
    serve args are completed in the runner too): defaults arrive, and no pydantic is loaded at run time either."""
    port, src_port = free_port(), free_port()
    args = {"users": {"u": "s"}, "port": port, "bind": "127.0.0.1",
            "serve": {"role": "source", "args": {"bitrate": 200_000, "listen_port": src_port, "bind": "127.0.0.1"}}}
    proc = _start(tmp_path, "trk", "tracker", child_args("tracker", args))
    events = tmp_path / "trk.jsonl"
    try:
        end = time.monotonic() + 30
        while time.monotonic() < end and not _events(events, "source_ready") and proc.poll() is None:
            time.sleep(0.1)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
        ready = _events(events, "tracker_ready")
        assert ready and ready[0]["deputy_threshold"] == 50 and ready[0]["contents"] == [1]
        src = _events(events, "source_ready")
        assert src and src[0]["max_partners"] == 8 and src[0]["port"] == src_port
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        assert "pydantic" not in maps  # pydantic_core's extension would be mapped
    finally:
        proc.terminate()
        proc.wait(10)
