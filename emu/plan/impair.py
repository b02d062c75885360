"""Link impairments at run time, as plan data: which link ends exist, what is asked of one, and the commands for it.

Pure: nothing here runs a command (``emu.apply.impair`` does). A *link end* is one side of an underlay link: a
node's ``eth0``, a router's interface, or the switch port facing either (the segment's end). What an end is given
shapes what leaves it (its egress), as ``tc`` on that device does: ``link node-1 loss=1%`` drops 1 % of what
node-1 sends on its link, ``link switch:node-1 bw=10`` limits what the switch sends to node-1 (on a routed
underlay the segment's name stands for its switch: ``link rack-a:node-1``). ``up``/``down`` act on the whole link
(the switch port goes down: the cable is pulled; the other end sees its carrier go).

How each property is made:

- ``bw`` (Mbit/s): an HTB qdisc at the root of the end's device (``handle 5:``, class ``5:1``, burst 15k: what
  Mininet's TCLink makes at build time); a rate change is one ``tc class change``, in place;
- ``delay``, ``jitter``, ``loss`` with the kernel's netem: a netem qdisc (``handle 10:``) under HTB's class, or at
  the root;
- ``loss`` without netem: random drop rules (``iptables -m statistic --mode random``) in the mangle table's
  ``EMU-LINK`` chain (from PREROUTING) of every namespace that receives from the end, matching the end's MAC where
  others share the segment. The end's device stops segmentation offload (GSO/TSO off), so each packet, not each
  64 KB burst, is a drop candidate, as on a wire; only IPv4 packets are dropped (ARP passes);
- ``delay`` and ``jitter`` without netem are refused, with the reason.
"""

import re
from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Sequence, Tuple

from emu.errors import EnvironmentProblem, InputError
from emu.plan.model import DEFAULT_SEGMENT, Plan

#: The mangle-table chain holding a namespace's random drop rules.
LOSS_CHAIN = "EMU-LINK"
HTB_HANDLE, HTB_CLASS, NETEM_HANDLE = "5:", "5:1", "10:"
BURST = "15k"
_DURATION = re.compile(r"^\d+(\.\d+)?(us|ms|s)$")
_CLEAR = ("none", "off", "-")


class ImpairError(InputError):
    """A ``link`` request that cannot be understood: an unknown end, a bad value (exit status 2)."""


class ImpairRefused(EnvironmentProblem):
    """A ``link`` request this kernel cannot honour (delay or jitter without netem), with the reason (exit 1)."""


@dataclass(frozen=True)
class Impairment:
    """What a link end is given: bandwidth (Mbit/s), delay and jitter (like '5ms'), loss (percent), and whether
    its link is up. None: not impaired."""

    bw: Optional[float] = None
    delay: Optional[str] = None
    jitter: Optional[str] = None
    loss: Optional[float] = None
    up: bool = True

    @property
    def needs_netem(self) -> bool:
        return bool(self.delay or self.jitter)

    def describe(self) -> str:
        parts = []
        if self.bw is not None:
            parts.append(f"bw {self.bw:g} Mbit/s")
        if self.delay:
            parts.append(f"delay {self.delay}")
        if self.jitter:
            parts.append(f"jitter {self.jitter}")
        if self.loss:
            parts.append(f"loss {self.loss:g}%")
        if not self.up:
            parts.append("down")
        return ", ".join(parts) or "unimpaired"


@dataclass(frozen=True)
class LinkEnd:
    """One side of an underlay link.

    owner, kind: the node, router or segment (its switch) this end belongs to; peer: who is at the other end.
    dev: the device (a switch port for a segment's end); namespace: ``node:<name>`` or ``router:<name>``, "" for
    the root namespace (switch ports). mac: the device's MAC ("" for a switch port: it forwards others' frames).
    switch_port: the link's switch port (the link's name; ``down`` sets it down). segment: the link's segment.
    planned: the shaping the topology gave it (built by Mininet's TCLink).
    """

    owner: str
    kind: str
    peer: str
    dev: str
    namespace: str
    mac: str
    switch_port: str
    segment: str
    planned: Impairment = field(default_factory=Impairment)

    @property
    def name(self) -> str:
        return f"{self.owner}:{self.peer}"


def link_ends(plan: Plan) -> Tuple[LinkEnd, ...]:
    """Every end of every underlay link of ``plan``: per node and router port its own end and the switch's."""
    links = [(n.name, "node", n.segment or DEFAULT_SEGMENT, n.link) for n in plan.nodes]
    links += [(r.name, "router", p.segment, p) for r in plan.routers for p in r.ports]
    ends: List[LinkEnd] = []
    for owner, kind, segment, link in links:
        planned = Impairment(link.bw, link.delay, link.jitter, link.loss)
        ends.append(LinkEnd(owner, kind, segment, link.dev, f"{kind}:{owner}", link.mac, link.switch_port, segment,
                            planned))
        ends.append(LinkEnd(segment, "segment", owner, link.switch_port, "", "", link.switch_port, segment, planned))
    return tuple(ends)


