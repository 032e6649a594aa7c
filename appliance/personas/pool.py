"""The persona worker pool: prewarmed processes the hub dispatches personas to."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable

from appliance.config import Config
from appliance.core.processes import ProcessPool, spawn_module
from appliance.observability import metrics


class PersonaPool:
    def __init__(self, config: Config, agent_token: Callable[[str], str]):
        self.config = config
        self.agent_token = agent_token
        self.names = [f"p{i + 1}" for i in range(config.personas.workers)]
        self.pool = ProcessPool("persona-worker", on_restart=metrics.worker_restarts.labels("agent").inc)

    async def start(self) -> None:
        for name in self.names:
            self.pool.start(name, functools.partial(self._spawn, name))

    async def stop(self) -> None:
        await self.pool.stop()

    async def _spawn(self, name: str) -> asyncio.subprocess.Process:
        settings = self.config.personas
        args = [
            "--name", name,
            "--hub-socket", str(self.config.hub_socket),
            "--flows-dir", str(self.config.flows_dir),
            "--capacity", str(settings.sessions_per_worker),
            "--endpointing", str(settings.endpointing_s),
        ]
        for url in self.config.webhooks.allowed:
            args += ["--webhook-allowed", url]
        env = {"SWITCHBOARD_AGENT_TOKEN": self.agent_token(name), "HF_HUB_OFFLINE": "1"}
        return await spawn_module("appliance.personas.worker", args, env)
