"""A WAV file written as it goes, whose header is kept true, and repair of one left by a crash.

The header's sizes are rewritten every second, so after `kill -9` a player sees everything
up to the last second; `repair` makes the header match the data actually on disk. A full disk
costs the recording what it could not write, as silence, never the call.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Callable
from pathlib import Path

_HEADER = struct.Struct("<4sI4s4sIHHIIHH4sI")
HEADER_BYTES = _HEADER.size  # 44


def _header(data_bytes: int, channels: int, rate: int) -> bytes:
    block = channels * 2
    return _HEADER.pack(
        b"RIFF", 36 + data_bytes, b"WAVE", b"fmt ", 16, 1, channels, rate, rate * block, block, 16,
        b"data", data_bytes,
    )


class WavWriter:
    """Writes go straight to the file at their place in the recording (no buffer to lose or to
    half-write). A write the disk refuses (full, over quota, an I/O error) raises nothing: its
    time stays in the file as silence (a hole, where the filesystem has them), `error` holds the
    failure until a write succeeds again, and the call that is being recorded goes on."""

    def __init__(self, path: Path, channels: int, rate: int, header_every_bytes: int):
        self.path = path
        self.channels = channels
        self.rate = rate
        self.data_bytes = 0  # the recording's length so far, whether or not the disk took all of it
        self.error: OSError | None = None  # why the last write failed; None once one succeeds
        self._header_every = header_every_bytes
        self._since_header = 0
        self._file: io.FileIO | None = None
        self._closed = False
        # A crash before the first second still leaves a valid, empty WAV.
        self._attempt(self._update_header)

    def write(self, pcm: bytes) -> bool:
        """Append `pcm`; False if the disk refused it (see `error`)."""
        if self._closed:
            raise ValueError(f"{self.path} is closed")
        offset = HEADER_BYTES + self.data_bytes
        self.data_bytes += len(pcm)
        self._since_header += len(pcm)

        def put() -> None:
            _pwrite_all(self._opened(), pcm, offset)
            if self._since_header >= self._header_every:
                self._update_header()

        return self._attempt(put)

    def _opened(self) -> int:
        """The file's descriptor, created (with its folder) on first use or after a refusal."""
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "wb", buffering=0)
        return self._file.fileno()

    def _update_header(self) -> None:
        os.pwrite(self._opened(), _header(self.data_bytes, self.channels, self.rate), 0)
        self._since_header = 0

    def _attempt(self, action: Callable[[], None]) -> bool:
        try:
            action()
        except OSError as error:
            self.error = error
            return False
        self.error = None
        return True

    def close(self) -> None:
        """Finish the file: as long as the recording (silence where writes failed) with a true header."""
        if self._closed:
            return
        self._closed = True

        def finish() -> None:
            fd = self._opened()
            if os.fstat(fd).st_size < HEADER_BYTES + self.data_bytes:
                os.ftruncate(fd, HEADER_BYTES + self.data_bytes)  # the lost tail, as a hole: no space needed
            self._update_header()

        self._attempt(finish)
        if self._file is not None:
            try:
                self._file.close()
            except OSError as error:
                self.error = error

    @property
    def duration_s(self) -> float:
        return self.data_bytes / (self.rate * self.channels * 2)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    """All of `data` at `offset`: a full disk may take part of it, and then refuse the rest."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def repair(path: Path) -> bool:
    """Make a WAV header agree with the data on disk; True if it had to change."""
    try:
        with open(path, "r+b") as f:
            head = f.read(HEADER_BYTES)
            if len(head) < HEADER_BYTES or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return False
            fields = _HEADER.unpack(head)
            channels, rate = fields[6], fields[7]
            if channels == 0:
                return False  # not a header we wrote: nothing to measure the data against
            size = os.fstat(f.fileno()).st_size
            block = channels * 2
            data_bytes = (size - HEADER_BYTES) // block * block
            if fields[12] == data_bytes and fields[1] == 36 + data_bytes:
                return False
            f.truncate(HEADER_BYTES + data_bytes)
            f.seek(0)
            f.write(_header(data_bytes, channels, rate))
            return True
    except FileNotFoundError:
        return False
