"""The one event-log writer every node role uses.

Each node process writes JSON lines ``{"t": <epoch s>, "node": ..., "role": ..., "proc": ..., "event": ..., ...}``
to its own file in the run bundle (``events/<node>.<proc>.jsonl``). All namespaces share the machine clock, so
timestamps from different nodes compare directly (one-way delay = receive t - send t).
Writes are buffered and flushed at least every ``flush_interval`` seconds and on close, so a killed process
loses at most that much; a truncated last line is tolerated by the analysis.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import IO, Any


class EventLog:
    """Buffered JSON-lines writer bound to one process identity (node, role, proc)."""

    def __init__(self, path: str | Path, *, node: str, role: str, proc: str, flush_interval: float = 0.5):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[str] = open(self.path, "a", buffering=1 << 16)  # noqa: SIM115 - closed in close()
        self._head = {"node": node, "role": role, "proc": proc}
        self._flush_interval = flush_interval
        self._last_flush = time.monotonic()

    def emit(self, event: str, t: float | None = None, **fields: Any) -> None:
        """Write one event; ``t`` defaults to now (epoch seconds)."""
        record = {"t": time.time() if t is None else t, **self._head, "event": event, **fields}
        self._fh.write(json.dumps(record, separators=(",", ":")) + "\n")
        now = time.monotonic()
        if now - self._last_flush >= self._flush_interval:
            self._fh.flush()
            self._last_flush = now

    def flush(self) -> None:
        self._fh.flush()

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.flush()
            self._fh.close()

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
