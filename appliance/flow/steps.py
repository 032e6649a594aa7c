"""What the flow engine does for each kind of step: on entering it, when its prompt has played,
when its timer fires, on a key and on speech. The engine dispatches through `STEP_HANDLERS`,
keyed by the step's model; these handlers are its other half and use its internals.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from appliance.flow import intents
from appliance.flow.expressions import Expression
from appliance.flow.hours import is_open
from appliance.flow.messages import (
    CallWebhook,
    Escalated,
    Listen,
    PauseRecording,
    PlayFile,
    PlayHold,
    StartEgress,
    StartPersona,
    StartRecording,
    StopListening,
    StopSpeaking,
    Transfer,
)
from appliance.flow.schema import (
    STEP_KINDS,
    BranchStep,
    EgressStep,
    EscalateStep,
    GatherStep,
    GotoStep,
    HangupStep,
    HoursStep,
    MenuStep,
    PersonaStep,
    RecordStep,
    SayStep,
    SetStep,
    Step,
    TransferStep,
    VoicemailStep,
    WebhookStep,
)

if TYPE_CHECKING:
    from appliance.flow.engine import FlowEngine

__all__ = ["STEP_HANDLERS", "StepHandlers"]


# Each step kind's `enter` either waits (returns None) or names the step to go on to;
# `played` and `timeout` continue a waiting step (the table `STEP_HANDLERS`, below).
def _enter_say(engine: FlowEngine, step: SayStep) -> str | None:
    if step.say.audio:
        engine._out.append(PlayFile(step.say.audio))
        engine._wait.playback = True
    else:
        engine._speak(step.say.text or "", interruptible=False, voice=step.say.voice)
    return None


def _played_say(engine: FlowEngine, step: SayStep) -> None:
    engine._go(step.next)


def _enter_menu(engine: FlowEngine, step: MenuStep) -> str | None:
    _ask(engine, step.menu.prompt)
    _listen(engine, Listen(step.menu.speech) if step.menu.speech else None)
    return None


def _played_menu(engine: FlowEngine, step: MenuStep) -> None:
    engine._arm(step.menu.timeout)


def _timeout_menu(engine: FlowEngine, step: MenuStep) -> None:
    _retry_menu(engine, step, no_match=False)


def _digit_menu(engine: FlowEngine, step: MenuStep, digit: str) -> None:
    _chosen(engine, step, step.menu.options.get(digit))


def _speech_menu(engine: FlowEngine, step: MenuStep, text: str) -> None:
    if step.menu.speech and text:
        engine._interrupt()
        _chosen(engine, step, intents.match(text, step.menu.speech))


def _chosen(engine: FlowEngine, step: MenuStep, target: str | None) -> None:
    if target is not None:
        _stop_input(engine)
        engine._go(target)
    else:
        _retry_menu(engine, step, no_match=True)


def _retry_menu(engine: FlowEngine, step: MenuStep, no_match: bool) -> None:
    menu = step.menu
    if not _try_again(engine, menu.retries, f"{menu.invalid_prompt} {menu.prompt}" if no_match else menu.prompt,
                      menu.timeout):
        engine._go(menu.no_match if no_match else menu.no_input)


def _enter_gather(engine: FlowEngine, step: GatherStep) -> str | None:
    gather = step.gather
    if gather.prompt:
        _ask(engine, gather.prompt)
    listens = gather.intents or gather.spoken_digits
    _listen(engine, Listen(gather.intents, digits=gather.spoken_digits) if listens else None)
    if not gather.prompt:
        engine._arm(gather.timeout)
    return None


def _played_gather(engine: FlowEngine, step: GatherStep) -> None:
    engine._arm(step.gather.timeout)


def _timeout_gather(engine: FlowEngine, step: GatherStep) -> None:
    if len(engine._digits) >= step.gather.min_digits:
        _gathered(engine, step, engine._digits)
    else:
        _retry_gather(engine, step, no_match=bool(engine._digits))


def _digit_gather(engine: FlowEngine, step: GatherStep, digit: str) -> None:
    gather = step.gather
    if not gather.dtmf:
        return
    if gather.terminator and digit == gather.terminator:
        if len(engine._digits) >= gather.min_digits:
            _gathered(engine, step, engine._digits)
        else:
            _retry_gather(engine, step, no_match=True)
        return
    engine._digits += digit
    if len(engine._digits) >= gather.max_digits:
        _gathered(engine, step, engine._digits)
    else:
        engine._arm(gather.timeout)


def _speech_gather(engine: FlowEngine, step: GatherStep, text: str) -> None:
    gather = step.gather
    if not (gather.intents or gather.spoken_digits):
        return
    if not text:
        # An utterance heard as nothing: the silence that counts starts again now.
        if engine._wait.timer is None and not engine._wait.playback:
            engine._arm(gather.digit_pause if gather.spoken_digits and engine._digits else gather.timeout)
        return
    engine._interrupt()
    intent = intents.match(text, gather.intents) if gather.intents else None
    digits = intents.spoken_digits(text) if gather.spoken_digits else ""
    if intent is not None:
        _gathered(engine, step, intent)
    elif digits:
        engine._digits += digits
        if len(engine._digits) >= gather.max_digits:
            _gathered(engine, step, engine._digits[: gather.max_digits])
        elif intents.ends_in_digit(text):
            engine._arm(gather.digit_pause)  # a number read in groups: the next group may follow
        elif len(engine._digits) >= gather.min_digits:
            _gathered(engine, step, engine._digits)
        else:
            _retry_gather(engine, step, no_match=True)
    elif gather.spoken_digits and engine._digits and len(engine._digits) >= gather.min_digits:
        _gathered(engine, step, engine._digits)  # the number, then words ("that's it"): it is complete
    else:
        _retry_gather(engine, step, no_match=True)


def _speech_started_gather(engine: FlowEngine, step: GatherStep) -> None:
    # A caller speaking is not silent: neither the no-input wait nor the pause after a group
    # runs out while they talk. The utterance's end (`_speech_gather`) arms it again.
    if step.gather.intents or step.gather.spoken_digits:
        engine._wait.timer = None


def _gathered(engine: FlowEngine, step: GatherStep, value: str) -> None:
    _stop_input(engine)
    engine._set(step.gather.into, value)
    engine._go(step.next)


def _retry_gather(engine: FlowEngine, step: GatherStep, no_match: bool) -> None:
    gather = step.gather
    if not _try_again(engine, gather.retries, gather.prompt, gather.timeout):
        exit_ = (gather.no_match or gather.no_input) if no_match else gather.no_input
        if exit_ is None:
            engine._set(gather.into, "")
        engine._go(exit_ or step.next)


def _ask(engine: FlowEngine, prompt: str) -> None:
    engine._speak(prompt, interruptible=True)


def _listen(engine: FlowEngine, listen: Listen | None) -> None:
    engine._wait.input = True
    if listen is not None:
        engine._out.append(listen)
        engine._wait.listening = True


def _try_again(engine: FlowEngine, retries: int, prompt: str | None, timeout: float) -> bool:
    """Ask a menu or gather question once more; False: no tries are left (input stopped)."""
    engine._tries += 1
    engine._digits = ""
    if engine._tries > retries:
        _stop_input(engine)
        return False
    if prompt:
        engine._speak(prompt, interruptible=True)
    else:
        engine._arm(timeout)
    return True


def _stop_input(engine: FlowEngine) -> None:
    engine._wait.input = False
    if engine._wait.listening:
        engine._out.append(StopListening())


def _enter_branch(engine: FlowEngine, step: BranchStep) -> str | None:
    for case in step.branch.cases:
        if Expression(case.when).evaluate(engine.variables):
            return case.goto
    return step.branch.otherwise


def _enter_set(engine: FlowEngine, step: SetStep) -> str | None:
    for name, value in step.set.items():
        engine._set(name, engine._render(value) if isinstance(value, str) else value)
    return engine._next_or_finish(step.next)


def _enter_egress(engine: FlowEngine, step: EgressStep) -> str | None:
    engine._out.append(StartEgress(step.egress.url, step.egress.track, step.egress.format))
    return engine._next_or_finish(step.next)


def _enter_record(engine: FlowEngine, step: RecordStep) -> str | None:
    engine._out.append(PauseRecording(paused=step.record.pause))
    return engine._next_or_finish(step.next)


def _enter_webhook(engine: FlowEngine, step: WebhookStep) -> str | None:
    webhook = step.webhook
    names = webhook.send if webhook.send is not None else list(engine.variables)
    payload = {name: engine.variables.get(name) for name in names}
    engine._out.append(CallWebhook(webhook.url, payload, webhook.timeout))
    engine._wait.webhook = step
    return None


def _enter_hours(engine: FlowEngine, step: HoursStep) -> str | None:
    opened = is_open(step.hours, engine.clock())
    engine._set("open", opened)
    return step.hours.open if opened else step.hours.closed


def _enter_persona(engine: FlowEngine, step: PersonaStep) -> str | None:
    engine._out.append(StartPersona(step.persona.name, dict(engine.variables)))
    engine._wait.persona = step
    # Keys still reach the flow (and are logged); the persona hears the caller's voice.
    return None


def _enter_escalate(engine: FlowEngine, step: EscalateStep) -> str | None:
    escalate = step.escalate
    engine.outcome = f"escalated:{escalate.queue}"
    engine._wait.escalation = step
    engine._out.append(Escalated(escalate.queue))
    if escalate.announcement:
        engine._speak(escalate.announcement, interruptible=False)
    else:
        hold_in_queue(engine, step)
    return None


def hold_in_queue(engine: FlowEngine, step: EscalateStep) -> None:
    """Hold audio until an operator answers; after max_wait the caller overflows."""
    engine._out.append(PlayHold(step.escalate.hold_audio))
    cap = engine.queue_max_wait.get(step.escalate.queue)
    engine._arm(min(step.escalate.max_wait, cap) if cap else step.escalate.max_wait)


def overflow(engine: FlowEngine, step: EscalateStep) -> None:
    engine._out.append(StopSpeaking())
    engine._go(step.escalate.overflow)


def _timeout_escalate(engine: FlowEngine, step: EscalateStep) -> None:
    engine._set("queue_result", "max_wait")
    overflow(engine, step)


def _enter_voicemail(engine: FlowEngine, step: VoicemailStep) -> str | None:
    engine._speak(step.voicemail.prompt, interruptible=False)
    return None


def _played_voicemail(engine: FlowEngine, step: VoicemailStep) -> None:
    engine._out.append(StartRecording("voicemail", step.voicemail.max_length, step.voicemail.beep))
    engine._wait.recording = True


def _enter_transfer(engine: FlowEngine, step: TransferStep) -> str | None:
    if step.transfer.announcement:
        engine._speak(step.transfer.announcement, interruptible=False)
    else:
        _played_transfer(engine, step)
    return None


def _played_transfer(engine: FlowEngine, step: TransferStep) -> None:
    transfer = step.transfer
    engine._out.append(Transfer(transfer.to, transfer.mode, transfer.timeout))
    engine._wait.transfer = step


def _enter_goto(engine: FlowEngine, step: GotoStep) -> str | None:
    return step.goto


def _enter_hangup(engine: FlowEngine, step: HangupStep) -> str | None:
    engine._finish(step.hangup.reason)
    return None


S = TypeVar("S", bound=Step)


@dataclass(frozen=True)
class StepHandlers(Generic[S]):
    """What the engine does with one kind of step, given that step: on entering it, when its
    prompt has played, when its timer fires, on a key, on speech and when the caller starts
    speaking (None: never for this kind)."""

    enter: Callable[[FlowEngine, S], str | None]
    played: Callable[[FlowEngine, S], None] | None = None
    timeout: Callable[[FlowEngine, S], None] | None = None
    digit: Callable[[FlowEngine, S, str], None] | None = None
    speech: Callable[[FlowEngine, S, str], None] | None = None
    speech_started: Callable[[FlowEngine, S], None] | None = None


# Keyed by the step's model (schema.STEP_KINDS); a kind missing here fails the import below.
STEP_HANDLERS: dict[type[Step], StepHandlers[Any]] = {
    SayStep: StepHandlers(_enter_say, played=_played_say),
    MenuStep: StepHandlers(_enter_menu, played=_played_menu, timeout=_timeout_menu, digit=_digit_menu,
                           speech=_speech_menu),
    GatherStep: StepHandlers(_enter_gather, played=_played_gather, timeout=_timeout_gather, digit=_digit_gather,
                             speech=_speech_gather, speech_started=_speech_started_gather),
    BranchStep: StepHandlers(_enter_branch),
    SetStep: StepHandlers(_enter_set),
    WebhookStep: StepHandlers(_enter_webhook),
    HoursStep: StepHandlers(_enter_hours),
    PersonaStep: StepHandlers(_enter_persona),
    EscalateStep: StepHandlers(_enter_escalate, played=hold_in_queue, timeout=_timeout_escalate),
    VoicemailStep: StepHandlers(_enter_voicemail, played=_played_voicemail),
    TransferStep: StepHandlers(_enter_transfer, played=_played_transfer),
    GotoStep: StepHandlers(_enter_goto),
    HangupStep: StepHandlers(_enter_hangup),
    RecordStep: StepHandlers(_enter_record),
    EgressStep: StepHandlers(_enter_egress),
}
if set(STEP_HANDLERS) != set(STEP_KINDS):
    raise TypeError(f"flow engine step table does not match the schema: {set(STEP_HANDLERS) ^ set(STEP_KINDS)}")

