"""Checks of lab 1, the pod as a logical host (see README.md beside this file).

Run them with: sudo python -m emu check 1 --answers labs/1-pod-as-host/answers.yaml
"""

from emu.labs import answer, expect, run_in, setup, task

TOPOLOGY = "topology.yaml"


@setup
def break_localhost(cluster):
    """pod app: its loopback device taken down (app ip link set lo down)"""
    cluster.pod("app").exec(["ip", "link", "set", "lo", "down"])


@task("you named the process that holds pod app's namespaces")
def pause_process(cluster, answers):
    expect(answer(answers, "pause_process") == f"emu-pause:{cluster.name}/app",
           "look for the pause process in the machine's process list (sh ps -eo pid,args | grep emu-pause)")
    return True


@task("you found what the sidecar gets from 127.0.0.1:8080")
def localhost_reply(cluster, answers):
    expect(answer(answers, "localhost_reply") == "hello-from-web",
           "ask it yourself: exec app -c sidecar -- curl -s http://127.0.0.1:8080/")
    return True


@task("you found why a second server on port 8080 fails in the sidecar")
def port_conflict(cluster, answers):
    text = answer(answers, "port_conflict_error")
    expect(any(word in text for word in ("address already in use", "eaddrinuse", "98")),
           "start one and read its last line: exec app -c sidecar -- python3 -m http.server 8080")
    return True


@task("you found whether /tmp is shared between the two containers")
def tmp_shared(cluster, answers):
    expect(answer(answers, "tmp_shared") in ("no", "false"),
           "write a file in /tmp of one container and look for it in the other")
    return True


@task("you found the directory both containers share")
def shared_volume(cluster, answers):
    expect(answer(answers, "shared_volume").rstrip("/") == "/shared",
           "look at the volumeMounts of pod app in the topology, then try it")
    return True


@task("your fix brings localhost back: the sidecar reaches the web container on 127.0.0.1:8080")
def localhost_fixed(cluster, answers):
    result = run_in(cluster, "app", ["curl", "-s", "-m", "3", "http://127.0.0.1:8080/"], container="sidecar")
    expect("hello-from-web" in result.stdout,
           f"curl http://127.0.0.1:8080/ in the sidecar still fails (exit {result.returncode}); what does "
           "'app ip -br link' show?")
    return True


@task("the sidecar wrote the pod's IP address to /shared/ip.txt, and the web container reads it there")
def shared_file(cluster, answers):
    result = run_in(cluster, "app", ["cat", "/shared/ip.txt"], container="web")
    expect(result.returncode == 0, "there is no /shared/ip.txt in the web container")
    ip = cluster.pod("app").ip
    expect(result.stdout.strip() == ip, f"/shared/ip.txt holds {result.stdout.strip()!r}, not the pod's IP {ip}")
    return True
