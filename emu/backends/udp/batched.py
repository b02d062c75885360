"""The udp backend daemon's batching data path (``--offload auto|on``): not flannel's behaviour, never the default.

flannel's proxy moves one packet per system call (``emu.backends.udp.proxy``, the default). This option trades
that fidelity for throughput, for users who want the overlay without its cost: the datagrams on the wire stay
flannel's (one UDP datagram per pod IP packet, at most the TUN MTU, bare IP payload), but the daemon makes far
fewer system calls, with standard kernel interfaces:
  * tun -> udp: the kernel still segments and checksums TCP for flannel0 (no TSO on the TUN); the daemon reads
    packets with ``preadv(RWF_NOWAIT)`` until the TUN queue is empty, then sends each run of same-size packets
    for one node with a single ``sendmsg`` carrying UDP_SEGMENT (UDP GSO): the kernel cuts it back into one
    datagram per packet. (On a veth underlay that cut happens where a NIC would make it, so a capture on the
    sending veth may show the not-yet-cut burst, as it does for VXLAN.)
  * udp -> tun: UDP_GRO hands over a burst of datagrams in one ``recvmsg``; consecutive segments of one TCP flow
    are merged (by the rules of the kernel's TCP GRO) and written into the TUN as one GSO packet
    (IFF_VNET_HDR), which is what the kernel's GRO does for VXLAN on the receiving node.
Each direction has its own thread (reads, writes and sends release the GIL), with 8 MiB socket buffers and a
TUN queue of 1000. The result is several times flannel's throughput, and a udp/vxlan ratio that says nothing
about flannel: measure flannel with the default.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import sys
from typing import Callable, List, Tuple

from emu.backends.udp.device import VNET_HDR_LEN, Tunnel
from emu.backends.udp.packets import IPPROTO_TCP, RouteTable, decrement_ttl

SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
UDP_MAX_SEGMENTS = 64  # 128 on newer kernels; 64 works everywhere
SOCK_BUF_BYTES = 8 * 1024 * 1024
TXQUEUELEN = 1000
MAX_UDP_PAYLOAD = 65507

# virtio_net_hdr (10 bytes, host byte order) that IFF_VNET_HDR puts in front of every TUN packet
VNET_F_NEEDS_CSUM = 1
VNET_GSO_TCPV4 = 1
VNET_HDR = struct.Struct("=BBHHHH")  # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
ZERO_VNET_HDR = bytes(VNET_HDR_LEN)
# the IPv4 + TCP fields GRO looks at: version/IHL, TOS, flags/fragment offset, TTL, protocol,
# addresses + ports, sequence number, ack number + data offset, TCP flags
SEG_HDR = struct.Struct("!BB4xHBB2x12sI5sB")
BUF_SIZE = 65536 + VNET_HDR_LEN  # one (super-)packet


def open_tunnel(tun_name: str, listen: Tuple[str, int], offload: str, **options: object) -> Tunnel:
    """The Tunnel this data path needs (IFF_VNET_HDR, big buffers, a longer queue), checked for the kernel's
    support: RuntimeError if ``offload`` is "on" and the kernel lacks RWF_NOWAIT reads on TUN devices or
    UDP GRO ("auto" leaves the choice to ``supported``)."""
    for name, default in (("sock_buf", SOCK_BUF_BYTES), ("txqueuelen", TXQUEUELEN)):
        if options.get(name) is None:
            options[name] = default
    tunnel = Tunnel(tun_name, listen, vnet_hdr=True, **options)  # type: ignore[arg-type]
    if offload == "on" and not supported(tunnel):
        tunnel.close()
        raise RuntimeError("--offload on: the kernel lacks UDP GRO or RWF_NOWAIT reads on TUN devices")
    return tunnel


def supported(tunnel: Tunnel) -> bool:
    """Whether the kernel gives this tunnel RWF_NOWAIT reads on the TUN and UDP GRO on the socket (UDP GSO is
    probed per send: it fails with EIO/EINVAL when missing, and the loop then sends datagram by datagram)."""
    assert tunnel.sock is not None
    try:
        os.preadv(tunnel.tun_fd, [bytearray(BUF_SIZE)], -1, os.RWF_NOWAIT)
    except BlockingIOError:
        pass
    except (OSError, AttributeError):
        return False
    try:
        tunnel.sock.setsockopt(SOL_UDP, UDP_GRO, 1)
    except OSError:
        return False
    return True


class BatchedProxy:
    """The two batching loops (one thread each) between a Tunnel opened by ``open_tunnel`` and the nodes."""

    def __init__(self, tunnel: Tunnel, routes: RouteTable) -> None:
        assert tunnel.sock is not None and tunnel.vnet_hdr
        self.tunnel = tunnel
        self.tun_fd = tunnel.tun_fd
        self.sock = tunnel.sock
        self.stats = tunnel.stats
        self.routes = routes
        self.log = tunnel.log
        self.udp_gso = True

    def loops(self) -> List[Tuple[str, Callable[[], None]]]:
        """The (thread name, callable) pairs to run."""
        return [("tun->udp", self.tun_to_udp_batched), ("udp->tun", self.udp_to_tun_offload)]

    def tun_to_udp_batched(self) -> None:
        """``tun_to_udp`` reading packets (already segmented and checksummed by the kernel) until the TUN queue
        is empty, and sending each run of same-size packets to one node with one UDP GSO sendmsg()."""
        out = bytearray(2 * BUF_SIZE)
        omv = memoryview(out)
        hdr = bytearray(VNET_HDR_LEN)
        fd = self.tun_fd
        readv = os.readv
        preadv = os.preadv
        nowait = os.RWF_NOWAIT
        get = self.routes.table.get
        kb = self.routes.key_bytes
        unpack_key = self.routes.key_struct.unpack_from
        mask = self.routes.mask
        stats = self.stats
        send_batch = self._send_batch
        o = 0  # bytes batched in out[:o]
        count = 0  # packets batched
        seg = 0  # size of the batch's packets (all but the last have it)
        bdst = None  # the batch's node
        limit = MAX_UDP_PAYLOAD
        while True:
            try:
                # RWF_NOWAIT: this one read does not block (the fd stays blocking for the idle wait below)
                n = preadv(fd, [hdr, omv[o:]], -1, nowait) - VNET_HDR_LEN
            except BlockingIOError:
                # the TUN queue is empty: send what we have, then sleep in a blocking read
                if count:
                    send_batch(omv, o, seg, count, bdst)
                    stats.tun_rx += count
                    o = count = 0
                stats.polls += 1
                n = readv(fd, [hdr, omv]) - VNET_HDR_LEN
            stats.tun_reads += 1
            if n < 20 or out[o] >> 4 != 4:
                continue
            if kb:
                dst = get(unpack_key(out, o + 16)[0])
            else:
                dst = get(unpack_key(out, o + 16)[0] & mask)
            if dst is None:
                self.tunnel.send_unreachable(bytes(out[o:o + n]))
                continue
            ttl = out[o + 8]
            if ttl <= 1:
                continue
            out[o + 8] = ttl - 1
            acc = 0x1FEFE - ((out[o + 10] << 8) | out[o + 11])
            acc = 0xFFFF - ((acc & 0xFFFF) + (acc >> 16))
            out[o + 10] = acc >> 8
            out[o + 11] = acc & 0xFF
            if count and (dst is not bdst or n > seg):
                # this packet cannot join the batch: send the batch, move the packet to the front
                send_batch(omv, o, seg, count, bdst)
                stats.tun_rx += count
                out[0:n] = omv[o:o + n]
                o = count = 0
            if not count:
                seg = n
                bdst = dst
            o += n
            count += 1
            if n < seg or count >= UDP_MAX_SEGMENTS or o + seg > limit:
                send_batch(omv, o, seg, count, bdst)
                stats.tun_rx += count
                o = count = 0

    def _send_batch(self, omv: memoryview, length: int, seg_size: int, count: int, dst: Tuple[str, int]) -> None:
        """Send ``count`` back-to-back packets of ``seg_size`` bytes (last may be shorter) as that many datagrams."""
        sock = self.sock
        self.stats.udp_sends += 1
        if count > 1 and self.udp_gso:
            try:
                sock.sendmsg([omv[:length]], [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", seg_size))], 0, dst)
                return
            except OSError as exc:
                if exc.errno not in (errno.EIO, errno.EINVAL, errno.ENOPROTOOPT, errno.EOPNOTSUPP):
                    self.log(f"UDP send to {dst[0]}:{dst[1]} failed: {exc.strerror}")
                    return
                self.udp_gso = False
                self.log(f"UDP GSO unavailable ({exc.strerror}): one sendto per datagram")
        o = 0
        while o < length:
            end = min(o + seg_size, length)
            try:
                sock.sendto(omv[o:end], dst)
            except OSError as exc:
                self.log(f"UDP send to {dst[0]}:{dst[1]} failed: {exc.strerror}")
            o = end

    def udp_to_tun_offload(self) -> None:
        """``udp_to_tun`` with UDP GRO in and TUN GSO writes out: a burst of one TCP flow is one TUN write."""
        buf = bytearray(BUF_SIZE)
        mv = memoryview(buf)
        out = bytearray(BUF_SIZE)
        omv = memoryview(out)
        fd = self.tun_fd
        writev = os.writev
        recvmsg_into = self.sock.recvmsg_into
        anc_size = socket.CMSG_SPACE(4)
        stats = self.stats
        bufs = [mv]
        zero = ZERO_VNET_HDR
        while True:
            n, anc, _flags, _addr = recvmsg_into(bufs, anc_size)
            stats.udp_reads += 1
            seg = n
            for level, ctype, data in anc:
                if level == SOL_UDP and ctype == UDP_GRO:
                    seg = int.from_bytes(data[:4], sys.byteorder)
            if seg >= n:
                # a single datagram: proxy.c's path
                if n < 20 or not decrement_ttl(buf, 0):
                    continue
                try:
                    writev(fd, [zero, mv[:n]])
                    stats.tun_writes += 1
                except OSError as exc:
                    self.log(f"TUN write failed: {exc.strerror}")
                stats.udp_rx += 1
                continue
            self._coalesce_and_write(buf, mv, n, seg, out, omv)

    def _coalesce_and_write(self, buf: bytearray, mv: memoryview, n: int, seg: int, out: bytearray,
                            omv: memoryview) -> None:
        """Write the packets of a GRO batch into the TUN, merging consecutive segments of one TCP flow.

        Segments merge when the kernel's TCP GRO would merge them: IPv4 without options or fragmentation,
        ACK/PSH only, same addresses, ports, TOS, TTL, DF, ack number, header length and options, the next
        sequence number, a payload no larger than the first one's; a short or PSH segment ends the merge.
        """
        fd = self.tun_fd
        P = VNET_HDR_LEN
        writev = os.writev
        zero = ZERO_VNET_HDR
        unpack = SEG_HDR.unpack_from
        flush = self._flush_merge
        # the merge in progress lives in out[P:P+olen]: the header of its first packet, then payloads
        olen = count = mss = next_seq = 0
        k_addrs = k_ack = k_opts = b""
        k_tos = k_ttl = k_df = last_flags = 0
        o = 0
        npk = 0
        while o < n:
            end = o + seg
            if end > n:
                end = n
            npk += 1
            size = end - o
            if size >= 40:
                vi, tos, frag, ttl, proto, addrs, seq, ack, flags = unpack(buf, o)
                if vi == 0x45 and proto == IPPROTO_TCP and not (frag & 0x3FFF) and not (flags & 0xE7):
                    hl = 20 + ((ack[4] >> 4) << 2)
                    pay = size - hl
                    if pay > 0:
                        opts = buf[o + 40:o + hl]
                        if (count and seq == next_seq and addrs == k_addrs and ack == k_ack and opts == k_opts
                                and pay <= mss and ttl == k_ttl and tos == k_tos and frag == k_df
                                and not (last_flags & 0x08) and olen + pay <= 65535):
                            out[P + olen:P + olen + pay] = mv[o + hl:end]
                            olen += pay
                            count += 1
                            next_seq = (seq + pay) & 0xFFFFFFFF
                            last_flags = flags
                            if pay < mss:
                                flush(out, omv, olen, count, mss, last_flags)
                                count = 0
                        else:
                            if count:
                                flush(out, omv, olen, count, mss, last_flags)
                            out[P:P + size] = mv[o:end]
                            olen = size
                            count = 1
                            mss = pay
                            k_addrs, k_ack, k_opts, k_ttl, k_tos, k_df = addrs, ack, opts, ttl, tos, frag
                            next_seq = (seq + pay) & 0xFFFFFFFF
                            last_flags = flags
                        o = end
                        continue
            # anything else goes through on its own, in order
            if count:
                flush(out, omv, olen, count, mss, last_flags)
                count = 0
            if size >= 20 and decrement_ttl(buf, o):
                try:
                    writev(fd, [zero, mv[o:end]])
                    self.stats.tun_writes += 1
                except OSError as exc:
                    self.log(f"TUN write failed: {exc.strerror}")
            o = end
        if count:
            flush(out, omv, olen, count, mss, last_flags)
        self.stats.udp_rx += npk

    def _flush_merge(self, out: bytearray, omv: memoryview, olen: int, count: int, mss: int, last_flags: int) -> None:
        """Write the merged packet in ``out`` (TTL - 1 as proxy.c does per datagram) with a GSO header."""
        P = VNET_HDR_LEN
        if out[P + 8] <= 1:
            return
        if count == 1:
            decrement_ttl(out, P)
            try:
                os.writev(self.tun_fd, [ZERO_VNET_HDR, omv[P:P + olen]])
                self.stats.tun_writes += 1
            except OSError as exc:
                self.log(f"TUN write failed: {exc.strerror}")
            return
        thl = (out[P + 32] >> 4) * 4
        out[P + 2] = olen >> 8
        out[P + 3] = olen & 0xFF
        out[P + 8] -= 1
        out[P + 10] = out[P + 11] = 0
        rest = int.from_bytes(omv[P:P + 20], "big") % 0xFFFF
        c = 0xFFFF - rest if rest else 0
        out[P + 10] = c >> 8
        out[P + 11] = c & 0xFF
        out[P + 33] |= last_flags & 0x09  # FIN/PSH of the last segment, as GRO does
        # CHECKSUM_PARTIAL: the TCP checksum field holds the folded pseudo-header sum
        tcp_len = olen - 20
        ps = (int.from_bytes(omv[P + 12:P + 20], "big") + IPPROTO_TCP + tcp_len) % 0xFFFF
        out[P + 36] = ps >> 8
        out[P + 37] = ps & 0xFF
        VNET_HDR.pack_into(out, 0, VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4, 20 + thl, mss, 20, 16)
        try:
            os.write(self.tun_fd, omv[:P + olen])
            self.stats.tun_writes += 1
        except OSError as exc:
            self.log(f"TUN write failed: {exc.strerror}")
