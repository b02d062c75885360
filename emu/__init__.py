"""emu: Kubernetes pod networking, emulated on Mininet.

Data flows one way: YAML --load--> Spec --plan--> Plan --apply--> live Cluster --measure--> rows --> CSV --> plots.

This package root only re-exports the public API, lazily, so that ``import emu`` (and the pure layers: spec,
plan, report) never imports Mininet. ``emu.Cluster`` is the live cluster (the controller over the apply layer,
needs root); ``emu.ping`` and ``emu.iperf3`` are the measurement helpers.
"""

from typing import Any

__version__ = "0.1.0"

__all__ = ["Cluster", "ping", "iperf3", "load", "build_plan", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Cluster":
        from emu.controller import Cluster

        return Cluster
    if name == "ping":
        from emu.measure.ping import ping

        return ping
    if name == "iperf3":
        from emu.measure.iperf import iperf3

        return iperf3
    if name == "load":
        from emu.spec.load import load

        return load
    if name == "build_plan":
        from emu.plan.build import build_plan

        return build_plan
    raise AttributeError(f"module 'emu' has no attribute {name!r}")
