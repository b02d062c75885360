"""What the stand-in answers, as agnhost ``netexec`` (the server of Kubernetes' network e2e tests) answers it.

Pure functions over parsed requests (no sockets), so they are tested without a network:

- HTTP (``answer``): ``/`` (``NOW: <time>``, also for any path netexec has no handler for), ``/hostname`` and
  ``/hostName`` (the pod's hostname), ``/clientip`` (the peer's ``ip:port`` as the pod sees it), ``/serverport``,
  ``/echo?msg=M&code=C``, ``/healthz``, ``/headers`` (the request's headers, as JSON) and ``/header?key=K``,
  ``/redirect?location=L&code=C``. ``/dial`` is asynchronous (``emu.addons.standin.dial``); ``/shell``,
  ``/upload``, ``/exit`` and ``/shutdown`` are refused (501): the stand-in runs no command from the network.
- UDP (``udp_answer``): the datagram ``hostname`` gives the hostname, ``echo X`` gives ``x``, ``clientip``
  the sender's ``ip:port``; like netexec, the text is trimmed and lower-cased first, and anything else gets no
  reply.
- ``dial_json``: ``/dial``'s answer, byte for byte what Go's ``json.Marshal`` makes of netexec's map.

Request and response framing (HTTP/1.0 and 1.1, keep-alive, Content-Length and chunked bodies) is
``read_request`` and ``Response.encode``.
"""

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, Dict, List, Optional, Sequence, Tuple
from urllib.parse import parse_qs, urlsplit

#: Paths netexec serves that run or stop something on request: never served here.
REFUSED = ("/shell", "/upload", "/exit", "/shutdown")
REFUSAL = "emu's stand-in server runs no commands from the network: /shell, /upload, /exit and /shutdown are off\n"
MAX_LINE = 65536
MAX_HEADERS = 100
MAX_BODY = 1 << 20


class BadRequest(ValueError):
    """A request that cannot be parsed (answered 400, then the connection is closed)."""


@dataclass
class Request:
    method: str
    target: str
    version: str
    headers: List[Tuple[str, str]]
    client: str  # "ip:port" of the peer
    server_port: int
    body: bytes = b""

    @property
    def path(self) -> str:
        target = self.target.split("?", 1)[0]
        if "://" in target:  # an absolute-form target (a proxy's request): its path part
            target = urlsplit(target).path
        return clean_path(target or "/")

    def header(self, name: str) -> str:
        wanted = name.lower()
        return next((v for k, v in self.headers if k.lower() == wanted), "")

    @property
    def keep_alive(self) -> bool:
        connection = self.header("Connection").lower()
        if self.version == "HTTP/1.1":
            return "close" not in connection
        return "keep-alive" in connection

    def form(self) -> Dict[str, str]:
        """Go's ``FormValue`` for every key: the first value, from a urlencoded body first, then the query."""
        values: Dict[str, str] = {}
        query = self.target.partition("?")[2].partition("#")[0]
        for key, items in parse_qs(query, keep_blank_values=True).items():
            values[key] = items[0]
        if self.method in ("POST", "PUT", "PATCH") and "x-www-form-urlencoded" in self.header("Content-Type"):
            for key, items in parse_qs(self.body.decode(errors="replace"), keep_blank_values=True).items():
                values[key] = items[0]
        return values


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: List[Tuple[str, str]] = field(default_factory=list)

    def encode(self, keep_alive: bool, head: bool = False) -> bytes:
        reason = _reason(self.status)
        lines = [f"HTTP/1.1 {self.status} {reason}", f"Date: {formatdate(usegmt=True)}"]
        lines += [f"{k}: {v}" for k, v in self.headers]
        if not any(k.lower() == "content-type" for k, _ in self.headers):
            lines.append("Content-Type: text/plain; charset=utf-8")
        lines.append(f"Content-Length: {len(self.body)}")
        if not keep_alive:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace") + (b"" if head else self.body)


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"status code {status}"


def text(status: int, body: str) -> Response:
    return Response(status, body.encode())


