"""What the internet may send the Media Streams socket: each ends in a clear close code and a log
line, never a crash, and never a call record left open."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.support.media_streams import MediaStreamCall, StalledClient, new_sid
from tests.support.wait import wait_until_async
from tests.twilio_gateway.conftest import ACCOUNT_SID, NUMBER, TwilioLine

CALLER = "+15557654321"


async def _open(line: TwilioLine, call_sid: str) -> MediaStreamCall:
    return await MediaStreamCall.open(line.session, line.twilio.box_url, call_sid, ACCOUNT_SID)


async def _all_closed(line: TwilioLine, count: int) -> list[dict[str, Any]]:
    def closed() -> list[dict[str, Any]]:
        calls = line.box.calls()
        return calls if len(calls) == count and all(c["ended_at"] for c in calls) else []

    return await wait_until_async(closed, f"{count} closed call records", 30, detail=line.box.log_tail)


async def _answered(line: TwilioLine) -> dict[str, Any]:
    def answered() -> dict[str, Any] | None:
        for call in line.box.calls():
            if call["answered_at"]:
                return call
        return None

    return await wait_until_async(answered, "the stream's call to be answered", 20, detail=line.box.log_tail)


def _logged(line: TwilioLine, message: str, why: str = "") -> bool:
    return any(message in entry and why in entry for entry in line.box.log_path.read_text().splitlines())


async def test_a_stream_must_start_with_start(twilio_line: TwilioLine) -> None:
    line = twilio_line
    stream = await _open(line, new_sid("CA"))
    await stream.send("media", {"media": {"payload": base64.b64encode(b"\xff" * 160).decode()}})
    assert await stream.close_code() == 1008
    assert _logged(line, "media stream closed", "media before start")
    assert line.box.calls() == []


async def test_a_token_no_signed_webhook_issued_opens_nothing(twilio_line: TwilioLine) -> None:
    line = twilio_line
    stream = await _open(line, new_sid("CA"))
    await stream.start({"caller": CALLER, "called": NUMBER, "token": "made-up"})
    assert await stream.close_code() == 1008
    assert _logged(line, "media stream closed", "not issued by a signed voice webhook")
    assert line.box.calls() == []


async def test_a_token_is_good_once_and_for_its_own_call_only(twilio_line: TwilioLine) -> None:
    line = twilio_line
    call_sid, twiml = await line.twilio.voice(line.session, CALLER, NUMBER)
    other = await _open(line, new_sid("CA"))  # a stream for another call, with this call's token
    await other.start(twiml.parameters)
    assert await other.close_code() == 1008
    assert _logged(line, "media stream closed", "issued for another call")

    first = await _open(line, call_sid)
    await first.start(twiml.parameters)
    await _answered(line)
    replay = await _open(line, call_sid)
    await replay.start(twiml.parameters)
    assert await replay.close_code() == 1008
    await first.stop()
    await first.close()
    (call,) = await _all_closed(line, 1)
    assert call["end_reason"] == "caller-hangup"




# What a broken peer sends once its stream is up: the close code and the reason logged.
BROKEN: dict[str, tuple[Callable[[MediaStreamCall], Awaitable[None]], int, str]] = {
    "malformed JSON": (lambda stream: stream.ws.send_str('{"event": "media", "streamSid": '), 1007,
                       "not a Media Streams message"),
    "binary frame": (lambda stream: stream.ws.send_bytes(b"\xff" * 160), 1003, "binary frame"),
    "oversized frame": (lambda stream: stream.ws.send_str(json.dumps({
        "event": "media", "streamSid": stream.stream_sid, "media": {"payload": "A" * 100_000}})), 1009, ""),
}


@pytest.mark.parametrize("frame", BROKEN)
async def test_a_broken_frame_closes_the_stream_and_the_record(twilio_line: TwilioLine, frame: str) -> None:
    line = twilio_line
    send, code, why = BROKEN[frame]
    call_sid, twiml = await line.twilio.voice(line.session, CALLER, NUMBER)
    stream = await _open(line, call_sid)
    await stream.start(twiml.parameters)
    await _answered(line)
    await send(stream)
    assert await stream.close_code() == code
    (call,) = await _all_closed(line, 1)
    assert call["end_reason"] == "stream-lost"
    assert _logged(line, "media stream closed", why)


async def test_a_socket_that_just_drops_ends_the_record(twilio_line: TwilioLine) -> None:
    line = twilio_line
    call_sid, twiml = await line.twilio.voice(line.session, CALLER, NUMBER)
    stream = await _open(line, call_sid)
    await stream.start(twiml.parameters)
    await _answered(line)
    await stream.close()  # no stop: the connection is simply gone
    (call,) = await _all_closed(line, 1)
    assert call["end_reason"] == "stream-lost"


async def test_a_client_that_stops_reading_is_cut_off(twilio_line: TwilioLine) -> None:
    line = twilio_line
    call_sid, twiml = await line.twilio.voice(line.session, CALLER, NUMBER)
    client = StalledClient(line.box.http_port)
    try:
        client.send_text(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        client.send_text(json.dumps({"event": "start", "streamSid": "MZ1", "start": {
            "accountSid": ACCOUNT_SID, "streamSid": "MZ1", "callSid": call_sid, "customParameters": twiml.parameters,
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}))
        # The flow talks (welcome, the menu, again); nobody reads it.
        (call,) = await _all_closed(line, 1)
    finally:
        client.close()
    assert call["end_reason"] == "stream-lost"
    assert _logged(line, "media stream closed", "client stopped reading")
    health = await asyncio.to_thread(line.box.get, "/healthz", False)
    assert health["calls_active"] == 0


async def test_the_box_still_answers_after_all_of_that(twilio_line: TwilioLine) -> None:
    line = twilio_line
    for payload in (b"\x00\x01", b"not json at all", b"{}"):
        async with line.session.ws_connect(line.twilio.box_url.replace("http", "ws") + "/twilio/media") as ws:
            await ws.send_bytes(payload) if payload.startswith(b"\x00") else await ws.send_str(payload.decode())
            async for _ in ws:
                pass
            assert ws.close_code in (1003, 1007), (payload, ws.close_code)
    call_sid, twiml = await line.twilio.voice(line.session, CALLER, NUMBER)
    stream = await _open(line, call_sid)
    await stream.start(twiml.parameters)
    await _answered(line)
    await stream.stop()
    await stream.close()
    (call,) = await _all_closed(line, 1)
    assert call["end_reason"] == "caller-hangup"
