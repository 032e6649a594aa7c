"""A caller on Twilio talks to the offline order-desk persona and talks over its long reply:
the reply stops, and the box tells Twilio to drop what it buffered (`clear`).

Over 8 kHz μ-law pocketsphinx hears espeak's questions unreliably ("what about delivery" came
out as "about bill eight where me"), so the persona's every answer to an unclear question (its
fallback) is made long too: whatever it heard, it answers at length, and the caller cuts in.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.appliance import ROOT
from tests.support.media_streams import MediaStreamCall, speech
from tests.support.wait import wait_until_async
from tests.twilio_gateway.conftest import ACCOUNT_SID, TwilioLine

ORDERS = "+15550300"
SECOND = 8000  # μ-law bytes the caller hears in a second
LONG = ("Standard shipping takes three to five business days. Orders placed before noon leave our warehouse the "
        "same day, and you will get an email with a tracking number as soon as the parcel is on its way.")


def _flows(tmp_path: Path) -> Path:
    flows = tmp_path / "flows"
    shutil.copytree(ROOT / "flows", flows)
    persona = flows / "personas" / "orders.yaml"
    text = persona.read_text()
    fallback = "  fallback: Sorry, I did not catch that. You can ask about an order.\n"
    assert fallback in text
    persona.write_text(text.replace(fallback, f"  fallback: {LONG}\n"))
    return flows


def _transcript(line: TwilioLine, call_id: str) -> list[dict[str, Any]]:
    return line.box.call(call_id)["transcript"]


async def test_talking_over_the_personas_reply_clears_twilios_buffer(
        twilio_lines: Callable[..., TwilioLine], tmp_path: Path) -> None:
    line = twilio_lines({ORDERS: "orders"}, personas=1, flows_dir=str(_flows(tmp_path)))
    call_sid, twiml = await line.twilio.voice(line.session, "+15557654321", ORDERS)
    stream = await MediaStreamCall.open(line.session, line.twilio.box_url, call_sid, ACCOUNT_SID)
    await stream.start(twiml.parameters)
    call = await wait_until_async(lambda: next(iter(line.box.calls()), None), "the call record", 20)

    # On cue: the greeting has been said and heard, then the question.
    await wait_until_async(lambda: any(t["role"] == "persona" for t in _transcript(line, call["id"])),
                           "the persona's greeting", 40, detail=line.box.log_tail)
    stream.say(speech("How long does shipping take?"))
    await wait_until_async(lambda: not stream.speaking, "the question to be said", 20)
    asked_at = len(stream.heard)
    # Two seconds into the (ten-second) reply, the caller talks over it.
    await wait_until_async(lambda: len(stream.heard) > asked_at + 2 * SECOND, "the reply to play", 40,
                           detail=line.box.log_tail)
    stream.say(speech("one two three four"))
    await wait_until_async(lambda: [at for at in stream.clears if at > asked_at], "a clear", 20,
                           detail=line.box.log_tail)

    def the_reply() -> dict[str, Any] | None:
        lines = _transcript(line, call["id"])
        asked = next((i for i, t in enumerate(lines) if t["role"] == "caller"), None)
        return next((t for t in lines[asked or len(lines):] if t["role"] == "persona"), None)

    reply = await wait_until_async(the_reply, "the reply in the transcript", 20,
                                   detail=lambda: str(_transcript(line, call["id"])))
    assert reply["interrupted"] == 1, reply
    # The persona's context keeps what the caller heard of its (long) answer, not the whole of it.
    assert LONG.startswith(reply["text"]) and len(reply["text"]) < len(LONG) / 2, reply
    await stream.stop()
    await stream.close()
    record = await wait_until_async(lambda: (c := line.box.call(call["id"]))["ended_at"] and c,
                                    "the record to close", 30)
    assert record["end_reason"] == "caller-hangup"
    # The gateway's Playout reports (from the marks the client said back) were taken by the hub.
    assert "participant cut off" not in line.box.log_path.read_text()
