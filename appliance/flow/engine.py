"""The flow engine: a pure state machine, events in, actions out.

It owns no I/O: the runner plays `Say`, arms `StartTimer`, listens, calls webhooks, records
and transfers, and feeds back what happened as events. The only outside input is the
clock, injected, for business hours. So the same engine drives real calls, the text
simulator and flow tests alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from appliance.core.clock import WallClock, utcnow
from appliance.flow import intents
from appliance.flow.expressions import Expression
from appliance.flow.hours import is_open
from appliance.flow.schema import (
    STEP_KINDS,
    BranchStep,
    EscalateStep,
    Flow,
    GatherStep,
    GotoStep,
    HangupStep,
    HoursStep,
    MenuStep,
    PersonaStep,
    SayStep,
    SetStep,
    Step,
    TransferStep,
    VoicemailStep,
    WebhookStep,
)

MAX_STEPS_PER_EVENT = 100  # a goto loop with no waiting step must not hang the call


# events (runner → engine)
@dataclass(frozen=True)
class PlaybackDone:
    pass


@dataclass(frozen=True)
class Digit:
    digit: str


@dataclass(frozen=True)
class Speech:
    text: str


@dataclass(frozen=True)
class TimerFired:
    timer: int


@dataclass(frozen=True)
class WebhookDone:
    ok: bool
    data: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class RecordingDone:
    seconds: float
    path: str | None = None


@dataclass(frozen=True)
class TransferDone:
    ok: bool
    error: str | None = None


@dataclass(frozen=True)
class PersonaDone:
    """The persona let go of the caller: `exit` is resolved, human or failed."""

    exit: str
    variables: dict[str, Any] = field(default_factory=dict)


Event = PlaybackDone | Digit | Speech | TimerFired | WebhookDone | RecordingDone | TransferDone | PersonaDone


# actions (engine → runner)
@dataclass(frozen=True)
class EnterStep:
    step: str
    action: str


@dataclass(frozen=True)
class Say:
    text: str
    interruptible: bool = False
    voice: str | None = None


@dataclass(frozen=True)
class PlayFile:
    path: str
    interruptible: bool = False


@dataclass(frozen=True)
class PlayHold:
    path: str | None  # None: the built-in soft tone


@dataclass(frozen=True)
class StopSpeaking:
    pass


@dataclass(frozen=True)
class StartTimer:
    timer: int
    seconds: float


@dataclass(frozen=True)
class Listen:
    """Recognise the caller's speech against these choices (and/or spoken digits)."""

    intents: dict[str, list[str]]
    digits: bool = False


@dataclass(frozen=True)
class StopListening:
    pass


@dataclass(frozen=True)
class SetVariable:
    name: str
    value: Any


@dataclass(frozen=True)
class CallWebhook:
    url: str
    payload: dict[str, Any]
    timeout: float


@dataclass(frozen=True)
class Escalated:
    queue: str


@dataclass(frozen=True)
class StartRecording:
    kind: str
    max_seconds: float
    beep: bool


@dataclass(frozen=True)
class StopRecording:
    pass


@dataclass(frozen=True)
class Transfer:
    to: str
    mode: str  # refer | bridge
    timeout: float = 30.0  # bridge: how long the destination may ring


@dataclass(frozen=True)
class StartPersona:
    name: str
    variables: dict[str, Any]


@dataclass(frozen=True)
class Hangup:
    reason: str


Action = (EnterStep | Say | PlayFile | PlayHold | StopSpeaking | StartTimer | Listen | StopListening
          | SetVariable | CallWebhook | Escalated | StartRecording | StopRecording | Transfer | StartPersona | Hangup)


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


