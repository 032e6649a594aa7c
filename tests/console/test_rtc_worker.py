"""The WebRTC gateway worker, all real: a hub and its participant socket, the worker process
(`python -m appliance.console.rtc_worker`), and an aiortc operator client over loopback.

The hub side is a small BrowserHandler standing in for the desk: it makes a
BrowserParticipant for each offer and puts it in a room with a probe participant, which
records what the browser says and plays what the browser must hear.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from pydantic import BaseModel

from appliance.console.rtc_worker import MESSAGES_PER_S
from appliance.core.audio import FRAME_BYTES, SAMPLE_RATE
from appliance.operators.protocol import MAX_MESSAGE
from appliance.rooms import protocol as p
from appliance.rooms.hub import Hub
from appliance.rooms.room import AudioTrack, Participant
from appliance.rooms.server import BrowserParticipant, ParticipantServer, WorkerConnection, WorkerRegistry
from appliance.rooms.tokens import TokenAuthority, worker_identity
from appliance.speech.tts import EspeakTTS
from tests.support.hub import NoCalls
from tests.support.operator_client import OperatorClient, read_wav
from tests.support.wait import wait_until_async

ROOT = Path(__file__).resolve().parents[2]
CAPACITY = 2
SAID_BY_OPERATOR = "Thank you for calling. How can I help you today?"
SAID_TO_OPERATOR = "My order number is four five six, and it has not arrived."


class Probe(Participant):
    """The rest of the room: records the mix it hears, plays what is written to its track."""

    def __init__(self) -> None:
        super().__init__("probe", kind="test")
        self.publish(AudioTrack("probe"))
        self.sink = self
        self.frames: list[bytes] = []

    def push(self, frame: bytes) -> None:
        self.frames.append(frame)


@dataclass
class Timing:
    offered: float
    answered: float | None = None
    opened: float | None = None


@dataclass
class Browsers:
    """The BrowserHandler: what the desk would do, and a record of what arrived."""

    hub: Hub
    probe: Probe = field(default_factory=Probe)
    answers: dict[int, asyncio.Future[p.RtcAnswer]] = field(default_factory=dict)
    participants: dict[int, BrowserParticipant] = field(default_factory=dict)
    states: list[p.RtcState] = field(default_factory=list)
    data: list[p.RtcData] = field(default_factory=list)
    timings: dict[int, Timing] = field(default_factory=dict)
    lost: int = 0
    _legs: int = 0

    def __post_init__(self) -> None:
        self.room = self.hub.create_room("room-1")
        self.room.join(self.probe)

    async def offer(self, worker: WorkerConnection, sdp: str, leg: int | None = None) -> p.RtcAnswer:
        if leg is None:
            self._legs += 1
            leg = self._legs
        loop = asyncio.get_running_loop()
        self.timings[leg] = Timing(offered=loop.time())
        self.answers[leg] = loop.create_future()
        created = leg not in worker.legs
        if created:
            participant = BrowserParticipant(f"operator-{leg}", worker, leg)
            worker.legs[leg] = participant
            self.participants[leg] = participant
            self.room.join(participant)
        worker.send(p.RtcOffer(leg=leg, sdp=sdp, identity=f"operator-{leg}"))
        answer = await asyncio.wait_for(self.answers[leg], 15)
        if not answer.ok and created:
            self._forget(worker, leg)
        return answer

    def rtc_message(self, worker: WorkerConnection, message: BaseModel) -> None:
        now = asyncio.get_running_loop().time()
        if isinstance(message, p.RtcAnswer):
            if message.ok:
                self.timings[message.leg].answered = now
            self.answers.pop(message.leg).set_result(message)
        elif isinstance(message, p.RtcState):
            self.states.append(message)
            if message.state == "open":
                self.timings[message.leg].opened = now
            else:
                self._forget(worker, message.leg)
        elif isinstance(message, p.RtcData):
            self.data.append(message)

    def rtc_lost(self, worker: WorkerConnection) -> None:
        self.lost += 1

    def _forget(self, worker: WorkerConnection, leg: int) -> None:
        participant = worker.legs.pop(leg, None)
        if participant is not None:
            self.room.leave(participant.identity)

    def state(self, leg: int, state: str) -> p.RtcState | None:
        return next((s for s in self.states if s.leg == leg and s.state == state), None)

    def payloads(self, leg: int) -> list[dict[str, object]]:
        return [d.payload for d in self.data if d.leg == leg]


@dataclass
class Gateway:
    hub: Hub
    server: ParticipantServer
    browsers: Browsers
    process: asyncio.subprocess.Process
    log: Path
    clients: list[OperatorClient] = field(default_factory=list)

    @property
    def worker(self) -> WorkerConnection:
        return self.server.registry.rtc["r1"]

    def signal(self) -> Callable[[str], Awaitable[str]]:
        """The client's signalling: its offer to the worker through the hub; the answer back."""
        async def offer(sdp: str) -> str:
            answer = await self.browsers.offer(self.worker, sdp)
            assert answer.ok, answer.error
            return answer.sdp
        return offer

    async def client(self, **kwargs: object) -> OperatorClient:
        client = OperatorClient(**kwargs)  # type: ignore[arg-type]
        self.clients.append(client)
        return client

    async def connected(self, **kwargs: object) -> tuple[OperatorClient, int]:
        client = await self.client(**kwargs)
        await client.connect(self.signal())
        leg = self.browsers._legs
        await wait_until_async(lambda: self.browsers.state(leg, "open"), "the hub to hear the channel open")
        return client, leg

    def worker_log(self) -> str:
        return self.log.read_text()


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    # tmp_path can be too long for a unix socket's 108 bytes.
    with tempfile.TemporaryDirectory(prefix="sb-rtc-") as directory:
        hub = Hub()
        tokens = TokenAuthority("rtc-test-key", "rtc-test-secret-long-enough-for-hmac-sha256")
        browsers = Browsers(hub)
        server = ParticipantServer(hub, tokens, WorkerRegistry(), NoCalls(), browsers=browsers)  # type: ignore[arg-type]
        path = Path(directory) / "hub.sock"
        await server.start(path)
        hub.start()
        log = Path(directory) / "worker.log"
        env = dict(os.environ, SWITCHBOARD_RTC_TOKEN=tokens.mint(worker_identity("rtc", "r1"), "rtc"),
                   PYTHONPATH=str(ROOT))
        with log.open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "appliance.console.rtc_worker", "--name", "r1", "--hub-socket", str(path),
                "--capacity", str(CAPACITY), env=env, stderr=stderr)
        gateway = Gateway(hub, server, browsers, process, log)
        try:
            await wait_until_async(lambda: "r1" in server.registry.rtc, "the worker to join the hub",
                                   detail=gateway.worker_log)
            yield gateway
        finally:
            for client in gateway.clients:
                await client.close()
            if process.returncode is None:
                process.terminate()
                await process.wait()
            await server.stop()
            await hub.stop()
            print(log.read_text())


