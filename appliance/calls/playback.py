"""What the flow's voice plays into the call: spoken prompts, WAV files, looped hold music
and ringback, on the flow's one audio track.

Each play bumps a generation number, so a "finished playing" mark from something that was
since interrupted is ignored rather than moving the flow on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from appliance.flow.policy import flow_file
from appliance.rooms.room import AudioTrack
from appliance.speech import tones
from appliance.speech.audiofile import load_wav
from appliance.speech.tts import EspeakTTS


class Playback:
    def __init__(self, track: AudioTrack, tts: EspeakTTS, flows_dir: Path):
        self.track = track
        self.tts = tts
        self.flows_dir = flows_dir
        self.holding = False  # hold audio or ringback is looping
        self._generation = 0

    async def say(self, text: str, voice: str | None = None, on_done: Callable[[], None] | None = None) -> None:
        # espeak-ng takes tens of milliseconds: off the event loop that drives the 20 ms clock.
        pcm = await asyncio.get_running_loop().run_in_executor(None, self.tts.synthesize, text, voice)
        self.play(pcm, on_done)

    def play_file(self, path: str, on_done: Callable[[], None] | None = None) -> None:
        self.play(load_wav(flow_file(self.flows_dir, path)), on_done)  # ValueError outside flows/

    def play(self, pcm: bytes, on_done: Callable[[], None] | None = None) -> None:
        """Queue `pcm` after what is playing; `on_done` runs when it has played, unless interrupted."""
        self._generation += 1
        generation = self._generation
        self.track.write(pcm)
        if on_done is not None:
            self.track.mark(lambda: on_done() if generation == self._generation else None)

    def hold(self, path: str | None) -> None:
        """Loop the flow's hold audio, or the built-in soft tone."""
        self.loop(load_wav(flow_file(self.flows_dir, path)) if path else tones.hold())

    def ringback(self) -> None:
        self.loop(tones.ringback())  # what a caller expects to hear while the destination rings

    def loop(self, audio: bytes) -> None:
        """Play `audio` over and over until something else is said or played."""
        self.holding = True
        self._generation += 1
        generation = self._generation

        def more() -> None:
            if self.holding and generation == self._generation:
                self.track.write(audio)
                self.track.mark(more)

        more()

    def stop(self) -> None:
        """Silence now: drop what is queued and end any loop."""
        self.holding = False
        self._generation += 1
        self.track.clear()
