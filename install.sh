#!/bin/sh
# Install everything emu needs, from the distribution's packages (Debian 12, Ubuntu 20.04+ / the Mininet VM).
# Run as root, or with sudo: ./install.sh   (sudo ./install.sh on Ubuntu)
set -eu

if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        exec sudo "$0" "$@"
    fi
    echo "install.sh: run me as root" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update
# mininet brings mnexec and the 'mininet' module for the system python3; the rest are the kernel tools emu drives
# (nftables: kube-proxy's nftables mode; conntrack: kube-proxy's deletion of stale UDP flows). dnsmasq-base is
# cluster DNS's server (the binary only: no system service, the machine's resolver untouched); dnsutils brings dig
# and nslookup for the pods. gcc and libc6-dev build the udp backend daemon's C loop (below) and
# bench/udp_reference.c, the C forwarder bench/udp_daemon.py measures it against.
apt-get install -y --no-install-recommends \
    mininet iproute2 iptables ipset nftables conntrack iperf3 iputils-ping tcpdump curl ethtool procps util-linux kmod \
    dnsmasq-base dnsutils \
    python3 python3-yaml python3-matplotlib python3-pytest python3-jsonschema python-is-python3 sudo \
    gcc libc6-dev
# headless Chromium: the tests load emu graph's pages in a real browser (tests/test_graph_browser.py). Debian calls
# it chromium; Ubuntu chromium-browser. Only those tests need it: they skip, saying so, without it.
apt-get install -y --no-install-recommends chromium || apt-get install -y --no-install-recommends chromium-browser \
    || echo "install.sh: no Chromium package: the browser tests of emu graph will be skipped" >&2

here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
# The udp backend daemon's C loop, emu/backends/udp/build/udp_proxy (without it the daemon runs the same loop
# in Python, with a notice in the node's log).
python3 -m emu.backends.udp.helper build || echo "install.sh: the udp daemon will use its Python loop" >&2
# emu doctor's verdict from the Python that `sudo python` runs, the one the user will meet: sudo looks `python` up
# on its own secure_path (Debian: /usr/bin/python, from python-is-python3), not on this shell's PATH, whose first
# python3 may be another one (pyenv's, a venv's) without the mininet module.
if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    python=$(sudo -n sh -c 'command -v python' || true)
    echo "install.sh: emu doctor, run by ${python:-python} (what sudo python runs)"
    sudo -n python -m emu doctor || true
else
    python=$(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin; command -v python || command -v python3 || true)
    echo "install.sh: emu doctor, run by ${python:-python3}"
    "${python:-python3}" -m emu doctor || true
fi
echo "install.sh: done. Try: sudo python -m emu run experiments/cross_node.py"
