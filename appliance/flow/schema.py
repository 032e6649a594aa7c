"""The flow language as pydantic models: a flow is variables, named steps and an entry step.

Each step holds exactly one action key and, where the action ends by itself, `next`; that
key picks the step's model (`Step` is the union of `SayStep`, `MenuStep`, ...).
Personas and queues are referenced by name and defined in their own files
(`flows/personas/*.yaml`, `flows/queues.yaml`). docs/FLOWS.md documents every step.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Self, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    create_model,
    field_validator,
    model_validator,
)

STEP_ID = r"^[A-Za-z_][A-Za-z0-9_-]*$"
VARIABLE = r"^[A-Za-z_][A-Za-z0-9_]*$"
DIGITS = "0123456789*#"
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_RANGE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-(([01]\d|2[0-3]):([0-5]\d)|24:00)$")

Phrases = list[str]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Say(_Model):
    text: str | None = None
    audio: str | None = Field(None, description="a WAV file, relative to the flows directory")
    voice: str | None = None

    @model_validator(mode="after")
    def _text_or_audio(self) -> Say:
        if (self.text is None) == (self.audio is None):
            raise ValueError("say needs exactly one of 'text' or 'audio'")
        return self


class Menu(_Model):
    """Sugar over gather: one key (or one spoken choice) picks the next step."""

    prompt: str
    options: dict[str, str] = Field(default_factory=dict, description="DTMF key → step")
    speech: dict[str, Phrases] = Field(default_factory=dict, description="step → phrases that choose it")
    timeout: float = Field(5.0, gt=0, le=60)
    retries: int = Field(2, ge=0, le=10)
    invalid_prompt: str = "Sorry, that is not an option."
    no_input: str | None = Field(None, description="step when the caller never answers")
    no_match: str | None = Field(None, description="step when every try was a wrong choice")

    @model_validator(mode="after")
    def _keys_are_digits(self) -> Menu:
        for key in self.options:
            if len(key) != 1 or key not in DIGITS:
                raise ValueError(f"menu option {key!r} is not a single DTMF key (0-9, *, #)")
        if not self.options and not self.speech:
            raise ValueError("a menu needs 'options' (DTMF) or 'speech' choices")
        return self


class Gather(_Model):
    """Collect digits and/or a spoken intent into a variable, then go to `next`."""

    prompt: str | None = None
    into: str = Field(pattern=VARIABLE, description="variable that receives the digits or the intent name")
    dtmf: bool = True
    max_digits: int = Field(1, ge=1, le=32)
    min_digits: int = Field(1, ge=1, le=32)
    terminator: str | None = "#"
    intents: dict[str, Phrases] = Field(default_factory=dict, description="intent name → example phrases")
    spoken_digits: bool = Field(False, description="also accept digits spoken one by one")
    digit_pause: float = Field(
        2.0, gt=0, le=10,
        description="seconds of silence after speech that ends in a digit before the number is taken as "
                    "complete: callers read long numbers in groups, pausing between them")
    timeout: float = Field(5.0, gt=0, le=60)
    retries: int = Field(0, ge=0, le=10)
    no_input: str | None = None
    no_match: str | None = None

    @model_validator(mode="after")
    def _something_to_gather(self) -> Gather:
        if not self.dtmf and not self.intents and not self.spoken_digits:
            raise ValueError("gather accepts nothing: enable 'dtmf', 'intents' or 'spoken_digits'")
        if self.min_digits > self.max_digits:
            raise ValueError("min_digits is larger than max_digits")
        return self


class BranchCase(_Model):
    when: str = Field(description="an expression over variables, e.g. balance > 100 and tier == 'gold'")
    goto: str


class Branch(_Model):
    cases: list[BranchCase] = Field(min_length=1)
    otherwise: str


class Webhook(_Model):
    url: str
    send: list[str] | None = Field(None, description="variables posted; default: all")
    timeout: float = Field(3.0, gt=0, le=30)
    on_error: str


class Hours(_Model):
    timezone: str
    weekly: dict[str, list[str]] = Field(description="day or day range (mon-fri) → HH:MM-HH:MM ranges")
    holidays: list[str] = Field(default_factory=list, description="YYYY-MM-DD dates, closed all day")
    open: str
    closed: str

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("weekly")
    @classmethod
    def _valid_week(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for days, ranges in value.items():
            for day in days.split("-", 1):  # "mon-wed-fri" is not a range
                if day not in DAYS:
                    raise ValueError(f"{days!r}: days are {', '.join(DAYS)} or a range like mon-fri")
            for span in ranges:
                if not _RANGE.match(span):
                    raise ValueError(f"{span!r} is not a HH:MM-HH:MM range")
        return value

    @field_validator("holidays")
    @classmethod
    def _valid_dates(cls, value: list[str]) -> list[str]:
        import datetime as dt

        for day in value:
            try:
                dt.date.fromisoformat(day)
            except ValueError as exc:
                raise ValueError(f"holiday {day!r} is not a YYYY-MM-DD date") from exc
        return value


class PersonaHandoff(_Model):
    name: str
    resolved: str
    human: str
    failed: str


class Escalate(_Model):
    queue: str
    announcement: str | None = "Please hold while we connect you."
    hold_audio: str | None = Field(None, description="WAV file looped while waiting; default: a soft tone")
    max_wait: float = Field(60.0, gt=0, le=3600)
    overflow: str


class Voicemail(_Model):
    prompt: str = "Please leave a message after the tone. Press pound when you are done."
    beep: bool = True
    max_length: float = Field(60.0, gt=1, le=600)


class Transfer(_Model):
    to: str = Field(description="a SIP URI or E.164 number; must be allowed in appliance.yaml")
    mode: Literal["refer", "bridge"] = Field(
        "refer", description="refer: the caller's phone is sent a REFER; bridge: the box dials `to` and joins the two",
    )
    announcement: str | None = None
    timeout: float = Field(30.0, gt=0, le=120, description="bridge: seconds the destination may ring")
    on_error: str


class Hangup(_Model):
    reason: str = "flow-hangup"


class Egress(_Model):
    """Stream the call's audio, live, to a WebSocket server of yours (transcription, analytics)."""

    url: str = Field(pattern=r"^wss?://", description="a ws:// or wss:// URL under webhooks.allowed")
    track: Literal["caller", "heard", "both"] = Field("both", description="the caller, what they hear, or both")
    format: Literal["pcm16", "mulaw"] = Field("pcm16", description="16 kHz PCM, or μ-law at 8 kHz")


