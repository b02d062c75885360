"""The bad-input corpus: every file under tests/bad/ through ``python -m emu validate``, as a user would run it.

Each case is one small malformed or hostile topology. Its leading comment block says what must be reported::

    # expect: network.podCIDR: host bits set      an error line with this field path containing this phrase
    # expect: -: no such file                     an error with no field and no line ("FILE: message")
    # expect: (document): not UTF-8               an error with a line but no field
    # errors: 3                                   exactly this many error lines
    # warning: spec.selector: selects no pod      (no "expect" lines: the file is valid, exit 0, with this warning)
    # notice: spec.containers[0].resources: ...   a notice line; "# notices: N" counts them exactly

Every run must exit 2 (0 for the warning cases), print no traceback, and print every problem as
``FILE:LINE: field.path: message (hint)`` (or ``FILE: message (hint)`` where no line applies). Files under
tests/bad/parts/ are manifests named by cases, not cases themselves. A few cases (an empty file, a 5 MB file, a
directory, a missing file, a device) are made here rather than committed.

No root needed. The last tests prove that no name, command or tag in a topology ever reaches a shell.
"""

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
BAD = ROOT / "tests" / "bad"
PWNED = Path("/tmp/emu-pwned")

_FIELD = r"(?:\(document\)|(?:[A-Za-z0-9_./<>-]+|\[\d+\]|\[\"(?:[^\"\\]|\\.)*\"\])+)"
LOCATED = re.compile(
    r"^(?P<file>[^\s:][^:]*):(?P<line>[1-9][0-9]*): (?:(?P<severity>warning|notice): )?"
    rf"(?P<field>{_FIELD}): (?P<text>.+)$"
)
UNLOCATED = re.compile(r"^(?P<file>[^\s:][^:]*): (?P<text>.+)$")
HINTED = re.compile(r"^.+ \(.+\)$")
SUMMARY = re.compile(r"^invalid \(\d+ errors?\)$")
VALID = re.compile(r": valid: cluster ")


@dataclass
class Line:
    """One problem line of emu's output, split into its parts."""

    file: str
    line: Optional[int]
    severity: str
    field: str
    text: str


@dataclass
class Expectation:
    errors: List[Tuple[str, str]] = field(default_factory=list)
    error_count: Optional[int] = None
    warnings: List[Tuple[str, str]] = field(default_factory=list)
    notices: List[Tuple[str, str]] = field(default_factory=list)
    notice_count: Optional[int] = None

    @property
    def valid(self) -> bool:
        return not self.errors


def read_expectation(path: Path) -> Expectation:
    """The expectations in the file's leading comment block (read as bytes: some cases are not UTF-8)."""
    exp = Expectation()
    for raw in path.read_bytes().split(b"\n"):
        text = raw.decode("latin-1").rstrip("\r")
        if not text.startswith("#"):
            break
        key, sep, rest = text[1:].strip().partition(":")
        if not sep:
            continue
        rest = rest.strip()
        if key == "errors":
            exp.error_count = int(rest)
        elif key == "notices":
            exp.notice_count = int(rest)
        elif key in ("expect", "warning", "notice"):
            where, sep, phrase = rest.partition(": ")
            assert sep, f"{path.name}: '# {key}:' needs 'FIELD: PHRASE', got {rest!r}"
            {"expect": exp.errors, "warning": exp.warnings, "notice": exp.notices}[key].append((where, phrase))
    return exp


def parse_output(output: str) -> Tuple[List[Line], List[str]]:
    """The problem lines of emu's output, and any line that has neither accepted form."""
    lines: List[Line] = []
    malformed: List[str] = []
    for text in output.splitlines():
        if not text.strip() or VALID.search(text):
            continue
        located = LOCATED.match(text)
        if located:
            lines.append(
                Line(
                    located["file"],
                    int(located["line"]),
                    located["severity"] or "error",
                    located["field"],
                    located["text"],
                )
            )
            continue
        unlocated = UNLOCATED.match(text)
        if unlocated and not re.match(r"^\d+: ", unlocated["text"]):
            if SUMMARY.match(unlocated["text"]):
                continue
            lines.append(Line(unlocated["file"], None, "error", "-", unlocated["text"]))
            continue
        malformed.append(text)
    return lines, malformed


def run_emu(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "emu", *args],
        cwd=str(ROOT),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        timeout=timeout,
    )


