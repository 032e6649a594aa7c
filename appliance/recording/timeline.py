"""A call's audio as it is recorded: the caller's frames as they arrive, what the caller heard
as the hub played it, on one timeline that lasts as long as the call.

The hub's 20 ms clock falls behind on a busy box: it then runs late ticks back to back, or,
far behind, skips them. The caller's live queue in the room drops its oldest frames when it
fills (fresh audio is worth more than old to a listener), and a skipped tick pulls nothing.
Neither may cost the recording, which is evidence: so the caller's side is taken from the
leg as each frame arrives, before that queue, and every tick the hub skipped is written as
silence on the heard side, since nothing was played to the caller then. Both sides advance at
20 ms a frame, by the worker's clock and the hub's, so pairing them frame by frame keeps them
aligned to within the leg's transport jitter.

A pause (a card number is being read, PCI DSS) silences frames as they are taken, the caller's
as they arrive and the heard side's as the hub plays them, not as they are paired: either side
may hold a backlog when the pause ends, and a backlog must not carry the paused stretch's audio
past the resume.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from itertools import repeat

from appliance.core.audio import FRAME_BYTES, FRAME_MS, SILENCE
from appliance.rooms.room import Room, TickView

__all__ = ["CallAudio", "Consumer", "MAX_SKEW_FRAMES"]

# The heard side waits this long (1 s) for the caller's frame of the same instant; a leg that
# sent nothing for longer (held, dead, or its worker busy) is silence on the caller's side.
MAX_SKEW_FRAMES = 50

Consumer = Callable[[bytes, bytes], None]  # (caller frame, heard frame), 20 ms each


class CallAudio:
    """Pairs the caller's frames with what the caller heard and hands each pair to its consumers
    (the recorder, live taps)."""

    def __init__(self, room: Room, caller: str):
        self.room = room
        self.caller = caller
        self.paused = False
        self.consumers: list[Consumer] = []
        self._left: deque[bytes] = deque()
        self._right: deque[bytes] = deque()
        self._leg = room.participants.get(caller)
        self._closed = False
        self._emitted = 0
        if self._leg is not None and self._leg.track is not None:
            self._leg.track.arrivals.append(self._arrived)
        room.observers.append(self)

    def pause(self, paused: bool) -> float:
        """Silence both sides from now on, or stop silencing them. Returns the position in the
        audio (s) from which both sides are silent, or up to which both were."""
        self.paused = paused
        left, right = self._emitted + len(self._left), self._emitted + len(self._right)
        return (max(left, right) if paused else min(left, right)) * FRAME_MS / 1000

    def _arrived(self, frame: bytes) -> None:
        if self.paused or (self._leg is not None and self._leg.muted):
            frame = SILENCE
        elif len(frame) != FRAME_BYTES:
            frame = (frame + SILENCE)[:FRAME_BYTES]
        self._left.append(frame)

    def on_tick(self, view: TickView) -> None:
        if view.skipped:
            self._right.extend(repeat(SILENCE, view.skipped))
        self._right.append(SILENCE if self.paused else (view.heard.get(self.caller) or SILENCE))
        self._pair()

    def _pair(self, final: bool = False) -> None:
        left, right = self._left, self._right
        while right and (left or final or len(right) > MAX_SKEW_FRAMES):
            self._emit(left.popleft() if left else SILENCE, right.popleft())
        if final:
            while left:
                self._emit(left.popleft(), SILENCE)

    def _emit(self, left: bytes, right: bytes) -> None:
        self._emitted += 1
        for consumer in self.consumers:
            consumer(left, right)

    def close(self) -> None:
        """The call ended: hand over what is still unpaired and stop listening."""
        if self._closed:
            return
        self._closed = True
        if self in self.room.observers:
            self.room.observers.remove(self)
        if self._leg is not None and self._leg.track is not None and self._arrived in self._leg.track.arrivals:
            self._leg.track.arrivals.remove(self._arrived)
        self._pair(final=True)
