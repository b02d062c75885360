"""The DNS exchange in front of a trace to a Service *name*: how the pod's resolver finds the address first.

A pod that talks to ``web`` asks cluster DNS before it sends a packet to ``web``: its resolver (the pod's
/etc/resolv.conf: ``nameserver 10.96.0.10``, the search path, ``ndots:5``) sends a UDP query to the kube-dns
Service, kube-proxy's rules send it to one of the DNS pods, whose dnsmasq answers. ``exchange`` predicts it from
the plan (the names the search path tries, the record that answers, the query packet's hops through kube-proxy
and the overlay: ``emu.trace.predict`` with udp port 53 to kube-dns); ``observe`` makes the lookup for real in the
pod (``getent``) and reads which DNS pod logged the query. ``emu trace`` shows it as the first hops.
"""

import time
from dataclasses import dataclass, replace
from typing import Any, Dict, List, Optional, Tuple

from emu.trace.model import Prediction
from emu.trace.predict import predict

DNS_SERVICE = "kube-dns"


@dataclass(frozen=True)
class DnsExchange:
    """The lookup of ``name`` from ``src``, predicted (and, live, observed).

    queries: the names the resolver asks for, in order, until one exists (A queries; glibc asks AAAA beside).
    fqdn, answer: the name that answers and its address.
    query: the query packet's predicted path (src -> kube-dns:53/udp -> a DNS pod).
    observed: live only: what the lookup in the pod returned, and which DNS pod logged the query ("" predicted).
    ok: live only: the lookup returned ``answer`` (None when only predicted).
    """

    src: str
    name: str
    nameserver: str
    queries: Tuple[str, ...]
    fqdn: str
    answer: str
    query: Prediction
    observed: str = ""
    ok: Optional[bool] = None

    def to_dict(self) -> Dict[str, Any]:
        return {
            "src": self.src,
            "name": self.name,
            "nameserver": self.nameserver,
            "queries": list(self.queries),
            "fqdn": self.fqdn,
            "answer": self.answer,
            "query": self.query.to_dict(),
            "observed": self.observed,
            "ok": self.ok,
        }


def _resolver(resolv_conf: str) -> Tuple[str, List[str], int]:
    nameserver, search, ndots = "", [], 1
    for line in resolv_conf.splitlines():
        words = line.split()
        if words[:1] == ["nameserver"] and not nameserver:
            nameserver = words[1]
        elif words[:1] == ["search"]:
            search = words[1:]
        elif words[:1] == ["options"]:
            for option in words[1:]:
                if option.startswith("ndots:"):
                    ndots = int(option.split(":", 1)[1])
    return nameserver, search, ndots


def search_order(name: str, search: List[str], ndots: int) -> List[str]:
    """The names glibc's resolver tries for ``name``, in order (res_search)."""
    if name.endswith("."):
        return [name[:-1]]
    expanded = [f"{name}.{domain}" for domain in search]
    return [name] + expanded if name.count(".") >= ndots else expanded + [name]


def exchange(plan: Any, src: str, dst: str) -> Optional[DnsExchange]:
    """The DNS exchange before ``src`` reaches the Service named ``dst``; None when there is none (cluster DNS
    off, ``dst`` not a Service name, or ``src`` not a pod resolving through cluster DNS)."""
    fragment = plan.addon("dns")
    name = dst.split(":", 1)[0]
    if fragment is None or not any(s.name == name.split(".")[0] for s in plan.services):
        return None
    pod = next((p for p in plan.pods if p.name == src), None)
    if pod is None or not pod.resolv_conf:
        return None
    nameserver, search, ndots = _resolver(pod.resolv_conf)
    if nameserver != fragment.service_ip:
        return None
    answers = {r.name: r.data for r in fragment.records if r.type == "A"}
    queries: List[str] = []
    fqdn = answer = ""
    for candidate in search_order(name, search, ndots):
        queries.append(candidate)
        if candidate.lower() in answers:
            fqdn, answer = candidate.lower(), answers[candidate.lower()]
            break
    query = predict(plan, src, DNS_SERVICE, port=53, proto="udp")
    return DnsExchange(src, name, nameserver, tuple(queries), fqdn, answer, query)


def observe(cluster: Any, found: DnsExchange) -> DnsExchange:
    """Make the lookup in the pod (glibc, the pod's resolv.conf) and find the DNS pod that logged its query."""
    fragment = cluster.plan.addon("dns")
    pod = cluster.pod(found.src)
    needle = f"query[A] {found.fqdn} from {pod.ip}"
    before = {s.pod: cluster.pod(s.pod).logs("dnsmasq").count(needle) for s in fragment.servers}
    result = pod.exec(["getent", "ahostsv4", found.name], timeout=15)
    address = result.stdout.split()[0] if result.returncode == 0 and result.stdout.split() else ""
    time.sleep(0.1)  # the DNS pod's log line
    answered = [s for s in fragment.servers if cluster.pod(s.pod).logs("dnsmasq").count(needle) > before[s.pod]]
    by = ", ".join(f"{s.pod} ({s.ip} on {s.node})" for s in answered) or "no DNS pod logged it"
    looked = f"getent ahostsv4 {found.name} -> {address or 'nothing (exit ' + str(result.returncode) + ')'}"
    query = found.query
    if len(answered) == 1:  # the path to the DNS pod kube-proxy really chose
        query = predict(cluster.plan, found.src, DNS_SERVICE, port=53, proto="udp", endpoint=answered[0].pod)
    ok = bool(address) and address == found.answer and bool(answered)
    return replace(found, query=query, observed=f"{looked}; query answered by {by}", ok=ok)


def to_text(found: DnsExchange, query_text: str) -> str:
    """The exchange as lines before the data path's; ``query_text``: the query packet's hops as text."""
    order = ", then ".join(found.queries) or "-"
    lines = [
        f"DNS: {found.src} looks up {found.name!r} first (its /etc/resolv.conf: nameserver {found.nameserver})",
        f"  queries (A, with AAAA beside), in search-path order: {order}",
    ]
    hops = query_text.splitlines()
    lines.append("  query: " + hops[0] if hops else "  query: no path")
    lines += ["  " + line for line in hops[1:]]
    if found.answer:
        lines.append(f"  answer: {found.fqdn}. A {found.answer}, back to {found.src} the same way (conntrack)")
    else:
        lines.append(f"  answer: NXDOMAIN for every name: {found.name!r} does not resolve")
    if found.observed:
        mark = "seen" if found.ok else "NOT SEEN"
        lines.append(f"  {mark}: {found.observed}")
    return "\n".join(lines) + "\n\n"
