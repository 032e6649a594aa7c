"""Callers reading numbers out in groups, as real audio: espeak-ng (the command, so a render
never depends on what was said before) in several voices and rates, pauses between the
groups, then through a phone codec (PCMU at 8 kHz or G.722 at 16 kHz) and back; and a flow's
gather hearing them (the real recogniser and engine, on the audio's own time).

A voice named `flite:<name>` is Debian flite's instead: its voices are built from recordings
of human speakers (CMU ARCTIC), where espeak-ng's are formant synthesis, which the recogniser's
model (trained on human speech) hears worse.

Shared by tests and bench/digits.py, so the tests' handful and the benchmark's corpus are the
same kind of audio, heard the same way.
"""

from __future__ import annotations

import io
import random
import subprocess
import wave
from dataclasses import dataclass
from functools import lru_cache

import av
import numpy as np

from appliance.core import g711
from appliance.core.audio import FRAME_BYTES, SAMPLE_RATE
from appliance.flow.engine import Action, FlowEngine, SetVariable, Speech, SpeechStarted, StartTimer, TimerFired
from appliance.flow.intents import DIGIT_WORDS
from appliance.flow.loader import parse
from appliance.speech.recognizer import Recognizer
from appliance.speech.resample import resample

__all__ = ["CODECS", "HUMAN_VOICES", "RATES", "VOICES", "Heard", "SpokenNumber", "corpus", "gather", "last_group_end",
           "line_audio", "line_phrases", "line_speech", "listen", "phrases_end", "say_number", "say_phrases"]

# US, British, Caribbean and Scottish voices, two with female variants.
VOICES = ("en-us", "en-gb", "en-us+f3", "en-gb-x-rp+f4", "en-029", "en-gb-scotland")
# flite's: US female, Scottish male, US male (clustergen), US male (diphones).
HUMAN_VOICES = ("flite:slt", "flite:awb", "flite:rms", "flite:kal16")
RATES = (130, 160, 190)  # words a minute: slow, espeak-ng's usual, brisk
CODECS = ("pcmu", "g722")
LEAD_S = 0.5  # line silence before the caller starts
TAIL_S = 4.0  # after the last group: long enough for any turn to end
HISS_RMS = 30.0  # about -60 dBFS: a quiet line is never digital zero
_NAMES = {digit: word for word, digit in DIGIT_WORDS.items() if word != "oh"}


@dataclass(frozen=True)
class SpokenNumber:
    """One caller reading one number: its groups, and the pause after each group but the last."""

    groups: tuple[str, ...]
    pauses: tuple[float, ...]
    voice: str
    rate: int
    oh: bool = False  # zero said as "oh"

    @property
    def digits(self) -> str:
        return "".join(self.groups)

    def words(self, group: str) -> str:
        return " ".join("oh" if d == "0" and self.oh else _NAMES[d] for d in group)


