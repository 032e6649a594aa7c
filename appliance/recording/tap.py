"""A live tap on a call's audio: the caller's frames and what the caller heard, as the call's
`CallAudio` pairs them for the recorder (so a tap holds the recording's very frames), queued
for one consumer (a WebSocket client of the API, or a stream a flow started towards a server
of the admin's), as 16 kHz PCM or 8 kHz μ-law, mono or stereo.
While the recording is paused for a card number, the tap hears silence too.
"""

from __future__ import annotations

import asyncio
from typing import Literal

import numpy as np

from appliance.core.audio import SAMPLE_RATE, interleave
from appliance.core.g711 import WIRE_RATE, Outbound
from appliance.recording.timeline import CallAudio
from appliance.rooms.room import RoomEvent

__all__ = ["QUEUE_FRAMES", "AudioTap", "Format", "Track", "header"]

QUEUE_FRAMES = 250  # 5 s: a consumer further behind than this loses the oldest audio
Track = Literal["caller", "heard", "both"]
Format = Literal["pcm16", "mulaw"]


def header(call_id: str, track: Track, fmt: Format) -> dict[str, object]:
    """What a consumer is told first: what the binary messages that follow hold."""
    return {"call": call_id, "track": track, "format": "pcm_s16le" if fmt == "pcm16" else "mulaw",
            "sample_rate": SAMPLE_RATE if fmt == "pcm16" else WIRE_RATE, "channels": 2 if track == "both" else 1,
            "frame_ms": 20}


class AudioTap:
    """Queues a call's paired frames for one consumer."""

    def __init__(self, source: CallAudio, track: Track, fmt: Format):
        self.source = source
        self.track = track
        self.format = fmt
        self.frames: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=QUEUE_FRAMES)
        self.dropped = 0
        self.ended = "call ended"
        self._encoders = [Outbound(), Outbound()]  # one per channel: each filter keeps its own state

    def on_frames(self, left: bytes, right: bytes) -> None:
        pcm = [left, right] if self.track == "both" else [left if self.track == "caller" else right]
        if self.format == "mulaw":
            pcm = [encoder.encode(channel) for encoder, channel in zip(self._encoders, pcm, strict=False)]
        if len(pcm) == 1:
            data = pcm[0]
        else:
            data = interleave(pcm[0], pcm[1], np.uint8 if self.format == "mulaw" else np.int16).tobytes()
        if self.frames.full():
            self.frames.get_nowait()
            self.dropped += 1
        self.frames.put_nowait(data)

    def attach(self) -> None:
        """From the next frame on, the call's audio is queued here; the call's end closes the queue."""
        self.source.consumers.append(self.on_frames)
        self.source.room.listeners.append(self.on_room)

    def detach(self) -> None:
        if self.on_frames in self.source.consumers:
            self.source.consumers.remove(self.on_frames)
        if self.on_room in self.source.room.listeners:
            self.source.room.listeners.remove(self.on_room)

    def on_room(self, event: RoomEvent) -> None:
        if event.kind == "closed":
            self.close("call ended")

    def close(self, why: str) -> None:
        self.ended = why
        if self.frames.full():
            self.frames.get_nowait()
            self.dropped += 1
        self.frames.put_nowait(None)

