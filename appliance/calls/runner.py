"""Runs a flow engine in a call's room: speaks and plays, listens, calls webhooks, records
voicemail and asks for transfers, feeding back what happened as engine events.

The flow's voice is a room participant like any other; the engine stays pure (see
appliance.flow.engine) and all waiting happens here, on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from appliance.core.clock import utcnow
from appliance.flow import engine as fe
from appliance.flow import intents
from appliance.flow.engine import FlowEngine
from appliance.flow.webhook import call_webhook
from appliance.observability import metrics
from appliance.observability.logging import log_extra
from appliance.recording.wavfile import WavWriter
from appliance.rooms.room import AudioTrack, Participant, Room, TickView
from appliance.speech import tones
from appliance.speech.audiofile import load_wav
from appliance.speech.recognizer import Recognizer
from appliance.speech.tts import EspeakTTS
from appliance.flow.policy import destination_allowed, flow_file
from appliance.personas.dispatcher import PersonaDispatcher, PersonaJob
from appliance.storage import Storage
from appliance.core.audio import SAMPLE_RATE, duration_s

log = logging.getLogger(__name__)

HANGUP_GRACE_S = 0.3  # let the last prompt's final frames leave the worker's buffer
LISTEN_BATCH_FRAMES = 5  # recognise 100 ms at a time, off the event loop


class _Listener:
    """Recognises the caller's speech with a grammar; runs pocketsphinx off the event loop."""

    def __init__(self, grammar: str, on_text: Callable[[str], None]):
        self.recognizer = Recognizer(grammar)
        self.on_text = on_text
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
        try:
            text = await asyncio.get_running_loop().run_in_executor(None, self.recognizer.feed, chunk)
        finally:
            self.busy = False
        if text and not self.closed:
            self.on_text(text)


class _Voicemail:
    def __init__(self, path: Path):
        self.path = path
        self.writer = WavWriter(path, channels=1, rate=SAMPLE_RATE, header_every_bytes=SAMPLE_RATE * 2)

    def push(self, frame: bytes) -> None:
        self.writer.write(frame)

    def close(self) -> float:
        self.writer.close()
        return self.writer.duration_s


@dataclass
class CallServices:
    """What every call's runner uses, built once by the call manager."""

    tts: EspeakTTS
    storage: Storage
    personas: PersonaDispatcher
    flows_dir: Path
    recording_dir: Path
    transfers_allowed: list[str]
    persona_fallback: Callable[[str], str]  # persona name → what to say when it fails


@dataclass
class CallControl:
    """What the runner may do to the caller's SIP leg."""

    hangup: Callable[[str], None]
    transfer: Callable[[str], None]  # blind, by REFER
    bridge: Callable[[str, float], None]  # dial the destination and join it to the room; ring timeout
    send_dtmf: Callable[[str], None]


