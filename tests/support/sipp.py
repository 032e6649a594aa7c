"""sipp (Debian's sip-tester) as a caller: scenario templates, a run, its statistics."""

from __future__ import annotations

import csv
import re
import secrets
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from string import Template
from xml.sax.saxutils import escape

from tests.support.appliance import free_port_block

SCENARIOS = Path(__file__).resolve().parents[1] / "calls" / "scenarios"
PCAPS = Path("/usr/share/sip-tester")


def dtmf_action(digit: str | None) -> str:
    if digit is None:
        return ""
    name = {"*": "star", "#": "pound"}.get(digit, digit)
    return f'<nop><action><exec play_pcap_audio="{PCAPS}/dtmf_2833_{name}.pcap"/></action></nop>'


def info_dtmf(digit: str) -> str:
    """DTMF as SIP INFO (application/dtmf-relay), in the dialog, along the route set."""
    return f"""<send><![CDATA[
      INFO [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Test Caller" <sip:+15550100[call_number]@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      [routes]
      CSeq: 2 INFO
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Type: application/dtmf-relay
      Content-Length: [len]

      Signal={digit}
      Duration=160
    ]]></send>
  <recv response="200"/>"""


def caller_scenario(directory: Path, digit: str | None = "1", wait_ms: int = 4000, bye_timeout_ms: int = 20000,
                    method: str = "rfc4733") -> Path:
    dtmf = info_dtmf(digit) if method == "info" and digit else dtmf_action(digit)
    text = Template((SCENARIOS / "caller.xml").read_text()).substitute(
        WAIT_MS=wait_ms, DTMF=dtmf, BYE_TIMEOUT_MS=bye_timeout_ms
    )
    path = directory / f"caller_{digit or 'none'}_{method}.xml"
    path.write_text(text)
    return path


@dataclass
class SippResult:
    returncode: int
    successful: int
    failed: int
    output: str
    stats: list[dict[str, str]]


def run_sipp(scenario: Path, target_port: int, workdir: Path, *, calls: int = 1, rate: float = 10,
             limit: int | None = None, service: str = "100", timeout: float = 120,
             extra: list[str] | None = None, sip_port: int | None = None) -> SippResult:
    """One sipp run to its end; `sip_port` is its own port (default: any free one)."""
    sip_port = sip_port or free_port_block(1)
    media_port = free_port_block(4)
    args = [
        "sipp", "-sf", str(scenario), "-s", service, f"127.0.0.1:{target_port}",
        "-i", "127.0.0.1", "-p", str(sip_port), "-mi", "127.0.0.1", "-mp", str(media_port),
        "-m", str(calls), "-r", str(rate), "-l", str(limit or calls),
        "-nostdin", "-trace_stat", "-stf", str(workdir / "stats.csv"), "-trace_err",
        "-error_file", str(workdir / "sipp_errors.log"), "-timeout", f"{int(timeout)}s",
    ] + (extra or [])
    proc = subprocess.run(args, cwd=workdir, capture_output=True, text=True, timeout=timeout + 30)
    stats: list[dict[str, str]] = []
    stats_file = workdir / "stats.csv"
    if stats_file.exists():
        stats = list(csv.DictReader(stats_file.read_text().splitlines(), delimiter=";"))
    last = stats[-1] if stats else {}
    return SippResult(
        returncode=proc.returncode,
        successful=int(last.get("SuccessfulCall(C)", 0) or 0),
        failed=int(last.get("FailedCall(C)", 0) or 0),
        output=proc.stdout[-3000:] + proc.stderr[-3000:],
        stats=stats,
    )


def refused_scenario(directory: Path, code: int, header_regexp: str | None = None) -> Path:
    """A caller that passes only if the INVITE is answered `code` (and the header matches)."""
    check = reference = ""
    if header_regexp:
        reference = '<Reference variables="matched"/>'
        check = f'<ereg regexp="{header_regexp}" search_in="msg" check_it="true" assign_to="matched"/>'
    text = Template((SCENARIOS / "refused.xml").read_text()).substitute(CODE=code, CHECK=check, REFERENCE=reference)
    path = directory / f"refused_{code}.xml"
    path.write_text(text)
    return path