def check(path_arg: str, exp: Expectation, proc: Optional[subprocess.CompletedProcess] = None) -> List[Line]:
    """Run ``emu validate`` on ``path_arg`` (unless ``proc`` is that run already) and assert everything a bad (or
    warning) case promises."""
    if proc is None:
        proc = run_emu("validate", path_arg)
    output = proc.stdout + proc.stderr
    context = f"emu validate {path_arg} said:\n{output}"
    assert "Traceback" not in output, context
    assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f]", output), f"control characters in the output\n{context!r}"
    assert proc.returncode == (0 if exp.valid else 2), context
    lines, malformed = parse_output(output)
    assert not malformed, f"lines not of the form FILE:LINE: field: message (hint):\n{malformed}\n{context}"
    errors = [p for p in lines if p.severity == "error"]
    for problem in lines:
        if problem.severity == "error":
            assert HINTED.match(problem.text), f"an error without a (hint): {problem}\n{context}"
        if problem.line is not None:
            named = ROOT / problem.file
            if named.is_file():
                count = named.read_bytes().count(b"\n") + 1
                assert problem.line <= count, f"line {problem.line} is past the end of {problem.file}\n{context}"
    for severity, wanted in (("error", exp.errors), ("warning", exp.warnings), ("notice", exp.notices)):
        for where, phrase in wanted:
            found = [p for p in lines if p.severity == severity and p.field == where and phrase in p.text]
            assert found, f"expected {severity} '{where}: ...{phrase}...'\n{context}"
    if exp.valid:
        assert not errors, context
        assert VALID.search(output), context
    else:
        assert errors, context
    if exp.error_count is not None:
        assert len(errors) == exp.error_count, context
    if exp.notice_count is not None:
        assert len([p for p in lines if p.severity == "notice"]) == exp.notice_count, context
    return lines


# ------------------------------------------------------------------------------------------- the committed corpus

CASES = sorted(p for p in BAD.glob("*.yaml"))


def test_corpus_is_large_and_every_case_says_what_it_expects() -> None:
    bad = [p for p in CASES if not read_expectation(p).valid]
    assert len(bad) >= 70, f"only {len(bad)} bad cases under {BAD}"
    for path in CASES:
        exp = read_expectation(path)
        assert exp.errors or exp.warnings or exp.notices, f"{path.name} has no '# expect:' (or warning/notice) line"


@pytest.fixture(scope="module")
def corpus_runs(request: pytest.FixtureRequest) -> Dict[Path, subprocess.CompletedProcess]:
    """``emu validate`` of every case this session runs, a few at a time: each run is a Python starting up, and the
    corpus is large (the cases are still run one file per process, as a user would)."""
    wanted = [item.callspec.params["path"] for item in request.session.items
              if getattr(item, "originalname", "") == "test_bad_input" and hasattr(item, "callspec")]
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 1)) as pool:
        runs = {path: pool.submit(run_emu, "validate", str(path.relative_to(ROOT))) for path in wanted}
    return {path: run.result() for path, run in runs.items()}


@pytest.mark.parametrize("path", CASES, ids=[p.name for p in CASES])
def test_bad_input(path: Path, corpus_runs: Dict[Path, subprocess.CompletedProcess]) -> None:
    check(str(path.relative_to(ROOT)), read_expectation(path), corpus_runs.get(path))


def test_three_independent_errors_give_three_lines() -> None:
    lines = check("tests/bad/three-errors.yaml", read_expectation(BAD / "three-errors.yaml"))
    assert sorted(p.field for p in lines if p.severity == "error") == [
        "network.podCIDR",
        "nodes[1].name",
        "spec.ports[0].port",
    ]


def test_ignored_fields_are_noticed_once_each() -> None:
    lines = check("tests/bad/warn-ignored-fields.yaml", read_expectation(BAD / "warn-ignored-fields.yaml"))
    notices = [p.text.split("'")[1] for p in lines if p.severity == "notice"]
    assert sorted(notices) == ["imagePullPolicy", "livenessProbe", "resources"]


# ------------------------------------------------------------------------------------------- made on the fly


def _relative(path: Path) -> str:
    return os.path.relpath(str(path), str(ROOT))


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.yaml").write_bytes(b"")
    check(_relative(tmp_path / "empty.yaml"), Expectation(errors=[("-", "file is empty")]))


def test_whitespace_only_file(tmp_path: Path) -> None:
    (tmp_path / "blank.yaml").write_text("\n   \n\n")
    check(_relative(tmp_path / "blank.yaml"), Expectation(errors=[("-", "file is empty")]))


