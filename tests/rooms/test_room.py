"""A room as the caller experiences it: one frame per 20 ms tick, everyone but yourself in your ear."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from appliance.core.audio import FRAME_BYTES, SAMPLES_PER_FRAME
from appliance.rooms.hub import Hub
from appliance.rooms.room import AudioTrack, Participant, Room, RoomEvent


def frame(value: int) -> bytes:
    return np.full(SAMPLES_PER_FRAME, value, dtype="<i2").tobytes()


def level(pcm: bytes) -> int:
    samples = np.frombuffer(pcm, dtype="<i2")
    assert (samples == samples[0]).all(), "frame is not constant"
    return int(samples[0])


class Ear:
    """A participant's sink: keeps every frame it was given."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def push(self, frame: bytes) -> None:
        self.frames.append(frame)

    @property
    def levels(self) -> list[int]:
        return [level(f) for f in self.frames]


def listener(identity: str, kind: str, room: Room,
             max_frames: int | None = None) -> tuple[Participant, AudioTrack, Ear]:
    participant = Participant(identity, kind)
    participant.sink = Ear()
    room.join(participant)
    track = AudioTrack(f"{identity}-mic", max_frames=max_frames)
    participant.publish(track)
    return participant, track, participant.sink


@pytest.fixture
def room() -> Room:
    return Room("CAroom")


@pytest.fixture
def prompt(room: Room) -> tuple[Participant, AudioTrack]:
    voice = Participant("flow", "flow", subscribe=False)
    room.join(voice)
    track = AudioTrack("flow-voice")
    voice.publish(track)
    return voice, track


def test_caller_hears_the_prompt_one_frame_per_tick(room: Room, prompt):
    _, caller_track, ear = listener("caller", "sip", room, max_frames=10)
    _, voice_track = prompt
    voice_track.write(frame(100) + frame(200) + frame(300))
    for expected in ([100], [100, 200], [100, 200, 300], [100, 200, 300]):
        room.tick()
        assert ear.levels == expected
    assert voice_track.pending == 0


def test_the_mix_excludes_your_own_audio(room: Room, prompt):
    _, caller_track, caller_ear = listener("caller", "sip", room)
    _, op_track, operator_ear = listener("operator", "operator", room)
    _, voice_track = prompt
    caller_track.write_frame(frame(1000))
    op_track.write_frame(frame(30))
    voice_track.write_frame(frame(-200))
    room.tick()
    assert caller_ear.levels == [30 - 200]
    assert operator_ear.levels == [1000 - 200]


def test_two_publishers_are_summed_with_clipping(room: Room, prompt):
    _, caller_track, _ = listener("caller", "sip", room)
    _, operator_track, _ = listener("operator", "operator", room)
    supervisor, _, supervisor_ear = listener("supervisor", "supervisor", room)
    for a, b in [(1000, 2000), (20000, 20000), (-20000, -20000), (32767, -32768)]:
        caller_track.write_frame(frame(a))
        operator_track.write_frame(frame(b))
    for _ in range(4):
        room.tick()
    assert supervisor_ear.levels == [3000, 32767, -32768, -1]


def test_mix_of_varying_samples_clips_each_sample(room: Room):
    _, a, _ = listener("a", "sip", room)
    _, b, _ = listener("b", "sip", room)
    _, _, ear = listener("c", "operator", room)
    ramp = np.linspace(-30000, 30000, SAMPLES_PER_FRAME).astype("<i2")
    a.write_frame(ramp.tobytes())
    b.write_frame(ramp.tobytes())
    room.tick()
    heard = np.frombuffer(ear.frames[0], dtype="<i2")
    assert (heard == np.clip(ramp.astype(np.int32) * 2, -32768, 32767)).all()


def test_nobody_publishing_means_nothing_is_pushed(room: Room):
    _, _, ear = listener("caller", "sip", room)
    room.tick()
    assert ear.frames == []