# --- audio, compared as what a listener follows: loudness over time
def envelope(pcm: bytes) -> np.ndarray:
    samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % FRAME_BYTES], dtype=np.int16).astype(np.float64)
    return np.sqrt(np.mean(samples.reshape(-1, FRAME_BYTES // 2) ** 2, axis=1))


def best_match(said: bytes, heard: bytes) -> float:
    """The highest correlation of the loudness envelope of `said` with any stretch of `heard`."""
    want, got = envelope(said), envelope(heard)
    assert len(got) >= len(want), f"heard {len(got)} frames, said {len(want)}"
    return max(float(np.corrcoef(want, got[lag : lag + len(want)])[0, 1]) for lag in range(len(got) - len(want) + 1))


def espeak_wav(directory: Path, text: str) -> Path:
    """A real WAV as a test would record one: espeak-ng, resampled to 16 kHz mono by sox."""
    raw, wav = directory / "raw.wav", directory / "said.wav"
    subprocess.run(["espeak-ng", "-w", str(raw), text], check=True)
    subprocess.run(["sox", str(raw), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(wav)], check=True)
    return wav


# --- the tests
async def test_a_client_connects_and_the_control_channel_relays_both_ways(gateway: Gateway) -> None:
    client, leg = await gateway.connected()

    assert client.answered_codecs[0] == "audio/opus"
    assert set(client.answered_codecs) <= {"audio/opus", "audio/pcmu"}
    timing = gateway.browsers.timings[leg]
    assert timing.answered is not None and timing.opened is not None
    print(f"\nrtc connect: offer->answer {1000 * (timing.answered - timing.offered):.1f} ms, "
          f"offer->channel open {1000 * (timing.opened - timing.offered):.1f} ms")

    client.send({"type": "state", "state": "available"})
    await wait_until_async(lambda: gateway.browsers.payloads(leg), "the message to reach the hub")
    assert gateway.browsers.payloads(leg) == [{"type": "state", "state": "available"}]

    gateway.browsers.participants[leg].send({"type": "welcome", "version": 1})
    gateway.browsers.participants[leg].send({"type": "offer", "offer": "o-1"})
    assert await client.recv("offer") == {"type": "offer", "offer": "o-1"}  # recv keeps the other type for its own recv
    assert await client.recv("welcome") == {"type": "welcome", "version": 1}


@pytest.mark.parametrize("codec", ["audio/opus", "audio/PCMU"])
async def test_audio_goes_both_ways(gateway: Gateway, tmp_path: Path, codec: str) -> None:
    wav = espeak_wav(tmp_path, SAID_TO_OPERATOR)
    said = read_wav(wav)
    client, leg = await gateway.connected(wav=wav, codecs=(codec,))
    assert client.answered_codecs == [codec.lower()]
    to_browser = EspeakTTS().synthesize(SAID_BY_OPERATOR)
    gateway.browsers.probe.track.write(bytes(SAMPLE_RATE) + to_browser)  # after half a second of silence

    seconds = max(len(said), len(to_browser) + SAMPLE_RATE) / (2 * SAMPLE_RATE)
    await asyncio.sleep(seconds + 1.0)

    from_browser = b"".join(gateway.browsers.probe.frames)
    assert best_match(said, from_browser) > 0.85
    assert best_match(to_browser, client.heard()) > 0.85
    assert best_match(said, client.heard()) < 0.6  # the browser does not hear itself back


async def test_bad_offers_are_refused_with_a_reason_and_the_worker_serves_on(gateway: Gateway) -> None:
    browsers, worker = gateway.browsers, gateway.worker

    garbage = await browsers.offer(worker, "v=0\r\nm=audio\r\nthis is not SDP")
    assert not garbage.ok and "unparsable SDP" in garbage.error
    empty = await browsers.offer(worker, "hello")
    assert not empty.ok and "no audio m-line" in empty.error
    data_only = await browsers.offer(worker, await (await gateway.client(audio=False)).offer())
    assert not data_only.ok and "no audio m-line" in data_only.error
    g722 = await browsers.offer(worker, await (await gateway.client(codecs=("audio/G722",))).offer())
    assert not g722.ok and "no audio codec we take" in g722.error

    first, leg = await gateway.connected()
    again = await browsers.offer(worker, await (await gateway.client()).offer(), leg=leg)
    assert not again.ok and "already exists" in again.error
    await gateway.connected()  # the second of CAPACITY
    full = await browsers.offer(worker, await (await gateway.client()).offer())
    assert not full.ok and "at capacity" in full.error

    await first.close()
    await wait_until_async(lambda: browsers.state(leg, "closed"), "the first session to end")
    await gateway.connected()  # its place is free again
    assert gateway.process.returncode is None


async def test_bad_and_flooding_messages_are_dropped_and_the_session_stays(gateway: Gateway) -> None:
    client, leg = await gateway.connected()

    client.send({"type": "wrap_up", "notes": "x" * MAX_MESSAGE})
    client.send_raw(b'{"type": "binary"}')
    client.send_raw("not json")
    client.send_raw('["a", "list"]')
    client.send_raw("[" * 10_000)
    client.send({"type": "ping", "n": 0})
    await wait_until_async(lambda: gateway.browsers.payloads(leg), "the good message to reach the hub")
    assert gateway.browsers.payloads(leg) == [{"type": "ping", "n": 0}]

    await asyncio.sleep(1.0)  # a fresh rate window
    for n in range(1, 501):
        client.send({"type": "ping", "n": n})
    await asyncio.sleep(1.5)
    client.send({"type": "ping", "n": "after"})
    await wait_until_async(lambda: {"type": "ping", "n": "after"} in gateway.browsers.payloads(leg),
                           "a message after the flood to pass")
    flood = [m for m in gateway.browsers.payloads(leg) if m["n"] not in (0, "after")]
    assert MESSAGES_PER_S <= len(flood) <= 2 * MESSAGES_PER_S
    assert flood == sorted(flood, key=lambda m: m["n"])  # whatever passed kept its order

    log = gateway.worker_log()
    for reason in ("message over the size limit", "binary message", "not a JSON object"):
        assert reason in log
    assert 1 <= log.count("browser messages over the rate limit dropped") <= 2
    assert browsers_open(gateway, leg) and gateway.process.returncode is None


def browsers_open(gateway: Gateway, leg: int) -> bool:
    return gateway.browsers.state(leg, "closed") is None


async def test_the_browser_leaving_reaches_the_hub(gateway: Gateway) -> None:
    client, leg = await gateway.connected()
    await client.close()
    state = await wait_until_async(lambda: gateway.browsers.state(leg, "closed"), "the hub to hear the browser left")
    assert state.reason
    assert [s.state for s in gateway.browsers.states if s.leg == leg] == ["open", "closed"]


async def test_the_hub_closing_a_session_ends_the_browsers_connection(gateway: Gateway) -> None:
    client, leg = await gateway.connected()
    gateway.browsers.participants[leg].close("logged out")
    await client.closed()
    state = await wait_until_async(lambda: gateway.browsers.state(leg, "closed"), "the session's end")
    assert state.reason == "logged out"
    assert [s.state for s in gateway.browsers.states if s.leg == leg] == ["open", "closed"]


async def test_sigterm_closes_every_session_and_the_worker_exits(gateway: Gateway) -> None:
    clients = [(await gateway.connected())[0] for _ in range(CAPACITY)]
    gateway.process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(gateway.process.wait(), 10) == 0
    for client in clients:
        await client.closed()
    await wait_until_async(lambda: gateway.browsers.lost == 1, "the hub to see the worker go")
