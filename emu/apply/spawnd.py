"""The spawner's server side: a small process that forks emu's pause and container processes into namespaces.

Started by ``emu.apply.spawner`` as ``python3 -I -S spawnd.py FD`` and standard library only (it imports nothing of
emu, so it starts in a few milliseconds and forks cheaply: its image is about 10 MB, emu's can be ten times that).
Starting a container the shell way costs seven programs (``nsenter``, ``unshare``, ``bash``, three ``mount``,
the command); here it is one fork and one exec, with ``setns``, ``unshare``, ``mount`` and ``sethostname`` called
in the child through ctypes.

Protocol on the SOCK_SEQPACKET socket FD, one JSON object per message; every answer carries its request's
``id``:

- ``{"op": "spawn", ...}`` with three or four file descriptors attached (SCM_RIGHTS): the gate (read end of a
  pipe whose write end emu holds), the child's stdout and stderr, and optionally the write end of a pipe the
  child holds until its exec (emu reads end of file there once the program runs).
  The child enters the ``setns`` namespaces, ``unshare``s,
  then waits for one line on the gate: at end of file (emu died before recording it) it exits with status 1.
  Then it makes its mounts (an entry of fstype ``emu-keep`` binds a directory back where later mounts would hide
  it), sets its hostname, changes directory and execs ``argv`` with ``env``, stdin
  /dev/null. Any failure is written to its stderr and it exits 127. Answer: ``{"pid": N}`` or ``{"error": ...}``.
  ``pidns`` (optional) puts the child in a PID namespace: ``"new"`` makes one with the child as its PID 1,
  a path (``/proc/P/ns/pid``) joins P's. A PID namespace can only be entered by a new process, so the server
  sets it for its children (``unshare``/``setns`` with CLONE_NEWPID) just before the fork and back to its own
  just after; the pid it answers is the child's pid as seen from here (the root namespace).
- ``{"op": "reap", "pid": N}``: reap child N (emu asks once it has seen N exit) and answer ``{"status": S}``
  (the exit status, or minus the signal number, as subprocess does), or ``{"running": true}``.
- End of file (emu closed the socket or died): exit. Children are never reaped unasked, so a child's pid cannot
  be reused while emu may still signal it.
"""

import ctypes
import json
import os
import socket
import sys
from array import array
from typing import Any, Dict, List

CLONE = {"mnt": 0x00020000, "uts": 0x04000000, "pid": 0x20000000, "net": 0x40000000}
MS = {"rdonly": 1, "nosuid": 2, "nodev": 4, "noexec": 8, "remount": 32, "bind": 4096, "rec": 16384, "private": 1 << 18}
#: The fstype of a mount entry that keeps its source directory reachable at its target (see ``_mount_all``).
KEEP = "emu-keep"
#: setns order (that of nsenter): the mount namespace last, /proc paths are opened before any of them.
SETNS_ORDER = ("uts", "net", "mnt")

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _bytes(text: Any) -> Any:
    return None if text is None else str(text).encode()


def _mount(source: Any, target: str, fstype: Any, flags: List[str], data: Any) -> None:
    bits = 0
    for flag in flags:
        bits |= MS[flag]
    what = f"mount {source or ''} {target} ({','.join(flags) or fstype})"
    _check(_libc.mount(_bytes(source), _bytes(target), _bytes(fstype), ctypes.c_ulong(bits), _bytes(data)), what)


def _mount_all(mounts: List[Any]) -> None:
    """Make ``mounts`` in order. An entry of fstype ``KEEP`` binds its source directory, as it was before any
    of these mounts, onto its target (made if missing): a directory a later mount (a private /tmp, a volume)
    would hide stays reachable. It is opened first and bound through /proc/self/fd, which names the directory
    itself, not a path the other mounts change."""
    kept = {i: os.open(m[0], os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC) for i, m in enumerate(mounts) if m[2] == KEEP}
    for i, (source, target, fstype, mflags, data) in enumerate(mounts):
        if i in kept:
            os.makedirs(target, exist_ok=True)
            _mount(f"/proc/self/fd/{kept[i]}", target, None, ["bind"], None)
            os.close(kept[i])
        else:
            _mount(source, target, fstype, mflags, data)


def _read_gate(fd: int) -> bool:
    """Wait for one line on ``fd``; False at end of file."""
    while True:
        chunk = os.read(fd, 1)
        if not chunk:
            return False
        if chunk == b"\n":
            return True


