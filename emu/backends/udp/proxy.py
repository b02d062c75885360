"""The udp backend daemon's default data path in Python: flannel's ``backend/udp/proxy.c`` ``run_proxy``.

The daemon runs it when its C twin (``udp_proxy.c``, see ``helper``) is not built, or with ``--loop python``.
One thread, and the same loop as proxy.c:
    ``poll`` on the TUN device and the UDP socket until either is readable; then alternate ``tun_to_udp`` and
    ``udp_to_tun``, one packet each, until both find nothing to read, and only then ``poll`` again (while there
    is traffic the reads bypass ``poll``: an empty read is cheaper than a ``poll`` call).
``tun_to_udp``   one ``read`` of one IP packet from the TUN (non-blocking, as proxy.c sets it); the node that
                 owns the destination's subnet; none -> ICMP net unreachable back into the TUN; TTL - 1 (drop at
                 0: proxy.c sends no time exceeded); one ``sendto`` of the bare packet as one datagram to
                 ``<node ip>:8285``, which waits while the socket's buffer is full (flanneld's socket blocks).
``udp_to_tun``   one non-blocking ``read`` (proxy.c: ``recv`` with MSG_DONTWAIT) of one datagram; TTL - 1; one
                 ``write`` into the TUN.
No batching, no offloads, no second thread: every packet costs its own system calls and its own wake-ups, the
cost flannel's udp backend had and the reason flannel made vxlan its default. The route lookup is one dict hit
(``RouteTable``) instead of proxy.c's linear scan; the buffer holds any IP packet instead of the TUN's MTU.
"""

from __future__ import annotations

import io
import os
import select
import socket
from typing import Callable, Optional, Tuple

from emu.backends.udp.device import Tunnel
from emu.backends.udp.packets import RouteTable

BUF_SIZE = 65536


def run_proxy(tunnel: Tunnel, routes: RouteTable) -> None:
    """Forward packets until an exception (the daemon's signal handler raises one on SIGTERM/SIGINT).

    The hot loop keeps everything in locals and inlines the TTL decrement (RFC 1624, as ``decrement_ttl``):
    a function call per packet would cost more than the arithmetic. The counters reach ``tunnel.stats`` when
    the loop ends, however it ends.
    """
    # long: one loop on purpose: the per-packet path must not make Python calls it can avoid.
    assert tunnel.sock is not None
    sock = tunnel.sock
    tun_fd = tunnel.tun_fd
    os.set_blocking(tun_fd, False)
    # FileIO.readinto on a non-blocking fd returns None when there is nothing to read: no exception (and no
    # exception object) each time the loop finds a side empty. The socket gets O_NONBLOCK for the same reason
    # (proxy.c's recv(MSG_DONTWAIT)); a send that would block waits in poll() instead, as a blocking send would.
    sock.setblocking(False)
    read_tun = io.FileIO(tun_fd, "rb", closefd=False).readinto
    read_sock = io.FileIO(sock.fileno(), "rb", closefd=False).readinto
    write_tun = os.write
    sendto = sock.sendto
    send_blocking = _sender(sock)
    poll = select.poll()
    poll.register(tun_fd, select.POLLIN)
    poll.register(sock.fileno(), select.POLLIN)
    wait = poll.poll
    get = routes.table.get
    key_bytes = routes.key_bytes
    unpack_key = routes.key_struct.unpack_from
    mask = routes.mask
    buf = bytearray(BUF_SIZE)
    mv = memoryview(buf)
    sent = received = dropped = waits = tun_reads = udp_reads = 0
    try:
        while True:
            wait()
            waits += 1
            busy = True
            while busy:
                busy = False
                # -- tun_to_udp: one packet from the TUN, one datagram out ------------------------------------
                n: Optional[int] = read_tun(mv)
                if n is not None:
                    busy = True
                    tun_reads += 1
                    if n < 20 or buf[0] >> 4 != 4:
                        dropped += 1
                    else:
                        if key_bytes:
                            node = get(unpack_key(buf, 16)[0])
                        else:
                            node = get(unpack_key(buf, 16)[0] & mask)
                        if node is None:
                            tunnel.send_unreachable(bytes(buf[:n]))
                        elif buf[8] <= 1:
                            dropped += 1
                        else:
                            buf[8] -= 1
                            acc = 0x1FEFE - ((buf[10] << 8) | buf[11])
                            acc = 0xFFFF - ((acc & 0xFFFF) + (acc >> 16))
                            buf[10] = acc >> 8
                            buf[11] = acc & 0xFF
                            try:
                                sendto(mv[:n], node)
                                sent += 1
                            except BlockingIOError:  # the send buffer is full: wait, as a blocking socket does
                                sent += send_blocking(mv[:n], node, tunnel)
                            except OSError as exc:
                                tunnel.log(f"UDP send to {node[0]}:{node[1]} failed: {exc.strerror}")
                # -- udp_to_tun: one datagram from the socket, one packet into the TUN --------------------------
                n = read_sock(mv)
                if n is None:
                    continue
                busy = True
                udp_reads += 1
                if n < 20 or buf[8] <= 1:
                    dropped += 1
                    continue
                buf[8] -= 1
                acc = 0x1FEFE - ((buf[10] << 8) | buf[11])
                acc = 0xFFFF - ((acc & 0xFFFF) + (acc >> 16))
                buf[10] = acc >> 8
                buf[11] = acc & 0xFF
                while True:
                    try:
                        write_tun(tun_fd, mv[:n])
                        received += 1
                    except BlockingIOError:  # proxy.c retries a TUN write that would block
                        continue
                    except OSError as exc:
                        tunnel.log(f"TUN write failed: {exc.strerror}")
                    break
    finally:
        stats = tunnel.stats
        stats.tun_rx += sent
        stats.udp_sends += sent
        stats.udp_rx += received
        stats.tun_writes += received
        stats.dropped += dropped
        stats.polls += waits
        stats.tun_reads += tun_reads
        stats.udp_reads += udp_reads


def _sender(sock: socket.socket) -> Callable[[memoryview, Tuple[str, int], Tunnel], int]:
    """What a blocking ``sendto`` does when the send buffer is full: wait until it has room, then send.
    Returns the number of datagrams sent (0 or 1)."""
    room = select.poll()
    room.register(sock.fileno(), select.POLLOUT)

    def send_blocking(data: memoryview, node: Tuple[str, int], tunnel: Tunnel) -> int:
        while True:
            room.poll()
            try:
                sock.sendto(data, node)
                return 1
            except BlockingIOError:
                continue
            except OSError as exc:
                tunnel.log(f"UDP send to {node[0]}:{node[1]} failed: {exc.strerror}")
                return 0

    return send_blocking
