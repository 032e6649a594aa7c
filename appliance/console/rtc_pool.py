"""The WebRTC gateway pool: the worker processes that carry browser sessions into the hub."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable

from appliance.config import Config
from appliance.core.processes import ProcessPool, spawn_module
from appliance.observability import metrics

__all__ = ["RtcPool"]


class RtcPool:
    """`config.console.rtc_workers` processes named r1..rN; `token(name)` mints each one's hub token."""

    def __init__(self, config: Config, token: Callable[[str], str]):
        self.config = config
        self.token = token
        self.names = [f"r{i + 1}" for i in range(config.console.rtc_workers)]
        self.pool = ProcessPool("rtc-worker", on_restart=metrics.worker_restarts.labels("rtc").inc)

    async def start(self) -> None:
        for name in self.names:
            self.pool.start(name, functools.partial(self._spawn, name))

    async def stop(self) -> None:
        await self.pool.stop()

    def pid(self, name: str) -> int | None:
        return self.pool.pid(name)

    async def _spawn(self, name: str) -> asyncio.subprocess.Process:
        args = ["--name", name, "--hub-socket", str(self.config.hub_socket),
                "--capacity", str(self.config.console.sessions_per_worker)]
        return await spawn_module("appliance.console.rtc_worker", args, {"SWITCHBOARD_RTC_TOKEN": self.token(name)})
