"""Runs a flow engine in a call's room: speaks its prompts, feeds it keys and timers.

The flow's voice is a room participant like any other; the engine stays pure (see
appliance.flow.engine) and all waiting happens here, on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from appliance.flow import engine as fe
from appliance.flow.engine import FlowEngine
from appliance.observability import metrics
from appliance.observability.logging import log_extra
from appliance.rooms.room import AudioTrack, Participant, Room
from appliance.speech.tts import EspeakTTS
from appliance.storage import Storage

log = logging.getLogger(__name__)

HANGUP_GRACE_S = 0.3  # let the last prompt's final frames leave the worker's buffer


class FlowRunner:
    def __init__(
        self,
        call_id: str,
        room: Room,
        engine: FlowEngine,
        tts: EspeakTTS,
        storage: Storage,
        hangup: Callable[[str], None],
    ):
        self.call_id = call_id
        self.engine = engine
        self.tts = tts
        self.storage = storage
        self._hangup = hangup
        self.voice = Participant("flow", kind="flow")
        self.voice.subscribe = False
        self.track = AudioTrack("flow-voice")
        room.join(self.voice)
        self.voice.publish(self.track)
        self._events: asyncio.Queue[fe.Event] = asyncio.Queue()
        self._speech = 0  # generation of the prompt playing; stale playback marks are ignored
        self._timers: list[asyncio.TimerHandle] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"flow-{self.call_id}")

    def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        if self._task:
            self._task.cancel()

    def dtmf(self, digit: str) -> None:
        self._events.put_nowait(fe.Digit(digit))

    async def _run(self) -> None:
        try:
            await self._execute(self.engine.start())
            while not self.engine.finished:
                event = await self._events.get()
                await self._execute(self.engine.handle(event))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("flow runner failed", extra=log_extra(call_id=self.call_id))
            self._hangup("flow-error")

    async def _execute(self, actions: list[fe.Action]) -> None:
        for action in actions:
            if isinstance(action, fe.EnterStep):
                metrics.flow_steps.labels(self.engine.flow.name).inc()
                self.storage.add_event(self.call_id, "step", {"step": action.step, "action": action.action})
            elif isinstance(action, fe.Say):
                await self._say(action.text)
            elif isinstance(action, fe.StopSpeaking):
                self._speech += 1
                self.track.clear()
            elif isinstance(action, fe.StartTimer):
                loop = asyncio.get_running_loop()
                timer = fe.TimerFired(action.timer)
                self._timers.append(loop.call_later(action.seconds, self._events.put_nowait, timer))
            elif isinstance(action, fe.SetVariable):
                self.storage.add_event(self.call_id, "variable", {"name": action.name})
            elif isinstance(action, fe.Hangup):
                await asyncio.sleep(HANGUP_GRACE_S)
                self._hangup(action.reason)

    async def _say(self, text: str) -> None:
        self.storage.add_event(self.call_id, "say", {"text": text})
        loop = asyncio.get_running_loop()
        pcm = await loop.run_in_executor(None, self.tts.synthesize, text)
        self._speech += 1
        generation = self._speech
        self.track.write(pcm)
        self.track.mark(lambda: self._played(generation))

    def _played(self, generation: int) -> None:
        if generation == self._speech:
            self._events.put_nowait(fe.PlaybackDone())