class Record(_Model):
    """Pause the call's recording while a card number is read (PCI DSS), or resume it."""

    pause: bool = Field(False, description="from here, silence in the recording and every digit masked in events")
    resume: bool = Field(False, description="record again")

    @model_validator(mode="after")
    def _one(self) -> Self:
        if self.pause == self.resume:
            raise ValueError("give exactly one of pause: true or resume: true")
        return self


Target = tuple[tuple[str | int, ...], str]  # (field path in the step, step id)


class _StepBase(_Model):
    """What every step has: its action key (the tag of the union `Step`) and maybe `next`."""

    action: ClassVar[str]
    ends_by_itself: ClassVar[bool] = False  # only these take `next`
    exits: ClassVar[tuple[str, ...]] = ()  # fields of the action that name a step

    next: str | None = None

    @model_validator(mode="after")
    def _next_only_where_it_ends(self) -> Self:
        if self.next is not None and not self.ends_by_itself:
            raise ValueError(f"'{self.action}' steps do not take 'next'")
        return self

    def targets(self) -> list[Target]:
        """Every step this one can lead to, with the field path that names it."""
        out: list[Target] = [(("next",), self.next)] if self.next else []
        part = getattr(self, self.action)
        return out + self._choices() + [((self.action, f), getattr(part, f)) for f in self.exits if getattr(part, f)]

    def _choices(self) -> list[Target]:
        return []


class SayStep(_StepBase):
    action: ClassVar[str] = "say"
    ends_by_itself: ClassVar[bool] = True
    say: Say


class MenuStep(_StepBase):
    action: ClassVar[str] = "menu"
    exits: ClassVar[tuple[str, ...]] = ("no_input", "no_match")
    menu: Menu

    def _choices(self) -> list[Target]:
        return ([(("menu", "options", k), v) for k, v in self.menu.options.items()]
                + [(("menu", "speech"), k) for k in self.menu.speech])


