"""The converter: turns each finished recording's WAV into the configured format, one file at a
time, in a child process (`appliance.recording.formats`), then points its record at the new file
and only then removes the WAV.

Every step leaves something playable: a crash or a failed encoding (encoder error, disk full)
keeps the WAV and the record pointing at it, and the next start converts what is left.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

from appliance.config import RecordingConfig, RecordingFormat
from appliance.core.processes import BACKGROUND_NICE, spawn_module
from appliance.observability import metrics
from appliance.observability.logging import log_extra
from appliance.recording.formats import FORMATS, converted_path, format_of
from appliance.storage import Storage
from appliance.storage.db import StoredAudio

__all__ = ["RecordingConverter"]

log = logging.getLogger(__name__)


class RecordingConverter:
    def __init__(self, storage: Storage, settings: RecordingConfig):
        self.storage = storage
        self.format = settings.format
        self.opus_bitrate = settings.opus_bitrate
        self._queue: asyncio.Queue[StoredAudio] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._process: asyncio.subprocess.Process | None = None

    @property
    def converting(self) -> bool:
        """Whether finished WAVs are replaced (their `recording_ready` waits for the converted file)."""
        return self.format is not RecordingFormat.WAV

    def start(self) -> None:
        """Queue what an earlier run left unconverted (a crash, a failure, a stop), then convert as calls end."""
        if not self.converting:
            return
        for audio in self.storage.audio_of_ended_calls():
            path = Path(audio.path)
            if format_of(path) is RecordingFormat.WAV:
                if path.exists():
                    self._queue.put_nowait(audio)
            elif path.exists() and path.with_suffix(".wav").exists():
                # Stopped between pointing the record at the converted file and removing the WAV.
                path.with_suffix(".wav").unlink()
        self._task = asyncio.get_running_loop().create_task(self._run())

    def submit(self, audio: StoredAudio) -> None:
        """Convert a finished recording (no-op when recordings stay WAV)."""
        if self.converting:
            self._queue.put_nowait(audio)

    async def idle(self) -> None:
        """Wait until every queued recording has been tried."""
        await self._queue.join()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._process is not None and self._process.returncode is None:
            self._process.kill()  # its WAV stays; the next start converts it again
            await self._process.wait()

    async def _run(self) -> None:
        while True:
            audio = await self._queue.get()
            try:
                await self._convert(audio)
            except Exception:  # one bad file must not stop the others; its WAV stays
                log.exception("recording conversion failed", extra=log_extra(call_id=audio.call_id))
                metrics.recording_conversion_failures.labels(self.format.value).inc()
            finally:
                self._queue.task_done()

    async def _convert(self, audio: StoredAudio) -> None:
        wav = Path(audio.path)
        label = self.format.value
        self._process = await spawn_module("appliance.recording.formats",
                                           [str(wav), label, str(self.opus_bitrate)], env={}, capture=True,
                                           nice=BACKGROUND_NICE)
        out, err = await self._process.communicate()
        code, self._process = self._process.returncode, None
        if code != 0:
            log.error("recording kept as WAV: conversion failed",
                      extra=log_extra(call_id=audio.call_id, kind=audio.kind, format=label, exit=code,
                                      error=err.decode(errors="replace").strip()[-500:]))
            metrics.recording_conversion_failures.labels(label).inc()
            return
        result = json.loads(out)
        final = Path(result["path"])
        assert final == converted_path(wav, self.format) and final.suffix == FORMATS[self.format].suffix
        # The record first, then the WAV: a stop between them leaves a WAV the next start removes.
        self.storage.audio_moved(audio, str(final), result["seconds"], label)
        wav.unlink(missing_ok=True)
        metrics.recordings_converted.labels(label).inc()
        metrics.recording_conversion_cpu.labels(label).inc(result["cpu_s"])
        log.info("recording converted", extra=log_extra(call_id=audio.call_id, kind=audio.kind, format=label,
                                                        bytes=result["size"], cpu_s=round(result["cpu_s"], 3)))