@dataclass
class FlowEngine:
    flow: Flow
    variables: dict[str, Any] = field(default_factory=dict)
    clock: WallClock = utcnow
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
        played = _STEP_KINDS[type(step)].played
        if played is not None:
            played(self, step)

    def _on_timer(self, event: TimerFired) -> None:
        if event.timer != self._wait.timer:
            return  # a timer from an earlier step or try
        self._wait.timer = None
        step = self.step
        timeout = _STEP_KINDS[type(step)].timeout
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
        digit = _STEP_KINDS[type(step)].digit
        if digit is not None:
            digit(self, step, event.digit)

    def _on_speech(self, event: Speech) -> None:
        if not self._wait.input:
            return
        step = self.step
        speech = _STEP_KINDS[type(step)].speech
        if speech is not None:
            speech(self, step, event.text)

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

    # --- steps
    def _enter(self, step_id: str) -> None:
        for _ in range(MAX_STEPS_PER_EVENT):
            self.step_id = step_id
            self._wait = _Wait()
            self._tries = 0
            self._digits = ""
            step = self.step
            self._out.append(EnterStep(step_id, step.action))
            following = _STEP_KINDS[type(step)].enter(self, step)
            if following is None:
                return
            step_id = following
        self._finish("flow-loop")

    # Each step kind's `enter` either waits (returns None) or names the step to go on to;
    # `played` and `timeout` continue a waiting step (the table `_STEP_KINDS`, below).
    def _enter_say(self, step: SayStep) -> str | None:
        if step.say.audio:
            self._out.append(PlayFile(step.say.audio))
            self._wait.playback = True
        else:
            self._speak(step.say.text or "", interruptible=False, voice=step.say.voice)
        return None

    def _played_say(self, step: SayStep) -> None:
        self._go(step.next)

    def _enter_menu(self, step: MenuStep) -> str | None:
        self._ask(step.menu.prompt)
        self._listen(Listen(step.menu.speech) if step.menu.speech else None)
        return None

    def _played_menu(self, step: MenuStep) -> None:
        self._arm(step.menu.timeout)

    def _timeout_menu(self, step: MenuStep) -> None:
        self._retry_menu(step, no_match=False)

    def _digit_menu(self, step: MenuStep, digit: str) -> None:
        self._chosen(step, step.menu.options.get(digit))

    def _speech_menu(self, step: MenuStep, text: str) -> None:
        if step.menu.speech:
            self._interrupt()
            self._chosen(step, intents.match(text, step.menu.speech))

    def _chosen(self, step: MenuStep, target: str | None) -> None:
        if target is not None:
            self._stop_input()
            self._go(target)
        else:
            self._retry_menu(step, no_match=True)

    def _retry_menu(self, step: MenuStep, no_match: bool) -> None:
        menu = step.menu
        if not self._try_again(menu.retries, f"{menu.invalid_prompt} {menu.prompt}" if no_match else menu.prompt,
                               menu.timeout):
            self._go(menu.no_match if no_match else menu.no_input)

    def _enter_gather(self, step: GatherStep) -> str | None:
        gather = step.gather
        if gather.prompt:
            self._ask(gather.prompt)
        listens = gather.intents or gather.spoken_digits
        self._listen(Listen(gather.intents, digits=gather.spoken_digits) if listens else None)
        if not gather.prompt:
            self._arm(gather.timeout)
        return None

    def _played_gather(self, step: GatherStep) -> None:
        self._arm(step.gather.timeout)

    def _timeout_gather(self, step: GatherStep) -> None:
        if len(self._digits) >= step.gather.min_digits:
            self._gathered(step, self._digits)
        else:
            self._retry_gather(step, no_match=bool(self._digits))

    def _digit_gather(self, step: GatherStep, digit: str) -> None:
        gather = step.gather
        if not gather.dtmf:
            return
        if gather.terminator and digit == gather.terminator:
            if len(self._digits) >= gather.min_digits:
                self._gathered(step, self._digits)
            else:
                self._retry_gather(step, no_match=True)
            return
        self._digits += digit
        if len(self._digits) >= gather.max_digits:
            self._gathered(step, self._digits)
        else:
            self._arm(gather.timeout)

    def _speech_gather(self, step: GatherStep, text: str) -> None:
        gather = step.gather
        if not (gather.intents or gather.spoken_digits):
            return
        self._interrupt()
        intent = intents.match(text, gather.intents) if gather.intents else None
        digits = intents.spoken_digits(text) if gather.spoken_digits else ""
        if intent is not None:
            self._gathered(step, intent)
        elif len(digits) >= gather.min_digits:
            self._gathered(step, digits[: gather.max_digits])
        else:
            self._retry_gather(step, no_match=True)

    def _gathered(self, step: GatherStep, value: str) -> None:
        self._stop_input()
        self._set(step.gather.into, value)
        self._go(step.next)

    def _retry_gather(self, step: GatherStep, no_match: bool) -> None:
        gather = step.gather
        if not self._try_again(gather.retries, gather.prompt, gather.timeout):
            exit_ = (gather.no_match or gather.no_input) if no_match else gather.no_input
            if exit_ is None:
                self._set(gather.into, "")
            self._go(exit_ or step.next)

    def _ask(self, prompt: str) -> None:
        self._speak(prompt, interruptible=True)

    def _listen(self, listen: Listen | None) -> None:
        self._wait.input = True
        if listen is not None:
            self._out.append(listen)
            self._wait.listening = True

    def _try_again(self, retries: int, prompt: str | None, timeout: float) -> bool:
        """Ask a menu or gather question once more; False: no tries are left (input stopped)."""
        self._tries += 1
        self._digits = ""
        if self._tries > retries:
            self._stop_input()
            return False
        if prompt:
            self._speak(prompt, interruptible=True)
        else:
            self._arm(timeout)
        return True

    def _stop_input(self) -> None:
        self._wait.input = False
        if self._wait.listening:
            self._out.append(StopListening())

    def _enter_branch(self, step: BranchStep) -> str | None:
        for case in step.branch.cases:
            if Expression(case.when).evaluate(self.variables):
                return case.goto
        return step.branch.otherwise

    def _enter_set(self, step: SetStep) -> str | None:
        for name, value in step.set.items():
            self._set(name, _render(value, self.variables) if isinstance(value, str) else value)
        return self._next_or_finish(step.next)

    def _enter_webhook(self, step: WebhookStep) -> str | None:
        webhook = step.webhook
        names = webhook.send if webhook.send is not None else list(self.variables)
        payload = {name: self.variables.get(name) for name in names}
        self._out.append(CallWebhook(webhook.url, payload, webhook.timeout))
        self._wait.webhook = step
        return None

    def _enter_hours(self, step: HoursStep) -> str | None:
        opened = is_open(step.hours, self.clock())
        self._set("open", opened)
        return step.hours.open if opened else step.hours.closed

    def _enter_persona(self, step: PersonaStep) -> str | None:
        self._out.append(StartPersona(step.persona.name, dict(self.variables)))
        self._wait.persona = step
        # Keys still reach the flow (and are logged); the persona hears the caller's voice.
        return None

    def _on_persona(self, event: PersonaDone) -> None:
        if self._wait.persona is None:
            return
        persona, self._wait.persona = self._wait.persona.persona, None
        for name, value in event.variables.items():
            self._set(name, value)
        target = {"resolved": persona.resolved, "human": persona.human}.get(event.exit, persona.failed)
        self._go(target)

    def _enter_escalate(self, step: EscalateStep) -> str | None:
        escalate = step.escalate
        self.outcome = f"escalated:{escalate.queue}"
        self._out.append(Escalated(escalate.queue))
        if escalate.announcement:
            self._speak(escalate.announcement, interruptible=False)
        else:
            self._hold(step)
        return None

    def _hold(self, step: EscalateStep) -> None:
        self._out.append(PlayHold(step.escalate.hold_audio))
        # No operator can take the call yet: after max_wait the caller overflows.
        self._arm(step.escalate.max_wait)

    def _timeout_escalate(self, step: EscalateStep) -> None:
        self._out.append(StopSpeaking())
        self._go(step.escalate.overflow)

    def _enter_voicemail(self, step: VoicemailStep) -> str | None:
        self._speak(step.voicemail.prompt, interruptible=False)
        return None

    def _played_voicemail(self, step: VoicemailStep) -> None:
        self._out.append(StartRecording("voicemail", step.voicemail.max_length, step.voicemail.beep))
        self._wait.recording = True

    def _enter_transfer(self, step: TransferStep) -> str | None:
        if step.transfer.announcement:
            self._speak(step.transfer.announcement, interruptible=False)
        else:
            self._played_transfer(step)
        return None

    def _played_transfer(self, step: TransferStep) -> None:
        transfer = step.transfer
        self._out.append(Transfer(transfer.to, transfer.mode, transfer.timeout))
        self._wait.transfer = step

    def _enter_goto(self, step: GotoStep) -> str | None:
        return step.goto

    def _enter_hangup(self, step: HangupStep) -> str | None:
        self._finish(step.hangup.reason)
        return None

    # --- helpers
    def _take(self) -> list[Action]:
        out, self._out = self._out, []
        return out

    def _speak(self, text: str, interruptible: bool, voice: str | None = None) -> None:
        self._out.append(Say(_render(text, self.variables), interruptible=interruptible, voice=voice))
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
    WebhookDone: FlowEngine._on_webhook,
    RecordingDone: FlowEngine._on_recording,
    TransferDone: FlowEngine._on_transfer,
    PersonaDone: FlowEngine._on_persona,
}


