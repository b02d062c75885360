"""The e2e suite's ``[sig-network] Networking`` checks (test/e2e/common/network/networking.go and
test/e2e/network/networking.go), made with emu's stand-in for agnhost netexec.

Granular Checks: Pods: the test container reaches every netserver pod directly (intra-pod), and so does the
host network of a node (node-pod), over http (8083) and udp (8081). Granular Checks: Services: the netservers
through their NodePort Service, by its ClusterIP and by a node's address and node port, from the test container
(pod-Service), from a node (node-Service) and from a netserver itself (endpoint-Service); the endpoints follow a
deleted pod (update endpoints); a 2,000-byte request and answer cross the Service (large requests). Each
function raises ``Failed`` with the evidence, as the upstream test fails.
"""

from typing import List

from emu.conformance import probes
from emu.conformance.context import Context, Failed
from emu.conformance.dialer import Source, collect, max_tries

PORTS = {"http": probes.ENDPOINT_HTTP_PORT, "udp": probes.ENDPOINT_UDP_PORT}
CLUSTER_PORTS = {"http": probes.CLUSTER_HTTP_PORT, "udp": probes.CLUSTER_UDP_PORT}
PROTOCOLS = {"http": "TCP", "udp": "UDP"}


def _pods_from(ctx: Context, source: Source, protocol: str) -> None:
    """Every netserver answers its own hostname to ``source`` (checkPodToPodConnectivity / DialFromNode)."""
    failures: List[str] = []
    endpoints = ctx.netservers()
    port = PORTS[protocol]
    for pod in endpoints:
        outcome = collect(ctx.cluster, source, protocol, pod.ip, port, [pod.name], max_tries(1))
        if not outcome.ok:
            failures.append(ctx.explain(outcome, source, protocol, port))
    if failures:
        raise Failed(f"{len(failures)} of {len(endpoints)} pods not reached\n" + "\n".join(failures))


def intra_pod(protocol: str):  # type: ignore[no-untyped-def]
    def check(ctx: Context) -> None:
        ctx.networking()
        _pods_from(ctx, ctx.test_source(), protocol)

    return check


def node_pod(protocol: str):  # type: ignore[no-untyped-def]
    def check(ctx: Context) -> None:
        ctx.networking()
        _pods_from(ctx, ctx.host_source(), protocol)

    return check


def _service_from(ctx: Context, source: Source, protocol: str) -> None:
    """Every netserver answers through the ClusterIP and through the first node's node port."""
    expected = [p.name for p in ctx.netservers()]
    service = ctx.service(probes.NODE_PORT_SERVICE)
    targets = [(service.cluster_ip, CLUSTER_PORTS[protocol]),
               (ctx.node_ip(), ctx.node_port(probes.NODE_PORT_SERVICE, PROTOCOLS[protocol]))]
    failures = []
    for host, port in targets:
        outcome = collect(ctx.cluster, source, protocol, host, port, expected, max_tries(len(expected)))
        if not outcome.ok:
            failures.append(ctx.explain(outcome, source, protocol, PORTS[protocol], probes.NODE_PORT_SERVICE))
    if failures:
        raise Failed("failed dialing endpoint\n" + "\n".join(failures))


def pod_service(protocol: str):  # type: ignore[no-untyped-def]
    def check(ctx: Context) -> None:
        ctx.networking()
        _service_from(ctx, ctx.test_source(), protocol)

    return check


def node_service(protocol: str):  # type: ignore[no-untyped-def]
    def check(ctx: Context) -> None:
        ctx.networking()
        _service_from(ctx, ctx.host_source(), protocol)

    return check


def endpoint_service(protocol: str):  # type: ignore[no-untyped-def]
    def check(ctx: Context) -> None:
        ctx.networking()
        first = ctx.netservers()[0]
        _service_from(ctx, ctx.source(first.name, probes.ENDPOINT_HTTP_PORT), protocol)

    return check


def update_endpoints(protocol: str):  # type: ignore[no-untyped-def]
    """All netservers answer through the ClusterIP; one is deleted; for as many tries, only the others do."""

    def check(ctx: Context) -> None:
        ctx.networking()
        source = ctx.test_source()
        ip = ctx.service(probes.NODE_PORT_SERVICE).cluster_ip
        port = CLUSTER_PORTS[protocol]
        endpoints = ctx.netservers()
        names = [p.name for p in endpoints]
        initial = collect(ctx.cluster, source, protocol, ip, port, names, max_tries(len(names)))
        if not initial.ok:
            raise Failed("failed dialing endpoint (initial)\n" + ctx.explain(
                initial, source, protocol, PORTS[protocol], probes.NODE_PORT_SERVICE))
        gone = endpoints[0]
        index = names.index(gone.name)
        ctx.progress(f"deleting {gone.name}, which will be replaced with a new endpoint")
        ctx.delete("pod", [gone.name])
        try:
            tries = max_tries(len(names))
            after = collect(ctx.cluster, source, protocol, ip, port, names[1:], tries, exact=True)
            if not after.ok:
                raise Failed(f"failed dialing endpoint (recovery, after deleting {gone.name})\n" + ctx.explain(
                    after, source, protocol, PORTS[protocol], probes.NODE_PORT_SERVICE))
        finally:
            ctx.add([probes.netserver(index, ctx.nodes[index])])

    return check


def large_requests(protocol: str):  # type: ignore[no-untyped-def]
    """A 2,000-byte message through the ClusterIP comes back whole (http echo?msg=, udp "echo ...")."""

    def check(ctx: Context) -> None:
        ctx.networking()
        if protocol == "http":
            message = "42" * 1000
            request = f"echo?msg={message}"
        else:
            message = "n" + "o" * 1999
            request = f"echo {message}"
        source = ctx.test_source()
        ip = ctx.service(probes.NODE_PORT_SERVICE).cluster_ip
        outcome = collect(ctx.cluster, source, protocol, ip, CLUSTER_PORTS[protocol], [message],
                          max_tries(len(ctx.netservers())), request=request, batch=1)
        if not outcome.ok:
            raise Failed("failed dialing endpoint\n" + ctx.explain(
                outcome, source, protocol, PORTS[protocol], probes.NODE_PORT_SERVICE))

    return check
