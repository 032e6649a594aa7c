"""A real caller talks to the offline order-desk persona: speech in, a tool call, the answer heard."""

from __future__ import annotations

import asyncio
import shutil
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from appliance.speech.stt import phrases_grammar, transcribe
from appliance.speech.tts import EspeakTTS
from tests.support import baresip, console
from tests.support.appliance import ROOT
from tests.support.audio import utterances
from tests.support.orders_api import OrdersApi
from tests.support.ports import free_port_block

pytestmark = pytest.mark.sip


@pytest.fixture
def orders_api() -> Iterator[OrdersApi]:
    api = OrdersApi()
    with api.http.in_thread():
        yield api


def _flows_with(tmp_path: Path, api: OrdersApi) -> Path:
    flows = tmp_path / "flows"
    shutil.copytree(ROOT / "flows", flows)
    persona = flows / "personas" / "orders.yaml"
    persona.write_text(persona.read_text().replace("http://127.0.0.1:8765/", f"http://127.0.0.1:{api.port}/"))
    return flows


def _microphone(path: Path, script: list[tuple[float, str]], seconds: float) -> None:
    """Speech at given times (s), silence elsewhere, 16 kHz mono: what the caller says when."""
    tts = EspeakTTS()
    pcm = bytearray(int(seconds * 16000) * 2)
    for at, text in script:
        speech = tts.synthesize(text)
        start = int(at * 16000) * 2
        pcm[start : start + len(speech)] = speech
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(bytes(pcm))


def test_caller_checks_an_order_with_the_persona(appliance_factory, orders_api: OrdersApi, tmp_path: Path) -> None:
    app = appliance_factory(
        flows_dir=_flows_with(tmp_path, orders_api),
        numbers={"300": "orders"},
        extra={"webhooks": {"allowed": [f"http://127.0.0.1:{orders_api.port}/", "http://127.0.0.1:8765/"]}},
    )
    microphone = tmp_path / "caller.wav"
    stay = 24
    _microphone(microphone, [(5.0, "I would like to check my order."), (11.0, "one two three four")], stay + 10)
    result = baresip.call(f"sip:300@127.0.0.1:{app.sip_port}", microphone, tmp_path / "baresip", seconds=stay)
    assert result.established, result.output

    (call,) = app.wait_calls_closed(1, timeout=40)
    record = app.call(call["id"])
    transcript = [(t["role"], t["text"]) for t in record["transcript"]]
    assert orders_api.requests == [{"path": "/orders/lookup", "body": {"order": "1234"}}], (transcript, app.log_tail())
    persona_lines = [text for role, text in transcript if role == "persona"]
    assert any("Order 1234 is shipped" in line for line in persona_lines), transcript
    assert any(role == "caller" and "order" in text for role, text in transcript), transcript
    tools = [e["data"]["name"] for e in record["events"] if e["kind"] == "tool"]
    assert "lookup_order" in tools
    # Each caller turn the persona answered is one measurement of its turn latency.
    metrics = app.get("/metrics").decode()
    (count,) = [float(line.split()[1]) for line in metrics.splitlines()
                if line.startswith("switchboard_persona_turn_seconds_count ")]
    assert 1 <= count <= sum(role == "caller" for role, _ in transcript), (count, transcript)

    # The caller really heard the answer: transcribe what baresip received, reply by reply.
    grammar = phrases_grammar(["hello this is the acme order desk how can i help you",
                               "sure what is your order number", "order one two three four is shipped",
                               "is there anything else"])
    replies = [transcribe(chunk, grammar) for chunk in utterances(baresip.pcm16k(result.heard), gap_s=0.4)]
    assert any("shipped" in reply.split() for reply in replies), replies


def _with_console(appliance_factory: Any, api: OrdersApi, tmp_path: Path, person: str, role: str,
                  queues: str = "") -> Any:
    """The order-desk appliance with a WebRTC gateway and one console account."""
    app = appliance_factory(
        flows_dir=_flows_with(tmp_path, api), rtc_workers=1,
        extra={"webhooks": {"allowed": [f"http://127.0.0.1:{api.port}/", "http://127.0.0.1:8765/"]}},
    )
    console.add_user(app, person, role=role, queues=queues)
    return app


