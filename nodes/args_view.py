"""A read-only attribute view of a role's ``args`` as the runner wrote them, validated and with every default
filled in (nodes/roles.py ``child_args``): ``cfg.window``, ``cfg.hybrid.scope``, ``cfg.users.get(name)``.

Role programs that take these views import no pydantic (its import and model building cost a live-stream peer
about 11 MB of its 40 MB). A nested object is a view too and also a read-only mapping (so ``users``, ``contents``
and other dict fields keep ``.get``, ``.items()``, ``in``, ``len``); lists and ``None`` are kept as they are. JSON
keys are strings: a ``dict[int, ...]`` field comes back with string keys. A field name that is also a mapping
method (``get``, ``items``, ``keys``, ``values``) must be read as ``cfg["get"]``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

ARGS_FORM = "normalised"
"""A child config's ``args_form`` when the runner wrote its args validated and complete (nodes/roles.py)."""


class Args(Mapping[str, Any]):
    """Read-only view of one JSON object of a normalised config; ``where`` names it in error messages."""

    __slots__ = ("_data", "_where")

    def __init__(self, data: Mapping[str, Any], where: str = "args"):
        object.__setattr__(self, "_data", dict(data))
        object.__setattr__(self, "_where", where)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"{self._where} has no field {name!r}: the runner writes every field of the role's "
                                 f"Config (nodes/roles.py child_args); was this config written by hand or by an "
                                 f"older runner?") from None

    def __getitem__(self, key: str) -> Any:
        value = self._data[key]
        if isinstance(value, dict):
            return Args(value, f"{self._where}.{key}")
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{self._where} is read-only (cannot set {name!r})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{self._where} is read-only (cannot delete {name!r})")

    def __repr__(self) -> str:
        return f"Args({self._data!r})"
