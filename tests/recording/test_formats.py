"""Recording formats: a real call recording converted with PyAV plays, keeps both channels and lasts
as long as its WAV; a failed conversion (bad file, disk full) keeps the WAV; a bad format name is refused."""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from appliance.config import Config, RecordingFormat
from appliance.core.audio import SAMPLE_RATE
from appliance.core.errors import ConfigError, RecordingError
from appliance.recording.formats import convert, converted_path, format_of
from tests.support.audio import call_recording, decoded

CONVERTED = [RecordingFormat.OGG_OPUS, RecordingFormat.FLAC]


def _envelope(samples: np.ndarray, rate: int) -> np.ndarray:
    """RMS per 100 ms of one channel: where there is speech, whatever the codec did to the waveform."""
    step = rate // 10
    n = len(samples) // step
    return np.sqrt(np.mean(samples[: n * step].reshape(n, step) ** 2, axis=1))


@pytest.fixture(scope="module")
def call_wav(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    path = tmp_path_factory.mktemp("call") / "CA0123456789abcdef.wav"
    return path, call_recording(path, 20.0)


@pytest.mark.parametrize("target", CONVERTED)
def test_a_converted_call_plays_with_both_channels_and_lasts_the_call(call_wav, tmp_path: Path, target):
    source, samples = call_wav
    wav = tmp_path / source.name
    wav.write_bytes(source.read_bytes())
    done = convert(wav, target, opus_bitrate=24000)
    assert done.path == converted_path(wav, target) and format_of(done.path) is target
    assert wav.exists()  # removing it is the converter's step, after the record moves
    assert not list(tmp_path.glob("*.partial"))

    channels, rate, audio = decoded(done.path)
    assert channels == 2
    assert abs(len(audio) / rate - len(samples) / SAMPLE_RATE) <= 0.1
    assert done.seconds == pytest.approx(len(audio) / rate)
    original = samples.astype(np.float64) / 32768.0
    for side in (0, 1):  # caller left, what the caller heard right, each where it was
        ours, theirs = _envelope(audio[:, side], rate), _envelope(original[:, side], SAMPLE_RATE)
        n = min(len(ours), len(theirs))
        assert np.corrcoef(ours[:n], theirs[:n])[0, 1] > 0.95
    if target is RecordingFormat.FLAC:
        assert rate == SAMPLE_RATE and np.array_equal(np.round(audio * 32768).astype(np.int16), samples)


def test_flac_plays_in_sox_as_long_as_the_wav(call_wav, tmp_path: Path):
    # sox reads FLAC; its "ogg" is Vorbis only, so Ogg/Opus is checked with PyAV above.
    source, samples = call_wav
    wav = tmp_path / source.name
    wav.write_bytes(source.read_bytes())
    flac = convert(wav, RecordingFormat.FLAC, opus_bitrate=24000).path
    info = subprocess.run(["soxi", "-D", str(flac)], capture_output=True, text=True, check=True)
    assert abs(float(info.stdout) - len(samples) / SAMPLE_RATE) <= 0.1
    assert subprocess.run(["soxi", "-c", str(flac)], capture_output=True, text=True, check=True).stdout.strip() == "2"
    back = tmp_path / "back.wav"
    subprocess.run(["sox", str(flac), str(back)], check=True)
    with wave.open(str(back)) as w:
        assert np.array_equal(np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2), samples)


@pytest.mark.parametrize("target", CONVERTED)
def test_a_damaged_wav_is_refused_and_leaves_nothing(tmp_path: Path, target):
    wav = tmp_path / "CAbad.wav"
    wav.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 40)  # a header with no format in it
    with pytest.raises(RecordingError):
        convert(wav, target, opus_bitrate=24000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["CAbad.wav"]


def test_a_bad_format_name_is_a_clear_config_error(tmp_path: Path):
    config = tmp_path / "appliance.yaml"
    config.write_text("recording:\n  format: mp3\n")
    with pytest.raises(ConfigError) as raised:
        Config.load(config)
    message = str(raised.value)
    assert "recording.format" in message and "'wav', 'ogg_opus' or 'flac'" in message


def test_the_format_is_read_from_the_config(tmp_path: Path):
    config = tmp_path / "appliance.yaml"
    config.write_text("recording:\n  format: ogg_opus\n  opus_bitrate: 32000\n")
    loaded = Config.load(config)
    assert loaded.recording.format is RecordingFormat.OGG_OPUS and loaded.recording.opus_bitrate == 32000
