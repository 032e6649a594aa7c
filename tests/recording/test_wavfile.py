"""Recordings survive a crash: the header is kept true as the file grows, and repair() fixes the rest."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import struct
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from appliance.recording.wavfile import HEADER_BYTES, WavWriter, repair
from tests.support.disk import fill, small_filesystem

ROOT = Path(__file__).resolve().parents[2]
RATE = 16_000


def _samples(n: int, start: int = 0) -> bytes:
    return (np.arange(start, start + n) % 30000).astype("<i2").tobytes()


def _header_sizes(path: Path) -> tuple[int, int]:
    """(RIFF size, data size) as a player reading the file right now would see them."""
    head = path.read_bytes()[:HEADER_BYTES]
    return struct.unpack_from("<I", head, 4)[0], struct.unpack_from("<I", head, 40)[0]


def _read(path: Path) -> tuple[wave._wave_params, bytes]:
    with wave.open(str(path), "rb") as w:
        return w.getparams(), w.readframes(w.getnframes())


def test_closed_file_is_a_proper_wav(tmp_path: Path):
    path = tmp_path / "sub" / "call.wav"
    writer = WavWriter(path, channels=2, rate=RATE, header_every_bytes=64_000)
    pcm = _samples(2 * RATE)  # one second of stereo
    writer.write(pcm[: len(pcm) // 2])
    writer.write(pcm[len(pcm) // 2 :])
    writer.close()
    writer.close()  # twice is harmless
    params, frames = _read(path)
    assert (params.nchannels, params.sampwidth, params.framerate, params.nframes) == (2, 2, RATE, RATE)
    assert frames == pcm
    assert writer.duration_s == 1.0
    assert repair(path) is False


def test_header_is_kept_true_every_header_every_bytes(tmp_path: Path):
    path = tmp_path / "live.wav"
    writer = WavWriter(path, channels=1, rate=RATE, header_every_bytes=3200)
    try:
        written = 0
        last_header = 0
        for i in range(1, 11):
            writer.write(_samples(500, written // 2))  # 1000 bytes
            written += 1000
            if written - last_header >= 3200:
                last_header = written
            if last_header:  # before the first update the header may still sit in the file buffer
                assert _header_sizes(path) == (36 + last_header, last_header), f"after write {i}"
        # While the writer is still open, a player sees a valid file up to the last header update.
        snapshot = tmp_path / "snapshot.wav"
        shutil.copy(path, snapshot)
        params, frames = _read(snapshot)
        assert params.nframes == last_header // 2 == 4000
        assert frames == _samples(4000)
    finally:
        writer.close()


WRITER_SCRIPT = """
import sys
from pathlib import Path
from appliance.recording.wavfile import WavWriter
path, total, every = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
writer = WavWriter(path, channels=2, rate=16000, header_every_bytes=every)
chunk = bytes(range(256)) * 25  # 6400 bytes: 1600 stereo frames, not a multiple of the buffer size
sent = 0
while sent < total:
    writer.write(chunk)
    sent += len(chunk)
