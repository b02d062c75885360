"""kube-proxy's modes, one module each: the Service rules every node carries, as pure data.

``services``: what every mode takes as input (Services, their ports and ready endpoints) and kube-proxy's names;
``iptables``: kube-proxy's iptables mode (KUBE-SERVICES, KUBE-SVC-*, KUBE-SEP-* chains).
A mode module defines ``NAME``, ``KERNEL_NEEDS``, ``TOOLS`` and ``node_tables`` (see ``emu.features``).
"""
