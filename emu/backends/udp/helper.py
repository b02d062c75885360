"""The udp daemon's C loop (``udp_proxy.c``): where its binary lives, whether it can be used, how it is built.

The daemon's default data path is flannel's proxy.c loop. In Python (``proxy``) it costs what proxy.c costs in
system calls, but each wake-up of the interpreter is slower than C's, and a ping crosses four of them; on this
kind of shared machine that made emu's RTT 1.5x the C reference's with a 1 Gbit/s underlay (bench/README.md).
So when ``udp_proxy.c`` is built the daemon execs it (same pid, same messages, same counters) and the Python
loop is the fallback.

The binary: ``emu/backends/udp/build/udp_proxy`` in the checkout (git-ignored), built by install.sh through
``python3 -m emu.backends.udp.helper build`` with the distribution's C compiler (``cc``); the environment
variable ``EMU_UDP_HELPER`` names another path. It is used only if it exists, is executable and is not older
than its source (a stale build would run old code): otherwise the daemon says why and runs the Python loop.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

SOURCE = Path(__file__).resolve().with_name("udp_proxy.c")
DEFAULT_BINARY = SOURCE.parent / "build" / "udp_proxy"
ENV = "EMU_UDP_HELPER"
BUILD_HINT = "python3 -m emu.backends.udp.helper build (install.sh does)"


def binary() -> Path:
    """Where the C loop is expected (``$EMU_UDP_HELPER``, else the checkout's build directory)."""
    return Path(os.environ.get(ENV) or DEFAULT_BINARY)


def unusable() -> Optional[str]:
    """None if the C loop can run, else why not (one line)."""
    path = binary()
    if not path.exists():
        return f"{path} is not built (build it with: {BUILD_HINT})"
    if not os.access(str(path), os.X_OK):
        return f"{path} is not executable"
    if SOURCE.exists() and path.stat().st_mtime < SOURCE.stat().st_mtime:
        return f"{path} is older than {SOURCE.name} (rebuild it with: {BUILD_HINT})"
    return None


def argv(tun: str, listen: Tuple[str, int], routes: Sequence[Tuple[str, str, int]], sock_buf: int,
         txqueuelen: Optional[int], tun_ip: Optional[str], ping_unreachable: bool, verbose: bool,
         ready_file: Optional[str]) -> List[str]:
    """The C loop's command line for arguments the daemon has already checked. argv[0] names the daemon's module,
    so ``ps`` still shows emu.backends.udp.daemon."""
    out = ["emu.backends.udp.daemon[c]", "--tun", tun, "--listen", f"{listen[0]}:{listen[1]}"]
    for subnet, node_ip, port in routes:
        out += ["--route", f"{subnet}={node_ip}:{port}"]
    out += ["--sock-buf", str(sock_buf)]
    if txqueuelen is not None:
        out += ["--txqueuelen", str(txqueuelen)]
    if tun_ip:
        out += ["--tun-ip", tun_ip]
    if ping_unreachable:
        out.append("--ping-unreachable")
    if verbose:
        out.append("-v")
    if ready_file:
        out += ["--ready-file", ready_file]
    return out


def build(target: Optional[Path] = None) -> Tuple[bool, str]:
    """Compile ``udp_proxy.c`` with the system's ``cc`` into ``target`` (default: ``binary()``); (ok, message)."""
    target = target or binary()
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return False, "no C compiler (cc): the udp daemon will use its Python loop (apt-get install gcc libc6-dev)"
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".tmp")
    done = subprocess.run([compiler, "-O2", "-Wall", "-o", str(partial), str(SOURCE)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        return False, f"{compiler} failed on {SOURCE.name}: the udp daemon will use its Python loop\n{done.stderr}"
    os.replace(str(partial), str(target))
    return True, f"built {target}"


def main(args: Sequence[str]) -> int:
    """``python3 -m emu.backends.udp.helper build|status``."""
    if list(args) == ["build"]:
        ok, message = build()
        print(f"emu udp helper: {message}", file=sys.stdout if ok else sys.stderr)
        return 0 if ok else 1
    if list(args) == ["status"]:
        reason = unusable()
        print(f"emu udp helper: {reason or f'{binary()} is built and current'}")
        return 0 if reason is None else 1
    print("usage: python3 -m emu.backends.udp.helper build|status", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