def _events(app: Any, call_id: str, kind: str) -> list[dict[str, Any]]:
    return [e["data"] for e in app.call(call_id)["events"] if e["kind"] == kind]


def test_caller_who_asks_for_a_person_leaves_the_persona_for_the_queue(
        appliance_factory, orders_api: OrdersApi, tmp_path: Path) -> None:
    app = appliance_factory(
        flows_dir=_flows_with(tmp_path, orders_api),
        extra={"webhooks": {"allowed": [f"http://127.0.0.1:{orders_api.port}/", "http://127.0.0.1:8765/"]}},
    )
    microphone = tmp_path / "caller.wav"
    _microphone(microphone, [(5.0, "Can I talk to someone please.")], 26)
    result = baresip.call(f"sip:300@127.0.0.1:{app.sip_port}", microphone, tmp_path / "baresip", seconds=14)
    assert result.established, result.output
    (call,) = app.wait_calls_closed(1, timeout=40)
    assert _events(app, call["id"], "persona_ended")[0]["exit"] == "human"
    assert _events(app, call["id"], "escalated") == [{"queue": "technical"}]
    steps = [s["step"] for s in _events(app, call["id"], "step")]
    assert steps[:2] == ["assistant", "to_person"], steps
    assert any(t["name"] == "escalate" for t in _events(app, call["id"], "tool"))


def test_a_failing_provider_takes_the_failed_branch_without_silence(
        appliance_factory, orders_api: OrdersApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flows = _flows_with(tmp_path, orders_api)
    persona = flows / "personas" / "orders.yaml"
    dead = free_port_block(1)  # nothing listens here: the "hosted" LLM is down
    persona.write_text(persona.read_text().replace(
        "  llm: {name: scripted}",
        f"  llm: {{name: openai, options: {{base_url: 'http://127.0.0.1:{dead}/v1', model: m, "
        "api_key_env: TEST_LLM_KEY}}"))
    monkeypatch.setenv("TEST_LLM_KEY", "not-a-real-key")
    app = appliance_factory(
        flows_dir=flows,
        extra={"webhooks": {"allowed": [f"http://127.0.0.1:{orders_api.port}/", "http://127.0.0.1:8765/"]}},
    )
    microphone = tmp_path / "caller.wav"
    _microphone(microphone, [(5.0, "I would like to check my order.")], 30)
    result = baresip.call(f"sip:300@127.0.0.1:{app.sip_port}", microphone, tmp_path / "baresip", seconds=18)
    assert result.established, result.output
    (call,) = app.wait_calls_closed(1, timeout=40)
    ended = _events(app, call["id"], "persona_ended")
    assert ended and ended[0]["exit"] == "failed", ended
    says = [(e["at"], e["data"]["text"]) for e in app.call(call["id"])["events"] if e["kind"] == "say"]
    ended_at = next(e["at"] for e in app.call(call["id"])["events"] if e["kind"] == "persona_ended")
    fallback = [at for at, text in says if text.startswith("Sorry, I am having trouble")]
    assert fallback, says
    gap = console.epoch(fallback[0]) - console.epoch(ended_at)
    assert gap < 2.0  # the caller is never left in silence
    steps = [s["step"] for s in _events(app, call["id"], "step")]
    assert steps[:2] == ["assistant", "to_person"], steps


def _shipping_question_with(appliance_factory, orders_api: OrdersApi, tmp_path: Path, *, at: float, said: str,
                            seconds: float) -> tuple[dict[str, Any], Callable[[float, float], float]]:
    """Ask how long shipping takes (a long reply), say `said` at `at` s over it; the persona's
    transcript of the reply and the RMS of what the caller heard (the recording's right channel)."""
    app = appliance_factory(
        flows_dir=_flows_with(tmp_path, orders_api),
        extra={"webhooks": {"allowed": [f"http://127.0.0.1:{orders_api.port}/", "http://127.0.0.1:8765/"]}},
    )
    microphone = tmp_path / "caller.wav"
    _microphone(microphone, [(5.0, "How long does shipping take?"), (at, said)], seconds + 8)
    result = baresip.call(f"sip:300@127.0.0.1:{app.sip_port}", microphone, tmp_path / "baresip", seconds=seconds)
    assert result.established, result.output
    (call,) = app.wait_calls_closed(1, timeout=40)
    record = app.call(call["id"])
    shipping = [t for t in record["transcript"] if t["role"] == "persona" and "shipping" in t["text"]]
    assert shipping, record["transcript"]
    with wave.open(call["recording_path"]) as w:
        stereo = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).reshape(-1, 2)
    heard = stereo[:, 1].astype(np.float64)

    def rms(start: float, end: float) -> float:
        part = heard[int(start * 16000) : int(end * 16000)]
        return float(np.sqrt(np.mean(part**2))) if len(part) else 0.0

    return shipping[0], rms


