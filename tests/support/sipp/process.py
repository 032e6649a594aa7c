"""Running sipp: to its end with its statistics (`run_sipp`), in the background as a
transfer destination or bystander, or as an asyncio process with a message trace (`Sipp`).

Every process is stopped by its own handle or PID, never by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import os
import re
import secrets
import signal
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from xml.sax.saxutils import escape

from tests.support.ports import free_port_block
from tests.support.sipp.proxy_scenarios import UAS_ANSWER, write_scenario
from tests.support.sipp.scenarios import SCENARIOS
from tests.support.wait import wait_until, wait_until_async

SIPP = "sipp"
HOST = "127.0.0.1"


def udp_port_taken(port: int, host: str = HOST) -> bool:
    """Whether something holds `host:port` for UDP (so sipp has bound it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


@dataclass
class SippResult:
    returncode: int
    successful: int
    failed: int
    output: str
    stats: list[dict[str, str]]


def run_sipp(scenario: Path, target_port: int, workdir: Path, *, calls: int = 1, rate: float = 10,
             limit: int | None = None, service: str = "100", timeout: float = 120,
             extra: list[str] | None = None, sip_port: int | None = None, local_ip: str = HOST) -> SippResult:
    """One sipp run to its end; `sip_port` is its own port (default: any free one), on `local_ip`."""
    sip_port = sip_port or free_port_block(1)
    media_port = free_port_block(4)
    args = [
        "sipp", "-sf", str(scenario), "-s", service, f"127.0.0.1:{target_port}",
        "-i", local_ip, "-p", str(sip_port), "-mi", local_ip, "-mp", str(media_port),
        "-m", str(calls), "-r", str(rate), "-l", str(limit or calls),
        "-nostdin", "-trace_stat", "-stf", str(workdir / "stats.csv"), "-trace_err",
        "-error_file", str(workdir / "sipp_errors.log"), "-timeout", f"{int(timeout)}s",
    ] + (extra or [])
    proc = subprocess.run(args, cwd=workdir, capture_output=True, text=True, timeout=timeout + 30)
    return _result(proc.returncode, workdir / "stats.csv", proc.stdout[-3000:] + proc.stderr[-3000:])


def _result(returncode: int, stats_file: Path, output: str) -> SippResult:
    """A finished run: its exit code, and its call counts from sipp's -trace_stat file."""
    stats = list(csv.DictReader(stats_file.read_text().splitlines(), delimiter=";")) if stats_file.exists() else []
    last = stats[-1] if stats else {}
    return SippResult(
        returncode=returncode,
        successful=int(last.get("SuccessfulCall(C)", 0) or 0),
        failed=int(last.get("FailedCall(C)", 0) or 0),
        output=output,
        stats=stats,
    )


def received_messages(trace: str) -> list[str]:
    """Every SIP message a sipp -trace_msg file says was received, in order."""
    # Each entry: a dashed line, "UDP message received [N] bytes :", a blank line, the message.
    entries = re.split(r"^-{10,}.*$", trace, flags=re.MULTILINE)
    return [
        entry.split("\n\n", 1)[1].lstrip("\n")
        for entry in entries
        if " message received " in entry.split("\n\n", 1)[0] and "\n\n" in entry
    ]


def options_status(port: int, host: str = HOST, timeout: float = 3) -> str:
    """The status line an out-of-dialog OPTIONS to `host:port` (a carrier's health check) gets."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        sock.settimeout(timeout)
        local = sock.getsockname()[1]
        sock.sendto((
            f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {host}:{local};branch=z9hG4bK-health{local}\r\n"
            f"From: <sip:carrier@{host}>;tag=h{local}\r\nTo: <sip:{host}>\r\nCall-ID: health-{local}@{host}\r\n"
            "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        ).encode(), (host, port))
        return sock.recv(4096).decode(errors="replace").split("\r\n", 1)[0]


def send_cue(sipp_port: int, sip_call_id: str, sequence: int = 1) -> None:
    """Let a cued caller go on: an OPTIONS with its Call-ID, which sipp matches to the call.

    The scenario does not answer it: the cue is only a signal between the test and sipp.
    """
    message = (
        f"OPTIONS sip:sipp@127.0.0.1:{sipp_port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKcue{sequence}{secrets.token_hex(4)}\r\n"
        f"From: <sip:test@127.0.0.1>;tag=cue{secrets.token_hex(4)}\r\n"
        f"To: <sip:sipp@127.0.0.1>\r\n"
        f"Call-ID: {sip_call_id}\r\n"
        f"CSeq: {sequence} OPTIONS\r\n"
        "Max-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(message.encode(), ("127.0.0.1", sipp_port))


class Destination:
    """sipp as a bridge transfer's destination (a UAS on its own port), run in the background.

    `busy`: rings, then 486. `no_answer`: rings until the box CANCELs. `wait()` returns the
    run's result; sipp counts the call successful only if the scenario went as written.
    `answering`: takes `calls` calls one after another or at once, as a busy desk does.
    """

    def __init__(self, workdir: Path, scenario: Path, timeout: float = 60, calls: int = 1):
        self.workdir = workdir
        self.port = free_port_block(1)
        self.trace = workdir / "messages.log"
        workdir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            ["sipp", "-sf", str(scenario), "-i", "127.0.0.1", "-p", str(self.port), "-m", str(calls),
             "-nostdin", "-trace_stat", "-stf", str(workdir / "stats.csv"), "-trace_err",
             "-error_file", str(workdir / "sipp_errors.log"), "-timeout", f"{int(timeout)}s",
             "-trace_msg", "-message_file", str(self.trace)],
            cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )

    @staticmethod
    def answering(workdir: Path, calls: int, timeout: float) -> Destination:
        """A desk that is always free: answers `calls` calls, each until the caller's BYE."""
        workdir.mkdir(parents=True, exist_ok=True)
        path = write_scenario(workdir, "destination_answer", UAS_ANSWER)
        return Destination(workdir / "answer", path, timeout=timeout, calls=calls)

    @staticmethod
    def busy(workdir: Path, ruri_regexp: str) -> Destination:
        text = Template((SCENARIOS / "destination_busy.xml").read_text()).substitute(
            RURI_REGEXP=escape(ruri_regexp, {'"': "&quot;"}))
        path = workdir / "destination_busy.xml"
        path.write_text(text)
        return Destination(workdir / "busy", path)

    @staticmethod
    def no_answer(workdir: Path, cancel_timeout_ms: int = 30000) -> Destination:
        text = Template((SCENARIOS / "destination_no_answer.xml").read_text()).substitute(
            CANCEL_TIMEOUT_MS=cancel_timeout_ms)
        path = workdir / "destination_no_answer.xml"
        path.write_text(text)
        return Destination(workdir / "no_answer", path)

    @staticmethod
    def challenging(workdir: Path, *, status: int, realm: str, nonce: str, user: str, ruri_regexp: str,
                    verify_password: str | None = None, retry_timeout_ms: int = 30000) -> Destination:
        """A carrier's termination: challenges the first INVITE (401 or 407), answers a second one
        carrying `user`'s credentials for `realm`, then hangs up. `verify_password`: sipp checks
        the digest (its verifyauth reads Authorization only, so 401 only) and answers 403 if wrong."""
        headers = {401: ("401 Unauthorized", "WWW-Authenticate", "Authorization"),
                   407: ("407 Proxy Authentication Required", "Proxy-Authenticate", "Proxy-Authorization")}
        line, challenge, credentials = headers[status]
        if verify_password is None:
            verify = f'<ereg regexp="." search_in="hdr" header="{credentials}:" assign_to="authvalid"/>'
        else:
            verify = (f'<verifyauth assign_to="authvalid" username="{escape(user)}" '
                      f'password="{escape(verify_password, {chr(34): "&quot;"})}"/>')
        text = Template((SCENARIOS / "destination_challenge.xml").read_text()).substitute(
            STATUS=line, CHALLENGE_HEADER=challenge, CREDENTIALS_HEADER=credentials, REALM=escape(realm),
            NONCE=escape(nonce), USER=escape(user), VERIFY=verify, RETRY_TIMEOUT_MS=retry_timeout_ms,
            RURI_REGEXP=escape(ruri_regexp, {'"': "&quot;"}))
        path = workdir / f"destination_challenge_{status}.xml"
        path.write_text(text)
        return Destination(workdir / f"challenge_{status}", path)

    @property
    def uri_host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def requests(self, method: str) -> list[str]:
        """Every `method` request this destination received, whole, in order (from its trace)."""
        text = self.trace.read_text(errors="replace") if self.trace.exists() else ""
        return [m for m in received_messages(text) if m.startswith(f"{method} ")]

    def wait(self, timeout: float = 60) -> SippResult:
        try:
            output, _ = self.process.communicate(timeout=timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                output, _ = self.process.communicate()
        errors = self.workdir / "sipp_errors.log"
        return _result(self.process.returncode, self.workdir / "stats.csv",
                       (output or "")[-3000:] + (errors.read_text()[-3000:] if errors.exists() else ""))


def redirecting_destination(workdir: Path, contact: str) -> Destination:
    """A bridge transfer's destination that answers 302 with `contact` as the new target."""
    text = Template((SCENARIOS / "destination_redirect.xml").read_text()).substitute(CONTACT=escape(contact))
    path = workdir / "destination_redirect.xml"
    path.write_text(text)
    return Destination(workdir / "redirect", path)


class Bystander:
    """sipp at an address no request from outside may make the box call, until `stop()`.

    It turns every INVITE down (486) and traces every message it receives (sipp writes the
    trace as each message arrives), so a test can assert that no INVITE came.
    """

    def __init__(self, workdir: Path):
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port_block(1)
        self.trace = workdir / "messages.log"
        self.process = subprocess.Popen(
            ["sipp", "-sf", str(SCENARIOS / "bystander.xml"), "-i", "127.0.0.1", "-p", str(self.port),
             "-nostdin", "-trace_msg", "-message_file", str(self.trace)],
            cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )
        self._wait_bound()

    def _wait_bound(self, timeout: float = 5) -> None:
        def bound() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"sipp bystander exited {self.process.returncode} at start")
            return udp_port_taken(self.port)

        wait_until(bound, f"sipp bystander to bind 127.0.0.1:{self.port}", timeout, interval=0.05)

    @property
    def uri_host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def requests(self) -> list[str]:
        """The request line of every request received so far."""
        text = self.trace.read_text(errors="replace") if self.trace.exists() else ""
        return re.findall(r"message received \[\d+\] bytes :\n\n([A-Z]+ \S+ SIP/2\.0)", text)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 3 s; only this process, by its handle."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(3)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> Bystander:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class Sipp:
    """One sipp process with its message trace and its screen/stderr log."""

    name: str
    process: asyncio.subprocess.Process
    messages: Path
    log: Path
    args: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid

    async def wait(self, timeout: float) -> int:
        try:
            return await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            await self.stop()
            raise AssertionError(f"sipp {self.name} still running after {timeout} s\n{self.report()}") from None

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after 3 s; only this process, by its PID."""
        if self.process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), 3)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            await self.process.wait()

    async def kill(self) -> None:
        """Die as a crashed worker would: no goodbye."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        await self.process.wait()

    def trace(self) -> str:
        return self.messages.read_text(errors="replace") if self.messages.exists() else ""

    def received(self) -> list[str]:
        """Every SIP message this sipp received, in order (from its -trace_msg file)."""
        return received_messages(self.trace())

    def requests(self, method: str) -> list[str]:
        return [m for m in self.received() if m.startswith(f"{method} ")]

    def report(self) -> str:
        log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
        return f"--- sipp {self.name}: {' '.join(self.args)}\n{log}\n--- last messages\n{self.trace()[-3000:]}"


async def start_sipp(directory: Path, name: str, args: list[str]) -> Sipp:
    """Start sipp with a message trace in `directory`; the caller stops it (`Sipp.stop`)."""
    directory = Path(directory)
    messages = directory / f"{name}.messages.log"
    log = directory / f"{name}.log"
    full = [SIPP, *args, "-nostdin", "-trace_msg", "-message_file", str(messages),
            "-trace_err", "-error_file", str(directory / f"{name}.errors.log")]
    with open(log, "wb") as out:
        process = await asyncio.create_subprocess_exec(
            *full, cwd=directory, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out
        )
    return Sipp(name, process, messages, log, full)


async def start_uas(directory: Path, name: str, port: int, scenario: str | None = None, host: str = HOST) -> Sipp:
    """A worker stand-in running `scenario` (default: answer every call) for every INVITE.

    -aa answers out-of-call OPTIONS, which the edge's dispatcher sends as health pings.
    `host`: another loopback address (127.0.0.2) stands for a peer outside every trunk.
    """
    path = write_scenario(directory, f"{name}.uas", scenario or UAS_ANSWER)
    sipp = await start_sipp(directory, name, ["-sf", str(path), "-aa", "-i", host, "-p", str(port)])
    await wait_udp_bound(port, sipp, host=host)
    return sipp


async def wait_udp_bound(port: int, sipp: Sipp, timeout: float = 5.0, host: str = HOST) -> None:
    """Until something holds the port, so a test never races sipp's start-up."""
    def bound() -> bool:
        if sipp.process.returncode is not None:
            raise AssertionError(f"sipp {sipp.name} exited at start\n{sipp.report()}")
        return udp_port_taken(port, host)

    await wait_until_async(bound, f"sipp {sipp.name} to bind {host}:{port}", timeout, interval=0.05,
                           detail=sipp.report)


async def run_uac(
    directory: Path, name: str, scenario: Path, target: str, *,
    calls: int = 1, rate: int = 10, limit: int | None = None,
    timeout: float = 20.0, extra: list[str] | None = None,
) -> Sipp:
    """Start a UAC: `calls` calls at `rate` per second, at most `limit` (default: all) at once.

    sipp picks its own free local port; `timeout` ends the whole run as a failure.
    """
    args = [target, "-sf", str(scenario), "-i", HOST,
            "-m", str(calls), "-r", str(rate), "-l", str(limit or calls),
            "-timeout", f"{int(timeout)}s", "-timeout_error", "-recv_timeout", "10000",
            *(extra or [])]
    return await start_sipp(directory, name, args)


async def call(
    directory: Path, name: str, scenario: Path, target: str, *,
    calls: int = 1, rate: int = 10, limit: int | None = None,
    timeout: float = 20.0, extra: list[str] | None = None,
) -> Sipp:
    """Run a UAC to its end and insist every call succeeded."""
    uac = await run_uac(directory, name, scenario, target, calls=calls, rate=rate, limit=limit,
                        timeout=timeout, extra=extra)
    code = await uac.wait(timeout + 5)
    assert code == 0, f"sipp {name} exited {code}\n{uac.report()}"
    return uac
