"""A live tap on a call's audio: each hub tick's caller frame and what the caller heard (the
frames the recorder writes), queued for one consumer (a WebSocket client of the API, or a stream
a flow started towards a server of the admin's), as 16 kHz PCM or 8 kHz μ-law, mono or stereo.
While the recording is paused for a card number, the tap hears silence too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from appliance.core.audio import FRAME_BYTES, SAMPLE_RATE, SILENCE, interleave
from appliance.core.g711 import WIRE_RATE, Outbound
from appliance.rooms.room import Room, RoomEvent, TickView

__all__ = ["QUEUE_FRAMES", "AudioTap", "Format", "TapSource", "Track", "header"]

QUEUE_FRAMES = 250  # 5 s: a consumer further behind than this loses the oldest audio
Track = Literal["caller", "heard", "both"]
Format = Literal["pcm16", "mulaw"]


def header(call_id: str, track: Track, fmt: Format) -> dict[str, object]:
    """What a consumer is told first: what the binary messages that follow hold."""
    return {"call": call_id, "track": track, "format": "pcm_s16le" if fmt == "pcm16" else "mulaw",
            "sample_rate": SAMPLE_RATE if fmt == "pcm16" else WIRE_RATE, "channels": 2 if track == "both" else 1,
            "frame_ms": 20}


@dataclass(frozen=True)
class TapSource:
    """A live call as a tap needs it: its room, the caller's identity, and whether the
    recording is paused now."""

    room: Room
    caller: str
    paused: Callable[[], bool]


class AudioTap:
    """A room observer that queues each tick's frames for one consumer."""

    def __init__(self, source: TapSource, track: Track, fmt: Format):
        self.source = source
        self.track = track
        self.format = fmt
        self.frames: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=QUEUE_FRAMES)
        self.dropped = 0
        self.ended = "call ended"
        self._encoders = [Outbound(), Outbound()]  # one per channel: each filter keeps its own state

    def on_tick(self, view: TickView) -> None:
        if self.source.paused():
            left = right = SILENCE
        else:
            left = _frame(view.published.get(self.source.caller))
            right = _frame(view.heard.get(self.source.caller))
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
        """From the next tick on, the call's audio is queued here; the call's end closes the queue."""
        self.source.room.observers.append(self)
        self.source.room.listeners.append(self.on_room)

    def detach(self) -> None:
        if self in self.source.room.observers:
            self.source.room.observers.remove(self)
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


def _frame(pcm: bytes | None) -> bytes:
    if pcm is None:
        return SILENCE
    return pcm if len(pcm) == FRAME_BYTES else (pcm + SILENCE)[:FRAME_BYTES]
