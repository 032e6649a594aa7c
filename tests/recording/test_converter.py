"""The converter with its real child process and a real SQLite file: finished recordings end up in the
configured format with their records moved; a crash's leftovers are converted at the next start; a
failed conversion (a damaged file, a full disk) keeps the WAV and the record pointing at it."""

from __future__ import annotations

import datetime as dt
import subprocess
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.config import RecordingConfig, RecordingFormat
from appliance.core.audio import SAMPLE_RATE
from appliance.observability.metrics import REGISTRY
from appliance.recording.converter import RecordingConverter
from appliance.recording.recorder import recording_path
from appliance.recording.voicemail import Voicemail
from appliance.storage import Storage
from appliance.storage.db import StoredAudio
from tests.support.audio import call_recording, decoded

CALL = "CA0123456789abcdef"


def _count(name: str, target: RecordingFormat) -> float:
    return REGISTRY.get_sample_value(name, {"format": target.value}) or 0.0


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[Storage]:
    storage = Storage(tmp_path / "data" / "switchboard.db")
    yield storage
    storage.close()


async def _start_once(storage: Storage, target: RecordingFormat) -> None:
    """A converter's start (which takes up what is left unconverted) until it has tried everything."""
    converter = RecordingConverter(storage, RecordingConfig(format=target))
    converter.start()
    await converter.idle()
    await converter.stop()


def _ended_call(storage: Storage, wav: Path) -> None:
    storage.open_call(CALL, recording_path=str(wav))
    storage.close_call(CALL, "caller-hangup")


@pytest.mark.parametrize("target", [RecordingFormat.OGG_OPUS, RecordingFormat.FLAC])
async def test_what_a_crash_left_as_wav_is_converted_at_start(storage: Storage, tmp_path: Path, target):
    wav = tmp_path / "recordings" / f"{CALL}.wav"
    call_recording(wav, 6.0)
    _ended_call(storage, wav)
    seen: list[tuple[str, str, dict[str, Any]]] = []
    storage.observers.append(lambda *change: seen.append(change))
    before = _count("switchboard_recordings_converted_total", target)
    await _start_once(storage, target)

    record = storage.get_call(CALL)
    assert record is not None and record.recording_path is not None
    final = Path(record.recording_path)
    assert final == wav.with_suffix({"ogg_opus": ".ogg", "flac": ".flac"}[target.value])
    assert not wav.exists() and final.exists()
    channels, rate, audio = decoded(final)
    assert channels == 2 and abs(len(audio) / rate - 6.0) <= 0.1
    assert _count("switchboard_recordings_converted_total", target) == before + 1
    assert seen == [(CALL, "converted:call", {"path": str(final), "duration_s": pytest.approx(6.0, abs=0.1),
                                             "format": target.value})]


async def test_voicemail_is_converted_and_its_row_moved(storage: Storage, tmp_path: Path):
    storage.open_call(CALL)
    converter = RecordingConverter(storage, RecordingConfig(format=RecordingFormat.OGG_OPUS))
    converter.start()
    message = Voicemail(storage, CALL, tmp_path / "recordings", "voicemail", converter)
    speech = call_recording(tmp_path / "speech.wav", 3.0)[:, 0].tobytes()
    for at in range(0, len(speech), 640):
        message.push(speech[at:at + 640])
    assert message.finish() == pytest.approx(3.0)
    await converter.idle()
    await converter.stop()
    (row,) = storage.recordings(CALL)
    assert row["path"] == str(message.path.with_suffix(".ogg"))
    assert not message.path.exists()
    channels, rate, audio = decoded(Path(row["path"]))
    assert channels == 1 and abs(len(audio) / rate - 3.0) <= 0.1


async def test_a_failed_conversion_keeps_the_wav_and_the_record(storage: Storage, tmp_path: Path):
    wav = tmp_path / "recordings" / f"{CALL}.wav"
    wav.parent.mkdir(parents=True)
    wav.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 40)
    _ended_call(storage, wav)
    before = _count("switchboard_recording_conversion_failures_total", RecordingFormat.FLAC)
    await _start_once(storage, RecordingFormat.FLAC)
    assert storage.get_call(CALL).recording_path == str(wav)  # type: ignore[union-attr]
    assert sorted(p.name for p in wav.parent.iterdir()) == [wav.name]
    assert _count("switchboard_recording_conversion_failures_total", RecordingFormat.FLAC) == before + 1


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs: a real full disk (needs root to mount; skipped otherwise)."""
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


async def test_a_full_disk_keeps_the_wav_playable(storage: Storage, small_disk: Path):
    wav = small_disk / f"{CALL}.wav"
    call_recording(wav, 14.0)  # 896 KB of 1 MiB: its FLAC (about 390 KB) cannot fit beside it
    _ended_call(storage, wav)
    before = _count("switchboard_recording_conversion_failures_total", RecordingFormat.FLAC)
    await _start_once(storage, RecordingFormat.FLAC)
    assert storage.get_call(CALL).recording_path == str(wav)  # type: ignore[union-attr]
    assert [p.name for p in small_disk.iterdir()] == [wav.name]  # no partial FLAC left filling the disk
    with wave.open(str(wav)) as w:
        assert w.getnframes() == 14 * SAMPLE_RATE
    assert _count("switchboard_recording_conversion_failures_total", RecordingFormat.FLAC) == before + 1


async def test_a_wav_left_after_the_record_moved_is_removed_at_start(storage: Storage, tmp_path: Path):
    wav = recording_path(tmp_path / "recordings", CALL, dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    call_recording(wav, 2.0)
    _ended_call(storage, wav)
    await _start_once(storage, RecordingFormat.FLAC)
    flac = wav.with_suffix(".flac")
    assert storage.get_call(CALL).recording_path == str(flac)  # type: ignore[union-attr]
    # As if stopped between the last two steps: the record points at the FLAC, the WAV is still there.
    call_recording(wav, 2.0)
    await _start_once(storage, RecordingFormat.FLAC)
    assert not wav.exists() and flac.exists()


async def test_wav_recordings_are_left_alone(storage: Storage, tmp_path: Path):
    wav = tmp_path / "recordings" / f"{CALL}.wav"
    call_recording(wav, 1.0)
    _ended_call(storage, wav)
    converter = RecordingConverter(storage, RecordingConfig())
    converter.start()
    converter.submit(StoredAudio(CALL, "call", str(wav), None, ""))
    await converter.idle()
    await converter.stop()
    assert [p.name for p in wav.parent.iterdir()] == [wav.name]
