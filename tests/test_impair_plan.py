"""Link impairments as plan data (no root): the link ends of a plan, the ``link`` words, and the commands for them."""

from pathlib import Path

import pytest

from emu.plan import impair
from emu.plan.build import build_plan
from emu.plan.impair import ImpairError, Impairment, parse_change
from emu.spec.load import load

ROOT = Path(__file__).resolve().parent.parent


def plan_of(name: str):  # type: ignore[no-untyped-def]
    spec, _warnings = load([str(ROOT / "topologies" / name)])
    return build_plan(spec)


def test_every_link_has_two_ends_named_by_owner_and_peer() -> None:
    plan = plan_of("two_racks.yaml")
    ends = impair.link_ends(plan)
    links = len(plan.nodes) + sum(len(r.ports) for r in plan.routers)
    assert len(ends) == 2 * links
    names = {e.name for e in ends}
    assert {"node-1:rack-a", "rack-a:node-1", "tor-a:core", "core:tor-a", "tor-b:rack-b"} <= names
    node_1 = next(e for e in ends if e.name == "node-1:rack-a")
    assert (node_1.dev, node_1.namespace) == ("eth0", "node:node-1")
    assert node_1.switch_port == plan.node("node-1").link.switch_port
    # what node-1 sends is received by the others on rack-a: node-2 and tor-a
    assert set(impair.receivers(ends, node_1)) == {("node:node-2", "eth0"), ("router:tor-a", "eth0")}
    switch_end = next(e for e in ends if e.name == "rack-a:node-1")
    assert (switch_end.namespace, switch_end.mac) == ("", "")
    assert impair.receivers(ends, switch_end) == (("node:node-1", "eth0"),)
    core = next(e for e in ends if e.name == "tor-a:core")
    assert impair.receivers(ends, core) == (("router:tor-b", "eth1"),)


def test_the_single_switch_is_the_segment_named_switch() -> None:
    ends = impair.link_ends(plan_of("two_nodes.yaml"))
    assert {e.name for e in ends} == {"node-1:switch", "switch:node-1", "node-2:switch", "switch:node-2"}


def test_select_names_ends_and_says_what_exists() -> None:
    ends = impair.link_ends(plan_of("two_racks.yaml"))
    assert [e.name for e in impair.select(ends, "tor-a")] == ["tor-a:rack-a", "tor-a:core"]
    assert [e.name for e in impair.select(ends, "rack-a:node-2")] == ["rack-a:node-2"]
    with pytest.raises(ImpairError, match="no node, router or segment named 'node-9'"):
        impair.select(ends, "node-9")
    with pytest.raises(ImpairError, match="tor-a has no link to 'rack-b'.*tor-a:rack-a, tor-a:core"):
        impair.select(ends, "tor-a:rack-b")


def test_words_become_a_change() -> None:
    change = parse_change(["bw=20", "loss=1%", "delay=5ms", "jitter=1", "down"])
    assert (change.bw, change.loss, change.delay, change.jitter, change.up) == (20.0, 1.0, "5ms", "1ms", False)
    assert parse_change(["bw=none", "loss=0"]).bw is None and parse_change(["loss=0"]).loss is None
    assert parse_change([]).empty and parse_change(["reset"]).reset


@pytest.mark.parametrize("words, message", [
    (["loss=150%"], "out of range"),
    (["bw=fast"], "not a number"),
    (["bw=0"], "out of range"),
    (["delay=5 parsecs"], "not a duration"),
    (["speed=10"], "not a link property"),
    (["sideways"], "not a link property"),
])
def test_bad_words_are_refused_with_the_reason(words, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ImpairError, match=message):
        parse_change(words)


