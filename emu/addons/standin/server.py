"""The stand-in server: one process that answers for every container without a command, in its own pod.

    python -m emu.addons.standin.server --control SOCKET --ready-file FILE

Started by the stand-in add-on (``emu.addons.standin``) with ``live.start_daemon``. It listens on the unix
socket ``SOCKET`` for newline-delimited JSON requests from emu and answers each with one JSON line:

- ``{"op": "serve", "containers": [ENTRY, ...]}`` with ENTRY ``{"key": "POD/CONTAINER", "pid": P, "start": T,
  "netns_pid": Q, "netns_start": U, "machine_netns": INODE, "hostname": H, "log": PATH, "ports": [[80, "TCP"],
  [81, "UDP"]], "resolv_conf": TEXT}``: for each container, open a pidfd of its process (``pid``, checked
  against its start time ``start``), enter its pod's network namespace (that of the pause process
  ``netns_pid``: a container's own process may not have entered it yet; never the machine's own, inode
  ``machine_netns``), create, bind and listen on a socket per port there, and serve them: HTTP on TCP ports,
  netexec's datagram commands on UDP ports (``emu.addons.standin.netexec``), ``/dial`` from the container's
  namespace (``...dial``). Each request is one line in the container's log ``PATH``. Answer:
  ``{"served": [KEY, ...], "failed": {KEY: WHY}}``.
- ``{"op": "forget", "keys": [KEY, ...]}``: stop serving them. ``{"op": "list"}``: what is served.

When a container's process exits (its pidfd becomes readable), its sockets are closed at once: a connection
to its ports is refused from then on, and its pod's network namespace is no longer held by this process.
"""

import argparse
import asyncio
import json
import os
import resource
import socket
import struct
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any, Dict, List, Optional, Set

from emu.addons.standin import namespaces
from emu.addons.standin.dial import Pod, dial
from emu.addons.standin.netexec import BadRequest, answer, read_request, text, udp_answer

IDLE_SECONDS = 30.0  # a keep-alive connection with no request for this long is closed
POLL_SECONDS = 0.5  # how often a container's process is checked where the kernel has no pidfd
LINE_LIMIT = 1 << 20
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # Linux's value, when Python does not name it
PKTINFO = struct.Struct("=i4s4s")  # struct in_pktinfo: ifindex, spec_dst (our address), addr
BACKLOG = 1024  # netexec's (Go's) listen backlog is the kernel's somaxconn; Python's http.server has 5


def _stamp() -> str:
    return time.strftime("%Y/%m/%d %H:%M:%S")


