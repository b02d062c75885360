"""emu.measure.machine and emu.measure.pinning without root: CPU shares between two snapshots (arithmetic, and
a real child process burning CPU counted as ours), the busy warning's thresholds, what metadata.json records of
the machine, and endpoints whose programs run under taskset (checked by the kernel's own affinity list)."""

import os
import subprocess
import sys
import time
from typing import List, Optional

import pytest

from emu.measure import ExecResult
from emu.measure.machine import BUSY_SHARE, BUSY_TURN_SHARE, Snapshot, Usage, busy_warning, describe, snapshot, usage
from emu.measure.pinning import Pinned, cpu_list, pinned


def snap(when: float, busy: int, total: int, ours: int, kernel: int = 0, steal: int = 0) -> Snapshot:
    return Snapshot(when=when, busy=busy, total=total, steal=steal, ours=ours, kernel_threads=kernel, loadavg=1.0)


def test_usage_splits_busy_time_into_ours_others_and_kernel_threads() -> None:
    before = snap(0.0, busy=1000, total=4000, ours=100, kernel=50, steal=10)
    after = snap(2.0, busy=1300, total=4400, ours=250, kernel=70, steal=30)
    used = usage(before, after)
    assert used is not None
    assert used.seconds == 2.0
    assert used.busy == pytest.approx(300 / 400)
    assert used.ours == pytest.approx(150 / 400)
    assert used.others == pytest.approx((300 - 150 - 20) / 400)
    assert used.steal == pytest.approx(20 / 400)
    assert usage(None, after) is None and usage(after, after) is None


def test_busy_warning_thresholds() -> None:
    quiet = [Usage(10.0, 0.5, 0.45, BUSY_SHARE / 2, 0.0, 1.0)] * 5
    assert busy_warning(quiet) is None
    assert busy_warning([]) is None
    one_busy_turn = quiet + [Usage(10.0, 0.9, 0.4, BUSY_TURN_SHARE + 0.1, 0.0, 2.0)]
    warning = busy_warning(one_busy_turn)
    assert warning is not None and warning.startswith("WARNING: the machine was busy")
    assert "in 1 of 6 turns" in warning
    busy_on_average = [Usage(10.0, 0.8, 0.5, BUSY_SHARE + 0.05, 0.05, 2.0)] * 3
    warning = busy_warning(busy_on_average)
    assert warning is not None and "20% of the CPUs on average" in warning and "stole 5%" in warning


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="needs Linux /proc")
def test_a_child_burning_cpu_counts_as_ours() -> None:
    before = snapshot()
    child = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 1.0: pass"])
    child.wait()
    time.sleep(0.05)
    used = usage(before, snapshot())
    assert used is not None and used.seconds >= 1.0
    # the child ran up to one CPU for 1 s (less if the machine is busy): at least a few ticks, all of them ours
    assert used.ours > 0.02
    assert used.ours <= used.busy + 0.05


def test_describe_records_cpus_governor_and_load() -> None:
    info = describe()
    assert info["cpus"] == os.cpu_count()
    assert "governor" in info and info["governor"]  # a mapping per CPU, or why there is none
    if os.path.exists("/proc/loadavg"):
        assert len(info["loadavg"]) == 3


class Local:
    """An endpoint that runs programs right here (no namespace), logging each argv."""

    name, ip, node = "local", "127.0.0.1", "here"

    def __init__(self) -> None:
        self.argvs: List[List[str]] = []

    def exec(self, argv: List[str], timeout: Optional[float] = None) -> ExecResult:
        self.argvs.append(list(argv))
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        return ExecResult(done.stdout, done.stderr, done.returncode)

    def popen(self, argv: List[str]) -> "subprocess.Popen[str]":
        self.argvs.append(list(argv))
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_cpu_list() -> None:
    assert cpu_list(0) == "0"
    assert cpu_list([0]) == "0"
    for bad in (-1, os.cpu_count() or 1, [], True, "0"):
        with pytest.raises(ValueError):
            cpu_list(bad)  # type: ignore[arg-type]


@pytest.mark.skipif(not os.path.exists("/usr/bin/taskset") and not os.path.exists("/bin/taskset"),
                    reason="needs taskset (util-linux)")
def test_pinned_programs_run_on_the_chosen_cpu() -> None:
    local = Local()
    cpu = (os.cpu_count() or 1) - 1
    endpoint = pinned(local, cpu)
    assert isinstance(endpoint, Pinned) and endpoint.name == "local" and endpoint.ip == "127.0.0.1"
    status = endpoint.exec(["cat", "/proc/self/status"])
    allowed = next(line.split()[1] for line in status.stdout.splitlines() if line.startswith("Cpus_allowed_list"))
    assert allowed == str(cpu)
    assert local.argvs[0][:3] == ["taskset", "-c", str(cpu)]
    process = endpoint.popen(["cat", "/proc/self/status"])
    out, _ = process.communicate(timeout=10)
    assert f"Cpus_allowed_list:\t{cpu}" in out
    assert pinned(local, None) is local
