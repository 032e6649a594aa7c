"""The shipped support flow walked by speech over a Media Stream: what a caller says (espeak-ng,
μ-law at 8 kHz, as Twilio sends a phone's audio) reaches the menu's choices, and the escalation
lands in the technical queue, where an operator takes the call and the two talk.

The flow is flows/support.yaml as shipped, but open around the clock: its business hours are New
York's, and a test must not pass or fail by the time of day.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml

from appliance.core.g711 import WIRE_RATE, mulaw_decode
from appliance.speech.stt import phrases_grammar, transcribe
from appliance.speech.tts import EspeakTTS
from tests.support.appliance import ROOT
from tests.support.audio import spoken
from tests.support.console import add_user, operator
from tests.support.media_streams import MediaStreamCall, speech
from tests.support.wait import wait_until_async
from tests.twilio_gateway.conftest import ACCOUNT_SID, TwilioLine, closed, events, only_in, the_call

CALLER = "+15557654321"
SUPPORT = "+15550200"
# What a caller answers the main menu with, and where each must take them (the menu's `speech`).
SAID = {
    "billing": "ask_account",
    "I want to pay my bill": "ask_account",
    "technical support please": "technical_queue",
    "my internet is down": "technical_queue",
    "I would like to leave a message": "take_message",
}
# What the caller and the operator say once connected; the others give the recogniser wrong answers.
CALLER_SAYS = "the green light is blinking on my modem"
OPERATOR_SAYS = "please restart your router now"
OTHER = ["please hold", "my bill is wrong", "one moment please", "good morning"]


def _open_all_day(directory: Path) -> Path:
    shutil.copytree(ROOT / "flows", directory)
    support = directory / "support.yaml"
    flow = yaml.safe_load(support.read_text())
    flow["steps"]["check_hours"]["hours"].update(weekly={"mon-sun": ["00:00-24:00"]}, holidays=[])
    support.write_text(yaml.safe_dump(flow, sort_keys=False))
    return directory


def _words(pcm: bytes) -> set[str]:
    return set(transcribe(spoken(pcm), phrases_grammar([CALLER_SAYS, OPERATOR_SAYS, *OTHER])).split())


def _steps(line: TwilioLine, call_id: str) -> list[str]:
    return [e["step"] for e in events(line, call_id, "step")]


async def _menu_call(line: TwilioLine) -> tuple[MediaStreamCall, str]:
    """A caller on the support line, once the main menu's prompt has been said to them."""
    call_sid, twiml = await line.twilio.voice(line.session, CALLER, SUPPORT)
    stream = await MediaStreamCall.open(line.session, line.twilio.box_url, call_sid, ACCOUNT_SID)
    await stream.start(twiml.parameters)
    call_id = (await the_call(line, call_sid))["id"]
    await wait_until_async(lambda: "main_menu" in _steps(line, call_id), "the main menu", 30, detail=line.box.log_tail)
    # On cue: the caller answers once the prompt has played: after speech, half a second of
    # silence or of nothing at all.
    start = len(stream.heard)

    def prompt_over() -> bool:
        heard = mulaw_decode(bytes(stream.heard[start:])).astype(np.float64)
        if len(heard) < 2 * WIRE_RATE or _rms(heard) < 100:
            return False
        return asyncio.get_running_loop().time() - stream.heard_at[-1] > 0.5 or _rms(heard[-WIRE_RATE // 2:]) < 100

    await wait_until_async(prompt_over, "the menu prompt to end", 30, interval=0.2, detail=line.box.log_tail)
    return stream, call_id


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x ** 2)))


async def test_each_spoken_choice_of_the_main_menu_is_heard_over_8_khz(
        twilio_lines: Callable[..., TwilioLine], tmp_path: Path) -> None:
    line = twilio_lines({SUPPORT: "support"}, flows_dir=str(_open_all_day(tmp_path / "flows")))
    reached: dict[str, tuple[str, list[str]]] = {}
    for said in SAID:
        stream, call_id = await _menu_call(line)
        stream.say(speech(said))
        await wait_until_async(lambda c=call_id: len(_steps(line, c)) > 3, f"the menu's choice for {said!r}", 30,
                               detail=line.box.log_tail)
        reached[said] = (_steps(line, call_id)[3], [e["text"] for e in events(line, call_id, "speech")])
        await stream.stop()
        await stream.close()
        await closed(line, call_id)
    # Each at the first try: a miss would be asked again, and a second miss (or silence) also
    # leaves the menu, for technical_queue (or take_message), so the utterances are counted.
    assert {said: (step, len(texts)) for said, (step, texts) in reached.items()} == {
        said: (step, 1) for said, step in SAID.items()}, reached


async def test_a_caller_says_their_way_to_the_technical_queue_and_an_operator_takes_the_call(
        twilio_lines: Callable[..., TwilioLine], tmp_path: Path) -> None:
    line = twilio_lines({SUPPORT: "support"}, rtc_workers=1, flows_dir=str(_open_all_day(tmp_path / "flows")))
    add_user(line.box, "carol", queues="technical")
    carol, _ = await operator(line.box, "carol")
    try:
        stream, call_id = await _menu_call(line)
        stream.say(speech("my internet is down"))
        offer = await carol.recv("offer", timeout=30)
        assert (offer["call"], offer["context"]["queue"], offer["context"]["caller"]) == (
            call_id, "technical", CALLER), offer
        # The ACD's state: the call waits in the technical queue until carol accepts it.
        assert events(line, call_id, "escalated") == [{"queue": "technical"}]
        assert events(line, call_id, "queued") == [{"queue": "technical"}]
        assert line.box.metric('switchboard_queue_callers_waiting{queue="technical"}') == 1

        carol.send({"type": "accept", "offer": offer["offer"]})
        connected = await carol.recv("call", timeout=5)
        assert connected["state"] == "connected", connected
        # They talk: each hears the other through the room (the caller over 8 kHz μ-law both ways).
        carol_heard_from, caller_heard_from = len(carol.heard()), len(stream.heard)
        carol.track.play(EspeakTTS().synthesize(OPERATOR_SAYS))
        stream.say(speech(CALLER_SAYS))
        await asyncio.sleep(5)
        carol_heard = _words(carol.heard()[carol_heard_from:])
        caller_heard = _words(stream.heard_pcm16k()[caller_heard_from * 4:])
        carol.send({"type": "hangup"})
        assert (await carol.recv("call", timeout=5))["state"] == "ended"
        await wait_until_async(lambda: stream.closed.done(), "the box to close the stream", 20)
        await stream.close()
    finally:
        await carol.close()

    record = await closed(line, call_id)
    assert (record["end_reason"], record["operator"]) == ("operator-hangup", "carol"), record
    # Offline recognition of espeak-ng over 8 kHz loses words ("the green light is blinking on my
    # modem" came out as "the the light good blinking on light hold"): two of a sentence's own will do.
    assert len(carol_heard & only_in(CALLER_SAYS, OPERATOR_SAYS, *OTHER)) >= 2, carol_heard
    assert len(caller_heard & only_in(OPERATOR_SAYS, CALLER_SAYS, *OTHER)) >= 2, caller_heard
    assert _steps(line, call_id) == ["check_hours", "welcome", "main_menu", "technical_queue"]
    assert line.box.metric('switchboard_queue_callers_waiting{queue="technical"}') == 0
    # The operator hung up: the phone call is ended at Twilio.
    assert [r.body for r in line.rest.requests] == [b"Status=completed"]
