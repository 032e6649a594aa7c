"""baresip, a softphone nobody here wrote, calls the box: it hears the greeting, the box hears it."""

from __future__ import annotations

import re
import wave
from pathlib import Path

import numpy as np
import pytest
import yaml

from appliance.speech.stt import phrases_grammar, transcribe
from tests.support import baresip
from tests.support.appliance import ROOT

pytestmark = pytest.mark.sip

STAY_S = 12  # the greeting, the menu prompt and its first retry (the menu waits 5 s for a digit)
CALLER_SAYS = "Hello, I am calling about my order."
DIGIT_WORDS = {"1": "one", "2": "two"}


def _prompts(flow: Path) -> list[str]:
    """Every sentence the flow can say, digits spelled out as a caller hears them."""
    steps = yaml.safe_load(flow.read_text())["steps"].values()
    texts = [s["say"] for s in steps if "say" in s] + [s["menu"]["prompt"] for s in steps if "menu" in s]
    return [re.sub(r"\d", lambda m: DIGIT_WORDS[m.group()], t) for t in texts]


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) if len(x) else 0.0


def test_baresip_hears_the_greeting_and_the_box_hears_baresip(appliance, tmp_path: Path) -> None:
    microphone = baresip.speech_wav(tmp_path / "caller.wav", CALLER_SAYS, seconds=STAY_S + 10)
    result = baresip.call(
        f"sip:100@127.0.0.1:{appliance.sip_port}", microphone.path, tmp_path / "baresip", seconds=STAY_S
    )
    assert result.established, result.output

    (call,) = appliance.wait_calls_closed(1)
    assert call["end_reason"], call
    answered = [e["data"] for e in appliance.call(call["id"])["events"] if e["kind"] == "answered"]
    # pocketsphinx hears espeak reliably only in wideband; over G.711 the words blur.
    assert answered == [{"codec": "G722"}] and result.codec == "G722", (answered, result.output)

    # What the caller heard, recognised with only the words the flow can say.
    assert result.heard is not None, result.output
    pcm = baresip.pcm16k(result.heard)
    assert len(pcm) / 32000 > STAY_S - 2, (len(pcm) / 32000, call, result.output)
    grammar = phrases_grammar(_prompts(ROOT / "flows/default.yaml"))
    heard = transcribe(pcm, grammar)
    words = heard.split()
    assert "welcome" in words and {"sales", "support"} & set(words), heard
    # The control: the grammar does not force those words onto any speech, e.g. the caller's.
    caller = baresip.pcm16k(microphone.path)[: round(microphone.speech_s + 0.5) * 32000]
    assert not {"welcome", "sales", "support"} & set(transcribe(caller, grammar).split())

    # The box's recording: left is the caller, so baresip's sentence, then its silence.
    with wave.open(call["recording_path"]) as w:
        assert (w.getnchannels(), w.getframerate()) == (2, 16000)
        left = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).reshape(-1, 2)[:, 0]
    speaking = left[: int(microphone.speech_s * 16000)]
    after = left[int((microphone.speech_s + 1) * 16000):]
    assert _rms(speaking) > 500, _rms(speaking)
    assert _rms(after) < _rms(speaking) / 20, (_rms(after), _rms(speaking))