def receivers(ends: Sequence[LinkEnd], end: LinkEnd) -> Tuple[Tuple[str, str], ...]:
    """(namespace, device) of everything that receives what ``end`` sends: for a node's or router's end, every
    other node and router on its segment; for a switch's end, the one it faces. Drop rules stand in for netem's
    loss there."""
    if end.kind == "segment":
        return tuple((e.namespace, e.dev) for e in ends if e.switch_port == end.switch_port and e.kind != "segment")
    return tuple((e.namespace, e.dev) for e in ends
                 if e.kind != "segment" and e.segment == end.segment and e.owner != end.owner)


def select(ends: Sequence[LinkEnd], target: str) -> Tuple[LinkEnd, ...]:
    """The ends ``target`` names: ``A`` (every end of node, router or segment A) or ``A:B`` (A's end of its link
    to B). Raises ImpairError naming what exists."""
    owner, _, peer = target.partition(":")
    owners = list(dict.fromkeys(e.owner for e in ends))
    if owner not in owners:
        raise ImpairError(f"no node, router or segment named {owner!r} (known: {', '.join(owners)})")
    chosen = tuple(e for e in ends if e.owner == owner and (not peer or e.peer == peer))
    if not chosen:
        peers = ", ".join(f"{owner}:{e.peer}" for e in ends if e.owner == owner)
        raise ImpairError(f"{owner} has no link to {peer!r} (its links: {peers})")
    return chosen


UNCHANGED = "unchanged"


@dataclass(frozen=True)
class Change:
    """A ``link`` request: each property a new value, None (cleared) or ``UNCHANGED``; ``up`` True/False/None;
    ``reset``: back to the planned shaping first."""

    bw: object = UNCHANGED
    delay: object = UNCHANGED
    jitter: object = UNCHANGED
    loss: object = UNCHANGED
    up: Optional[bool] = None
    reset: bool = False

    @property
    def empty(self) -> bool:
        values = (self.bw, self.delay, self.jitter, self.loss)
        return all(v == UNCHANGED for v in values) and self.up is None and not self.reset


def parse_change(words: Sequence[str]) -> Change:
    """``bw=M`` (Mbit/s), ``delay=D``, ``jitter=J`` (``5ms``, ``200us``, ``1s``; a bare number is ms), ``loss=P%``,
    ``up``, ``down``, ``reset``; ``KEY=none`` clears a property. Raises ImpairError for anything else."""
    values: Dict[str, object] = {}
    up: Optional[bool] = None
    reset = False
    for word in words:
        key, sep, value = word.partition("=")
        key = key.strip().lower()
        if not sep:
            if key in ("up", "down"):
                up = key == "up"
            elif key == "reset":
                reset = True
            else:
                raise ImpairError(f"{word!r} is not a link property (bw=M, delay=D, jitter=J, loss=P%, up, down, "
                                  "reset)")
            continue
        values[key] = _value(key, value.strip())
    return Change(**values, up=up, reset=reset)  # type: ignore[arg-type]


def change_of(bw: object = UNCHANGED, delay: object = UNCHANGED, jitter: object = UNCHANGED,
              loss: object = UNCHANGED, up: Optional[bool] = None, reset: bool = False) -> Change:
    """A Change from Python values (``cluster.link(..., bw=20, loss=1)``), checked like the CLI's words."""
    given = {"bw": bw, "delay": delay, "jitter": jitter, "loss": loss}
    values = {k: (v if v == UNCHANGED else _value(k, "none" if v is None else str(v))) for k, v in given.items()}
    return Change(**values, up=up, reset=reset)  # type: ignore[arg-type]


def _value(key: str, text: str) -> object:
    """One property's value from text; None to clear it."""
    if key not in ("bw", "delay", "jitter", "loss"):
        raise ImpairError(f"{key!r} is not a link property (bw, delay, jitter, loss)")
    if text.lower() in _CLEAR:
        return None
    if key == "bw":
        number = _number(key, re.sub(r"(?i)\s*mbit(/s)?$", "", text), "Mbit/s, e.g. bw=20")
        if not 0.001 <= number <= 100000:
            raise ImpairError(f"bw={text}: out of range (0.001..100000 Mbit/s)")
        return number
    if key == "loss":
        number = _number(key, text.rstrip("%"), "percent, e.g. loss=1%")
        if not 0 <= number <= 100:
            raise ImpairError(f"loss={text}: out of range (0..100 %)")
        return number or None
    if re.match(r"^\d+(\.\d+)?$", text):
        text += "ms"
    if not _DURATION.match(text):
        raise ImpairError(f"{key}={text}: not a duration (e.g. 5ms, 200us, 1s)")
    return None if float(re.sub(r"[a-z]+$", "", text)) == 0 else text


