"""Stopping the processes a cluster started, and holding Ctrl-C and SIGTERM back while a teardown runs.

A teardown must finish whatever the user does: ``signals_held`` defers SIGINT and SIGTERM until the block ends,
then acts on them. ``terminate`` stops a group of processes politely, then firmly, and reaps them all.
"""

import signal
import subprocess
import threading
import time
from contextlib import contextmanager
from typing import Iterator, List, Sequence

HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def signals_held() -> Iterator[None]:
    """Teardown must finish: Ctrl-C or SIGTERM during it are held back and acted on once it is done."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: List[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: received.append(signum)) for sig in HELD_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if signal.SIGINT in received:
        raise KeyboardInterrupt()
    if signal.SIGTERM in received:
        raise SystemExit(128 + signal.SIGTERM)


def sigterm_to_exit(signum, frame) -> None:  # type: ignore[no-untyped-def]
    """A SIGTERM handler: leave like Ctrl-C does, through every ``finally`` and ``__exit__`` (exit 143)."""
    raise SystemExit(128 + signum)


def ignores_sigterm(pid: int) -> bool:
    """Whether SIGTERM from emu would be dropped: ``pid`` is the first process (PID 1) of a PID namespace of its
    own and has no handler for it (the kernel delivers a signal to a namespace's init only if it catches it; the
    kubelet's SIGTERM to ``sleep`` as PID 1 would wait out the grace period, then SIGKILL)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
    except OSError:
        return False
    nspid = fields.get("NSpid", "").split()
    caught = int(fields.get("SigCgt", "0").strip() or "0", 16)
    return len(nspid) > 1 and nspid[-1] == "1" and not caught & (1 << (signal.SIGTERM - 1))


def terminate(procs: Sequence["subprocess.Popen[str]"], grace: float) -> None:
    """SIGTERM every process (SIGKILL at once for one that would ignore it: ``ignores_sigterm``), wait up to
    ``grace`` seconds, SIGKILL the rest, reap all."""
    for proc in procs:
        if proc.poll() is None:
            try:
                if ignores_sigterm(proc.pid):
                    proc.kill()
                else:
                    proc.terminate()
            except OSError:
                pass
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
