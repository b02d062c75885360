"""A pod's ``topologySpreadConstraints``, as far as one machine's scheduler can honour them.

A constraint over ``kubernetes.io/hostname`` with a ``labelSelector.matchLabels`` makes the scheduler
(``emu.spec.load``) put the pod on a node with the fewest pods its selector matches (then the fewest pods), as
``maxSkew: 1`` would; other topology keys (zones: every node is its own here) and ``matchExpressions`` are
noticed and ignored. The cluster DNS Deployment uses one to spread its two replicas over two nodes.
"""

from typing import Any, Dict, List, Tuple

from emu.spec import kube_fields as kf
from emu.spec.reader import Reader
from emu.spec.yamlsrc import FieldPath


def read_spread(r: Reader, spec: Dict[str, Any], path: FieldPath, read_labels: Any) -> Tuple[Tuple[str, str], ...]:
    """The labels of the first hostname constraint (empty when there is none).

    read_labels: ``emu.spec.objects.read_labels`` (the loader's label reader).
    """
    spread: List[Tuple[str, str]] = []
    items = r.sequence(spec.get("topologySpreadConstraints"), path + ("topologySpreadConstraints",))
    for i, item in enumerate(items):
        cpath = path + ("topologySpreadConstraints", i)
        data = r.mapping(item, cpath, kf.SPREAD_CONSTRAINT, kf.SPREAD_CONSTRAINT_USED)
        key = r.string(data.get("topologyKey"), cpath + ("topologyKey",))
        r.integer(data.get("maxSkew"), cpath + ("maxSkew",), 1, 1000)
        when = r.string(data.get("whenUnsatisfiable"), cpath + ("whenUnsatisfiable",), "DoNotSchedule")
        if when not in ("DoNotSchedule", "ScheduleAnyway"):
            r.error(cpath + ("whenUnsatisfiable",), f"{when!r} is not a policy", "DoNotSchedule or ScheduleAnyway")
        selector = r.mapping(data.get("labelSelector"), cpath + ("labelSelector",), kf.LABEL_SELECTOR)
        labels = read_labels(r, selector.get("matchLabels"), cpath + ("labelSelector", "matchLabels"))
        if key != kf.HOSTNAME_KEY:
            r.warn(cpath + ("topologyKey",), f"only {kf.HOSTNAME_KEY} spreads pods here", severity="notice")
        elif labels and not spread:
            spread = sorted(labels.items())
    return tuple(spread)
