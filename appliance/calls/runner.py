"""Runs a flow engine in a call's room: carries out each engine action through one table
(appliance.flow.actions) and feeds back what happened as engine events.

The flow's voice is a room participant like any other; the engine stays pure (see
appliance.flow.engine) and all waiting happens here, on the event loop. Each concern has
its own home: playback.py (prompts, hold music), listener.py (speech), transfers.py (the
allow-list, REFER or bridge), persona_bridge.py (persona steps) and
appliance.recording.voicemail (voicemail files).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from appliance.calls.listener import Listener
from appliance.calls.persona_bridge import PersonaBridge
from appliance.calls.playback import Playback
from appliance.calls.transfers import Transfers
from appliance.core.audio import duration_s
from appliance.flow import engine as fe
from appliance.flow import intents
from appliance.flow.actions import ActionTable
from appliance.flow.engine import FlowEngine
from appliance.flow.webhook import call_webhook
from appliance.observability import metrics
from appliance.observability.logging import log_extra
from appliance.personas.dispatcher import PersonaDispatcher
from appliance.recording.converter import RecordingConverter
from appliance.recording.voicemail import Voicemail
from appliance.rooms.room import AudioTrack, Participant, Room, TickView
from appliance.speech import tones
from appliance.speech.tts import EspeakTTS
from appliance.storage import Storage

log = logging.getLogger(__name__)

HANGUP_GRACE_S = 0.3  # let the last prompt's final frames leave the worker's buffer
OPERATOR_TRANSFER_RING_S = 30.0  # how long an operator's transfer destination may ring


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
    converter: RecordingConverter | None = None  # None: voicemail stays WAV


@dataclass
class CallControl:
    """What the runner may do to the caller's SIP leg."""

    hangup: Callable[[str], None]
    transfer: Callable[[str], None]  # blind, by REFER
    bridge: Callable[[str, float], None]  # dial the destination and join it to the room; ring timeout
    send_dtmf: Callable[[str], None]
    escalate: Callable[[str], None]  # queue the caller for an operator (the desk answers through the runner)
    pause_recording: Callable[[bool, str], str | None]  # (paused, by) → why not: PCI pause of the recording
    start_egress: Callable[[fe.StartEgress], None]  # the call's audio, live, to an allow-listed WebSocket