def clean_path(path: str) -> str:
    """Go's ``path.Clean`` for a URL path, as its ServeMux does before routing (``//hostname`` is ``/hostname``)."""
    parts: List[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return "/" + "/".join(parts)


def now_text() -> str:
    """``time.Now().String()`` of Go, to the microsecond."""
    now = datetime.now(timezone.utc)
    return now.strftime("%Y-%m-%d %H:%M:%S.%f +0000 UTC")


def answer(request: Request, hostname: str) -> Optional[Response]:
    """The response to ``request`` (None for ``/dial``, which is answered asynchronously)."""
    path = request.path
    if path == "/dial":
        return None
    if path in REFUSED:
        return text(501, REFUSAL)
    if path in ("/hostname", "/hostName"):
        return text(200, hostname)
    if path == "/clientip":
        return text(200, request.client)
    if path == "/serverport":
        return text(200, str(request.server_port))
    if path == "/healthz":
        return Response(200)
    if path == "/echo":
        return _echo(request.form())
    if path == "/headers":
        merged: Dict[str, List[str]] = {}
        for key, value in request.headers:
            merged.setdefault(_canonical(key), []).append(value)
        return text(200, json.dumps(merged, sort_keys=True, separators=(",", ":")))
    if path == "/header":
        return text(200, request.header(request.form().get("key", "")))
    if path == "/redirect":
        return _redirect(request.form())
    return text(200, f"NOW: {now_text()}")


def _canonical(key: str) -> str:
    """Go's canonical header key (``x-forwarded-for`` -> ``X-Forwarded-For``)."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in key.split("-"))


def _echo(form: Dict[str, str]) -> Response:
    code_text = form.get("code", "")
    msg = form.get("msg", "")
    if not code_text:
        return text(200, msg)
    try:
        code = int(code_text)
    except ValueError:
        return text(200, f"argument 'code' must be an integer or empty, got {json.dumps(code_text)}\n")
    return text(code if 100 <= code <= 999 else 200, msg)


def _redirect(form: Dict[str, str]) -> Response:
    location = form.get("location", "")
    code_text = form.get("code", "")
    code = 302
    if code_text:
        try:
            code = int(code_text)
        except ValueError:
            return text(200, f"argument 'code' must be an integer or empty, got {json.dumps(code_text)}\n")
    body = f'<a href="{location}">{_reason(code)}</a>.\n\n'
    headers = [("Location", location), ("Content-Type", "text/html; charset=utf-8")]
    return Response(code if 300 <= code <= 399 else 302, body.encode(), headers)


def dial_json(responses: Sequence[str], errors: Sequence[str], last_ok: bool) -> bytes:
    """``/dial``'s body: netexec keeps ``responses`` only when the last try answered something, ``errors`` only
    when there are some, and Go marshals the map with sorted keys and HTML-safe escapes."""
    out: Dict[str, Any] = {}
    if errors:
        out["errors"] = list(errors)
    if last_ok:
        out["responses"] = list(responses)
    encoded = json.dumps(out, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        encoded = encoded.replace(char, escape)
    return encoded.encode()


def udp_answer(data: bytes, hostname: str, client: str) -> Tuple[Optional[bytes], str]:
    """(the reply, or None for no reply; a word for the log) to one datagram."""
    received = data.decode("utf-8", errors="replace").strip().lower()
    if received == "hostname":
        return hostname.encode(), "hostname"
    if received.startswith("echo "):
        return received.split(" ", 1)[1].encode(), f"echo ({len(received) - 5} bytes)"
    if received == "clientip":
        return client.encode(), "clientip"
    if received:
        return None, f"unknown command {received[:40]!r}"
    return None, "empty datagram"


# ----------------------------------------------------------------------------------------------- framing


async def read_request(reader: Any, client: str, server_port: int) -> Optional[Request]:
    """The next request on a connection (an asyncio StreamReader); None at a clean end of the connection."""
    line = await reader.readline()
    while line in (b"\r\n", b"\n"):  # stray empty lines between requests are allowed
        line = await reader.readline()
    if not line:
        return None
    parts = line.decode("latin-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise BadRequest(f"malformed request line {line[:80]!r}")
    method, target, version = parts
    headers: List[Tuple[str, str]] = []
    while True:
        raw = await reader.readline()
        if not raw:
            raise BadRequest("connection closed in the headers")
        if raw in (b"\r\n", b"\n"):
            break
        if len(headers) >= MAX_HEADERS:
            raise BadRequest("too many headers")
        name, sep, value = raw.decode("latin-1").partition(":")
        if not sep:
            raise BadRequest(f"malformed header {raw[:80]!r}")
        headers.append((name.strip(), value.strip()))
    request = Request(method, target, version, headers, client, server_port)
    request.body = await _read_body(reader, request)
    return request


async def _read_body(reader: Any, request: Request) -> bytes:
    if "chunked" in request.header("Transfer-Encoding").lower():
        body = b""
        while True:
            size_line = await reader.readline()
            try:
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
            except ValueError:
                raise BadRequest("malformed chunk size") from None
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
                return body
            if len(body) + size > MAX_BODY:
                raise BadRequest("body too large")
            body += await reader.readexactly(size)
            await reader.readline()
    length_text = request.header("Content-Length")
    if not length_text:
        return b""
    try:
        length = int(length_text)
    except ValueError:
        raise BadRequest("malformed Content-Length") from None
    if length < 0 or length > MAX_BODY:
        raise BadRequest("body too large")
    return await reader.readexactly(length)
