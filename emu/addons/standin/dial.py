"""``/dial``: netexec's probe of another address, made from inside the pod that was asked.

``dial(params, pod)`` reads ``host``, ``port``, ``request``, ``protocol`` (``http`` or ``udp``) and ``tries`` as
netexec does, and ``timeout`` (seconds per try, default 5 as netexec's client; an emu extension, so that a probe
of a broken path ends sooner), makes every try from a socket created in the pod's network namespace, and
answers netexec's JSON (``{"responses": [...]}``, ``{"errors": [...]}``) with Go's error texts. A name in
``host`` is resolved as the pod's resolver would: a DNS query from the pod's namespace to the nameserver of the
pod's resolv.conf (which cluster DNS puts in the plan); without one the request fails (400) and says so.
"""

import asyncio
import errno
import os
import socket
from ipaddress import IPv4Address
from typing import Any, Dict, List, Tuple
from urllib.parse import urlsplit

from emu.addons.standin import dns
from emu.addons.standin.namespaces import socket_in
from emu.addons.standin.netexec import Response, dial_json, text

DEFAULT_TIMEOUT = 5.0
MAX_TRIES = 1000
MAX_REDIRECTS = 10


class DialError(Exception):
    """One try failed; the message is the text netexec would list under ``errors``."""


class Pod:
    """What a dial needs of the pod it is made from: its network namespace and its resolv.conf."""

    def __init__(self, netns_fd: int, resolv_conf: str) -> None:
        self.netns_fd = netns_fd
        self.resolv_conf = resolv_conf


def _errno_text(exc: OSError) -> str:
    """Go's wording of an errno (``connection refused``)."""
    message = os.strerror(exc.errno) if exc.errno else str(exc)
    return message[:1].lower() + message[1:]


async def dial(params: Dict[str, str], pod: Pod) -> Response:
    tries_text = params.get("tries", "")
    try:
        tries = int(tries_text) if tries_text else 1
    except ValueError:
        return text(400, f'tries parameter is invalid. strconv.Atoi: parsing "{tries_text}": invalid syntax\n')
    request = params.get("request", "")
    if not request:
        return text(400, "request parameter not specified. <nil>\n")
    protocol = params.get("protocol", "").lower() or "http"
    if protocol not in ("http", "udp"):
        why = " (emu's pods speak TCP and UDP)" if protocol == "sctp" else ""
        return text(400, f"unsupported protocol. {params.get('protocol')}{why}\n")
    try:
        timeout = float(params.get("timeout", "") or DEFAULT_TIMEOUT)
        port = int(params.get("port", ""))
        if not 0 <= port <= 65535 or not 0 < timeout <= 60:
            raise ValueError
    except ValueError:
        return text(400, f"host and/or port param are invalid. address {params.get('port', '')}: invalid port\n")
    try:
        ip = await resolve(params.get("host", ""), pod)
    except DialError as exc:
        return text(400, f"host and/or port param are invalid. {exc}\n")
    responses: List[str] = []
    errors: List[str] = []
    last = ""
    for _ in range(min(tries, MAX_TRIES)):
        try:
            if protocol == "http":
                last = await asyncio.wait_for(_http(ip, port, request, pod), timeout)
            else:
                last = await _udp(ip, port, request, pod, timeout)
            responses.append(last)
        except asyncio.TimeoutError:
            last = ""
            errors.append(f'Get "http://{ip}:{port}/{request}": context deadline exceeded '
                          "(Client.Timeout exceeded while awaiting headers)")
        except DialError as exc:
            last = ""
            errors.append(str(exc))
    return Response(200, dial_json(responses, errors, bool(last)))


async def resolve(host: str, pod: Pod) -> str:
    """The IPv4 address of ``host`` (an address, ``localhost``, or a name asked of the pod's nameservers)."""
    if not host or host == "localhost":
        return "127.0.0.1"
    try:
        return str(IPv4Address(host))
    except ValueError:
        pass
    conf = dns.parse_resolv_conf(pod.resolv_conf)
    if not conf.nameservers:
        raise DialError(f"lookup {host}: the pod has no nameserver (no cluster DNS gave it a resolv.conf): "
                        "dial an address, or enable cluster DNS")
    last = "no such host"
    for name in dns.candidates(host, conf):
        for _attempt in range(conf.attempts):
            answered = False
            for server in conf.nameservers:
                try:
                    code, addresses = await _ask(server, name, pod, conf.timeout)
                except (asyncio.TimeoutError, OSError, dns.DnsError) as exc:
                    last = f"lookup {host} on {server}:53: " + (
                        "i/o timeout" if isinstance(exc, asyncio.TimeoutError) else str(exc))
                    continue
                answered = True
                if code == dns.NOERROR and addresses:
                    return addresses[0]
                last = f"lookup {host} on {server}:53: " + ("server misbehaving" if code == dns.SERVFAIL
                                                            else "no such host")
            if answered:
                break
    raise DialError(last)


