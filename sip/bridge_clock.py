"""The conference bridge's clock, ticked on the pjsua2 thread rather than by a pjmedia thread.

With pjsua's null sound device, a pjmedia clock thread of its own ("clock") ticks the bridge
every 20 ms, and each tick encodes and sends every call's RTP (stream.c put_frame →
transport_udp.c transport_send_rtp). pjmedia 2.15 lets that thread send while the pjsua2 thread
tears the same call's media down: transport_send_rtp tests `udp->started`, copies the packet and
only then reads `udp->rtp_key`, while a hang-up (pjsua_media_channel_deinit: stream destroy →
transport detach, started = 0; then transport close, rtp_key = NULL) takes no lock the sender
takes, and the 2.15 bridge removes a call's port only at its next tick. A sender caught between
the two reads passes NULL to pj_ioqueue_sendto, whose `key && op_key && data && length`
assertion aborts the worker: twice in 18,000 soak calls (docs/BENCHMARKS.md). pjproject fixed the
send on its master branch (6a3aa73, #5016), in no release yet. Ticked here, between two rounds of SIP events,
the bridge never runs while pjsua tears a call down (tests/sip/test_media_teardown.py).
"""

from __future__ import annotations

import ctypes
import logging
import math
import time
from pathlib import Path

import pjsua2 as pj

from appliance.core.audio import FRAME_BYTES, FRAME_MS, SAMPLES_PER_FRAME
from appliance.observability.logging import log_extra

__all__ = ["BridgeClock"]

log = logging.getLogger(__name__)

# Late by more than this, the clock starts again from now rather than running every missed tick
# at once (pjmedia's own clock does the same): a burst would only overflow the callers' jitter buffers.
MAX_CATCH_UP_TICKS = 5


class _Frame(ctypes.Structure):
    """pjmedia_frame (pjmedia/frame.h)."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("buf", ctypes.c_void_p),
        ("size", ctypes.c_size_t),
        ("timestamp", ctypes.c_uint64),
        ("bit_info", ctypes.c_uint32),
    ]


def _library() -> ctypes.CDLL:
    # The extension pjsua2 already loaded: dlopen gives back the same copy of pjmedia.
    return ctypes.CDLL(str(next(Path(pj.__file__).parent.glob("_pjsua2*.so"))))


class BridgeClock:
    """Ticks pjsua's conference bridge: `run_due` on the pjsua2 thread, between libHandleEvents calls."""

    def __init__(self, master_port: object):
        # AudDevManager.setNoDev()'s result: the bridge's own pjmedia_port, as SWIG's opaque pointer.
        self._port = ctypes.c_void_p(int(master_port))  # type: ignore[call-overload]
        self._get_frame = _library().pjmedia_port_get_frame
        self._get_frame.argtypes = [ctypes.c_void_p, ctypes.POINTER(_Frame)]
        self._get_frame.restype = ctypes.c_int
        self._buffer = ctypes.create_string_buffer(FRAME_BYTES)
        self._frame = _Frame()
        self._timestamp = 0
        self._period = FRAME_MS / 1000
        self._next = time.monotonic()

    def wait_ms(self, limit_ms: int) -> int:
        """How long libHandleEvents may wait for SIP events before the next tick is due."""
        return max(0, min(limit_ms, math.ceil((self._next - time.monotonic()) * 1000)))

    def run_due(self) -> None:
        """Run the ticks whose time has come."""
        now = time.monotonic()
        if now < self._next:
            return
        late = int((now - self._next) / self._period)
        if late >= MAX_CATCH_UP_TICKS:
            # The pjsua2 thread was busy or starved that long: every call lost that much audio.
            log.warning("bridge clock late; ticks skipped", extra=log_extra(
                late_ms=round((now - self._next) * 1000), skipped=late))
            self._next = now
            late = 0
        for _ in range(late + 1):
            self._tick()
            self._next += self._period

    def _tick(self) -> None:
        # The bridge's get_frame is its whole tick: queued connects and removals, every port's
        # get_frame and put_frame (the calls' RTP out), the mix for slot 0, which nobody hears.
        frame = self._frame
        frame.type = pj.PJMEDIA_FRAME_TYPE_AUDIO
        frame.buf = ctypes.addressof(self._buffer)
        frame.size = FRAME_BYTES
        frame.timestamp = self._timestamp
        frame.bit_info = 0
        self._get_frame(self._port, ctypes.byref(frame))
        self._timestamp += SAMPLES_PER_FRAME
