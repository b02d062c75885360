"""The interactive CLI of a live cluster: Mininet's CLI, extended for pods, containers and Services.

    emu> node-1 ip route                      # a command in a node (Mininet's syntax)
    emu> client-0 ping -c 3 web-1             # a command in a pod; pod, node and Service names become IPs
    emu> exec client-0 -c shell -- cat /etc/hostname
    emu> pods | nodes | services | logs web-0 -c http | delete pod web-0
    emu> apply -f pod.yaml                    # create pods (or relabel them), NetworkPolicies, Namespaces
    emu> delete networkpolicy deny-all -n x   # every node's policy rules follow
    emu> link node-1 loss=1%                  # impair node-1's underlay link in place; link node-1 down / up

Every Mininet command (``net``, ``dump``, ``pingall``, ``sh``, ``py``, ...) still works on the nodes.
"""

import shlex
import subprocess
import sys
from typing import Iterable, List, Optional

from mininet.cli import CLI

from emu.apply.routers import flanneld_log
from emu.controller import Cluster
from emu.errors import EmuError
from emu.faults.command import break_line
from emu.graph.command import graph_line
from emu.plan.impair import ImpairError, parse_change
from emu.plan.render import to_text
from emu.spec.errors import SpecError
from emu.spec.yamlsrc import read_documents
from emu.trace.command import trace_line


