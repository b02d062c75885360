"""Typed access to the fields of one YAML document, recording every problem with its file, line and field.

``Reader`` is what every part of the loader (``emu.spec.cluster``, ``emu.spec.objects``) and every feature module
that owns fields of its own (a backend's options, an add-on's settings) validates with: it checks a value's type
and range, records a ``Problem`` at the value's line, and returns a safe value or None so that checks relating
one field to others can skip a field that is itself wrong (one mistake, one line).
"""

import difflib
import re
from ipaddress import IPv4Network, ip_address, ip_network
from typing import Any, Dict, Iterable, List, Optional, Set

from emu.spec.errors import Problem, dotted
from emu.spec.model import LinkProps
from emu.spec.yamlsrc import Document, FieldPath

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
DURATION = re.compile(r"^\d+(\.\d+)?(us|ms|s)$")
#: The fields of a link (``underlay.link``, a node's ``link``): Mininet TCLink's shaping.
LINK_FIELDS = {"bw", "delay", "jitter", "loss"}
EXAMPLE_NAMES = {"cluster": "my-cluster", "node": "node-1", "container": "app", "volume": "data", "port": "http"}

class Reader:
    """Typed access to one document's fields, recording problems with their lines."""

    def __init__(self, doc: Document, problems: List[Problem], notices: Set[str]) -> None:
        self.doc = doc
        self.problems = problems
        self.notices = notices
        self.misspelled: Set[FieldPath] = set()  # fields reported as "did you mean" (not again as missing)

    def error(self, path: FieldPath, message: str, hint: str = "") -> None:
        self.problems.append(Problem(self.doc.file, self.doc.line(path), dotted(path), message, hint))

    def missing(self, path: FieldPath, message: str, hint: str) -> None:
        """A required field is absent: an error, unless a misspelling of it was already reported."""
        if tuple(path) not in self.misspelled:
            self.error(path, message, hint)

    def warn(self, path: FieldPath, message: str, hint: str = "", severity: str = "warning") -> None:
        self.problems.append(Problem(self.doc.file, self.doc.line(path), dotted(path), message, hint, severity))

    def ignored(self, path: FieldPath, what: str) -> None:
        key = f"{what}"
        if key in self.notices:
            return
        self.notices.add(key)
        self.warn(path, f"'{what}' has no effect in emu and is ignored", severity="notice")

    def mapping(self, value: Any, path: FieldPath, allowed: Set[str], used: Optional[Set[str]] = None) -> Dict:
        """Check ``value`` is a mapping whose keys are known; note known-but-unused keys once."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.error(path, f"expected a mapping, got {type_name(value)}", "indented 'field: value' lines")
            return {}
        for key in value:
            if not isinstance(key, str) or key not in allowed:
                close = closest(str(key), allowed) if isinstance(key, str) else None
                if close is not None and close not in value:
                    self.misspelled.add(path + (close,))
                hint = f"did you mean '{close}'?" if close else "known fields: " + ", ".join(sorted(allowed))
                what = "unknown field" if isinstance(key, str) else f"a field name must be a string, not {short(key)}"
                self.error(path + (key,), what, hint)
            elif used is not None and key not in used:
                self.ignored(path + (key,), key)
        return {k: v for k, v in value.items() if isinstance(k, str) and k in allowed}

    def sequence(self, value: Any, path: FieldPath) -> List:
        if value is None:
            return []
        if not isinstance(value, list):
            self.error(path, f"expected a list, got {type_name(value)}", "'- item' lines, or [a, b]")
            return []
        return value

    def string(self, value: Any, path: FieldPath, default: Optional[str] = None) -> Optional[str]:
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            self.error(path, f"expected a string, got {type_name(value)}", 'quote it: "..."')
            return default
        return str(value)

    def integer(self, value: Any, path: FieldPath, low: int, high: int, default: Optional[int] = None) -> Optional[int]:
        """An integer in low..high; ``default`` when absent; None, with an error, when wrong (so that the checks
        relating it to other fields skip it)."""
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            hint = f"{low}..{high}"
            if isinstance(value, str) and value.strip().lstrip("-").isdigit():
                hint = f"write {value.strip()} without quotes"
            elif isinstance(value, float) and value.is_integer():
                hint = f"a whole number, {int(value)}"
            self.error(path, f"expected an integer, got {type_name(value)} {short(value)}", hint)
            return None
        if not low <= value <= high:
            self.error(path, f"{short(value)} is out of range", f"{low}..{high}")
            return None
        return value

    def number(self, value: Any, path: FieldPath, low: float, high: float) -> Optional[float]:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.error(path, f"expected a number, got {type_name(value)} {short(value)}", f"{low}..{high}")
            return None
        if not low <= value <= high:
            self.error(path, f"{short(value)} is out of range", f"{low}..{high}")
            return None
        return float(value)

    def boolean(self, value: Any, path: FieldPath, default: bool = False) -> bool:
        if value is None:
            return default
        if not isinstance(value, bool):
            self.error(path, f"expected true or false, got {short(value)}", "true or false, without quotes")
            return default
        return value

    def network(self, value: Any, path: FieldPath, default: str) -> Optional[IPv4Network]:
        """An IPv4 CIDR (``default`` when absent); None, with an error, when it is not one."""
        if value is None:
            return IPv4Network(default)
        text = self.string(value, path)
        if text is None:
            return None
        if "/" not in text:
            self.error(path, f"{short(text)} is not a CIDR (no prefix length)", f"e.g. {default}")
            return None
        try:
            net = ip_network(text, strict=False)
        except ValueError:
            self.error(path, f"{short(text)} is not a CIDR", f"e.g. {default}")
            return None
        if net.version != 4:
            self.error(path, f"{short(text)} is IPv6", f"emu emulates IPv4 networks, e.g. {default}")
            return None
        if net.network_address != ip_address(text.split("/")[0]):
            self.error(path, f"{text} has host bits set", f"use {net}")
        return IPv4Network(str(net))

    def name(
        self, value: Any, path: FieldPath, what: str, max_len: int = 63, letter_first: bool = False
    ) -> Optional[str]:
        """A DNS label (RFC 1123; RFC 1035 with ``letter_first``): the only names that reach the plan."""
        if value is None:
            self.missing(path, f"{what} name is missing", f"name: {EXAMPLE_NAMES.get(what, 'web')}")
            return None
        text = self.string(value, path)
        if text is None:
            return None
        rule = "lowercase letters, digits and '-', starting and ending with a letter or digit"
        if len(text) > max_len:
            self.error(path, f"{what} name {short(text)} is {len(text)} characters long", f"at most {max_len}")
            return None
        if not DNS_LABEL.match(text) or (letter_first and not text[0].isalpha()):
            if letter_first:
                rule = rule.replace("starting and ending with a letter or digit", "starting with a letter")
            self.error(path, f"{short(text)} is not a valid {what} name", rule)
            return None
        return text

    def link(self, value: Any, path: FieldPath) -> LinkProps:
        return self.link_fields(self.mapping(value, path, LINK_FIELDS), path)

    def link_fields(self, data: Dict, path: FieldPath) -> LinkProps:
        """The shaping fields (bw, delay, jitter, loss) of a mapping already checked for unknown fields."""
        delay = self.duration(data.get("delay"), path + ("delay",))
        jitter = self.duration(data.get("jitter"), path + ("jitter",))
        return LinkProps(
            bw=self.number(data.get("bw"), path + ("bw",), 0.001, 1000),
            delay=delay,
            jitter=jitter,
            loss=self.number(data.get("loss"), path + ("loss",), 0, 100),
        )

    def duration(self, value: Any, path: FieldPath) -> Optional[str]:
        if value is None:
            return None
        text = str(value) if not isinstance(value, bool) else ""
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            text = f"{value}ms"
        if not DURATION.match(text):
            self.error(path, f"{short(value)} is not a duration", "e.g. 5ms, 200us, 1s")
            return None
        return text


def type_name(value: Any) -> str:
    if value is None:
        return "nothing"
    names = {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
    }
    return names.get(type(value), f"a {type(value).__name__}")


def short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def closest(word: str, options: Iterable[str]) -> Optional[str]:
    match = difflib.get_close_matches(word, sorted(options), n=1, cutoff=0.6)
    if match:
        return match[0]
    lowered = {o.lower(): o for o in options}
    return lowered.get(word.lower())


def read_labels(r: Reader, value: Any, path: FieldPath) -> Dict[str, str]:
    """Labels (or a selector's matchLabels): keys ``[prefix/]name``, values of at most 63 characters."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        r.error(path, f"expected a mapping of labels, got {type_name(value)}", "e.g. {app: web}")
        return {}
    labels: Dict[str, str] = {}
    for key, val in value.items():
        if not label_key_ok(key):
            r.error(
                path + (key,),
                f"{short(key)} is not a label key",
                "an optional DNS prefix and '/', then at most 63 of A-Z a-z 0-9 - _ ., e.g. app.kubernetes.io/name",
            )
            continue
        text = r.string(val, path + (key,), "")
        if text is None:
            continue
        if len(text) > 63 or not LABEL_VALUE.match(text):
            r.error(path + (key,), f"{short(text)} is not a label value", "at most 63 of A-Z a-z 0-9 - _ .")
            continue
        labels[key] = text
    return labels


def label_key_ok(key: Any) -> bool:
    if not isinstance(key, str) or not key:
        return False
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not all(DNS_LABEL.match(part) for part in prefix.split("."))):
        return False
    return 0 < len(name) <= 63 and bool(LABEL_VALUE.match(name))
