"""Add-ons: features a cluster runs beside the pod network itself (stand-in servers, cluster DNS, policies).

Each add-on is a module or package named in ``emu.registry.ADDONS``; docs/architecture.md lists its contract
(settings under the cluster's ``addons:``, the kinds it reads, its plan fragment, its live hooks).
"""
