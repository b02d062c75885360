"""The Plan layer: every name, address, MAC, route, neighbour/FDB entry, bridge port and iptables rule of a
cluster, computed as plain data from a Spec before anything runs.

Pure and deterministic: it imports only the standard library and runs no command. ``emu.plan.build.build_plan``
is the entry point; ``emu.backends`` holds one module per flannel backend and ``emu.proxy.iptables`` the
Service rules.
"""
