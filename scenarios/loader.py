"""Scenario files -> validated ``Scenario`` models, or a ``ScenarioError`` naming file, line and field.

The YAML is read with ruamel.yaml's round-trip loader, which remembers the line of every key and list
item; pydantic's error locations are walked through that tree to find the line to blame. Nothing is built
before a scenario passes here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from scenarios.checks import check_scenario
from scenarios.schema import Scenario


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a scenario file."""

    file: str
    line: int  # 1-based
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class ScenarioError(Exception):
    """A scenario file that cannot be run; ``problems`` lists every finding."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def _locate(root: Any, loc: tuple[Any, ...]) -> tuple[int, str]:
    """Line (1-based) and dotted field path of a pydantic error location within the YAML tree."""
    node: Any = root
    line = 1
    parts: list[str] = []
    for idx, key in enumerate(loc):
        last = idx == len(loc) - 1
        if isinstance(node, CommentedMap) and key in node:
            line = node.lc.key(key)[0] + 1
            parts.append(str(key))
            node = node[key]
        elif isinstance(node, CommentedSeq) and isinstance(key, int) and 0 <= key < len(node):
            line = node.lc.item(key)[0] + 1
            parts[-1:] = [f"{parts[-1]}[{key}]"] if parts else [f"[{key}]"]
            node = node[key]
        elif last and isinstance(key, str) and isinstance(node, CommentedMap):
            parts.append(key)  # a missing or unexpected field of the current map
        # otherwise: a union/discriminator tag that is not in the file; skip it
    return line, ".".join(parts)


def _friendly(err: dict[str, Any]) -> str:
    kind = err.get("type", "")
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return "unknown field (not part of the scenario format; see scenarios/README.md)"
    msg = str(err.get("msg", "invalid value"))
    return msg.removeprefix("Value error, ")


def load_scenario(path: str | Path) -> tuple[Scenario, str]:
    """Parse and validate a scenario file. Returns the model and the file's text; raises ScenarioError."""
    path = Path(path)
    fname = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError([Problem(fname, 1, "", f"cannot read the file: {exc}")]) from exc
    return parse_scenario(text, fname), text


def parse_scenario(text: str, fname: str = "<scenario>") -> Scenario:
    """Validate scenario text; ``fname`` is used in messages."""
    yaml = YAML(typ="rt")
    try:
        data = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        problem = (exc.problem or "YAML syntax error").strip()
        raise ScenarioError([Problem(fname, line, "", f"YAML syntax error: {problem}")]) from exc
    except Exception as exc:  # ruamel raises a few unmarked errors (e.g. bad tabs)
        raise ScenarioError([Problem(fname, 1, "", f"YAML syntax error: {exc}")]) from exc
    if data is None:
        raise ScenarioError([Problem(fname, 1, "", "the file is empty: a scenario needs name, duration and nodes")])
    if not isinstance(data, CommentedMap):
        raise ScenarioError([Problem(fname, 1, "", "a scenario must be a YAML mapping (name: ..., nodes: ...)")])
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            line, field = _locate(data, tuple(err["loc"]))
            problems.append(Problem(fname, line, field, _friendly(dict(err))))
        raise ScenarioError(_dedupe(problems)) from None
    found = check_scenario(scenario)
    if found:
        problems = []
        for loc, message in found:
            line, field = _locate(data, loc)
            problems.append(Problem(fname, line, field, message))
        raise ScenarioError(problems)
    return scenario


def _dedupe(problems: list[Problem]) -> list[Problem]:
    """Unions report one error per alternative at the same place; keep the first per (line, field)."""
    seen: set[tuple[int, str]] = set()
    out = []
    for p in problems:
        if (p.line, p.field) not in seen:
            seen.add((p.line, p.field))
            out.append(p)
    return out
