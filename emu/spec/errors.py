"""Problems found in user input, reported all at once with file, line and field."""

from dataclasses import dataclass
from typing import List, Optional


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
        text = f"{where}: {self.field + ': ' if self.field else ''}{self.message}"
        if self.hint:
            text += f" ({self.hint})"
        if self.severity != "error":
            text = f"{where}: {self.severity}: " + text[len(where) + 2 :]
        return text


class SpecError(Exception):
    """Raised when input files are invalid; carries every problem found (errors and warnings)."""

    def __init__(self, problems: List[Problem]) -> None:
        self.problems = problems
        errors = [p for p in problems if p.severity == "error"]
        super().__init__("\n".join(str(p) for p in errors) or "invalid input")

    @property
    def errors(self) -> List[Problem]:
        return [p for p in self.problems if p.severity == "error"]
