"""A flow's transfer step on a Media Streams call.

Blind: the box cannot REFER a Twilio call, so it redirects it through Twilio's REST API (here the
loopback stand-in of conftest.py, whose every request is asserted) with TwiML that dials the
destination, and the caller leaves the box. Bridge: the hub dials the destination from a SIP
worker (a real baresip picking up) and the caller on the stream talks to it through the room.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from aiohttp import web

from appliance.speech.stt import phrases_grammar, transcribe
from tests.support import baresip
from tests.support.media_streams import MediaStreamCall, speech
from tests.support.wait import wait_until_async
from tests.twilio_gateway.conftest import (
    ACCOUNT_SID,
    TwilioLine,
    call_resource,
    closed,
    events,
    only_in,
    the_call,
)

CALLER = "+15557654321"
LINE = "+15550400"  # the Twilio number of the line with the transfer step
DESTINATION = "+15550199"
ANNOUNCEMENT = "Connecting you to the billing desk."
UNAVAILABLE = "Sorry, the billing desk cannot take your call."
DESK_SAYS = "Hello, this is the billing desk. How can I help you today?"
CALLER_SAYS = "I have a question about yesterday's electricity invoice."

FLOW = """\
name: desk_line
entry: to_desk
steps:
  to_desk:
    transfer:
      to: "{to}"
      mode: {mode}
      announcement: {announcement}
      timeout: 20
      on_error: desk_unavailable
  desk_unavailable:
    say: {unavailable}
    next: goodbye
  goodbye:
    hangup:
