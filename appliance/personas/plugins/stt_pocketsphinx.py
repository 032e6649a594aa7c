"""pocketsphinx as a livekit-agents STT: offline, accurate with a grammar, and ready on time.

Decoding (pooled decoders, each caller's cepstral mean) is `appliance.speech.stt`, shared with
the flow's listening; this plugin adds livekit's interface and the session's turn-taking.

Streaming with manual flush: the session feeds every 20 ms of the caller and flushes when its
VAD says the turn's speech ended; that flush answers with the final transcript. A whole
utterance decodes best (its whole cepstrum goes into the mean), but waiting for the
flush to start decoding costs the caller ~100 ms per turn, so the stream decodes what was said
as soon as a pause of 0.1 s begins (pocketsphinx's WebRTC VAD, cheap) and the flush finds the
transcript made. Speech that resumes makes that guess stale; the flush then decodes again.

The turn detector may ask for the words early (`transcribe_pending`): when the caller went on
after a pause, livekit judges the turn on the words before the pause and flushes only after
that judgement, which for words that are not a whole request is a wait (personas/turns.py).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable

import numpy as np
from livekit import rtc
from livekit.agents import stt
from livekit.agents.language import LanguageCode
from livekit.agents.types import (
    DEFAULT_API_CONNECT_OPTIONS,
    NOT_GIVEN,
    APIConnectOptions,
    NotGivenOr,
)
from livekit.agents.utils import AudioBuffer, is_given, shortuuid
from pocketsphinx import Vad

from appliance.core.audio import SAMPLE_RATE
from appliance.flow import intents
from appliance.observability.logging import log_extra
from appliance.speech import stt as speech_stt
from appliance.speech.resample import resample

__all__ = ["PocketsphinxSTT", "grammar_for"]

logger = logging.getLogger(__name__)

# The only acoustic model and dictionary pocketsphinx ships.
LANGUAGE = LanguageCode("en-US")

VAD_FRAME_S = 0.02
# An utterance is decoded from 0.1 s before its first voiced frame to 0.1 s after its last:
# measured on calls' audio, wider margins make the grammar turn line noise into words
# ("one it two three four").
PREROLL_S = 0.1
TAIL_S = 0.1
# The early decode starts after 0.06 s of pause (its tail is that much): silero reports the end
# of speech about 0.12 s after it with `personas.endpointing_s` 0.06 (0.06 s and two 32 ms
# windows of its own lag, measured on the persona-turn corpus), and a whole-utterance decode
# takes 55-72 ms (docs/BENCHMARKS.md), so the transcript is made by then.
PAUSE_FRAMES = 3
# WebRTC's VAD calls some near-silence voice (it settles for a while at the start); voice is
# also louder than this, about -50 dBFS, below any speech a phone carries.
VOICE_FLOOR_RMS = 100.0
# A click, a breath, or the VAD settling at the start: fewer voiced frames than a short word,
# then a second with no flush (the session's VAD would have ended a real utterance by then).
BLIP_FRAMES, BLIP_PAUSE_FRAMES = 10, 50
MAX_UTTERANCE_S = 30.0
DIGITS = intents.grammar({}, digits=True)


def grammar_for(phrases: list[str], digits: bool = False) -> str:
    """A JSGF grammar hearing the phrases' words (with fillers), and digits if asked."""
    if not any(intents.words(p) for p in phrases) and not digits:
        raise ValueError("a grammar needs at least one phrase with words, or digits")
    return intents.grammar({"_": phrases}, digits)


