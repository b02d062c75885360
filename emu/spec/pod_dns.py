"""A pod's DNS fields, as the API server validates them: ``hostname``, ``subdomain``, ``dnsPolicy``, ``dnsConfig``.

The kubelet turns them into the pod's ``/etc/resolv.conf`` (``emu.plan.resolv``) and cluster DNS into records
(``<hostname>.<subdomain>.<ns>.svc.<zone>`` when a headless Service named like the subdomain selects the pod).
The limits are Kubernetes' own (``ValidatePodDNSConfig``): at most 3 nameservers, 32 search domains of 2048
characters in all, and ``dnsPolicy: None`` only with a ``dnsConfig`` that names a nameserver.
"""

from ipaddress import IPv4Address
from typing import Any, Dict, List, Optional, Tuple

from emu.spec import kube_fields as kf
from emu.spec.model import DNS_POLICIES, DnsConfig
from emu.spec.reader import DNS_LABEL, Reader, closest, short
from emu.spec.yamlsrc import FieldPath

MAX_NAMESERVERS = 3
MAX_SEARCHES = 32
MAX_SEARCH_CHARS = 2048


def read_pod_dns(
    r: Reader, spec: Dict[str, Any], path: FieldPath, host_network: bool
) -> Tuple[str, str, str, Optional[DnsConfig]]:
    """(hostname, subdomain, dnsPolicy, dnsConfig) of a pod spec, each checked; "" where not given."""
    hostname = ""
    if spec.get("hostname") not in (None, ""):  # "" is Kubernetes' "not set"
        hostname = r.name(spec.get("hostname"), path + ("hostname",), "hostname") or ""
    subdomain = ""
    if spec.get("subdomain") not in (None, ""):
        subdomain = r.name(spec.get("subdomain"), path + ("subdomain",), "subdomain") or ""
    policy = r.string(spec.get("dnsPolicy"), path + ("dnsPolicy",), "ClusterFirst") or "ClusterFirst"
    if policy not in DNS_POLICIES:
        close = closest(policy, DNS_POLICIES)
        hint = f"did you mean '{close}'?" if close else "one of " + ", ".join(DNS_POLICIES)
        r.error(path + ("dnsPolicy",), f"{short(policy)} is not a DNS policy", hint)
        policy = "ClusterFirst"
    config = None
    if spec.get("dnsConfig") is not None:
        config = _read_dns_config(r, spec.get("dnsConfig"), path + ("dnsConfig",))
    if policy == "None" and (config is None or not config.nameservers):
        r.error(
            path + ("dnsConfig",),
            "dnsPolicy: None needs a dnsConfig with at least one nameserver",
            "dnsConfig: {nameservers: [192.0.2.53]}",
        )
    return hostname, subdomain, policy, config


def _read_dns_config(r: Reader, value: Any, path: FieldPath) -> DnsConfig:
    data = r.mapping(value, path, kf.DNS_CONFIG)
    nameservers: List[str] = []
    items = r.sequence(data.get("nameservers"), path + ("nameservers",))
    for i, item in enumerate(items):
        text = r.string(item, path + ("nameservers", i))
        if text is None:
            continue
        try:
            nameservers.append(str(IPv4Address(text)))
        except ValueError:
            r.error(path + ("nameservers", i), f"{short(text)} is not an IPv4 address", "e.g. 192.0.2.53")
    if len(items) > MAX_NAMESERVERS:
        r.error(path + ("nameservers",), f"{len(items)} nameservers", f"at most {MAX_NAMESERVERS}")
    searches: List[str] = []
    items = r.sequence(data.get("searches"), path + ("searches",))
    for i, item in enumerate(items):
        text = r.string(item, path + ("searches", i))
        if text is None:
            continue
        name = text[:-1] if text.endswith(".") else text
        if not name or len(name) > 253 or not all(DNS_LABEL.match(label) for label in name.split(".")):
            r.error(path + ("searches", i), f"{short(text)} is not a DNS domain", "e.g. ns1.svc.cluster.local")
            continue
        searches.append(name)
    if len(items) > MAX_SEARCHES or len(" ".join(searches)) > MAX_SEARCH_CHARS:
        limit = f"at most {MAX_SEARCHES}, {MAX_SEARCH_CHARS} characters"
        r.error(path + ("searches",), "too many search domains", limit)
    options: List[Tuple[str, str]] = []
    for i, item in enumerate(r.sequence(data.get("options"), path + ("options",))):
        opath = path + ("options", i)
        option = r.mapping(item, opath, kf.DNS_CONFIG_OPTION)
        name_text = r.string(option.get("name"), opath + ("name",))
        if option.get("name") is None and isinstance(item, dict):
            r.missing(opath + ("name",), "the option's name is missing", "- {name: ndots, value: '2'}")
            continue
        value_text = r.string(option.get("value"), opath + ("value",), "") or ""
        if name_text is None:
            continue
        if not name_text or any(c.isspace() for c in name_text + value_text) or ":" in name_text:
            r.error(opath, f"{short(name_text)} is not a resolver option", "a word, e.g. ndots, with a value '2'")
            continue
        options.append((name_text, value_text))
    return DnsConfig(tuple(nameservers), tuple(searches), tuple(options))
