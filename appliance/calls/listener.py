"""Recognising the caller's speech during a flow's menu or gather, against that step's grammar."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from appliance.speech.recognizer import Recognizer

LISTEN_BATCH_FRAMES = 5  # recognise 100 ms at a time, off the event loop


class Listener:
    """Feeds the caller's frames to a recogniser off the event loop; reports when the caller
    starts an utterance and what it heard in it ("" for nothing) when it ends."""

    def __init__(self, grammar: str, on_text: Callable[[str], None], on_started: Callable[[], None]):
        self.recognizer = Recognizer(grammar)
        self.on_text = on_text
        self.on_started = on_started
        self.frames: list[bytes] = []
        self.busy = False
        self.closed = False

    def push(self, frame: bytes) -> None:
        self.frames.append(frame)
        if len(self.frames) >= LISTEN_BATCH_FRAMES and not self.busy:
            chunk, self.frames = b"".join(self.frames), []
            self.busy = True
            asyncio.get_running_loop().create_task(self._recognise(chunk))

    async def _recognise(self, chunk: bytes) -> None:
        was_speaking = self.recognizer.speaking
        try:
            text = await asyncio.get_running_loop().run_in_executor(None, self.recognizer.feed, chunk)
        finally:
            self.busy = False
        if self.closed:
            return
        if self.recognizer.speaking and not was_speaking:
            self.on_started()
        if text is not None:
            self.on_text(text)
