"""baresip (Debian's softphone, 1.0.0) as a caller: a throwaway config, one call, what it heard.

It plays a WAV as its microphone (`aufile`) and the `sndfile` filter dumps both directions
of the call to WAV files; it dials with `-e "/dial URI"`, hangs up and quits after `-t` seconds.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.support.appliance import free_port_block

MODULES = Path("/usr/lib/baresip/modules")

# Only local media: no stun/turn/ice/natpmp modules, no sound card, no console UI.
# ausrc_srate makes baresip resample the 16 kHz microphone to whichever codec is agreed
# (aufile alone refuses a file whose rate differs from the codec's); aubridge is a player
# that goes nowhere, since baresip needs one and what it hears is taken from sndfile's dump.
# Codecs are offered in module order: G722, PCMU, PCMA.
CONFIG = """\
module_path {modules}
poll_method epoll
sip_listen 127.0.0.1:{sip_port}
net_interface 127.0.0.1
rtp_ports {rtp_first}-{rtp_last}
call_max_calls 1
audio_source aufile,{microphone}
ausrc_srate 16000
audio_player aubridge,heard
audio_alert aubridge,alert
snd_path {dumps}
module g722.so
module g711.so
module sndfile.so
module aufile.so
module aubridge.so
module_tmp account.so
module_app menu.so
"""
# regint=0: a local identity that never registers.
ACCOUNTS = "<sip:caller@127.0.0.1>;regint=0\n"


@dataclass
class Microphone:
    path: Path
    speech_s: float  # the speech at the start; silence fills the rest


def speech_wav(path: Path, text: str, seconds: float) -> Microphone:
    """espeak-ng speaking `text`, then silence up to `seconds`, as 16 kHz mono.

    baresip 1.0.0 hangs up when its aufile source reaches the end of the file, so the
    silence must outlast the call.
    """
    raw = path.with_suffix(".espeak.wav")
    subprocess.run(["espeak-ng", "-w", str(raw), text], check=True)
    speech_s = float(subprocess.run(["soxi", "-D", str(raw)], check=True, capture_output=True, text=True).stdout)
    if speech_s >= seconds:
        raise ValueError(f"{text!r} lasts {speech_s:.1f}s, longer than {seconds}s")
    subprocess.run(
        ["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(path), "pad", "0", f"{seconds - speech_s:.3f}"],
        check=True,
    )
    return Microphone(path, speech_s)


@dataclass
class BaresipCall:
    returncode: int
    output: str
    heard: Path | None  # the far end's audio as baresip decoded it, at the codec's rate
    sent: Path | None  # the microphone as baresip encoded it

    @property
    def established(self) -> bool:
        return "Call established" in self.output

    @property
    def codec(self) -> str | None:
        match = re.search(r"Set audio decoder: (\S+)", self.output)
        return match.group(1) if match else None


def call(uri: str, microphone: Path, workdir: Path, *, seconds: float) -> BaresipCall:
    """Dial `uri`, stay about `seconds`, hang up; baresip is stopped by its PID whatever happens."""
    missing = [m for m in re.findall(r"^module\w* (\S+\.so)$", CONFIG, re.M) if not (MODULES / m).exists()]
    if missing:
        raise RuntimeError(f"baresip modules {missing} missing from {MODULES}: run scripts/test.sh")
    if re.search(r"\s", f"{workdir}{microphone}"):
        raise ValueError("baresip's config format cannot hold paths with spaces")
    dumps = workdir / "dumps"
    dumps.mkdir(parents=True, exist_ok=True)
    rtp_first = free_port_block(8)
    (workdir / "config").write_text(CONFIG.format(
        modules=MODULES, sip_port=free_port_block(1), rtp_first=rtp_first, rtp_last=rtp_first + 7,
        microphone=microphone, dumps=dumps,
    ))
    (workdir / "accounts").write_text(ACCOUNTS)
    (workdir / "contacts").write_text("")
    log_path = workdir / "baresip.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            ["baresip", "-f", str(workdir), "-e", f"/dial {uri}", "-t", str(round(seconds))],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=workdir,
        )
        try:
            process.wait(timeout=seconds + 15)
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
    output = re.sub(r"\x1b\[[0-9;]*m", "", log_path.read_text(errors="replace"))
    # The call's status line repaints itself ten times a second; keep the log readable.
    output = re.sub(r"\r*\[\d+:\d\d:\d\d\] audio=\S+ \(bit/s\) *\r*", "", output)
    output = re.sub(r"\n{2,}", "\n", output)

    def dump(direction: str) -> Path | None:
        found = sorted(dumps.glob(f"dump-*-{direction}.wav"))
        return found[-1] if found else None

    return BaresipCall(process.returncode, output, dump("dec"), dump("enc"))


def pcm16k(path: Path) -> bytes:
    """Any WAV as the box's audio: 16 kHz mono s16le."""
    return subprocess.run(
        ["sox", str(path), "-t", "raw", "-r", "16000", "-c", "1", "-b", "16", "-e", "signed-integer", "-L", "-"],
        check=True, capture_output=True,
    ).stdout
