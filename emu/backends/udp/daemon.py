"""flannel's UDP backend daemon: the userspace encapsulating proxy behind ``flannel0``, one process per node.

What this module owns
    The daemon's command line and life: run as
    ``python3 -m emu.backends.udp.daemon --tun flannel0 --listen 192.168.56.11:8285 --route SUBNET=NODE_IP ...``
    inside a node's network namespace, it creates the TUN device and binds the UDP socket (``device``), prints
    ``READY`` (and writes ``--ready-file``), forwards until SIGTERM/SIGINT, then closes both (the device
    vanishes, as ``flannel0`` does when flanneld dies) and exits 0. The apply layer gives the device its
    address (the node subnet's .0 as /32), MTU (underlay 1500 - 20 IP - 8 UDP = 1472), link state and the
    cluster route with ``ip`` after READY: the state flanneld's ``configureIface`` leaves. Routes are the
    ``CMD_SET_ROUTE`` entries flanneld would send over its control socket, given on the command line.

The two data paths
    default (``--offload off``)  flannel's ``backend/udp/proxy.c`` as it is: one thread, ``poll`` over
        the TUN and the socket, one ``read`` and one ``sendto`` per packet, one ``recv`` and one ``write`` per
        datagram, TTL - 1 on each side, ICMP net unreachable for subnets no node holds; the TUN queue as
        flanneld leaves it (the kernel's 500), larger socket buffers than its (the nodes share
        this machine's cores: see ``device``). This is what flannel's udp backend costs, and what a
        measurement of "the udp backend" should see. In C (``udp_proxy.c``, exec'd in place of this process
        when install.sh has built it: ``helper``) or, without it, in Python (``proxy``): the same loop, but a
        Python wake-up is slower, and a ping crosses four.
    ``--offload auto|on``  ``batched``: UDP GSO/GRO and TCP segment merging, two threads. Same datagrams on the
        wire, a fraction of the system calls: NOT flannel's behaviour (it makes udp look nearly as fast as
        vxlan, which flannel's never was). For users who want the overlay without its cost.
Modules: ``packets`` (pure header arithmetic, route table, argument parsing), ``device`` (TUN + socket),
``proxy`` (the default loop in Python), ``helper`` (the same loop in C: ``udp_proxy.c``), ``batched`` (the
option).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import sys
import threading
from typing import List, NoReturn, Optional, Sequence, Tuple

from emu.backends.udp import batched, helper
from emu.backends.udp.device import PROG, SOCK_BUF, Tunnel
from emu.backends.udp.packets import RouteTable, parse_listen, parse_route
from emu.backends.udp.proxy import run_proxy


class Stop(Exception):
    """Raised by the SIGTERM/SIGINT handler to end the per-packet loop."""


def _raise_stop(signum: int, _frame: object) -> NoReturn:
    for sig in (signal.SIGTERM, signal.SIGINT):  # one is enough: exit cleanly even if more arrive
        signal.signal(sig, signal.SIG_IGN)
    raise Stop(signum)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python3 -m emu.backends.udp.daemon``."""
    p = argparse.ArgumentParser(
        prog="python3 -m emu.backends.udp.daemon",
        description="flannel's UDP backend proxy: creates a TUN device and carries its IPv4 packets to other "
                    "nodes as UDP datagrams (one bare IP packet per datagram), packet by packet as flannel's "
                    "proxy.c. Run it inside the node's network namespace; then give the device its /32 address, "
                    "MTU 1472, link up and route with `ip`.",
        epilog="Example: python3 -m emu.backends.udp.daemon --tun flannel0 --listen 192.168.56.11:8285 "
               "--route 10.244.2.0/24=192.168.56.12 --route 10.244.3.0/24=192.168.56.13 --ready-file /run/f0.ready")
    p.add_argument("--tun", default="flannel0", help="name of the TUN device to create (default: flannel0)")
    p.add_argument("--listen", required=True, metavar="IP[:PORT]",
                   help="this node's underlay address and UDP port to bind (port default 8285)")
    p.add_argument("--route", action="append", default=[], metavar="SUBNET=NODEIP[:PORT]",
                   help="a remote node's pod subnet and its underlay IP (port defaults to the --listen port); "
                        "repeat per node; all subnets must share one prefix length")
    p.add_argument("--ready-file", metavar="PATH", help="create this file once the device and socket exist")
    p.add_argument("--tun-ip", metavar="IP",
                   help="source of ICMP net-unreachable replies (default: the device's address, read when needed)")
    p.add_argument("--ping-unreachable", action="store_true",
                   help="make net unreachable reach the sender: answer ICMP echo requests too, and set accept_local=1 "
                        "on the TUN so the kernel takes an ICMP from its own address. flannel's proxy.c does "
                        "neither: its reply is never about ICMP, and the kernel drops it as a martian anyway")
    p.add_argument("--offload", choices=("off", "auto", "on"), default="off",
                   help="off (default): flannel's proxy.c loop, one system call per packet and direction. "
                        "auto/on: NOT flannel's behaviour: batch TUN reads into UDP GSO sends and merge UDP GRO "
                        "bursts into GSO TUN writes (same datagrams on the wire, several times the throughput); "
                        "auto falls back to the default loop when the kernel cannot, on fails")
    p.add_argument("--loop", choices=("auto", "c", "python"), default="auto",
                   help="the default data path's implementation: c (udp_proxy.c, built by install.sh), python "
                        "(emu.backends.udp.proxy), or auto (default): c when it is built and current, else python "
                        "with a notice. The same loop either way; C wakes up faster")
    p.add_argument("--txqueuelen", type=int, default=None,
                   help="TUN transmit queue length (default: the kernel's, 500, which flanneld leaves; "
                        "1000 with --offload auto/on)")
    p.add_argument("--sock-buf", type=int, default=None, metavar="BYTES",
                   help=f"the UDP socket's receive and send buffers (default {SOCK_BUF >> 20} MiB, 8 MiB with "
                        "--offload auto/on: every node shares this machine's cores, see emu.backends.udp.device; "
                        "0: the kernel's default, which flanneld leaves)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="log per-packet errors and, at exit, the packet counts to stderr (flannel's -v=1)")
    return p


def parse_args(argv: Optional[Sequence[str]]) -> Tuple[argparse.Namespace, Tuple[str, int], RouteTable]:
    """The parsed arguments, the listen address and the route table; exit 2 with one line on bad input."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        listen = parse_listen(args.listen)
        routes = RouteTable([parse_route(r, listen[1]) for r in args.route])
        if args.tun_ip:
            ipaddress.IPv4Address(args.tun_ip)
    except ValueError as exc:
        parser.error(str(exc))
    if not args.tun or len(args.tun.encode()) > 15:
        parser.error(f"--tun {args.tun!r}: interface names are 1 to 15 bytes")
    if args.txqueuelen is not None and not 0 < args.txqueuelen < 1 << 31:
        parser.error(f"--txqueuelen {args.txqueuelen}: must be a positive number of packets")
    if args.sock_buf is not None and args.sock_buf != 0 and not 4096 <= args.sock_buf < 1 << 31:
        parser.error(f"--sock-buf {args.sock_buf}: 0 (the kernel's default) or 4096 bytes and more")
    return args, listen, routes


def announce(ready_file: Optional[str]) -> None:
    """Say READY on stdout (and in ``ready_file``, which holds the pid): the device and the socket exist."""
    if ready_file:
        with open(ready_file, "w") as f:
            f.write(f"{os.getpid()}\n")
    sys.stdout.write("READY\n")
    sys.stdout.flush()


def _error(message: str) -> int:
    sys.stderr.write(f"{PROG}: error: {message}\n")
    return 1


def _goodbye(tunnel: Tunnel, verbose: bool) -> None:
    if verbose:
        sys.stderr.write(f"{PROG}: exiting: {tunnel.stats.summary()}\n")


def exec_c_loop(args: argparse.Namespace, listen: Tuple[str, int], routes: RouteTable) -> int:
    """Replace this process with the C loop (``helper``), if it is usable; else return (1 with --loop c, after
    saying why). Returns only when the Python loop must run."""
    reason = helper.unusable()
    if reason is not None:
        if args.loop == "c":
            return _error(f"--loop c: {reason}")
        sys.stderr.write(f"{PROG}: the C loop is unusable ({reason}): running the same loop in Python\n")
        sys.stderr.flush()
        return 0
    sock_buf = SOCK_BUF if args.sock_buf is None else args.sock_buf
    argv = helper.argv(args.tun, listen, routes.entries, sock_buf, args.txqueuelen, args.tun_ip,
                       args.ping_unreachable, args.verbose, args.ready_file)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(str(helper.binary()), argv)
    except OSError as exc:
        if args.loop == "c":
            return _error(f"--loop c: cannot run {helper.binary()}: {exc.strerror}")
        sys.stderr.write(f"{PROG}: cannot run {helper.binary()} ({exc.strerror}): running the loop in Python\n")
    return 0


def run_per_packet(args: argparse.Namespace, listen: Tuple[str, int], routes: RouteTable) -> int:
    """The default: proxy.c's loop in this (the main) thread until SIGTERM/SIGINT."""
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    tunnel: Optional[Tunnel] = None
    try:
        sock_buf = SOCK_BUF if args.sock_buf is None else args.sock_buf
        tunnel = Tunnel(args.tun, listen, sock_buf=sock_buf, txqueuelen=args.txqueuelen, tun_ip=args.tun_ip,
                        ping_unreachable=args.ping_unreachable, verbose=args.verbose)
        announce(args.ready_file)
        run_proxy(tunnel, routes)
        return _error("the forwarding loop ended")  # it only ends by an exception
    except Stop:
        if tunnel is not None:
            _goodbye(tunnel, args.verbose)
        return 0
    except RuntimeError as exc:
        return _error(str(exc))
    except OSError as exc:
        return _error(f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""))
    finally:
        if tunnel is not None:
            tunnel.close()


def run_default(args: argparse.Namespace, listen: Tuple[str, int], routes: RouteTable) -> int:
    """proxy.c's loop: in C when it is built (this process is replaced), else in Python."""
    if args.loop != "python" and exec_c_loop(args, listen, routes) != 0:
        return 1
    return run_per_packet(args, listen, routes)


def run_batched(args: argparse.Namespace, listen: Tuple[str, int], routes: RouteTable) -> int:
    """``--offload auto|on``: the batching loops on two threads; the main thread waits for a signal."""
    try:
        tunnel = batched.open_tunnel(args.tun, listen, args.offload, sock_buf=args.sock_buf, txqueuelen=args.txqueuelen,
                                     tun_ip=args.tun_ip, ping_unreachable=args.ping_unreachable,
                                     verbose=args.verbose)
    except RuntimeError as exc:
        return _error(str(exc))
    if not batched.supported(tunnel):  # "auto" on a kernel without RWF_NOWAIT on TUN or UDP GRO
        tunnel.close()
        sys.stderr.write(f"{PROG}: --offload auto: the kernel cannot batch; using the per-packet loop\n")
        return run_default(args, listen, routes)

    # Workers inherit the signal mask: only the main thread takes SIGTERM/SIGINT (and SIGUSR1 from a worker).
    wait_for = {signal.SIGTERM, signal.SIGINT, signal.SIGUSR1}
    signal.pthread_sigmask(signal.SIG_BLOCK, wait_for)
    failure: List[str] = []
    main_id = threading.get_ident()

    def guard(name: str, loop: object) -> None:
        try:
            loop()  # type: ignore[operator]
        except BaseException as exc:
            failure.append(f"{name} loop died: {exc!r}")
            signal.pthread_kill(main_id, signal.SIGUSR1)

    for name, loop in batched.BatchedProxy(tunnel, routes).loops():
        threading.Thread(target=guard, args=(name, loop), name=name, daemon=True).start()
    try:
        announce(args.ready_file)
    except OSError as exc:
        tunnel.close()
        return _error(f"cannot signal readiness: {exc}")
    sig = signal.sigwait(wait_for)
    tunnel.close()
    if sig == signal.SIGUSR1:
        return _error("; ".join(failure) or "a forwarding loop died")
    _goodbye(tunnel, args.verbose)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the daemon until SIGTERM/SIGINT. Exit 0 then, 1 on a runtime error, 2 on bad arguments."""
    args, listen, routes = parse_args(argv)
    if args.offload == "off":
        return run_default(args, listen, routes)
    return run_batched(args, listen, routes)


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # batched worker threads may sit in blocking reads on the closed fds: leave without waiting for them
    os._exit(code)
