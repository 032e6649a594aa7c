"""The SIP gateway as a whole: the Kamailio edge and a supervised pool of worker processes.

Each worker is a separate process because the pjsua2 wheel holds at most 4 calls per
process. A worker that dies is restarted on the same ports; the hub closes its calls'
records with `worker-lost` when its connection drops.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from appliance.config import Config
from appliance.observability.logging import log_extra
from sip.edge import Edge, EdgeSettings, EdgeTrunk
from sip.process import die_with_parent

log = logging.getLogger(__name__)

RESTART_BACKOFF_S = (0.2, 1.0, 5.0)

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
        self.processes: dict[str, asyncio.subprocess.Process] = {}
        self.restarts: dict[str, int] = {spec.name: 0 for spec in self.specs}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
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
            )
        )

    async def start(self) -> None:
        for spec in self.specs:
            self._tasks.append(asyncio.get_running_loop().create_task(self._supervise(spec)))
        await self.edge.start()

    async def stop(self) -> None:
        self._stopping = True
        await self.edge.stop()
        for process in list(self.processes.values()):
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        for process in list(self.processes.values()):
            try:
                await asyncio.wait_for(process.wait(), timeout=10)
            except asyncio.TimeoutError:
                process.kill()
                await process.wait()
        for task in self._tasks:
            task.cancel()

    def pid(self, name: str) -> int | None:
        process = self.processes.get(name)
        return process.pid if process and process.returncode is None else None

    async def _spawn(self, spec: WorkerSpec) -> asyncio.subprocess.Process:
        sip = self.config.sip
        args = [
            sys.executable, "-m", "sip.worker",
            "--name", spec.name,
            "--sip-port", str(spec.sip_port),
            "--rtp-port", str(spec.rtp_port),
            "--rtp-ports", str(sip.rtp_ports_per_worker),
            "--max-calls", str(sip.calls_per_worker),
            "--poll-ms", str(sip.poll_ms),
            "--retry-after", str(sip.retry_after_s),
            "--hub-socket", str(self.config.hub_socket),
        ]
        if sip.media_address:
            args += ["--media-address", sip.media_address]
        env = dict(os.environ, SWITCHBOARD_WORKER_TOKEN=self.worker_token(spec.name))
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        return await asyncio.create_subprocess_exec(*args, env=env, preexec_fn=die_with_parent)

    async def _supervise(self, spec: WorkerSpec) -> None:
        failures = 0
        while not self._stopping:
            process = await self._spawn(spec)
            self.processes[spec.name] = process
            log.info("sip worker spawned", extra=log_extra(worker=spec.name, pid=process.pid))
            started = asyncio.get_running_loop().time()
            code = await process.wait()
            if self._stopping:
                return
            self.restarts[spec.name] += 1
            lived = asyncio.get_running_loop().time() - started
            failures = 0 if lived > 30 else failures + 1
            delay = RESTART_BACKOFF_S[min(failures, len(RESTART_BACKOFF_S) - 1)]
            log.error("sip worker exited; restarting", extra=log_extra(worker=spec.name, code=code, delay_s=delay))
            await asyncio.sleep(delay)
