"""pocketsphinx as a livekit-agents STT: offline, non-streaming, accurate with a grammar.

The session's VAD cuts the caller's speech into utterances (livekit wraps a non-streaming
STT in a StreamAdapter); each utterance arrives here at whatever rate the input has and is
decoded at the model's 16 kHz in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading

import numpy as np
from livekit import rtc
from livekit.agents import stt
from livekit.agents.language import LanguageCode
from livekit.agents.types import NOT_GIVEN, APIConnectOptions, NotGivenOr
from livekit.agents.utils import AudioBuffer, is_given, shortuuid
from pocketsphinx import Decoder

from appliance.core.audio import SAMPLE_RATE
from appliance.flow import intents
from appliance.observability.logging import log_extra
from appliance.speech.resample import resample
from appliance.speech.stt import decoder_for

__all__ = ["PocketsphinxSTT", "grammar_for"]

logger = logging.getLogger(__name__)

# The only acoustic model and dictionary pocketsphinx ships.
LANGUAGE = LanguageCode("en-US")


def grammar_for(phrases: list[str], digits: bool = False) -> str:
    """A JSGF grammar hearing the phrases' words (with fillers), and digits if asked."""
    if not any(intents.words(p) for p in phrases) and not digits:
        raise ValueError("a grammar needs at least one phrase with words, or digits")
    return intents.grammar({"_": phrases}, digits)


class PocketsphinxSTT(stt.STT):
    """Recognises one utterance at a time; `grammar` (JSGF) None means open vocabulary."""

    def __init__(self, *, grammar: str | None = None) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
        self._grammar = grammar
        self._decoder: Decoder | None = None
        # A Decoder is not thread-safe, and utterances of one session may overlap.
        self._lock = threading.Lock()

    @property
    def model(self) -> str:
        return "en-us" if self._grammar is None else "en-us+jsgf"

    @property
    def provider(self) -> str:
        return "pocketsphinx"

    def prewarm(self) -> None:
        """Load the model now (blocking) rather than on the first utterance."""
        with self._lock:
            self._loaded()

    async def _recognize_impl(
        self,
        buffer: AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        if is_given(language) and language and LanguageCode(language).language != LANGUAGE.language:
            raise ValueError(f"pocketsphinx ships only an English model, not {language!r}")
        frames = buffer if isinstance(buffer, list) else [buffer]
        text, seconds = await asyncio.to_thread(self._transcribe, frames)
        logger.debug("utterance recognised", extra=log_extra(seconds=round(seconds, 2), pii={"transcript": text}))
        return stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT,
            request_id=shortuuid("ps_"),
            alternatives=[stt.SpeechData(language=LANGUAGE, text=text, end_time=seconds)],
        )

    def _transcribe(self, frames: list[rtc.AudioFrame]) -> tuple[str, float]:
        pcm = _mono_16k(frames).tobytes()
        if not pcm:
            return "", 0.0
        with self._lock:
            decoder = self._loaded()
            # Whole: the cepstral mean is then this utterance's own (batch CMN); fed in chunks
            # it is a running mean, and a call's first words are heard worse. Note pocketsphinx
            # holds the GIL inside process_raw (~30 ms per second of speech), thread or not.
            decoder.start_utt()
            decoder.process_raw(pcm, full_utt=True)
            decoder.end_utt()
            hyp = decoder.hyp()
        return (hyp.hypstr if hyp else ""), len(pcm) / (2 * SAMPLE_RATE)

    def _loaded(self) -> Decoder:
        if self._decoder is None:
            self._decoder = decoder_for(self._grammar)
        return self._decoder


def _mono_16k(frames: list[rtc.AudioFrame]) -> np.ndarray:
    if not frames:
        return np.zeros(0, dtype=np.int16)
    frame = rtc.combine_audio_frames(frames)
    samples = np.frombuffer(frame.data, dtype=np.int16)
    if frame.num_channels > 1:
        samples = samples.reshape(-1, frame.num_channels).mean(axis=1).astype(np.int16)
    return resample(samples, frame.sample_rate, SAMPLE_RATE)