async def _ask(server: str, name: str, pod: Pod, timeout: float) -> Tuple[int, List[str]]:
    loop = asyncio.get_running_loop()
    ident = int.from_bytes(os.urandom(2), "big")
    sock = socket_in(pod.netns_fd, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.connect((server, 53))
        await loop.sock_sendall(sock, dns.query(name, ident))
        deadline = loop.time() + timeout
        while True:
            data = await asyncio.wait_for(loop.sock_recv(sock, 4096), max(0.0, deadline - loop.time()))
            try:
                return dns.answers(data, ident)
            except dns.DnsError:
                continue  # a stray datagram: keep waiting for the reply to this question
    finally:
        sock.close()


async def _http(ip: str, port: int, request: str, pod: Pod) -> str:
    """GET http://IP:PORT/REQUEST from the pod (redirects followed, as Go's client does); the body."""
    target = "/" + request
    for _ in range(MAX_REDIRECTS + 1):
        url = f"http://{ip}:{port}{target}"
        status, headers, body = await _get(ip, port, target, url, pod)
        location = headers.get("location", "")
        if status in (301, 302, 303, 307, 308) and location:
            moved = urlsplit(location)
            if moved.hostname:
                ip, port = await resolve(moved.hostname, pod), moved.port or 80
            target = (moved.path or "/") + (f"?{moved.query}" if moved.query else "")
            continue
        return body.decode("utf-8", errors="replace")
    raise DialError(f'Get "http://{ip}:{port}{target}": stopped after {MAX_REDIRECTS} redirects')


async def _get(ip: str, port: int, target: str, url: str, pod: Pod) -> Tuple[int, Dict[str, str], bytes]:
    loop = asyncio.get_running_loop()
    sock = socket_in(pod.netns_fd, socket.SOCK_STREAM)
    sock.setblocking(False)
    writer: Any = None
    try:
        try:
            await loop.sock_connect(sock, (ip, port))
        except OSError as exc:
            raise DialError(f'Get "{url}": dial tcp {ip}:{port}: connect: {_errno_text(exc)}') from None
        except asyncio.CancelledError:
            raise
        local = "%s:%d" % sock.getsockname()
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
        writer.write(f"GET {target} HTTP/1.1\r\nHost: {ip}:{port}\r\nUser-Agent: Go-http-client/1.1\r\n"
                     "Connection: close\r\n\r\n".encode("latin-1", "replace"))
        try:
            return await _read_response(reader)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            if isinstance(exc, OSError) and exc.errno:
                raise DialError(f'Get "{url}": read tcp {local}->{ip}:{port}: read: {_errno_text(exc)}') from None
            raise DialError(f'Get "{url}": EOF') from None
    finally:
        if writer is not None:
            writer.close()
        else:
            sock.close()


async def _read_response(reader: Any) -> Tuple[int, Dict[str, str], bytes]:
    status_line = await reader.readline()
    parts = status_line.decode("latin-1").split(None, 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise ValueError("malformed status line")
    status = int(parts[1])
    headers: Dict[str, str] = {}
    while True:
        line = await reader.readline()
        if not line:
            raise asyncio.IncompleteReadError(b"", None)
        if line in (b"\r\n", b"\n"):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = b""
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                return status, headers, body
            body += await reader.readexactly(size)
            await reader.readline()
    if "content-length" in headers:
        return status, headers, await reader.readexactly(int(headers["content-length"]))
    return status, headers, await reader.read()


async def _udp(ip: str, port: int, request: str, pod: Pod, timeout: float) -> str:
    """Send ``request`` in one datagram from the pod and wait ``timeout`` seconds for one back."""
    loop = asyncio.get_running_loop()
    sock = socket_in(pod.netns_fd, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        try:
            sock.connect((ip, port))
        except OSError as exc:
            raise DialError(f"udp dial failed. err:dial udp {ip}:{port}: connect: {_errno_text(exc)}") from None
        flow = "%s:%d->%s:%d" % (sock.getsockname() + (ip, port))
        try:
            await loop.sock_sendall(sock, request.encode())
        except OSError as exc:
            raise DialError(f"udp connection write failed. err:write udp {flow}: write: {_errno_text(exc)}") from None
        try:
            data = await asyncio.wait_for(loop.sock_recv(sock, 65535), timeout)
        except asyncio.TimeoutError:
            raise DialError(f"reading from udp connection failed. err:'read udp {flow}: i/o timeout'") from None
        except OSError as exc:
            reason = _errno_text(exc) if exc.errno != errno.ECONNREFUSED else "connection refused"
            raise DialError(f"reading from udp connection failed. err:'read udp {flow}: read: {reason}'") from None
        if not data:
            raise DialError("reading from udp connection failed. err:'<nil>'")
        return data.decode("utf-8", errors="replace")
    finally:
        sock.close()

