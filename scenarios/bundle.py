"""The run bundle on disk: its folder (never reused), the manifest of what ran, and small JSON-lines logs.

Layout: docs/bundle.md. The manifest is rewritten at each phase, so an unfinished run always says so
(status ``running`` with the last phase reached, or ``interrupted`` / ``failed``).
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def _cmd(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc.__class__.__name__})"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr).strip() else ""


def versions() -> dict[str, str]:
    """Versions of what a run depends on."""

    def pkg(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    return {
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "mininet": pkg("mininet"),
        "mnexec": _cmd(["mnexec", "-v"]),
        "iproute2": _cmd(["ip", "-V"]),
        "iptables": _cmd(["iptables", "--version"]),
        "pydantic": pkg("pydantic"),
        "netfilterqueue": pkg("NetfilterQueue"),
    }


def git_state() -> dict[str, Any]:
    commit = _cmd(["git", "-C", str(REPO), "rev-parse", "HEAD"])
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, check=False).stdout.strip()
    return {"commit": commit, "dirty": bool(dirty)}


def new_unique_dir(base: Path, name: str) -> Path:
    """A fresh folder ``base/name`` (``name-1``, ``name-2``, ... if it exists already); never reuses one."""
    base.mkdir(parents=True, exist_ok=True)
    for n in range(1000):
        path = base / (name + (f"-{n}" if n else ""))
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise RuntimeError(f"cannot create a new folder for {name} in {base}")


def new_bundle_dir(results: Path, scenario: str, seed: int) -> Path:
    """A fresh folder ``results/<scenario>/<UTC timestamp>-s<seed>/``."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")[:-4] + "Z"
    return new_unique_dir(Path(results) / scenario, f"{stamp}-s{seed}")


class Manifest:
    """manifest.json, rewritten atomically whenever it changes."""

    def __init__(self, path: Path, data: dict[str, Any]):
        self.path = path
        self.data = data
        self.save()

    def update(self, **fields: Any) -> None:
        self.data.update(fields)
        self.save()

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=str))
        tmp.replace(self.path)


def utc_now() -> dict[str, Any]:
    now = time.time()
    return {"utc": dt.datetime.fromtimestamp(now, dt.UTC).isoformat(), "epoch": now}


class JsonLines:
    """Append-only JSON-lines file for the runner's own records (timeline, processes)."""

    def __init__(self, path: Path):
        self.path = path

    def write(self, **record: Any) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, default=str) + "\n")
