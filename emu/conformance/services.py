"""The e2e suite's ``[sig-network] Services`` checks that need neither a cloud nor an API server
(test/e2e/network/service.go), made with emu's stand-in for agnhost netexec.

- basic endpoint / multiport endpoints: a Service's endpoints follow pods as they are created and deleted (the
  endpoints kube-proxy programs, from the plan), and the Service forwards to them;
- hairpin: a pod reaches itself through its own Service;
- session affinity (ClusterIP): every request of one client goes to one endpoint;
- no endpoints: a connection is rejected at once (kube-proxy's REJECT), not left to time out;
- source pod IP: an endpoint sees the client pod's own address, from the same node and from another.
"""

from collections import Counter
from typing import Dict, List, Sequence

from emu.conformance import diagnose, probes
from emu.conformance.context import Context, Failed, Skipped
from emu.conformance.dialer import Source, collect, dial_once, max_tries

AFFINITY_CONFIRM_COUNT = 15  # requests that must all reach one endpoint (upstream's AffinityConfirmCount)


def _endpoints(ctx: Context, service: str) -> Dict[str, Dict[str, List[int]]]:
    """port name -> pod -> ports: the Service's endpoints, as the plan (and kube-proxy's rules) have them."""
    out: Dict[str, Dict[str, List[int]]] = {}
    for port in ctx.service(service).ports:
        for endpoint in port.endpoints:
            out.setdefault(port.name, {}).setdefault(endpoint.pod, []).append(endpoint.port)
    return out


def _expect_endpoints(ctx: Context, service: str, expected: Dict[str, Dict[str, List[int]]], step: str) -> None:
    got = _endpoints(ctx, service)
    if got != expected:
        raise Failed(f"{step}: endpoints of {service} are {got or 'none'}, expected {expected or 'none'}")


def _reach(ctx: Context, service: str, port: int, expected: Sequence[str], step: str) -> None:
    source = ctx.test_source()
    ip = ctx.service(service).cluster_ip
    outcome = collect(ctx.cluster, source, "http", ip, port, list(expected), max_tries(len(expected)))
    if not outcome.ok:
        target = next(p.target_port for p in ctx.service(service).ports if p.port == port)
        raise Failed(f"{step}: the Service does not forward to its endpoints\n" + ctx.explain(
            outcome, source, "http", int(target) if target.isdigit() else port, service))


def basic_endpoint(ctx: Context) -> None:
    ctx.networking()
    labels = {"foo": "bar", "baz": "blah"}
    name = "endpoint-test2"
    ctx.add([probes.service(name, labels, [("", "TCP", 80, 80)])])
    _expect_endpoints(ctx, name, {}, "no pods")
    pod1, pod2 = "e2e-pod1", "e2e-pod2"
    ctx.add([probes.pod(pod1, [(80, "TCP", "")], labels=labels)])
    _expect_endpoints(ctx, name, {"": {pod1: [80]}}, f"after creating {pod1}")
    _reach(ctx, name, 80, [pod1], f"after creating {pod1}")
    ctx.add([probes.pod(pod2, [(80, "TCP", "")], labels=labels)])
    _expect_endpoints(ctx, name, {"": {pod1: [80], pod2: [80]}}, f"after creating {pod2}")
    _reach(ctx, name, 80, [pod1, pod2], f"after creating {pod2}")
    ctx.delete("pod", [pod1])
    _expect_endpoints(ctx, name, {"": {pod2: [80]}}, f"after deleting {pod1}")
    _reach(ctx, name, 80, [pod2], f"after deleting {pod1}")
    ctx.delete("pod", [pod2])
    _expect_endpoints(ctx, name, {}, f"after deleting {pod2}")
    ctx.delete("service", [name])


def multiport_endpoints(ctx: Context) -> None:
    ctx.networking()
    labels = {"foo": "bar"}
    name = "multi-endpoint-test"
    ctx.add([probes.service(name, labels, [("portname1", "TCP", 80, "svc1"), ("portname2", "TCP", 81, "svc2")])])
    _expect_endpoints(ctx, name, {}, "no pods")
    pod1, pod2 = "e2e-pod1", "e2e-pod2"
    ctx.add([probes.pod(pod1, [(100, "TCP", "svc1")], labels=labels)])
    _expect_endpoints(ctx, name, {"portname1": {pod1: [100]}}, f"after creating {pod1}")
    ctx.add([probes.pod(pod2, [(101, "TCP", "svc2")], labels=labels)])
    _expect_endpoints(ctx, name, {"portname1": {pod1: [100]}, "portname2": {pod2: [101]}}, f"after creating {pod2}")
    _reach(ctx, name, 80, [pod1], "port 80 (portname1)")
    _reach(ctx, name, 81, [pod2], "port 81 (portname2)")
    ctx.delete("pod", [pod1])
    _expect_endpoints(ctx, name, {"portname2": {pod2: [101]}}, f"after deleting {pod1}")
    ctx.delete("pod", [pod2])
    _expect_endpoints(ctx, name, {}, f"after deleting {pod2}")
    ctx.delete("service", [name])