# Debian's key captures come from one RTP stream, in this order. pjmedia drops a replayed
# packet whose sequence number is behind the last one as a duplicate, so within one call
# keys can be replayed only in this order and each at most once.
DTMF_CAPTURE_ORDER = "123456789*#0"
G711A_SPEECH = PCAPS / "g711a.pcap"  # about 7 s of a man speaking, PCMA


def dtmf_pcap(digit: str) -> Path:
    """Debian's capture of one RFC 4733 key press (about 140 ms)."""
    name = {"*": "star", "#": "pound"}.get(digit, digit)
    return PCAPS / f"dtmf_2833_{name}.pcap"


def keys(digits: str, start_ms: int = 0, gap_ms: int = 400) -> list[tuple[int, Path]]:
    """Replays pressing `digits` one after the other, for a cue block."""
    return [(start_ms + i * gap_ms, dtmf_pcap(d)) for i, d in enumerate(digits)]


Cue = list[tuple[int, Path]]  # (ms after the cue, pcap to replay)


def _cue_blocks(cues: list[Cue]) -> str:
    """Each cue as a wait for `send_cue`, then its replays."""
    digit_of = {dtmf_pcap(d): d for d in DTMF_CAPTURE_ORDER}
    pressed = "".join(digit_of[pcap] for cue in cues for _, pcap in sorted(cue) if pcap in digit_of)
    order = [DTMF_CAPTURE_ORDER.index(d) for d in pressed]
    if order != sorted(set(order)):
        raise ValueError(f"keys {pressed!r} are not in capture order {DTMF_CAPTURE_ORDER!r}, each once")
    blocks = []
    for cue in cues:
        steps, now = ['<recv request="OPTIONS"/>'], 0
        for at_ms, pcap in sorted(cue, key=lambda play: play[0]):
            if at_ms > now:
                steps.append(f'<pause milliseconds="{at_ms - now}"/>')
                now = at_ms
            # A replay starts its own sender and stops the one before: one pcap at a time.
            steps.append(f'<nop><action><exec play_pcap_audio="{pcap}"/></action></nop>')
        blocks.append("\n  ".join(steps))
    return "\n  ".join(blocks)


def cued_caller_scenario(directory: Path, cues: list[Cue], bye_timeout_ms: int = 60000,
                         name: str = "cued_caller") -> Path:
    """A caller that is silent but for `cues`: each waits for `send_cue`, then replays its pcaps."""
    text = Template((SCENARIOS / "cued_caller.xml").read_text()).substitute(
        CUES=_cue_blocks(cues), BYE_TIMEOUT_MS=bye_timeout_ms
    )
    path = directory / f"{name}.xml"
    path.write_text(text)
    return path


def cued_hangup_scenario(directory: Path, cues: list[Cue], hangup_after_ms: int, name: str = "cued_hangup") -> Path:
    """Like `cued_caller_scenario`, but the caller hangs up `hangup_after_ms` after its last cue."""
    text = Template((SCENARIOS / "cued_hangup.xml").read_text()).substitute(
        CUES=_cue_blocks(cues), HANGUP_AFTER_MS=hangup_after_ms
    )
    path = directory / f"{name}.xml"
    path.write_text(text)
    return path


