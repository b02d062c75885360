"""The Apply layer: the only code that runs privileged commands or imports Mininet.

It realises a Plan on real kernel parts (``cluster``: Mininet nodes, pods, containers, flannel, kube-proxy
rules) and removes it again (teardown, ``clean``), leaving nothing behind.
"""
