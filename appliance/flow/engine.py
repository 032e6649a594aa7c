"""The flow engine: a pure state machine, events in, actions out.

It owns no I/O: the runner plays `Say`, arms `StartTimer`, listens, calls webhooks, records
and transfers, and feeds back what happened as events. The only outside input is the
clock, injected, for business hours. So the same engine drives real calls, the text
simulator and flow tests alike. The events and actions are defined in `messages` (and
importable from here); what each kind of step does is in `steps`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from appliance.core.clock import WallClock, utcnow
from appliance.flow.messages import (
    Action,
    CallWebhook,
    Digit,
    EnterStep,
    Escalated,
    Event,
    Hangup,
    Listen,
    OperatorConnected,
    OperatorReturned,
    PauseRecording,
    PersonaDone,
    PlaybackDone,
    PlayFile,
    PlayHold,
    QueueOverflow,
    RecordingDone,
    Say,
    SetVariable,
    Speech,
    SpeechStarted,
    StartEgress,
    StartPersona,
    StartRecording,
    StartTimer,
    StopListening,
    StopRecording,
    StopSpeaking,
    TimerFired,
    Transfer,
    TransferDone,
    WebhookDone,
)
from appliance.flow.schema import EscalateStep, Flow, PersonaStep, Step, TransferStep, WebhookStep
from appliance.flow.steps import STEP_HANDLERS, hold_in_queue, overflow

__all__ = [
    "MAX_STEPS_PER_EVENT", "Action", "CallWebhook", "Digit", "EnterStep", "Escalated", "Event", "FlowEngine",
    "Hangup", "Listen", "OperatorConnected", "OperatorReturned", "PauseRecording", "PersonaDone", "QueueOverflow",
    "PlayFile", "PlayHold", "PlaybackDone", "RecordingDone", "Say", "SetVariable", "Speech", "SpeechStarted",
    "StartEgress", "StartPersona", "StartRecording", "StartTimer", "StopListening", "StopRecording", "StopSpeaking",
    "TimerFired", "Transfer", "TransferDone", "WebhookDone",
]

MAX_STEPS_PER_EVENT = 100  # a goto loop with no waiting step must not hang the call


@dataclass
class _Wait:
    """What the current step waits for."""

    playback: bool = False
    input: bool = False  # keys and speech
    listening: bool = False  # a Listen is out: speech choices or spoken digits
    timer: int | None = None
    # The step a webhook, transfer or persona runs for; the result event goes back to it.
    webhook: WebhookStep | None = None
    recording: bool = False
    transfer: TransferStep | None = None
    persona: PersonaStep | None = None
    # The escalation the caller is in: waiting in its queue, or (operator set) talking to an operator.
    escalation: EscalateStep | None = None
    operator: str | None = None


@dataclass
class FlowEngine:
    flow: Flow
    variables: dict[str, Any] = field(default_factory=dict)
    clock: WallClock = utcnow
    # queues.yaml's max_wait per queue: caps an escalate step's own max_wait.
    queue_max_wait: dict[str, float] = field(default_factory=dict)
    step_id: str | None = None
    finished: bool = False
    outcome: str | None = None  # hangup | escalated:<queue> | transferred:<to> | voicemail
    _wait: _Wait = field(default_factory=_Wait)
    _tries: int = 0
    _digits: str = ""
    _timers: int = 0
    _out: list[Action] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.variables = {**self.flow.variables, **self.variables}

    @property
    def awaited_timer(self) -> int | None:
        """The timer the current step waits for (earlier ones are stale and ignored), if any."""
        return self._wait.timer

    @property
    def escalation(self) -> EscalateStep | None:
        """The escalate step the caller is queued (or with an operator) in, if any."""
        return self._wait.escalation

    @property
    def queued(self) -> EscalateStep | None:
        """The escalate step while the caller waits in its queue (no operator on the line)."""
        return self._wait.escalation if self._wait.operator is None else None

    @property
    def step(self) -> Step:
        assert self.step_id is not None
        return self.flow.steps[self.step_id]

    def start(self) -> list[Action]:
        self._enter(self.flow.entry)
        return self._take()

    def handle(self, event: Event) -> list[Action]:
        if self.finished:
            return []
        handler = _HANDLERS.get(type(event))
        if handler is not None:
            handler(self, event)
        return self._take()

    # --- events
    def _on_playback(self, _: PlaybackDone) -> None:
        if not self._wait.playback:
            return
        self._wait.playback = False
        step = self.step
        played = STEP_HANDLERS[type(step)].played
        if played is not None:
            played(self, step)

    def _on_timer(self, event: TimerFired) -> None:
        if event.timer != self._wait.timer:
            return  # a timer from an earlier step or try
        self._wait.timer = None
        step = self.step
        timeout = STEP_HANDLERS[type(step)].timeout
        if timeout is None:  # only menu, gather and escalate arm timers: a bug of ours
            raise RuntimeError(f"a '{step.action}' step has no timeout to fire")
        timeout(self, step)

    def _on_digit(self, event: Digit) -> None:
        if self._wait.recording and event.digit == "#":
            self._out.append(StopRecording())
            return
        if not self._wait.input:
            return
        self._interrupt()
        step = self.step
        digit = STEP_HANDLERS[type(step)].digit
        if digit is not None:
            digit(self, step, event.digit)

    def _on_speech(self, event: Speech) -> None:
        if not self._wait.input:
            return
        step = self.step
        speech = STEP_HANDLERS[type(step)].speech
        if speech is not None:
            speech(self, step, event.text)

    def _on_speech_started(self, _: SpeechStarted) -> None:
        if not self._wait.input:
            return
        step = self.step
        started = STEP_HANDLERS[type(step)].speech_started
        if started is not None:
            started(self, step)

    def _on_webhook(self, event: WebhookDone) -> None:
        if self._wait.webhook is None:
            return
        step, self._wait.webhook = self._wait.webhook, None
        if not event.ok:
            self._set("webhook_error", event.error or "error")
            self._go(step.webhook.on_error)
            return
        for name, value in event.data.items():
            self._set(name, value)
        self._go(step.next)

    def _on_recording(self, event: RecordingDone) -> None:
        if not self._wait.recording:
            return
        self._wait.recording = False
        self.outcome = "voicemail"
        self._set("voicemail_seconds", round(event.seconds, 1))
        self._go(self.step.next)

    def _on_transfer(self, event: TransferDone) -> None:
        if self._wait.transfer is None:
            return
        transfer, self._wait.transfer = self._wait.transfer.transfer, None
        if event.ok and transfer.mode == "bridge":
            # The caller stays on the line, talking to the destination: the flow's part is over.
            self.outcome = f"transferred:{transfer.to}"
            self.finished = True
        elif event.ok:
            self.outcome = f"transferred:{transfer.to}"
            self._finish("transferred")
        else:
            self._set("transfer_error", event.error or "error")
            self._go(transfer.on_error)

    def _on_persona(self, event: PersonaDone) -> None:
        if self._wait.persona is None:
            return
        persona, self._wait.persona = self._wait.persona.persona, None
        for name, value in event.variables.items():
            self._set(name, value)
        target = {"resolved": persona.resolved, "human": persona.human}.get(event.exit, persona.failed)
        self._go(target)

    def _on_operator(self, event: OperatorConnected) -> None:
        if self._wait.escalation is None or self._wait.operator is not None:
            return
        self._wait.operator = event.operator
        self._wait.timer = None  # max_wait stops counting
        self._wait.playback = False  # an announcement still playing does not lead to hold
        self._out.append(StopSpeaking())

    def _on_returned(self, _: OperatorReturned) -> None:
        step = self._wait.escalation
        if step is None or self._wait.operator is None:
            return
        self._wait.operator = None
        hold_in_queue(self, step)

    def _on_overflow(self, event: QueueOverflow) -> None:
        step = self._wait.escalation
        if step is None or self._wait.operator is not None:
            return
        self._set("queue_result", event.reason)
        overflow(self, step)

    # --- steps
    def _enter(self, step_id: str) -> None:
        for _ in range(MAX_STEPS_PER_EVENT):
            self.step_id = step_id
            self._wait = _Wait()
            self._tries = 0
            self._digits = ""
            step = self.step
            self._out.append(EnterStep(step_id, step.action))
            following = STEP_HANDLERS[type(step)].enter(self, step)
            if following is None:
                return
            step_id = following
        self._finish("flow-loop")

    # --- helpers
    def _take(self) -> list[Action]:
        out, self._out = self._out, []
        return out

    def _render(self, text: str) -> str:
        return _render(text, self.variables)

    def _speak(self, text: str, interruptible: bool, voice: str | None = None) -> None:
        self._out.append(Say(self._render(text), interruptible=interruptible, voice=voice))
        self._wait.playback = True

    def _arm(self, seconds: float) -> None:
        self._timers += 1
        self._wait.timer = self._timers
        self._out.append(StartTimer(self._timers, seconds))

    def _interrupt(self) -> None:
        if self._wait.playback:
            # Input overtakes the prompt: a caller who knows the menu need not hear it out.
            self._out.append(StopSpeaking())
            self._wait.playback = False
        self._wait.timer = None

    def _set(self, name: str, value: Any) -> None:
        self.variables[name] = value
        self._out.append(SetVariable(name, value))

    def _next_or_finish(self, step_id: str | None) -> str | None:
        if step_id is None:
            self._finish("flow-end")
        return step_id

    def _go(self, step_id: str | None) -> None:
        if step_id is None:
            self._finish("flow-end")
        else:
            self._enter(step_id)

    def _finish(self, reason: str) -> None:
        self.finished = True
        self.outcome = self.outcome or "hangup"
        self._out.append(Hangup(reason))


_HANDLERS: dict[type, Callable[[FlowEngine, Any], None]] = {
    PlaybackDone: FlowEngine._on_playback,
    TimerFired: FlowEngine._on_timer,
    Digit: FlowEngine._on_digit,
    Speech: FlowEngine._on_speech,
    SpeechStarted: FlowEngine._on_speech_started,
    WebhookDone: FlowEngine._on_webhook,
    RecordingDone: FlowEngine._on_recording,
    TransferDone: FlowEngine._on_transfer,
    PersonaDone: FlowEngine._on_persona,
    OperatorConnected: FlowEngine._on_operator,
    OperatorReturned: FlowEngine._on_returned,
    QueueOverflow: FlowEngine._on_overflow,
}


def _render(text: str, variables: dict[str, Any]) -> str:
    # format_map with a dict that leaves unknown names visible, so a typo is heard, not a crash.
    class _Keep(dict[str, Any]):
        def __missing__(self, key: str) -> str:
            return "{" + key + "}"

    try:
        return text.format_map(_Keep(variables))
    except (ValueError, IndexError, AttributeError, KeyError):
        return text
