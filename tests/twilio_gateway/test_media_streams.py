"""Twilio calls end to end: a signed voice webhook, then a Media Streams socket carrying the call.

A real appliance runs the shipped default flow; the caller is tests.support.media_streams speaking
Twilio's protocol with espeak-ng speech and DTMF events. Twilio's REST API is the loopback stand-in
of conftest.py.
"""

from __future__ import annotations

import base64
import wave
from pathlib import Path

import numpy as np

from appliance.speech.stt import phrases_grammar, transcribe
from tests.support.media_streams import MediaStreamCall, speech
from tests.support.wait import wait_until_async
from tests.twilio_gateway.conftest import ACCOUNT_SID, NUMBER, TwilioLine, closed, events, the_call

CALLER = "+15557654321"
MENU = "For sales, press 1. For support, press 2."


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) if len(x) else 0.0


async def test_the_default_flow_walked_by_keys_hangs_up_through_twilios_api(twilio_line: TwilioLine) -> None:
    line = twilio_line
    call_sid, twiml = await line.twilio.voice(line.session, CALLER, NUMBER)
    assert twiml.stream_url == "wss://switchboard.example.com/twilio/media", twiml.text
    assert {k: v for k, v in twiml.parameters.items() if k != "token"} == {
        "caller": CALLER, "called": NUMBER, "call_sid": call_sid}
    assert len(twiml.parameters["token"]) >= 32

    stream = await MediaStreamCall.open(line.session, line.twilio.box_url, call_sid, ACCOUNT_SID)
    await stream.start(twiml.parameters)
    stream.say(speech("hello I would like to buy something"))
    call = await the_call(line, call_sid)
    # On cue: the menu prompt has begun to play; a key then cuts it (the caller gets a clear).
    await wait_until_async(lambda: {"text": MENU} in events(line, call["id"], "say") and len(stream.heard) > 8000,
                           "the menu prompt", 30, detail=line.box.log_tail)
    await stream.dtmf("1")
    await wait_until_async(lambda: stream.closed.done(), "the box to close the stream", 30,
                           detail=line.box.log_tail)
    await stream.close()

    record = await closed(line, call["id"])
    assert record["end_reason"] == "flow-hangup", record
    assert events(line, call["id"], "dtmf") == [{"digit": "1", "method": "twilio"}]
    steps = [e["step"] for e in events(line, call["id"], "step")]
    assert steps[:3] == ["welcome", "main_menu", "sales"], steps
    assert stream.clears, "the key cut the menu prompt: Twilio must drop what it buffered"
    assert stream.marks, "marks tell the box how far the caller has heard"

    # The flow hung up: the twilio client asked Twilio's API (the stand-in) to end the call.
    (request,) = line.rest.requests
    assert (request.method, request.path) == ("POST", f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{call_sid}.json")
    assert request.body == b"Status=completed", request.body
    assert request.headers["Content-Type"].startswith("application/x-www-form-urlencoded")
    auth = base64.b64encode(f"{ACCOUNT_SID}:{line.twilio.auth_token}".encode()).decode()
    assert request.headers["Authorization"] == f"Basic {auth}"

    # What the caller heard, recognised with only the words the flow can say: the greeting and the
    # reply to the key. (Over 8 kHz μ-law pocketsphinx blurs short words: "sales" comes out as "you".)
    words = transcribe(stream.heard_pcm16k(), phrases_grammar([
        "Welcome to Switchboard.", MENU, "Routing you to sales. Goodbye.", "Routing you to support. Goodbye."])).split()
    assert {"welcome", "switchboard", "routing", "goodbye"} <= set(words), words

    # The recording: left is the caller (the speech it sent), right what it heard.
    with wave.open(record["recording_path"]) as w:
        assert (w.getnchannels(), w.getframerate()) == (2, 16000)
        channels = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).reshape(-1, 2)
    assert _rms(channels[:, 0]) > 300 and _rms(channels[:, 1]) > 300, (_rms(channels[:, 0]), _rms(channels[:, 1]))

    # Twilio's status callback, signed, lands in the call's events.
    status, _ = await line.twilio.post(line.session, "/twilio/status",
                                       {"CallSid": call_sid, "CallStatus": "completed", "CallDuration": "9"})
    assert status == 204
    assert events(line, call["id"], "twilio_status") == [
        {"call_sid": call_sid, "CallStatus": "completed", "CallDuration": "9"}]


async def test_the_callers_stop_ends_the_record_as_caller_hangup(twilio_line: TwilioLine) -> None:
    line = twilio_line
    call_sid, twiml = await line.twilio.voice(line.session, CALLER, NUMBER)
    stream = await MediaStreamCall.open(line.session, line.twilio.box_url, call_sid, ACCOUNT_SID)
    await stream.start(twiml.parameters)
    call = await the_call(line, call_sid)
    await wait_until_async(lambda: events(line, call["id"], "answered"), "the call to be answered", 20)
    await stream.stop()
    # Media after stop: the box has closed the stream; what still arrives changes nothing.
    await stream.send("media", {"media": {"track": "inbound", "payload": base64.b64encode(b"\xff" * 160).decode()}})
    await wait_until_async(lambda: stream.closed.done(), "the box to close the stream", 20)
    await stream.close()
    record = await closed(line, call["id"])
    assert record["end_reason"] == "caller-hangup", record
    assert line.rest.requests == []  # the caller hung up: nothing to end at Twilio
    assert Path(record["recording_path"]).is_file()

    # The signed voice webhook replayed: the call had its stream, so it gets <Hangup/>, and its
    # old token opens nothing.
    _, replayed = await line.twilio.voice(line.session, CALLER, NUMBER, call_sid=call_sid)
    assert replayed.hung_up and replayed.stream_url is None, replayed.text
    again = await MediaStreamCall.open(line.session, line.twilio.box_url, call_sid, ACCOUNT_SID)
    await again.start(twiml.parameters)
    assert await again.close_code() == 1008
    await again.close()
    assert [c["id"] for c in line.box.calls()] == [call["id"]]
