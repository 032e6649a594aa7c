"""The one pocketsphinx engine: flow listening and persona STT share pooled decoders, each
caller keeps their own cepstral mean, and a listening step loads no decoder on the event loop."""

from __future__ import annotations

import io
import subprocess
import wave

import numpy as np
import pytest

from appliance.flow import intents
from appliance.speech import stt
from appliance.speech.recognizer import Recognizer
from appliance.speech.resample import resample
from tests.support.spoken_numbers import SpokenNumber, line_audio

MENU = {
    "ask_account": ["billing", "pay my bill", "invoice"],
    "technical_queue": ["technical support", "support", "my internet is down"],
    "take_message": ["leave a message", "message"],
}
SILENCE = b"\0\0" * 16000  # one second at 16 kHz


def _said(text: str) -> bytes:
    return SILENCE + _speech(text) + SILENCE


def _speech(text: str) -> bytes:
    """espeak-ng's voice from a fresh engine: the in-process one's output depends on what it said
    before (its samples differ run to run), and these tests are about the decoders, not that."""
    wav = subprocess.run(["espeak-ng", "-v", "en-us", "-s", "160", "--stdout", text],
                         check=True, capture_output=True).stdout
    with wave.open(io.BytesIO(wav)) as w:
        native = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
        rate = w.getframerate()
    return resample(native, rate, 16000).tobytes()


def _heard(recognizer: Recognizer, pcm: bytes) -> list[str]:
    heard = []
    for i in range(0, len(pcm), 3200):  # 100 ms, as the flow's listener batches the call's media
        text = recognizer.feed(pcm[i : i + 3200])
        if text:
            heard.append(text)
    return heard


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """The grammars decoders are loaded for, from now on."""
    loaded: list[str | None] = []
    real = stt.decoder_for

    def counting(grammar: str | None, live: bool = True):  # type: ignore[no-untyped-def]
        loaded.append(grammar)
        return real(grammar, live)

    monkeypatch.setattr(stt, "decoder_for", counting)
    return loaded


def test_a_listening_step_loads_its_decoder_on_first_feed_and_the_next_borrows_it(loads: list[str | None]) -> None:
    menu = {**MENU, "operator": ["operator"]}  # a grammar no other test loads
    grammar = intents.grammar(menu)

    first = Recognizer(grammar)  # built on the event loop: must not load a decoder there
    assert loads == []
    heard_first = _heard(first, _said("technical support please"))
    heard_second = _heard(Recognizer(grammar), _said("technical support please"))

    assert loads == [grammar]
    assert [intents.match(t, menu) for t in heard_first + heard_second] == ["technical_queue"] * 2


def test_what_another_caller_said_does_not_change_what_a_caller_is_heard_as() -> None:
    grammar = intents.grammar(MENU)
    caller = _said("technical support please")
    before = _heard(Recognizer(grammar), caller)
    others = Recognizer(grammar)  # shares the pooled decoder, and carries its own mean
    for said in ("leave a message", "pay my bill", "my internet is down"):
        _heard(others, _said(said))

    assert _heard(Recognizer(grammar), caller) == before
    assert intents.match(before[0], MENU) == "technical_queue"


def test_persona_decoding_and_flow_listening_share_decoders(loads: list[str | None]) -> None:
    menu = {**MENU, "hours": ["opening hours"]}  # a grammar no other test loads
    grammar = intents.grammar(menu)
    # the words alone, as a persona decodes
    text, cmn = stt.decode(_speech("technical support please"), grammar)
    _heard(Recognizer(grammar), _said("opening hours"))

    assert text.startswith("technical") and cmn
    assert loads == [grammar]


def test_transcribe_starts_from_the_models_mean_whatever_was_transcribed_before() -> None:
    grammar = stt.phrases_grammar(["where is my order", "technical support"])
    utterance = _said("where is my order")
    first = stt.transcribe(utterance, grammar)
    stt.transcribe(_said("technical support"), grammar)

    assert stt.transcribe(utterance, grammar) == first == "where is my order"
    assert stt.transcribe(b"", grammar) == ""


def test_a_flow_listener_leaves_the_pooled_decoder_hearing_as_before() -> None:
    # Fed in pieces, a pooled decoder's feature state stayed changed for every later utterance:
    # this number, right before a listener's turn, came out "three one eight seven eight four oh".
    number = line_audio(SpokenNumber(("3174",), (), "en-us", 160), "g722")
    grammar = intents.grammar({}, digits=True)
    before, _ = stt.decode(number, grammar)
    _heard(Recognizer(grammar), number)
    after, _ = stt.decode(number, grammar)

    assert before == after == "three one seven four"
