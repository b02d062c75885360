"""``emu plan --format json`` of every shipped topology and lab, on every backend, equals its golden file.

The golden files (tests/golden/plans/<topology>.<backend>.json) were written by the plan before the architecture's
restructuring; a change that alters a plan on purpose updates them in its own commit (regenerate with
``python -m emu plan TOPOLOGY --backend B --format json > tests/golden/plans/NAME.B.json``), so every difference
in a plan is a decision someone made, never an accident of a refactoring.
"""

from pathlib import Path
from typing import List, Tuple

import pytest

from emu.plan.build import build_plan
from emu.plan.render import to_json
from emu.spec.load import load

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden" / "plans"


def cases() -> List[Tuple[str, Path, str]]:
    out = []
    for golden in sorted(GOLDEN.glob("*.json")):
        stem, backend = golden.stem.rsplit(".", 1)
        if stem.startswith("lab-"):
            topology = ROOT / "labs" / stem[len("lab-") :] / "topology.yaml"
        else:
            topology = ROOT / "topologies" / f"{stem}.yaml"
        out.append((golden.name, topology, backend))
    return out


def test_every_shipped_topology_has_golden_plans() -> None:
    topologies = {p.stem for p in (ROOT / "topologies").glob("*.yaml")}
    topologies |= {f"lab-{p.parent.name}" for p in (ROOT / "labs").glob("*/topology.yaml")}
    covered = {name.rsplit(".", 2)[0] for name, _, _ in cases()}
    assert topologies <= covered, f"no golden plans for {sorted(topologies - covered)}"


@pytest.mark.parametrize("name,topology,backend", cases(), ids=[c[0] for c in cases()])
def test_plan_equals_its_golden_file(name: str, topology: Path, backend: str) -> None:
    spec, _warnings = load([str(topology)])
    assert to_json(build_plan(spec, backend=backend)) == (GOLDEN / name).read_text()
