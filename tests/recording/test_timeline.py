"""A call's recording keeps every frame the caller sent and the call's length when the hub is late."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from appliance.core.audio import SAMPLES_PER_FRAME, SILENCE
from appliance.recording.recorder import Recorder
from appliance.recording.timeline import MAX_SKEW_FRAMES, CallAudio
from appliance.rooms.hub import Hub
from appliance.rooms.room import AudioTrack, Participant, Room


def frame(value: int) -> bytes:
    return np.full(SAMPLES_PER_FRAME, value, dtype="<i2").tobytes()


def caller_room(jitter: int = 10) -> tuple[Hub, Room, AudioTrack]:
    hub = Hub()
    room = hub.create_room("CAlate")
    caller = Participant("caller", "sip")
    mic = AudioTrack("caller-mic", max_frames=jitter)
    caller.publish(mic)
    room.join(caller)
    voice = Participant("flow", "flow", subscribe=False)
    room.join(voice)
    voice.publish(AudioTrack("flow-voice"))
    return hub, room, mic


def pairs(audio: CallAudio) -> list[tuple[bytes, bytes]]:
    got: list[tuple[bytes, bytes]] = []
    audio.consumers.append(lambda left, right: got.append((left, right)))
    return got


def test_caller_frames_the_live_queue_dropped_while_the_hub_was_late_are_recorded():
    hub, room, mic = caller_room(jitter=10)
    audio = CallAudio(room, "caller")
    got = pairs(audio)
    # 40 frames arrive while the hub runs no tick (800 ms late); the live queue keeps the last 10.
    for n in range(1, 41):
        mic.write_frame(frame(n))
    assert mic.pending == 10
    hub.tick(skipped=39)  # the hub skipped ahead: 39 ticks were never run
    audio.close()
    left = [np.frombuffer(pair[0], dtype="<i2")[0] for pair in got]
    assert left == list(range(1, 41))
    assert len(got) == 40  # 39 skipped ticks and the one that ran: the call's 800 ms


def test_ticks_the_hub_skipped_are_silence_on_the_heard_side_and_keep_the_length():
    hub, room, mic = caller_room()
    room.participants["flow"].track.write(frame(7) * 5)  # type: ignore[union-attr]
    audio = CallAudio(room, "caller")
    got = pairs(audio)
    mic.write_frame(frame(1))
    hub.tick()
    for n in range(2, 12):
        mic.write_frame(frame(n))
    hub.tick(skipped=9)
    audio.close()
    assert len(got) == 11
    heard = [pair[1] for pair in got]
    assert heard[0] == frame(7)
    assert heard[1:10] == [SILENCE] * 9  # nothing was played during the stall
    assert heard[10] == frame(7)


def test_a_caller_that_sends_nothing_does_not_hold_back_the_heard_side():
    hub, room, _mic = caller_room()
    audio = CallAudio(room, "caller")
    got = pairs(audio)
    for _ in range(MAX_SKEW_FRAMES + 10):
        hub.tick()
    assert len(got) == 10
    assert all(left == SILENCE for left, _ in got)
    audio.close()
    assert len(got) == MAX_SKEW_FRAMES + 10


def test_paused_audio_is_silence_on_both_sides():
    hub, room, mic = caller_room()
    audio = CallAudio(room, "caller")
    got = pairs(audio)
    assert audio.pause(True) == 0.0
    mic.write_frame(frame(4))
    hub.tick()
    assert audio.pause(False) == 0.02
    mic.write_frame(frame(5))
    hub.tick()
    assert got[0] == (SILENCE, SILENCE)
    assert got[1][0] == frame(5)


def test_a_backlog_at_the_resume_carries_nothing_of_the_paused_stretch():
    """The hub is late when the pause ends: caller frames said during the pause are still queued
    for pairing, and heard frames played during it are queued while the caller's lag behind."""
    hub, room, mic = caller_room()
    room.participants["flow"].track.write(frame(7) * 20)  # type: ignore[union-attr]
    audio = CallAudio(room, "caller")
    got = pairs(audio)
    mic.write_frame(frame(1))
    hub.tick()
    assert audio.pause(True) == 0.02
    for n in range(2, 8):  # said while paused; the hub runs no tick meanwhile
        mic.write_frame(frame(n))
    assert audio.pause(False) == 0.02  # the heard side is silent only up to its next tick
    mic.write_frame(frame(8))
    for _ in range(7):
        hub.tick()
    assert [pair[0] for pair in got] == [frame(1)] + [SILENCE] * 6 + [frame(8)]
    assert all(pair[1] == frame(7) for pair in got[1:])

    # And the other way round: heard frames queue up waiting for a caller whose frames lag.
    assert audio.pause(True) == 0.16
    for _ in range(5):
        hub.tick()
    at = audio.pause(False)
    assert at == 0.16  # nothing of the pause's stretch has been paired yet
    for n in range(9, 16):
        mic.write_frame(frame(n))
    hub.tick()
    hub.tick()
    tail = got[8:]
    assert [pair[1] for pair in tail[:5]] == [SILENCE] * 5
    assert [pair[0] for pair in tail[:5]] == [frame(n) for n in range(9, 14)]  # said after the resume
    assert tail[5][1] == frame(7)


def test_the_recording_of_a_late_hub_lasts_as_long_as_the_call(tmp_path: Path):
    hub, room, mic = caller_room()
    recorder = Recorder(room, caller="caller", path=tmp_path / "CAlate.wav")
    for second in range(3):  # three seconds of caller audio; the hub stalls 0.5 s in each
        for n in range(50):
            mic.write_frame(frame(1 + second * 50 + n))
            if n < 25:
                hub.tick()
        hub.tick(skipped=24)
    seconds = recorder.stop()
    assert abs(seconds - 3.0) <= 0.02
    with wave.open(str(tmp_path / "CAlate.wav"), "rb") as w:
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
    firsts = samples[::SAMPLES_PER_FRAME, 0]
    assert list(firsts) == list(range(1, 151))
