"""Cluster DNS on a live cluster: the records written into every DNS pod, at start and after every change.

Each DNS pod's ``config-volume`` (``/etc/k8s/dns/dnsmasq-nanny`` in its container) gets ``hosts`` and
``dnsmasq.conf`` (``emu.addons.dns.records``), then ``generation`` (a digest of both); the pod's dnsmasq-nanny
serves them and writes the generation back to ``status``. A hook returns once every DNS pod serves the new
records (a second at most, usually a few tens of milliseconds), so a change made through the controller
(``delete_pod``, ``add_pod``, ``apply``) is visible in DNS when it returns.
"""

import hashlib
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from emu.addons.dns.records import dnsmasq_conf, hosts_file
from emu.errors import BuildError

VOLUME = "config-volume"
TIMEOUT = 10.0  # seconds a DNS pod may take to serve new records (the first: dnsmasq starting)


def _files(fragment: Any) -> Dict[str, str]:
    hosts = hosts_file(fragment.records)
    conf = dnsmasq_conf(fragment.records, fragment.zone)
    generation = hashlib.sha256((hosts + "\0" + conf).encode()).hexdigest()[:16]
    return {"hosts": hosts, "dnsmasq.conf": conf, "generation": generation + "\n"}


def _config_dir(live: Any, pod: str) -> Path:
    return Path(live.pod_directory(pod)) / "volumes" / VOLUME


def _write(directory: Path, files: Dict[str, str]) -> None:
    """Write the files, each atomically, ``generation`` last (the nanny acts on it)."""
    for name in ("hosts", "dnsmasq.conf", "generation"):
        tmp = directory / f".{name}.tmp"
        tmp.write_text(files[name])
        os.replace(tmp, directory / name)


def _serving(directory: Path) -> str:
    try:
        return (directory / "status").read_text().strip()
    except OSError:
        return ""


def publish(live: Any, fragment: Any, timeout: float = TIMEOUT) -> List[str]:
    """Give every live DNS pod of ``fragment`` its records and wait until each serves them; returns the pods that
    did not in ``timeout`` seconds."""
    files = _files(fragment)
    generation = files["generation"].strip()
    directories = {}
    for server in fragment.servers:
        pod = live.pods.get(server.pod)
        if pod is None or getattr(pod, "deleted", False):
            continue
        directory = _config_dir(live, server.pod)
        if _serving(directory) != generation:
            _write(directory, files)
            directories[server.pod] = directory
    deadline = time.monotonic() + timeout
    waiting = dict(directories)
    while waiting and time.monotonic() < deadline:
        for name, directory in list(waiting.items()):
            if _serving(directory) == generation:
                del waiting[name]
        if waiting:
            time.sleep(0.005)
    return sorted(waiting)


def start(live: Any, plan: Any) -> None:
    fragment = plan.addon("dns")
    late = publish(live, fragment)
    if late:
        pods = ", ".join(late)
        log = Path(live.pod_directory(late[0])) / "dnsmasq.log"
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:]) if log.exists() else ""
        raise BuildError(f"cluster DNS: {pods} did not serve the records within {TIMEOUT:g} s", [], tail)


def update(live: Any, old: Any, new: Any) -> None:
    fragment: Optional[Any] = new.addon("dns")
    if fragment is None:
        return
    late = publish(live, fragment)
    for pod in late:
        message = f"cluster DNS: {pod} did not serve the new records within {TIMEOUT:g} s"
        live.problems.append(message)
