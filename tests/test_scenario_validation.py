"""Bad scenarios stop with exit status 2 and a message naming file, line and field; nothing is built."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from scenarios.loader import ScenarioError, load_scenario, parse_scenario
from tests.conftest import REPO

MALFORMED = REPO / "tests" / "malformed"

# file -> (line, field path (substring), words the message must contain)
CASES = {
    "wrong_type.yaml": (5, "nodes[0].processes", "list"),
    "unknown_field.yaml": (9, "links[0].bandwidth", "unknown field"),
    "dangling_endpoint.yaml": (8, "links[1].b", "not a node"),
    "duplicate_names.yaml": (6, "nodes[2].name", "duplicate node name"),
    "negative_rate.yaml": (10, "links[0].a_to_b.rate", "greater than 0"),
    "loss_over_100.yaml": (9, "links[0].loss", "between 0 and 100"),
    "event_after_end.yaml": (10, "timeline[1].at", "after the end"),
    "unknown_role.yaml": (7, "nodes[0].processes[1].role", "unknown process role"),
    "yaml_syntax.yaml": (6, "", "YAML syntax error"),
    "empty.yaml": (1, "", "empty"),
}


@pytest.mark.parametrize("fname", sorted(CASES))
def test_malformed_scenario_names_file_line_field(fname: str) -> None:
    line, field, words = CASES[fname]
    path = MALFORMED / fname
    with pytest.raises(ScenarioError) as exc:
        load_scenario(path)
    first = exc.value.problems[0]
    assert first.file == str(path)
    assert first.line == line, str(exc.value)
    assert field in first.field, str(exc.value)
    assert words in first.message, str(exc.value)


@pytest.mark.parametrize("fname", sorted(CASES))
def test_invoke_validate_exits_2_with_location(fname: str) -> None:
    """The command a user types: exit status 2 and 'file:line: field' on the screen."""
    line, field, _ = CASES[fname]
    out = subprocess.run([sys.executable, "-m", "invoke", "validate", str(MALFORMED / fname)], cwd=REPO,
                         capture_output=True, text=True, env={"COLUMNS": "300", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 2, out.stdout + out.stderr
    text = " ".join((out.stdout + out.stderr).split())
    assert f"{fname}:{line}" in text
    assert field in text


def test_invoke_run_of_bad_scenario_builds_nothing(no_leftovers: None, tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "invoke", "run", str(MALFORMED / "dangling_endpoint.yaml")],
                         cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 2
    assert not (REPO / "results" / "dangling").exists()


def test_library_scenarios_validate() -> None:
    for path in sorted((REPO / "scenarios" / "library").glob("*.yaml")):
        sc, _ = load_scenario(path)
        assert sc.description, f"{path.name} needs a description"


def test_units_and_directions() -> None:
    sc = parse_scenario("""
name: u
duration: 1.5min
nodes: [{name: a}, {name: b}]
links:
  - {a: a, b: b, rate: 8mbit, delay: 10ms, loss: 2%, a_to_b: {rate: 1mbit, loss: {model: gilbert, p: 1%, r: 25%}}}
""")
    assert sc.duration == 90
    up, down = sc.links[0].resolved("a"), sc.links[0].resolved("b")
    assert up.rate == 1e6 and down.rate == 8e6
    assert up.delay == down.delay == 0.01
    assert down.loss is not None and down.loss.model == "random" and down.loss.p == pytest.approx(0.02)
    assert up.loss is not None and up.loss.model == "gilbert"
    assert up.loss.mean_loss() == pytest.approx(0.01 / 0.26)


def test_process_args_are_validated_per_role() -> None:
    with pytest.raises(ScenarioError) as exc:
        parse_scenario("""
name: r
duration: 5
nodes:
  - name: a
    processes:
      - role: probe_sender
        args: {dst: b, rate_pps: 10, sizee: 100}
""", "x.yaml")
    p = exc.value.problems[0]
    assert p.line == 8 and "args.sizee" in p.field


BLOCKS = """name: b
duration: 10
isps:
  - {name: ispa}
  - {name: ispb}
homes:
  - {name: h1, isp: ispa, access: adsl, nat: port-restricted}
nodes:
  - {name: srv}
  - {name: m}
  - {name: s1}
piconets:
  - {name: pn, master: m, members: [s1]}
links:
  - {a: srv, b: ispa_c}
"""


@pytest.mark.parametrize("old,new,line,field,words", [
    ("nat: port-restricted", "nat: cone", 7, "homes[0].nat", "Input should be"),
    ("access: adsl,", "access: adsl3,", 7, "homes[0].access", "Input should be"),
    ("master: m,", "master: m, profile: bt-9,", 13, "piconets[0].profile", "Input should be"),
    ("master: m,", "master: m, slots: 9,", 13, "piconets[0].slots", "unknown field"),
    ("isp: ispa, access", "isp: ispc, access", 7, "homes[0].isp", "no ISP named 'ispc'"),
    ("  - {a: srv, b: ispa_c}", "  - {a: srv, b: ispa_c}\n  - {a: srv, b: ispb_a1}", 16, "links[1]",
     "placed in two ISPs"),
])
def test_building_block_errors(old: str, new: str, line: int, field: str, words: str) -> None:
    assert old in BLOCKS
    with pytest.raises(ScenarioError) as exc:
        parse_scenario(BLOCKS.replace(old, new), "blocks.yaml")
    p = exc.value.problems[0]
    assert (p.line, p.field) == (line, field), str(exc.value)
    assert words in p.message, str(exc.value)


def test_building_blocks_expand() -> None:
    sc = parse_scenario(BLOCKS, "blocks.yaml")
    names = {n.name for n in sc.nodes}
    assert {"bb", "ispa_c", "ispa_a1", "ispb_c", "h1_gw", "h1_sw", "h1_1", "pn_bt"} <= names
    line = sc.link("h1_line").resolved("h1_gw")
    assert line.rate == 1e6 and line.linklayer == "atm"
    assert sc.node("h1_gw").nat is not None and sc.node("h1_gw").nat.type == "port-restricted"


def test_exported_json_schema_is_current() -> None:
    """scenarios/scenario.schema.json (for editors) is what `invoke schema` writes from the model today."""
    import json

    from scenarios.schema import Scenario

    on_disk = json.loads((REPO / "scenarios" / "scenario.schema.json").read_text())
    assert on_disk == json.loads(json.dumps(Scenario.model_json_schema())), "run `invoke schema` and commit it"
