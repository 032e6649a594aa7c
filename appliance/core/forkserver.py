"""A fork server: one process that imports a worker module once and forks a worker of it on request.

A SIP worker's Python imports cost about 0.25 s of CPU (pydantic's protocol models, numpy,
pjsua2); started as 14 fresh interpreters on a 2-core box they took 1.7 s to all be up, while
a fork of a process that has them imported already is up in milliseconds. Run as
`python -m appliance.core.forkserver MODULE [ARG...]` by `processes.ForkServer`, which writes
one request a line on its stdin and reads one answer a line on its stdout (JSON):

    {"id": 1, "name": "w1", "args": [...], "env": {...}}   → {"id": 1, "pid": 4242}
    (a forked worker exits)                                → {"pid": 4242, "code": -15}

The worker runs as `python -m MODULE ARG... args` would (`code` as asyncio reports it: negative
for a signal), named `name` in `ps -e`. It gets SIGTERM when this server dies, which gets
SIGTERM when the appliance does (both by PR_SET_PDEATHSIG), and this server exits when its
stdin closes. `ForkServer` is the appliance's end; it starts the server again if it dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import runpy
import selectors
import signal
import sys
import traceback
from typing import Any

from appliance.core.processes import WORKER_NICE, child_setup, die_with_parent, module_command, set_process_name

__all__ = ["ForkServer", "ForkedProcess"]


class ForkedProcess:
    """A worker the fork server forked: its child, not ours, so its exit comes from the server."""

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None
        self._exited = asyncio.Event()

    def exited(self, code: int) -> None:
        if self.returncode is None:
            self.returncode = code
            self._exited.set()

    async def wait(self) -> int:
        await self._exited.wait()
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class _Server:
    """One running fork server process, its workers and the answers it owes."""

    def __init__(self, process: asyncio.subprocess.Process):
        self.process = process
        self.workers: dict[int, ForkedProcess] = {}
        self.replies: dict[int, asyncio.Future[ForkedProcess]] = {}
        self.reader = asyncio.get_running_loop().create_task(self._read(), name="fork-server")

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            message = json.loads(line)
            if "id" in message:
                # Registered here, before anything else is read: its exit may be the next line.
                worker = self.workers[message["pid"]] = ForkedProcess(message["pid"])
                reply = self.replies.pop(message["id"], None)
                if reply is not None and not reply.done():
                    reply.set_result(worker)
            elif (gone := self.workers.pop(message["pid"], None)) is not None:
                gone.exited(message["code"])
        await self.process.wait()
        for reply in self.replies.values():
            if not reply.done():
                reply.set_exception(RuntimeError(f"the fork server exited ({self.process.returncode})"))
        # Its workers got SIGTERM as it died; their codes died with it. Each counts as gone once it is.
        for worker in self.workers.values():
            await _gone(worker.pid)
            worker.exited(-signal.SIGTERM)


async def _gone(pid: int) -> None:
    """Wait until `pid` (not our child) has exited."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await done
    finally:
        loop.remove_reader(fd)
        os.close(fd)


class ForkServer:
    """The appliance's end: forks workers of `module` (`python -m module *args *their args`)."""

    def __init__(self, module: str, args: list[str]):
        self.module = module
        self.args = args
        self._server: _Server | None = None
        self._starting = asyncio.Lock()
        self._next_id = 0

    async def spawn(self, name: str, args: list[str], env: dict[str, str]) -> ForkedProcess:
        """A new worker named `name` with `args` after the common ones and `env` added to its environment."""
        server = await self._running()
        self._next_id += 1
        reply = asyncio.get_running_loop().create_future()
        server.replies[self._next_id] = reply
        assert server.process.stdin is not None
        request = {"id": self._next_id, "name": name, "args": args, "env": env}
        server.process.stdin.write(json.dumps(request).encode() + b"\n")
        return await reply

    async def start(self) -> None:
        """Start the server now, so that it has imported the module by the first `spawn`."""
        await self._running()

    async def _running(self) -> _Server:
        async with self._starting:
            if self._server is None or self._server.process.returncode is not None:
                argv, environment = module_command("appliance.core.forkserver", [self.module, *self.args], {})
                process = await asyncio.create_subprocess_exec(
                    *argv, env=environment, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                    preexec_fn=lambda: child_setup(WORKER_NICE))  # the workers it forks inherit it
                self._server = _Server(process)
            return self._server

    async def stop(self) -> None:
        """Close the server's stdin: it exits, and any worker still running gets SIGTERM."""
        server, self._server = self._server, None
        if server is None:
            return
        if server.process.stdin is not None:
            server.process.stdin.close()
        await server.process.wait()
        await server.reader


def _worker(module: str, common: list[str], request: dict[str, Any], server: int) -> int:
    """In the forked child: become `python -m module *common *args`; returns its exit code."""
    die_with_parent()
    if os.getppid() != server:
        return 1  # the server died between the fork and the line above: nobody would stop us
    # The server's pipes are the appliance's: what the worker prints goes to the log instead.
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    set_process_name(request["name"])
    os.environ.update(request["env"])
    sys.argv = [module, *common, *request["args"]]
    # Run afresh as __main__; what it imports stays imported (the point of the server).
    sys.modules.pop(module, None)
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except BaseException:  # noqa: BLE001 - the worker's own crash: said as python would, then its exit code
        traceback.print_exc()
        return 1
    return 0


def _reap(answer: Any) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        answer({"pid": pid, "code": os.waitstatus_to_exitcode(status)})


def main() -> None:
    module, common = sys.argv[1], sys.argv[2:]
    importlib.import_module(module)  # what every worker would import: once, here
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so the wakeup fd hears of exits
    server = os.getpid()

    def answer(message: dict[str, Any]) -> None:
        os.write(1, json.dumps(message).encode() + b"\n")

    selector = selectors.DefaultSelector()
    selector.register(0, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    pending = b""
    while True:
        for key, _ in selector.select():
            if key.fd == wake_r:
                os.read(wake_r, 512)
                _reap(answer)
                continue
            data = os.read(0, 65536)
            if not data:
                return  # the appliance closed our stdin, or died: our workers get SIGTERM as we go
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                request = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    signal.set_wakeup_fd(-1)
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    selector.close()
                    for fd in (wake_r, wake_w):
                        os.close(fd)
                    code = _worker(module, common, request, server)
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(code)
                answer({"id": request["id"], "pid": pid})


if __name__ == "__main__":
    main()