def transferee_scenario(directory: Path, cues: list[Cue], refer_to_regexp: str, decline: str | None = None,
                        bye_timeout_ms: int = 30000) -> Path:
    """A caller the box REFERs elsewhere: it accepts (202, then NOTIFY "200 OK") or answers `decline`.

    The REFER's Refer-To must match `refer_to_regexp`, or sipp fails the call.
    """
    template = "refer_declined.xml" if decline else "refer_accepted.xml"
    text = Template((SCENARIOS / template).read_text()).substitute(
        CUES=_cue_blocks(cues), REFER_TO=escape(refer_to_regexp, {'"': "&quot;"}), CODE=decline or "",
        BYE_TIMEOUT_MS=bye_timeout_ms,
    )
    path = directory / template
    path.write_text(text)
    return path


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
    """

    def __init__(self, workdir: Path, scenario: Path, timeout: float = 60):
        self.workdir = workdir
        self.port = free_port_block(1)
        workdir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            ["sipp", "-sf", str(scenario), "-i", "127.0.0.1", "-p", str(self.port), "-m", "1",
             "-nostdin", "-trace_stat", "-stf", str(workdir / "stats.csv"), "-trace_err",
             "-error_file", str(workdir / "sipp_errors.log"), "-timeout", f"{int(timeout)}s"],
            cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )

    @staticmethod
    def busy(workdir: Path, ruri_regexp: str) -> "Destination":
        text = Template((SCENARIOS / "destination_busy.xml").read_text()).substitute(
            RURI_REGEXP=escape(ruri_regexp, {'"': "&quot;"}))
        path = workdir / "destination_busy.xml"
        path.write_text(text)
        return Destination(workdir / "busy", path)

    @staticmethod
    def no_answer(workdir: Path, cancel_timeout_ms: int = 30000) -> "Destination":
        text = Template((SCENARIOS / "destination_no_answer.xml").read_text()).substitute(
            CANCEL_TIMEOUT_MS=cancel_timeout_ms)
        path = workdir / "destination_no_answer.xml"
        path.write_text(text)
        return Destination(workdir / "no_answer", path)

    @property
    def uri_host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def wait(self, timeout: float = 60) -> SippResult:
        try:
            output, _ = self.process.communicate(timeout=timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                output, _ = self.process.communicate()
        stats_file = self.workdir / "stats.csv"
        stats = list(csv.DictReader(stats_file.read_text().splitlines(), delimiter=";")) if stats_file.exists() else []
        last = stats[-1] if stats else {}
        errors = self.workdir / "sipp_errors.log"
        return SippResult(
            returncode=self.process.returncode,
            successful=int(last.get("SuccessfulCall(C)", 0) or 0),
            failed=int(last.get("FailedCall(C)", 0) or 0),
            output=(output or "")[-3000:] + (errors.read_text()[-3000:] if errors.exists() else ""),
            stats=stats,
        )


def caller_refer_scenario(directory: Path, refer_to: str, code: int) -> Path:
    """A caller that, once answered, REFERs the box to `refer_to` and passes only if that is answered `code`."""
    text = Template((SCENARIOS / "caller_refer.xml").read_text()).substitute(
        REFER_TO=escape(refer_to), CODE=code)
    path = directory / "caller_refer.xml"
    path.write_text(text)
    return path


def caller_replaces_scenario(directory: Path, code: int) -> Path:
    """A caller that, once answered, sends an INVITE replacing its own call; passes only if that gets `code`."""
    text = Template((SCENARIOS / "caller_replaces.xml").read_text()).substitute(CODE=code)
    path = directory / "caller_replaces.xml"
    path.write_text(text)
    return path


def forged_invite_scenario(directory: Path, trunk: str, source: str, code: int) -> Path:
    """An INVITE carrying the edge's trunk and source headers, written by the sender; passes only on `code`."""
    text = Template((SCENARIOS / "forged_invite.xml").read_text()).substitute(
        TRUNK=trunk, SOURCE=source, CODE=code)
    path = directory / "forged_invite.xml"
    path.write_text(text)
    return path


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
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sipp bystander exited {self.process.returncode} at start")
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                try:
                    probe.bind(("127.0.0.1", self.port))
                except OSError:
                    return  # sipp holds it
            time.sleep(0.05)
        raise RuntimeError(f"sipp bystander did not bind 127.0.0.1:{self.port}")

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

    def __enter__(self) -> "Bystander":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
