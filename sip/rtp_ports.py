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

__all__ = ["MIN_BLOCK", "PortBlock"]

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