def test_caller_talking_over_a_long_reply_stops_it(appliance_factory, orders_api: OrdersApi, tmp_path: Path) -> None:
    barge_at = 12.0
    reply, rms = _shipping_question_with(appliance_factory, orders_api, tmp_path, at=barge_at,
                                         said="one two three four", seconds=20)

    assert reply["interrupted"] == 1, reply
    # What the context keeps is what the caller heard, not the whole reply.
    assert "Express shipping" not in reply["text"], reply
    # On the wire: the reply was playing, and stopped while the caller was still talking
    # (their 1.3 s of digits; the answer to them may follow right after).
    assert rms(barge_at - 2.0, barge_at) > 500
    assert rms(barge_at + 0.8, barge_at + 1.2) < 100


def test_a_short_back_channel_does_not_cut_the_reply_off(
    appliance_factory, orders_api: OrdersApi, tmp_path: Path
) -> None:
    # "uh" is about 0.3 s of speech to silero (0.45 s by the time it has crossed G.722), under
    # the persona's interruption.min_duration of 0.5 s.
    back_channel_at = 10.0
    reply, rms = _shipping_question_with(appliance_factory, orders_api, tmp_path, at=back_channel_at,
                                         said="uh", seconds=26)

    assert reply["interrupted"] == 0, reply
    assert "Express shipping takes one to two days." in reply["text"], reply
    # The reply went on playing through and after the back-channel (it pauses between words
    # only: a window of 1 s is never silent inside speech).
    for start in np.arange(back_channel_at - 1.0, back_channel_at + 3.0, 0.5):
        assert rms(start, start + 1.0) > 300, start


def test_order_desk_hands_a_billing_question_to_the_billing_persona(
        appliance_factory, orders_api: OrdersApi, tmp_path: Path) -> None:
    app = appliance_factory(
        flows_dir=_flows_with(tmp_path, orders_api),
        extra={"webhooks": {"allowed": [f"http://127.0.0.1:{orders_api.port}/", "http://127.0.0.1:8765/"]}},
    )
    microphone = tmp_path / "caller.wav"
    _microphone(microphone, [(5.0, "I have a question about my bill."), (11.0, "What is my balance?")], 30)
    result = baresip.call(f"sip:300@127.0.0.1:{app.sip_port}", microphone, tmp_path / "baresip", seconds=18)
    assert result.established, result.output
    (call,) = app.wait_calls_closed(1, timeout=40)
    record = app.call(call["id"])
    assert any(e["kind"] == "tool" and e["data"]["name"] == "handoff" for e in record["events"])
    billing = [t["text"] for t in record["transcript"] if t["speaker"] == "billing"]
    assert any("Your balance is zero dollars" in text for text in billing), record["transcript"]


