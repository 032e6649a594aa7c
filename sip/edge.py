"""The SIP edge: one Kamailio process, configured by us, that owns the box's SIP port.

It admits INVITEs from trunks (by source network, digest credentials, or both), names the
trunk for the worker in a header, and spreads calls over the pjsua2 worker pool by call
load; RTP never passes through it. It relays nothing else: in-dialog requests only along a
route it record-routed and signed, and workers' calls only to hosts the admin configured.
This module starts the process with the config sip/edge_config.py renders, probes it until
it answers, explains why when it does not, starts it again when it dies, tells it to drain
(over its ctl socket), and stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance.core.processes import RESTART_BACKOFF_S, die_with_parent
from appliance.observability.logging import log_extra
from sip.edge_config import DISPATCHER_SET, EdgeSettings, render_config, render_dispatcher, uri_host, worker_uri

__all__ = ["EdgeStartError", "EdgeControlError", "Edge"]

log = logging.getLogger(__name__)

STOP_GRACE_S = 5.0
START_TIMEOUT_S = 10.0
PROBE_INTERVAL_S = 0.05  # how soon a (re)started Kamailio is known to answer
RPC_TIMEOUT_S = 5.0
STABLE_S = 30.0  # up this long, an exit starts the back-off from its shortest delay again


class EdgeStartError(RuntimeError):
    """Kamailio did not come up; the message carries its log tail and its own config check."""

class EdgeControlError(RuntimeError):
    """The edge did not take a command over its ctl socket; the message says what kamcmd said."""


class Edge:
    """The running Kamailio process, started again whenever it exits. One `start()` per `stop()`."""

    def __init__(self, settings: EdgeSettings, kamailio: str = "kamailio", kamcmd: str = "kamcmd",
                 on_restart: Callable[[], None] | None = None, announced_workers: bool = False):
        """`announced_workers`: a worker takes calls only once `worker_ready` says so (else all from the start)."""
        self.settings = settings
        self.kamailio = kamailio
        self.kamcmd = kamcmd
        self.on_restart = on_restart  # e.g. a metric's inc: this module knows no metrics
        self._ready: set[int] | None = set() if announced_workers else None
        self._process: asyncio.subprocess.Process | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._draining = False  # a restarted Kamailio starts with the flag as it was

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def start(self) -> None:
        """Start Kamailio and keep it running; EdgeStartError if it does not answer the first time."""
        if self.running or self._keeper is not None:
            raise RuntimeError(f"the SIP edge is already running (pid {self.pid})")
        await self._launch(fresh_log=True)
        self._keeper = asyncio.get_running_loop().create_task(self._keep_up(), name="sip-edge-keeper")

    async def _launch(self, fresh_log: bool = False) -> None:
        """One Kamailio process, answering. A restart appends to the log: why the last one died is there."""
        settings = self.settings
        ready = None if self._ready is None else set(self._ready)
        config, dispatcher = render_config(settings, self._draining), render_dispatcher(settings, ready)
        run_dir = Path(settings.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        settings.dispatcher_path.write_text(dispatcher)
        _write_private(settings.config_path, config)
        # A socket left by a killed Kamailio would make ctl fail to bind.
        settings.ctl_socket.unlink(missing_ok=True)
        with open(settings.log_path, "wb" if fresh_log else "ab") as output:
            # Its own session: Kamailio signals its process group on shutdown, and a
            # SIGKILL fallback must reach the children it forked.
            self._process = await asyncio.create_subprocess_exec(
                self.kamailio, "-DD", "-E",
                "-f", str(settings.config_path),
                "-Y", str(run_dir),
                "-P", str(settings.pid_path),
                "-m", str(settings.memory_mb),
                "-M", "8",
                stdin=asyncio.subprocess.DEVNULL, stdout=output, stderr=output,
                start_new_session=True, preexec_fn=die_with_parent,
            )
        started = asyncio.get_running_loop().time()
        try:
            await self._wait_until_answering()
            log.info("SIP edge answering", extra=log_extra(
                pid=self._process.pid, seconds=round(asyncio.get_running_loop().time() - started, 3)))
            if ready is not None and self._ready is not None:
                # Workers that came or went while Kamailio started, after its list was written.
                changed = ready ^ self._ready
                await asyncio.gather(*(self._set_state(port, port in self._ready) for port in changed))
        except BaseException as error:
            reason = str(error) or type(error).__name__
            await self._end_process()
            if isinstance(error, (asyncio.CancelledError, KeyboardInterrupt)):
                raise
            raise EdgeStartError(await self._diagnosis(reason)) from None

    async def stop(self) -> None:
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        await self._end_process()

    async def _end_process(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), STOP_GRACE_S)
            except TimeoutError:
                pass
        # The group is the one _launch() created (its id is the pid we started). Anything
        # still in it is a stuck or orphaned child that would keep the SIP port bound: after
        # a `kill -9` of the main process, its children go on receiving on the port.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()

    async def _keep_up(self) -> None:
        """Start Kamailio again whenever it exits, with the same settings and so the same route
        secret: calls in progress keep their media (it never passed through the edge), and their
        in-dialog requests (a BYE) still carry a signature the new process accepts."""
        loop = asyncio.get_running_loop()
        failures = 0  # starts in a row that did not last: the box takes no calls meanwhile, so the first is at once
        while True:
            process = self._process
            if process is not None:
                up_since = loop.time()
                code = await process.wait()
                await self._end_process()
                if loop.time() - up_since > STABLE_S:
                    failures = 0
                if self.on_restart is not None:
                    self.on_restart()
                log.error("SIP edge exited; restarting",
                          extra=log_extra(code=code, pid=process.pid, delay_s=_backoff(failures)))
            await asyncio.sleep(_backoff(failures))
            failures += 1
            try:
                await self._launch()
            except EdgeStartError as error:
                log.error("SIP edge did not start again", extra=log_extra(error=str(error)[:2000]))
                continue
            log.warning("SIP edge restarted", extra=log_extra(pid=self.pid, draining=self._draining))

    async def set_draining(self, draining: bool) -> None:
        """Answer new INVITEs 503 (with Retry-After) or take them again; dialogs in progress go on.

        The flag is a Kamailio shared variable set through the ctl socket (kamcmd, shipped with
        Kamailio, speaks its binrpc), so the change needs no reload and reaches every child at once.
        """
        if not self.running:
            raise EdgeControlError("the SIP edge is not running")
        await self._rpc("pv.shvSet", "draining", "int", "1" if draining else "0")
        self._draining = draining

    async def worker_ready(self, port: int, ready: bool) -> None:
        """Route new calls to the worker on `port` (its socket is open and the hub has it), or stop.

        A worker not yet started would take its share of INVITEs and leave each to time out (2 s)
        before the next worker is tried; one that left the hub would answer them 503.
        """
        if self._ready is None:
            return
        if ready:
            self._ready.add(port)
        else:
            self._ready.discard(port)
        if self.running:
            await self._set_state(port, ready)

    async def _set_state(self, port: int, ready: bool) -> None:
        # a: active; ip: inactive, and probed (OPTIONS) so that a worker nobody announces still comes back.
        try:
            await self._rpc("dispatcher.set_state", "a" if ready else "ip", str(DISPATCHER_SET), worker_uri(port))
        except EdgeControlError as error:
            # Down or restarting: the list written at its next start says it.
            log.warning("SIP edge not told of a worker", extra=log_extra(port=port, ready=ready, error=str(error)))

    async def _rpc(self, *command: str) -> str:
        try:
            process = await asyncio.create_subprocess_exec(
                self.kamcmd, "-s", f"unix:{self.settings.ctl_socket}", *command,
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )
        except OSError as error:
            raise EdgeControlError(f"cannot run {self.kamcmd}: {error}") from None
        try:
            out, _ = await asyncio.wait_for(process.communicate(), RPC_TIMEOUT_S)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise EdgeControlError(f"{self.kamcmd} {command[0]}: no answer in {RPC_TIMEOUT_S:.0f} s") from None
        text = out.decode(errors="replace").strip()
        # kamcmd exits 0 even when the RPC itself failed; a failure prints "error: CODE - reason".
        if process.returncode != 0 or text.startswith("error"):
            raise EdgeControlError(f"{self.kamcmd} {command[0]}: {text or f'exit code {process.returncode}'}")
        return text

    def local_host(self) -> str:
        """Where processes on this box reach the edge."""
        host = "127.0.0.1" if self.settings.listen_host == "0.0.0.0" else self.settings.listen_host
        return "::1" if host == "::" else host

    def local_address(self) -> str:
        """host:port of the edge for a SIP URI on this box."""
        host = self.local_host()
        return f"[{host}]:{self.settings.port}" if ":" in host else f"{host}:{self.settings.port}"

    async def _wait_until_answering(self) -> None:
        assert self._process is not None
        host = self.local_host()
        loop = asyncio.get_running_loop()
        answered: asyncio.Future[None] = loop.create_future()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Probe(answered), family=family, local_addr=(host, 0)
        )
        exited = loop.create_task(self._process.wait())
        either: list[asyncio.Future[Any]] = [answered, exited]
        try:
            local_port = transport.get_extra_info("sockname")[1]
            deadline = loop.time() + START_TIMEOUT_S
            while not answered.done():
                if exited.done():
                    raise RuntimeError(f"kamailio exited with code {exited.result()}")
                if loop.time() > deadline:
                    raise TimeoutError(f"no OPTIONS answer on {host}:{self.settings.port} in {START_TIMEOUT_S:.0f} s")
                transport.sendto(_options(host, self.settings.port, local_port), (host, self.settings.port))
                await asyncio.wait(either, timeout=PROBE_INTERVAL_S)
        finally:
            transport.close()
            if not exited.done():
                exited.cancel()

    async def _diagnosis(self, reason: str) -> str:
        settings = self.settings
        try:
            tail = settings.log_path.read_text(errors="replace").splitlines()[-40:]
        except OSError as error:
            tail = [f"(no log: {error})"]
        try:
            check = await asyncio.create_subprocess_exec(
                self.kamailio, "-c", "-f", str(settings.config_path),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )
            out, _ = await asyncio.wait_for(check.communicate(), 20)
            checked = out.decode(errors="replace").strip().splitlines()[-20:]
        except (TimeoutError, OSError) as error:
            checked = [f"(could not run {self.kamailio} -c: {error})"]
        return "\n".join(
            [f"the SIP edge did not start: {reason}", f"--- tail of {settings.log_path}", *tail,
             f"--- {self.kamailio} -c -f {settings.config_path}", *checked]
        )


def _backoff(failures: int) -> float:
    return RESTART_BACKOFF_S[min(failures, len(RESTART_BACKOFF_S) - 1)]


def _write_private(path: Path, text: str) -> None:
    """Write `text` readable by this user alone: the config holds the route secret and trunk passwords."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        # A file left from before may have been created with wider permissions.
        os.fchmod(file.fileno(), 0o600)
        file.write(text)


class _Probe(asyncio.DatagramProtocol):
    def __init__(self, answered: asyncio.Future[None]):
        self.answered = answered

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if data.startswith(b"SIP/2.0 200") and not self.answered.done():
            self.answered.set_result(None)


def _options(host: str, port: int, local_port: int) -> bytes:
    tag = uuid.uuid4().hex
    h = uri_host(host)
    return (
        f"OPTIONS sip:{h}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {h}:{local_port};branch=z9hG4bK{tag[:16]};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:edge-probe@{h}>;tag={tag[16:24]}\r\n"
        f"To: <sip:{h}:{port}>\r\n"
        f"Call-ID: {tag}@edge-probe\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
