"""The SIP gateway as a whole: the Kamailio edge and a supervised pool of worker processes.

Each worker is a separate process because the pjsua2 wheel holds at most 4 calls per
process, forked by a fork server that imported the worker's code once (a box's worth of fresh
interpreters took 1.7 s to start on 2 cores). A worker that dies is restarted on the same
ports; the hub closes its calls' records with `worker-lost` when its connection drops.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass

from appliance.config import Config
from appliance.core.errors import ConfigError
from appliance.core.forkserver import ForkedProcess, ForkServer
from appliance.core.processes import ProcessPool
from appliance.observability import metrics
from appliance.observability.logging import log_extra
from sip.credentials import DialAuth
from sip.edge import Edge
from sip.edge_config import EdgeSettings, EdgeTrunk, outbound_hosts
from sip.rtp_ports import kernel_exposed

log = logging.getLogger(__name__)


@dataclass
class WorkerSpec:
    name: str
    sip_port: int
    rtp_port: int


class Gateway:
    def __init__(self, config: Config, worker_token: Callable[[str], str]):
        self.config = config
        self.worker_token = worker_token
        sip = config.sip
        self.specs = [
            WorkerSpec(f"w{i + 1}", sip.worker_base_port + i, sip.rtp_port_start + i * sip.rtp_ports_per_worker)
            for i in range(sip.workers)
        ]
        self.pool = ProcessPool("sip-worker", on_restart=metrics.worker_restarts.labels("sip").inc)
        self.forks = ForkServer("sip.worker", ["--hub-socket", str(config.hub_socket)])
        self.draining = False  # a start is never draining: the edge's flag starts at 0 too
        # Read once, here: the appliance then drops password_env from its environment.
        self.dial_auth = _dial_auth(config)
        self.edge = Edge(
            EdgeSettings(
                listen_host=sip.listen_host,
                port=sip.port,
                workers=[spec.sip_port for spec in self.specs],
                calls_per_worker=sip.calls_per_worker,
                trunks=[EdgeTrunk(t.name, list(t.sources), t.username, t.password) for t in config.trunks],
                flood_requests=sip.flood_requests,
                retry_after_s=sip.retry_after_s,
                run_dir=config.data_dir / "edge",
                memory_mb=sip.edge_memory_mb,
                advertise=sip.media_address,
                # Bridge transfers dial only these: the carrier's termination host and SIP destinations.
                outbound_hosts=outbound_hosts([config.transfers.outbound_proxy, *config.transfers.allowed]),
            ),
            on_restart=metrics.sip_edge_restarts.inc,
            announced_workers=True,
        )
        self._ports = {spec.name: spec.sip_port for spec in self.specs}
        self._telling: set[asyncio.Task[None]] = set()

    async def warm_up(self) -> None:
        """Start the workers' fork server: it imports their code while the rest of the appliance starts."""
        await self.forks.start()

    async def start(self) -> None:
        sip = self.config.sip
        last = sip.rtp_port_start + sip.workers * sip.rtp_ports_per_worker - 1
        if exposed := kernel_exposed(sip.rtp_port_start, last):
            log.warning("RTP ports inside the kernel's ephemeral range: an outgoing socket may take one "
                        "before a call needs it; reserve them (net.ipv4.ip_local_reserved_ports)",
                        extra=log_extra(first=sip.rtp_port_start, last=last, exposed=exposed))
        for spec in self.specs:
            self.pool.start(spec.name, functools.partial(self._spawn, spec))
        await self.edge.start()

    def worker_changed(self, role: str, name: str, connected: bool) -> None:
        """A worker joined or left the hub: the edge routes new calls to the SIP workers the hub has."""
        port = self._ports.get(name)
        if role != "sip" or port is None:
            return
        task = asyncio.get_running_loop().create_task(self.edge.worker_ready(port, connected))
        self._telling.add(task)
        task.add_done_callback(self._telling.discard)

    async def set_draining(self, draining: bool) -> None:
        """New calls refused at the edge (503, Retry-After) or taken again; calls in progress go on."""
        await self.edge.set_draining(draining)
        self.draining = draining
        metrics.draining.set(int(draining))

    async def stop(self) -> None:
        await self.edge.stop()
        await self.pool.stop()
        await self.forks.stop()

    def pid(self, name: str) -> int | None:
        return self.pool.pid(name)

    async def _spawn(self, spec: WorkerSpec) -> ForkedProcess:
        sip = self.config.sip
        args = [
            "--name", spec.name,
            "--sip-port", str(spec.sip_port),
            "--rtp-port", str(spec.rtp_port),
            "--rtp-ports", str(sip.rtp_ports_per_worker),
            "--max-calls", str(sip.calls_per_worker),
            "--poll-ms", str(sip.poll_ms),
            "--retry-after", str(sip.retry_after_s),
        ]
        if sip.media_address:
            args += ["--media-address", sip.media_address]
        args += ["--outbound-proxy", f"sip:{self.edge.local_address()};lr"]
        # Where the edge relays from: its own listen address (a wildcard one relays from
        # whichever of the box's addresses the call came to, so there the port decides).
        edge_host, edge_port = self.edge.settings.listen_host, self.edge.settings.port
        args += ["--edge", f"[{edge_host}]:{edge_port}" if ":" in edge_host else f"{edge_host}:{edge_port}"]
        env = {"SWITCHBOARD_WORKER_TOKEN": self.worker_token(spec.name),
               "SWITCHBOARD_EDGE_KEY": self.edge.settings.worker_key}
        if self.dial_auth:
            args += self.dial_auth.worker_args()
            env |= self.dial_auth.worker_env()
        return await self.forks.spawn(f"sip-{spec.name}", args, env)


def _dial_auth(config: Config) -> DialAuth | None:
    """transfers.username and its password, for the calls to transfers.outbound_proxy; None if unset."""
    transfers = config.transfers
    if transfers.username is None:
        return None
    password = transfers.password
    if not password:
        where = (f"transfers.password_env: the variable {transfers.password_env} is unset or empty"
                 if transfers.password_env else "transfers.username needs password_env or password_file")
        raise ConfigError(f"{where} (the password for {transfers.outbound_proxy})")
    (host,) = outbound_hosts([transfers.outbound_proxy])
    try:
        return DialAuth(host, transfers.username, password)
    except ValueError as exc:
        raise ConfigError(f"transfers: {exc}") from None
