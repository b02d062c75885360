"""Starting pause and container processes cheaply: one small helper process forks them into their namespaces.

A pod's pause process started the shell way is ``unshare`` + ``bash`` + ``sleep``; a container ``nsenter`` +
``unshare`` + ``bash`` + three ``mount`` + the command, each a fork of emu's large Python process or an exec:
about 4 and 8 ms of CPU each, which made a thousand pods CPU-bound on two cores. The spawner (``spawnd.py``, a
standard-library-only Python process) instead forks each process from its own small image and calls ``setns``,
``unshare``, ``mount`` and ``sethostname`` in the child before one exec (about 2 ms each, see bench/README.md).

What does not change:

- **The crash-safety gate.** Every process still waits for one line on a pipe whose write end only emu holds
  (``Spawned.stdin``, released by ``commands.release`` once its pid is in the state journal); if emu dies first
  the child reads end of file and exits. The helper itself is started behind the same gate and recorded
  (role ``spawner``); it exits when emu's end of its socket closes.
- **Popen's interface.** ``Spawned`` has ``pid``, ``args``, ``stdin``, ``stderr``, ``returncode``, ``poll()``,
  ``wait()``, ``send_signal()``, ``terminate()`` and ``kill()``. The helper is the children's parent and reaps a
  child only when emu asks (after seeing it exit), so a pid emu may signal is never reused meanwhile.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from array import array
from pathlib import Path
from typing import IO, Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from emu.apply.commands import base_env, process_start_time, release
from emu.errors import BuildError

SPAWND = str(Path(__file__).resolve().parent / "spawnd.py")
#: What spawnd calls itself (and its children until they exec): spawnd.NAME.
SPAWND_NAME = b"emu-spawnd"

#: ``returncode`` of a child whose status could not be learnt (the helper had gone when it exited).
UNKNOWN_STATUS = 255

#: A mount in the child: (source, target, fstype, flags from spawnd.MS, data).
Mount = Tuple[Optional[str], str, Optional[str], Sequence[str], Optional[str]]

SO_SNDBUFFORCE = 32  # Linux; root may raise the send buffer above net.core.wmem_max

PIPE = subprocess.PIPE
DEVNULL = subprocess.DEVNULL


def _state(pid: int) -> Optional[Tuple[str, int]]:
    """(state letter, start time) of ``pid`` from /proc/PID/stat, None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[0], int(fields[19])


