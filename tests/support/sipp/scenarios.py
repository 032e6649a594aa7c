"""sipp scenarios from the templates in tests/calls/scenarios: callers, DTMF, cues, transfers."""

from __future__ import annotations

import struct
from pathlib import Path
from string import Template
from xml.sax.saxutils import escape

SCENARIOS = Path(__file__).resolve().parents[2] / "calls" / "scenarios"
PCAPS = Path("/usr/share/sip-tester")
# The capacity benchmark's caller: calls, $MEDIA, then hangs up with a BYE along the route set.
HOLD = Path(__file__).resolve().parents[3] / "bench" / "scenarios" / "hold.xml"


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


def pcap_seconds(path: Path) -> float:
    """Play time of a pcap: first to last packet plus one packet's ptime."""
    data = path.read_bytes()
    endian = "<" if data[:4] == b"\xd4\xc3\xb2\xa1" else ">"
    stamps = []
    offset = 24
    while offset + 16 <= len(data):
        seconds, micros, captured, _ = struct.unpack(endian + "IIII", data[offset : offset + 16])
        stamps.append(seconds + micros / 1e6)
        offset += 16 + captured
    ptime = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
    return stamps[-1] - stamps[0] + ptime


def speaking_caller_scenario(directory: Path, seconds: float, name: str = "speaking_caller.xml") -> Path:
    """A caller that speaks for `seconds` (the speech pcap replayed back to back), then hangs up
    itself with a BYE along the route set and passes only if that is answered 200."""
    play_ms = int(pcap_seconds(G711A_SPEECH) * 1000)
    left = int(seconds * 1000)
    media = []
    while left > 0:
        pause = min(play_ms, left)
        media.append(f'  <nop><action><exec play_pcap_audio="{G711A_SPEECH}"/></action></nop>\n'
                     f'  <pause milliseconds="{pause}"/>')
        left -= pause
    text = Template(HOLD.read_text()).substitute(MEDIA="\n".join(media), BYE_TIMEOUT_MS=10000)
    path = directory / name
    path.write_text(text)
    return path


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
