"""Probing from inside a pod, as the e2e framework does: ``curl`` to the pod's own netexec ``/dial``.

``dial_once`` asks the stand-in of one pod (a test container, a netserver, the host-network test pod) to probe
``host:port`` over http or udp, and returns netexec's answer. ``collect`` repeats it, like the framework's
``DialFromContainer``: until every expected response has been seen (then it stops early), or ``max_tries``
dials; with ``exact`` it makes every try and the set seen must equal the expected one (an endpoint that must no
longer answer). ``Outcome.evidence`` says what was asked and what came back, in one paragraph.
"""

import json
import re
import shlex
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence
from urllib.parse import quote

#: Seconds a single try may take (netexec's own is 5; the emulated network answers in microseconds).
TRY_TIMEOUT = 1.0


@dataclass(frozen=True)
class Source:
    """Where probes are made from: a pod whose stand-in serves ``/dial`` on ``port``."""

    pod: str
    port: int
    ip: str
    node: str
    label: str  # how the evidence names it ("e2e-test-container-pod", "node-1 (host network)")


@dataclass
class Outcome:
    asked: str
    expected: List[str]
    seen: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    tries: int = 0
    ok: bool = False

    @property
    def missing(self) -> List[str]:
        return [e for e in self.expected if e not in self.seen]

    @property
    def unexpected(self) -> List[str]:
        return sorted(r for r in self.seen if r not in self.expected)

    @property
    def evidence(self) -> str:
        got = ", ".join(f"{r!r} x{n}" for r, n in sorted(self.seen.items())) or "no response"
        lines = [f"{self.asked}: {self.tries} tries; got {got}"]
        if self.missing:
            lines.append(f"missing: {', '.join(self.missing)}")
        if self.unexpected:
            lines.append(f"unexpected: {', '.join(self.unexpected)}")
        for error, count in self.errors.most_common(3):
            lines.append(f"error x{count}: {error}")
        return "\n".join(lines)


class DialFailed(Exception):
    """The probe itself could not be made (the source pod does not answer ``/dial``)."""


def dial_once(cluster: Any, source: Source, protocol: str, host: str, port: int, request: str = "hostname",
              tries: int = 1, timeout: float = TRY_TIMEOUT) -> Dict[str, Any]:
    """netexec's ``/dial`` answer from ``source``: ``{"responses": [...], "errors": [...]}``."""
    url = (f"http://127.0.0.1:{source.port}/dial?request={quote(request, safe='')}&protocol={protocol}"
           f"&host={host}&port={port}&tries={tries}&timeout={timeout:g}")
    budget = tries * timeout + 10
    result = cluster.pod(source.pod).exec(["curl", "-g", "-q", "-s", "-m", f"{budget:g}", url], timeout=budget + 5)
    if result.returncode != 0:
        raise DialFailed(f"curl {shlex.quote(url)} in {source.pod}: exit {result.returncode} {result.stderr.strip()}")
    try:
        answer = json.loads(result.stdout)
    except ValueError:
        raise DialFailed(f"{source.pod}'s /dial answered {result.stdout[:200]!r}") from None
    if not isinstance(answer, dict):
        raise DialFailed(f"{source.pod}'s /dial answered {result.stdout[:200]!r}")
    return answer


def collect(cluster: Any, source: Source, protocol: str, host: str, port: int, expected: Sequence[str],
            max_tries: int, request: str = "hostname", exact: bool = False, batch: Optional[int] = None) -> Outcome:
    """Dial until every response of ``expected`` was seen (``exact``: for ``max_tries`` tries, and nothing else
    may answer). Tries go ``batch`` at a time (default: one per expected response) to save execs."""
    shown = request if len(request) <= 40 else f"{request[:24]}...({len(request)} chars)"
    outcome = Outcome(f"{protocol} {host}:{port} {shown!r} from {source.label}", list(expected))
    step = batch or max(1, len(expected))
    while outcome.tries < max_tries:
        tries = min(step, max_tries - outcome.tries)
        try:
            answer = dial_once(cluster, source, protocol, host, port, request, tries)
        except DialFailed as exc:
            outcome.errors[str(exc)] += tries
            outcome.tries += tries
            continue
        outcome.tries += tries
        for response in answer.get("responses") or []:
            if response.strip():
                outcome.seen[response.strip()] += 1
        for error in answer.get("errors") or []:
            key = re.sub(r":\d+->", ":*->", error)  # one line for the same error from different source ports
            outcome.errors[key] += 1
        if not exact and not outcome.missing and not outcome.unexpected:
            break
    outcome.ok = not outcome.missing and not outcome.unexpected  # the set seen is the set expected
    return outcome


def max_tries(endpoints: int) -> int:
    """Enough tries to see every one of ``endpoints`` behind kube-proxy's random choice (for 2 endpoints, the
    chance to miss one in 16 tries is 1 in 30,000), and few enough that a broken path fails in seconds; a single
    endpoint that fails three times is not flaky."""
    return 3 if endpoints <= 1 else 5 * endpoints + 6
