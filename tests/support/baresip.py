"""baresip (Debian's softphone, 1.0.0) as a caller: a throwaway config, one call, what it heard.

It plays a WAV as its microphone (`aufile`) and the `sndfile` filter dumps both directions
of the call to WAV files; it dials with `-e "/dial URI"`, hangs up and quits after `-t` seconds.
`Softphone` drives it over its control socket instead, for a caller that acts on cue.
"""

from __future__ import annotations

import itertools
import json
import re
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.support.ports import free_port_block
from tests.support.wait import wait_until

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
    speech_s: float  # the speech's length; silence before it (`lead_s`) and after it fills the rest


def speech_wav(path: Path, text: str, seconds: float, lead_s: float = 0.0) -> Microphone:
    """espeak-ng speaking `text` after `lead_s` of silence, then silence up to `seconds`, as 16 kHz mono.

    baresip 1.0.0 hangs up when its aufile source reaches the end of the file, so the
    silence must outlast the call.
    """
    raw = path.with_suffix(".espeak.wav")
    subprocess.run(["espeak-ng", "-w", str(raw), text], check=True)
    speech_s = float(subprocess.run(["soxi", "-D", str(raw)], check=True, capture_output=True, text=True).stdout)
    if lead_s + speech_s >= seconds:
        raise ValueError(f"{text!r} lasts {speech_s:.1f}s, too long to start at {lead_s}s within {seconds}s")
    subprocess.run(
        ["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(path),
         "pad", f"{lead_s:.3f}", f"{seconds - lead_s - speech_s:.3f}"],
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


def call(uri: str, microphone: Path, workdir: Path, *, seconds: float,
         jitter_frames: tuple[int, int] | None = None) -> BaresipCall:
    """Dial `uri`, stay about `seconds`, hang up; baresip is stopped by its PID whatever happens.

    `jitter_frames` (min, max) sets baresip's jitter buffer (its default holds 5-10 frames, 100 ms
    and more); what it heard is dumped after that buffer.
    """
    missing = [m for m in re.findall(r"^module\w* (\S+\.so)$", CONFIG, re.MULTILINE) if not (MODULES / m).exists()]
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
    ) + (f"jitter_buffer_delay {jitter_frames[0]}-{jitter_frames[1]}\n" if jitter_frames else ""))
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