print(sent, writer.data_bytes, flush=True)
sys.stdin.read()  # wait to be killed, the file still open
"""


def _write_then_sigkill(path: Path, total: int, every: int) -> int:
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER_SCRIPT, str(path), str(total), str(every)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
    )
    try:
        line = proc.stdout.readline()
        assert line, "writer process died before writing"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdin.close()
        proc.stdout.close()
    return int(line.split()[0])


@pytest.mark.parametrize("every", [1 << 30, 64_000], ids=["header-never-updated", "header-each-second"])
def test_repair_after_kill_9(tmp_path: Path, every: int):
    path = tmp_path / "crashed.wav"
    sent = _write_then_sigkill(path, total=200_000, every=every)
    on_disk = path.stat().st_size - HEADER_BYTES
    assert 0 < on_disk <= sent
    riff, data = _header_sizes(path)
    assert data < on_disk  # the header lags behind: the unflushed tail and the last partial second

    assert repair(path) is True

    whole_frames = on_disk // 4
    params, frames = _read(path)
    assert (params.nchannels, params.framerate, params.nframes) == (2, 16000, whole_frames)
    chunk = bytes(range(256)) * 25
    assert frames == (chunk * (sent // len(chunk) + 1))[: whole_frames * 4]
    assert path.stat().st_size == HEADER_BYTES + whole_frames * 4
    assert repair(path) is False  # repaired once is good


def test_repair_of_a_good_file_changes_nothing(tmp_path: Path):
    path = tmp_path / "good.wav"
    writer = WavWriter(path, channels=1, rate=RATE, header_every_bytes=1000)
    writer.write(_samples(1234))
    writer.close()
    before = path.read_bytes()
    assert repair(path) is False
    assert path.read_bytes() == before


@pytest.mark.parametrize("channels, extra", [(1, 1), (2, 1), (2, 3)])
def test_repair_truncates_a_partial_trailing_frame(tmp_path: Path, channels: int, extra: int):
    path = tmp_path / "odd.wav"
    writer = WavWriter(path, channels=channels, rate=RATE, header_every_bytes=1 << 30)
    writer.write(_samples(100 * channels))
    writer._file.flush()  # as if the process died here: data on disk, header never updated
    shutil.copy(path, tmp_path / "crashed.wav")
    writer.close()
    crashed = tmp_path / "crashed.wav"
    with open(crashed, "ab") as f:
        f.write(b"\x7f" * extra)  # half a sample (or half a stereo frame) at the end
    assert repair(crashed) is True
    assert crashed.stat().st_size == HEADER_BYTES + 200 * channels
    params, frames = _read(crashed)
    assert params.nframes == 100
    assert frames == _samples(100 * channels)


def test_repair_shrinks_a_header_that_claims_too_much(tmp_path: Path):
    path = tmp_path / "cut.wav"
    writer = WavWriter(path, channels=1, rate=RATE, header_every_bytes=1)
    writer.write(_samples(1000))
    writer.close()
    with open(path, "r+b") as f:
        f.truncate(HEADER_BYTES + 600)  # the disk lost the tail
    assert repair(path) is True
    assert _read(path)[0].nframes == 300


@pytest.mark.parametrize(
    "content",
    [None, b"", b"RIFF", b"not a wav file at all, but long enough to hold a header....", bytes(100)],
    ids=["missing", "empty", "short", "text", "zeros"],
)
def test_repair_leaves_what_is_not_our_wav_alone(tmp_path: Path, content: bytes | None):
    path = tmp_path / "other.wav"
    if content is not None:
        path.write_bytes(content)
    assert repair(path) is False
    if content is not None:
        assert path.read_bytes() == content


def test_repair_leaves_a_header_with_zero_channels_alone(tmp_path: Path):
    path = tmp_path / "zero.wav"
    header = struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36, b"WAVE", b"fmt ", 16, 1, 0, RATE, 0, 0, 16, b"data", 0)
    content = header + bytes(100)
    path.write_bytes(content)
    assert repair(path) is False
    assert path.read_bytes() == content


def test_a_full_disk_costs_the_recording_silence_and_writing_resumes(tmp_path: Path):
    with small_filesystem(tmp_path / "disk", "64k") as disk:
        filler = disk / "filler"
        fill(filler)
        path = disk / "day" / "call.wav"
        writer = WavWriter(path, channels=2, rate=RATE, header_every_bytes=3200)
        assert writer.error is not None and writer.error.errno == errno.ENOSPC  # not even the header fitted
        lost = _samples(1600)
        assert writer.write(lost) is False
        assert writer.error.errno == errno.ENOSPC

        filler.unlink()
        kept = _samples(1600, 1600)
        assert writer.write(kept) is True and writer.error is None
        fill(filler)
        tail = _samples(1600, 3200)
        assert writer.write(tail) is False  # what fitted in the file's last block is kept, the rest lost
        writer.close()

        params, frames = _read(path)
        # The call's whole length, with silence where the disk was full.
        assert (params.nchannels, params.nframes) == (2, 3 * 800)
        assert frames[:6400] == bytes(len(lost)) + kept
        kept_of_tail = len(frames[6400:].rstrip(b"\0"))
        assert kept_of_tail < len(tail) and frames[6400:] == tail[:kept_of_tail] + bytes(len(tail) - kept_of_tail)
        assert writer.duration_s == 3 * 800 / RATE
        assert repair(path) is False


def test_a_recording_whose_file_never_fitted_is_finished_as_silence(tmp_path: Path):
    with small_filesystem(tmp_path / "disk", "64k") as disk:
        filler = disk / "filler"
        fill(filler)
        path = disk / "call.wav"
        writer = WavWriter(path, channels=1, rate=RATE, header_every_bytes=3200)
        assert writer.write(_samples(8000)) is False
        filler.unlink()
        writer.close()
        assert writer.error is None
        params, frames = _read(path)
        assert params.nframes == 8000 and frames == bytes(16000)
