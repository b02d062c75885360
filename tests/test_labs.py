"""Course labs (``labs/``) and their checker (``emu.labs``, ``emu check``).

Without root: every lab has its handout, topology (valid), answers template, check.py with tasks, and a correct
and a wrong solution whose keys the template asks for; the ``@task``/``@setup`` form, the runner's verdicts
(True, False, TaskFailed, any exception), lab lookup by number, and answers read as text.

With root: every lab's checker passes every task on the scripted correct solution and fails every task on the
scripted wrong one (each lab's cluster is built twice, under the lab's own cluster name).
"""

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import requires_root

from emu import labs
from emu.labs import TaskFailed, answer, expect, fix_lines, load_answers, load_lab, run_task, setup, task

ROOT = Path(__file__).resolve().parent.parent
LAB_DIRS = sorted(p for p in (ROOT / "labs").iterdir() if (p / "check.py").is_file())
LAB_IDS = [p.name for p in LAB_DIRS]


def test_there_are_at_least_four_labs() -> None:
    assert len(LAB_DIRS) >= 4
    assert [p.name.split("-", 1)[0] for p in LAB_DIRS][:4] == ["1", "2", "3", "4"]
    assert (ROOT / "labs" / "README.md").is_file()


def test_lab_numbers_are_unique() -> None:
    """emu check N finds a lab by its number: two labs may not share one."""
    numbers = [p.name.split("-", 1)[0] for p in LAB_DIRS]
    assert sorted(set(numbers)) == sorted(numbers), f"labs share a number: {LAB_IDS}"


@pytest.mark.parametrize("lab_dir", LAB_DIRS, ids=LAB_IDS)
def test_lab_is_complete(lab_dir: Path) -> None:
    lab = load_lab(lab_dir)
    assert lab.tasks and all(t.emu_task for t in lab.tasks)
    handout = (lab_dir / "README.md").read_text()
    assert "sudo python -m emu up" in handout and "emu check" in handout
    validate = subprocess.run([sys.executable, "-m", "emu", "validate"] + [str(p) for p in lab.topology],
                              cwd=str(ROOT), capture_output=True, text=True)
    assert validate.returncode == 0, validate.stderr
    template = load_answers(lab_dir / "answers.yaml")
    for name in ("correct", "wrong"):
        solution = load_answers(lab_dir / "solutions" / f"{name}.yaml")
        assert set(solution) <= set(template) | {"fix"}, f"{name}.yaml has keys the template does not ask for"
        assert fix_lines(solution), f"{name}.yaml has no fix"
    assert "fix" in (lab_dir / "answers.yaml").read_text()


def test_task_form_and_verdicts() -> None:
    @task("always")
    def good(cluster, answers):  # type: ignore[no-untyped-def]
        return True

    @task("never")
    def bad(cluster, answers):  # type: ignore[no-untyped-def]
        return False

    @task("explains")
    def explains(cluster, answers):  # type: ignore[no-untyped-def]
        expect(answer(answers, "port") == "8472", "look at flannel.1")
        return True

    @task("crashes")
    def crashes(cluster, answers):  # type: ignore[no-untyped-def]
        raise RuntimeError("boom")

    @setup
    def prepare(cluster):  # type: ignore[no-untyped-def]
        pass

    assert good.emu_task == "always" and prepare.emu_setup is True
    assert run_task(good, None, {}).passed
    assert not run_task(bad, None, {}).passed
    result = run_task(explains, None, {"port": "8285"})
    assert not result.passed and result.message == "look at flannel.1"
    assert "no answer for 'port'" in run_task(explains, None, {}).message
    assert run_task(explains, None, {"port": " 8472 "}).passed
    assert run_task(crashes, None, {}).message == "RuntimeError: boom"
    with pytest.raises(TypeError):
        task("")
    with pytest.raises(TaskFailed):
        expect(False, "no")


def test_answers_are_text_and_fix_is_lines(tmp_path: Path) -> None:
    path = tmp_path / "answers.yaml"
    path.write_text("port: 8472\nshared: no\nmac: 0e:f2:75:b7:dc:25\nfix:\n  - node-1 ip route\n  - '# skipped'\n")
    answers = load_answers(path)
    assert answers["port"] == "8472" and answers["shared"] == "no" and answers["mac"] == "0e:f2:75:b7:dc:25"
    assert fix_lines(answers) == ["node-1 ip route"]
    fix = tmp_path / "fix.emu"
    fix.write_text("# my fix\nnode-1 ip link set flannel.1 up\n\n")
    assert fix_lines(answers, fix) == ["node-1 ip link set flannel.1 up"]
    with pytest.raises(labs.LabError):
        load_answers(tmp_path / "missing.yaml")