def test_five_megabyte_file(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    line = "# " + "x" * 98 + "\n"
    big.write_text("apiVersion: emu/v1\nkind: Cluster\nname: big\nnodes: [node-1]\n" + line * 52_000)
    assert big.stat().st_size > 5_000_000
    check(_relative(big), Expectation(errors=[("-", "bytes (a topology file must be under")], error_count=1))


def test_directory_given_as_file() -> None:
    check("tests/bad/parts", Expectation(errors=[("-", "is a directory")], error_count=1))


def test_missing_file() -> None:
    check("tests/bad/no-such-file.yaml", Expectation(errors=[("-", "no such file")], error_count=1))


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero here")
def test_device_given_as_file() -> None:
    """/dev/zero never ends: it must be refused, not read."""
    check("/dev/zero", Expectation(errors=[("-", "not a regular file")], error_count=1))


def test_too_many_nodes(tmp_path: Path) -> None:
    nodes = "".join(f"  - node-{i}\n" for i in range(300))
    path = tmp_path / "crowd.yaml"
    path.write_text(
        f"apiVersion: emu/v1\nkind: Cluster\nname: crowd\nunderlay: {{cidr: 192.168.0.0/16}}\nnodes:\n{nodes}"
    )
    check(_relative(path), Expectation(errors=[("nodes", "300 nodes")]))


def test_problems_of_several_files_are_reported_together(tmp_path: Path) -> None:
    """A cluster file and a manifest on the command line, each with a mistake: both are reported in one run."""
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text("apiVersion: emu/v1\nkind: Cluster\nname: two\nnodes: [node-1, node-1]\n")
    manifest = tmp_path / "pod.yaml"
    manifest.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: Web}\nspec: {containers: [{name: app}]}\n")
    proc = run_emu("validate", _relative(cluster), _relative(manifest))
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    lines, malformed = parse_output(output)
    assert not malformed, output
    assert {(Path(p.file).name, p.line, p.field) for p in lines if p.severity == "error"} == {
        ("cluster.yaml", 4, "nodes[1].name"),
        ("pod.yaml", 3, "metadata.name"),
    }, output


# ------------------------------------------------------------------------------------------- no shell, ever

HOSTILE = "$(touch /tmp/emu-pwned)"


@pytest.fixture
def no_pwned() -> Sequence[Path]:
    if PWNED.exists():
        PWNED.unlink()
    yield [PWNED]
    assert not PWNED.exists(), f"{PWNED} was created: something ran a shell on a name or command from a topology"


def test_hostile_pod_name_is_rejected_and_never_run(no_pwned: Sequence[Path]) -> None:
    case = "tests/bad/pod-name-shell-subst.yaml"
    assert HOSTILE in (ROOT / case).read_text()
    for verb in ("validate", "plan"):
        proc = run_emu(verb, case)
        output = proc.stdout + proc.stderr
        assert proc.returncode == 2, output
        assert "metadata.name" in output and "is not a valid pod name" in output, output
        assert "Traceback" not in output, output
    proc = run_emu("plan", "tests/bad/yaml-python-tag.yaml")
    assert proc.returncode == 2 and "YAML tag" in proc.stderr, proc.stderr


def test_plan_prints_hostile_commands_without_running_them(no_pwned: Sequence[Path], tmp_path: Path) -> None:
    """Commands, arguments and environment values are arbitrary text, and legal: plan only prints them."""
    path = tmp_path / "hostile.yaml"
    path.write_text(
        "apiVersion: emu/v1\nkind: Cluster\nname: hostile\nnodes: [node-1, node-2]\n---\n"
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web, labels: {app: web}}\nspec:\n  containers:\n"
        "    - name: app\n"
        f"      command: [sh, -c, '{HOSTILE}; touch /tmp/emu-pwned; `touch /tmp/emu-pwned`']\n"
        f"      args: ['{HOSTILE}', ';', 'touch /tmp/emu-pwned']\n"
        f"      workingDir: '/tmp/$(touch /tmp/emu-pwned)'\n"
        f"      env: [{{name: X, value: '{HOSTILE}'}}, {{name: Y, value: '`touch /tmp/emu-pwned`'}}]\n"
        "---\napiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {selector: {app: web}, ports: [{port: 80}]}\n"
    )
    for args in (("validate",), ("plan",), ("plan", "--format", "json")):
        proc = run_emu(*args, _relative(path))
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "touch /tmp/emu-pwned" in run_emu("plan", _relative(path)).stdout
