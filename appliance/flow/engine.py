"""The flow engine: a pure state machine, events in, actions out.

It owns no I/O and no clock: the runner plays `Say`, arms `StartTimer`, and feeds back
`PlaybackDone`, `Digit` and `TimerFired`. So the same engine drives real calls, the text
simulator and unit tests alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

from appliance.flow.schema import Flow, Step

MAX_STEPS_PER_EVENT = 100  # a goto loop with no waiting step must not hang the call


# events (runner → engine)
@dataclass(frozen=True)
class PlaybackDone:
    pass


@dataclass(frozen=True)
class Digit:
    digit: str


@dataclass(frozen=True)
class TimerFired:
    timer: int


Event = Union[PlaybackDone, Digit, TimerFired]


# actions (engine → runner)
@dataclass(frozen=True)
class EnterStep:
    step: str
    action: str


@dataclass(frozen=True)
class Say:
    text: str
    interruptible: bool = False


@dataclass(frozen=True)
class StopSpeaking:
    pass


@dataclass(frozen=True)
class StartTimer:
    timer: int
    seconds: float


@dataclass(frozen=True)
class Hangup:
    reason: str


@dataclass(frozen=True)
class SetVariable:
    name: str
    value: Any


Action = Union[EnterStep, Say, StopSpeaking, StartTimer, Hangup, SetVariable]


@dataclass
class _Wait:
    """What the current step waits for."""

    playback: bool = False
    digits: bool = False
    timer: int | None = None


@dataclass
class FlowEngine:
    flow: Flow
    variables: dict[str, Any] = field(default_factory=dict)
    step_id: str | None = None
    finished: bool = False
    _wait: _Wait = field(default_factory=_Wait)
    _tries: int = 0
    _digits: str = ""
    _timers: int = 0
    _out: list[Action] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.variables = {**self.flow.variables, **self.variables}

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
        if isinstance(event, PlaybackDone) and self._wait.playback:
            self._wait.playback = False
            self._after_playback()
        elif isinstance(event, Digit) and self._wait.digits:
            self._on_digit(event.digit)
        elif isinstance(event, TimerFired) and event.timer == self._wait.timer:
            self._wait.timer = None
            self._on_timeout()
        return self._take()

    # --- transitions
    def _take(self) -> list[Action]:
        out, self._out = self._out, []
        return out

    def _enter(self, step_id: str) -> None:
        for _ in range(MAX_STEPS_PER_EVENT):
            self.step_id = step_id
            self._wait = _Wait()
            self._tries = 0
            self._digits = ""
            step = self.step
            self._out.append(EnterStep(step_id, step.action))
            if step.goto is not None:
                step_id = step.goto
                continue
            if step.hangup is not None:
                self._finish(step.hangup.reason)
                return
            if step.say is not None:
                self._speak(step.say, interruptible=False)
            elif step.menu is not None:
                self._speak(step.menu.prompt, interruptible=True)
                self._wait.digits = True
            elif step.gather is not None:
                self._wait.digits = True
                if step.gather.prompt:
                    self._speak(step.gather.prompt, interruptible=True)
                else:
                    self._arm(step.gather.timeout)
            return
        self._finish("flow-loop")

    def _speak(self, text: str, interruptible: bool) -> None:
        self._out.append(Say(_render(text, self.variables), interruptible=interruptible))
        self._wait.playback = True

    def _arm(self, seconds: float) -> None:
        self._timers += 1
        self._wait.timer = self._timers
        self._out.append(StartTimer(self._timers, seconds))

    def _after_playback(self) -> None:
        step = self.step
        if step.say is not None:
            self._go(step.next)
        elif step.menu is not None:
            self._arm(step.menu.timeout)
        elif step.gather is not None:
            self._arm(step.gather.timeout)

    def _on_digit(self, digit: str) -> None:
        step = self.step
        if self._wait.playback:
            # Keys overtake the prompt: the caller who knows the menu need not hear it out.
            self._out.append(StopSpeaking())
            self._wait.playback = False
        self._wait.timer = None
        if step.menu is not None:
            target = step.menu.options.get(digit)
            if target is not None:
                self._go(target)
            else:
                self._retry(no_match=True)
        elif step.gather is not None:
            gather = step.gather
            if gather.terminator and digit == gather.terminator:
                self._gathered()
                return
            self._digits += digit
            if len(self._digits) >= gather.max_digits:
                self._gathered()
            else:
                self._arm(gather.timeout)

    def _gathered(self) -> None:
        gather = self.step.gather
        assert gather is not None
        self.variables[gather.into] = self._digits
        self._out.append(SetVariable(gather.into, self._digits))
        self._go(self.step.next)

    def _on_timeout(self) -> None:
        step = self.step
        if step.menu is not None:
            self._retry(no_match=False)
        elif step.gather is not None:
            if self._digits:
                self._gathered()
            else:
                self._go(step.gather.no_input or step.next)

    def _retry(self, no_match: bool) -> None:
        menu = self.step.menu
        assert menu is not None
        self._tries += 1
        if self._tries > menu.retries:
            self._go(menu.no_match if no_match else menu.no_input)
            return
        text = f"{menu.invalid_prompt} {menu.prompt}" if no_match else menu.prompt
        self._speak(text, interruptible=True)

    def _go(self, step_id: str | None) -> None:
        if step_id is None:
            self._finish("flow-end")
        else:
            self._enter(step_id)

    def _finish(self, reason: str) -> None:
        self.finished = True
        self._out.append(Hangup(reason))


def _render(text: str, variables: dict[str, Any]) -> str:
    # format_map with a dict that leaves unknown names visible, so a typo is heard, not a crash.
    class _Keep(dict[str, Any]):
        def __missing__(self, key: str) -> str:
            return "{" + key + "}"

    try:
        return text.format_map(_Keep(variables))
    except (ValueError, IndexError, AttributeError):
        return text
