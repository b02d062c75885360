"""Lab 7's measurement: first-packet (connect) latency through a Service at 10 and at 5,000 Services, in
kube-proxy's iptables and nftables modes.

It is experiments/service_scale.py (read its docstring: what is built and measured) run at those two sizes only:
four clusters of two nodes, a client connecting 2,000 times to the first and to the last Service of the rule
order, both reaching the same pod on the client's node, and to a listener on its own loopback (the baseline).

Run it:   sudo python -m emu run labs/7-kube-proxy/measure.py          (a few minutes)
          sudo python -m emu run labs/7-kube-proxy/measure.py --proxy-mode nftables   (one mode only)
Then read results/measure/<time>/results.csv: rows of tool tcp-connect, metric connect_p50_ms (and
connect_p50_over_loopback), dst zzz-last (the last Service) and aaa-first, per proxy_mode and services.
"""

import importlib.util
import sys
from pathlib import Path

_PATH = Path(__file__).resolve().parents[2] / "experiments" / "service_scale.py"
_SPEC = importlib.util.spec_from_file_location("emu_service_scale", _PATH)
assert _SPEC is not None and _SPEC.loader is not None
service_scale = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(service_scale)

TOPOLOGY = "../../topologies/scale.yaml"
VARY = {"proxy_mode": ["iptables", "nftables"], "services": [10, 5000]}
REPEAT = 1
run = service_scale.run
plot = service_scale.plot

if __name__ == "__main__":
    import emu.cli

    sys.exit(emu.cli.run_file(__file__))