def test_updated_keeps_what_is_not_asked_and_reset_goes_back_to_the_plan() -> None:
    planned = Impairment(bw=100)
    now = impair.updated(planned, parse_change(["loss=2"]), planned)
    assert now == Impairment(bw=100, loss=2.0)
    now = impair.updated(now, parse_change(["bw=10", "down"]), planned)
    assert now == Impairment(bw=10, loss=2.0, up=False)
    assert impair.updated(now, parse_change(["reset"]), planned) == Impairment(bw=100, up=False)
    with pytest.raises(ImpairError, match="jitter needs a delay"):
        impair.updated(planned, parse_change(["jitter=2ms"]), planned)


def test_delay_is_refused_without_netem_and_loss_is_not() -> None:
    assert "netem" in (impair.refusal(Impairment(delay="5ms"), netem=False) or "")
    assert impair.refusal(Impairment(delay="5ms"), netem=True) is None
    assert impair.refusal(Impairment(loss=5, bw=10), netem=False) is None


def test_tc_commands_change_a_rate_in_place_and_rebuild_only_when_the_shape_changes() -> None:
    none, shaped, faster = Impairment(), Impairment(bw=100), Impairment(bw=20)
    assert impair.tc_commands("eth0", none, shaped, netem=False) == [
        ["tc", "qdisc", "add", "dev", "eth0", "root", "handle", "5:", "htb", "default", "1"],
        ["tc", "class", "add", "dev", "eth0", "parent", "5:", "classid", "5:1", "htb", "rate", "100mbit", "burst",
         "15k"],
    ]
    assert impair.tc_commands("eth0", shaped, faster, netem=False) == [
        ["tc", "class", "change", "dev", "eth0", "parent", "5:", "classid", "5:1", "htb", "rate", "20mbit", "burst",
         "15k"],
    ]
    assert impair.tc_commands("eth0", shaped, none, netem=False) == [["tc", "qdisc", "del", "dev", "eth0", "root"]]
    # loss without netem needs no qdisc; with netem it is one, under HTB's class
    assert impair.tc_commands("eth0", shaped, Impairment(bw=100, loss=1), netem=False) == []
    with_netem = impair.tc_commands("eth0", shaped, Impairment(bw=100, delay="5ms", loss=1), netem=True)
    assert with_netem[-1] == ["tc", "qdisc", "add", "dev", "eth0", "parent", "5:1", "handle", "10:", "netem",
                              "delay", "5ms", "loss", "1%"]
    assert impair.tc_commands("eth0", none, Impairment(delay="5ms", jitter="1ms"), netem=True) == [
        ["tc", "qdisc", "add", "dev", "eth0", "root", "handle", "10:", "netem", "delay", "5ms", "1ms"]]


def test_loss_without_netem_is_drop_rules_at_the_receivers_and_no_offload_meanwhile() -> None:
    ends = impair.link_ends(plan_of("two_racks.yaml"))
    node_1 = next(e for e in ends if e.name == "node-1:rack-a")
    rules = impair.drop_rules([(node_1, Impairment(loss=1.5))], ends)
    assert set(rules) == {"node:node-2", "router:tor-a"}
    assert rules["node:node-2"] == [f"-A EMU-LINK -i eth0 -m mac --mac-source {node_1.mac} -m statistic --mode "
                                    "random --probability 0.015 -j DROP"]
    switch_end = next(e for e in ends if e.name == "rack-a:node-1")
    assert impair.drop_rules([(switch_end, Impairment(loss=2))], ends) == {
        "node:node-1": ["-A EMU-LINK -i eth0 -m statistic --mode random --probability 0.02 -j DROP"]}
    assert impair.drop_rules([(node_1, Impairment())], ends) == {"node:node-2": [], "router:tor-a": []}
    assert impair.offload_commands("eth0", Impairment(), Impairment(loss=1)) == [
        ["ethtool", "-K", "eth0", "gso", "off", "tso", "off"]]
    assert impair.offload_commands("eth0", Impairment(loss=1), Impairment(loss=2)) == []
    document = impair.drop_document(rules["node:node-2"])
    assert document.startswith("*mangle\n:EMU-LINK - [0:0]\n-A EMU-LINK") and document.endswith("COMMIT\n")
