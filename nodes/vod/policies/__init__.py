"""The delivery policies of the VoD server, one small module each, all with the same entry point
``decide(directory, request) -> Decision`` (see :mod:`nodes.vod.directory`). They mirror the mechanisms of
:mod:`analysis.vod_sim` (its docstring states them), in seconds and with stripes instead of fractions.

:data:`POLICIES` maps the names a scenario uses to the modules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

from nodes.vod.directory import Decision, Directory


@dataclass(frozen=True)
class Request:
    """A session asking for a video: ``t`` is the wall-clock time (s) the server got it."""

    session: int
    video: int
    t: float
    ip: str
    port: int
    multicast: bool


Decide = Callable[[Directory, Request], Decision]


def _modules() -> dict[str, ModuleType]:
    from nodes.vod.policies import (
        chaining,
        dynapeer_helpers,
        dynapeer_multicast,
        dynapeer_unicast,
        patching,
        pn2pm,
        promise,
        unicast,
    )

    return {m.NAME: m for m in (unicast, patching, chaining, promise, pn2pm, dynapeer_unicast, dynapeer_multicast,
                                dynapeer_helpers)}


POLICIES: tuple[str, ...] = ("unicast", "patching", "chaining", "promise", "pn2pm", "dynapeer_unicast",
                             "dynapeer_multicast", "dynapeer_helpers")
"""Every policy the emulated server knows (the names of :mod:`analysis.vod_model`)."""


def policy(name: str) -> Decide:
    """The ``decide`` function of a policy by name."""
    mods = _modules()
    if name not in mods:
        raise ValueError(f"unknown VoD policy {name!r}; known: {', '.join(POLICIES)}")
    return mods[name].decide


def peer_share(name: str, upload_share: float) -> float:
    """The share of a stream a peer uploads under a policy: Chaining and Pn2Pm assume the play rate."""
    return 1.0 if name in ("chaining", "pn2pm") else upload_share
