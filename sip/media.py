"""The audio bridge between a pjsua2 call and its room: a media port fed and drained by queues.

Frame callbacks run on the pjsua2 thread's bridge ticks (sip/bridge_clock.py), every 20 ms
per call, so they only move bytes between the pjmedia frame and a deque. SWIG's ByteVector →
bytes conversion costs ~0.5 ms per frame; reading and writing the vector's storage through its
data pointer costs ~2 µs, which is what makes a hundred calls per box affordable.
"""

from __future__ import annotations

import ctypes
from collections import deque

import pjsua2 as pj

from appliance.core.audio import FRAME_BYTES, FRAME_MS, SAMPLE_RATE

# Frames waiting to be played to the caller: the hub sends one per tick; a small margin
# absorbs scheduling jitter, more would only add latency.
PLAYOUT_MAX_FRAMES = 8


def _data_pointer(vector: pj.ByteVector) -> int:
    # libstdc++'s std::vector starts with its begin pointer; SWIG's `this` is the vector's address.
    return ctypes.c_void_p.from_address(int(vector.this)).value or 0


def read_vector(vector: pj.ByteVector) -> bytes:
    size = vector.size()
    return ctypes.string_at(_data_pointer(vector), size) if size else b""


def write_vector(vector: pj.ByteVector, data: bytes) -> None:
    vector.resize(len(data))
    ctypes.memmove(_data_pointer(vector), data, len(data))


def audio_format() -> pj.MediaFormatAudio:
    fmt = pj.MediaFormatAudio()
    fmt.type = pj.PJMEDIA_TYPE_AUDIO
    fmt.clockRate = SAMPLE_RATE
    fmt.channelCount = 1
    fmt.bitsPerSample = 16
    fmt.frameTimeUsec = FRAME_MS * 1000
    return fmt


class CallMediaPort(pj.AudioMediaPort):
    """One per call: caller audio → `received`; `playout` → caller."""

    def __init__(self) -> None:
        super().__init__()
        # Sent at the hub's next tick; a hub stalled for seconds still gets (and records) them.
        self.received: deque[bytes] = deque(maxlen=250)
        self.playout: deque[bytes] = deque(maxlen=PLAYOUT_MAX_FRAMES)

    def onFrameReceived(self, frame: pj.MediaFrame) -> None:
        if frame.type == pj.PJMEDIA_FRAME_TYPE_AUDIO:
            data = read_vector(frame.buf)
            if len(data) == FRAME_BYTES:
                self.received.append(data)

    def onFrameRequested(self, frame: pj.MediaFrame) -> None:
        if self.playout:
            write_vector(frame.buf, self.playout.popleft())
            frame.size = FRAME_BYTES
            frame.type = pj.PJMEDIA_FRAME_TYPE_AUDIO
        else:
            frame.type = pj.PJMEDIA_FRAME_TYPE_NONE
            frame.size = 0
