"""Recording formats through the real appliance: a sipp call stored as Ogg/Opus and as FLAC plays and
lasts the call; kill -9 mid-call leaves a playable WAV that the next start converts."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import urllib.request
import wave
from pathlib import Path
from typing import Any

import pytest

from tests.support.appliance import ApplianceProcess
from tests.support.audio import decoded
from tests.support.sipp.process import run_sipp
from tests.support.sipp.scenarios import caller_scenario
from tests.support.wait import wait_until

pytestmark = pytest.mark.sip

SUFFIX = {"ogg_opus": ".ogg", "flac": ".flac"}
CONTENT_TYPE = {"ogg_opus": "audio/ogg", "flac": "audio/flac"}


def _stored(app: ApplianceProcess, call_id: str, suffix: str) -> dict[str, Any]:
    """The call's record once its recording has been converted."""
    def converted() -> dict[str, Any] | None:
        call = app.call(call_id)
        return call if call["recording_path"].endswith(suffix) else None

    return wait_until(converted, f"the recording converted to {suffix}", 30, interval=0.3, detail=app.log_tail)


def _download(app: ApplianceProcess, call_id: str, target: Path, byte_range: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{app.http_port}/api/calls/{call_id}/recording")
    request.add_header("Authorization", f"Bearer {app.token('supervisor')}")
    if byte_range:
        request.add_header("Range", byte_range)
    with urllib.request.urlopen(request, timeout=10) as response:
        target.write_bytes(response.read())
        return response.status, response.headers["Content-Type"]


@pytest.mark.parametrize("name", ["ogg_opus", "flac"])
def test_a_call_is_stored_in_the_configured_format(appliance_factory, tmp_path: Path, name: str) -> None:
    app = appliance_factory(extra={"recording": {"format": name}})
    result = run_sipp(caller_scenario(tmp_path, "1"), app.sip_port, tmp_path)
    assert result.successful == 1, result.output
    (call,) = app.wait_calls_closed(1)
    record = _stored(app, call["id"], SUFFIX[name])
    assert record["recording_format"] == name
    final = Path(record["recording_path"])
    assert final.exists() and not final.with_suffix(".wav").exists()
    (recorded_s,) = [e["data"]["recorded_s"] for e in record["events"] if e["kind"] == "ended"]
    assert recorded_s > 3

    whole = tmp_path / f"download{SUFFIX[name]}"
    assert _download(app, call["id"], whole) == (200, CONTENT_TYPE[name])
    assert whole.read_bytes() == final.read_bytes()
    channels, rate, audio = decoded(whole)
    assert channels == 2 and abs(len(audio) / rate - recorded_s) <= 0.1
    if name == "flac":  # sox reads FLAC (its "ogg" is Vorbis only)
        soxi = subprocess.run(["soxi", "-D", str(whole)], capture_output=True, text=True, check=True)
        assert abs(float(soxi.stdout) - recorded_s) <= 0.1
    status, _ = _download(app, call["id"], tmp_path / "part", "bytes=0-99")
    assert status == 206 and (tmp_path / "part").read_bytes() == final.read_bytes()[:100]
    metrics = app.get("/metrics").decode()
    assert f'switchboard_recordings_converted_total{{format="{name}"}} 1.0' in metrics


def test_kill_9_mid_call_leaves_a_playable_wav_that_the_next_start_converts(appliance_factory,
                                                                           tmp_path: Path) -> None:
    app = appliance_factory(extra={"recording": {"format": "flac"}})
    caller = threading.Thread(
        target=run_sipp,
        args=(caller_scenario(tmp_path, None, wait_ms=1000, bye_timeout_ms=20000), app.sip_port, tmp_path),
        kwargs={"calls": 1, "timeout": 40},
    )
    caller.start()
    try:
        (call,) = wait_until(lambda: [c for c in app.calls() if c["answered_at"]], "the call to be answered", 10,
                             interval=0.2)
        time.sleep(3)
        assert app.process is not None
        os.kill(app.process.pid, signal.SIGKILL)
        app.process.wait()
        wait_until(lambda: not app.child_pids(), "the workers and the edge to exit", 10, interval=0.2)

        wav = Path(call["recording_path"])
        assert wav.suffix == ".wav"
        # Playable as the crash left it, before any repair: the header is at most a second behind.
        with wave.open(str(wav)) as w:
            assert w.getnchannels() == 2 and w.getnframes() / w.getframerate() > 2.0
        soxi = subprocess.run(["soxi", "-D", str(wav)], capture_output=True, text=True, check=True)
        assert float(soxi.stdout) > 2.0
        on_disk_s = (wav.stat().st_size - 44) // 4 / 16000  # what the restart's repair will keep

        app.start()
        record = _stored(app, call["id"], ".flac")
        assert record["end_reason"] == "appliance-restart"
        flac = Path(record["recording_path"])
        assert flac == wav.with_suffix(".flac") and not wav.exists()
        channels, rate, audio = decoded(flac)
        assert channels == 2 and abs(len(audio) / rate - on_disk_s) <= 0.1
        soxi = subprocess.run(["soxi", "-D", str(flac)], capture_output=True, text=True, check=True)
        assert abs(float(soxi.stdout) - on_disk_s) <= 0.1
    finally:
        caller.join(60)
