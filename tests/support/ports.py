"""Free loopback ports for the processes a test starts (the appliance, sipp, baresip, servers)."""

from __future__ import annotations

import secrets
import socket
from collections import deque

__all__ = ["free_port_block"]

# The blocks handed out last. A block is free when checked but bound only later, some of it not
# while a test runs (a worker's RTP ports wait for calls), so sipp's media ports could land in the
# appliance's RTP block and pjsua then log a bind error. Only the last few: a test's processes stop
# with it, and a session that remembered every block would run out of ports.
_handed_out: deque[tuple[int, int]] = deque(maxlen=32)


def free_port_block(count: int) -> int:
    """First port of `count` consecutive ports free for both UDP and TCP on 127.0.0.1.

    Chosen at random so that tests running side by side rarely race for one, and below the
    kernel's ephemeral range (32768 and up), where any process's outgoing socket may take a port
    between this check and its use: aiortc's ICE sockets, by the dozen, were seen to.
    """
    low, high = 10000, _ephemeral_start() - count
    for _ in range(200):
        base = secrets.randbelow(high - low) + low
        if any(base < end and start < base + count for start, end in _handed_out):
            continue
        sockets = []
        try:
            for port in range(base, base + count):
                for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                    s = socket.socket(socket.AF_INET, kind)
                    sockets.append(s)
                    s.bind(("127.0.0.1", port))
            _handed_out.append((base, base + count))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no free port block")



def _ephemeral_start() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768
