"""Running commands inside namespaces: the one place the apply layer spawns processes.

Every command is an argv list (never a shell string built from names), entered into a namespace with
``nsenter`` by the pid of a process that lives there (a Mininet node's shell, a pod's pause process, a
container). ``check`` raises ``BuildError`` naming the step and the command's output, so a failed build says
exactly what failed.
"""

import os
import subprocess
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, TypeVar, Union

from emu.errors import BuildError
from emu.types import ExecResult

Command = Union[str, Sequence[str]]

#: The PATH processes started by emu get (a root shell's, so ip, tc, iptables are found).
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Namespaces:
    """Where to run: the pid whose network (and UTS, and PID) namespace to enter, and the pid whose mount
    namespace. With ``pid``, nsenter forks: the command is its child, in the PID namespace (so it sees, and can
    signal, only that namespace's processes); ``popen`` and ``run`` then stop both together."""

    net_pid: int
    mount_pid: Optional[int] = None
    uts: bool = False
    pid: bool = False
    own_proc: bool = False  # in a mount namespace of its own, with a /proc of the PID namespace (unshare)
    #: (file, mount point) bound in that mount namespace before the command runs (the pod's /etc/hosts, ...)
    binds: Tuple[Tuple[str, str], ...] = ()

    def nsenter(self) -> List[str]:
        argv = ["nsenter", f"--net=/proc/{self.net_pid}/ns/net"]
        if self.uts:
            argv.append(f"--uts=/proc/{self.net_pid}/ns/uts")
        if self.pid:
            argv.append(f"--pid=/proc/{self.net_pid}/ns/pid")
        if self.mount_pid is not None:
            argv.append(f"--mount=/proc/{self.mount_pid}/ns/mnt")
        if self.own_proc:
            return argv + ["--", "unshare", "--mount-proc", "--"] + _bind_prefix(self.binds)
        return argv + ["--"]


#: Binds "$1" over "$2" (then the next pair) up to a "--", then becomes the command after it.
_BIND_SCRIPT = 'while [ "$1" != -- ]; do mount --bind "$1" "$2" || exit 125; shift 2; done; shift; exec "$@"'


def _bind_prefix(binds: Sequence[Tuple[str, str]]) -> List[str]:
    """The argv that binds each (file, mount point) in the current mount namespace and then execs the command
    that follows it (unshare makes that namespace private: nothing reaches the node)."""
    if not binds:
        return []
    return ["sh", "-c", _BIND_SCRIPT, "emu-pod"] + [part for pair in binds for part in pair] + ["--"]


class GroupPopen(subprocess.Popen):  # type: ignore[type-arg]
    """A process started in a session of its own whose signals go to its whole process group: ``nsenter --pid``
    runs the command as its child (a process in another PID namespace), and stopping nsenter alone would leave
    the command running."""

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            try:
                os.killpg(self.pid, sig)
            except (ProcessLookupError, PermissionError):
                super().send_signal(sig)


def as_argv(cmd: Command) -> List[str]:
    """A string is a shell command line typed by a person (run with sh -c); a list is an argv."""
    if isinstance(cmd, str):
        return ["sh", "-c", cmd]
    return list(cmd)


def base_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    env = {"PATH": SAFE_PATH, "HOME": "/root", "LANG": "C.UTF-8", "TERM": os.environ.get("TERM", "dumb")}
    env.update(extra or {})
    return env


def run(
    argv: Sequence[str],
    ns: Optional[Namespaces] = None,
    input: Optional[str] = None,
    timeout: Optional[float] = None,
    env: Optional[Dict[str, str]] = None,
) -> ExecResult:
    """Run ``argv`` (in ``ns`` when given) and wait; never raises for a non-zero exit."""
    full = (ns.nsenter() if ns else []) + list(argv)
    try:
        proc = GroupPopen(
            full,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env or base_env(),
            start_new_session=True,
            universal_newlines=True,
            errors="replace",
        )
    except FileNotFoundError as exc:
        return ExecResult("", f"{exc.filename}: command not found", 127)
    with proc:
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()  # the whole group: nsenter and the command it forked
            out, err = proc.communicate()
            return ExecResult(out or "", (err or "") + f"\n(timed out after {timeout:g} s)", 124)
        except BaseException:
            proc.kill()
            raise
    return ExecResult(out, err, proc.returncode)


#: Lines of a command's input a BuildError shows (a rule document can have a million).
SHOWN_INPUT_LINES = 40


def check(
    step: str,
    argv: Sequence[str],
    ns: Optional[Namespaces] = None,
    input: Optional[str] = None,
    timeout: float = 120,
) -> str:
    """Run and raise BuildError (with the step, the command and its output) unless it succeeds."""
    result = run(argv, ns, input=input, timeout=timeout)
    if result.returncode != 0:
        shown = list(argv)
        if input is not None:
            lines = input.rstrip().splitlines()
            more = len(lines) - SHOWN_INPUT_LINES
            text = "\n".join(lines[:SHOWN_INPUT_LINES]) + (f"\n... ({more} more lines)" if more > 0 else "")
            shown.append("<<EOF\n" + text + "\nEOF")
        raise BuildError(step, (ns.nsenter() if ns else []) + shown, result.stderr or result.stdout)
    return result.stdout


def ip_batch(step: str, lines: Sequence[str], ns: Namespaces, tool: str = "ip") -> None:
    """Run many ``ip`` (or ``bridge``) commands in one process, as ``ip -batch -`` does."""
    if lines:
        check(step, [tool, "-batch", "-"], ns, input="\n".join(lines) + "\n")


def popen(
    argv: Sequence[str],
    ns: Optional[Namespaces] = None,
    env: Optional[Dict[str, str]] = None,
    stdout=subprocess.PIPE,  # type: ignore[no-untyped-def]
    stderr=subprocess.PIPE,  # type: ignore[no-untyped-def]
    stdin=subprocess.DEVNULL,  # type: ignore[no-untyped-def]
) -> "subprocess.Popen[str]":
    """Start ``argv`` in ``ns`` in a session of its own, so a Ctrl-C at the terminal reaches emu, not the
    emulated processes; emu tears them down itself."""
    full = (ns.nsenter() if ns else []) + list(argv)
    return GroupPopen(
        full,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        env=env or base_env(),
        start_new_session=True,
        universal_newlines=True,
    )


#: Shell text that holds a process until emu has written its pid down (see ``release``). A process emu starts
#: lives on after emu is killed, so it must be in the state file before it does anything: it waits for one line
#: on stdin, and exits at end of file, which is what it reads when emu died before recording it.
GATE = "read -r _ || exit 1; "

#: ``GATE`` in front of any argv (the program then runs with /dev/null as stdin).
GATE_ARGV = ["bash", "-c", GATE + 'exec "$@" </dev/null', "emu-gate"]


def release(proc: "subprocess.Popen[str]", record: Optional[Callable[[int], object]] = None) -> None:
    """Call ``record(pid)`` for a process started behind ``GATE`` (with ``stdin=PIPE``), then let it go on.

    If ``record`` raises, the process is not released: its stdin is closed and it exits by itself.
    """
    recorded = False
    try:
        if record is not None:
            record(proc.pid)
        recorded = True
    finally:
        try:
            if recorded and proc.stdin is not None:
                proc.stdin.write("\n")
            if proc.stdin is not None:
                proc.stdin.close()
        except (OSError, ValueError):  # it died already: whoever waits for it reports that
            pass


def process_start_time(pid: int) -> Optional[int]:
    """The start time of ``pid`` in clock ticks since boot (field 22 of /proc/PID/stat), None if gone.

    Together with the pid it names one process for good: a recycled pid has another start time.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])


T = TypeVar("T")


def in_parallel(calls: Sequence[Callable[[], T]], workers: int = 8) -> List[T]:
    """Run independent steps (e.g. one per node) on a few threads and return their results in order.

    The commands they start run on all cores while Python waits for them. Every step runs to its end before
    anything is raised (so a rollback never races a step still building); then the first failure, in the order
    of ``calls``, is raised. A Ctrl-C while waiting cancels the steps not yet started.
    """
    if len(calls) <= 1 or workers <= 1:
        return [call() for call in calls]
    from concurrent.futures import ThreadPoolExecutor, wait

    with ThreadPoolExecutor(max_workers=min(workers, len(calls)), thread_name_prefix="emu-build") as pool:
        futures = [pool.submit(call) for call in calls]
        try:
            wait(futures)
        except BaseException:
            for future in futures:
                future.cancel()
            wait(futures)
            raise
    return [future.result() for future in futures]