class GatherStep(_StepBase):
    action: ClassVar[str] = "gather"
    ends_by_itself: ClassVar[bool] = True
    exits: ClassVar[tuple[str, ...]] = ("no_input", "no_match")
    gather: Gather


class BranchStep(_StepBase):
    action: ClassVar[str] = "branch"
    branch: Branch

    def _choices(self) -> list[Target]:
        return ([(("branch", "cases", i, "goto"), c.goto) for i, c in enumerate(self.branch.cases)]
                + [(("branch", "otherwise"), self.branch.otherwise)])


class SetStep(_StepBase):
    action: ClassVar[str] = "set"
    ends_by_itself: ClassVar[bool] = True
    set: dict[str, Any]

    @model_validator(mode="after")
    def _variable_names(self) -> Self:
        for name in self.set:
            if not re.match(VARIABLE, name):
                raise ValueError(f"{name!r} is not a variable name")
        return self


class WebhookStep(_StepBase):
    action: ClassVar[str] = "webhook"
    ends_by_itself: ClassVar[bool] = True
    exits: ClassVar[tuple[str, ...]] = ("on_error",)
    webhook: Webhook


class HoursStep(_StepBase):
    action: ClassVar[str] = "hours"
    exits: ClassVar[tuple[str, ...]] = ("open", "closed")
    hours: Hours


class PersonaStep(_StepBase):
    action: ClassVar[str] = "persona"
    exits: ClassVar[tuple[str, ...]] = ("resolved", "human", "failed")
    persona: PersonaHandoff


class EscalateStep(_StepBase):
    action: ClassVar[str] = "escalate"
    exits: ClassVar[tuple[str, ...]] = ("overflow",)
    escalate: Escalate


class VoicemailStep(_StepBase):
    action: ClassVar[str] = "voicemail"
    ends_by_itself: ClassVar[bool] = True
    voicemail: Voicemail


class TransferStep(_StepBase):
    action: ClassVar[str] = "transfer"
    exits: ClassVar[tuple[str, ...]] = ("on_error",)
    transfer: Transfer


class GotoStep(_StepBase):
    action: ClassVar[str] = "goto"
    goto: str

    def _choices(self) -> list[Target]:
        return [(("goto",), self.goto)]


class HangupStep(_StepBase):
    action: ClassVar[str] = "hangup"
    hangup: Hangup


class EgressStep(_StepBase):
    action: ClassVar[str] = "egress"
    ends_by_itself: ClassVar[bool] = True
    egress: Egress


class RecordStep(_StepBase):
    action: ClassVar[str] = "record"
    ends_by_itself: ClassVar[bool] = True
    record: Record


STEP_KINDS: tuple[type[_StepBase], ...] = (SayStep, MenuStep, GatherStep, BranchStep, SetStep, WebhookStep, HoursStep,
                                           PersonaStep, EscalateStep, VoicemailStep, TransferStep, GotoStep,
                                           HangupStep, RecordStep, EgressStep)
ACTIONS = tuple(kind.action for kind in STEP_KINDS)


class _NotOneAction(_Model):
    """A step with no action key or several: each key present is still checked, so the admin
    hears about a bad `say` before being told to drop one of two actions (as when `Step`
    was one model). Its action fields are added below, one per step kind."""

    next: str | None = None

    @model_validator(mode="after")
    def _one_action(self) -> Self:
        found = ", ".join(name for name in ACTIONS if getattr(self, name) is not None) or "none"
        raise ValueError(f"a step needs exactly one of {', '.join(ACTIONS)} (found: {found})")


NOT_ONE_ACTION = "not-one-action"  # the tag of a step that has no action key or several
STEP_TAGS = frozenset(ACTIONS) | {NOT_ONE_ACTION}

# A step, typed: one model per action key.
Step = (SayStep | MenuStep | GatherStep | BranchStep | SetStep | WebhookStep | HoursStep | PersonaStep | EscalateStep
        | VoicemailStep | TransferStep | GotoStep | HangupStep | RecordStep | EgressStep)


def _shorthands(data: Any) -> Any:
    if isinstance(data, dict):
        if "hangup" in data and data["hangup"] is None:
            data = {**data, "hangup": {}}
        if isinstance(data.get("say"), str):
            data = {**data, "say": {"text": data["say"]}}
        if "voicemail" in data and data["voicemail"] is None:
            data = {**data, "voicemail": {}}
    return data


