"""A pod's ``/etc/resolv.conf`` as the kubelet writes it, from its ``dnsPolicy`` and ``dnsConfig``, pure.

The kubelet's rules (``pkg/kubelet/network/dns``):

- ``ClusterFirst`` (the default): ``nameserver <cluster DNS>``, ``search <ns>.svc.<zone> svc.<zone> <zone>``,
  ``options ndots:5``. A hostNetwork pod, or a cluster without cluster DNS, gets ``Default`` instead.
- ``ClusterFirstWithHostNet``: the same, for hostNetwork pods too.
- ``Default``: the node's own resolver. Here the node's file is the machine's, which emu never copies or touches
  (its servers lie outside the emulation): the result is "" (no file: the pod sees the node's), or the
  ``dnsConfig`` entries alone when the pod gives some.
- ``None``: the ``dnsConfig`` entries alone.

``dnsConfig`` is merged last: its nameservers after the policy's (at most 3 in all), its search domains after
the policy's (duplicates dropped), its options replacing the policy's of the same name.

This module imports nothing of emu: the plan layer (``emu.plan.pods``) and the cluster DNS add-on use it.
"""

from typing import Any, Dict, List, Optional, Sequence

MAX_NAMESERVERS = 3
NDOTS = "5"


def kubelet_resolv_conf(
    namespace: str,
    policy: str,
    host_network: bool,
    config: Any,
    cluster_dns: Optional[str],
    domain: str,
) -> str:
    """The file's text ("" for the node's own resolver).

    config: the pod's dnsConfig (``nameservers``, ``searches``, ``options`` as (name, value) pairs), or None.
    cluster_dns: the kube-dns Service's address, None when the cluster has no cluster DNS.
    domain: the cluster domain (``cluster.local``).
    """
    if policy == "ClusterFirst" and host_network:
        policy = "Default"
    if policy in ("ClusterFirst", "ClusterFirstWithHostNet") and cluster_dns is None:
        policy = "Default"
    nameservers: List[str] = []
    searches: List[str] = []
    options: Dict[str, str] = {}
    if policy in ("ClusterFirst", "ClusterFirstWithHostNet"):
        nameservers = [str(cluster_dns)]
        searches = [f"{namespace}.svc.{domain}", f"svc.{domain}", domain]
        options = {"ndots": NDOTS}
    if config is not None:
        nameservers += [n for n in config.nameservers if n not in nameservers]
        searches += [s for s in config.searches if s not in searches]
        for name, value in config.options:
            options[name] = value
    if not (nameservers or searches or options):
        return ""
    return render(nameservers[:MAX_NAMESERVERS], searches, options)


def render(nameservers: Sequence[str], searches: Sequence[str], options: Dict[str, str]) -> str:
    lines = [f"nameserver {n}" for n in nameservers]
    if searches:
        lines.append("search " + " ".join(searches))
    if options:
        lines.append("options " + " ".join(f"{k}:{v}" if v else k for k, v in options.items()))
    return "\n".join(lines) + "\n"
