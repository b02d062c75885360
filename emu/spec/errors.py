"""Problems found in user input, reported all at once with file, line and field.

One problem prints as one line, in the form editors and CI logs understand::

    FILE:LINE: field.path: what is wrong (what would be right)
    FILE:LINE: warning: field.path: ...        (and "notice:" for ignored Kubernetes fields)
    FILE: what is wrong (what would be right)  (no line applies: a missing file, an empty one)

A problem with a line but no field (a YAML syntax error at the top of a document, bytes that are not UTF-8) names
the field ``(document)``, so every located line has the same three parts.
"""

import json
import re
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence

DOCUMENT_FIELD = "(document)"
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_./<>-]+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def dotted(path: Sequence[Any]) -> str:
    """A field path as text: ``spec.containers[0].ports[1].containerPort``.

    Keys that are not plain words (spaces, colons, quotes, empty) are written as ``["key"]`` so that a line
    still splits into its parts.
    """
    out = ""
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        elif isinstance(part, str) and _PLAIN_KEY.match(part) and len(part) <= 80:
            out += ("." if out else "") + part
        else:
            text = part if isinstance(part, str) else str(part)
            if len(text) > 40:
                text = text[:37] + "..."
            out += "[" + json.dumps(text) + "]"
    return out


@dataclass(frozen=True)
class Problem:
    """One thing wrong (or worth a warning) in an input file."""

    file: str
    line: Optional[int]
    field: str
    message: str
    hint: str = ""
    severity: str = "error"  # "error" | "warning" | "notice"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        field = self.field or (DOCUMENT_FIELD if self.line else "")
        text = f"{field + ': ' if field else ''}{self.message}"
        if self.hint:
            text += f" ({self.hint})"
        if self.severity != "error":
            text = f"{self.severity}: {text}"
        return _printable(f"{where}: {text}")


def _printable(text: str) -> str:
    """One line, and no terminal escape sequences: control characters from a hostile file are shown as \\xNN."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


class SpecError(Exception):
    """Raised when input files are invalid; carries every problem found (errors and warnings)."""

    def __init__(self, problems: List[Problem]) -> None:
        self.problems = problems
        errors = [p for p in problems if p.severity == "error"]
        super().__init__("\n".join(str(p) for p in errors) or "invalid input")

    @property
    def errors(self) -> List[Problem]:
        return [p for p in self.problems if p.severity == "error"]
