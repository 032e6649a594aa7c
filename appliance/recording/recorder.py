"""The recorder: a hidden room participant that writes a call to a stereo WAV.

Left is the caller, right is everything the caller hears, paired frame by frame by the call's
`CallAudio`, so the file lasts as long as the call even when the hub's clock is late. Paused
(a card number is being read, PCI DSS), both channels are written as silence: the file keeps
the call's timing, and holds nothing of what was said or keyed meanwhile. A disk that refuses
writes (full) costs the recording that stretch, as silence, and is said once in the log until
writing works again.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import numpy as np

from appliance.core.audio import SAMPLE_RATE, interleave
from appliance.observability import metrics
from appliance.observability.logging import log_extra
from appliance.recording.timeline import CallAudio
from appliance.recording.wavfile import WavWriter
from appliance.rooms.room import Participant, Room

log = logging.getLogger(__name__)

FLUSH_TICKS = 25  # write twice a second: a crash loses at most half a second


def recording_path(root: Path, call_id: str, when: dt.datetime, kind: str | None = None) -> Path:
    """Where a call's recording goes, by day: the call itself, or with `kind` a voicemail beside it."""
    name = f"{call_id}-{kind}" if kind else call_id
    return root / f"{when:%Y}" / f"{when:%m}" / f"{when:%d}" / f"{name}.wav"


class Recorder(Participant):
    def __init__(self, room: Room, caller: str, path: Path):
        super().__init__("recorder", kind="recorder", hidden=True, subscribe=False)
        self.caller = caller
        self.path = path
        self._wav = WavWriter(path, channels=2, rate=SAMPLE_RATE, header_every_bytes=SAMPLE_RATE * 4)
        self._pending: list[np.ndarray] = []
        self._room = room
        self._failing = False  # a run of refused writes is logged once, at its first
        room.join(self)
        self.audio = CallAudio(room, caller)
        self.audio.consumers.append(self._write)
        self._check_writes()

    @property
    def paused(self) -> bool:
        return self.audio.paused

    def pause(self, paused: bool) -> float:
        """Pause or resume; the position in the file (s) from which both channels are silence,
        or up to which they were."""
        return self.audio.pause(paused)

    def _write(self, left: bytes, right: bytes) -> None:
        self._pending.append(interleave(left, right))
        if len(self._pending) >= FLUSH_TICKS:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            data = np.concatenate(self._pending).tobytes()
            self._pending = []
            if self._wav.write(data):
                metrics.recordings_bytes.inc(len(data))
            self._check_writes()

    def _check_writes(self) -> None:
        """Count every refused write; log the first of a run of them, and the write that works again."""
        error = self._wav.error
        if error is not None:
            metrics.recording_errors.inc()
            if not self._failing:
                self._failing = True
                log.error("recording write failed; the call goes on, its recording is silent until writing works",
                          extra=log_extra(call_id=self._room.name, path=str(self.path), error=str(error)))
        elif self._failing:
            self._failing = False
            log.warning("recording writes again", extra=log_extra(call_id=self._room.name, path=str(self.path)))

    def stop(self) -> float:
        """Finish the file; returns its duration in seconds."""
        self.audio.close()
        self._flush()
        self._wav.close()
        if self._wav.error is not None:
            self._check_writes()
        return self._wav.duration_s
