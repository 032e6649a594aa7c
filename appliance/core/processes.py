"""Child processes the appliance owns: started, restarted when they die, stopped by PID.

Children get SIGTERM from the kernel when the appliance dies, even by SIGKILL, so a
restarted appliance finds their ports free. A pool's processes are started fresh
(`spawn_module`) or forked by a fork server (appliance/core/forkserver.py).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

RESTART_BACKOFF_S = (0.2, 1.0, 5.0)
# Niceness of children, relative to the appliance. The hub's 20 ms clock serves every call on the
# box and a worker serves four, so when CPU runs short the workers wait, not the hub (at 120 calls
# the hub's thread waited for a CPU 48 % of the time among ~130 worker threads, and its late ticks
# cost audio: docs/BENCHMARKS.md). Recording conversion is batch work and yields to everything.
WORKER_NICE = 5
BACKGROUND_NICE = 15
_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15
ROOT = Path(__file__).resolve().parents[2]  # the checkout (or site-packages) our workers import from


def die_with_parent() -> None:
    """In a child before exec: be sent SIGTERM when the appliance dies."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def set_process_name(name: str) -> None:
    """The name `ps -e`, `top` and /proc/PID/comm show (15 bytes at most)."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)


class Child(Protocol):
    """What a pool needs of a process: asyncio's, or one a fork server forked."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...

    def send_signal(self, sig: int) -> None: ...

    def kill(self) -> None: ...


Spawn = Callable[[], Awaitable[Child]]


def module_command(module: str, args: list[str], env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """argv and environment of `python -m module *args`: ours plus `env`, importing this code."""
    environment = dict(os.environ, **env)
    environment["PYTHONPATH"] = str(ROOT) + os.pathsep + environment.get("PYTHONPATH", "")
    return [sys.executable, "-m", module, *args], environment


async def spawn_module(module: str, args: list[str], env: dict[str, str], capture: bool = False,
                       nice: int = WORKER_NICE) -> asyncio.subprocess.Process:
    """`python -m module *args` (`module_command`), dying with the appliance, `nice` steps below it.
    With `capture`, its stdout and stderr are pipes for `communicate()`."""
    argv, environment = module_command(module, args, env)
    pipe = asyncio.subprocess.PIPE if capture else None
    return await asyncio.create_subprocess_exec(*argv, env=environment, preexec_fn=lambda: child_setup(nice),
                                                stdout=pipe, stderr=pipe)


def child_setup(nice: int) -> None:
    """In a child before exec: die with the appliance, `nice` steps below it."""
    die_with_parent()
    os.nice(nice)


class ProcessPool:
    """Named processes, each respawned with back-off when it exits while the pool runs."""

    def __init__(self, kind: str, on_restart: Callable[[], None] | None = None):
        self.kind = kind
        self.on_restart = on_restart  # e.g. a metric's inc: core/ knows no metrics
        self.processes: dict[str, Child] = {}
        self.restarts: dict[str, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    def start(self, name: str, spawn: Spawn) -> None:
        self.restarts[name] = 0
        self._tasks.append(asyncio.get_running_loop().create_task(self._supervise(name, spawn)))

    def pid(self, name: str) -> int | None:
        process = self.processes.get(name)
        return process.pid if process and process.returncode is None else None

    async def stop(self) -> None:
        self._stopping = True
        for process in list(self.processes.values()):
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        for process in list(self.processes.values()):
            try:
                await asyncio.wait_for(process.wait(), timeout=10)
            except TimeoutError:
                process.kill()
                await process.wait()
        for task in self._tasks:
            task.cancel()

    async def _supervise(self, name: str, spawn: Spawn) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        while not self._stopping:
            try:
                process = await spawn()
            except (OSError, RuntimeError) as error:
                failures += 1
                delay = RESTART_BACKOFF_S[min(failures, len(RESTART_BACKOFF_S) - 1)]
                log.error("process not started; trying again",
                          extra={"fields": {"kind": self.kind, "name": name, "error": str(error), "delay_s": delay}})
                await asyncio.sleep(delay)
                continue
            self.processes[name] = process
            log.info("process spawned", extra={"fields": {"kind": self.kind, "name": name, "pid": process.pid}})
            started = loop.time()
            code = await process.wait()
            if self._stopping:
                return
            self.restarts[name] += 1
            if self.on_restart is not None:
                self.on_restart()
            failures = 0 if loop.time() - started > 30 else failures + 1
            delay = RESTART_BACKOFF_S[min(failures, len(RESTART_BACKOFF_S) - 1)]
            log.error("process exited; restarting",
                      extra={"fields": {"kind": self.kind, "name": name, "code": code, "delay_s": delay}})
            await asyncio.sleep(delay)
