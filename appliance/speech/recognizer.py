"""Streaming recognition of one caller's utterances against a grammar, offline: the flow's
listening (menus and gathers).

pocketsphinx's endpointer (WebRTC VAD) finds where speech starts and ends; the decoder, a
pooled one borrowed for each utterance (`appliance.speech.stt`), only sees speech. An
utterance's text is returned when it ends.
"""

from __future__ import annotations

from pocketsphinx import Endpointer

from appliance.speech.stt import Utterance, prewarm

__all__ = ["Recognizer"]


class Recognizer:
    """One listening caller: their endpointer and cepstral mean; no decoder of its own.

    Built on the event loop (cheap, ~10 µs), fed in an executor, one `feed` at a time. Building
    a decoder here took ~0.1 s on the loop that drives the 20 ms audio clock: five ticks missed
    at every speech menu step (measured). The first `feed` loads the grammar's decoder if the
    process has none yet, so it is ready by the time the caller speaks. A listener stopped
    mid-utterance takes its borrowed decoder with it; the pool loads another when one is needed.
    """

    def __init__(self, grammar: str):
        self._grammar = grammar
        self._endpointer = Endpointer(vad_mode=3, window=0.3, ratio=0.9)
        self._chunk = self._endpointer.frame_bytes
        self._pending = b""
        self._utterance: Utterance | None = None
        self._cmn: str | None = None  # this caller's cepstral mean, carried from utterance to utterance
        self._warm = False

    def feed(self, pcm: bytes) -> str | None:
        """16 kHz s16le mono audio in; the text of an utterance when one has just ended (blocking)."""
        if not self._warm:
            prewarm(self._grammar)
            self._warm = True
        self._pending += pcm
        result = None
        while len(self._pending) >= self._chunk:
            frame, self._pending = self._pending[: self._chunk], self._pending[self._chunk :]
            speech = self._endpointer.process(frame)
            if speech is not None:
                if self._utterance is None:
                    self._utterance = Utterance(self._grammar, self._cmn)
                self._utterance.process(speech)
            if self._utterance is not None and not self._endpointer.in_speech:
                text, self._cmn = self._utterance.end()
                self._utterance = None
                if text:
                    result = text
        return result