def _number(key: str, text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ImpairError(f"{key}={text}: not a number ({what})") from None


def updated(current: Impairment, change: Change, planned: Impairment) -> Impairment:
    """``current`` after ``change`` (from ``planned`` when the change resets)."""
    base = replace(planned, up=current.up) if change.reset else current
    values = {k: getattr(change, k) for k in ("bw", "delay", "jitter", "loss") if getattr(change, k) != UNCHANGED}
    result = replace(base, **values)
    if change.up is not None:
        result = replace(result, up=change.up)
    if result.jitter and not result.delay:
        raise ImpairError("jitter needs a delay to vary (give delay=D too)")
    return result


def refusal(new: Impairment, netem: bool) -> Optional[str]:
    """Why ``new`` cannot be made on a kernel with or without netem (None: it can)."""
    if netem or not new.needs_netem:
        return None
    asked = [k for k in ("delay", "jitter") if getattr(new, k)]
    verb = "needs" if len(asked) == 1 else "need"
    return (f"{' and '.join(asked)} {verb} the kernel's netem qdisc (sch_netem), and this kernel has none (emu "
            "doctor: link delay/loss unavailable): bandwidth (bw, HTB) and loss (random drop rules) work without "
            "it; use a kernel with netem, such as the Mininet VM's, for delay")


def tc_commands(dev: str, old: Impairment, new: Impairment, netem: bool) -> List[List[str]]:
    """The ``tc`` argv lists turning ``dev``'s qdiscs from ``old`` to ``new`` (netem's part only with netem)."""
    old_netem = netem and bool(old.delay or old.loss)
    new_netem = netem and bool(new.delay or new.loss)
    args = _netem_args(new)
    if (old.bw is not None) == (new.bw is not None) and old_netem == new_netem:
        cmds: List[List[str]] = []
        if new.bw is not None and new.bw != old.bw:
            cmds.append(["tc", "class", "change", "dev", dev, "parent", HTB_HANDLE, "classid", HTB_CLASS, "htb",
                         "rate", f"{new.bw:g}mbit", "burst", BURST])
        if new_netem and _netem_args(old) != args:
            parent = ["parent", HTB_CLASS] if new.bw is not None else ["root"]
            cmds.append(["tc", "qdisc", "change", "dev", dev] + parent + ["handle", NETEM_HANDLE, "netem"] + args)
        return cmds
    cmds = []
    if old.bw is not None or old_netem:
        cmds.append(["tc", "qdisc", "del", "dev", dev, "root"])
    parent = ["root"]
    if new.bw is not None:
        cmds.append(["tc", "qdisc", "add", "dev", dev, "root", "handle", HTB_HANDLE, "htb", "default", "1"])
        cmds.append(["tc", "class", "add", "dev", dev, "parent", HTB_HANDLE, "classid", HTB_CLASS, "htb", "rate",
                     f"{new.bw:g}mbit", "burst", BURST])
        parent = ["parent", HTB_CLASS]
    if new_netem:
        cmds.append(["tc", "qdisc", "add", "dev", dev] + parent + ["handle", NETEM_HANDLE, "netem"] + args)
    return cmds


def _netem_args(imp: Impairment) -> List[str]:
    args: List[str] = []
    if imp.delay:
        args += ["delay", imp.delay] + ([imp.jitter] if imp.jitter else [])
    if imp.loss:
        args += ["loss", f"{imp.loss:g}%"]
    return args


def offload_commands(dev: str, old: Impairment, new: Impairment) -> List[List[str]]:
    """Segmentation offload off while the end drops packets (each packet a drop candidate), on again after."""
    if bool(old.loss) == bool(new.loss):
        return []
    state = "off" if new.loss else "on"
    return [["ethtool", "-K", dev, "gso", state, "tso", state]]


def drop_rules(ends: Sequence[Tuple[LinkEnd, Impairment]], every: Sequence[LinkEnd]) -> Dict[str, List[str]]:
    """namespace -> the ``EMU-LINK`` rules (iptables-save lines) that drop each of ``ends``' ``loss`` at its
    receivers (``every``: all the cluster's ends), for a kernel without netem. Every namespace an end reaches is
    a key (an empty list: no rules left)."""
    rules: Dict[str, List[str]] = {}
    for end, imp in ends:
        for namespace, dev in receivers(every, end):
            rules.setdefault(namespace, [])
            if not imp.loss:
                continue
            rule = f"-A {LOSS_CHAIN} -i {dev}"
            if end.mac:
                rule += f" -m mac --mac-source {end.mac}"
            rule += f" -m statistic --mode random --probability {imp.loss / 100:.6g} -j DROP"
            rules[namespace].append(rule)
    return rules


def drop_document(rules: Sequence[str]) -> str:
    """The ``iptables-restore --noflush`` document that sets ``EMU-LINK`` to ``rules`` (declaring it flushes it)."""
    return "*mangle\n" + f":{LOSS_CHAIN} - [0:0]\n" + "".join(r + "\n" for r in rules) + "COMMIT\n"