"""


def _line(twilio_lines: Callable[..., TwilioLine], tmp_path: Path, to: str, mode: str,
          **transfers: object) -> TwilioLine:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "desk_line.yaml").write_text(FLOW.format(to=to, mode=mode, announcement=ANNOUNCEMENT,
                                                      unavailable=UNAVAILABLE))
    return twilio_lines({LINE: "desk_line"}, flows_dir=str(flows), transfers={"allowed": [to]} | transfers)


def _calls_path(call_sid: str) -> str:
    return f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{call_sid}.json"


def _form(body: bytes) -> dict[str, list[str]]:
    return parse_qs(body.decode(), strict_parsing=True)


async def _transferred_call(line: TwilioLine, call_sid: str) -> tuple[MediaStreamCall, str]:
    _, twiml = await line.twilio.voice(line.session, CALLER, LINE, call_sid=call_sid)
    stream = await MediaStreamCall.open(line.session, line.twilio.box_url, call_sid, ACCOUNT_SID)
    await stream.start(twiml.parameters)
    return stream, (await the_call(line, call_sid))["id"]


@pytest.mark.parametrize(("to", "dial", "stop"), [
    (DESTINATION, f'<Dial callerId="{LINE}"><Number>{DESTINATION}</Number></Dial>', "after its API answered"),
    ("sip:desk@pbx.example.com", f'<Dial callerId="{LINE}"><Sip>sip:desk@pbx.example.com</Sip></Dial>',
     "after its API answered"),
    (DESTINATION, f'<Dial callerId="{LINE}"><Number>{DESTINATION}</Number></Dial>', "before its API answered"),
])
async def test_a_blind_transfer_redirects_the_twilio_call_to_dial_the_destination(
        twilio_lines: Callable[..., TwilioLine], tmp_path: Path, to: str, dial: str, stop: str) -> None:
    # outbound_proxy is the SIP workers' carrier: a Twilio caller's number is dialled by Twilio.
    line = _line(twilio_lines, tmp_path, to, "refer", outbound_proxy="sip:carrier.example.com")
    call_sid = "CA" + "7" * 32
    answer = asyncio.Event()

    async def redirect(request: web.Request) -> web.Response:
        await answer.wait()
        return await call_resource(request)

    line.rest.answers[_calls_path(call_sid)] = redirect
    stream, call_id = await _transferred_call(line, call_sid)
    await wait_until_async(lambda: line.rest.requests, "the redirect at Twilio's API", 30, detail=line.box.log_tail)
    # Twilio stops the stream of a call it has given new TwiML, maybe before its API answers.
    if stop == "after its API answered":
        answer.set()
        await wait_until_async(lambda: events(line, call_id, "transfer_result"), "the transfer's result", 10)
    await stream.stop()
    await wait_until_async(lambda: stream.closed.done(), "the box to close the stream", 10)
    await stream.close()
    if stop == "before its API answered":
        assert not line.box.call(call_id)["ended_at"], "the call ended before its transfer's outcome was known"
        answer.set()
    record = await closed(line, call_id)

    # One request: the redirect. No hang-up after it, which would cut the transferred call.
    (request,) = line.rest.requests
    assert (request.method, request.path) == ("POST", _calls_path(call_sid))
    assert _form(request.body) == {
        "Twiml": [f'<?xml version="1.0" encoding="UTF-8"?><Response>{dial}</Response>']}
    assert record["end_reason"] == "transferred", record
    assert events(line, call_id, "transfer") == [{"to": to, "mode": "refer"}]
    assert events(line, call_id, "transfer_result") == [{"ok": True, "code": 200}]
    assert [e["reason"] for e in events(line, call_id, "ended")] == ["transferred"]
    assert [s["step"] for s in events(line, call_id, "step")] == ["to_desk"]
    assert [s["text"] for s in events(line, call_id, "say")] == [ANNOUNCEMENT]


async def _refused(request: web.Request) -> web.Response:
    # Twilio's error body, as its API answers a redirect of a call that is not in progress.
    return web.json_response({"code": 21220, "message": "Call is not in-progress. Cannot redirect.",
                              "more_info": "https://www.twilio.com/docs/errors/21220", "status": 400}, status=400)


async def test_a_redirect_twilio_refuses_takes_the_flows_on_error(
        twilio_lines: Callable[..., TwilioLine], tmp_path: Path) -> None:
    line = _line(twilio_lines, tmp_path, DESTINATION, "refer")
    call_sid = "CA" + "8" * 32
    line.rest.answers[_calls_path(call_sid)] = _refused
    stream, call_id = await _transferred_call(line, call_sid)
    # The flow says sorry and hangs up: the stream closes, and the call is ended at Twilio.
    await wait_until_async(lambda: stream.closed.done(), "the box to close the stream", 40, detail=line.box.log_tail)
    await stream.close()
    record = await closed(line, call_id)

    redirect, hangup = line.rest.requests
    assert (redirect.path, list(_form(redirect.body))) == (_calls_path(call_sid), ["Twiml"])
    assert (hangup.path, _form(hangup.body)) == (_calls_path(call_sid), {"Status": ["completed"]})
    assert record["end_reason"] == "flow-hangup", record
    assert events(line, call_id, "transfer_result") == [{"ok": False, "code": 400}]
    variables = {v["name"]: v["value"] for v in events(line, call_id, "variable")}
    assert variables["transfer_error"] == ("400 Twilio error 21220: Unable to update record: Call is not in-progress. "
                                           "Cannot redirect.")
    assert [s["step"] for s in events(line, call_id, "step")] == ["to_desk", "desk_unavailable", "goodbye"]
    assert [s["text"] for s in events(line, call_id, "say")] == [ANNOUNCEMENT, UNAVAILABLE]


def _words(pcm: bytes) -> set[str]:
    return set(transcribe(pcm, phrases_grammar([ANNOUNCEMENT, UNAVAILABLE, DESK_SAYS, CALLER_SAYS])).split())


@pytest.mark.parametrize("who_hangs_up", ["desk", "caller"])
async def test_a_bridge_transfer_joins_the_twilio_caller_and_a_sip_destination(
        twilio_lines: Callable[..., TwilioLine], tmp_path: Path, who_hangs_up: str) -> None:
    with baresip.Softphone(tmp_path / "desk", max_seconds=90, user="desk") as desk:
        to = f"sip:desk@127.0.0.1:{desk.sip_port}"
        line = _line(twilio_lines, tmp_path, to, "bridge")
        stream, call_id = await _transferred_call(line, "CA" + "9" * 32)
        await asyncio.to_thread(desk.wait_incoming, 20)
        await asyncio.to_thread(desk.accept)
        await wait_until_async(lambda: events(line, call_id, "transfer_answered"), "the desk to answer", 20,
                               detail=line.box.log_tail)

        # The desk speaks, then the caller answers; each hears the other through the room.
        desk_speech = baresip.speech_wav(tmp_path / "desk.wav", DESK_SAYS, seconds=100)
        heard_before = len(stream.heard)
        desk.say(desk_speech.path)
        await asyncio.sleep(desk_speech.speech_s + 1)
        caller_speech = speech(CALLER_SAYS)
        stream.say(caller_speech)
        await wait_until_async(lambda: not stream.speaking, "the caller to speak", 20)
        await asyncio.sleep(1.5)

        if who_hangs_up == "desk":
            await asyncio.to_thread(desk.hangup)
            # The box ends the caller's call: its stream closes, and the phone call at Twilio.
            await wait_until_async(lambda: stream.closed.done(), "the box to close the stream", 20,
                                   detail=line.box.log_tail)
        else:
            await stream.stop()
            assert await asyncio.to_thread(desk.wait_closed, 15) != "end of file", desk.output
        await stream.close()
        record = await closed(line, call_id)
        desk_heard = desk.result().heard

    assert record["end_reason"] == "transferred", record
    by = {"desk": {"by": "destination", "reason": "destination-hangup"},
          "caller": {"by": "caller", "reason": "caller-hangup"}}[who_hangs_up]
    assert events(line, call_id, "transfer_ended") == [by]
    assert [r.path for r in line.rest.requests] == ([_calls_path("CA" + "9" * 32)] if who_hangs_up == "desk" else [])
    if line.rest.requests:
        assert _form(line.rest.requests[0].body) == {"Status": ["completed"]}

    # Recognised in windows around each sentence: offline decoding takes twice the audio's length.
    desk_window = (heard_before + round((desk_speech.speech_s + 1) * 8000)) * 4  # μ-law byte → 4 bytes at 16 kHz
    caller_heard = _words(stream.heard_pcm16k()[heard_before * 4:desk_window])
    assert len(caller_heard & only_in(DESK_SAYS, ANNOUNCEMENT, UNAVAILABLE, CALLER_SAYS)) >= 2, caller_heard
    assert desk_heard is not None
    # The call ended within 3 s of the caller's last word: the end of what the desk heard holds it.
    heard_by_desk = _words(baresip.pcm16k(desk_heard)[-round((len(caller_speech) / 8000 + 3) * 32000):])
    assert len(heard_by_desk & only_in(CALLER_SAYS, ANNOUNCEMENT, UNAVAILABLE, DESK_SAYS)) >= 2, heard_by_desk
