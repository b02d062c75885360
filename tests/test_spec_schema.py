"""schema/cluster.schema.json (for editors: yaml-language-server) agrees with the loader, field for field.

The loader is the authority; the schema describes it. Every field the loader accepts in the Cluster object has a
schema property and the other way round. With the ``jsonschema`` module (optional), the shipped Cluster objects
validate and a few known-bad ones do not. No root needed.
"""

import json
from pathlib import Path
from typing import Any, Dict, List, Set

import pytest
import yaml

from emu import registry
from emu.spec import cluster as loader
from emu.spec import reader
from emu.spec import underlay as routed

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_PATH = ROOT / "schema" / "cluster.schema.json"
TOPOLOGIES = sorted((ROOT / "topologies").glob("*.yaml"))
MODELINE = "# yaml-language-server: $schema=../schema/cluster.schema.json"


def schema() -> Dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())


def cluster_objects() -> List[Any]:
    objects = []
    for path in TOPOLOGIES:
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "Cluster":
                objects.append(pytest.param(doc, id=path.name))
    return objects


def test_schema_is_draft_07_json() -> None:
    data = schema()
    assert data["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert data["then"] == {"$ref": "#/definitions/Cluster"}


@pytest.mark.parametrize(
    "definition, fields",
    [
        ("Cluster", loader.CLUSTER_FIELDS),
        ("Network", loader.NETWORK_FIELDS),
        ("KubeProxy", loader.KUBE_PROXY_FIELDS),
        ("Backend", loader.BACKEND_FIELDS),
        ("Underlay", loader.UNDERLAY_FIELDS),
        ("Link", reader.LINK_FIELDS),
        ("Node", loader.NODE_FIELDS),
        ("Segment", routed.SEGMENT_FIELDS),
        ("Router", routed.ROUTER_FIELDS),
        ("RouterLink", routed.ROUTER_LINK_FIELDS),
    ],
)
def test_schema_has_exactly_the_loaders_fields(definition: str, fields: Set[str]) -> None:
    described = schema()["definitions"][definition]
    assert set(described["properties"]) == set(fields)
    assert described["additionalProperties"] is False  # strict, like the loader


def test_every_field_is_described() -> None:
    definitions = schema()["definitions"]
    for name in ("Cluster", "Network", "KubeProxy", "Backend", "Underlay", "Link", "Node", "Segment", "Router",
                 "RouterLink"):
        for field, spec in definitions[name]["properties"].items():
            if "$ref" in spec and "description" not in spec:
                spec = definitions[spec["$ref"].rsplit("/", 1)[1]]
            assert spec.get("description") or field in ("kind", "Type", "type"), f"{name}.{field}"


def test_schema_defaults_are_the_loaders() -> None:
    definitions = schema()["definitions"]
    network = definitions["Network"]["properties"]
    assert network["podCIDR"]["default"] == loader.DEFAULT_POD_CIDR
    assert network["subnetLen"]["default"] == loader.DEFAULT_SUBNET_LEN
    assert network["serviceCIDR"]["default"] == loader.DEFAULT_SERVICE_CIDR
    assert definitions["Underlay"]["properties"]["cidr"]["default"] == loader.DEFAULT_UNDERLAY
    assert definitions["BackendType"]["enum"] == list(registry.BACKENDS)
    assert definitions["KubeProxy"]["properties"]["mode"]["enum"] == list(registry.PROXY_MODES)
    assert definitions["KubeProxy"]["properties"]["mode"]["default"] == registry.DEFAULT_PROXY_MODE
    assert definitions["Cluster"]["properties"]["name"]["maxLength"] == loader.MAX_CLUSTER_NAME
    assert definitions["NodeName"]["maxLength"] == loader.MAX_NODE_NAME
    assert definitions["Cluster"]["properties"]["nodes"]["maxItems"] == loader.MAX_NODES


@pytest.mark.parametrize("path", TOPOLOGIES, ids=[p.name for p in TOPOLOGIES])
def test_shipped_topologies_name_the_schema_on_their_first_line(path: Path) -> None:
    assert path.read_text().splitlines()[0] == MODELINE


def _validator() -> Any:
    jsonschema = pytest.importorskip("jsonschema", reason="the jsonschema module is not installed (optional)")
    jsonschema.Draft7Validator.check_schema(schema())
    return jsonschema.Draft7Validator(schema())


@pytest.mark.parametrize("cluster", cluster_objects())
def test_shipped_cluster_objects_validate(cluster: Dict[str, Any]) -> None:
    errors = [e.message for e in _validator().iter_errors(cluster)]
    assert errors == []


def test_other_kinds_are_left_to_the_loader() -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"}, "spec": {"containers": []}}
    assert list(_validator().iter_errors(pod)) == []


BASE = {"apiVersion": "emu/v1", "kind": "Cluster", "name": "x", "nodes": ["node-1"]}


@pytest.mark.parametrize(
    "change",
    [
        {"netwrok": {}},
        {"name": "Bad Name"},
        {"nodes": []},
        {"nodes": [{"name": "node-1", "adress": "192.168.56.20"}]},
        {"network": {"subnetLen": 31}},
        {"network": {"podCIDR": "10.244.0.0/33"}},
        {"network": {"backend": "geneve"}},
        {"network": {"kubeProxy": {"mode": "ipvs"}}},
        {"network": {"kubeProxy": {"mdoe": "nftables"}}},
        {"network": {"backend": {"Type": "vxlan", "type": "udp"}}},
        {"network": {"backend": {"Type": "vxlan", "VNI": "1"}}},
        {"underlay": {"link": {"bw": 0}}},
        {"underlay": {"link": {"delay": "5 ms"}}},
        {"underlay": {"link": {"loss": 150}}},
        {"underlay": {"segments": [{"name": "rack-a"}]}},
        {"underlay": {"segments": [{"name": "a", "cidr": "10.1.0.0/24"}], "routers": [{"name": "r", "links": []}]}},
        {"underlay": {"routers": [{"name": "r", "links": [{"segment": "a"}, {"segment": "b", "mtu": 100}]}]}},
        {"underlay": {"routers": [{"name": "r", "fragmentationNeeded": "ignore", "links": []}]}},
        {"manifests": "web.yaml"},
    ],
    ids=lambda change: json.dumps(change),
)
def test_schema_rejects_what_the_loader_rejects(change: Dict[str, Any]) -> None:
    assert list(_validator().iter_errors({**BASE, **change})), f"the schema accepts {change}"
