"""Measure layer: ping and iperf3 runs between endpoints of a live cluster, parsed into typed results.

This package owns *what a measurement endpoint is* and how a measurement fails:

- ``Endpoint``: the duck type every measurement takes as source and destination (a pod, a container, a node,
  a Service, or a hand-made network namespace in a test). It has ``name``, ``ip``, ``node``, ``exec()`` and
  ``popen()``; nothing else is assumed.
- ``ExecResult`` (from ``emu.types``, shared with the apply layer): what ``Endpoint.exec`` returns.
- ``MeasurementError``: a measurement could not be made (tool missing, peer unreachable, iperf3 error, timeout).
  It carries the tool's own message.

The tools live in their own modules, each with a pure parser tested on real captured output:
``emu.measure.ping`` (``ping()``, ``parse_ping()``) and ``emu.measure.iperf`` (``iperf3()``,
``parse_iperf3_json()``). This layer imports nothing from the rest of emu but the shared ``emu.types``.

- ``python_module_argv``: the argv that runs one of emu's helper programs (a module with a ``main``, such as
  ``emu.measure.rr_peers``) inside an endpoint, with ``python3 -m``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import List, Optional

from emu.types import ExecResult

try:  # Python 3.8 has typing.Protocol; runtime_checkable lets isinstance() check the shape.
    from typing import Protocol, runtime_checkable
except ImportError:  # pragma: no cover - older Pythons are not supported, but stay importable
    Protocol = object  # type: ignore[assignment,misc]

    def runtime_checkable(cls):  # type: ignore[no-untyped-def]
        return cls


__all__ = [
    "Endpoint",
    "ExecResult",
    "MeasurementError",
    "run_checked_timeout",
    "python_module_argv",
    "TIMEOUT_STATUS",
]

#: The exit status an ``exec`` that gave up waiting reports (as GNU ``timeout`` does); see ``Endpoint.exec``.
TIMEOUT_STATUS = 124


class MeasurementError(RuntimeError):
    """A measurement could not be made; the message names the endpoints and quotes the tool's own error."""


@runtime_checkable
class Endpoint(Protocol):
    """Anything a measurement can start from or go to (a duck type: no base class to inherit).

    Attributes:
        name: a label for results and messages, e.g. ``"client"``, ``"client/sidecar"``, ``"svc/perf"``.
        ip: the address a peer reaches this endpoint at (a pod IP, ``127.0.0.1`` in the same pod, a ClusterIP).
        node: the name of the node the endpoint runs on, or ``""``.
    """

    name: str
    ip: str
    node: str

    def exec(self, argv: List[str], timeout: Optional[float] = None) -> ExecResult:
        """Run ``argv`` (a list, never a shell string) in the endpoint's network namespace and wait for it.

        On a timeout, either raise ``subprocess.TimeoutExpired`` or return an ``ExecResult`` with
        ``returncode == TIMEOUT_STATUS`` (124); the measurements accept both.
        """
        ...

    def popen(self, argv: List[str]) -> "subprocess.Popen":
        """Start ``argv`` in the endpoint's network namespace with stdout and stderr piped, and return at once.

        The returned process must be the program itself (exec'd, as ``ip netns exec``, ``nsenter`` without
        ``--fork`` and ``mnexec`` do), so that terminating it stops the program.
        """
        ...


def run_checked_timeout(endpoint: Endpoint, argv: List[str], timeout: Optional[float], what: str) -> ExecResult:
    """``endpoint.exec(argv, timeout)``, turning a timeout (raised or reported as exit 124) into
    ``MeasurementError`` naming ``what``. Other exit statuses are returned for the caller to judge."""
    within = f" within {timeout:g} s" if timeout is not None else ""
    try:
        result = endpoint.exec(argv, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise MeasurementError(f"{what}: no result{within} (timed out)") from None
    if result.returncode == TIMEOUT_STATUS:
        detail = (result.stderr or "").strip().splitlines()
        raise MeasurementError(f"{what}: no result{within} (timed out)" + (f": {detail[-1]}" if detail else ""))
    return result


#: The directory that holds the ``emu`` package (a helper program finds emu there, whatever its working directory).
PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent.parent)


def python_module_argv(module: str, *args: str) -> List[str]:
    """The argv that runs ``python3 -m module args...`` in an endpoint: the Python running emu, told where emu is.

    An endpoint's command starts with a working directory and an environment of its own (``/`` and a container's
    variables), so the package's directory is passed in ``PYTHONPATH`` by ``env``, which then execs Python: the
    process an endpoint's ``popen`` returns is the helper program itself.
    """
    return ["env", f"PYTHONPATH={PACKAGE_ROOT}", sys.executable, "-m", module, *args]
