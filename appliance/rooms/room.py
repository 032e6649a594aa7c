"""A room: participants, their audio tracks, data messages and room events.

Audio is pulled, not pushed: on every 20 ms tick of the hub, each publishing participant
gives at most one frame, and each subscriber receives the mix of everyone else's frames.
Pacing therefore lives in one place (the hub's clock), prompts can be queued whole, and a
recorder sees exactly what each participant heard on the same tick.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from appliance.core.audio import FRAME_BYTES, SILENCE, StandingDelay, frames_of
from appliance.observability.logging import log_extra

log = logging.getLogger(__name__)

RoomListener = Callable[["RoomEvent"], None]


@dataclass(frozen=True)
class RoomEvent:
    kind: str  # joined | left | track_published | dtmf | data | closed
    room: str
    participant: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


class AudioSink(Protocol):
    def push(self, frame: bytes) -> None: ...


class AudioTrack:
    """A participant's published audio: a queue of frames, one consumed per tick.

    `max_frames` bounds the queue for live sources (a SIP leg) so latency cannot grow;
    prompt sources queue whole utterances and leave it unbounded.
    """

    def __init__(self, name: str, max_frames: int | None = None, latency_frames: int | None = None):
        self.name = name
        self._frames: deque[bytes] = deque(maxlen=max_frames)
        # Live sources only: a standing queue above this many frames is trimmed (see StandingDelay).
        self._standing = StandingDelay(latency_frames) if latency_frames is not None else None
        self._marks: deque[tuple[int, Callable[[], None]]] = deque()
        self._pulled = 0
        self._queued = 0
        self.on_cut: Callable[[], None] | None = None  # set by the publisher: `clear` dropped audio
        # Told of every frame as it is written, before the queue may drop it: the call's recording.
        self.arrivals: list[Callable[[bytes], None]] = []

    def write(self, pcm: bytes) -> None:
        for frame in frames_of(pcm):
            self.write_frame(frame)

    def write_frame(self, frame: bytes) -> None:
        self._frames.append(frame)
        self._queued += 1
        for arrived in self.arrivals:
            arrived(frame)

    def mark(self, callback: Callable[[], None]) -> None:
        """Call `callback` once every frame written so far has been played out."""
        self._marks.append((self._queued, callback))
        self._fire_marks()

    def clear(self) -> int:
        """Drop what is queued (barge-in); pending marks fire now. Returns frames dropped."""
        dropped = len(self._frames)
        self._frames.clear()
        self._pulled = self._queued
        self._fire_marks()
        if dropped and self.on_cut is not None:
            self.on_cut()
        return dropped

    @property
    def pending(self) -> int:
        return len(self._frames)

    @property
    def queued_frames(self) -> int:
        """Frames ever written (dropped ones included)."""
        return self._queued

    @property
    def played_frames(self) -> int:
        """Frames ever consumed by the hub's clock (cleared ones count as consumed)."""
        return self._pulled

    def pull(self) -> bytes | None:
        if self._standing is not None:
            for _ in range(self._standing.excess(len(self._frames))):
                self._frames.popleft()
        if not self._frames:
            self._fire_marks()
            return None
        frame = self._frames.popleft()
        self._pulled += 1
        if self._marks:
            self._fire_marks()
        return frame

    def _fire_marks(self) -> None:
        # A bounded queue silently drops its oldest frames; count those as played.
        self._pulled = max(self._pulled, self._queued - len(self._frames))
        while self._marks and self._marks[0][0] <= self._pulled:
            self._marks.popleft()[1]()


class Participant:
    """Anyone in a room: the caller's SIP leg, the flow's voice, a persona, an operator, the recorder."""

    def __init__(self, identity: str, kind: str, *, hidden: bool = False, subscribe: bool = True):
        self.identity = identity
        self.kind = kind
        self.hidden = hidden
        self.subscribe = subscribe
        self.muted = False  # publishes nothing: its frames are taken (so no latency builds up) and dropped
        # Who may hear this participant, as LiveKit's track permissions: None is everyone in the
        # room; a supervisor listening is heard by nobody (empty), whispering by the operator only.
        self.audience: frozenset[str] | None = None
        self.track: AudioTrack | None = None
        self.sink: AudioSink | None = None
        self.room: Room | None = None
        # Frames of its mix this participant was sent and has not heard yet: buffered beyond the hub
        # (a Twilio caller's, reported by the gateway); 0 where the hub's playout is the ear's.
        self.behind_frames = 0

    def publish(self, track: AudioTrack) -> None:
        self.track = track
        track.on_cut = self._cut
        if self.room:
            self.room.emit("track_published", self.identity, {"track": track.name})

    def on_data(self, topic: str, payload: dict[str, Any], sender: str) -> None:
        """Data messages addressed to this participant; override to receive them."""

    def audio_cut(self, speaker: str) -> None:
        """Queued audio of `speaker` was dropped (barge-in); override to drop what is buffered beyond the hub."""

    def _cut(self) -> None:
        if self.room is not None:
            self.room.audio_cut(self.identity)