class PocketsphinxSTT(stt.STT):
    """Recognises utterances; `grammar` (JSGF) None means open vocabulary.

    While `number_expected()` (see `listen_for_numbers`) says the persona asked for a number,
    utterances are heard against digits alone: with a persona's phrases and fillers in the
    grammar, "one" came out "want" and whole groups as "i a it" (bench/digits.py, 192 numbers
    read in groups: 1 % exactly right against the order desk's grammar, 23 % against digits).
    """

    def __init__(self, *, grammar: str | None = None) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=True, interim_results=False, manual_flush=True))
        self._grammar = grammar
        self._number_expected: Callable[[], bool] | None = None
        self._streams: weakref.WeakSet[PocketsphinxStream] = weakref.WeakSet()

    def listen_for_numbers(self, number_expected: Callable[[], bool]) -> None:
        """Hear digits only whenever `number_expected()` is true (asked at each utterance)."""
        self._number_expected = number_expected

    def _grammar_now(self) -> str | None:
        if self._number_expected is not None and self._number_expected():
            return DIGITS
        return self._grammar

    @property
    def model(self) -> str:
        return "en-us" if self._grammar is None else "en-us+jsgf"

    @property
    def provider(self) -> str:
        return "pocketsphinx"

    def prewarm(self) -> None:
        """Load a decoder now (blocking) rather than on the first utterance."""
        speech_stt.prewarm(self._grammar)
        if self._number_expected is not None:
            speech_stt.prewarm(DIGITS)

    def stream(
        self,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> PocketsphinxStream:
        _check_language(language)
        stream = PocketsphinxStream(stt=self, conn_options=conn_options)
        self._streams.add(stream)
        return stream

    async def transcribe_pending(self) -> bool:
        """Transcribe the caller's speech the open streams hold (as a flush would) now; whether
        there was any. Its final transcript comes through the stream as usual."""
        pending = [stream for stream in list(self._streams) if stream.pending]
        # Shielded: livekit cancels the asking task when the caller speaks again, and a
        # transcription cut off there would lose words the stream has already let go of.
        await asyncio.shield(asyncio.gather(*(stream.flush_now() for stream in pending)))
        return bool(pending)

    async def _recognize_impl(
        self,
        buffer: AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        _check_language(language)
        frames = buffer if isinstance(buffer, list) else [buffer]
        pcm = _mono_16k(frames).tobytes()
        text = await asyncio.to_thread(self.decode, pcm)
        return _final(text, len(pcm) / (2 * SAMPLE_RATE))

    def decode(self, pcm: bytes, cmn: str | None = None) -> str:
        """Text of one whole utterance of 16 kHz s16le mono (blocking); see `decode_with_cmn`."""
        return self.decode_with_cmn(pcm, cmn)[0]

    def decode_with_cmn(self, pcm: bytes, cmn: str | None) -> tuple[str, str | None]:
        """Text of one utterance, decoded from the caller's cepstral mean `cmn` (None: the
        model's), and the mean after it (blocking); see `appliance.speech.stt.Utterance`."""
        text, cmn = speech_stt.decode(pcm, self._grammar_now(), cmn)
        if pcm:
            logger.debug("utterance recognised", extra=log_extra(seconds=round(len(pcm) / (2 * SAMPLE_RATE), 2),
                                                                 pii={"transcript": text}))
        return text, cmn


class PocketsphinxStream(stt.RecognizeStream):
    """One session's caller audio → a final transcript per flush."""

    def __init__(self, *, stt: PocketsphinxSTT, conn_options: APIConnectOptions) -> None:
        super().__init__(stt=stt, conn_options=conn_options, sample_rate=SAMPLE_RATE)
        self._engine = stt
        self._vad = Vad(Vad.LOOSE, SAMPLE_RATE, VAD_FRAME_S)
        self._cmn: str | None = None  # this caller's cepstral mean, carried from utterance to utterance
        self._reset()

    def _reset(self) -> None:
        self._pcm = bytearray()  # the utterance so far, pre-roll included
        self._unclassified = b""
        self._voiced_end: int | None = None  # bytes of _pcm up to the end of the last voiced frame
        self._quiet_frames = 0
        self._voiced_frames = 0
        self._guess: tuple[int, asyncio.Task[tuple[str, str | None]]] | None = None  # (voiced_end it decoded, decoding)

    async def _run(self) -> None:
        async for item in self._input_ch:
            if isinstance(item, self._FlushSentinel):
                await self._finish()
            else:
                self._take(item)

    def _take(self, frame: rtc.AudioFrame) -> None:
        samples = np.frombuffer(frame.data, dtype=np.int16)
        if frame.num_channels > 1:
            samples = samples.reshape(-1, frame.num_channels).mean(axis=1).astype(np.int16)
        data = self._unclassified + samples.tobytes()
        size = self._vad.frame_bytes
        whole = len(data) // size * size
        for offset in range(0, whole, size):
            self._classify(data[offset : offset + size])
        self._unclassified = data[whole:]

    def _classify(self, chunk: bytes) -> None:
        self._pcm += chunk
        if _rms(chunk) > VOICE_FLOOR_RMS and self._vad.is_speech(chunk):
            self._voiced_end = len(self._pcm)
            self._voiced_frames += 1
            self._quiet_frames = 0
            return
        self._quiet_frames += 1
        if (self._voiced_end is not None and self._voiced_frames < BLIP_FRAMES
                and self._quiet_frames >= BLIP_PAUSE_FRAMES):
            self._voiced_end, self._voiced_frames, self._guess = None, 0, None
        if self._voiced_end is None:
            del self._pcm[: -_bytes(PREROLL_S)]
        elif len(self._pcm) > _bytes(MAX_UTTERANCE_S):
            cut = len(self._pcm) - _bytes(MAX_UTTERANCE_S)
            del self._pcm[:cut]
            self._voiced_end = max(0, self._voiced_end - cut)
            self._guess = None
        elif self._quiet_frames == PAUSE_FRAMES and (self._guess is None or self._guess[0] != self._voiced_end):
            pcm = bytes(self._pcm)
            self._guess = (self._voiced_end, asyncio.create_task(
                asyncio.to_thread(self._engine.decode_with_cmn, pcm, self._cmn)))

    @property
    def pending(self) -> bool:
        """The stream holds caller speech that no final transcript has given yet."""
        return self._voiced_end is not None and not self._event_ch.closed

    async def flush_now(self) -> None:
        """What a flush does, without waiting for the flush's turn in the audio."""
        await self._finish()

    async def _finish(self) -> None:
        guess, voiced_end = self._guess, self._voiced_end
        pcm = bytes(self._pcm[: (voiced_end or 0) + _bytes(TAIL_S)])
        self._reset()
        if voiced_end is None:
            return  # the grammar would make words of noise; WebRTC's loosest mode misses no speech
        fresh = guess is not None and guess[0] == voiced_end
        if fresh and guess:
            text, self._cmn = await guess[1]
        else:
            text, self._cmn = await asyncio.to_thread(self._engine.decode_with_cmn, pcm, self._cmn)
        if text:
            self._event_ch.send_nowait(_final(text, len(pcm) / (2 * SAMPLE_RATE)))


def _rms(chunk: bytes) -> float:
    samples = np.frombuffer(chunk, dtype=np.int16).astype(np.float32)
    return float(np.sqrt(np.mean(samples * samples)))


def _bytes(seconds: float) -> int:
    return int(seconds * SAMPLE_RATE) * 2


def _final(text: str, seconds: float) -> stt.SpeechEvent:
    return stt.SpeechEvent(
        type=stt.SpeechEventType.FINAL_TRANSCRIPT,
        request_id=shortuuid("ps_"),
        alternatives=[stt.SpeechData(language=LANGUAGE, text=text, end_time=seconds)],
    )


def _check_language(language: NotGivenOr[str]) -> None:
    if is_given(language) and language and LanguageCode(language).language != LANGUAGE.language:
        raise ValueError(f"pocketsphinx ships only an English model, not {language!r}")


def _mono_16k(frames: list[rtc.AudioFrame]) -> np.ndarray:
    if not frames:
        return np.zeros(0, dtype=np.int16)
    frame = rtc.combine_audio_frames(frames)
    samples = np.frombuffer(frame.data, dtype=np.int16)
    if frame.num_channels > 1:
        samples = samples.reshape(-1, frame.num_channels).mean(axis=1).astype(np.int16)
    return resample(samples, frame.sample_rate, SAMPLE_RATE)
