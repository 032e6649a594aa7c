"""espeak-ng as a livekit-agents TTS plugin: offline, non-streaming, in the box's 16 kHz mono.

The synthesizer is `appliance.speech.tts.EspeakTTS`, the one the flows speak with: every
instance shares that process-wide synthesizer (espeak-ng keeps global state and renders under
a lock); a render runs in a worker thread so the event loop keeps serving calls. livekit wraps
a non-streaming TTS in a StreamAdapter that speaks sentence by sentence.
"""

from __future__ import annotations

import asyncio

from livekit.agents import tts
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, APIConnectOptions
from livekit.agents.utils import shortuuid

from appliance.core.audio import FRAME_MS, SAMPLE_RATE
from appliance.speech import tts as speech_tts

__all__ = ["EspeakPluginTTS", "shared_synthesizer"]


def shared_synthesizer() -> speech_tts.EspeakTTS:
    """The process's one espeak-ng synthesizer (speech.tts.EspeakTTS is a per-process singleton)."""
    return speech_tts.EspeakTTS()


class EspeakPluginTTS(tts.TTS):
    """`voice` is an espeak-ng voice: "en-us", "en-gb-x-rp", "en-029", "fr", "de", ..."""

    def __init__(self, *, voice: str = "en-us") -> None:
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=False),
            sample_rate=SAMPLE_RATE,
            num_channels=1,
        )
        # Saying nothing selects the voice: an unknown one fails here, when the persona is
        # built, rather than when the caller is waiting for the first words.
        shared_synthesizer().synthesize("", voice)
        self.voice = voice

    @property
    def model(self) -> str:
        return self.voice

    @property
    def provider(self) -> str:
        return "espeak-ng"

    def prewarm(self) -> None:
        shared_synthesizer()

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> tts.ChunkedStream:
        return _EspeakStream(tts=self, input_text=text, conn_options=conn_options)


class _EspeakStream(tts.ChunkedStream):
    _tts: EspeakPluginTTS

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        pcm = await asyncio.to_thread(self._render)
        output_emitter.initialize(
            request_id=shortuuid("espeak_"),
            sample_rate=SAMPLE_RATE,
            num_channels=1,
            mime_type="audio/pcm",
            frame_size_ms=FRAME_MS,
        )
        output_emitter.push(pcm)
        output_emitter.flush()

    def _render(self) -> bytes:
        return shared_synthesizer().synthesize(self.input_text, self._tts.voice)
