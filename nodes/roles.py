"""The node roles a scenario may start, by name: role -> module run as ``python -m <module> --config <json>``.

This is a static table of code, not a registry of live objects. Each role module defines a pydantic
``Config`` class (its ``args`` in the scenario) and a ``main()``.
"""

from __future__ import annotations

import importlib

from pydantic import BaseModel

ROLE_MODULES: dict[str, str] = {
    "probe_sender": "nodes.probe_sender",
    "probe_sink": "nodes.probe_sink",
    "crasher": "nodes.crasher",
    "iperf3": "nodes.iperf3",
    "mgen": "nodes.mgen",
    "stun_server": "nodes.stun_server",
    "stun_client": "nodes.stun_client",
    "tracker": "nodes.tracker",
    "tracker_probe": "nodes.tracker_client",
    "vod_server": "nodes.vod_server",
    "vod_client": "nodes.vod_client",
    "peer": "nodes.peer",
    "source": "nodes.source",
}


def role_config_class(role: str) -> type[BaseModel]:
    """The pydantic class that validates a role's ``args``."""
    module = importlib.import_module(ROLE_MODULES[role])
    return module.Config
