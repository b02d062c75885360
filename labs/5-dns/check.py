"""Checks of lab 5, cluster DNS (see README.md beside this file).

Run them with: sudo python -m emu check 5 --answers labs/5-dns/answers.yaml
"""

import re
from pathlib import Path

from emu.labs import TaskFailed, answer, expect, run_in, setup, task

TOPOLOGY = "topology.yaml"
CLIENT = "client"


def _service(cluster, name, namespace="default"):
    for service in cluster.plan.services:
        if service.name == name and service.namespace == namespace:
            return service
    raise TaskFailed(f"the plan has no Service {namespace}/{name}")


def _words(text):
    return [w.rstrip(".") for w in re.split(r"[\s,]+", text) if w]


@setup
def node_resolver(cluster):
    """client: /etc/resolv.conf replaced by its node's, as dnsPolicy: Default would give it"""
    machine = Path("/etc/resolv.conf").read_text() if Path("/etc/resolv.conf").is_file() else "nameserver 127.0.0.53\n"
    cluster.pod(CLIENT).exec(["sh", "-c", 'printf "%s" "$1" > /etc/resolv.conf', "sh", machine])


@task("you found the client's nameserver: the kube-dns Service")
def nameserver(cluster, answers):
    expected = _service(cluster, "kube-dns", "kube-system").cluster_ip
    expect(answer(answers, "nameserver") == expected, "the plan: plan node-1 (the pod's /etc/resolv.conf)")
    return True


@task("you found the search path and ndots")
def search_path(cluster, answers):
    expect(_words(answer(answers, "search")) == ["default.svc.cluster.local", "svc.cluster.local", "cluster.local"],
           "the search line, in order")
    expect(answer(answers, "ndots") == "5", "the options line")
    return True


@task("you resolved Service web, and Service api of namespace other by its shortest name")
def service_names(cluster, answers):
    expect(answer(answers, "web_ip") == _service(cluster, "web").cluster_ip, "client getent hosts web")
    expect(answer(answers, "api_name").rstrip(".") == "api.other",
           "which names does the search path try for 'api'? (client getent hosts api, api.other, ...)")
    return True


@task("you found web-0's own A record (a pod's name in DNS)")
def pod_record(cluster, answers):
    ip = cluster.plan.pod("web-0").ip
    expect(answer(answers, "web0_record").rstrip(".") == f"{ip.replace('.', '-')}.default.pod.cluster.local",
           "<address with dashes>.<namespace>.pod.cluster.local")
    return True


@task("you resolved the headless Service db: every pod, and db-0 by name")
def headless(cluster, answers):
    pods = sorted(e.ip for p in _service(cluster, "db").ports for e in p.endpoints)
    expect(sorted(_words(answer(answers, "db_addresses"))) == pods, "client dig +short db.default.svc.cluster.local")
    expect(answer(answers, "db0_name").rstrip(".") == "db-0.db.default.svc.cluster.local",
           "a StatefulSet pod's name under its headless Service")
    return True


@task("you found the port in web's SRV record")
def srv(cluster, answers):
    expect(answer(answers, "web_srv_port") == "80", "client dig +short SRV _http._tcp.web.default.svc.cluster.local")
    return True


@task("you counted the queries ndots:5 causes for example.com, and for example.com. (with the dot)")
def ndots_queries(cluster, answers):
    expect(answer(answers, "queries_example_com") == "8", "every search domain first, A and AAAA each "
           "(tcpdump on the client's eth0 while getent hosts example.com runs)")
    expect(answer(answers, "queries_example_com_dot") == "2", "a name with a trailing dot is absolute")
    return True


@task("your fix gives the client its cluster DNS again: the planned resolv.conf, and names resolve")
def resolver_fixed(cluster, answers):
    planned = cluster.plan.pod(CLIENT).resolv_conf
    live = run_in(cluster, CLIENT, ["cat", "/etc/resolv.conf"]).stdout
    expect(live.split() == planned.split(), "client cat /etc/resolv.conf, and compare with the plan")
    web = run_in(cluster, CLIENT, ["getent", "hosts", "web"], timeout=30).stdout.split()
    expect(web[:1] == [_service(cluster, "web").cluster_ip],
           f"client getent hosts web gives {' '.join(web) or 'nothing'}")
    db0 = run_in(cluster, CLIENT, ["getent", "hosts", "db-0.db"], timeout=30).stdout.split()
    expect(db0[:1] == [cluster.plan.pod("db-0").ip], "client getent hosts db-0.db")
    return True
