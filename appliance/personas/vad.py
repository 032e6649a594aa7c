"""The VAD a persona session listens with: any livekit VAD, with speech timed without the pause.

While it waits to be sure the caller stopped, a livekit VAD (silero) keeps counting the
silence into the utterance's `speech_duration`; livekit compares that with
`interruption.min_duration`, so a 0.3 s "right" passes a 0.5 s minimum once 0.2 s of the
pause is counted, and cuts the persona off. Here the pause is taken back out, so the minimum
means speech.
"""

from __future__ import annotations

import asyncio
import dataclasses

from livekit.agents import vad

__all__ = ["SpeechTimedVAD"]


class SpeechTimedVAD(vad.VAD):
    def __init__(self, inner: vad.VAD) -> None:
        super().__init__(capabilities=inner.capabilities)
        self._inner = inner

    @property
    def model(self) -> str:
        return self._inner.model

    @property
    def provider(self) -> str:
        return self._inner.provider

    @property
    def min_silence_duration(self) -> float | None:
        return getattr(self._inner, "min_silence_duration", None)

    def stream(self) -> vad.VADStream:
        return _SpeechTimedStream(self, self._inner.stream())


class _SpeechTimedStream(vad.VADStream):
    def __init__(self, outer: SpeechTimedVAD, inner: vad.VADStream) -> None:
        self._inner = inner
        super().__init__(outer)

    async def _main_task(self) -> None:
        forward = asyncio.create_task(self._forward_input())
        try:
            async for event in self._inner:
                if event.type == vad.VADEventType.INFERENCE_DONE and event.speaking:
                    event = dataclasses.replace(
                        event, speech_duration=max(0.0, event.speech_duration - event.raw_accumulated_silence))
                self._event_ch.send_nowait(event)
        finally:
            forward.cancel()
            await self._inner.aclose()

    async def _forward_input(self) -> None:
        async for item in self._input_ch:
            if isinstance(item, self._FlushSentinel):
                self._inner.flush()
            else:
                self._inner.push_frame(item)
        self._inner.end_input()
