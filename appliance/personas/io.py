"""Room ↔ AgentSession audio: livekit-agents' AudioInput/AudioOutput over the participant protocol.

The caller's audio arrives from the hub every 20 ms; the persona's replies go to the hub
as fast as TTS makes them and play there at the hub's pace. The hub reports, per reply
segment, how much the caller really heard, which becomes `on_playback_finished` — so an
interrupted reply is truncated in the chat context where the caller stopped hearing it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from livekit import rtc
from livekit.agents.voice.io import AudioInput, AudioOutput, AudioOutputCapabilities

from appliance.core.audio import FRAME_BYTES, SAMPLE_RATE, SAMPLES_PER_FRAME
from appliance.rooms import protocol as p

log = logging.getLogger(__name__)

# Two seconds of caller audio may wait for the session; older audio is dropped, not queued.
INPUT_QUEUE_FRAMES = 100


class HubAudioInput(AudioInput):
    def __init__(self) -> None:
        super().__init__(label="switchboard-hub")
        self._frames: asyncio.Queue[rtc.AudioFrame | None] = asyncio.Queue(maxsize=INPUT_QUEUE_FRAMES)
        self._attached = True

    def on_attached(self) -> None:
        self._attached = True

    def on_detached(self) -> None:
        """The session's input is switched off (a supervisor took the call over): the persona
        hears nothing from now, not even what was queued, as livekit's own room input does."""
        self._attached = False
        while not self._frames.empty():
            if self._frames.get_nowait() is None:
                self._frames.put_nowait(None)  # closed meanwhile: keep the end for the reader
                break

    def push(self, pcm: bytes) -> None:
        if not self._attached:
            return
        frame = rtc.AudioFrame(data=pcm, sample_rate=SAMPLE_RATE, num_channels=1, samples_per_channel=SAMPLES_PER_FRAME)
        if self._frames.full():
            self._frames.get_nowait()
        self._frames.put_nowait(frame)

    def close(self) -> None:
        if self._frames.full():
            self._frames.get_nowait()
        self._frames.put_nowait(None)

    async def __anext__(self) -> rtc.AudioFrame:
        frame = await self._frames.get()
        if frame is None:
            raise StopAsyncIteration
        return frame


class HubAudioOutput(AudioOutput):
    def __init__(self, leg: int, send_audio: Callable[[int, bytes], None], send: Callable[[p.BaseModel], None]):
        super().__init__(label="switchboard-hub", capabilities=AudioOutputCapabilities(pause=False),
                         sample_rate=SAMPLE_RATE)
        self.leg = leg
        self._send_audio = send_audio
        self._send = send
        self._segment = 0
        self._partial = b""
        self._capturing = False
        self._unplayed: set[int] = set()  # segments sent whose playback the hub has not reported
        self._sent_s: dict[int, float] = {}  # seconds of audio sent per segment
        self.last_played: tuple[float, float] = (0.0, 0.0)  # (heard, sent) seconds of the last reply

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await super().capture_frame(frame)
        if not self._capturing:
            # The hub plays what it is sent at its next 20 ms tick: the reply starts now.
            self.on_playback_started(created_at=time.time())
        self._capturing = True
        data = self._partial + bytes(frame.data.cast("B"))
        whole = len(data) // FRAME_BYTES * FRAME_BYTES
        for offset in range(0, whole, FRAME_BYTES):
            self._send_audio(self.leg, data[offset : offset + FRAME_BYTES])
        self._sent_s[self._segment] = self._sent_s.get(self._segment, 0.0) + whole / (2 * SAMPLE_RATE)
        self._partial = data[whole:]
        self._unplayed.add(self._segment)

    def flush(self) -> None:
        super().flush()
        if not self._capturing:
            return
        if self._partial:
            self._send_audio(self.leg, self._partial + bytes(FRAME_BYTES - len(self._partial)))
            self._partial = b""
        self._send(p.SegmentEnd(leg=self.leg, segment=self._segment))
        self._capturing = False
        self._segment += 1

    def clear_buffer(self) -> None:
        self._partial = b""
        if self._unplayed:
            self._send(p.ClearAudio(leg=self.leg, segment=self._segment))  # the hub answers with Played
        if self._capturing:
            self._capturing = False
            self._segment += 1

    def played(self, message: p.Played) -> None:
        """The hub's report for one segment: how much of it the caller heard."""
        log.info("reply played", extra={"fields": {"segment": message.segment, "seconds": message.seconds,
                                                   "interrupted": message.interrupted,
                                                   "known": message.segment in self._unplayed}})
        if message.segment in self._unplayed:
            self._unplayed.discard(message.segment)
            self.last_played = (message.seconds, self._sent_s.pop(message.segment, message.seconds))
            self.on_playback_finished(playback_position=message.seconds, interrupted=message.interrupted)
