"""What both benchmarks need: waiting for the kernel to settle, and one run at a time."""

import time
from typing import Any, Optional


def live_netns() -> int:
    """Network namespaces the kernel still holds (active net_namespace objects), -1 if unknown."""
    try:
        with open("/proc/slabinfo") as f:
            for line in f:
                if line.startswith("net_namespace "):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


def settle(limit: float = 60.0) -> None:
    """Wait until the kernel has finished freeing network namespaces (a big cluster torn down just before, by
    this or another program, keeps a core busy for seconds): their count stops changing for 1 s."""
    deadline = time.monotonic() + limit
    last, stable_since = live_netns(), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - stable_since < 1.0:
        time.sleep(0.1)
        now = live_netns()
        if now != last:
            last, stable_since = now, time.monotonic()


def exclusive(path: str) -> Optional[Any]:
    """Hold a lock for the whole run (the hand-built names are fixed: two runs at once would tear down each
    other's); None if another run holds it."""
    import fcntl

    handle = open(path, "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle
