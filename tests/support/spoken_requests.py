"""Callers asking the order desk persona (flows/personas/orders.yaml) about their order and
pausing inside the sentence where people do ("I would like to … check my order"), as real
audio: espeak-ng in several voices and rates (`spoken_numbers`' voices, rates and line), with
0.3–0.8 s of silence at each pause.

Every pause sits where the words so far are not a whole request, and every sentence is whole
at its end: a reply before the end is a reply into the caller's sentence. Shared by the persona
turn tests and bench/persona_turns.py.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from tests.support.spoken_numbers import RATES, VOICES, line_phrases, phrases_end, say_phrases

__all__ = ["SENTENCES", "SpokenRequest", "corpus"]

# Each sentence in the parts a caller says between pauses.
SENTENCES: tuple[tuple[str, ...], ...] = (
    ("I would like to", "check my order."),
    ("Where is my", "order?"),
    ("Hello. I want to", "check my order please."),
    ("I want to ask about", "my order status."),
    ("Where is", "my order?"),
    ("I would like to", "check", "my order."),
    ("Could you check", "my order please?"),
    ("I am calling about", "my order."),
)


@dataclass(frozen=True)
class SpokenRequest:
    """One caller saying one sentence: its parts and the pause after each part but the last."""

    parts: tuple[str, ...]
    pauses: tuple[float, ...]
    voice: str
    rate: int

    @property
    def text(self) -> str:
        return " ".join(self.parts)

    def audio(self) -> np.ndarray:
        """16 kHz int16 (`say_phrases`): line silence, the sentence with its pauses, a tail."""
        return say_phrases(list(self.parts), self.pauses, self.voice, self.rate)

    def line(self, codec: str) -> bytes:
        """`audio` through a phone codec (pcmu | g722) and back, 16 kHz s16le."""
        return line_phrases(list(self.parts), self.pauses, codec, self.voice, self.rate)

    @property
    def end_s(self) -> float:
        """Seconds from the start of `audio` to the end of the sentence's last word."""
        return phrases_end(list(self.parts), self.pauses, self.voice, self.rate)


def corpus(count: int, seed: int = 15, voices: tuple[str, ...] = VOICES) -> list[SpokenRequest]:
    """`count` requests: the sentences, voices and rates in turn, pauses drawn from 0.3–0.8 s."""
    rng = random.Random(seed)
    return [
        SpokenRequest(
            parts=SENTENCES[i % len(SENTENCES)],
            pauses=tuple(round(rng.uniform(0.3, 0.8), 2) for _ in SENTENCES[i % len(SENTENCES)][1:]),
            voice=voices[i % len(voices)],
            rate=RATES[(i // len(voices)) % len(RATES)],
        )
        for i in range(count)
    ]