@dataclass
class TickView:
    """What happened on one tick: each publisher's frame and what each subscriber heard, and
    how many ticks the hub skipped just before this one (it fell far behind; nothing was played)."""

    published: dict[str, bytes]
    heard: dict[str, bytes | None]
    skipped: int = 0


class TickObserver(Protocol):
    def on_tick(self, view: TickView) -> None: ...


class Room:
    def __init__(self, name: str):
        self.name = name
        self.participants: dict[str, Participant] = {}
        self.listeners: list[RoomListener] = []
        self.observers: list[TickObserver] = []
        self.closed = False

    def join(self, participant: Participant) -> None:
        if participant.identity in self.participants:
            raise ValueError(f"{participant.identity} is already in room {self.name}")
        participant.room = self
        self.participants[participant.identity] = participant
        self.emit("joined", participant.identity, {"kind": participant.kind})

    def leave(self, identity: str) -> None:
        participant = self.participants.pop(identity, None)
        if participant:
            participant.room = None
            self.emit("left", identity, {"kind": participant.kind})

    def emit(self, kind: str, participant: str | None = None, data: dict[str, Any] | None = None) -> None:
        event = RoomEvent(kind=kind, room=self.name, participant=participant, data=data or {})
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception:
                log.exception("room listener failed", extra=log_extra(call_id=self.name, event=kind))

    def send_data(self, topic: str, payload: dict[str, Any], sender: str, to: list[str] | None = None) -> None:
        for identity, participant in list(self.participants.items()):
            if identity != sender and (to is None or identity in to):
                participant.on_data(topic, payload, sender)
        self.emit("data", sender, {"topic": topic, "payload": payload})

    def listeners_behind(self, speaker: str) -> int:
        """How far behind the hub's mix the slowest of those hearing `speaker` is, in frames."""
        return max((p.behind_frames for who, p in self.participants.items() if who != speaker and p.subscribe),
                   default=0)

    def audio_cut(self, speaker: str) -> None:
        """`speaker` stopped mid-way (its queue was dropped): tell everyone who was hearing it."""
        for identity, participant in list(self.participants.items()):
            if identity != speaker and participant.subscribe:
                participant.audio_cut(speaker)

    def tick(self, skipped: int = 0) -> None:
        published: dict[str, bytes] = {}
        for identity, participant in self.participants.items():
            if participant.track is not None:
                frame = participant.track.pull()
                if frame is not None and not participant.muted:
                    published[identity] = frame
        heard: dict[str, bytes | None] = {}
        # Who hears whom is decided here, for every kind of participant: each subscriber's mix
        # holds exactly the publishers whose audience admits it (the recorder's "what the caller
        # heard" is the caller's mix, so a whisper is absent from it by construction).
        restricted = {who: a for who in published if (a := self.participants[who].audience) is not None}

        def hears(listener: str, speaker: str) -> bool:
            audience = restricted.get(speaker)
            return speaker != listener and (audience is None or listener in audience)

        for identity, participant in self.participants.items():
            if not participant.subscribe:
                continue
            frame = _mix(f for who, f in published.items() if hears(identity, who))
            heard[identity] = frame
            if frame is not None and participant.sink is not None:
                participant.sink.push(frame)
        if self.observers:
            view = TickView(published=published, heard=heard, skipped=skipped)
            for observer in self.observers:
                observer.on_tick(view)


def _mix(frames: Any) -> bytes | None:
    frames = list(frames)
    if not frames:
        return None
    if len(frames) == 1:
        return frames[0]
    total = np.zeros(FRAME_BYTES // 2, dtype=np.int32)
    for frame in frames:
        total += np.frombuffer(frame, dtype=np.int16)
    return np.clip(total, -32768, 32767).astype(np.int16).tobytes()


__all__ = ["AudioTrack", "Participant", "Room", "RoomEvent", "TickView", "SILENCE"]
