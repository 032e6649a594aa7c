"""What a flow refers to must exist and be allowed: steps, variables, queues, personas,
audio files, webhook URLs and transfer destinations. Every problem is reported, with where.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.config import TransfersConfig, WebhooksConfig
from appliance.core.errors import Problem
from appliance.flow import intents
from appliance.flow.expressions import Expression, ExpressionError
from appliance.flow.policy import destination_allowed, flow_file, url_allowed
from appliance.flow.schema import (
    BranchStep,
    EgressStep,
    Escalate,
    EscalateStep,
    Flow,
    Gather,
    GatherStep,
    Menu,
    MenuStep,
    PersonaStep,
    Say,
    SayStep,
    SetStep,
    Step,
    TransferStep,
    WebhookStep,
)
from appliance.speech.stt import known_words

# Set by the appliance on every call or by steps as they run.
SYSTEM_VARIABLES = frozenset({
    "caller", "called", "call_id", "trunk", "open", "webhook_error", "voicemail_seconds",
    "transfer_error", "persona_error",
})

Where = Callable[..., Problem]


@dataclass
class FlowContext:
    """What a flow may refer to besides its own steps."""

    directory: Path | None = None
    queues: set[str] = field(default_factory=set)
    personas: set[str] = field(default_factory=set)
    # Without an explicit policy, the appliance's default one (appliance.yaml's defaults).
    webhooks_allowed: list[str] = field(default_factory=lambda: WebhooksConfig().allowed)
    transfers_allowed: list[str] = field(default_factory=lambda: TransfersConfig().allowed)




def _template_names(text: str) -> list[str]:
    try:
        return [name for _, name, _, _ in string.Formatter().parse(text) if name]
    except ValueError:
        return []


def check(flow: Flow, at: Where, context: FlowContext) -> list[Problem]:
    problems = _missing_steps(flow, at) + _unreachable(flow, at)
    defined = _defined_variables(flow)
    for step_id, step in flow.steps.items():
        here = ("steps", step_id)
        problems += _undefined_variables(step, here, defined, at)
        problems += _references(step, here, context, at)
        problems += _unknown_words(step, here, at)
        problems += _audio_problems(step, here, context, at)
    return problems


def _missing_steps(flow: Flow, at: Where) -> list[Problem]:
    problems: list[Problem] = []
    if flow.entry not in flow.steps:
        problems.append(at(("entry",), f"entry step '{flow.entry}' does not exist", value=True))
    for step_id, step in flow.steps.items():
        for field_path, target in step.targets():
            if target not in flow.steps:
                problems.append(at(("steps", step_id) + field_path, f"step '{target}' does not exist", value=True))
    return problems


def _defined_variables(flow: Flow) -> set[str]:
    defined = set(flow.variables) | SYSTEM_VARIABLES
    for step in flow.steps.values():
        if isinstance(step, GatherStep):
            defined.add(step.gather.into)
        elif isinstance(step, SetStep):
            defined |= set(step.set)
    return defined


def _undefined_variables(step: Step, here: tuple[Any, ...], defined: set[str], at: Where) -> list[Problem]:
    """Variables a step's texts, conditions or webhook payload use that nothing defines."""

    def need(path: tuple[Any, ...], names: list[str] | set[str]) -> list[Problem]:
        return [at(path, f"variable '{name}' is not defined (declare it under 'variables')", value=True)
                for name in sorted(set(names) - defined)]

    problems: list[Problem] = []
    for path, text in _texts(step):
        problems += need(here + path, _template_names(text))
    if isinstance(step, BranchStep):
        for i, case in enumerate(step.branch.cases):
            where = here + ("branch", "cases", i, "when")
            try:
                problems += need(where, Expression(case.when).names)
            except ExpressionError as exc:
                problems.append(at(where, f"bad condition: {exc}", value=True))
    elif isinstance(step, WebhookStep) and step.webhook.send:
        problems += need(here + ("webhook", "send"), step.webhook.send)
    return problems


