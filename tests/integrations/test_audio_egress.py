"""Live audio egress over a WebSocket: a baresip caller talks through a call while a client taps
it; what the client received is the call's recording, sample for sample, at the same ticks."""

from __future__ import annotations

import asyncio
import json
import subprocess
import wave
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from appliance.core.g711 import mulaw_decode
from tests.support import baresip
from tests.support.audio import counting_speech
from tests.support.http_server import LoopbackServer
from tests.support.ports import free_port_block
from tests.support.sipp.process import run_sipp
from tests.support.sipp.scenarios import caller_scenario
from tests.support.wait import wait_until

pytestmark = pytest.mark.sip


async def _tap(url: str, token: str) -> tuple[dict[str, Any], bytes, dict[str, Any]]:
    """Header, audio and the closing message of one egress stream."""
    audio = bytearray()
    async with aiohttp.ClientSession() as session, session.ws_connect(
            url, headers={"Authorization": f"Bearer {token}"}) as socket:
        header = json.loads((await socket.receive(timeout=5)).data)
        while True:
            message = await socket.receive(timeout=30)
            if message.type == aiohttp.WSMsgType.BINARY:
                audio += message.data
            elif message.type == aiohttp.WSMsgType.TEXT:
                return header, bytes(audio), json.loads(message.data)
            else:
                raise AssertionError(f"stream ended without its last message: {message}")


async def _status(url: str, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session:
        try:
            async with session.ws_connect(url, headers=headers):
                return 101
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status


async def test_a_live_call_tapped_over_a_websocket_is_its_recording(appliance_factory, tmp_path: Path) -> None:
    app = appliance_factory()
    microphone = counting_speech(tmp_path / "caller.wav", 60)
    base = f"ws://127.0.0.1:{app.http_port}/api/calls"
    with baresip.Softphone(tmp_path / "caller", max_seconds=60) as phone:
        await asyncio.to_thread(phone.dial, f"sip:100@127.0.0.1:{app.sip_port}")
        phone.say(microphone)
        (call,) = await asyncio.to_thread(wait_until, lambda: [c for c in app.calls() if c["answered_at"]],
                                          "the call", 10, 0.2)
        call_id = call["id"]

        # Who may tap it: no token, a token for another call, a bad request, no such call.
        other = await asyncio.to_thread(app.token, "operator")
        assert await _status(f"{base}/{call_id}/audio", None) == 401
        assert await _status(f"{base}/{call_id}/audio", other) == 403
        assert await _status(f"{base}/{call_id}/audio?track=everything", app.token()) == 400
        assert await _status(f"{base}/CA0123456789ab/audio", app.token()) == 404

        stereo = asyncio.create_task(_tap(f"{base}/{call_id}/audio?track=both", app.token()))
        # A per-call grant: a person's token naming this call (appliance token --room).
        grant = app_token_for(app, call_id)
        mulaw = asyncio.create_task(_tap(f"{base}/{call_id}/audio?track=caller&format=mulaw", grant))
        await asyncio.sleep(8)
        phone.hangup()
        (header, audio, end), (mu_header, mu_audio, mu_end) = await asyncio.gather(stereo, mulaw)
    (call,) = app.wait_calls_closed(1, timeout=20)

    assert header == {"call": call_id, "track": "both", "format": "pcm_s16le", "sample_rate": 16000,
                      "channels": 2, "frame_ms": 20}
    assert end == {"event": "ended", "reason": "call ended", "dropped_frames": 0}
    tapped = np.frombuffer(audio, dtype=np.int16).reshape(-1, 2)
    with wave.open(call["recording_path"]) as w:
        recorded = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).reshape(-1, 2)
    # Where in the recording the tap began: the offset at which the caller's channel matches.
    offset = _offset(recorded[:, 0], tapped[:, 0])
    assert offset is not None, "the tapped audio is nowhere in the recording"
    n = min(len(tapped), len(recorded) - offset)
    assert n > 7 * 16000  # most of the 8 s it listened
    assert np.array_equal(tapped[:n], recorded[offset:offset + n]), "the tap differs from the recording"
    assert np.sqrt(np.mean(tapped[:n, 0].astype(np.float64) ** 2)) > 300  # the caller talked throughout

    assert mu_header["format"] == "mulaw" and mu_header["sample_rate"] == 8000 and mu_header["channels"] == 1
    assert mu_end["reason"] == "call ended"
    caller = mulaw_decode(mu_audio).astype(np.float64)
    assert abs(len(caller) / 8000 - len(tapped) / 16000) < 0.5
    assert np.sqrt(np.mean(caller ** 2)) > 300


def app_token_for(app: Any, call_id: str) -> str:
    import sys

    from tests.support.appliance import ROOT

    return subprocess.run(
        [sys.executable, "-m", "appliance.cli", "--config", str(app.config_path), "token", "--identity", "crm",
         "--role", "operator", "--room", call_id],
        check=True, capture_output=True, text=True, cwd=ROOT, env=app.env).stdout.strip()


