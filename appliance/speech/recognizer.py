"""Streaming recognition of one caller's utterances against a grammar, offline: the flow's
listening (menus and gathers).

pocketsphinx's endpointer (WebRTC VAD) finds where speech starts and ends; when an utterance
ends, a pooled decoder (`appliance.speech.stt`) decodes it whole and its text is returned.
"""

from __future__ import annotations

from pocketsphinx import Endpointer

from appliance.core.audio import SAMPLE_RATE
from appliance.speech.stt import decode, prewarm

__all__ = ["Recognizer"]

MAX_UTTERANCE_S = 30.0  # a caller who never pauses is decoded in pieces this long
# WebRTC VAD's aggressiveness. 3, the most aggressive, took the soft start of a word ("six",
# "seven": /s/) for silence and began the utterance after it, 0.1-0.4 s late: the word was lost.
# Measured on bench/digits.py's corpora (seed 15, G.722 / PCMU, numbers exactly right): voices
# built from human recordings (flite) 75.0 / 53.1 % with 3, 90.6 / 63.5 % with 2; espeak-ng's
# 38.5 / 8.3 % and 38.5 / 11.5 %. Line noise starts no more false utterances with 2 than with 3
# (white and brown noise up to -27 dBFS); 1 and 0 took brown noise at -27 dBFS for speech.
VAD_MODE = 2


class Recognizer:
    """One listening caller: their endpointer, the utterance so far and their cepstral mean.

    Built on the event loop (cheap, ~10 µs), fed in an executor, one `feed` at a time. Building
    a decoder here took ~0.1 s on the loop that drives the 20 ms audio clock: five ticks missed
    at every speech menu step (measured). The first `feed` loads the grammar's decoder if the
    process has none yet, so it is ready by the time the caller speaks.

    An utterance is decoded whole when it ends, not fed to the decoder as it comes: fed in
    pieces, pocketsphinx normalises with a running mean that starts far from the caller's and
    its feature state stays changed for every later utterance on that pooled decoder, whole
    ones included (measured on bench/digits.py's tuning corpus, seed 99, same grammar and
    settings: 2 % of grouped numbers exactly right fed in pieces, 12 % decoded whole). A whole decode costs ~30 ms
    per second of speech, once, at the end.
    """

    def __init__(self, grammar: str):
        self._grammar = grammar
        self._endpointer = Endpointer(vad_mode=VAD_MODE, window=0.3, ratio=0.9)
        self._chunk = self._endpointer.frame_bytes
        self._pending = b""
        self._speech = bytearray()  # the utterance so far
        self._cmn: str | None = None  # this caller's cepstral mean, carried from utterance to utterance
        self._warm = False

    @property
    def speaking(self) -> bool:
        """The caller is in an utterance (by the endpointer, ~0.3 s behind the audio)."""
        return self._endpointer.in_speech

    def feed(self, pcm: bytes) -> str | None:
        """16 kHz s16le mono audio in; when an utterance has just ended, what was heard in it
        ("" for nothing the grammar holds), else None (blocking)."""
        if not self._warm:
            prewarm(self._grammar)
            self._warm = True
        self._pending += pcm
        result = None
        while len(self._pending) >= self._chunk:
            frame, self._pending = self._pending[: self._chunk], self._pending[self._chunk :]
            speech = self._endpointer.process(frame)
            if speech is not None:
                self._speech += speech
            ended = self._speech and not self._endpointer.in_speech
            if ended or len(self._speech) >= MAX_UTTERANCE_S * SAMPLE_RATE * 2:
                result, self._cmn = decode(bytes(self._speech), self._grammar, self._cmn)
                self._speech.clear()
        return result
