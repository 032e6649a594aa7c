"""An edge in front of sipp workers, all on 127.0.0.1: what the SIP edge tests drive."""

from __future__ import annotations

import asyncio
import re
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from sip.edge import Edge
from sip.edge_config import EdgeTrunk
from tests.support.sipp.process import HOST, Sipp, call, run_uac
from tests.support.sipp.proxy_scenarios import write_scenario
from tests.support.wait import wait_until_async

LOCAL_TRUNK = EdgeTrunk("carrier-a", ["127.0.0.0/8"])


@dataclass
class Stack:
    """An edge in front of sipp workers, all on 127.0.0.1."""

    directory: Path
    edge: Edge
    workers: list[Sipp]
    started: list[Sipp] = field(default_factory=list)
    spare: list[int] = field(default_factory=list)  # worker ports in the dispatcher list that a test binds itself

    @property
    def target(self) -> str:
        return f"{HOST}:{self.edge.settings.port}"

    def port(self, worker: Sipp) -> int:
        return self.edge.settings.workers[self.workers.index(worker)]

    def invites(self) -> list[int]:
        return [len(worker.requests("INVITE")) for worker in self.workers]

    def dispatcher(self) -> dict[int, tuple[str, int]]:
        """Worker port → (dispatcher flags, current call load), read over the ctl socket."""
        out = subprocess.run(
            ["kamcmd", "-s", f"unix:{self.edge.settings.ctl_socket}", "dispatcher.list"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout
        found = re.findall(r"URI: sip:127\.0\.0\.1:(\d+)\s+FLAGS: (\w+).*?DLGLOAD: (\d+)", out, flags=re.S)
        return {int(port): (flags, int(load)) for port, flags, load in found}

    def log(self) -> str:
        path = self.edge.settings.log_path
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    async def wait_for(self, what: str, condition: Callable[[], bool], timeout: float) -> float:
        """Poll until `condition`, returning the seconds it took."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        await wait_until_async(condition, what, timeout, detail=lambda: f"{self.dispatcher()}\n{self.log()}")
        return loop.time() - start

    async def caller(self, name: str, scenario: str, calls: int = 1, rate: int = 10,
                     extra: list[str] | None = None) -> Sipp:
        """A UAC left running; stopped by the fixture if the test does not wait for it."""
        path = write_scenario(self.directory, name, scenario)
        uac = await run_uac(self.directory, name, path, self.target, calls=calls, rate=rate,
                            extra=["-s", "100", *(extra or [])])
        self.started.append(uac)
        return uac

    async def call(self, name: str, scenario: str, calls: int = 1, rate: int = 10,
                   extra: list[str] | None = None) -> Sipp:
        """Run a UAC to its end and insist every call succeeded."""
        path = write_scenario(self.directory, name, scenario)
        try:
            return await call(self.directory, name, path, self.target, calls=calls, rate=rate,
                              extra=["-s", "100", *(extra or [])])
        except AssertionError as error:
            raise AssertionError(f"{error}\n--- edge log\n{self.log()}") from None


StackFactory = Callable[..., Awaitable[Stack]]