def _offset(recorded: np.ndarray, tapped: np.ndarray) -> int | None:
    """Sample offset of `tapped` in `recorded`, found where its first loud 20 ms frame recurs exactly."""
    loud = next((i for i in range(0, len(tapped) - 320, 320) if np.abs(tapped[i:i + 320]).max() > 1000), None)
    if loud is None:
        return None
    probe = tapped[loud:loud + 320]
    for start in range(0, len(recorded) - 320 + 1, 320):
        if np.array_equal(recorded[start:start + 320], probe):
            return start - loud
    return None


class AudioServer:
    """The admin's analytics server on loopback: takes WebSocket audio streams, keeps each one."""

    def __init__(self) -> None:
        self.streams: list[dict[str, Any]] = []
        self.http = LoopbackServer({"/audio": self._stream})

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        stream: dict[str, Any] = {"header": None, "audio": bytearray(), "end": None}
        self.streams.append(stream)
        async for message in socket:
            if message.type == aiohttp.WSMsgType.BINARY:
                stream["audio"] += message.data
            elif message.type == aiohttp.WSMsgType.TEXT:
                stream["end" if stream["header"] else "header"] = json.loads(message.data)
        return socket


def _flows(tmp_path: Path, port: int) -> Path:
    flows = tmp_path / "flows"
    flows.mkdir()
    text = (Path(__file__).parent / "flows" / "tapped.yaml").read_text()
    (flows / "tapped.yaml").write_text(text.replace("47999", str(port)))
    return flows


async def test_a_flow_streams_the_call_to_an_allowed_server(appliance_factory, tmp_path: Path) -> None:
    server = AudioServer()
    await server.http.start()
    try:
        url = f"ws://127.0.0.1:{server.http.port}/audio"
        app = appliance_factory(flows_dir=_flows(tmp_path, server.http.port), numbers={"300": "tapped"},
                                extra={"webhooks": {"allowed": [url]}})
        with baresip.Softphone(tmp_path / "caller", max_seconds=60) as phone:
            await asyncio.to_thread(phone.dial, f"sip:300@127.0.0.1:{app.sip_port}")
            phone.say(counting_speech(tmp_path / "caller.wav", 60))
            await asyncio.sleep(8)
            phone.hangup()
        (call,) = await asyncio.to_thread(app.wait_calls_closed, 1, 20)
        await asyncio.to_thread(wait_until, lambda: server.streams and server.streams[0]["end"], "the stream's end", 10)
    finally:
        await server.http.stop()

    (stream,) = server.streams
    assert stream["header"] == {"call": call["id"], "track": "both", "format": "pcm_s16le", "sample_rate": 16000,
                                "channels": 2, "frame_ms": 20}
    assert stream["end"] == {"event": "ended", "reason": "call ended", "dropped_frames": 0}
    tapped = np.frombuffer(bytes(stream["audio"]), dtype=np.int16).reshape(-1, 2)
    with wave.open(call["recording_path"]) as w:
        recorded = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).reshape(-1, 2)
    offset = _offset(recorded[:, 0], tapped[:, 0])
    assert offset is not None and offset < 16000  # it began within the call's first second
    n = min(len(tapped), len(recorded) - offset)
    assert n > 6 * 16000 and np.array_equal(tapped[:n], recorded[offset:offset + n])
    kinds = {e["kind"]: e["data"] for e in app.call(call["id"])["events"]}
    assert kinds["egress_started"] == {"url": url, "track": "both", "format": "pcm16"}
    assert kinds["egress_ended"]["reason"] == "call ended"


async def test_a_server_that_is_down_is_an_event_and_the_call_goes_on(appliance_factory, tmp_path: Path) -> None:
    port = free_port_block(1)  # nobody listens
    url = f"ws://127.0.0.1:{port}/audio"
    app = appliance_factory(flows_dir=_flows(tmp_path, port), numbers={"300": "tapped"},
                            extra={"webhooks": {"allowed": [url]}})
    result = await asyncio.to_thread(run_sipp, caller_scenario(tmp_path, "1"), app.sip_port, tmp_path,
                                     service="300")
    assert result.successful == 1, result.output
    (call,) = await asyncio.to_thread(app.wait_calls_closed, 1, 20)
    (failed,) = [e["data"] for e in app.call(call["id"])["events"] if e["kind"] == "egress_failed"]
    assert failed["url"] == url and failed["after_start"] is False and "Connect" in failed["error"]
    assert call["end_reason"] == "flow-hangup"  # the caller pressed 1 and the flow said goodbye


def test_a_flow_cannot_stream_where_the_allow_list_does_not_say(tmp_path: Path) -> None:
    from appliance.core.errors import FlowError
    from appliance.flow.library import FlowLibrary

    flows = _flows(tmp_path, 47999)
    refused = r"tapped\.yaml:\d+:\d+: egress URL ws://127\.0\.0\.1:47999/audio is not allowed"
    with pytest.raises(FlowError, match=refused):
        FlowLibrary(flows, ["ws://127.0.0.1:48000/"], [])
