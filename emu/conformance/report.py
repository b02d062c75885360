"""What ``emu conformance`` reports: a table for people, JUnit XML for programs (as sonobuoy's e2e plugin writes).

A ``Result`` is one upstream check's outcome: ``PASS``, ``FAIL`` with the evidence (what was asked, what came
back, and why, from the live state), or ``SKIP`` with the reason. ``table`` prints one line per check plus the
evidence of the failures and the reasons of the skips; ``junit`` writes the ``junit_01.xml`` shape that sonobuoy
collects from the Kubernetes e2e suite (one ``testcase`` per check, named as upstream names it, with a
``failure`` or ``skipped`` element), so tools that read sonobuoy's results read these.
"""

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import List, Sequence

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"
SUITE = "Kubernetes e2e suite"


@dataclass
class Result:
    name: str  # the upstream check's full name, e.g. "[sig-network] Services should ... [Conformance]"
    status: str  # PASS | FAIL | SKIP
    evidence: str = ""  # FAIL: what went wrong and why; SKIP: why it was not run
    seconds: float = 0.0


def summary(results: Sequence[Result]) -> str:
    counts = {s: sum(1 for r in results if r.status == s) for s in (PASS, FAIL, SKIP)}
    return f"{counts[PASS]} passed, {counts[FAIL]} failed, {counts[SKIP]} skipped"


def table(results: Sequence[Result], header: str = "") -> str:
    """One line per check (status, seconds, name), then every failure's evidence and every skip's reason."""
    lines: List[str] = [header] if header else []
    for r in results:
        lines.append(f"{r.status:4s} {r.seconds:5.1f}s  {r.name}")
    detailed = [r for r in results if r.status != PASS and r.evidence]
    if detailed:
        lines.append("")
    for r in detailed:
        lines.append(f"{r.status} {r.name}")
        lines += ["    " + line for line in r.evidence.splitlines()]
    lines.append("")
    lines.append(summary(results))
    return "\n".join(lines) + "\n"


def junit(results: Sequence[Result], properties: Sequence[tuple] = ()) -> str:
    """The results as JUnit XML, in the layout of the e2e suite's junit_01.xml that sonobuoy collects."""
    failures = sum(1 for r in results if r.status == FAIL)
    skipped = sum(1 for r in results if r.status == SKIP)
    total = f"{sum(r.seconds for r in results):.3f}"
    suites = ET.Element("testsuites", tests=str(len(results)), disabled=str(skipped), errors="0",
                        failures=str(failures), time=total)
    suite = ET.SubElement(suites, "testsuite", name=SUITE, package="emu conformance", tests=str(len(results)),
                          disabled="0", skipped=str(skipped), errors="0", failures=str(failures), time=total,
                          timestamp=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"))
    props = ET.SubElement(suite, "properties")
    for key, value in properties:
        ET.SubElement(props, "property", name=str(key), value=str(value))
    for r in results:
        status = {PASS: "passed", FAIL: "failed", SKIP: "skipped"}[r.status]
        case = ET.SubElement(suite, "testcase", name=r.name, classname=SUITE, status=status, time=f"{r.seconds:.3f}")
        if r.status == FAIL:
            first = r.evidence.splitlines()[0] if r.evidence else "failed"
            failure = ET.SubElement(case, "failure", message=first, type="failed")
            failure.text = r.evidence
        elif r.status == SKIP:
            ET.SubElement(case, "skipped", message=r.evidence or "skipped")
    _indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def _indent(element: ET.Element, level: int = 0) -> None:
    """Pretty-print in place (``ElementTree.indent`` is Python 3.9+)."""
    pad = "\n" + "  " * level
    children = list(element)
    if children:
        if not (element.text or "").strip():
            element.text = pad + "  "
        for child in children:
            _indent(child, level + 1)
            if not (child.tail or "").strip():
                child.tail = pad + "  "
        children[-1].tail = pad
