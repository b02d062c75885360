"""``emu break``: realistic faults injected into a running cluster, for troubleshooting exercises (lab 8).

- ``model``: the form of a scenario (``targets``, ``inject``, ``problems``, ``fix``: data and steps over the
  cluster API) and the ``Fault`` record; the live-state readers scenarios share.
- ``dataplane``: a pod MTU larger than the overlay allows, a missing FDB or neighbour entry, a deleted route, a
  frozen backend daemon, strict reverse-path filtering on an asymmetric path.
- ``netfilter``: ``bridge-nf-call-iptables`` off, a full conntrack table, a missing KUBE-SEP DNAT rule.
- ``conntrack``: the program that fills a node's conntrack table through ctnetlink (run in the node).
- ``policy``: a NetworkPolicy re-applied with a typo in an allow rule's label (through the controller).
- ``catalog``: every scenario; ``choose`` (by name or at random, reproducible by seed); ``survey`` (the live
  state against the plan wherever a fault could be) and ``traffic`` (real packets), which lab 8 grades with.
- ``command``: the ``break`` command at the ``emu>`` prompt and the ``emu break`` verb, which reaches the
  cluster's own process from another shell (``emu.control``).
"""
