"""Small types every layer shares: what a command run in a namespace gives back.

This module is the bottom of the layering (see docs/architecture.md): it imports only the standard library, and
both the apply layer (which runs commands) and the measure layer (which parses what they print) use it.
"""

from dataclasses import dataclass

__all__ = ["ExecResult"]


@dataclass(frozen=True)
class ExecResult:
    """The outcome of a command run to completion inside an endpoint's network namespace."""

    stdout: str
    stderr: str
    returncode: int

    @property
    def ok(self) -> bool:
        """True when the command exited 0."""
        return self.returncode == 0