def _references(step: Step, here: tuple[Any, ...], context: FlowContext, at: Where) -> list[Problem]:
    """Webhook URLs and transfer destinations the policy allows; queues and personas that exist."""
    match step:
        case WebhookStep() if not url_allowed(step.webhook.url, context.webhooks_allowed):
            return [at(here + ("webhook", "url"),
                       f"webhook URL {step.webhook.url} is not allowed (webhooks.allowed in appliance.yaml)",
                       value=True)]
        case EgressStep() if not url_allowed(step.egress.url, context.webhooks_allowed):
            return [at(here + ("egress", "url"),
                       f"egress URL {step.egress.url} is not allowed (webhooks.allowed in appliance.yaml)",
                       value=True)]
        case TransferStep() if not destination_allowed(step.transfer.to, context.transfers_allowed):
            return [at(here + ("transfer", "to"),
                       f"transfer destination {step.transfer.to} is not allowed "
                       "(transfers.allowed in appliance.yaml)",
                       value=True)]
        case EscalateStep() if step.escalate.queue not in context.queues:
            return [at(here + ("escalate", "queue"),
                       f"queue '{step.escalate.queue}' is not defined in queues.yaml", value=True)]
        case PersonaStep() if step.persona.name not in context.personas:
            return [at(here + ("persona", "name"),
                       f"persona '{step.persona.name}' is not defined (personas/{step.persona.name}.yaml)",
                       value=True)]
    return []


def _unknown_words(step: Step, here: tuple[Any, ...], at: Where) -> list[Problem]:
    problems: list[Problem] = []
    for path, phrases in _phrases(step):
        unknown = sorted({w for phrase in phrases for w in intents.words(phrase)
                          if not w.isdigit()} - known_words())
        if unknown:
            problems.append(at(here + path, f"the recogniser does not know the words {', '.join(unknown)}; "
                               "use other words or spell them as they sound"))
    return problems


def _audio_problems(step: Step, here: tuple[Any, ...], context: FlowContext, at: Where) -> list[Problem]:
    if context.directory is None:
        return []
    problems: list[Problem] = []
    for path, audio in _audio_files(step):
        try:
            # The player opens the file through the same function, at play time.
            found = flow_file(context.directory, audio).is_file()
        except ValueError:
            problems.append(at(here + path, f"audio file {audio} is outside the flows directory "
                               f"{context.directory}", value=True))
            continue
        if not found:
            problems.append(at(here + path, f"audio file {audio} not found in {context.directory}", value=True))
    return problems


def _texts(step: Step) -> list[tuple[tuple[str, ...], str]]:
    match step:
        case SayStep(say=Say(text=str(text))):
            return [(("say", "text"), text)]
        case MenuStep(menu=Menu(prompt=prompt)) | GatherStep(gather=Gather(prompt=str(prompt))) if prompt:
            return [((step.action, "prompt"), prompt)]
        case EscalateStep(escalate=Escalate(announcement=str(announcement))) if announcement:
            return [(("escalate", "announcement"), announcement)]
        case SetStep():
            return [(("set", k), v) for k, v in step.set.items() if isinstance(v, str)]
    return []


def _phrases(step: Step) -> list[tuple[tuple[str, ...], list[str]]]:
    match step:
        case MenuStep():
            return [(("menu", "speech", target), phrases) for target, phrases in step.menu.speech.items()]
        case GatherStep():
            return [(("gather", "intents", name), phrases) for name, phrases in step.gather.intents.items()]
    return []


def _audio_files(step: Step) -> list[tuple[tuple[str, ...], str]]:
    match step:
        case SayStep(say=Say(audio=str(audio))) if audio:
            return [(("say", "audio"), audio)]
        case EscalateStep(escalate=Escalate(hold_audio=str(audio))) if audio:
            return [(("escalate", "hold_audio"), audio)]
    return []


def _unreachable(flow: Flow, at: Where) -> list[Problem]:
    if flow.entry not in flow.steps:
        return []
    reachable: set[str] = set()
    todo = [flow.entry]
    while todo:
        step_id = todo.pop()
        if step_id in reachable:
            continue
        reachable.add(step_id)
        todo += [t for _, t in flow.steps[step_id].targets() if t in flow.steps]
    return [at(("steps", s), f"step '{s}' is unreachable from '{flow.entry}'")
            for s in flow.steps if s not in reachable]


