"""Add-ons: features a cluster may enable under ``addons:`` in its cluster object (see docs/architecture.md).

Each add-on is a module or package named in ``emu.registry.ADDONS``; it owns its settings, the Kubernetes kinds it
reads from manifests, its plan fragment and its live steps.
"""