def test_write_splits_into_frames_padding_the_last(room: Room):
    track = AudioTrack("t")
    track.write(frame(5) + frame(6)[: FRAME_BYTES // 2])
    assert track.pending == 2
    assert level(track.pull()) == 5
    last = np.frombuffer(track.pull(), dtype="<i2")
    assert (last[: SAMPLES_PER_FRAME // 2] == 6).all() and (last[SAMPLES_PER_FRAME // 2 :] == 0).all()
    assert track.pull() is None


def test_mark_fires_once_its_frames_were_played(room: Room, prompt):
    listener("caller", "sip", room)
    _, track = prompt
    fired: list[str] = []
    track.write(frame(1) + frame(2))
    track.mark(lambda: fired.append("first"))
    track.write(frame(3))
    track.mark(lambda: fired.append("second"))
    room.tick()
    assert fired == []
    room.tick()
    assert fired == ["first"]
    room.tick()
    assert fired == ["first", "second"]
    room.tick()
    assert fired == ["first", "second"]  # each mark fires once


def test_mark_on_an_empty_track_fires_at_once():
    track = AudioTrack("t")
    fired = []
    track.mark(lambda: fired.append(True))
    assert fired == [True]


def test_clear_drops_frames_and_fires_pending_marks(room: Room, prompt):
    _, _, ear = listener("caller", "sip", room)
    _, track = prompt
    fired = []
    track.write(frame(7) * 5)
    track.mark(lambda: fired.append("prompt"))
    room.tick()
    assert track.clear() == 4  # barge-in
    assert fired == ["prompt"]
    room.tick()
    assert ear.levels == [7]
    # The track keeps working after a clear.
    track.write_frame(frame(8))
    track.mark(lambda: fired.append("next"))
    room.tick()
    assert ear.levels == [7, 8] and fired == ["prompt", "next"]


class Listening(Participant):
    """A participant that notes whose queued audio was cut (a SIP leg tells its worker)."""

    def __init__(self, identity: str, subscribe: bool = True) -> None:
        super().__init__(identity, "sip", subscribe=subscribe)
        self.cuts: list[str] = []

    def audio_cut(self, speaker: str) -> None:
        self.cuts.append(speaker)


def test_a_cut_reaches_everyone_hearing_the_speaker_and_only_when_audio_was_dropped(room: Room, prompt):
    caller, recorder = Listening("caller"), Listening("recorder", subscribe=False)
    room.join(caller)
    room.join(recorder)
    _, track = prompt
    assert track.clear() == 0  # nothing queued: nothing to cut
    track.write(frame(7) * 5)
    room.tick()
    track.clear()
    assert caller.cuts == ["flow"] and recorder.cuts == []


def test_bounded_track_drops_the_oldest_frames(room: Room):
    _, track, _ = listener("caller", "sip", room, max_frames=2)
    _, _, ear = listener("operator", "operator", room)
    fired = []
    for value in (1, 2, 3, 4):
        track.write_frame(frame(value))
    track.mark(lambda: fired.append(True))
    assert track.pending == 2
    room.tick()
    assert fired == []
    room.tick()
    assert ear.levels == [3, 4]
    assert fired == [True]


def test_room_events_and_data(room: Room):
    seen: list[RoomEvent] = []
    room.listeners.append(seen.append)
    room.listeners.insert(0, lambda e: 1 / 0)  # a broken listener must not stop the others

    received: dict[str, list] = {}

    class Inbox(Participant):
        def on_data(self, topic, payload, sender):
            received.setdefault(self.identity, []).append((topic, payload, sender))

    for name in ("a", "b", "c"):
        room.join(Inbox(name, "operator"))
    with pytest.raises(ValueError):
        room.join(Participant("a", "operator"))
    room.participants["a"].publish(AudioTrack("a-mic"))
    room.send_data("note", {"x": 1}, sender="a")
    room.send_data("whisper", {"y": 2}, sender="a", to=["c"])
    room.leave("b")
    room.leave("nobody")

    assert received == {
        "b": [("note", {"x": 1}, "a")],
        "c": [("note", {"x": 1}, "a"), ("whisper", {"y": 2}, "a")],
    }
    kinds = [(e.kind, e.participant) for e in seen]
    assert kinds == [
        ("joined", "a"), ("joined", "b"), ("joined", "c"), ("track_published", "a"),
        ("data", "a"), ("data", "a"), ("left", "b"),
    ]
    assert seen[3].data == {"track": "a-mic"}
    assert all(e.room == "CAroom" for e in seen)


def test_hub_ticks_every_room_and_closes_rooms():
    hub = Hub()
    one, two = hub.create_room("CA1"), hub.create_room("CA2")
    with pytest.raises(ValueError):
        hub.create_room("CA1")
    _, _, ear_one = listener("caller", "sip", one)
    _, _, ear_two = listener("caller", "sip", two)
    for room in (one, two):
        _, track, _ = listener("bot", "agent", room)
        track.write_frame(frame(9))
    flushed = []
    hub.after_tick.append(lambda: flushed.append(True))
    hub.tick()
    assert ear_one.levels == [9] and ear_two.levels == [9] and flushed == [True]

    events: list[RoomEvent] = []
    one.listeners.append(events.append)
    hub.close_room("CA1")
    hub.close_room("CA1")  # closing twice is harmless
    assert one.closed and one.participants == {}
    assert [e.kind for e in events] == ["left", "left", "closed"]
    assert set(hub.rooms) == {"CA2"}


def test_one_broken_room_does_not_stop_the_others():
    hub = Hub()
    broken = hub.create_room("CAbroken")
    good = hub.create_room("CAgood")

    class Exploding:
        def on_tick(self, view):
            raise RuntimeError("boom")

    broken.observers.append(Exploding())
    _, _, ear = listener("caller", "sip", good)
    _, track, _ = listener("bot", "agent", good)
    track.write_frame(frame(4))
    hub.tick()
    assert ear.levels == [4]


async def test_hub_clock_runs_and_stops():
    hub = Hub()
    room = hub.create_room("CAlive")
    _, _, ear = listener("caller", "sip", room)
    _, track, _ = listener("bot", "agent", room)
    played = asyncio.Event()
    track.write(frame(1) * 3)
    track.mark(played.set)
    hub.start()
    try:
        await asyncio.wait_for(played.wait(), timeout=5)
    finally:
        await hub.stop()
    assert ear.levels == [1, 1, 1]


def test_a_participants_audience_decides_who_hears_it(room: Room) -> None:
    """Listen, whisper, barge: the supervisor's audience is nobody, the operator, everyone."""
    caller, caller_mic, caller_ear = listener("caller", "sip", room)
    operator, operator_mic, operator_ear = listener("operator", "operator", room)
    supervisor, supervisor_mic, supervisor_ear = listener("supervisor", "operator", room)
    views: list = []

    class Recorder:
        def on_tick(self, view) -> None:
            views.append(view)

    room.observers.append(Recorder())
    for audience in (frozenset(), frozenset({"operator"}), None):
        supervisor.audience = audience
        caller_mic.write_frame(frame(1))
        operator_mic.write_frame(frame(10))
        supervisor_mic.write_frame(frame(100))
        room.tick()
    # listen: nobody hears the supervisor; whisper: the operator does; barge: everyone does.
    assert caller_ear.levels == [10, 10, 110]
    assert operator_ear.levels == [1, 101, 101]
    assert supervisor_ear.levels == [11, 11, 11]  # the supervisor hears everyone, always
    # What the recorder keeps as "what the caller heard" never holds a whisper.
    assert [level(v.heard["caller"]) for v in views] == [10, 10, 110]


def test_a_live_track_rides_out_a_burst_and_loses_the_delay_that_stays() -> None:
    track = AudioTrack("browser", max_frames=10, latency_frames=1)
    for i in range(6):  # a burst: six frames at once, then one per tick as the clock pulls
        track.write_frame(frame(i))
    pulled = []
    for i in range(6, 60):
        track.write_frame(frame(i))
        pulled.append(level(track.pull()))
    # Nothing is lost for a whole second (50 pulls); the queue never drained below 7 in it, so
    # that standing delay starts to wear away: one frame (49) is skipped, one a second from now on.
    assert pulled[:49] == list(range(49))
    assert pulled[49:] == list(range(50, 55)) and track.pending == 5
