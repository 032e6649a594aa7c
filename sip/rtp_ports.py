"""The UDP ports a worker's pjsua accounts bind for media: always inside the worker's own block.

Worker N owns `rtp_ports_per_worker` ports from `rtp_port_start + (N - 1) × rtp_ports_per_worker`
(the firewall opens exactly those). pjsua takes an account's media ports from its TransportConfig:
RTP on `port`, then `port + 2` and so on, each with RTCP one port up, and goes back to `port` only
once the next RTP port is *above* `port + portRange` (pjsua_media.c, create_rtp_rtcp_sock). Its last
pair is therefore `port + portRange` and `port + portRange + 1`: a block's size given as portRange,
as it once was, let pjsua take the first two ports of the next block, the next worker's (or the dial
account's): whichever worker came second logged `RTP socket bind() ... Address already in use` and
walked on. 12 of the 15 such errors of bench/results/calls-2026-11-25.json are at a block's first
port, and 150 calls over 3 workers with 16 ports each logged 10, all there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["MIN_BLOCK", "PortBlock", "exposed_to_ephemeral", "kernel_exposed"]

# pjsua reads portRange 0 as "no range" and then walks up without end: a block needs two pairs.
MIN_BLOCK = 4


@dataclass(frozen=True)
class PortBlock:
    """`size` consecutive UDP ports from `start`, for one pjsua account's RTP/RTCP pairs."""

    start: int
    size: int

    def __post_init__(self) -> None:
        if self.size < MIN_BLOCK:
            raise ValueError(f"an RTP port block needs at least {MIN_BLOCK} ports, not {self.size}")

    @property
    def pairs(self) -> int:
        """Calls' media the block holds at once (RTP and RTCP each)."""
        return self.size // 2

    @property
    def port_range(self) -> int:
        """pjsua's TransportConfig.portRange: the last pair is `start + port_range` and the port above,
        the block's last two ports (its last one is left over when `size` is odd)."""
        return (self.pairs - 1) * 2

    def split(self) -> tuple[PortBlock, PortBlock]:
        """Two blocks side by side: each pjsua account keeps its own cursor, so two accounts on one
        block bind each other's ports first."""
        half = self.size // 2
        return PortBlock(self.start, half), PortBlock(self.start + half, self.size - half)


def exposed_to_ephemeral(first: int, last: int, port_range: str, reserved: str) -> int:
    """How many of the ports `first`..`last` the kernel may give to any process's outgoing socket:
    those inside `port_range` (net.ipv4.ip_local_port_range, "32768\t60999") and not in `reserved`
    (net.ipv4.ip_local_reserved_ports, "20000-20199,20300"). pjsua binds a pair only when a call
    starts, and skips one taken meanwhile (docs/BENCHMARKS.md, the soak's RTP bind lines)."""
    low, high = (int(port) for port in port_range.split())
    kept: set[int] = set()
    for part in filter(None, reserved.strip().split(",")):
        start, _, end = part.partition("-")
        kept.update(range(int(start), int(end or start) + 1))
    return sum(1 for port in range(max(first, low), min(last, high) + 1) if port not in kept)


def kernel_exposed(first: int, last: int) -> int | None:
    """`exposed_to_ephemeral` for this box's kernel; None where its settings cannot be read."""
    try:
        port_range = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        reserved = Path("/proc/sys/net/ipv4/ip_local_reserved_ports").read_text()
    except OSError:
        return None
    return exposed_to_ephemeral(first, last, port_range, reserved)
