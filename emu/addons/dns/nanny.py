"""dnsmasq-nanny: the process of a DNS pod's ``dnsmasq`` container, which keeps dnsmasq's answers current.

kube-dns's ``dnsmasq`` container ran ``dnsmasq-nanny``, which ran dnsmasq as a forwarding front on port 53
(``--server=/cluster.local/127.0.0.1#10053``: the zone to the records server beside it) and restarted it when its
configuration changed. This is the same arrangement, with dnsmasq on both sides:

- the **front** dnsmasq listens on port 53 (UDP and TCP) in the pod, keeps no cache, answers every name outside
  the cluster zone and the reverse zone itself (NXDOMAIN: ``--address=/#/``; nothing is forwarded off the
  machine) and forwards the zone and ``in-addr.arpa`` to the back (``--servers-file``, re-read on SIGHUP);
- the **back** dnsmasq holds the records on 127.0.0.1: A and PTR from a hosts file in its ``--hostsdir``
  (dnsmasq re-reads it through inotify: no restart), SRV, CNAME and TXT from its configuration file.

The cluster (``emu.addons.dns.live``) writes ``hosts``, ``dnsmasq.conf`` and then ``generation`` into the
config directory (the pod's ``config-volume``). When the generation changes, the nanny serves the new records
within a few tens of milliseconds, without dropping a query:

- only the hosts changed: the new file is renamed into the back's hosts directory (dnsmasq swaps the file's
  records in one step of its event loop);
- the configuration changed (SRV, CNAME, TXT: dnsmasq reads them only at start): a new back starts on the other
  port with the new files; once it answers, the front is told to ask it first and the old one second (SIGHUP),
  then, when no query can still be on its way to the old one, only the new one, and the old one stops.

Either way the nanny checks that the back answers a marker name of the generation, then writes ``status`` (the
generation served). Children die with the nanny (``PR_SET_PDEATHSIG``), so nothing outlives the container.
Standard library only: it runs as ``python3 -m emu.addons.dns.nanny --config-dir DIR -- FRONT-OPTIONS...``.
"""

import argparse
import ctypes
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

