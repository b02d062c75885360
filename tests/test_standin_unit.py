"""The stand-in add-on without a cluster (no root): its plan fragment, netexec's answers, the DNS helpers.

- the fragment lists exactly the containers without a command that declare ports, node by node (the guestbook:
  six pods, none with a command), and nothing when ``addons: {standin: false}``;
- every HTTP path answers what agnhost netexec answers (``/hostname``, ``/clientip``, ``/echo`` with and
  without ``code``, ``/headers``, ``/redirect``, ``/`` and unknown paths), ``/shell`` and its kind are refused,
  paths are cleaned as Go's ServeMux cleans them; ``/dial``'s JSON is Go's (sorted keys, ``responses`` only
  when the last try answered, HTML-safe escapes); UDP commands are trimmed and lower-cased;
- requests are read from a stream as sent (keep-alive, Content-Length and chunked bodies, bad requests);
- resolv.conf is read as glibc reads it, the search list is tried in glibc's order, a DNS reply (with name
  compression) gives its addresses and response code.
"""

import asyncio
import json
import struct
import textwrap
from pathlib import Path

import pytest

from emu.addons import standin
from emu.addons.standin import dns
from emu.addons.standin.netexec import (
    REFUSAL,
    BadRequest,
    Request,
    answer,
    clean_path,
    dial_json,
    read_request,
    udp_answer,
)
from emu.plan.build import build_plan
from emu.spec.load import load

ROOT = Path(__file__).resolve().parent.parent


def request(target: str, method: str = "GET", headers=(), body: bytes = b"") -> Request:  # type: ignore[no-untyped-def]
    return Request(method, target, "HTTP/1.1", list(headers), "10.244.1.2:40000", 8080, body)


# ---------------------------------------------------------------------------------------------- the plan


def test_the_fragment_lists_every_container_without_a_command_that_declares_ports() -> None:
    spec, _ = load([str(ROOT / "topologies" / "guestbook.yaml")])
    plan = build_plan(spec)
    fragment = plan.addon("standin")
    assert fragment.server_node == "node-1"
    served = {(n.node, c.pod, c.container, c.ports) for n in fragment.nodes for c in n.containers}
    expected = {
        (p.node, p.name, c.name, tuple(f"{port}/{proto}" for port, proto, _ in c.ports))
        for p in plan.pods for c in p.containers if p.namespace == "default"  # not cluster DNS's dnsmasq
    }
    assert served == expected and len(served) == 6
    assert ("node-1", "frontend-0", "php-redis", ("80/TCP",)) in served
    shown = json.loads(plan_json(plan))["addons"]["standin"]
    assert shown["server_node"] == "node-1" and shown["nodes"][0]["containers"][0]["ports"] == ["80/TCP"]


def plan_json(plan) -> str:  # type: ignore[no-untyped-def]
    from emu.plan.render import to_json

    return to_json(plan)


