"""Voicemail: the caller's own audio (mono) written to a file beside the call's recording,
and its record in storage when it ends.
"""

from __future__ import annotations

from pathlib import Path

from appliance.core.audio import SAMPLE_RATE
from appliance.core.clock import iso_now, utcnow
from appliance.recording.converter import RecordingConverter
from appliance.recording.recorder import recording_path
from appliance.recording.wavfile import WavWriter
from appliance.storage import Storage
from appliance.storage.db import StoredAudio


class Voicemail:
    """One message being left; `finish` closes the file and records it."""

    def __init__(self, storage: Storage, call_id: str, root: Path, kind: str,
                 converter: RecordingConverter | None = None):
        self.storage = storage
        self.converter = converter
        self.call_id = call_id
        self.path = recording_path(root, call_id, utcnow(), kind)
        # The header is rewritten every second, so a crash keeps all but the last second.
        self._writer = WavWriter(self.path, channels=1, rate=SAMPLE_RATE, header_every_bytes=SAMPLE_RATE * 2)
        storage.add_event(call_id, "recording_started", {"kind": kind, "path": str(self.path)})

    def push(self, frame: bytes) -> None:
        self._writer.write(frame)

    def finish(self) -> float:
        """Close the file, record it and hand it to the converter; returns its length in seconds."""
        self._writer.close()
        seconds = self._writer.duration_s
        converting = self.converter is not None and self.converter.converting
        recording_id = self.storage.add_recording(self.call_id, "voicemail", str(self.path), round(seconds, 2),
                                                  converting=converting)
        self.storage.add_event(self.call_id, "voicemail", {"path": str(self.path), "seconds": round(seconds, 2)})
        if self.converter is not None:
            self.converter.submit(StoredAudio(self.call_id, "voicemail", str(self.path), recording_id, iso_now()))
        return seconds