S = TypeVar("S", bound=Step)


@dataclass(frozen=True)
class _StepKind(Generic[S]):
    """What the engine does with one kind of step, given that step: on entering it, when its
    prompt has played, when its timer fires, on a key and on speech (None: never for this kind)."""

    enter: Callable[[FlowEngine, S], str | None]
    played: Callable[[FlowEngine, S], None] | None = None
    timeout: Callable[[FlowEngine, S], None] | None = None
    digit: Callable[[FlowEngine, S, str], None] | None = None
    speech: Callable[[FlowEngine, S, str], None] | None = None


# Keyed by the step's model (schema.STEP_KINDS); a kind missing here fails the import below.
_STEP_KINDS: dict[type[Step], _StepKind[Any]] = {
    SayStep: _StepKind(FlowEngine._enter_say, played=FlowEngine._played_say),
    MenuStep: _StepKind(FlowEngine._enter_menu, played=FlowEngine._played_menu, timeout=FlowEngine._timeout_menu,
                        digit=FlowEngine._digit_menu, speech=FlowEngine._speech_menu),
    GatherStep: _StepKind(FlowEngine._enter_gather, played=FlowEngine._played_gather,
                          timeout=FlowEngine._timeout_gather, digit=FlowEngine._digit_gather,
                          speech=FlowEngine._speech_gather),
    BranchStep: _StepKind(FlowEngine._enter_branch),
    SetStep: _StepKind(FlowEngine._enter_set),
    WebhookStep: _StepKind(FlowEngine._enter_webhook),
    HoursStep: _StepKind(FlowEngine._enter_hours),
    PersonaStep: _StepKind(FlowEngine._enter_persona),
    EscalateStep: _StepKind(FlowEngine._enter_escalate, played=FlowEngine._hold, timeout=FlowEngine._timeout_escalate),
    VoicemailStep: _StepKind(FlowEngine._enter_voicemail, played=FlowEngine._played_voicemail),
    TransferStep: _StepKind(FlowEngine._enter_transfer, played=FlowEngine._played_transfer),
    GotoStep: _StepKind(FlowEngine._enter_goto),
    HangupStep: _StepKind(FlowEngine._enter_hangup),
}
if set(_STEP_KINDS) != set(STEP_KINDS):
    raise TypeError(f"flow engine step table does not match the schema: {set(_STEP_KINDS) ^ set(STEP_KINDS)}")


def _render(text: str, variables: dict[str, Any]) -> str:
    # format_map with a dict that leaves unknown names visible, so a typo is heard, not a crash.
    class _Keep(dict[str, Any]):
        def __missing__(self, key: str) -> str:
            return "{" + key + "}"

    try:
        return text.format_map(_Keep(variables))
    except (ValueError, IndexError, AttributeError, KeyError):
        return text
