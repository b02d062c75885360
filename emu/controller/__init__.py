"""The controller: holds a running cluster's desired state and turns changes into plan differences.

``emu.Cluster`` (``emu.controller.cluster.Cluster``) is what users, experiments, labs and the CLI hold. It is
made from one Plan (``Cluster(plan)``, or ``Cluster.from_file(path)`` which loads and plans once), builds it
through the apply layer, and while it runs takes changes (add or delete a pod, apply a manifest; a pause process
dying): each is validated by the spec layer, re-planned purely (``emu.plan.changes.replan``), and handed to the
apply layer as a ``PlanDiff``. ``placements`` picks the standard measurement paths from a live cluster.
"""

from emu.controller.cluster import Cluster

__all__ = ["Cluster"]