class Spawned:
    """A process the spawner started, with the part of ``subprocess.Popen``'s interface emu uses."""

    def __init__(
        self, spawner: "Spawner", pid: int, args: List[str], stdin: IO[str], stderr: Optional[IO[str]]
    ) -> None:
        self._spawner = spawner
        self.pid = pid
        self.args = args
        self.stdin: Optional[IO[str]] = stdin
        self.stdout = None
        self.stderr = stderr
        self.returncode: Optional[int] = None
        self._start = process_start_time(pid)
        self._polling = threading.Lock()
        self._execd = False

    def wait_exec(self, timeout: float = 10.0) -> bool:
        """Wait until the child runs its program (its namespaces, mounts and environment are then its own: an
        exec into it sees the container, not the helper); False if it died first or took longer. Until its exec
        a child bears the helper's name (``/proc/PID/comm`` is ``emu-spawnd``)."""
        deadline = time.monotonic() + timeout
        pause = 0.0005
        while not self._execd:
            try:
                with open(f"/proc/{self.pid}/comm", "rb") as f:
                    self._execd = f.read().strip() != SPAWND_NAME
            except OSError:
                return False
            if self._execd or self.poll() is not None:
                break
            if time.monotonic() > deadline:
                return False
            time.sleep(pause)
            pause = min(pause * 2, 0.01)
        return self.poll() is None

    def poll(self) -> Optional[int]:
        if self.returncode is None:
            with self._polling:  # the monitor thread polls too: one of them reaps, both see its status
                if self.returncode is None:
                    state = _state(self.pid)
                    if state is None or state[1] != self._start:
                        self.returncode = self._spawner.reap(self.pid, default=UNKNOWN_STATUS)
                    elif state[0] in "ZX":
                        self.returncode = self._spawner.reap(self.pid)
        return self.returncode

    def wait(self, timeout: Optional[float] = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.0005
        while self.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            time.sleep(pause)
            pause = min(pause * 2, 0.02)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        """Signal the process if it still runs (an exited, unreaped child keeps its pid: no pid is reused)."""
        if self.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def __repr__(self) -> str:
        return f"<Spawned {self.pid} {' '.join(self.args[:3])} returncode={self.returncode}>"


class Spawner:
    """One spawnd helper (started on first use, recorded before it runs) and the processes it starts.

    record: called with the helper's pid before it may run (writes it into the state journal).
    log: where the helper's own output goes.
    """

    def __init__(self, record: Optional[Callable[[int], object]] = None, log: Optional[Path] = None) -> None:
        self._record = record
        self._log = log
        self._lock = threading.Lock()
        self._sock: Optional[socket.socket] = None
        self._serial = 0
        self.process: Optional["subprocess.Popen[str]"] = None

    def _ensure(self) -> socket.socket:
        if self._sock is not None:
            return self._sock
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for option in (SO_SNDBUFFORCE, socket.SO_SNDBUF):  # a request carries the Services' environment too
            try:
                ours.setsockopt(socket.SOL_SOCKET, option, 4 << 20)
                break
            except OSError:
                continue
        log = open(self._log, "ab") if self._log is not None else subprocess.DEVNULL
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", SPAWND, str(theirs.fileno())],
                stdin=PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=[theirs.fileno()],
                start_new_session=True,
                env=base_env(),
                universal_newlines=True,
            )
        finally:
            theirs.close()
            if not isinstance(log, int):
                log.close()
        self.process = proc
        release(proc, self._record)
        self._sock = ours
        return ours

    def _ask(self, message: Dict[str, Any], fds: Sequence[int] = ()) -> Dict[str, Any]:
        """Send one request and return its answer (with the lock held). Answers to earlier requests whose caller
        stopped waiting (a Ctrl-C between send and receive) are skipped by their id."""
        sock = self._ensure()
        self._serial += 1
        message = dict(message, id=self._serial)
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array("i", fds))] if fds else []
        sock.sendmsg([json.dumps(message).encode()], ancillary)
        while True:
            reply = sock.recv(1 << 16)
            if not reply:
                raise OSError("the spawner helper exited")
            answer: Dict[str, Any] = json.loads(reply.decode())
            if answer.get("id") == self._serial:
                return answer

    def spawn(
        self,
        argv: Sequence[str],
        name: str,
        setns: Sequence[Tuple[str, str]] = (),
        unshare: Sequence[str] = (),
        mounts: Sequence[Mount] = (),
        hostname: Optional[str] = None,
        cwd: str = "",
        env: Optional[Dict[str, str]] = None,
        executable: Optional[str] = None,
        stdout: Union[int, IO[Any]] = DEVNULL,
        stderr: Union[int, IO[Any]] = PIPE,
        pidns: Optional[str] = None,
    ) -> Spawned:
        """Start ``argv`` behind the gate (release it with ``commands.release``) and return its handle.

        name: how the child names itself in error messages (``emu-pause``, ``emu-container``).
        setns: (kind, path) namespaces to enter, kind one of net, uts, mnt (e.g. ``("net", "/proc/42/ns/net")``).
        unshare: namespaces to create after entering those (net, uts, mnt).
        mounts: made in order after the gate; ``(None, "/", None, ("rec", "private"), None)`` first is
            ``unshare --propagation private``.
        hostname: set in the (new) UTS namespace after the gate.
        cwd: working directory ('' keeps the namespace's root).
        env: the environment (default ``commands.base_env()``); PATH in it finds the program.
        executable: the program to run when ``argv[0]`` is only its displayed name (``exec -a``).
        stdout, stderr: a file, a descriptor, DEVNULL, or (stderr only) PIPE: ``Spawned.stderr`` then reads it.
        pidns: the PID namespace of the child: None (the helper's), ``"new"`` (one of its own, the child its PID
            1), or ``/proc/PID/ns/pid`` (PID's: a pod's containers in their pause process's).
        Raises OSError when the helper cannot start the child (exec errors go to the child's stderr instead).
        """
        gate_read, gate_write = os.pipe()
        closing = [gate_read]
        err_read = None
        try:
            out_fd = self._fd(stdout, closing)
            if stderr == PIPE:
                err_read, err_fd = os.pipe()
                closing.append(err_fd)
            else:
                err_fd = self._fd(stderr, closing)
            request = {
                "op": "spawn",
                "name": name,
                "argv": list(argv),
                "executable": executable,
                "env": env if env is not None else base_env(),
                "setns": [list(s) for s in setns],
                "unshare": list(unshare),
                "mounts": [[s, t, f, list(fl), d] for s, t, f, fl, d in mounts],
                "hostname": hostname,
                "cwd": cwd,
                "pidns": pidns,
            }
            with self._lock:
                answer = self._ask(request, [gate_read, out_fd, err_fd])
        except BaseException:
            os.close(gate_write)
            if err_read is not None:
                os.close(err_read)
            raise
        finally:
            for fd in closing:
                os.close(fd)
        if "pid" not in answer:
            os.close(gate_write)
            if err_read is not None:
                os.close(err_read)
            raise OSError(answer.get("error", f"unexpected answer {answer}"))
        shown = ([executable] if executable else []) + list(argv)
        stdin = os.fdopen(gate_write, "w")
        err_file = os.fdopen(err_read, "r", errors="replace") if err_read is not None else None
        return Spawned(self, int(answer["pid"]), shown, stdin, err_file)

    @staticmethod
    def _fd(target: Union[int, IO[Any]], closing: List[int]) -> int:
        if target == DEVNULL:
            fd = os.open(os.devnull, os.O_WRONLY)
            closing.append(fd)
            return fd
        if isinstance(target, int):
            return target
        return target.fileno()

    def reap(self, pid: int, default: Optional[int] = None) -> Optional[int]:
        """The exit status of an exited child (reaping it), ``default`` if the helper no longer has it."""
        with self._lock:
            if self._sock is None:
                return default
            try:
                answer = self._ask({"op": "reap", "pid": pid})
            except OSError:
                return default if default is not None else UNKNOWN_STATUS
        if answer.get("running"):
            return None
        if "status" in answer:
            return int(answer["status"])
        return default if default is not None else UNKNOWN_STATUS

    def close(self, timeout: float = 2.0) -> None:
        """Stop the helper (it exits when its socket closes); its children should have been stopped first."""
        with self._lock:
            sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
        proc = self.process
        if proc is not None:
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def spawn_error(step: str, argv: Sequence[str], exc: OSError) -> BuildError:
    """The BuildError for a child the helper could not start."""
    return BuildError(step, argv, str(exc))
