"""emu works wherever it is checked out, /tmp included (root for the live case).

Containers get a private /tmp and the volumes their manifests mount, which could hide emu's own package from the
programs emu runs in pods (cluster DNS's nanny, the measurement helpers started with ``exec``): they import it
from the directory emu runs from. ``package_mounts`` binds that directory back, read-only, where something would
hide it. The live case copies emu under /tmp, builds a cluster with cluster DNS from there, and has a pod resolve
a Service by name (the DNS pods' nanny must have started) and run one of emu's helper modules.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, requires_root

from emu.apply.pods import package_mounts


def test_nothing_is_added_where_nothing_hides_the_package() -> None:
    assert package_mounts(["/data", "/var/cache"], "/home/student/emu") == []
    assert package_mounts(["/tmpdata"], "/srv/emu") == []


def test_a_private_tmp_or_a_volume_over_the_package_gets_it_bound_back_read_only() -> None:
    for volumes, root in (([], "/tmp/emu"), (["/home"], "/home/student/emu"), (["/srv/emu"], "/srv/emu")):
        mounts = package_mounts(volumes, root)
        assert [m[1] for m in mounts] == [root, root], (volumes, root)
        assert mounts[0][2] == "emu-keep" and "rdonly" in mounts[1][3]


@requires_root
@pytest.mark.root
@pytest.mark.slow
def test_emu_checked_out_under_tmp_builds_cluster_dns_and_runs_its_helpers_in_pods(tmp_path: Path) -> None:
    copy = tmp_path / "emu-checkout"
    copy.mkdir()
    shutil.copytree(REPO / "emu", copy / "emu", ignore=shutil.ignore_patterns("__pycache__", "build"))
    probe = (f"PYTHONPATH={copy} python3 -c 'import emu.types' && echo helper-imports; "
             f"touch {copy}/written 2>/dev/null || echo read-only; ls /tmp; sleep infinity")
    (copy / "cluster.yaml").write_text(
        "apiVersion: emu/v1\nkind: Cluster\nname: tmpcheckout\nnodes: [{name: node-1}, {name: node-2}]\n"
        "addons: {standin: false}\n---\n"
        "apiVersion: v1\nkind: Pod\nmetadata: {name: client}\nspec:\n  nodeName: node-1\n"
        f"  containers: [{{name: shell, command: {json.dumps(['sh', '-c', probe])}}}]\n"
    )
    (copy / "commands").write_text("client getent hosts kube-dns.kube-system.svc.cluster.local\nlogs client\n")
    result = subprocess.run(
        [sys.executable, "-m", "emu", "up", "cluster.yaml", "--script", "commands", "--quiet"],
        cwd=copy, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(copy)},
        capture_output=True, text=True, timeout=180,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "10.96.0.10" in output and "kube-dns.kube-system.svc.cluster.local" in output, output
    # the container's /tmp is its own (it lists only the package's top directory, bound back), the package
    # imports there, and it is read-only
    log = output.split("emu> logs client", 1)[1].split()
    assert log == ["helper-imports", "read-only", "pytest-of-root"], output
    assert not (copy / "written").exists()