POLL = 0.01  # seconds between looks at the config directory
DRAIN = 0.1  # seconds the old back keeps answering after the front stopped sending to it
BACK_PORTS = (10053, 10054)  # kube-dns's records server listened on 10053
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: be killed when the nanny dies, however it dies."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _write(path: Path, text: str) -> None:
    """Write ``text`` atomically (a temporary file renamed over ``path``)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _read(path: Path) -> Optional[str]:
    try:
        return path.read_text()
    except OSError:
        return None


def probe(port: int, name: str, timeout: float = 0.2) -> bool:
    """Does the dnsmasq on 127.0.0.1:``port`` answer an A record for ``name``?"""
    qid = random.randrange(65536)
    labels = b"".join(bytes([len(part)]) + part.encode() for part in name.split("."))
    query = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + labels + b"\0" + struct.pack(">HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(("127.0.0.1", port))  # connected: a port nobody listens on yet is refused at once
            sock.send(query)
            while True:
                data = sock.recv(4096)
                if len(data) >= 12 and struct.unpack(">H", data[:2])[0] == qid:
                    return (data[3] & 0x0F) == 0 and struct.unpack(">H", data[6:8])[0] > 0
        except OSError:  # timeout, refused (not listening yet)
            return False


class Back:
    """One records dnsmasq on 127.0.0.1:``port``, serving one configuration."""

    def __init__(self, run_dir: Path, port: int, conf: str) -> None:
        self.port = port
        self.conf = conf
        self.hosts_dir = run_dir / f"hosts-{port}"
        self.hosts_dir.mkdir(parents=True, exist_ok=True)
        for old in self.hosts_dir.iterdir():
            old.unlink()
        self.staging = run_dir / f"hosts-{port}.next"
        self.conf_file = run_dir / f"back-{port}.conf"
        self.conf_file.write_text(conf)
        self.process: Optional["subprocess.Popen[bytes]"] = None

    def write_hosts(self, hosts: str) -> None:
        """Put ``hosts`` in the hosts directory in one rename (dnsmasq sees one IN_MOVED_TO)."""
        self.staging.write_text(hosts)
        os.replace(self.staging, self.hosts_dir / "records")

    def start(self) -> None:
        argv = [
            "dnsmasq",
            "--keep-in-foreground",
            f"--conf-file={self.conf_file}",
            f"--port={self.port}",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
            "--user=root",
            "--pid-file=",  # no pid file (the machine's /run/dnsmasq is not emu's)
            f"--hostsdir={self.hosts_dir}",
            "--log-facility=-",
        ]
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class Nanny:
    """The front, the back(s), and the generation served."""

    def __init__(self, config_dir: Path, run_dir: Path, front_options: Sequence[str]) -> None:
        self.config_dir = config_dir
        self.run_dir = run_dir
        self.front_options = list(front_options)
        self.servers = run_dir / "servers"
        self.front: Optional["subprocess.Popen[bytes]"] = None
        self.back: Optional[Back] = None
        self.generation = ""
        self.stopping = False

    def _files(self) -> Tuple[str, str, str]:
        generation = (_read(self.config_dir / "generation") or "").strip()
        hosts = _read(self.config_dir / "hosts") or ""
        conf = _read(self.config_dir / "dnsmasq.conf") or ""
        return generation, hosts, conf

    @staticmethod
    def marker(generation: str) -> str:
        return f"g{generation or 'none'}.nanny.emu.invalid"

    def _hosts(self, hosts: str, generation: str) -> str:
        # 0.0.0.0: a marker the nanny asks the back for; the front never forwards its name.
        return hosts + f"0.0.0.0\t{self.marker(generation)}\n"

    def _wait_answer(self, port: int, generation: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not probe(port, self.marker(generation)):
            back = self.back
            if back is not None and back.port == port and back.process is not None and back.process.poll() is not None:
                raise RuntimeError(f"the records dnsmasq on port {port} exited with status {back.process.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"dnsmasq on port {port} does not answer for generation {generation or '-'}")
            time.sleep(0.005)

    def _set_servers(self, ports: Sequence[int]) -> None:
        lines = []
        for port in ports:
            lines.append(f"server=/in-addr.arpa/127.0.0.1#{port}")
            for zone in self._zones():
                lines.append(f"server=/{zone}/127.0.0.1#{port}")
        _write(self.servers, "\n".join(lines) + "\n")
        if self.front is not None:
            self.front.send_signal(signal.SIGHUP)

    def _zones(self) -> List[str]:
        conf = self.back.conf if self.back is not None else ""
        return [line.split("/")[1] for line in conf.splitlines() if line.startswith("local=/") and "arpa" not in line]

    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        generation, hosts, conf = self._files()
        self.back = Back(self.run_dir, BACK_PORTS[0], conf)
        self.back.write_hosts(self._hosts(hosts, generation))
        self.back.start()
        self._wait_answer(self.back.port, generation)
        self._set_servers([self.back.port])
        argv = ["dnsmasq", "--keep-in-foreground", "--pid-file=", f"--servers-file={self.servers}"]
        argv += self.front_options
        self.front = subprocess.Popen(argv, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        self._served(generation)

    def _served(self, generation: str) -> None:
        self.generation = generation
        if generation:
            _write(self.config_dir / "status", generation + "\n")

    def step(self) -> None:
        """Serve the config directory's generation if it is new; restart a back that died."""
        assert self.back is not None
        generation, hosts, conf = self._files()
        if self.back.process is not None and self.back.process.poll() is not None:
            print(f"dnsmasq-nanny: the records dnsmasq exited ({self.back.process.returncode}): restarting it")
            self._swap(hosts, conf, self.generation)
        elif generation and generation != self.generation:
            if conf == self.back.conf:
                self.back.write_hosts(self._hosts(hosts, generation))
                self._wait_answer(self.back.port, generation)
                self._served(generation)
            else:
                self._swap(hosts, conf, generation)
            print(f"dnsmasq-nanny: serving generation {generation}", flush=True)

    def _swap(self, hosts: str, conf: str, generation: str) -> None:
        assert self.back is not None
        old = self.back
        new = Back(self.run_dir, next(p for p in BACK_PORTS if p != old.port), conf)
        new.write_hosts(self._hosts(hosts, generation))
        new.start()
        self._wait_answer(new.port, generation)
        self.back = new
        self._set_servers([new.port, old.port])  # strict-order: the new one first
        time.sleep(POLL)  # the front handles SIGHUP in its next turn of the event loop
        self._served(generation)
        time.sleep(DRAIN)
        self._set_servers([new.port])
        time.sleep(POLL)
        old.stop()

    def run(self) -> int:
        self.start()
        while not self.stopping:
            if self.front is not None and self.front.poll() is not None:
                print(f"dnsmasq-nanny: dnsmasq exited with status {self.front.returncode}", file=sys.stderr)
                self.stop()
                return 1
            self.step()
            time.sleep(POLL)
        return 0

    def stop(self) -> None:
        if self.front is not None and self.front.poll() is None:
            self.front.terminate()
            self.front.wait()
        if self.back is not None:
            self.back.stop()


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="dnsmasq-nanny", description=__doc__.splitlines()[0])
    parser.add_argument("--config-dir", required=True, help="where hosts, dnsmasq.conf and generation appear")
    parser.add_argument("--run-dir", default="/tmp/dnsmasq-nanny", help="dnsmasq's own files")
    parser.add_argument("front_options", nargs=argparse.REMAINDER, help="-- then the front dnsmasq's options")
    args = parser.parse_args(argv)
    options = [o for o in args.front_options if o != "--"]
    nanny = Nanny(Path(args.config_dir), Path(args.run_dir), options)

    def on_term(_signum: int, _frame: object) -> None:
        nanny.stopping = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    try:
        status = nanny.run()
    finally:
        nanny.stop()
    return status


if __name__ == "__main__":
    sys.exit(main())