class FlowRunner:
    def __init__(self, call_id: str, room: Room, engine: FlowEngine, services: CallServices,
                 control: CallControl, caller: str = "caller"):
        self.call_id = call_id
        self.room = room
        self.engine = engine
        self.services = services
        self.storage = services.storage
        self.caller = caller
        self._hangup = control.hangup
        self._pause_recording = control.pause_recording
        self._start_egress = control.start_egress
        self._escalate_to = control.escalate
        self._transfer_listener: Callable[[bool, str | None], None] | None = None
        self.voice = Participant("flow", kind="flow", subscribe=False)
        self.track = AudioTrack("flow-voice")
        room.join(self.voice)
        self.voice.publish(self.track)
        self._events: asyncio.Queue[fe.Event] = asyncio.Queue()
        self._timers: list[asyncio.TimerHandle] = []
        self._task: asyncio.Task[None] | None = None
        self._listener: Listener | None = None
        self._voicemail: Voicemail | None = None
        self.playback = Playback(self.track, services.tts, services.flows_dir)
        self.transfers = Transfers(call_id, services.transfers_allowed, self.storage, self.playback,
                                   refer=control.transfer, bridge=control.bridge)
        self.persona = PersonaBridge(call_id, room, services.personas, self.storage, self.playback,
                                     self.transfers, control.send_dtmf, services.persona_fallback,
                                     done=self._events.put_nowait, pause_recording=control.pause_recording)
        room.observers.append(self)
        self._actions = self._action_table()

    def _action_table(self) -> ActionTable:
        return ActionTable("flow runner", {
            fe.EnterStep: self._enter_step,
            fe.Say: self._say,
            fe.PlayFile: self._play_file,
            fe.PlayHold: lambda action: self.playback.hold(action.path),
            fe.StopSpeaking: lambda _: self.playback.stop(),
            fe.StartTimer: lambda action: self._after(action.seconds, fe.TimerFired(action.timer)),
            fe.Listen: self._listen,
            fe.StopListening: lambda _: self._stop_listening(),
            fe.SetVariable: self._set_variable,
            fe.CallWebhook: self._call_webhook,
            fe.Escalated: self._escalate,
            fe.StartRecording: self._start_recording,
            fe.StopRecording: lambda _: self._stop_recording(),
            fe.Transfer: self._transfer,
            fe.StartPersona: self.persona.start,
            fe.Hangup: self._do_hangup,
            fe.PauseRecording: self._record,
            fe.StartEgress: self._start_egress,
        })

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
        self._stop_listening()
        self._finish_voicemail()
        self.persona.release()

    def dtmf(self, digit: str) -> None:
        self._events.put_nowait(fe.Digit(digit))

    def operator_transfer(self, to: str, done: Callable[[bool, str | None], None]) -> bool:
        """An operator sends the caller on (bridged, so the recording goes on); False when not allowed.

        The caller hears ringback meanwhile; `done` learns whether the destination answered."""
        self._transfer_listener = done
        if not self.transfers.request(to, "bridge", OPERATOR_TRANSFER_RING_S):
            self._transfer_listener = None
            return False
        return True

    def transfer_done(self, ok: bool, error: str | None) -> None:
        if self.playback.holding:
            self.playback.stop()  # the ringback of a bridge transfer
        if self._transfer_listener is not None:
            listener, self._transfer_listener = self._transfer_listener, None
            listener(ok, error)
            return
        if self.persona.transferring:
            self.persona.transfer_done(ok, error)
            return
        self._events.put_nowait(fe.TransferDone(ok, error))

    # --- the queue (the operator desk, through the call manager)
    def queue_event(self, event: fe.OperatorConnected | fe.OperatorReturned | fe.QueueOverflow) -> None:
        self._events.put_nowait(event)

    def announce(self, text: str) -> None:
        """Say the caller's place in line over the hold audio, then hold again."""
        step = self.engine.queued
        if step is None:
            return

        async def say() -> None:
            pcm = await asyncio.get_running_loop().run_in_executor(None, self.services.tts.synthesize, text, None)
            if self.engine.queued is not step:
                return  # an operator answered (or the caller overflowed) while it was synthesised

            def resume() -> None:
                if self.engine.queued is step:
                    self.playback.hold(step.escalate.hold_audio)

            self.playback.stop()
            self.playback.play(pcm, on_done=resume)

        asyncio.get_running_loop().create_task(say())

    def hold(self, on: bool) -> None:
        """The operator put the caller on hold (or took them off it)."""
        step = self.engine.escalation
        if on:
            self.playback.hold(step.escalate.hold_audio if step else None)
        else:
            self.playback.stop()

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
            await self._actions.perform(self.engine.start())
            while not self.engine.finished:
                event = await self._events.get()
                await self._actions.perform(self.engine.handle(event))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("flow runner failed", extra=log_extra(call_id=self.call_id))
            self._hangup("flow-error")

    def _after(self, seconds: float, event: fe.Event) -> None:
        loop = asyncio.get_running_loop()
        self._timers.append(loop.call_later(seconds, self._events.put_nowait, event))

    def _played(self) -> None:
        self._events.put_nowait(fe.PlaybackDone())

    # --- actions
    def _enter_step(self, action: fe.EnterStep) -> None:
        metrics.flow_steps.labels(self.engine.flow.name).inc()
        self.storage.add_event(self.call_id, "step", {"step": action.step, "action": action.action})

    async def _say(self, action: fe.Say) -> None:
        self.storage.add_event(self.call_id, "say", {"text": action.text})
        await self.playback.say(action.text, action.voice, on_done=self._played)

    def _play_file(self, action: fe.PlayFile) -> None:
        self.storage.add_event(self.call_id, "play", {"file": action.path})
        self.playback.play_file(action.path, on_done=self._played)

    def _listen(self, action: fe.Listen) -> None:
        self._stop_listening()
        self._listener = Listener(intents.grammar(action.intents, digits=action.digits), self._heard,
                                  lambda: self._events.put_nowait(fe.SpeechStarted()))

    def _heard(self, text: str) -> None:
        if text:
            self.storage.add_event(self.call_id, "speech", {"text": text})
        self._events.put_nowait(fe.Speech(text))

    def _stop_listening(self) -> None:
        if self._listener is not None:
            self._listener.closed = True
            self._listener = None

    def _escalate(self, action: fe.Escalated) -> None:
        self.storage.add_event(self.call_id, "escalated", {"queue": action.queue})
        self._escalate_to(action.queue)

    def _record(self, action: fe.PauseRecording) -> None:
        error = self._pause_recording(action.paused, action.by)
        if error:
            log.warning("record step did nothing", extra=log_extra(call_id=self.call_id, error=error))

    def _set_variable(self, action: fe.SetVariable) -> None:
        self.storage.add_event(self.call_id, "variable", {"name": action.name, "value": action.value})

    def _call_webhook(self, action: fe.CallWebhook) -> None:
        self.storage.add_event(self.call_id, "webhook", {"url": action.url})

        # Run beside the flow so keys pressed meanwhile are queued, not lost.
        async def call() -> None:
            result = await call_webhook(action.url, action.payload, action.timeout, self.call_id)
            self.storage.add_event(self.call_id, "webhook_result", {"ok": result.ok, "error": result.error})
            self._events.put_nowait(result)

        asyncio.get_running_loop().create_task(call())

    def _start_recording(self, action: fe.StartRecording) -> None:
        if action.beep:
            self.playback.play(tones.beep())
        self._voicemail = Voicemail(self.storage, self.call_id, self.services.recording_dir, action.kind,
                                    self.services.converter)
        # The beep is heard before the message starts, so it does not count against its length.
        loop = asyncio.get_running_loop()
        self._timers.append(loop.call_later(action.max_seconds + duration_s(tones.beep()), self._stop_recording))

    def _stop_recording(self) -> None:
        result = self._finish_voicemail()
        if result is not None:
            self._events.put_nowait(fe.RecordingDone(*result))

    def _finish_voicemail(self) -> tuple[float, str] | None:
        if self._voicemail is None:
            return None
        voicemail, self._voicemail = self._voicemail, None
        return voicemail.finish(), str(voicemail.path)

    def _transfer(self, action: fe.Transfer) -> None:
        self.storage.add_event(self.call_id, "transfer", {"to": action.to, "mode": action.mode})
        if not self.transfers.request(action.to, action.mode, action.timeout):
            self._events.put_nowait(fe.TransferDone(False, "destination not allowed"))

    async def _do_hangup(self, action: fe.Hangup) -> None:
        await asyncio.sleep(HANGUP_GRACE_S)
        self._hangup(action.reason)
