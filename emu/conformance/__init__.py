"""``emu conformance``: the Kubernetes e2e suite's [sig-network] checks, run against an emu cluster.

    emu conformance FILE [--backend B] [--focus REGEX] [--junit PATH]     (builds FILE's cluster, then runs)
    emu.conformance.run(cluster, focus=None) -> [Result]                   (a running cluster, left as found)

The checks are those of the ``Networking`` and ``Services`` groups that need neither a cloud nor an API
server, each under its upstream name (``CHECKS``), so a result maps to the test users know. They add their own
probe pods and Services (the e2e framework's, in the namespace ``emu-conformance``: ``emu.conformance.probes``)
whose containers are answered by emu's stand-in for agnhost netexec, probe from inside pods and nodes as the
framework does (curl to a pod's ``/dial``: ``emu.conformance.dialer``), and remove everything they added at the
end. A failure's evidence says what was asked, what came back and why, from the live cluster against its plan
(``emu.conformance.diagnose``: ``emu trace`` of the path, kube-proxy's rules in every node). The report is a
table and, with ``--junit``, JUnit XML like sonobuoy's (``emu.conformance.report``).
"""

import re
import sys
import time
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple

from emu.conformance import networking as net
from emu.conformance import services as svc
from emu.conformance.context import Context, Failed, Skipped
from emu.conformance.dialer import DialFailed
from emu.conformance.report import FAIL, PASS, SKIP, Result, junit, summary, table
from emu.errors import InputError
from emu.plan.build import build_plan
from emu.spec.load import load

__all__ = ["CHECKS", "run", "conformance_command", "Result"]

PODS = "[sig-network] Networking Granular Checks: Pods "
SERVICES = "[sig-network] Networking Granular Checks: Services "
SVC = "[sig-network] Services "
CONFORMANCE = " [NodeConformance] [Conformance]"

#: (upstream name, check), in the order they run: checks that delete a pod of the shared config come last.
CHECKS: List[Tuple[str, Callable[[Context], None]]] = [
    (PODS + "should function for intra-pod communication: http" + CONFORMANCE, net.intra_pod("http")),
    (PODS + "should function for intra-pod communication: udp" + CONFORMANCE, net.intra_pod("udp")),
    (PODS + "should function for node-pod communication: http [LinuxOnly]" + CONFORMANCE, net.node_pod("http")),
    (PODS + "should function for node-pod communication: udp [LinuxOnly]" + CONFORMANCE, net.node_pod("udp")),
    (SERVICES + "should function for pod-Service: http", net.pod_service("http")),
    (SERVICES + "should function for pod-Service: udp", net.pod_service("udp")),
    (SERVICES + "should function for node-Service: http", net.node_service("http")),
    (SERVICES + "should function for node-Service: udp", net.node_service("udp")),
    (SERVICES + "should function for endpoint-Service: http", net.endpoint_service("http")),
    (SERVICES + "should function for endpoint-Service: udp", net.endpoint_service("udp")),
    (SERVICES + "should be able to handle large requests: http", net.large_requests("http")),
    (SERVICES + "should be able to handle large requests: udp", net.large_requests("udp")),
    (SVC + "should serve a basic endpoint from pods [Conformance]", svc.basic_endpoint),
    (SVC + "should serve multiport endpoints from pods [Conformance]", svc.multiport_endpoints),
    (SVC + "should allow pods to hairpin back to themselves through services", svc.hairpin),
    (SVC + "should have session affinity work for service with type clusterIP [LinuxOnly] [Conformance]",
     svc.session_affinity),
    (SVC + "should be rejected when no endpoints exist", svc.rejected_without_endpoints),
    (SVC + "should preserve source pod IP for traffic thru service cluster IP [LinuxOnly]", svc.source_pod_ip),
    (SERVICES + "should update endpoints: http", net.update_endpoints("http")),
    (SERVICES + "should update endpoints: udp", net.update_endpoints("udp")),
]


def _quiet(_line: str) -> None:
    pass


def selected(focus: Optional[str] = None) -> List[Tuple[str, Callable[[Context], None]]]:
    """The checks whose name matches ``focus`` (a regular expression, searched), all without one."""
    pattern = re.compile(focus) if focus else None
    return [(name, check) for name, check in CHECKS if pattern is None or pattern.search(name)]


def run(cluster: Any, focus: Optional[str] = None, progress: Optional[Callable[[str], None]] = None) -> List[Result]:
    """Run the checks (those matching ``focus``) against the running ``cluster``; every object they add is
    removed again at the end, whatever happens."""
    say = progress or _quiet
    ctx = Context(cluster, say)
    results: List[Result] = []
    try:
        for name, check in selected(focus):
            say(f"{name}")
            started = time.monotonic()
            try:
                check(ctx)
                result = Result(name, PASS)
            except Failed as exc:
                result = Result(name, FAIL, str(exc))
            except Skipped as exc:
                result = Result(name, SKIP, str(exc))
            except DialFailed as exc:
                result = Result(name, FAIL, f"the probe itself failed: {exc}")
            ctx.cleanup(keep_shared=True)  # what this check added, even when it failed half way
            result.seconds = time.monotonic() - started
            say(f"  {result.status} ({result.seconds:.1f} s)")
            results.append(result)
    finally:
        ctx.cleanup()
    return results


def conformance_command(files: List[str], backend: Optional[str] = None, focus: Optional[str] = None,
                        junit_path: Optional[str] = None) -> int:
    """``emu conformance``: build, run, print the table (and write JUnit XML), tear down. Exit 1 on a failure."""
    if focus is not None:
        try:
            re.compile(focus)
        except re.error as exc:
            raise InputError(f"--focus: {focus!r} is not a regular expression: {exc}") from None
        if not selected(focus):
            raise InputError(f"--focus {focus!r} selects none of the {len(CHECKS)} checks")
    spec, warnings = load(files)
    for warning in warnings:
        print(str(warning), file=sys.stderr)
    plan = build_plan(spec, backend=backend)
    from emu.controller import Cluster  # Mininet: only once a cluster is to be built

    started = time.monotonic()
    with Cluster(plan) as cluster:
        print(f"conformance: cluster {plan.cluster}, {len(plan.nodes)} nodes, backend {plan.backend}", flush=True)
        results = run(cluster, focus, progress=lambda line: print(line, flush=True))
    seconds = time.monotonic() - started
    header = f"emu conformance: {plan.cluster} on {plan.backend}, {len(plan.nodes)} nodes, {seconds:.0f} s"
    sys.stdout.write("\n" + table(results, header))
    if junit_path:
        path = Path(junit_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(junit(results, [("cluster", plan.cluster), ("backend", plan.backend),
                                        ("nodes", len(plan.nodes)), ("seconds", f"{seconds:.1f}")]))
        print(f"JUnit XML: {path}")
    print(f"{summary(results)} in {seconds:.0f} s")
    return 1 if any(r.status == FAIL for r in results) else 0
