"""``emu trace`` predictions across a routed underlay (no root): switches and routers as hops, and host-gw's drop
at the router explained by flanneld's refused route (topologies/two_racks.yaml)."""

from pathlib import Path

from emu.plan.build import build_plan
from emu.spec.load import load
from emu.trace.predict import predict

ROOT = Path(__file__).resolve().parent.parent


def plan_of(backend: str):  # type: ignore[no-untyped-def]
    spec, _warnings = load([str(ROOT / "topologies" / "two_racks.yaml")])
    return build_plan(spec, backend)


def test_vxlan_crosses_both_routers_to_the_other_rack() -> None:
    plan = plan_of("vxlan")
    p = predict(plan, "web-node-1", "web-node-3")
    assert p.delivered
    s1, s2, s3 = (s.switch for s in plan.segments)
    assert p.locations() == [("web-node-1", "pod"), ("node-1", "node"), (s1, "switch"), ("tor-a", "router"),
                             (s3, "switch"), ("tor-b", "router"), (s2, "switch"), ("node-3", "node"),
                             ("web-node-3", "pod")]
    routers = [h for h in p.hops if h.step == "router"]
    assert [h.action.split(": route ")[1] for h in routers] == [
        "192.168.57.0/24 via 10.255.0.2 dev eth1 matched", "192.168.57.0/24 dev eth0 (connected) matched"]
    assert any(h.step == "encap" for h in p.hops) and any(h.step == "decap" for h in p.hops)


def test_direct_routing_stays_in_the_rack() -> None:
    p = predict(plan_of("vxlan"), "web-node-1", "web-node-2")
    assert p.delivered
    assert not any(h.step in ("encap", "router") for h in p.hops)  # a plain route, one switch
    assert [loc for loc, kind in p.locations() if kind == "switch"] == [plan_of("vxlan").segments[0].switch]


def test_host_gw_across_racks_dies_at_the_router_and_says_why() -> None:
    p = predict(plan_of("host-gw"), "web-node-1", "web-node-3")
    assert not p.delivered
    assert p.hops[-1].step == "drop" and p.hops[-1].location == "tor-a"
    assert "pod network is not routed in the underlay" in p.hops[-1].action
    route = next(h for h in p.hops if h.step == "route" and h.location == "node-1")
    assert route.route is not None and route.route.prefix == "0.0.0.0/0"  # the default route, no host-gw route
    assert any("could not add its route 10.244.3.0/24 via 192.168.57.11" in n and "network is unreachable" in n
               for n in p.notes)


def test_host_gw_within_a_rack_is_one_hop_of_routing() -> None:
    p = predict(plan_of("host-gw"), "web-node-3", "web-node-4")
    assert p.delivered and not p.notes
    assert not any(h.location_kind == "router" for h in p.hops)


def test_nodes_reach_the_other_rack_through_the_routers_on_every_backend() -> None:
    for backend in ("vxlan", "host-gw", "udp"):
        p = predict(plan_of(backend), "node-2", "node-4")
        assert p.delivered, backend
        assert [loc for loc, kind in p.locations() if kind == "router"] == ["tor-a", "tor-b"]