class Softphone:
    """baresip under remote control through its ctrl_tcp module: dial, speak on cue, hear the hang-up.

    Its microphone is silence until `say` switches it to a WAV (speech, then silence), so a
    test can speak exactly when the flow listens; `wait_closed` returns once the far end
    has hung up. Use as a context manager: baresip is stopped by its PID whatever happens.
    """

    def __init__(self, workdir: Path, max_seconds: float = 90, user: str = "caller"):
        self.workdir = workdir
        self.user = user  # baresip takes calls only for its account's user: sip:<user>@127.0.0.1:<sip_port>
        self.max_seconds = max_seconds
        self.dumps = workdir / "dumps"
        self.log_path = workdir / "baresip.log"
        self.ctrl_port = free_port_block(1)
        self.sip_port = free_port_block(1)  # where it can be called
        self._messages: list[dict] = []
        self._arrived = threading.Condition()
        self._tokens = itertools.count(1)
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Softphone:
        self.dumps.mkdir(parents=True, exist_ok=True)
        silence = self.workdir / "silence.wav"
        subprocess.run(["sox", "-n", "-r", "16000", "-c", "1", "-b", "16", str(silence),
                        "trim", "0", str(self.max_seconds + 10)], check=True)
        rtp_first = free_port_block(8)
        (self.workdir / "config").write_text(CONFIG.format(
            modules=MODULES, sip_port=self.sip_port, rtp_first=rtp_first, rtp_last=rtp_first + 7,
            microphone=silence, dumps=self.dumps,
        ) + f"module_app ctrl_tcp.so\nctrl_tcp_listen 127.0.0.1:{self.ctrl_port}\n")
        (self.workdir / "accounts").write_text(ACCOUNTS.replace("caller", self.user))
        (self.workdir / "contacts").write_text("")
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            ["baresip", "-f", str(self.workdir), "-t", str(round(self.max_seconds))],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, cwd=self.workdir,
        )

        def connected() -> socket.socket | None:
            if self.process.poll() is not None:
                raise RuntimeError(f"baresip exited {self.process.returncode}:\n{self.output}")
            try:
                return socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=1)
            except OSError:
                return None

        try:
            self._socket = wait_until(connected, "baresip's control port to open", 10, detail=lambda: self.output)
        except (RuntimeError, AssertionError):
            self.__exit__(None, None, None)
            raise
        self._socket.settimeout(None)
        threading.Thread(target=self._read, name="baresip-ctrl", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                self.command("quit", timeout=2)
            except (OSError, TimeoutError):
                pass
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if hasattr(self, "_socket"):
            self._socket.close()
        self._log.close()

    # ctrl_tcp speaks JSON in netstrings ("<length>:<json>,") both ways.
    def _read(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = self._socket.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                return
            buffer += chunk
            while b":" in buffer:
                length, rest = buffer.split(b":", 1)
                if len(rest) < int(length) + 1:
                    break
                message, buffer = json.loads(rest[: int(length)]), rest[int(length) + 1:]
                with self._arrived:
                    self._messages.append(message)
                    self._arrived.notify_all()

    def _wait(self, match: Callable[[dict], bool], timeout: float) -> dict:
        with self._arrived:
            if not self._arrived.wait_for(lambda: any(match(m) for m in self._messages), timeout):
                raise TimeoutError(f"baresip: nothing matched in {timeout}s; messages: {self._messages}")
            return next(m for m in self._messages if match(m))

    def command(self, name: str, params: str = "", timeout: float = 5) -> str:
        token = str(next(self._tokens))
        body = json.dumps({"command": name, "params": params, "token": token}).encode()
        self._socket.sendall(str(len(body)).encode() + b":" + body + b",")
        reply = self._wait(lambda m: bool(m.get("response")) and m.get("token") == token, timeout)
        if not reply.get("ok"):
            raise RuntimeError(f"baresip refused {name} {params}: {reply}")
        return reply.get("data", "")

    def dial(self, uri: str, timeout: float = 10) -> None:
        self.command("dial", uri)
        self._wait(lambda m: m.get("type") == "CALL_ESTABLISHED", timeout)

    def wait_event(self, kind: str, count: int, timeout: float) -> dict:
        """Until baresip has reported `count` events of type `kind` (CALL_INCOMING, CALL_CLOSED...); the last."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self._of(kind)) >= count, timeout):
                raise TimeoutError(f"baresip: {len(self._of(kind))} of {count} {kind} in {timeout}s: {self._messages}")
            return self._of(kind)[count - 1]

    def _of(self, kind: str) -> list[dict]:
        return [m for m in self._messages if m.get("type") == kind]

    def wait_incoming(self, timeout: float) -> None:
        """Wait until somebody calls (baresip rings; nothing is answered until `accept`)."""
        self._wait(lambda m: m.get("type") == "CALL_INCOMING", timeout)

    def accept(self, timeout: float = 10) -> None:
        self.command("accept")
        self._wait(lambda m: m.get("type") == "CALL_ESTABLISHED", timeout)

    def hangup(self) -> None:
        self.command("hangup")

    def say(self, microphone: Path) -> None:
        """From now on the microphone plays this WAV (16 kHz mono; make its silence outlast the call)."""
        self.command("ausrc", f"aufile,{microphone}")

    def press(self, keys: str, gap_s: float = 0.4) -> None:
        """Send keys as RFC 4733 events, one after the other."""
        for i, key in enumerate(keys):
            if i:
                time.sleep(gap_s)
            self.command("sndcode", key)

    def wait_closed(self, timeout: float) -> str:
        """Wait for the call to end; its reason as baresip says it."""
        return self._wait(lambda m: m.get("type") == "CALL_CLOSED", timeout).get("param", "")

    @property
    def output(self) -> str:
        return re.sub(r"\r*\[\d+:\d\d:\d\d\] audio=\S+ \(bit/s\) *\r*", "", self.log_path.read_text(errors="replace"))

    def result(self) -> BaresipCall:
        found = {d: sorted(self.dumps.glob(f"dump-*-{d}.wav")) for d in ("dec", "enc")}
        return BaresipCall(self.process.returncode if self.process else -1, self.output,
                           found["dec"][-1] if found["dec"] else None, found["enc"][-1] if found["enc"] else None)
