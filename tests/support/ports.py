"""Free loopback ports for the processes a test starts (the appliance, sipp, baresip, servers)."""

from __future__ import annotations

import secrets
import socket

__all__ = ["free_port_block"]


def free_port_block(count: int) -> int:
    """First port of `count` consecutive ports free for both UDP and TCP on 127.0.0.1.

    Chosen at random above 30000 so that tests running side by side rarely race for one.
    """
    for _ in range(200):
        base = secrets.randbelow(25000) + 30000
        sockets = []
        try:
            for port in range(base, base + count):
                for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                    s = socket.socket(socket.AF_INET, kind)
                    sockets.append(s)
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no free port block")

