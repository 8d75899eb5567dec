"""The node roles a scenario may start, by name: the module run as ``python -m <program> --config <json>``, the
module whose pydantic ``Config`` class validates the role's ``args``, and who validates them.

This is a static table of code, not a registry of live objects. Every role's ``args`` are validated in the runner
(scenarios/checks.py, with file and line). Then either:

- ``normalised`` (peer, source, tracker, tracker_probe, probe_sink): the runner writes the child's ``args`` as
  ``Config.model_validate(args).model_dump(mode="json")`` (:func:`child_args`: every default filled in, pydantic
  being the single source of truth for them) and marks the config ``"args_form": "normalised"``; the program gets a
  read-only attribute view of that dict (nodes/args_view.py) and imports no pydantic: its config class lives in a
  module of its own (nodes/peer_config.py ...), imported by the runner and by tests only;
- or not (the other roles): the runner writes the ``args`` as given and the program validates them again with its
  ``Config`` class, defined in the program module itself (``nodes/runtime.py run_role(main, Config)``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nodes.args_view import ARGS_FORM

if TYPE_CHECKING:
    from pydantic import BaseModel


@dataclass(frozen=True)
class Role:
    program: str  # run as python -m <program>
    config: str  # module defining the pydantic ``Config`` of the role's args
    normalised: bool = False  # the runner writes validated args with every default; the program imports no pydantic


ROLES: dict[str, Role] = {
    "probe_sender": Role("nodes.probe_sender", "nodes.probe_sender"),
    "probe_sink": Role("nodes.probe_sink", "nodes.probe_sink_config", normalised=True),
    "crasher": Role("nodes.crasher", "nodes.crasher"),
    "iperf3": Role("nodes.iperf3", "nodes.iperf3"),
    "mgen": Role("nodes.mgen", "nodes.mgen"),
    "stun_server": Role("nodes.stun_server", "nodes.stun_server"),
    "stun_client": Role("nodes.stun_client", "nodes.stun_client"),
    "tracker": Role("nodes.tracker", "nodes.tracker_config", normalised=True),
    "tracker_probe": Role("nodes.tracker_client", "nodes.tracker_probe_config", normalised=True),
    "vod_server": Role("nodes.vod_server", "nodes.vod_server"),
    "vod_client": Role("nodes.vod_client", "nodes.vod_client"),
    "peer": Role("nodes.peer", "nodes.peer_config", normalised=True),
    "source": Role("nodes.source", "nodes.source_config", normalised=True),
}

ROLE_MODULES: dict[str, str] = {name: role.program for name, role in ROLES.items()}
"""role -> program module."""


def role_config_class(role: str) -> type[BaseModel]:
    """The pydantic class that validates a role's ``args`` (imports the config module, not the program)."""
    module = importlib.import_module(ROLES[role].config)
    return module.Config


def child_args(role: str, args: dict[str, Any]) -> dict[str, Any]:
    """What a child's JSON config carries besides its identity: ``{"args": ...}`` as given, or for a normalised role
    ``{"args": <validated, every default filled in>, "args_form": "normalised"}``. Raises pydantic's
    ValidationError on bad args (the runner checked them before, with file and line: scenarios/checks.py)."""
    if not ROLES[role].normalised:
        return {"args": args}
    full = role_config_class(role).model_validate(args).model_dump(mode="json")
    return {"args": full, "args_form": ARGS_FORM}