class Served:
    """One container the server answers for: its sockets, its pidfd, its log."""

    def __init__(self, key: str, entry: Dict[str, Any], pidfd: Optional[int], netns_fd: int) -> None:
        self.key = key
        self.pid = int(entry["pid"])
        self.start = int(entry["start"])
        self.hostname = str(entry["hostname"])
        self.pidfd = pidfd
        self.pod = Pod(netns_fd, str(entry.get("resolv_conf") or ""))
        # a raw descriptor, written a whole line at a time (O_APPEND): no buffer per container to hold
        self.log_fd = os.open(entry["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self.servers: List[asyncio.AbstractServer] = []
        self.transports: List[Any] = []  # the UDP servers
        self.connections: Set[asyncio.StreamWriter] = set()
        self.ports: List[str] = []

    def log(self, line: str) -> None:
        if self.log_fd < 0:
            return
        try:
            os.write(self.log_fd, f"{_stamp()} {line}\n".encode("utf-8", errors="replace"))
        except OSError:
            pass

    def close(self) -> None:
        for server in self.servers:
            server.close()
        for transport in self.transports:
            transport.close()
        for writer in list(self.connections):
            writer.transport.abort()
        self.log("stand-in: the container's process has gone: its ports are closed")
        os.close(self.log_fd)
        self.log_fd = -1
        os.close(self.pod.netns_fd)
        if self.pidfd is not None:
            os.close(self.pidfd)


class UdpServer:
    """netexec's UDP commands on one port of one container. A reply leaves from the address the datagram was
    sent to (IP_PKTINFO), as it must from a hostNetwork pod: a node has several addresses, and a reply from
    another one would not match the client's flow (nor kube-proxy's conntrack entry)."""

    def __init__(self, served: Served, sock: socket.socket) -> None:
        self.served = served
        self.sock = sock
        sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        for _ in range(64):  # a burst at a time, then back to the loop
            try:
                data, ancillary, _flags, addr = self.sock.recvmsg(65535, socket.CMSG_SPACE(PKTINFO.size))
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # an ICMP error for an earlier reply: nothing to do
                continue
            local = next((payload[4:8] for level, kind, payload in ancillary
                          if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(payload) >= PKTINFO.size),
                         None)
            client = f"{addr[0]}:{addr[1]}"
            reply, what = udp_answer(data, self.served.hostname, client)
            if reply is not None:
                source = [(socket.IPPROTO_IP, IP_PKTINFO, PKTINFO.pack(0, local, bytes(4)))] if local else []
                try:
                    self.sock.sendmsg([reply], source, 0, addr)
                except OSError:
                    pass
            self.served.log(f"{client} UDP {what}")

    def close(self) -> None:
        try:
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
        except (RuntimeError, ValueError):
            pass
        self.sock.close()


class StandinServer:
    def __init__(self) -> None:
        self.served: Dict[str, Served] = {}

    # ------------------------------------------------------------------------------------------ control

    async def control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                try:
                    request = json.loads(line)
                    reply = await self.handle(request)
                except (ValueError, KeyError, TypeError) as exc:
                    reply = {"error": f"bad request: {exc}"}
                except Exception as exc:  # say what went wrong rather than hang up on emu
                    reply = {"error": f"{type(exc).__name__}: {exc}"}
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    async def handle(self, request: Dict[str, Any]) -> Dict[str, Any]:
        op = request.get("op")
        if op == "serve":
            served: List[str] = []
            failed: Dict[str, str] = {}
            for entry in request["containers"]:
                problem = await self.serve(entry)
                if problem:
                    failed[entry["key"]] = problem
                else:
                    served.append(entry["key"])
            return {"served": served, "failed": failed}
        if op == "forget":
            keys = [k for k in request["keys"] if k in self.served]
            for key in keys:
                self.forget(key)
            return {"forgotten": keys}
        if op == "list":
            return {"containers": {k: {"pid": s.pid, "ports": s.ports} for k, s in self.served.items()}}
        return {"error": f"unknown op {op!r}"}

    # ------------------------------------------------------------------------------------------ serving

    async def serve(self, entry: Dict[str, Any]) -> str:
        """Serve one container; '' when every port listens, else what went wrong."""
        key, pid = str(entry["key"]), int(entry["pid"])
        old = self.served.get(key)
        if old is not None:
            if old.pid == pid and old.start == int(entry["start"]):
                return ""
            self.forget(key)
        holder = int(entry["netns_pid"])  # the pod's pause process: it holds the pod's network namespace
        try:
            pidfd = namespaces.pidfd_open(pid)
            netns_fd = os.open(f"/proc/{holder}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            return f"the container's process {pid} or its pod's {holder} is gone ({exc.strerror})"
        served = Served(key, entry, pidfd, netns_fd)
        if namespaces.start_time(pid) != served.start or namespaces.start_time(holder) != int(entry["netns_start"]):
            served.close()
            return f"the container's process {pid} or its pod's {holder} is gone"
        if os.fstat(netns_fd).st_ino == int(entry.get("machine_netns", 0)):
            served.close()
            return "refused: that is the machine's own network namespace, not a pod's"
        self.served[key] = served
        problems = []
        for port, protocol in entry["ports"]:
            try:
                await self._listen(served, int(port), str(protocol))
            except OSError as exc:
                problems.append(f"{port}/{protocol}: {exc.strerror or exc}")
                served.log(f"stand-in: cannot serve {port}/{protocol}: {exc.strerror or exc}")
        loop = asyncio.get_running_loop()
        if pidfd is not None:
            loop.add_reader(pidfd, self._exited, served)
        else:
            loop.call_later(POLL_SECONDS, self._poll, served)
        return "; ".join(problems)

    async def _listen(self, served: Served, port: int, protocol: str) -> None:
        kind = socket.SOCK_STREAM if protocol == "TCP" else socket.SOCK_DGRAM
        sock = namespaces.socket_in(served.pod.netns_fd, kind)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("0.0.0.0", port))
            if kind == socket.SOCK_STREAM:
                sock.listen(BACKLOG)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        if kind == socket.SOCK_STREAM:
            handler = partial(self.http, served, port)
            server = await asyncio.start_server(handler, sock=sock, limit=LINE_LIMIT, backlog=BACKLOG)
            served.servers.append(server)
            served.log(f"Started HTTP server on port {port} (emu's stand-in for agnhost netexec)")
        else:
            served.transports.append(UdpServer(served, sock))
            served.log(f"Started UDP server on port {port} (emu's stand-in for agnhost netexec)")
        served.ports.append(f"{port}/{protocol}")

    def _exited(self, served: Served) -> None:
        if self.served.get(served.key) is served:
            self.forget(served.key)

    def _poll(self, served: Served) -> None:
        if self.served.get(served.key) is not served:
            return
        if namespaces.start_time(served.pid) != served.start:
            self.forget(served.key)
        else:
            asyncio.get_running_loop().call_later(POLL_SECONDS, self._poll, served)

    def forget(self, key: str) -> None:
        served = self.served.pop(key)
        if served.pidfd is not None:
            asyncio.get_running_loop().remove_reader(served.pidfd)
        served.close()

    # ------------------------------------------------------------------------------------------- HTTP

    async def http(self, served: Served, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("?", 0)
        client = f"{peer[0]}:{peer[1]}"
        served.connections.add(writer)
        try:
            while True:
                try:
                    request = await asyncio.wait_for(read_request(reader, client, port), IDLE_SECONDS)
                except BadRequest as exc:
                    writer.write(text(400, f"400 Bad Request: {exc}\n").encode(keep_alive=False))
                    served.log(f"{client} bad request: {exc}")
                    break
                except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError, ValueError):
                    break
                if request is None:
                    break
                response = answer(request, served.hostname)
                if response is None:
                    response = await dial(request.form(), served.pod)
                writer.write(response.encode(request.keep_alive, head=request.method == "HEAD"))
                served.log(f"{client} {request.method} {request.target} {response.status}")
                await writer.drain()
                if not request.keep_alive:
                    break
        except (ConnectionError, OSError):
            pass
        finally:
            served.connections.discard(writer)
            writer.close()


def _raise_file_limit() -> None:
    """Every served port, log and pidfd is a descriptor: a thousand pods need more than the usual 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


async def main_async(control: str, ready: str) -> None:
    server = StandinServer()
    if os.path.exists(control):
        os.unlink(control)
    await asyncio.start_unix_server(server.control, path=control, limit=64 << 20)
    Path(ready).touch()
    print(f"{_stamp()} stand-in server ready (control socket {control})", flush=True)
    await asyncio.Event().wait()


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emu.addons.standin.server", description=__doc__.split("\n")[0])
    parser.add_argument("--control", required=True, help="the unix socket emu sends its requests to")
    parser.add_argument("--ready-file", required=True, help="created once the control socket listens")
    args = parser.parse_args(argv)
    _raise_file_limit()
    namespaces.home()
    try:
        asyncio.run(main_async(args.control, args.ready_file))
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