def corpus(count: int, seed: int = 15, voices: tuple[str, ...] = VOICES) -> list[SpokenNumber]:
    """`count` numbers of 3–10 digits, each voice and rate in turn, grouped 2–4 digits at a
    time (3-3-4 as a phone number is read) with 0.4–1.2 s between groups."""
    rng = random.Random(seed)
    numbers = []
    for i in range(count):
        length = 3 + i % 8
        digits = "".join(rng.choice("0123456789") for _ in range(length))
        groups = _grouped(digits, rng)
        numbers.append(SpokenNumber(
            groups=groups,
            pauses=tuple(round(rng.uniform(0.4, 1.2), 2) for _ in groups[1:]),
            voice=voices[i % len(voices)],
            rate=RATES[(i // len(voices)) % len(RATES)],
            oh="0" in digits and rng.random() < 0.3,
        ))
    return numbers


def _grouped(digits: str, rng: random.Random) -> tuple[str, ...]:
    if len(digits) <= 4 and rng.random() < 0.5:
        return (digits,)
    groups, rest = [], digits
    while rest:
        size = len(rest) if len(rest) <= 4 else rng.choice([n for n in (2, 3, 4) if len(rest) - n >= 2])
        groups.append(rest[:size])
        rest = rest[size:]
    return tuple(groups)


def last_group_end(number: SpokenNumber) -> float:
    """Seconds from the start of `say_number`'s audio to the end of the number's last group."""
    return phrases_end([number.words(g) for g in number.groups], number.pauses, number.voice, number.rate)


def phrases_end(phrases: list[str], pauses: tuple[float, ...], voice: str, rate: int) -> float:
    """Seconds from the start of `say_phrases`'s audio to the end of its last phrase."""
    spoken = sum(len(_trimmed(_synthesised(p, voice, rate))) for p in phrases)
    return LEAD_S + spoken / SAMPLE_RATE + sum(pauses)


def say_number(number: SpokenNumber) -> np.ndarray:
    """16 kHz int16: line silence, each group with its pause, then the tail; a faint hiss throughout."""
    return say_phrases([number.words(group) for group in number.groups], number.pauses, number.voice, number.rate)


def say_phrases(phrases: list[str], pauses: tuple[float, ...], voice: str, rate: int) -> np.ndarray:
    """16 kHz int16: line silence, each phrase with the pause after it (the tail after the last),
    a faint hiss throughout."""
    parts = [np.zeros(int(LEAD_S * SAMPLE_RATE), dtype=np.int16)]
    for i, phrase in enumerate(phrases):
        parts.append(_trimmed(_synthesised(phrase, voice, rate)))
        pause = pauses[i] if i < len(pauses) else TAIL_S
        parts.append(np.zeros(int(pause * SAMPLE_RATE), dtype=np.int16))
    speech = np.concatenate(parts).astype(np.float64)
    hiss = np.random.default_rng(len(speech)).normal(0.0, HISS_RMS, len(speech))
    return np.clip(speech + hiss, -32768, 32767).astype(np.int16)


def line_audio(number: SpokenNumber, codec: str) -> bytes:
    """What the box hears of the caller: `say_number` through `codec` (pcmu | g722) and back,
    16 kHz s16le, a whole number of 20 ms frames."""
    return _through(say_number(number), codec)


def line_speech(text: str, codec: str, voice: str = "en-us", rate: int = 160) -> bytes:
    """A caller saying `text` as `line_audio` has them say a number: the same line and codec."""
    return line_phrases([text], (), codec, voice, rate)


def line_phrases(phrases: list[str], pauses: tuple[float, ...], codec: str, voice: str = "en-us",
                 rate: int = 160) -> bytes:
    """A caller saying a sentence in parts, pausing after each but the last (`say_phrases`),
    through `codec` and back."""
    return _through(say_phrases(phrases, pauses, voice, rate), codec)


def _through(pcm: np.ndarray, codec: str) -> bytes:
    pcm = np.concatenate([pcm, np.zeros(-len(pcm) % (FRAME_BYTES // 2), dtype=np.int16)])
    if codec == "pcmu":
        return _pcmu(pcm)
    if codec == "g722":
        return _g722(pcm)
    raise ValueError(f"unknown codec {codec!r}; known: {', '.join(CODECS)}")


@lru_cache(maxsize=256)
def _synthesised(text: str, voice: str, rate: int) -> np.ndarray:
    if voice.startswith("flite:"):
        # flite has no words-a-minute setting: its durations are stretched from its own 160-ish.
        command = ["flite", "-voice", voice.removeprefix("flite:"), "--setf", f"duration_stretch={160 / rate:.3f}",
                   "-t", text, "-o", "/dev/stdout"]
    else:
        command = ["espeak-ng", "-v", voice, "-s", str(rate), "--stdout", text]
    wav = subprocess.run(command, check=True, capture_output=True).stdout
    with wave.open(io.BytesIO(wav)) as w:
        native = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
        return resample(native, w.getframerate(), SAMPLE_RATE)


def _trimmed(samples: np.ndarray) -> np.ndarray:
    # espeak-ng ends a phrase with its own digital silence, ~0.3 s: cut, so a pause is what the
    # corpus says. Only exact zeros: cutting a word's quiet decay leaves a click, heard as a "t".
    sound = np.flatnonzero(samples)
    return samples[sound[0] : sound[-1] + 1] if len(sound) else samples[:0]


def _pcmu(pcm: np.ndarray) -> bytes:
    # The box's own μ-law path (Twilio Media Streams), 20 ms at a time as on the wire.
    outbound, inbound = g711.Outbound(), g711.Inbound()
    frames = []
    data = pcm.tobytes()
    for i in range(0, len(data), FRAME_BYTES):
        frames += inbound.frames(outbound.encode(data[i : i + FRAME_BYTES]))
    return b"".join(frames)


def _g722(pcm: np.ndarray) -> bytes:
    # ffmpeg's G.722 (as in PyAV), 20 ms packets, as a SIP phone's would be.
    encoder = av.codec.CodecContext.create("g722", "w")
    encoder.sample_rate, encoder.layout, encoder.format = SAMPLE_RATE, "mono", "s16"  # type: ignore[attr-defined]
    decoder = av.codec.CodecContext.create("g722", "r")
    decoder.sample_rate, decoder.layout = SAMPLE_RATE, "mono"  # type: ignore[attr-defined]
    n = FRAME_BYTES // 2
    out = []
    for i in range(0, len(pcm), n):
        frame = av.AudioFrame.from_ndarray(pcm[i : i + n].reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        for packet in encoder.encode(frame):  # type: ignore[attr-defined]
            for decoded in decoder.decode(packet):
                out.append(decoded.to_ndarray().reshape(-1).astype(np.int16))
    return np.concatenate(out).tobytes()


# --- hearing it as a flow's gather does

LISTEN_CHUNK_S = 0.1  # the flow's listener recognises 100 ms at a time (appliance.calls.listener)
GATHER_FLOW = """
name: spoken_numbers
entry: ask
steps:
  ask:
    gather: {into: number, dtmf: false, spoken_digits: true, min_digits: 1, max_digits: %d, digit_pause: %s,
             timeout: 10}
    next: done
  done:
    hangup: {}
"""


@dataclass(frozen=True)
class Heard:
    """What the listener reported at audio time `at`: an utterance started, or one ended with `text`."""

    at: float
    text: str | None  # None: an utterance started


def listen(audio: bytes, grammar: str) -> list[Heard]:
    """The flow's recogniser on `audio` (16 kHz s16le), fed as the listener feeds it."""
    recognizer = Recognizer(grammar)
    chunk = int(LISTEN_CHUNK_S * SAMPLE_RATE) * 2
    heard = []
    for i in range(0, len(audio), chunk):
        was_speaking = recognizer.speaking
        text = recognizer.feed(audio[i : i + chunk])
        at = (i + chunk) / (2 * SAMPLE_RATE)
        if recognizer.speaking and not was_speaking:
            heard.append(Heard(at, None))
        if text is not None:
            heard.append(Heard(at, text))
    return heard


def gather(heard: list[Heard], seconds: float, digit_pause: float, max_digits: int = 32) -> tuple[str, float | None]:
    """A gather step with spoken digits (appliance.flow's engine) driven by `heard` on audio
    time: the number it took, and when (None: still waiting at `seconds`)."""
    flow, problems = parse(GATHER_FLOW % (max_digits, digit_pause), "spoken_numbers.yaml")
    assert flow is not None, problems
    engine = FlowEngine(flow)
    timers: dict[int, float] = {}
    taken: list[tuple[str, float]] = []

    def run(actions: list[Action], at: float) -> None:
        for action in actions:
            if isinstance(action, StartTimer):
                timers[action.timer] = at + action.seconds
            elif isinstance(action, SetVariable) and action.name == "number":
                taken.append((str(action.value), at))

    def fire_until(at: float) -> None:
        while engine.awaited_timer in timers and timers[engine.awaited_timer] <= at and not taken:
            timer = engine.awaited_timer
            run(engine.handle(TimerFired(timer)), timers.pop(timer))

    run(engine.start(), 0.0)
    for event in heard:
        fire_until(event.at)
        if taken:
            break
        run(engine.handle(SpeechStarted() if event.text is None else Speech(event.text)), event.at)
    fire_until(seconds)
    return taken[0] if taken else ("", None)
