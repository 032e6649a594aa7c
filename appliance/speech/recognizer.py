"""Streaming recognition of one caller's utterances against a grammar, offline.

pocketsphinx's endpointer (WebRTC VAD) finds where speech starts and ends; the decoder
only sees speech. An utterance's text is returned when it ends.
"""

from __future__ import annotations

from pocketsphinx import Decoder, Endpointer

from appliance.speech.stt import decoder_for


class Recognizer:
    def __init__(self, grammar: str):
        self._decoder: Decoder = decoder_for(grammar)
        self._endpointer = Endpointer(vad_mode=3, window=0.3, ratio=0.9)
        self._chunk = self._endpointer.frame_bytes
        self._pending = b""
        self._in_speech = False

    def feed(self, pcm: bytes) -> str | None:
        """16 kHz s16le mono audio in; the text of an utterance when one has just ended."""
        self._pending += pcm
        result = None
        while len(self._pending) >= self._chunk:
            frame, self._pending = self._pending[: self._chunk], self._pending[self._chunk :]
            speech = self._endpointer.process(frame)
            if speech is not None:
                if not self._in_speech:
                    self._decoder.start_utt()
                    self._in_speech = True
                self._decoder.process_raw(speech)
            if self._in_speech and not self._endpointer.in_speech:
                self._decoder.end_utt()
                self._in_speech = False
                hyp = self._decoder.hyp()
                if hyp is not None and hyp.hypstr:
                    result = hyp.hypstr
        return result
