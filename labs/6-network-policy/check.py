"""Checks of lab 6, NetworkPolicy: a three-tier app locked down, a drop traced, DNS egress (see README.md).

Run them with: sudo python -m emu check 6 --answers labs/6-network-policy/answers.yaml
"""

from pathlib import Path

from emu.labs import answer, expect, run_in, setup, task
from emu.spec.yamlsrc import read_documents

TOPOLOGY = "topology.yaml"
HERE = Path(__file__).resolve().parent


def _curl(cluster, source, url):
    """The first line a stand-in answers (its pod's name), or "" when nothing answered within 3 s."""
    result = run_in(cluster, source, ["curl", "-s", "-m", "3", url], timeout=15)
    return result.stdout.strip() if result.returncode == 0 else ""


@setup
def deny_then_allow_the_application(cluster):
    """apply -f policies/default-deny.yaml, then apply -f policies/allow-app.yaml (tasks 2 and 3)"""
    for name in ("default-deny.yaml", "allow-app.yaml"):
        documents, _problems = read_documents(str(HERE / "policies" / name))
        cluster.apply(documents)


@task("you found that nothing isolates the database before any policy")
def open_before(cluster, answers):
    expect(answer(answers, "db_open_before") in ("yes", "true"), "probe curl -s -m 3 db.shop:5432/hostname")
    return True


@task("you found the chain of the frontend's egress rules")
def egress_chain(cluster, answers):
    veth = cluster.pod("frontend").plan.host_veth
    expect(answer(answers, "egress_chain") == f"emu-np-e-{veth}".lower(),
           "node-1 iptables-save -t filter | grep 'shop/frontend egress'")
    return True


@task("you found that the frontend reaches the api by its address, not by its name")
def address_not_name(cluster, answers):
    expect(answer(answers, "by_address") in ("yes", "true"), "frontend curl -s -m 3 ADDRESS:8080/hostname")
    expect(answer(answers, "by_name") in ("no", "false"), "frontend curl -s -m 3 api:8080/hostname")
    return True


@task("you found the policy by which the api's connection to the database is dropped")
def db_dropped_by(cluster, answers):
    given = {part.strip() for part in answer(answers, "db_dropped_by").split(",") if part.strip()}
    expect(given == {"shop/default-deny"}, "trace api db --port 5432: the verdict hop of db's ingress")
    return True


@task("you found the policies whose rules do not allow the DNS query")
def isolated_by(cluster, answers):
    given = {part.strip() for part in answer(answers, "isolated_by").split(",") if part.strip()}
    expect(given == {"shop/default-deny", "shop/frontend"}, "trace frontend kube-dns --port 53 --proto udp")
    return True


@task("your fix lets the frontend reach the api by name")
def frontend_by_name(cluster, answers):
    got = _curl(cluster, "frontend", "http://api:8080/hostname")
    expect(got == "api", f"frontend: curl api:8080/hostname gave {got or 'nothing'} (is DNS allowed, to the DNS pods?)")
    return True


@task("your fix lets the api reach the database by name (its allow-list and DNS)")
def api_by_name(cluster, answers):
    got = _curl(cluster, "api", "http://db:5432/hostname")
    expect(got == "db", f"api: curl db:5432/hostname gave {got or 'nothing'}")
    return True


@task("your fix opens nothing else: the frontend and the probe still cannot reach the database")
def nothing_more(cluster, answers):
    db = cluster.pod("db").ip
    for source in ("frontend", "probe"):
        got = _curl(cluster, source, f"http://{db}:5432/hostname")
        expect(got == "", f"{source} reaches the database ({db}:5432): your fix allows too much")
    return True