def hairpin(ctx: Context) -> None:
    name, pod = "hairpin-test", "e2e-hairpin"
    labels = {"hairpin": "true"}
    ctx.add([probes.service(name, labels, [("", "TCP", 8080, 8080)]),
             probes.pod(pod, [(8080, "TCP", "")], node=ctx.nodes[0], labels=labels)])
    source = ctx.source(pod, 8080)
    outcome = collect(ctx.cluster, source, "http", ctx.service(name).cluster_ip, 8080, [pod], max_tries(1))
    if not outcome.ok:
        raise Failed("hairpin request failed\n" + ctx.explain(outcome, source, "http", 8080, name))


def session_affinity(ctx: Context) -> None:
    ctx.networking()
    name = "affinity-clusterip"
    labels = {"name": name}
    pods = [f"e2e-{name}-{i}" for i in range(3)]
    ctx.add([probes.service(name, labels, [("", "TCP", 80, 9376)], affinity=True)]
            + [probes.pod(p, [(9376, "TCP", "")], labels=labels) for p in pods])
    source = ctx.test_source()
    answer = dial_once(ctx.cluster, source, "http", ctx.service(name).cluster_ip, 80, "hostname",
                       tries=AFFINITY_CONFIRM_COUNT)
    hosts = Counter(r.strip() for r in answer.get("responses") or [])
    if len(hosts) != 1 or sum(hosts.values()) != AFFINITY_CONFIRM_COUNT:
        errors = Counter(answer.get("errors") or [])
        lines = [f"{AFFINITY_CONFIRM_COUNT} requests from {source.label} to {name} reached "
                 f"{dict(hosts) or 'no endpoint'}: affinity does not hold"]
        lines += [f"error x{n}: {e}" for e, n in errors.most_common(2)]
        where = ctx.service(name)
        for endpoint in where.ports[0].endpoints if where.ports else ():
            cause = ctx.path_cause(source.pod, endpoint.pod, "tcp", endpoint.port)
            if cause.startswith("cause:"):
                lines.append(cause)
        lines += [f"cause: {r}" for r in _rules_cause(ctx, name)]
        raise Failed("\n".join(lines))


def _rules_cause(ctx: Context, service: str) -> List[str]:
    return diagnose.service_rules(ctx.cluster, probes.NAMESPACE, service)[:6]


def rejected_without_endpoints(ctx: Context) -> None:
    ctx.networking()
    name = "no-pods"
    ctx.add([probes.service(name, {"no-pods": "none"}, [("", "TCP", 80, 80)])])
    source = ctx.test_source()
    ip = ctx.service(name).cluster_ip
    answer = dial_once(ctx.cluster, source, "http", ip, 80, "hostname", tries=1, timeout=3.0)
    errors = answer.get("errors") or []
    if not errors or "connection refused" not in errors[0]:
        seen = errors[0] if errors else f"an answer: {answer.get('responses')}"
        lines = [f"http {ip}:80 from {source.label}: expected the connection to be REJECTED, got {seen}"]
        lines += [f"cause: {r}" for r in _rules_cause(ctx, name)]
        raise Failed("\n".join(lines))


def source_pod_ip(ctx: Context) -> None:
    if len(ctx.nodes) < 2:
        raise Skipped(f"the test requires two nodes, the cluster has {len(ctx.nodes)}")
    ctx.networking()
    name, server = "sourceip-test", "e2e-echo-sourceip"
    labels = {"app": "sourceip-test"}
    ctx.add([probes.service(name, labels, [("", "TCP", 8080, 8080)]),
             probes.pod(server, [(8080, "TCP", "")], node=ctx.nodes[0], labels=labels)])
    ip = ctx.service(name).cluster_ip
    other = next(p for p in ctx.netservers() if p.node != ctx.nodes[0])
    clients: List[Source] = [ctx.test_source(), ctx.source(other.name, probes.ENDPOINT_HTTP_PORT)]
    problems = []
    for client in clients:
        where = "same node" if client.node == ctx.nodes[0] else "other node"
        answer = dial_once(ctx.cluster, client, "http", ip, 8080, "clientip")
        seen = [r.rsplit(":", 1)[0] for r in answer.get("responses") or []]
        if seen != [client.ip]:
            lines = [f"from {client.label} ({where}, {client.ip}) to {name} {ip}:8080: {server} saw "
                     f"{', '.join(seen) or 'nothing'}"]
            lines += [f"error: {e}" for e in (answer.get("errors") or [])[:1]]
            if not seen:
                lines.append(ctx.path_cause(client.pod, server, "tcp", 8080))
                lines.append(ctx.path_cause(server, client.pod, "tcp", client.port).replace(
                    "cause:", "cause (the way back):", 1))
                lines += [f"cause: {r}" for r in _rules_cause(ctx, name)]
            problems.append("\n".join(lines))
    if problems:
        raise Failed("the source pod IP is not preserved\n" + "\n".join(problems))