class ClusterCLI(CLI):
    prompt = "emu> "
    identchars = CLI.identchars + "-."  # pod and node names have dashes and dots

    helpStr = (
        "Commands for the emulated Kubernetes cluster:\n"
        "  pods                          pods with IP, node and status (kubectl get pods -o wide)\n"
        "  nodes                         nodes with underlay IP and pod subnet\n"
        "  services                      Services with cluster IP, ports and endpoints\n"
        "  <pod> CMD ARGS...             run CMD in the pod's network namespace\n"
        "  <node> CMD ARGS...            run CMD in the node (Mininet's syntax)\n"
        "  exec POD [-c CONTAINER] -- CMD ARGS...   run CMD inside a container (its files too)\n"
        "  logs POD [-c CONTAINER]       a container's output\n"
        "  delete KIND NAME [-n NS]      delete a pod (its endpoints go with it), a networkpolicy, a namespace\n"
        "  apply -f FILE                 create Pods (or change their labels), NetworkPolicies and Namespaces\n"
        "  plan [NODE]                   the planned dataplane, to compare with what you see\n"
        "  trace SRC DST [--port P] [--proto tcp|udp|icmp] [--graph FILE]   a packet's path, each hop seen or\n"
        "                                NOT SEEN (--graph: drawn on the cluster, .html or .svg)\n"
        "  graph [-o FILE] [--format html|svg|dot|mermaid] [--node N]   a picture of the cluster as it is now\n"
        "  break [SCENARIO] [--seed N] | --list   inject a fault to troubleshoot (emu break, lab 8)\n"
        "  link NODE-OR-ROUTER[:PEER] [bw=M] [delay=D] [jitter=J] [loss=P%] [up|down] [reset]\n"
        "                                impair an underlay link in place (no change: show it as tc/ip do)\n"
        "  routers                       the routers of a routed underlay, with their addresses\n"
        "  logs NODE                     what flanneld logged on the node (a route it could not add)\n"
        "In commands, pod, node and Service names are replaced by their IP addresses.\n"
        "Mininet's own commands (net, dump, pingall, sh, py, ...) work on the nodes. exit or Ctrl-D leaves\n"
        "(and tears the cluster down).\n"
    )

    def __init__(self, cluster: Cluster, stdin=sys.stdin) -> None:  # type: ignore[no-untyped-def]
        # Mininet's CLI.__init__ starts the loop at once; set up the same state without running it.
        from select import poll

        from mininet.log import setLogLevel

        setLogLevel("output")  # Mininet prints node command output at this level
        self.cluster = cluster
        self.mn = cluster.net
        self.locals = {"net": cluster.net, "cluster": cluster}
        self.inPoller = poll()
        self.inPoller.register(stdin)
        self.inputFile = None
        super(CLI, self).__init__(stdin=stdin)

    # ------------------------------------------------------------------------------------------ running

    def interact(self) -> None:
        self.initReadline()
        self.run()

    def run_lines(self, lines: Iterable[str]) -> int:
        """Run commands non-interactively (``--run``/``--script``); return how many failed."""
        failures = 0
        for raw in lines:
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            print(f"{self.prompt}{line}", flush=True)
            self.last_status = 0
            if self.onecmd(line):
                break
            failures += 1 if self.last_status else 0
        return failures

    last_status = 0

    def onecmd(self, line: str) -> bool:
        try:
            return bool(super().onecmd(line))
        except EmuError as exc:
            print(f"*** {exc}", file=sys.stderr)
            self.last_status = 1
        except KeyError as exc:
            print(f"*** {exc.args[0] if exc.args else exc}", file=sys.stderr)
            self.last_status = 1
        return False

    # --------------------------------------------------------------------------------------- completion

    def completenames(self, text: str, *ignored) -> List[str]:  # type: ignore[no-untyped-def]
        names = super().completenames(text, *ignored)
        names += [p.name for p in self.cluster.pods if p.name.startswith(text)]
        return sorted(set(names))

    def completedefault(self, text: str, line: str, begidx: int, endidx: int) -> List[str]:
        names = [p.name for p in self.cluster.pods] + [n.name for n in self.cluster.nodes]
        names += [s.name for s in self.cluster.services]
        return [n for n in names if n.startswith(text)]

    # ----------------------------------------------------------------------------------------- commands

    def default(self, line: str) -> None:
        first, args, line = self.parseline(line)
        try:
            pod = self.cluster.pod(first) if first else None
        except KeyError:
            pod = None
        if pod is None:
            if first in self.mn:
                words = [self.cluster.resolve(w) for w in (args or "").split(" ")]
                return super().default(f"{first} {' '.join(words)}")
            print(f"*** Unknown command: {line} (help lists the commands)", file=sys.stderr)
            self.last_status = 1
            return None
        if not args:
            print(f"*** Please enter a command for pod {first}: {first} CMD ARGS", file=sys.stderr)
            return None
        self._run_in_pod(first, None, self._words(args, first))
        return None

    def _words(self, text: str, pod: str) -> List[str]:
        """The command's words, pod and node names replaced by their addresses (Service names too, unless the
        pod resolves them through cluster DNS)."""
        try:
            words = shlex.split(text)
        except ValueError as exc:
            raise EmuError(f"cannot parse the command: {exc}") from None
        return [self.cluster.resolve(w, in_pod=pod) for w in words]

    def _run_in_pod(self, pod_name: str, container: Optional[str], argv: List[str]) -> None:
        pod = self.cluster.pod(pod_name)
        ns = pod._namespaces(container)
        # In the foreground (the terminal's Ctrl-C reaches it too), and never outliving emu: a command still
        # running when emu is told to stop (SIGTERM) is killed, or it would hold the pod's namespace.
        proc = subprocess.Popen(ns.nsenter() + argv, env=pod.exec_env(container))
        try:
            self.last_status = proc.wait()
        except KeyboardInterrupt:
            _stop(proc)
            self.last_status = 130
            print()
        except BaseException:
            _stop(proc)
            raise

    def do_pods(self, _line: str) -> None:
        """List the pods: NAME READY STATUS IP NODE (like kubectl get pods -o wide)."""
        rows = [("NAME", "READY", "STATUS", "IP", "NODE")]
        for pod in self.cluster.pods:
            ready = sum(1 for c in pod.containers.values() if c.running)
            status = "Running" if pod.alive else "Terminated"
            rows.append((pod.name, f"{ready}/{len(pod.containers)}", status, pod.ip, pod.node))
        _table(rows)

    def do_nodes(self, _line: str) -> None:
        """List the nodes: NAME INTERNAL-IP POD-CIDR PODS."""
        rows = [("NAME", "INTERNAL-IP", "POD-CIDR", "PODS", "BACKEND")]
        for node in self.cluster.nodes:
            count = sum(1 for p in self.cluster.pods if p.node == node.name)
            rows.append((node.name, node.ip, node.plan.subnet, str(count), self.cluster.backend))
        _table(rows)

    def do_services(self, _line: str) -> None:
        """List the Services: NAME TYPE CLUSTER-IP PORT(S) ENDPOINTS (kubectl get svc + get endpoints)."""
        rows = [("NAME", "TYPE", "CLUSTER-IP", "PORT(S)", "ENDPOINTS")]
        for service in self.cluster.services:
            ports = ",".join(
                f"{p.port}{':' + str(p.node_port) if p.node_port else ''}/{p.protocol}" for p in service.ports
            )
            endpoints = sorted({f"{e.ip}:{e.port}" for p in service.ports for e in p.endpoints})
            rows.append((service.name, service.type, service.cluster_ip, ports, ",".join(endpoints) or "<none>"))
        _table(rows)

    def do_exec(self, line: str) -> None:
        """exec POD [-c CONTAINER] -- CMD ARGS...: run a command inside a container of a pod."""
        words = shlex.split(line)
        if "--" in words:
            cut = words.index("--")
            head, argv = words[:cut], words[cut + 1 :]
        else:
            head, argv = words[:1], words[1:]
            if len(words) > 2 and words[1] in ("-c", "--container"):
                head, argv = words[:3], words[3:]
        if not head or not argv:
            print("*** usage: exec POD [-c CONTAINER] -- CMD ARGS...", file=sys.stderr)
            self.last_status = 2
            return
        container = head[head.index("-c") + 1] if "-c" in head[:-1] else None
        pod = self.cluster.pod(head[0])
        if container is None:
            container = next(iter(pod.containers), None)
        self._run_in_pod(head[0], container, [self.cluster.resolve(w, in_pod=head[0]) for w in argv])

    def do_logs(self, line: str) -> None:
        """logs POD [-c CONTAINER]: print a container's output; logs NODE: what flanneld logged there."""
        words = shlex.split(line)
        if not words:
            print("*** usage: logs POD [-c CONTAINER] | logs NODE", file=sys.stderr)
            return
        if words[0] in self.cluster.live.nodes:
            text = flanneld_log(self.cluster.state.directory, words[0])
            sys.stdout.write(text or f"(flanneld logged no errors on {words[0]})\n")
            return
        container = words[words.index("-c") + 1] if "-c" in words[:-1] else None
        sys.stdout.write(self.cluster.pod(words[0]).logs(container))

    def do_delete(self, line: str) -> None:
        """delete KIND NAME [-n NAMESPACE]: delete a pod (kube-proxy drops it from every Service's endpoints), a
        Service (every node's rules lose it), a NetworkPolicy or a Namespace (every node's policy rules follow)."""
        words = line.split()
        namespace = None
        if len(words) == 4 and words[2] in ("-n", "--namespace"):
            namespace, words = words[3], words[:2]
        if len(words) != 2:
            print("*** usage: delete pod|svc|networkpolicy|namespace NAME [-n NAMESPACE]", file=sys.stderr)
            self.last_status = 2
            return
        try:
            print(self.cluster.delete(words[0], words[1], namespace))
        except SpecError as exc:
            for problem in exc.problems:
                print(f"*** {problem}", file=sys.stderr)
            self.last_status = 2

    def do_apply(self, line: str) -> None:
        """apply -f FILE: create the Pods and Services of a YAML file (a Service selecting a pod gets it as an
        endpoint; a new Service gets a ClusterIP and kube-proxy rules in every node), change running pods' labels,
        and create or change its NetworkPolicies and Namespaces (every node's policy rules follow)."""
        words = shlex.split(line)
        if len(words) != 2 or words[0] not in ("-f", "--filename"):
            print("*** usage: apply -f FILE", file=sys.stderr)
            self.last_status = 2
            return
        documents, problems = read_documents(words[1])
        for problem in problems:
            print(f"*** {problem}", file=sys.stderr)
        if any(p.severity == "error" for p in problems):
            self.last_status = 2
            return
        for document in documents:  # one at a time, as kubectl: an invalid object does not stop the others
            warnings: list = []
            try:
                lines = self.cluster.apply([document], warnings)
            except SpecError as exc:
                for problem in exc.problems:
                    print(f"*** {problem}", file=sys.stderr)
                self.last_status = 2
                continue
            for problem in warnings:
                print(f"*** {problem}", file=sys.stderr)
            for text in lines:
                print(text)

    def do_plan(self, line: str) -> None:
        """plan [NODE]: print the planned dataplane (of one node)."""
        node = line.strip() or None
        sys.stdout.write(to_text(self.cluster.plan, node, iptables=node is not None, nftables=node is not None))

    def do_trace(self, line: str) -> None:
        """trace SRC DST [--port P] [--proto tcp|udp|icmp] [--count N] [--size B] [--format json] [--diagram F]:
        send packets from SRC to DST and show each hop of the planned path, seen or NOT SEEN (see emu.trace)."""
        self.last_status = trace_line(self.cluster, line)

    def do_graph(self, line: str) -> None:
        """graph [-o FILE] [--format html|svg|dot|mermaid] [--node NODE]: draw the cluster as it is now (without
        -o: Mermaid text on the terminal)."""
        self.last_status = graph_line(self.cluster, line)

    def do_break(self, line: str) -> None:
        """break [SCENARIO] [--seed N] [--dry-run] [--reveal] | break --list: inject a fault (see emu.faults)."""
        self.last_status = break_line(self.cluster, line)

    def do_link(self, line: str) -> None:
        """link NODE-OR-ROUTER[:PEER] [bw=M] [delay=D] [jitter=J] [loss=P%] [up|down] [reset]: impair an underlay
        link in place; with no change, show its ends as tc and ip show them (see emu.controller.Cluster.link)."""
        words = line.split()
        if not words:
            print("*** usage: link NODE-OR-ROUTER[:PEER] [bw=M] [delay=D] [jitter=J] [loss=P%] [up|down] [reset]",
                  file=sys.stderr)
            self.last_status = 2
            return
        try:
            print(self.cluster.change_link(words[0], parse_change(words[1:])))
        except ImpairError as exc:
            print(f"*** link: {exc}", file=sys.stderr)
            self.last_status = 2

    def do_routers(self, _line: str) -> None:
        """List the routers: NAME INTERFACES (address on each segment)."""
        rows = [("NAME", "INTERFACES")]
        for router in self.cluster.routers:
            rows.append((router.name, ", ".join(f"{p.dev} {p.address} ({p.segment})" for p in router.plan.ports)))
        _table(rows)

    def do_EOF(self, line: str) -> bool:
        print()
        return True


def _stop(proc: "subprocess.Popen[bytes]") -> None:
    """Give an interrupted command a moment to end on its own signal, then kill it; always reap it."""
    try:
        proc.wait(timeout=1)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _table(rows: List[tuple]) -> None:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("   ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())
