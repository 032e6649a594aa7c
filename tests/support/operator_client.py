"""An operator's browser without the browser: an aiortc peer that speaks as the console does.

It offers audio (Opus and PCMU, or the codecs given) and a "control" data channel, plays a
16 kHz mono WAV (then silence) into the call and keeps everything it hears as 16 kHz mono.
Signalling is injected: `connect(signal)` hands `signal` our SDP offer and expects the
answer's SDP back, so the same client drives the worker directly, or the console's HTTP API.
"""

from __future__ import annotations

import asyncio
import json
import time
import wave
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription, sdp
from aiortc.mediastreams import MediaStreamTrack

from appliance.console.rtc_media import PacedAudioTrack, frames_from, shorten_jitter_buffer
from appliance.core.audio import FRAME_BYTES, SAMPLE_RATE, SILENCE
from appliance.operators import protocol as op

__all__ = ["OperatorClient", "PcmTrack", "read_wav"]

Signal = Callable[[str], Awaitable[str]]


def read_wav(path: Path) -> bytes:
    """The PCM of a 16 kHz mono s16 WAV; anything else is a test's mistake."""
    with wave.open(str(path), "rb") as wav:
        if (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) != (SAMPLE_RATE, 1, 2):
            raise ValueError(f"{path}: not 16 kHz mono 16-bit")
        return wav.readframes(wav.getnframes())


class PcmTrack(PacedAudioTrack):
    """Plays `pcm` (16 kHz mono s16le) once at real time, then silence; `play` queues more."""

    def __init__(self, pcm: bytes = b""):
        super().__init__()
        self._pcm = bytearray(pcm)

    def play(self, pcm: bytes) -> None:
        self._pcm += pcm

    def next_frame(self) -> bytes:
        if not self._pcm:
            return SILENCE
        frame = bytes(self._pcm[:FRAME_BYTES])
        del self._pcm[:FRAME_BYTES]
        return frame + bytes(FRAME_BYTES - len(frame))


class OperatorClient:
    def __init__(self, wav: Path | None = None, codecs: tuple[str, ...] = ("audio/opus", "audio/PCMU"),
                 audio: bool = True, track: PacedAudioTrack | None = None):
        # An empty ICE server list: with none, aiortc asks a public STUN server.
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        # `track`: what to send instead of the WAV (bench/operators.py sends a timed signal).
        self.track = track or PcmTrack(read_wav(wav) if wav else b"")
        if audio:
            transceiver = self.pc.addTransceiver(self.track, direction="sendrecv")
            wanted = [c.lower() for c in codecs]
            transceiver.setCodecPreferences(sorted(
                (c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType.lower() in wanted),
                key=lambda c: wanted.index(c.mimeType.lower())))
        self.channel = self.pc.createDataChannel("control", ordered=True)
        self._messages: list[dict[str, Any]] = []
        self._arrived = asyncio.Condition()
        self._opened = asyncio.Event()
        self._closed = asyncio.Event()
        self._heard = bytearray()
        # A supervisor's wallboard as the console holds it: the whole board, then its updates applied.
        self.board: op.Wallboard | None = None
        # (wall-clock time, bytes heard by then) per frame received, for benchmarks' timing.
        self.arrivals: list[tuple[float, int]] = []
        self._reader: asyncio.Task[None] | None = None
        self.channel.on("open", self._opened.set)
        self.channel.on("close", self._closed.set)
        self.channel.on("message", self._on_message)
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._on_state)

    async def offer(self) -> str:
        """Our SDP offer, candidates gathered (for a test that signals by hand)."""
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def connect(self, signal: Signal, timeout: float = 10.0) -> None:
        """Offer, take the answer `signal` returns, and wait until the control channel is open."""
        answer = await signal(await self.offer())
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        # As a browser's adaptive jitter buffer settles on a LAN, not aiortc's fixed 100 ms: what
        # this client hears is then the box's delay, not the test client's.
        for transceiver in self.pc.getTransceivers():
            shorten_jitter_buffer(transceiver.receiver)
        await asyncio.wait_for(self._opened.wait(), timeout)

    def send(self, message: dict[str, Any]) -> None:
        self.channel.send(json.dumps(message))

    def send_raw(self, text: str | bytes) -> None:
        """Anything on the control channel, for tests of what the appliance refuses."""
        self.channel.send(text)

    async def recv(self, type_: str, timeout: float = 5.0) -> dict[str, Any]:
        """The next message of type `type_`; messages of other types stay for their own recv."""
        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(lambda: any(m.get("type") == type_
                                                                      for m in self._messages)), timeout)
            index = next(i for i, m in enumerate(self._messages) if m.get("type") == type_)
            return self._messages.pop(index)

    @property
    def messages(self) -> list[dict[str, Any]]:
        """What has arrived and no recv took yet."""
        return list(self._messages)

    def heard(self) -> bytes:
        """Everything received so far, as 16 kHz mono s16le."""
        return bytes(self._heard)

    @property
    def answered_codecs(self) -> list[str]:
        """The audio codecs in the appliance's answer, most preferred first (lower-case mime types)."""
        answer = sdp.SessionDescription.parse(self.pc.remoteDescription.sdp)
        return [codec.mimeType.lower() for media in answer.media if media.kind == "audio"
                for codec in media.rtp.codecs]

    async def closed(self, timeout: float = 10.0) -> None:
        """Wait until the appliance has ended the session (the channel or the connection closed)."""
        await asyncio.wait_for(self._closed.wait(), timeout)

    async def close(self) -> None:
        self.track.stop()
        await self.pc.close()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)

    async def board_until(self, check: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> dict[str, Any]:
        """The wallboard (as a dict, with its instants) once `check` holds for it. Polled, since
        time passing (a wait growing) changes what `check` sees without any message."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            board = self.board.model_dump() if self.board is not None else None
            if board is not None and check(board):
                return board
            if loop.time() >= end:
                raise TimeoutError(f"the wallboard never satisfied the check; last: {board}")
            await asyncio.sleep(0.05)

    def _on_message(self, message: str | bytes) -> None:
        data = json.loads(message)
        if data.get("type") == "wallboard":
            self.board = op.Wallboard.model_validate(data)
        elif data.get("type") == "wallboard_update" and self.board is not None:
            self.board = op.apply(self.board, op.WallboardUpdate.model_validate(data))
        self._messages.append(data)

        async def notify() -> None:
            async with self._arrived:
                self._arrived.notify_all()

        asyncio.get_running_loop().create_task(notify())

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            self._reader = asyncio.get_running_loop().create_task(self._read(track))

    def _on_state(self) -> None:
        if self.pc.connectionState in ("failed", "closed"):
            self._closed.set()

    async def _read(self, track: MediaStreamTrack) -> None:
        async for pcm in frames_from(track):
            self._heard += pcm
            self.arrivals.append((time.time(), len(self._heard)))