class FlowRunner:
    def __init__(self, call_id: str, room: Room, engine: FlowEngine, services: CallServices,
                 control: CallControl, caller: str = "caller"):
        self.call_id = call_id
        self.room = room
        self.engine = engine
        self.services = services
        self.tts = services.tts
        self.storage = services.storage
        self._hangup = control.hangup
        self._transfer = control.transfer
        self._bridge = control.bridge
        self._send_dtmf = control.send_dtmf
        self.flows_dir = services.flows_dir
        self.recording_dir = services.recording_dir
        self.caller = caller
        self._persona: PersonaJob | None = None
        self._persona_variables: dict[str, Any] = {}
        self._persona_transfer = False
        self.voice = Participant("flow", kind="flow", subscribe=False)
        self.track = AudioTrack("flow-voice")
        room.join(self.voice)
        self.voice.publish(self.track)
        self._events: asyncio.Queue[fe.Event] = asyncio.Queue()
        self._speech = 0  # generation of what is playing; stale playback marks are ignored
        self._timers: list[asyncio.TimerHandle] = []
        self._task: asyncio.Task[None] | None = None
        self._listener: _Listener | None = None
        self._voicemail: _Voicemail | None = None
        self._holding = False  # hold audio or ringback is looping
        room.observers.append(self)
        self._handlers: dict[type, Callable[[Any], Any]] = {
            fe.EnterStep: self._enter_step,
            fe.Say: self._say,
            fe.PlayFile: self._play_file,
            fe.PlayHold: self._play_hold,
            fe.StopSpeaking: self._stop_speaking,
            fe.StartTimer: self._start_timer,
            fe.Listen: self._listen,
            fe.StopListening: self._stop_listening,
            fe.SetVariable: self._set_variable,
            fe.CallWebhook: self._call_webhook,
            fe.Escalated: self._escalated,
            fe.StartRecording: self._start_recording,
            fe.StopRecording: self._stop_recording,
            fe.Transfer: self._ask_transfer,
            fe.StartPersona: self._start_persona,
            fe.Hangup: self._do_hangup,
        }

    # --- lifecycle and inputs
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"flow-{self.call_id}")

    def stop(self) -> None:
        """The call ended: stop everything, keep what was recorded."""
        for timer in self._timers:
            timer.cancel()
        if self._task:
            self._task.cancel()
        if self in self.room.observers:
            self.room.observers.remove(self)
        self._stop_listening(None)
        self._finish_voicemail()
        if self._persona is not None:
            self.services.personas.release(self._persona)
            self._persona = None

    def dtmf(self, digit: str) -> None:
        self._events.put_nowait(fe.Digit(digit))

    def transfer_done(self, ok: bool, error: str | None) -> None:
        if self._holding:
            self._stop_speaking(None)  # the ringback of a bridge transfer
        if self._persona_transfer:
            # The persona asked for it: success ends the call, failure is the persona's failure.
            self._persona_transfer = False
            if not ok:
                self._events.put_nowait(fe.PersonaDone("failed", {"transfer_error": error or "failed"}))
            return
        self._events.put_nowait(fe.TransferDone(ok, error))

    def on_tick(self, view: TickView) -> None:
        frame = view.published.get(self.caller)
        if frame is None:
            return
        if self._listener is not None:
            self._listener.push(frame)
        if self._voicemail is not None:
            self._voicemail.push(frame)

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
            result = self._handlers[type(action)](action)
            if asyncio.iscoroutine(result):
                await result

    # --- actions
    def _enter_step(self, action: fe.EnterStep) -> None:
        metrics.flow_steps.labels(self.engine.flow.name).inc()
        self.storage.add_event(self.call_id, "step", {"step": action.step, "action": action.action})

    async def _say(self, action: fe.Say) -> None:
        self.storage.add_event(self.call_id, "say", {"text": action.text})
        loop = asyncio.get_running_loop()
        pcm = await loop.run_in_executor(None, self.tts.synthesize, action.text, action.voice)
        self._play(pcm)

    def _play_file(self, action: fe.PlayFile) -> None:
        self.storage.add_event(self.call_id, "play", {"file": action.path})
        self._play(load_wav(flow_file(self.flows_dir, action.path)))  # ValueError outside flows/

    def _play(self, pcm: bytes, notify: bool = True) -> None:
        self._speech += 1
        generation = self._speech
        self.track.write(pcm)
        if notify:
            self.track.mark(lambda: self._played(generation))

    def _played(self, generation: int) -> None:
        if generation == self._speech:
            self._events.put_nowait(fe.PlaybackDone())

    def _play_hold(self, action: fe.PlayHold) -> None:
        self._loop(load_wav(flow_file(self.flows_dir, action.path)) if action.path else tones.hold())

    def _loop(self, audio: bytes) -> None:
        """Play `audio` over and over until something else is said or played."""
        self._holding = True
        self._speech += 1
        generation = self._speech

        def more() -> None:
            if self._holding and generation == self._speech:
                self.track.write(audio)
                self.track.mark(more)

        more()

    def _stop_speaking(self, _: fe.StopSpeaking | None) -> None:
        self._holding = False
        self._speech += 1
        self.track.clear()

    def _start_timer(self, action: fe.StartTimer) -> None:
        loop = asyncio.get_running_loop()
        self._timers.append(loop.call_later(action.seconds, self._events.put_nowait, fe.TimerFired(action.timer)))

    def _listen(self, action: fe.Listen) -> None:
        self._stop_listening(None)
        grammar = intents.grammar(action.intents, digits=action.digits)
        self._listener = _Listener(grammar, self._heard)

    def _heard(self, text: str) -> None:
        self.storage.add_event(self.call_id, "speech", {"text": text})
        self._events.put_nowait(fe.Speech(text))

    def _stop_listening(self, _: fe.StopListening | None) -> None:
        if self._listener is not None:
            self._listener.closed = True
            self._listener = None

    def _set_variable(self, action: fe.SetVariable) -> None:
        self.storage.add_event(self.call_id, "variable", {"name": action.name, "value": action.value})

    async def _call_webhook(self, action: fe.CallWebhook) -> None:
        self.storage.add_event(self.call_id, "webhook", {"url": action.url})
        # Run beside the flow so keys pressed meanwhile are queued, not lost.
        async def call() -> None:
            result = await call_webhook(action.url, action.payload, action.timeout, self.call_id)
            self.storage.add_event(self.call_id, "webhook_result", {"ok": result.ok, "error": result.error})
            self._events.put_nowait(result)

        asyncio.get_running_loop().create_task(call())

    def _escalated(self, action: fe.Escalated) -> None:
        self.storage.add_event(self.call_id, "escalated", {"queue": action.queue})

    def _start_recording(self, action: fe.StartRecording) -> None:
        if action.beep:
            self._play(tones.beep(), notify=False)
        when = utcnow()
        path = self.recording_dir / f"{when:%Y}" / f"{when:%m}" / f"{when:%d}" / f"{self.call_id}-{action.kind}.wav"
        self._voicemail = _Voicemail(path)
        self.storage.add_event(self.call_id, "recording_started", {"kind": action.kind, "path": str(path)})
        loop = asyncio.get_running_loop()
        self._timers.append(loop.call_later(action.max_seconds + duration_s(tones.beep()), self._stop_recording, None))

    def _stop_recording(self, _: fe.StopRecording | None) -> None:
        result = self._finish_voicemail()
        if result is not None:
            self._events.put_nowait(fe.RecordingDone(result[0], result[1]))

    def _finish_voicemail(self) -> tuple[float, str] | None:
        if self._voicemail is None:
            return None
        voicemail, self._voicemail = self._voicemail, None
        seconds = voicemail.close()
        self.storage.add_recording(self.call_id, "voicemail", str(voicemail.path), round(seconds, 2))
        self.storage.add_event(self.call_id, "voicemail", {"path": str(voicemail.path), "seconds": round(seconds, 2)})
        return seconds, str(voicemail.path)

    def _ask_transfer(self, action: fe.Transfer) -> None:
        self.storage.add_event(self.call_id, "transfer", {"to": action.to, "mode": action.mode})
        # Checked again here: flows were checked when loaded, but this is what really dials.
        if not destination_allowed(action.to, self.services.transfers_allowed):
            log.warning("transfer destination refused", extra=log_extra(call_id=self.call_id, pii={"to": action.to}))
            self.storage.add_event(self.call_id, "transfer_refused", {"to": action.to})
            self._events.put_nowait(fe.TransferDone(False, "destination not allowed"))
        elif action.mode == "bridge":
            self._loop(tones.ringback())  # what a caller expects to hear while the destination rings
            self._bridge(action.to, action.timeout)
        else:
            self._transfer(action.to)

    def _start_persona(self, action: fe.StartPersona) -> None:
        self._persona_variables = {}
        job = self.services.personas.start(self.call_id, self.room, action.name, action.variables,
                                           on_exit=self._persona_exit, on_action=self._persona_action)
        if job is None:
            self._persona_exit("failed", {"persona_error": "no persona worker available"}, action.name)
            return
        self._persona = job

    def _persona_exit(self, exit_: str, variables: dict[str, Any], name: str | None = None) -> None:
        persona = name or (self._persona.persona if self._persona else "")
        self._persona = None
        variables = {**self._persona_variables, **variables}
        if exit_ == "failed":
            # Never leave the caller in silence: say something now, then take the failed branch.
            text = self.services.persona_fallback(persona)
            self.storage.add_event(self.call_id, "say", {"text": text})
            pcm = self.tts.synthesize(text)
            self._speech += 1
            self.track.write(pcm)
            self.track.mark(lambda: self._events.put_nowait(fe.PersonaDone(exit_, variables)))
        else:
            self._events.put_nowait(fe.PersonaDone(exit_, variables))

    def _persona_action(self, action: str, arguments: dict[str, Any]) -> None:
        self.storage.add_event(self.call_id, "persona_action", {"action": action, "arguments": arguments})
        if action == "set_variable" and isinstance(arguments.get("name"), str):
            self._persona_variables[arguments["name"]] = arguments.get("value")
        elif action == "send_dtmf":
            self._send_dtmf(str(arguments.get("digits", "")))
        elif action == "transfer":
            to = str(arguments.get("to", ""))
            if not destination_allowed(to, self.services.transfers_allowed):
                self.storage.add_event(self.call_id, "transfer_refused", {"to": to})
                return
            if self._persona is not None:
                self.services.personas.release(self._persona)
                self._persona = None
            self._persona_transfer = True
            self._transfer(to)

    async def _do_hangup(self, action: fe.Hangup) -> None:
        await asyncio.sleep(HANGUP_GRACE_S)
        self._hangup(action.reason)
