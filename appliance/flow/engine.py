"""The flow engine: a pure state machine, events in, actions out.

It owns no I/O: the runner plays `Say`, arms `StartTimer`, listens, calls webhooks, records
and transfers, and feeds back what happened as events. The only outside input is the
clock, injected, for business hours. So the same engine drives real calls, the text
simulator and flow tests alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from appliance.core.clock import WallClock, utcnow
from appliance.flow import intents
from appliance.flow.expressions import Expression
from appliance.flow.hours import is_open
from appliance.flow.schema import ACTIONS, Flow, Step

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
    timer: int | None = None
    webhook: bool = False
    recording: bool = False
    transfer: bool = False
    persona: bool = False


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
        played = _STEP_KINDS[self.step.action].played
        if played is not None:
            played(self)

    def _on_timer(self, event: TimerFired) -> None:
        if event.timer != self._wait.timer:
            return  # a timer from an earlier step or try
        self._wait.timer = None
        timeout = _STEP_KINDS[self.step.action].timeout
        if timeout is None:  # only menu, gather and escalate arm timers: a bug of ours
            raise RuntimeError(f"a '{self.step.action}' step has no timeout to fire")
        timeout(self)

    def _on_digit(self, event: Digit) -> None:
        if self._wait.recording and event.digit == "#":
            self._out.append(StopRecording())
            return
        if not self._wait.input:
            return
        self._interrupt()
        step = self.step
        if step.menu is not None:
            target = step.menu.options.get(event.digit)
            self._chosen(target)
        elif step.gather is not None and step.gather.dtmf:
            gather = step.gather
            if gather.terminator and event.digit == gather.terminator:
                self._gathered(self._digits) if len(self._digits) >= gather.min_digits else self._retry(no_match=True)
                return
            self._digits += event.digit
            if len(self._digits) >= gather.max_digits:
                self._gathered(self._digits)
            else:
                self._arm(gather.timeout)

    def _on_speech(self, event: Speech) -> None:
        if not self._wait.input:
            return
        step = self.step
        if step.menu is not None and step.menu.speech:
            self._interrupt()
            self._chosen(intents.match(event.text, step.menu.speech))
        elif step.gather is not None and (step.gather.intents or step.gather.spoken_digits):
            self._interrupt()
            gather = step.gather
            intent = intents.match(event.text, gather.intents) if gather.intents else None
            digits = intents.spoken_digits(event.text) if gather.spoken_digits else ""
            if intent is not None:
                self._gathered(intent)
            elif len(digits) >= gather.min_digits:
                self._gathered(digits[: gather.max_digits])
            else:
                self._retry(no_match=True)

    def _on_webhook(self, event: WebhookDone) -> None:
        if not self._wait.webhook:
            return
        self._wait.webhook = False
        webhook = self.step.webhook
        assert webhook is not None
        if not event.ok:
            self._set("webhook_error", event.error or "error")
            self._go(webhook.on_error)
            return
        for name, value in event.data.items():
            self._set(name, value)
        self._go(self.step.next)

    def _on_recording(self, event: RecordingDone) -> None:
        if not self._wait.recording:
            return
        self._wait.recording = False
        self.outcome = "voicemail"
        self._set("voicemail_seconds", round(event.seconds, 1))
        self._go(self.step.next)

    def _on_transfer(self, event: TransferDone) -> None:
        if not self._wait.transfer:
            return
        self._wait.transfer = False
        transfer = self.step.transfer
        assert transfer is not None
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
            following = _STEP_KINDS[step.action].enter(self, step)
            if following is None:
                return
            step_id = following
        self._finish("flow-loop")

    # Each step kind's `enter` either waits (returns None) or names the step to go on to;
    # `played` and `timeout` continue a waiting step (the table `_STEP_KINDS`, below).
    def _enter_say(self, step: Step) -> str | None:
        assert step.say is not None
        if step.say.audio:
            self._out.append(PlayFile(step.say.audio))
            self._wait.playback = True
        else:
            self._speak(step.say.text or "", interruptible=False, voice=step.say.voice)
        return None

    def _played_say(self) -> None:
        self._go(self.step.next)

    def _enter_menu(self, step: Step) -> str | None:
        assert step.menu is not None
        self._ask(step.menu.prompt)
        return None

    def _enter_gather(self, step: Step) -> str | None:
        gather = step.gather
        assert gather is not None
        if gather.prompt:
            self._ask(gather.prompt)
        else:
            self._listen()
            self._arm(gather.timeout)
        return None

    def _ask(self, prompt: str) -> None:
        self._speak(prompt, interruptible=True)
        self._listen()

    def _listen(self) -> None:
        self._wait.input = True
        step = self.step
        if step.menu is not None and step.menu.speech:
            self._out.append(Listen(step.menu.speech))
        elif step.gather is not None and (step.gather.intents or step.gather.spoken_digits):
            self._out.append(Listen(step.gather.intents, digits=step.gather.spoken_digits))

    def _played_menu(self) -> None:
        assert self.step.menu is not None
        self._arm(self.step.menu.timeout)

    def _played_gather(self) -> None:
        assert self.step.gather is not None
        self._arm(self.step.gather.timeout)

    def _timeout_menu(self) -> None:
        self._retry(no_match=False)

    def _timeout_gather(self) -> None:
        gather = self.step.gather
        assert gather is not None
        if len(self._digits) >= gather.min_digits:
            self._gathered(self._digits)
        else:
            self._retry(no_match=bool(self._digits))

    def _enter_branch(self, step: Step) -> str | None:
        assert step.branch is not None
        for case in step.branch.cases:
            if Expression(case.when).evaluate(self.variables):
                return case.goto
        return step.branch.otherwise

    def _enter_set(self, step: Step) -> str | None:
        assert step.set is not None
        for name, value in step.set.items():
            self._set(name, _render(value, self.variables) if isinstance(value, str) else value)
        return self._next_or_finish(step.next)

    def _enter_webhook(self, step: Step) -> str | None:
        webhook = step.webhook
        assert webhook is not None
        names = webhook.send if webhook.send is not None else list(self.variables)
        payload = {name: self.variables.get(name) for name in names}
        self._out.append(CallWebhook(webhook.url, payload, webhook.timeout))
        self._wait.webhook = True
        return None

    def _enter_hours(self, step: Step) -> str | None:
        assert step.hours is not None
        opened = is_open(step.hours, self.clock())
        self._set("open", opened)
        return step.hours.open if opened else step.hours.closed

    def _enter_persona(self, step: Step) -> str | None:
        assert step.persona is not None
        self._out.append(StartPersona(step.persona.name, dict(self.variables)))
        self._wait.persona = True
        # Keys still reach the flow (and are logged); the persona hears the caller's voice.
        return None

    def _on_persona(self, event: PersonaDone) -> None:
        if not self._wait.persona:
            return
        self._wait.persona = False
        persona = self.step.persona
        assert persona is not None
        for name, value in event.variables.items():
            self._set(name, value)
        target = {"resolved": persona.resolved, "human": persona.human}.get(event.exit, persona.failed)
        self._go(target)

    def _enter_escalate(self, step: Step) -> str | None:
        escalate = step.escalate
        assert escalate is not None
        self.outcome = f"escalated:{escalate.queue}"
        self._out.append(Escalated(escalate.queue))
        if escalate.announcement:
            self._speak(escalate.announcement, interruptible=False)
        else:
            self._hold()
        return None

    def _played_escalate(self) -> None:
        self._hold()

    def _hold(self) -> None:
        escalate = self.step.escalate
        assert escalate is not None
        self._out.append(PlayHold(escalate.hold_audio))
        # No operator can take the call yet: after max_wait the caller overflows.
        self._arm(escalate.max_wait)

    def _timeout_escalate(self) -> None:
        escalate = self.step.escalate
        assert escalate is not None
        self._out.append(StopSpeaking())
        self._go(escalate.overflow)

    def _enter_voicemail(self, step: Step) -> str | None:
        assert step.voicemail is not None
        self._speak(step.voicemail.prompt, interruptible=False)
        return None

    def _played_voicemail(self) -> None:
        voicemail = self.step.voicemail
        assert voicemail is not None
        self._out.append(StartRecording("voicemail", voicemail.max_length, voicemail.beep))
        self._wait.recording = True

    def _enter_transfer(self, step: Step) -> str | None:
        transfer = step.transfer
        assert transfer is not None
        if transfer.announcement:
            self._speak(transfer.announcement, interruptible=False)
        else:
            self._played_transfer()
        return None

    def _played_transfer(self) -> None:
        transfer = self.step.transfer
        assert transfer is not None
        self._out.append(Transfer(transfer.to, transfer.mode, transfer.timeout))
        self._wait.transfer = True

    def _enter_goto(self, step: Step) -> str | None:
        return step.goto

    def _enter_hangup(self, step: Step) -> str | None:
        assert step.hangup is not None
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

    def _chosen(self, target: str | None) -> None:
        if target is not None:
            self._stop_input()
            self._go(target)
        else:
            self._retry(no_match=True)

    def _gathered(self, value: str) -> None:
        gather = self.step.gather
        assert gather is not None
        self._stop_input()
        self._set(gather.into, value)
        self._go(self.step.next)

    def _stop_input(self) -> None:
        self._wait.input = False
        if self._listening():
            self._out.append(StopListening())

    def _listening(self) -> bool:
        step = self.step
        return bool((step.menu and step.menu.speech)
                    or (step.gather and (step.gather.intents or step.gather.spoken_digits)))

    def _retry(self, no_match: bool) -> None:
        step = self.step
        part = step.menu or step.gather
        assert part is not None
        self._tries += 1
        self._digits = ""
        if self._tries > part.retries:
            self._stop_input()
            if step.menu is not None:
                self._go(step.menu.no_match if no_match else step.menu.no_input)
            else:
                gather = step.gather
                assert gather is not None
                exit_ = (gather.no_match or gather.no_input) if no_match else gather.no_input
                if exit_ is None:
                    self._set(gather.into, "")
                self._go(exit_ or step.next)
            return
        prompt = part.prompt
        if step.menu is not None and no_match:
            prompt = f"{step.menu.invalid_prompt} {prompt}"
        if prompt:
            self._speak(prompt, interruptible=True)
        else:
            self._arm(part.timeout)

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


@dataclass(frozen=True)
class _StepKind:
    """What the engine does with one kind of step: on entering it, when its prompt has
    played, and when its timer fires (None: that never happens for this kind)."""

    enter: Callable[[FlowEngine, Step], str | None]
    played: Callable[[FlowEngine], None] | None = None
    timeout: Callable[[FlowEngine], None] | None = None


# Keyed by the step's action key (schema.ACTIONS); a kind missing here fails the import below.
_STEP_KINDS: dict[str, _StepKind] = {
    "say": _StepKind(FlowEngine._enter_say, played=FlowEngine._played_say),
    "menu": _StepKind(FlowEngine._enter_menu, played=FlowEngine._played_menu, timeout=FlowEngine._timeout_menu),
    "gather": _StepKind(FlowEngine._enter_gather, played=FlowEngine._played_gather,
                        timeout=FlowEngine._timeout_gather),
    "branch": _StepKind(FlowEngine._enter_branch),
    "set": _StepKind(FlowEngine._enter_set),
    "webhook": _StepKind(FlowEngine._enter_webhook),
    "hours": _StepKind(FlowEngine._enter_hours),
    "persona": _StepKind(FlowEngine._enter_persona),
    "escalate": _StepKind(FlowEngine._enter_escalate, played=FlowEngine._played_escalate,
                          timeout=FlowEngine._timeout_escalate),
    "voicemail": _StepKind(FlowEngine._enter_voicemail, played=FlowEngine._played_voicemail),
    "transfer": _StepKind(FlowEngine._enter_transfer, played=FlowEngine._played_transfer),
    "goto": _StepKind(FlowEngine._enter_goto),
    "hangup": _StepKind(FlowEngine._enter_hangup),
}
if set(_STEP_KINDS) != set(ACTIONS):
    raise TypeError(f"flow engine step table does not match the schema: {sorted(set(_STEP_KINDS) ^ set(ACTIONS))}")


def _render(text: str, variables: dict[str, Any]) -> str:
    # format_map with a dict that leaves unknown names visible, so a typo is heard, not a crash.
    class _Keep(dict[str, Any]):
        def __missing__(self, key: str) -> str:
            return "{" + key + "}"

    try:
        return text.format_map(_Keep(variables))
    except (ValueError, IndexError, AttributeError, KeyError):
        return text
