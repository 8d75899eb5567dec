"""DynaPeer multicast with Helper peers (section 2.3): see :mod:`nodes.vod.policies.dynapeer_multicast`."""

from __future__ import annotations

from nodes.vod.directory import Decision, Directory
from nodes.vod.policies import dynapeer_multicast

NAME = "dynapeer_helpers"


def decide(d: Directory, r) -> Decision:  # noqa: ANN001 - a policies.Request
    dec = dynapeer_multicast.decide(d, r, helpers_on=True)
    dec.helpers.extend(d.state.pop("attach_list", []))  # type: ignore[arg-type]
    return dec