def test_find_lab_by_number_name_or_path() -> None:
    assert labs.find_lab("3", ROOT / "labs").name.startswith("3-")
    assert labs.find_lab("2-same-node", ROOT / "labs").name == "2-same-node"
    assert labs.find_lab(str(ROOT / "labs" / "1-pod-as-host")).name == "1-pod-as-host"
    with pytest.raises(labs.LabError, match="no lab"):
        labs.find_lab("99", ROOT / "labs")


def test_find_lab_refuses_an_ambiguous_number(tmp_path: Path) -> None:
    for name in ("6-a", "6-b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "check.py").write_text("")
    with pytest.raises(labs.LabError, match=r"lab '6' is ambiguous \(6-a, 6-b\)"):
        labs.find_lab("6", tmp_path)


@requires_root
@pytest.mark.root
@pytest.mark.parametrize("solution", ["correct", "wrong"])
@pytest.mark.parametrize("lab_dir", LAB_DIRS, ids=LAB_IDS)
def test_checker_on_scripted_solutions(lab_dir: Path, solution: str) -> None:
    lab = load_lab(lab_dir)
    answers = load_answers(lab_dir / "solutions" / f"{solution}.yaml")
    out = io.StringIO()
    report = labs.run_lab(lab, answers, fix_lines(answers), out=out)
    text = labs.format_report(report)
    assert len(report.results) == len(lab.tasks)
    if solution == "correct":
        assert report.passed and report.fix_failures == 0, out.getvalue() + text
    else:
        assert not any(r.passed for r in report.results), text
        assert all(r.message for r in report.results), text


@requires_root
@pytest.mark.root
def test_emu_check_command_exit_status() -> None:
    def check(*args: str) -> "subprocess.CompletedProcess[str]":
        return subprocess.run([sys.executable, "-m", "emu", "check"] + list(args), cwd=str(ROOT),
                              capture_output=True, text=True, timeout=120)

    good = check("2", "--answers", "labs/2-same-node/solutions/correct.yaml")
    assert good.returncode == 0, good.stdout + good.stderr
    assert "7 of 7 tasks pass" in good.stdout and "FAIL" not in good.stdout
    bad = check("2-same-node", "--answers", "labs/2-same-node/solutions/wrong.yaml")
    assert bad.returncode == 1 and "0 of 7 tasks pass" in bad.stdout
    nftables = check("5", "--answers", "labs/5-dns/solutions/correct.yaml", "--proxy-mode", "nftables")
    assert nftables.returncode == 0, nftables.stdout + nftables.stderr
    assert "kube-proxy nftables)" in nftables.stdout and "FAIL" not in nftables.stdout
    missing = check("99")
    assert missing.returncode == 2 and "no lab '99'" in missing.stderr


@requires_root
@pytest.mark.root
@pytest.mark.slow
def test_lab7_measurement_gives_what_its_checker_reads(tmp_path: Path) -> None:
    """Lab 7's measure.py, as a student runs it but short (--quick: 10 Services only, one mode), writes results the
    lab's checker reads: the committed solution's run is not the only one it accepts, and the file stays in step
    with experiments/service_scale.py."""
    run = subprocess.run([sys.executable, "-m", "emu", "run", "labs/7-kube-proxy/measure.py", "--quick",
                          "--proxy-mode", "iptables", "--out", str(tmp_path)], cwd=str(ROOT), capture_output=True,
                         text=True, timeout=300, env=dict(os.environ, EMU_CLUSTER_SUFFIX=f"-l7{os.getpid()}"))
    assert run.returncode == 0, run.stderr[-3000:]
    assert "5000 Services: skipped under --quick" in run.stderr
    results = list(tmp_path.glob("*/*/results.csv"))
    assert len(results) == 1, results
    check = load_lab(ROOT / "labs" / "7-kube-proxy").module
    rows = check._results({"results_csv": str(results[0])})
    assert 0 < check._p50(rows, "iptables", 10) < 50
    assert check._p50(rows, "iptables", 10, "connect_p50_over_loopback") > 0
    with pytest.raises(TaskFailed, match="no connect_p50_ms to zzz-last for nftables at 10"):
        check._p50(rows, "nftables", 10)
