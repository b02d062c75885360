"""kube-proxy's modes, one module each: the Service rules every node carries, as pure data.

``services``: what every mode takes as input (Services, their ports and ready endpoints), kube-proxy's names and
the checks of its input; ``conntrack``: the connection-tracking entries kube-proxy deletes when UDP endpoints go
(every mode); ``iptables``: kube-proxy's iptables mode (KUBE-SERVICES, KUBE-SVC-*, KUBE-SEP-* chains);
``nftables``: kube-proxy's nftables mode (``table ip kube-proxy``: verdict maps, service-*/endpoint-* chains).
A mode module defines ``NAME``, ``KERNEL_NEEDS``, ``TOOLS``, ``node_tables`` and optionally ``node_nftables``
(see ``emu.features``).
"""