async def test_a_persona_escalation_reaches_an_operator_with_its_transcript_and_summary(
        appliance_factory, orders_api: OrdersApi, tmp_path: Path) -> None:
    app = _with_console(appliance_factory, orders_api, tmp_path, "carol", "operator", queues="technical")
    carol, _ = await console.operator(app, "carol")
    try:
        microphone = tmp_path / "caller.wav"
        _microphone(microphone, [(5.0, "Can I talk to someone please.")], 40)
        with baresip.Softphone(tmp_path / "caller", max_seconds=60) as phone:
            phone.dial(f"sip:300@127.0.0.1:{app.sip_port}")
            phone.say(microphone)
            offer = await carol.recv("offer", timeout=30)
            context = offer["context"]
            assert context["queue"] == "technical" and context["path"][:2] == ["assistant", "to_person"], context
            said = [(line["role"], line["text"].lower()) for line in context["transcript"]]
            assert any(role == "caller" and "someone" in text for role, text in said), said
            assert any(role == "persona" for role, _ in said), said
            assert "orders handed over (human)" in context["summary"], context["summary"]
            carol.send({"type": "accept", "offer": offer["offer"]})
            assert (await carol.recv("call", timeout=5))["state"] == "connected"
            carol.send({"type": "hangup"})
            await carol.recv("wrap_up_due", timeout=5)
    finally:
        await carol.close()
    (call,) = app.wait_calls_closed(1, timeout=20)
    assert call["operator"] == "carol" and call["end_reason"] == "operator-hangup"