def _action_key(data: Any) -> str:
    """The tag of a step: its one action key (a key set to null is absent)."""
    if isinstance(data, _StepBase):
        return data.action
    found = [name for name in ACTIONS if data.get(name) is not None] if isinstance(data, dict) else []
    return found[0] if len(found) == 1 else NOT_ONE_ACTION


if TYPE_CHECKING:
    _StepField = Step
else:
    # How a step is read: the model is picked by its one action key. Error locations get
    # the tag after the step id (steps.<id>.<tag>...); the loader leaves it out again.
    # The not-one-action model is named "Step", as pydantic names it in "Input should be a
    # valid dictionary or instance of Step"; it never validates, so it is not in `Step`.
    _not_one_action = create_model(
        "Step", __base__=_NotOneAction,
        **{kind.action: (kind.model_fields[kind.action].annotation | None, None) for kind in STEP_KINDS},
    )
    _StepField = Annotated[
        Union[tuple(Annotated[kind, Tag(kind.action)] for kind in STEP_KINDS)  # noqa: UP007
              + (Annotated[_not_one_action, Tag(NOT_ONE_ACTION)],)],
        Discriminator(_action_key),
        BeforeValidator(_shorthands),
    ]


class Flow(_Model):
    name: str = Field(pattern=STEP_ID)
    description: str = ""
    numbers: list[str] = Field(default_factory=list, description="numbers this flow answers")
    entry: str
    variables: dict[str, str | int | float | bool | None] = Field(default_factory=dict)
    steps: dict[str, _StepField]


QueueStrategy = Literal["longest_idle", "ring_all", "round_robin", "fewest_calls"]
SIP_MEMBER = r"^sip:[^@\s:;]+@[A-Za-z0-9.-]+(:\d{1,5})?$"
DISPOSITIONS = ["resolved", "follow-up", "transferred", "other"]


class Queue(_Model):
    """Where escalated callers wait for a human, and how the ACD offers them (operators/acd.py)."""

    description: str = ""
    strategy: QueueStrategy = Field(
        "longest_idle", description="which available operator is offered the next call: the one idle longest, "
        "every one at once (ring_all, the first to accept wins), the next in turn (round_robin), "
        "or the one who took the fewest calls since logging in (fewest_calls)",
    )
    ring_timeout: float = Field(15.0, gt=0, le=300, description="seconds an offer rings one operator before it "
                                "moves on (a browser operator who lets it ring out is set away)")
    wrap_up: float = Field(10.0, ge=0, le=3600, description="seconds after a call during which the operator is "
                           "offered nothing (notes, disposition)")
    announce_every: float | None = Field(30.0, ge=0, le=3600, description="seconds between position announcements "
                                         "to a waiting caller; null or 0: never")
    max_wait: float | None = Field(None, gt=0, le=3600, description="caps the max_wait of escalate steps to this "
                                   "queue (the lower wins); the flow times it, not the ACD")
    service_level_s: float = Field(20.0, gt=0, le=3600, description="a call answered within this many seconds of "
                                   "joining the queue counts as within the service level")
    dispositions: list[str] = Field(default_factory=lambda: list(DISPOSITIONS), min_length=1,
                                    description="what an operator picks when wrapping up a call")
    operators: list[str] = Field(default_factory=list, description="usernames that serve this queue (besides "
                                 "accounts created with --queues)")
    sip_members: list[str] = Field(default_factory=list, description="desk phones the box dials for this queue, "
                                   "sip:user@host; each must also be in transfers.allowed")

    @field_validator("dispositions")
    @classmethod
    def _distinct_dispositions(cls, value: list[str]) -> list[str]:
        for name in value:
            if not name.strip():
                raise ValueError("a disposition is an empty string")
        if len(set(value)) != len(value):
            raise ValueError("dispositions are listed twice")
        return value

    @field_validator("sip_members")
    @classmethod
    def _sip_uris(cls, value: list[str]) -> list[str]:
        for uri in value:
            if not re.match(SIP_MEMBER, uri):
                raise ValueError(f"{uri!r} is not a SIP URI like sip:desk1@pbx.example.com")
        return value


class Queues(_Model):
    queues: dict[str, Queue]