def _child(request: Dict[str, Any], gate: int, out: int, err: int) -> None:
    """Runs in the forked child; never returns. Until its exec it is named ``emu-spawnd`` (the server's name),
    which is how emu tells that it runs its program (``Spawned.wait_exec``)."""
    name = request.get("name", "emu")
    status = 127
    try:
        os.setsid()
        os.dup2(err, 2)
        opened = [(kind, os.open(path, os.O_RDONLY | os.O_CLOEXEC)) for kind, path in request.get("setns", [])]
        for kind in SETNS_ORDER:
            for which, fd in opened:
                if which == kind:
                    _check(_libc.setns(fd, CLONE[kind]), f"setns {kind}")
                    os.close(fd)
        flags = 0
        for kind in request.get("unshare", []):
            flags |= CLONE[kind]
        if flags:
            _check(_libc.unshare(flags), f"unshare {' '.join(request['unshare'])}")
        if not _read_gate(gate):
            os._exit(1)
        os.close(gate)
        _mount_all(request.get("mounts", []))
        hostname = request.get("hostname")
        if hostname:
            raw = hostname.encode()
            _check(_libc.sethostname(raw, len(raw)), "sethostname")
        if request.get("cwd"):
            os.chdir(request["cwd"])
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out, 1)
        os.dup2(err, 2)
        argv = list(request["argv"])
        env = dict(request.get("env") or {})
        executable = request.get("executable") or argv[0]
        try:
            if "/" in executable:
                os.execve(executable, argv, env)
            os.execvpe(executable, argv, env)
        except FileNotFoundError:
            raise OSError(f"{executable}: command not found") from None
        except PermissionError:  # as a shell says it: 126, found but not executable
            status = 126
            raise OSError(f"{executable}: permission denied") from None
    except BaseException as exc:  # report and exit: the child must never return into the server's loop
        try:
            os.write(2, f"{name}: {exc}\n".encode(errors="replace"))
        except OSError:
            pass
    os._exit(status)


def _status(raw: int) -> int:
    if os.WIFSIGNALED(raw):
        return -os.WTERMSIG(raw)
    if os.WIFEXITED(raw):
        return os.WEXITSTATUS(raw)
    return raw


def _answer(sock: socket.socket, request: Dict[str, Any], message: Dict[str, Any]) -> None:
    message["id"] = request.get("id")  # emu skips answers to requests it stopped waiting for
    sock.send(json.dumps(message).encode())


def _fork_in(pidns: Any, own_pidns: int) -> int:
    """fork(), the child in the PID namespace ``pidns`` asks for (None: this one's)."""
    if not pidns:
        return os.fork()
    if pidns == "new":
        _check(_libc.unshare(CLONE["pid"]), "unshare pid")
    else:
        fd = os.open(str(pidns), os.O_RDONLY | os.O_CLOEXEC)
        try:
            _check(_libc.setns(fd, CLONE["pid"]), f"setns pid {pidns}")
        finally:
            os.close(fd)
    pid = -1
    try:
        pid = os.fork()
    finally:
        if pid != 0:  # the server (not the child): its next children go back to its own namespace
            _check(_libc.setns(own_pidns, CLONE["pid"]), "setns pid (back)")
    return pid


def serve(sock: socket.socket) -> None:
    fd_size = array("i").itemsize
    own_pidns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    while True:
        data, ancillary, _flags, _addr = sock.recvmsg(4 << 20, socket.CMSG_SPACE(8 * fd_size), socket.MSG_CMSG_CLOEXEC)
        if not data:
            return
        fds = array("i")
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - len(payload) % fd_size])
        request: Dict[str, Any] = {}
        try:
            request = json.loads(data.decode())
            op = request.get("op")
            if op == "spawn":
                if len(fds) != 3:
                    raise ValueError(f"spawn needs 3 file descriptors, got {len(fds)}")
                pid = _fork_in(request.get("pidns"), own_pidns)
                if pid == 0:
                    sock.close()
                    os.close(own_pidns)
                    _child(request, fds[0], fds[1], fds[2])
                _answer(sock, request, {"pid": pid})
            elif op == "reap":
                pid, raw = os.waitpid(int(request["pid"]), os.WNOHANG)
                _answer(sock, request, {"status": _status(raw)} if pid else {"running": True})
            else:
                raise ValueError(f"unknown op {op!r}")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            _answer(sock, request, {"error": str(exc)})
        finally:
            for fd in fds:
                os.close(fd)


#: The server's name (``/proc/PID/comm``), which its children keep until they exec their program.
NAME = b"emu-spawnd"
PR_SET_NAME = 15


def main() -> int:
    _libc.prctl(PR_SET_NAME, NAME, 0, 0, 0)
    sock = socket.socket(fileno=int(sys.argv[1]))
    if not sys.stdin.readline():  # the gate: emu records this process first; end of file: emu died
        return 1
    try:
        serve(sock)
    except (BrokenPipeError, ConnectionResetError):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
