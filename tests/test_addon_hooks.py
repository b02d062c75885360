"""The add-on contract (docs/architecture.md): a module named in ``emu.registry.ADDONS`` is called at every stage.

A small add-on made here, registered for these tests only, uses each hook: its settings under ``addons``, a kind
of its own in manifests, the manifests it adds (a pod), its plan fragment, and the live hooks (a device it
creates in a node at start, the plan changes it is told about, its stop). The spec and plan stages need no root;
the live stage builds a real two-node cluster.
"""

import dataclasses
import sys
import textwrap
import types
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
from conftest import ROOT_PROBLEM, requires_root

from emu import registry
from emu.plan.build import build_plan
from emu.plan.render import to_json
from emu.spec.errors import SpecError
from emu.spec.load import load

CALLS: List[Any] = []


@dataclasses.dataclass(frozen=True)
class Fragment:
    greeting: str
    notes: tuple
    pods: tuple


def _read_settings(reader: Any, value: Dict[str, Any], path: tuple) -> str:
    data = reader.mapping(value, path, {"greeting"})
    return reader.string(data.get("greeting"), path + ("greeting",), "hello") or "hello"


def _read_object(reader: Any, kind: str) -> Any:
    data = reader.mapping(reader.doc.data, (), {"apiVersion", "kind", "text"})
    return reader.string(data.get("text"), ("text",))


def _manifests(settings: str, cluster: Dict[str, Any]) -> List[Dict[str, Any]]:
    pod = {"name": "probe-agent", "namespace": "kube-system", "labels": {"app": "probe"}}
    spec = {"containers": [{"name": "agent", "command": ["sleep", "infinity"]}]}
    return [{"apiVersion": "v1", "kind": "Pod", "metadata": pod, "spec": spec}]


def _plan(spec: Any, plan: Any, settings: str) -> Any:
    fragment = Fragment(settings, spec.objects_of("ProbeNote"), tuple(p.name for p in plan.pods))
    return dataclasses.replace(plan, addons=tuple((n, fragment if n == "probe" else f) for n, f in plan.addons))


def _start(live: Any, plan: Any) -> None:
    CALLS.append(("start", plan.addon("probe").pods))
    live.run("node-1", "probe: a device", ["ip", "link", "add", "probe0", "type", "bridge"])


def _update(live: Any, old: Any, new: Any) -> None:
    CALLS.append(("update", old.addon("probe").pods, new.addon("probe").pods))


def _stop(live: Any) -> None:
    CALLS.append(("stop",))


PROBE = types.ModuleType("probe_addon")
PROBE.__dict__.update(
    NAME="probe",
    DEFAULT_ENABLED=False,
    KERNEL_NEEDS=(),
    TOOLS=(),
    KINDS={"ProbeNote": "test.emu/v1"},
    default_settings=lambda: "hello",
    read_settings=_read_settings,
    read_object=_read_object,
    manifests=_manifests,
    plan=_plan,
    start=_start,
    update=_update,
    stop=_stop,
)


@pytest.fixture(autouse=True)
def probe_registered() -> Iterator[None]:
    """The probe add-on alone in the registry (the shipped ones, such as cluster DNS, are left out here)."""
    shipped = dict(registry.ADDONS)
    registry.ADDONS.clear()
    registry.ADDONS["probe"] = PROBE
    CALLS.clear()
    try:
        yield
    finally:
        registry.ADDONS.clear()
        registry.ADDONS.update(shipped)


def topology(tmp_path: Path, addons: str, name: str = "addon") -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            apiVersion: emu/v1
            kind: Cluster
            name: {name}
            nodes: [node-1, node-2]
            {addons}
            ---
            apiVersion: test.emu/v1
            kind: ProbeNote
            text: remember me
            ---
            apiVersion: v1
            kind: Pod
            metadata: {{name: app}}
            spec: {{containers: [{{name: app, command: [sleep, infinity]}}]}}
            """
        )
    )
    return path


def test_an_addon_that_is_not_enabled_adds_nothing(tmp_path: Path) -> None:
    spec, _ = load([str(topology(tmp_path, ""))])
    assert "probe" not in dict(spec.addons) and [p.name for p in spec.pods] == ["app"]
    assert spec.objects == (("ProbeNote", "remember me"),)  # its kind is still read (and validated)
    assert "probe" not in build_plan(spec).to_dict().get("addons", {})


def test_settings_manifests_objects_and_fragment_reach_the_plan(tmp_path: Path) -> None:
    spec, _ = load([str(topology(tmp_path, "addons: {probe: {greeting: hi}}"))])
    assert dict(spec.addons)["probe"] == "hi"
    assert sorted(p.name for p in spec.pods) == ["app", "probe-agent"]  # its manifest's pod, scheduled
    plan = build_plan(spec)
    assert plan.addon("probe") == Fragment("hi", ("remember me",), ("app", "probe-agent"))  # add-ons' pods last
    assert '"probe": {' in to_json(plan) and '"greeting": "hi"' in to_json(plan)


@pytest.mark.parametrize(
    "addons,expected",
    [
        ("addons: {probe: 5}", "addons.probe: expected true, false or a mapping of settings"),
        ("addons: {prob: true}", "addons.prob: unknown field (did you mean 'probe'?)"),
        ("addons: {probe: {greting: hi}}", "addons.probe.greting: unknown field (did you mean 'greeting'?)"),
    ],
)
def test_bad_settings_are_located_errors(tmp_path: Path, addons: str, expected: str) -> None:
    with pytest.raises(SpecError) as exc:
        load([str(topology(tmp_path, addons))])
    lines = [str(p) for p in exc.value.errors]
    assert any(expected in line and ":5: " in line for line in lines), lines


@requires_root
@pytest.mark.root
def test_live_hooks_run_at_start_on_every_change_and_at_stop(tmp_path: Path) -> None:
    if ROOT_PROBLEM:
        pytest.skip(ROOT_PROBLEM)
    import os

    from emu.controller import Cluster  # imports Mininet, which the runs without root may lack

    spec, _ = load([str(topology(tmp_path, "addons: {probe: true}", name=f"addon-{os.getpid()}"))])
    with Cluster(build_plan(spec)) as cluster:
        assert CALLS == [("start", ("app", "probe-agent"))]
        assert cluster.node("node-1").exec(["ip", "link", "show", "probe0"]).returncode == 0
        cluster.delete_pod("app")
        assert CALLS[-1] == ("update", ("app", "probe-agent"), ("probe-agent",))
        assert cluster.plan.addon("probe").pods == ("probe-agent",)
    assert CALLS[-1] == ("stop",)
    assert sys.modules  # the cluster is gone; nothing of it is left (conftest's teardown tests cover that)
