"""The recorder: a stereo WAV with the caller on the left and what the caller heard on the right."""

from __future__ import annotations

import datetime as dt
import wave
from pathlib import Path

import numpy as np

from appliance.core.audio import SAMPLE_RATE, SAMPLES_PER_FRAME
from appliance.recording.recorder import FLUSH_TICKS, Recorder, recording_path
from appliance.rooms.hub import Hub
from appliance.rooms.room import AudioTrack, Participant


def frame(value: int) -> bytes:
    return np.full(SAMPLES_PER_FRAME, value, dtype="<i2").tobytes()


class Ear:
    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def push(self, frame: bytes) -> None:
        self.frames.append(frame)


def _channels(path: Path) -> tuple[wave._wave_params, np.ndarray]:
    with wave.open(str(path), "rb") as w:
        params = w.getparams()
        samples = np.frombuffer(w.readframes(params.nframes), dtype="<i2").reshape(-1, 2)
    return params, samples


def test_recording_path_is_dated():
    when = dt.datetime(2026, 3, 7, 12, 0, tzinfo=dt.UTC)
    assert recording_path(Path("/rec"), "CAabc", when) == Path("/rec/2026/03/07/CAabc.wav")


def test_recorder_writes_caller_left_and_what_the_caller_heard_right(tmp_path: Path):
    hub = Hub()
    room = hub.create_room("CArec")
    caller = Participant("caller", "sip")
    caller.sink = Ear()
    room.join(caller)
    mic = AudioTrack("caller-mic", max_frames=50)
    caller.publish(mic)
    voice = Participant("flow", "flow", subscribe=False)
    room.join(voice)
    prompt = AudioTrack("flow-voice")
    voice.publish(prompt)
    operator = Participant("operator", "operator")
    room.join(operator)
    op_mic = AudioTrack("op-mic")
    operator.publish(op_mic)

    path = tmp_path / "2026" / "01" / "01" / "CArec.wav"
    recorder = Recorder(room, caller="caller", path=path)
    assert room.participants["recorder"].hidden

    ticks = FLUSH_TICKS + 7  # one full flush and a partial one left for stop()
    for i in range(ticks):
        mic.write_frame(frame(i + 1))  # the caller speaks on every tick
        if i < 10:
            prompt.write_frame(frame(-(i + 1) * 100))
        if 5 <= i < 15:
            op_mic.write_frame(frame(1000))
        hub.tick()

    duration = recorder.stop()
    assert duration == ticks * 0.02

    params, samples = _channels(path)
    assert (params.nchannels, params.sampwidth, params.framerate) == (2, 2, SAMPLE_RATE)
    assert params.nframes == ticks * SAMPLES_PER_FRAME
    per_tick = samples.reshape(ticks, SAMPLES_PER_FRAME, 2)
    assert (per_tick == per_tick[:, :1, :]).all()  # every frame is constant, so read one sample per tick
    left, right = per_tick[:, 0, 0].tolist(), per_tick[:, 0, 1].tolist()
    assert left == [i + 1 for i in range(ticks)]
    expected_right = []
    for i in range(ticks):
        heard = (-(i + 1) * 100 if i < 10 else 0) + (1000 if 5 <= i < 15 else 0)
        expected_right.append(heard)
    assert right == expected_right
    # The right channel is exactly what reached the caller's ear, tick for tick.
    heard_levels = [int(np.frombuffer(f, dtype="<i2")[0]) for f in caller.sink.frames]
    assert heard_levels == expected_right[:15]  # after tick 15 nobody else speaks: nothing is pushed


def test_recorder_records_silence_when_nobody_speaks_and_stops_cleanly(tmp_path: Path):
    hub = Hub()
    room = hub.create_room("CAquiet")
    caller = Participant("caller", "sip")
    room.join(caller)
    path = tmp_path / "quiet.wav"
    recorder = Recorder(room, caller="caller", path=path)
    for _ in range(3):
        hub.tick()
    assert recorder.stop() == 0.06
    hub.tick()  # after stop, the recorder no longer observes the room
    params, samples = _channels(path)
    assert params.nframes == 3 * SAMPLES_PER_FRAME
    assert not samples.any()
    assert recorder.stop() == 0.06  # stopping twice is harmless
