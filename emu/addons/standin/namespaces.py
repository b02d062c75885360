"""The two kernel calls the stand-in server needs beyond the standard library: ``setns`` and ``pidfd_open``.

- ``socket_in(netns_fd, kind)``: a socket created in another network namespace. The server's thread enters the
  namespace, creates the socket and comes back at once; the socket stays in the namespace it was made in (its
  binds, routes and source addresses are the pod's), so one process can serve every pod of the cluster.
- ``pidfd_open(pid)``: a descriptor that becomes readable the moment process ``pid`` exits, so the server stops
  answering for a container as soon as the container's process is gone (Linux 5.3; None where the kernel lacks
  it, and the server then polls).
"""

import ctypes
import errno
import os
import socket
from typing import Optional

CLONE_NEWNET = 0x40000000
SYS_PIDFD_OPEN = 434  # the same number on every architecture (a syscall added after the tables were unified)

_libc = ctypes.CDLL(None, use_errno=True)
_home: Optional[int] = None


def home() -> int:
    """A descriptor of the network namespace the server started in (opened once, on first use)."""
    global _home
    if _home is None:
        _home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    return _home


def setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"setns: {os.strerror(code)}")


def socket_in(netns_fd: int, kind: int) -> socket.socket:
    """An IPv4 socket of ``kind`` (SOCK_STREAM, SOCK_DGRAM) in the network namespace ``netns_fd``."""
    back = home()
    setns(netns_fd)
    try:
        return socket.socket(socket.AF_INET, kind)
    finally:
        setns(back)


def pidfd_open(pid: int) -> Optional[int]:
    """A pidfd of ``pid``; None when the kernel has no pidfd_open. Raises ProcessLookupError if it is gone."""
    opener = getattr(os, "pidfd_open", None)
    if opener is not None:
        try:
            return int(opener(pid))
        except OSError as exc:
            if exc.errno == errno.ENOSYS:
                return None
            raise
    fd = _libc.syscall(ctypes.c_long(SYS_PIDFD_OPEN), ctypes.c_long(pid), ctypes.c_long(0))
    if fd < 0:
        code = ctypes.get_errno()
        if code == errno.ENOSYS:
            return None
        if code == errno.ESRCH:
            raise ProcessLookupError(code, os.strerror(code))
        raise OSError(code, os.strerror(code))
    return int(fd)


def start_time(pid: int) -> Optional[int]:
    """``pid``'s start time in clock ticks since boot (names one process for good), None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[19])
