"""A WAV file written as it goes, whose header is kept true, and repair of one left by a crash.

The header's sizes are rewritten every second, so after `kill -9` a player sees everything
up to the last second; `repair` makes the header match the data actually on disk.
"""

from __future__ import annotations

import os
import struct
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
    def __init__(self, path: Path, channels: int, rate: int, header_every_bytes: int):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.channels = channels
        self.rate = rate
        self.data_bytes = 0
        self._header_every = header_every_bytes
        self._since_header = 0
        self._file = open(path, "wb")
        self._file.write(_header(0, channels, rate))
        self._file.flush()  # a crash before the first second still leaves a valid, empty WAV

    def write(self, pcm: bytes) -> None:
        self._file.write(pcm)
        self.data_bytes += len(pcm)
        self._since_header += len(pcm)
        if self._since_header >= self._header_every:
            self._update_header()

    def _update_header(self) -> None:
        self._file.flush()
        os.pwrite(self._file.fileno(), _header(self.data_bytes, self.channels, self.rate), 0)
        self._since_header = 0

    def close(self) -> None:
        if not self._file.closed:
            self._update_header()
            self._file.close()

    @property
    def duration_s(self) -> float:
        return self.data_bytes / (self.rate * self.channels * 2)


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