def test_containers_with_a_command_or_without_ports_are_not_served(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(textwrap.dedent("""\
        apiVersion: emu/v1
        kind: Cluster
        name: mixed
        nodes: [node-1, node-2]
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: mixed}
        spec:
          containers:
            - {name: real, command: [sleep, infinity], ports: [{containerPort: 80}]}
            - {name: idle}
            - {name: stand, ports: [{containerPort: 81, protocol: UDP}, {containerPort: 82}]}
        """))
    spec, _ = load([str(path)])
    fragment = build_plan(spec).addon("standin")
    assert fragment.containers() == (standin.Container("mixed", "stand", ("81/UDP", "82/TCP")),)


def test_addons_standin_false_turns_it_off(tmp_path: Path) -> None:
    source = (ROOT / "topologies" / "guestbook.yaml").read_text()
    path = ROOT / "topologies" / "guestbook-standin-off.yaml"
    try:
        path.write_text(source.replace("nodes:\n", "addons: {standin: false, dns: false}\nnodes:\n", 1))
        spec, _ = load([str(path)])
    finally:
        path.unlink()
    plan = build_plan(spec)
    assert "standin" not in dict(spec.addons) and plan.addon("standin") is None
    assert "addons" not in plan.to_dict()


# -------------------------------------------------------------------------------------------- HTTP answers


def test_http_paths_answer_as_netexec() -> None:
    assert answer(request("/hostname"), "web-0").body == b"web-0"
    assert answer(request("/hostName"), "web-0").body == b"web-0"
    assert answer(request("/clientip"), "web-0").body == b"10.244.1.2:40000"
    assert answer(request("/serverport"), "web-0").body == b"8080"
    assert answer(request("/echo?msg=hello%20there"), "w").body == b"hello there"
    teapot = answer(request("/echo?msg=short&code=418"), "w")
    assert (teapot.status, teapot.body) == (418, b"short")
    assert b"must be an integer" in answer(request("/echo?msg=x&code=abc"), "w").body
    healthz = answer(request("/healthz"), "w")
    assert (healthz.status, healthz.body) == (200, b"")
    root = answer(request("/anything/else"), "w")
    assert root.status == 200 and root.body.startswith(b"NOW: ")
    headers = json.loads(answer(request("/headers", headers=[("user-agent", "curl/8"), ("X-A", "1")]), "w").body)
    assert headers == {"User-Agent": ["curl/8"], "X-A": ["1"]}
    assert answer(request("/header?key=X-A", headers=[("X-A", "1")]), "w").body == b"1"
    moved = answer(request("/redirect?location=/echo%3Fmsg%3Dfoobar&code=307"), "w")
    assert moved.status == 307 and ("Location", "/echo?msg=foobar") in moved.headers
    assert answer(request("/dial?host=1.2.3.4&port=80&request=hostname"), "w") is None  # asynchronous


@pytest.mark.parametrize("path", ["/shell?cmd=id", "/upload", "/exit?code=3", "/shutdown", "//shell"])
def test_commands_from_the_network_are_refused(path: str) -> None:
    refused = answer(request(path), "w")
    assert refused.status == 501 and refused.body == REFUSAL.encode()


def test_paths_are_cleaned_as_gos_servemux_does() -> None:
    assert clean_path("//hostname") == "/hostname"
    assert clean_path("/a/../hostname/.") == "/hostname"
    assert answer(request("//hostname"), "web-0").body == b"web-0"


def test_form_values_come_from_a_urlencoded_body_first() -> None:
    post = request("/echo?msg=query", "POST", [("Content-Type", "application/x-www-form-urlencoded")], b"msg=body")
    assert answer(post, "w").body == b"body"


def test_the_response_is_http_1_1_with_its_length() -> None:
    wire = answer(request("/hostname"), "web-0").encode(keep_alive=False)
    head, body = wire.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Content-Length: 5" in head and b"Connection: close" in head
    assert body == b"web-0"


def test_dial_json_is_gos() -> None:
    assert dial_json(["web-0", "web-1"], [], True) == b'{"responses":["web-0","web-1"]}'
    assert dial_json(["web-0"], ["boom"], False) == b'{"errors":["boom"]}'  # netexec drops them: last try failed
    assert dial_json(["web-0"], ["boom"], True) == b'{"errors":["boom"],"responses":["web-0"]}'
    assert dial_json(["<a&b>"], [], True) == b'{"responses":["\\u003ca\\u0026b\\u003e"]}'


def test_udp_commands() -> None:
    assert udp_answer(b"hostName\n", "web-0", "10.0.0.1:5")[0] == b"web-0"
    assert udp_answer(b"echo Hello World", "w", "c")[0] == b"hello world"  # lower-cased, as netexec does
    assert udp_answer(b"clientip", "w", "10.244.2.3:41000")[0] == b"10.244.2.3:41000"
    assert udp_answer(b"rm -rf /", "w", "c")[0] is None


def read(wire: bytes):  # type: ignore[no-untyped-def]
    async def go():  # type: ignore[no-untyped-def]
        reader = asyncio.StreamReader()
        reader.feed_data(wire)
        reader.feed_eof()
        out = []
        while True:
            got = await read_request(reader, "c:1", 80)
            if got is None:
                return out
            out.append(got)

    return asyncio.run(go())


def test_requests_are_read_as_sent() -> None:
    first, second, third = read(
        b"GET /hostname HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /echo HTTP/1.1\r\nContent-Length: 7\r\nConnection: close\r\n\r\nmsg=abc"
        b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nmsg\r\n4\r\n=xyz\r\n0\r\n\r\n"
    )
    assert (first.method, first.path, first.keep_alive) == ("GET", "/hostname", True)
    assert (second.body, second.keep_alive) == (b"msg=abc", False)
    assert (third.body, third.keep_alive) == (b"msg=xyz", False)
    with pytest.raises(BadRequest):
        read(b"NONSENSE\r\n\r\n")


# ---------------------------------------------------------------------------------------------------- DNS


def test_resolv_conf_as_the_kubelet_writes_it() -> None:
    conf = dns.parse_resolv_conf(
        "nameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local cluster.local\n"
        "options ndots:5 timeout:2 attempts:3 # comment\n"
    )
    assert conf.nameservers == ("10.96.0.10",) and conf.ndots == 5 and conf.timeout == 2 and conf.attempts == 3
    assert dns.candidates("web", conf)[0] == "web.default.svc.cluster.local"
    assert dns.candidates("web", conf)[-1] == "web"
    assert dns.candidates("a.b.c.d.e.f", conf)[0] == "a.b.c.d.e.f"  # at least ndots dots: as given first
    assert dns.candidates("web.", conf) == ["web"]
    assert dns.parse_resolv_conf("").nameservers == ()


def test_a_query_and_a_compressed_reply() -> None:
    question = dns.query("web.default.svc.cluster.local", 0x1234)
    ident, flags, count = struct.unpack("!HHH", question[:6])
    assert (ident, flags, count) == (0x1234, 0x0100, 1)
    assert b"\x03web\x07default\x03svc\x07cluster\x05local\x00" in question
    reply = bytearray(question)
    reply[2:4] = struct.pack("!H", 0x8180)  # a response, recursion available, NOERROR
    reply[6:8] = struct.pack("!H", 2)  # two answers
    for address in ((10, 96, 0, 20), (10, 96, 0, 21)):
        reply += struct.pack("!HHHIH", 0xC00C, 1, 1, 30, 4) + bytes(address)  # name: a pointer to the question
    assert dns.answers(bytes(reply), 0x1234) == (dns.NOERROR, ["10.96.0.20", "10.96.0.21"])
    missing = bytearray(question)
    missing[2:4] = struct.pack("!H", 0x8183)
    assert dns.answers(bytes(missing), 0x1234) == (dns.NXDOMAIN, [])
    with pytest.raises(dns.DnsError):
        dns.answers(bytes(reply), 0x4321)  # not the reply to this question