async def test_a_supervisor_takes_a_call_over_from_the_persona_mid_sentence(
        appliance_factory, orders_api: OrdersApi, tmp_path: Path) -> None:
    app = _with_console(appliance_factory, orders_api, tmp_path, "sam", "supervisor")
    sam, _ = await console.operator(app, "sam", available=False)
    caller_speech = baresip.speech_wav(tmp_path / "caller.wav", "please check my account", seconds=40)
    question = baresip.speech_wav(tmp_path / "question.wav", "how long does shipping take", seconds=40)
    try:
        with baresip.Softphone(tmp_path / "caller", max_seconds=60) as phone:
            await asyncio.to_thread(phone.dial, f"sip:300@127.0.0.1:{app.sip_port}")
            board = await sam.board_until(  # the wallboard shows the persona on the call
                lambda b: [c["on_call"] for c in b["calls"]] == [["persona:orders"]], timeout=15)
            row = board["calls"][0]
            sam.send({"type": "join", "call": row["call"], "mode": "listen"})
            await sam.recv("joined")
            # Listening, the supervisor hears the persona's greeting begin; take over in mid-sentence.
            while _rms_tail(sam.heard(), 0.3) < 300:
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)
            sam.send({"type": "take_over"})
            taken = await sam.recv("joined")
            assert taken["mode"] == "taken_over" and taken["on_call"] == ["sam"], taken
            heard_before = len(sam.heard())
            phone.say(caller_speech.path)
            await asyncio.sleep(3)
            caller_heard_by_sam = sam.heard()[heard_before:]
            # The persona kept its session, switched off: handed back, it answers the caller again.
            sam.send({"type": "hand_back"})
            back = await sam.recv("joined")
            assert back["mode"] == "listen" and back["on_call"] == ["persona:orders"], back
            phone.say(question.path)
            while (line := await sam.recv("transcript", timeout=20))["role"] != "persona":
                pass
            sam.send({"type": "take_over"})
            assert (await sam.recv("joined"))["mode"] == "taken_over"
            sam.send({"type": "hangup"})
            await asyncio.to_thread(phone.wait_closed, 10)
    finally:
        await sam.close()
    (call,) = app.wait_calls_closed(1, timeout=20)
    assert call["operator"] == "sam" and call["end_reason"] == "operator-hangup", call
    detail = app.call(call["id"])
    event, _again = [e for e in detail["events"] if e["kind"] == "taken_over"]
    assert event["data"] == {"identity": "sam", "from": "persona:orders"}
    assert [e["data"] for e in detail["events"] if e["kind"] == "handed_back"] == [
        {"identity": "sam", "to": "persona:orders"}]
    # One persona session from dispatch to hang-up: taking over did not end it.
    kinds = [e["kind"] for e in detail["events"]]
    assert kinds.count("persona_started") == 1 and kinds[-1] != "persona_started"
    assert [e["data"]["reason"] for e in detail["events"] if e["kind"] == "persona_ended"] == ["released"]
    assert line["text"], line
    # What the caller heard: the greeting up to the click, then nothing of the persona again.
    with wave.open(call["recording_path"]) as w:
        right = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).reshape(-1, 2)[:, 1].astype(np.float64)
    at = console.epoch(event["at"]) - console.epoch(detail["answered_at"])
    frames = right[: len(right) // 320 * 320].reshape(-1, 320)
    loud = np.sqrt(np.mean(frames ** 2, axis=1)) > 300
    click = int(at * 50)
    assert loud[click - 15: click].any(), "the persona was not speaking when the supervisor took over"
    after = np.flatnonzero(loud[click:])
    stopped_ms = (after[-1] + 1) * 20 if len(after) else 0
    assert not loud[click + 50: click + 150].any(), "the persona went on speaking after the take-over"
    print(f"persona audio stopped {stopped_ms} ms after the take-over was recorded")
    assert _rms_tail(caller_heard_by_sam, 3.0) > 300, "the supervisor did not hear the caller"


def _rms_tail(pcm: bytes, seconds: float) -> float:
    x = np.frombuffer(pcm[-int(seconds * 32000) // 2 * 2:], dtype=np.int16).astype(np.float64)
    return float(np.sqrt(np.mean(x ** 2))) if len(x) else 0.0




async def test_a_supervisors_typed_whisper_changes_the_personas_next_reply_unheard_by_the_caller(
        appliance_factory, orders_api: OrdersApi, tmp_path: Path) -> None:
    app = _with_console(appliance_factory, orders_api, tmp_path, "sam", "supervisor")
    sam, _ = await console.operator(app, "sam", available=False)
    microphone = tmp_path / "caller.wav"
    _microphone(microphone, [(0.5, "Where is my order?")], 40)
    try:
        with baresip.Softphone(tmp_path / "caller", max_seconds=60) as phone:
            await asyncio.to_thread(phone.dial, f"sip:300@127.0.0.1:{app.sip_port}")
            board = await sam.board_until(
                lambda b: [c["on_call"] for c in b["calls"]] == [["persona:orders"]], timeout=15)
            row = board["calls"][0]
            sam.send({"type": "join", "call": row["call"], "mode": "whisper"})
            await sam.recv("joined")
            await asyncio.sleep(4)  # the greeting
            sam.send({"type": "whisper_text", "text": "Offer a discount"})
            while (line := await sam.recv("transcript", timeout=5))["role"] != "supervisor":
                pass  # the greeting's line, live
            assert (line["speaker"], line["text"]) == ("sam", "Offer a discount")
            phone.say(microphone)
            while True:
                line = await sam.recv("transcript", timeout=15)
                if line["role"] == "persona":
                    break
            assert "ten percent discount" in line["text"], line
            await asyncio.sleep(4)  # the reply plays
            phone.hangup()
            heard = phone.result().heard
    finally:
        await sam.close()
    (call,) = app.wait_calls_closed(1, timeout=20)
    assert [e["data"] for e in app.call(call["id"])["events"] if e["kind"] == "supervisor_instruction"] == [
        {"identity": "sam", "text": "Offer a discount"}]
    # The caller heard the reply, never the instruction (it was never audio).
    grammar = phrases_grammar(["offer a discount", "i can offer you a ten percent discount on your next order",
                               "hello this is the acme order desk how can i help you"])
    replies = [transcribe(chunk, grammar) for chunk in utterances(baresip.pcm16k(heard), gap_s=0.4)]
    assert any("discount on your next order" in reply for reply in replies), replies
