"""sipp (Debian's sip-tester) as a caller: scenario templates, a run, its statistics."""

from __future__ import annotations

import csv
import subprocess
from dataclasses import dataclass
from pathlib import Path
from string import Template

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
             extra: list[str] | None = None) -> SippResult:
    sip_port = free_port_block(1)
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
