"""A call in text: what the caller would hear, with typed speech, `#1`-style keys and silences.

The engine is the one real calls run; only the I/O differs: prompts are printed instead of
spoken, time is virtual (a silence advances it and fires due timers), and webhooks are
really called unless a test supplies their replies.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from appliance.core.clock import utcnow
from appliance.flow import engine as fe
from appliance.flow.actions import ActionTable, ignore
from appliance.flow.engine import FlowEngine
from appliance.flow.loader import QUEUES_FILE, LoadedFlow, load_queues
from appliance.flow.webhook import call_webhook

WebhookCaller = Callable[[str, dict[str, Any], float], Awaitable[fe.WebhookDone]]


class TextPersona(Protocol):
    """A persona the simulator can talk to in text (appliance.personas.text provides it)."""

    exit: tuple[str, dict[str, Any]] | None

    async def start(self) -> list[str]: ...
    async def reply(self, text: str) -> list[str]: ...
    async def close(self) -> None: ...


PersonaFactory = Callable[[str, dict[str, Any]], TextPersona]
SPEECH_SECONDS_PER_WORD = 0.4
_SILENCE = re.compile(r"^silence(?:\s+(\d+(?:\.\d+)?))?$", re.IGNORECASE)


async def _real_webhook(url: str, payload: dict[str, Any], timeout: float) -> fe.WebhookDone:
    return await call_webhook(url, payload, timeout)


@dataclass
class WebhookCall:
    url: str
    payload: dict[str, Any]


@dataclass
class Simulation:
    loaded: LoadedFlow
    variables: dict[str, Any] = field(default_factory=dict)
    now: dt.datetime = field(default_factory=utcnow)
    webhook: WebhookCaller = _real_webhook
    transfer_ok: bool = True
    # Staffed (the default): operators are logged in but none answers, so an escalated caller
    # holds until the step's max_wait, as a flow author expects to test it. Unstaffed: nobody
    # is logged in, the caller overflows at once (queue_result = no_operators), as on a box
    # with an empty console.
    queues_staffed: bool = True
    on_heard: Callable[[str], None] | None = None
    personas: PersonaFactory | None = None

    heard: list[str] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    webhook_calls: list[WebhookCall] = field(default_factory=list)
    elapsed: float = 0.0
    caller_hung_up: bool = False

    def __post_init__(self) -> None:
        # The queues beside the flow's file cap its escalations' max_wait, as on the box.
        queues = load_queues(Path(self.loaded.file).parent / QUEUES_FILE).queues
        self.engine = FlowEngine(self.loaded.flow, variables=dict(self.variables), clock=lambda: self._clock(),
                                 queue_max_wait={name: q.max_wait for name, q in queues.items() if q.max_wait})
        self._timers: dict[int, float] = {}
        self._events: list[fe.Event] = []
        self._recording_since: float | None = None
        self._recording_until: float | None = None
        self._persona: TextPersona | None = None
        self._actions = ActionTable("simulator", {
            fe.EnterStep: self._enter_step,
            fe.Say: self._say,
            fe.PlayFile: self._play_file,
            fe.PlayHold: self._play_hold,
            fe.StartTimer: self._start_timer,
            fe.CallWebhook: self._call_webhook,
            fe.StartRecording: self._start_recording,
            fe.StopRecording: self._stop_recording,
            fe.StartPersona: self._start_persona,
            fe.Transfer: self._ask_transfer,
            # Nothing to show in text: silence is not printed, there is no recogniser to
            # start or stop, variables are read at the end, and the engine itself knows it
            # escalated or hung up (`finished`, `outcome`).
            fe.StopSpeaking: ignore,
            fe.Listen: ignore,
            fe.StopListening: ignore,
            fe.SetVariable: ignore,
            fe.PauseRecording: ignore,
            fe.StartEgress: ignore,
            fe.Escalated: self._escalated,
            fe.Hangup: ignore,
        })

    def _escalated(self, _: fe.Escalated) -> None:
        if not self.queues_staffed:
            self._events.append(fe.QueueOverflow("no_operators"))

    def _clock(self) -> dt.datetime:
        return self.now + dt.timedelta(seconds=self.elapsed)

    @property
    def finished(self) -> bool:
        return self.engine.finished or self.caller_hung_up

    @property
    def outcome(self) -> str:
        if self.engine.outcome:
            return self.engine.outcome
        return "caller-hangup" if self.caller_hung_up else "in-progress"

    @property
    def step(self) -> str | None:
        return self.engine.step_id

    # --- the caller
    async def start(self) -> None:
        await self._run(self.engine.start())
        await self._drain()

    async def line(self, text: str) -> None:
        """One line of the caller: `#12` keys, `silence [N]`, `hangup`, or speech."""
        text = text.strip()
        silence = _SILENCE.match(text)
        if not text or silence:
            await self.silence(float(silence.group(1)) if silence and silence.group(1) else None)
        elif text.lower() == "hangup":
            await self.hangup()
        elif text.startswith("#"):
            for digit in text[1:] or "#":  # "#12" presses 1 then 2; "#" alone presses pound
                await self._feed(fe.Digit(digit))
        else:
            await self.speak(text)

    async def speak(self, text: str) -> None:
        self.elapsed += SPEECH_SECONDS_PER_WORD * max(1, len(text.split()))
        await self._due()
        if self._persona is not None:
            await self._persona_turn(text)
        elif not self.finished:
            await self._feed(fe.Speech(text))

    async def _start_persona(self, action: fe.StartPersona) -> None:
        if self.personas is None:
            self._events.append(fe.PersonaDone("failed", {"persona_error": "no persona runtime in this simulation"}))
            return
        self._persona = self.personas(action.name, action.variables)
        for line in await self._persona.start():
            self._hear(line)

    async def _persona_turn(self, text: str) -> None:
        persona = self._persona
        assert persona is not None
        for line in await persona.reply(text):
            if line:
                self._hear(line)
        if persona.exit is not None:
            exit_, variables = persona.exit
            self._persona = None
            await persona.close()
            await self._feed(fe.PersonaDone(exit_, variables))

    async def silence(self, seconds: float | None = None) -> None:
        """Stay silent for `seconds`, or until the next thing the flow waits for happens."""
        if seconds is None:
            live = [at for timer, at in self._timers.items() if timer == self.engine.awaited_timer]
            upcoming = live + ([self._recording_until] if self._recording_until else [])
            seconds = max(0.0, min(upcoming) - self.elapsed) if upcoming else 0.0
        target = self.elapsed + seconds
        await self._due(target)
        self.elapsed = max(self.elapsed, target)

    async def hangup(self) -> None:
        if self._persona is not None:
            await self._persona.close()
            self._persona = None
        self.caller_hung_up = True  # from now on nothing is heard, and the flow stops here
        if self._recording_since is not None:
            # A message left by hanging up is kept (outcome voicemail), as on a real call;
            # what the flow would do next is not run: there is nobody left to do it for.
            seconds = self.elapsed - self._recording_since
            self._recording_since = self._recording_until = None
            self.engine.handle(fe.RecordingDone(seconds))

    # --- the flow
    async def _due(self, until: float | None = None) -> None:
        until = self.elapsed if until is None else until
        while not self.finished:
            due = sorted((at, timer) for timer, at in self._timers.items() if at <= until)
            stop_at = self._recording_until
            if stop_at is not None and stop_at <= until and (not due or stop_at <= due[0][0]):
                self.elapsed = max(self.elapsed, stop_at)
                await self._run([fe.StopRecording()])
                await self._drain()
                continue
            if not due:
                return
            at, timer = due[0]
            del self._timers[timer]
            self.elapsed = max(self.elapsed, at)
            await self._feed(fe.TimerFired(timer))

    async def _feed(self, event: fe.Event) -> None:
        self._events.append(event)
        await self._drain()

    async def _drain(self) -> None:
        while self._events and not self.engine.finished:
            await self._run(self.engine.handle(self._events.pop(0)))

    def _transfer(self, action: fe.Transfer) -> fe.TransferDone:
        if action.mode == "bridge":
            # The caller hears the destination ring; a failed bridge is a busy destination.
            self._hear("[ringback]")
            return fe.TransferDone(self.transfer_ok, None if self.transfer_ok else "486 Busy Here")
        return fe.TransferDone(self.transfer_ok, None if self.transfer_ok else "503 Busy")

    def _hear(self, text: str) -> None:
        if self.caller_hung_up:
            return
        self.heard.append(text)
        if self.on_heard:
            self.on_heard(text)

    async def _run(self, actions: list[fe.Action]) -> None:
        await self._actions.perform(actions)

    # --- actions, as a caller would notice them in text
    def _enter_step(self, action: fe.EnterStep) -> None:
        self.steps.append(action.step)

    def _say(self, action: fe.Say) -> None:
        self._hear(action.text)
        self._events.append(fe.PlaybackDone())

    def _play_file(self, action: fe.PlayFile) -> None:
        self._hear(f"[audio {action.path}]")
        self._events.append(fe.PlaybackDone())

    def _play_hold(self, _: fe.PlayHold) -> None:
        self._hear("[hold music]")

    def _start_timer(self, action: fe.StartTimer) -> None:
        self._timers[action.timer] = self.elapsed + action.seconds

    async def _call_webhook(self, action: fe.CallWebhook) -> None:
        self.webhook_calls.append(WebhookCall(action.url, dict(action.payload)))
        self._events.append(await self.webhook(action.url, action.payload, action.timeout))

    def _start_recording(self, action: fe.StartRecording) -> None:
        if action.beep:
            self._hear("[beep]")
        self._recording_since = self.elapsed
        self._recording_until = self.elapsed + action.max_seconds

    def _stop_recording(self, _: fe.StopRecording) -> None:
        if self._recording_since is None:
            return  # the max-length stop and the caller's # can both arrive; the first one counts
        seconds = self.elapsed - self._recording_since
        self._recording_since = self._recording_until = None
        self._events.append(fe.RecordingDone(seconds))

    def _ask_transfer(self, action: fe.Transfer) -> None:
        self._events.append(self._transfer(action))
