"""kube-proxy's modes, one module each: the Service rules every node carries, as pure data.

``iptables``: kube-proxy's iptables mode (KUBE-SERVICES, KUBE-SVC-*, KUBE-SEP-* chains).
"""
