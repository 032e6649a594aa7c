"""The console's control protocol: JSON messages on a browser session's WebRTC data channel.

One documented place for the wire format (docs/OPERATORS.md describes it for other clients).
Every message is an object with a `type`; the console sends `ClientMessage`s, the appliance
sends `ServerMessage`s. A message that does not validate is answered with an `error` and
dropped; the session stays. Version 1.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

VERSION = 1
MAX_MESSAGE = 16 * 1024  # the largest client message is a wrap-up's notes
MAX_NOTES = 4000


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- console → appliance
class SetState(_Message):
    """Available to take calls, away (with a reason), or logged out (the session ends)."""

    type: Literal["state"] = "state"
    state: Literal["available", "away", "logged_out"]
    reason: str = Field("", max_length=100)


class Accept(_Message):
    type: Literal["accept"] = "accept"
    offer: str = Field(max_length=64)


class Decline(_Message):
    type: Literal["decline"] = "decline"
    offer: str = Field(max_length=64)


class Mute(_Message):
    """The caller stops (or starts again) hearing the operator's microphone."""

    type: Literal["mute"] = "mute"
    muted: bool


class Hold(_Message):
    """The caller hears hold audio and the operator hears nothing of the caller; `resume` ends it."""

    type: Literal["hold"] = "hold"


class Resume(_Message):
    type: Literal["resume"] = "resume"


class TransferTo(_Message):
    """Hand the caller on: to another queue, or to a destination in `transfers.allowed`."""

    type: Literal["transfer"] = "transfer"
    queue: str | None = Field(None, max_length=64)
    to: str | None = Field(None, max_length=200)


class HangUp(_Message):
    type: Literal["hangup"] = "hangup"


class WrapUp(_Message):
    type: Literal["wrap_up"] = "wrap_up"
    call: str = Field(max_length=64)
    disposition: str = Field(max_length=64)
    notes: str = Field("", max_length=MAX_NOTES)


class Ping(_Message):
    type: Literal["ping"] = "ping"
    id: int = 0


# --- supervisors (and admins)
JoinMode = Literal["listen", "whisper", "barge"]


class JoinCall(_Message):
    """Join a live call: listen (heard by no one), whisper (heard by its operator only), barge (by all)."""

    type: Literal["join"] = "join"
    call: str = Field(max_length=64)
    mode: JoinMode = "listen"


class SetMode(_Message):
    """Switch the joined call's mode without leaving it."""

    type: Literal["mode"] = "mode"
    mode: JoinMode


class WhisperText(_Message):
    """A typed instruction for the call's AI persona: into its context, never heard by the caller."""

    type: Literal["whisper_text"] = "whisper_text"
    text: str = Field(min_length=1, max_length=1000)


class TakeOver(_Message):
    """The persona or operator leaves the call; the supervisor talks to the caller from now on."""

    type: Literal["take_over"] = "take_over"


class HandBack(_Message):
    """After taking a call over from an AI persona: the persona has the caller again, the
    supervisor goes back to listening."""

    type: Literal["hand_back"] = "hand_back"


class LeaveCall(_Message):
    type: Literal["leave"] = "leave"


ClientMessage = Annotated[
    SetState | Accept | Decline | Mute | Hold | Resume | TransferTo | HangUp | WrapUp | Ping | JoinCall | SetMode
    | WhisperText | TakeOver | HandBack | LeaveCall,
    Field(discriminator="type"),
]
client_messages: TypeAdapter[ClientMessage] = TypeAdapter(ClientMessage)


# --- appliance → console
class Welcome(_Message):
    type: Literal["welcome"] = "welcome"
    version: int = VERSION
    identity: str
    role: str
    queues: list[str]


class StateIs(_Message):
    """The operator's state, whoever changed it (the operator, a missed offer, wrap-up ending)."""

    type: Literal["state"] = "state"
    state: str  # available | away | offered | on_call | wrap_up | logged_out
    reason: str = ""
    since: str  # ISO 8601


class CallContext(_Message):
    """What the flow and the AI learned before the operator picks up."""

    caller: str
    called: str
    queue: str
    waited_s: float
    path: list[str]  # the flow steps the caller went through
    variables: dict[str, Any]
    transcript: list[dict[str, Any]]  # {role, speaker, text}
    summary: str


class Offered(_Message):
    """A call for the operator: ring; accept or decline within `ring_timeout_s`."""

    type: Literal["offer"] = "offer"
    offer: str
    call: str
    ring_timeout_s: float
    context: CallContext


class OfferWithdrawn(_Message):
    type: Literal["offer_withdrawn"] = "offer_withdrawn"
    offer: str
    reason: str  # caller_hangup | ring_timeout | declined | taken | operator_lost


class CallState(_Message):
    """The operator's call: connected (two-way audio), held, or ended."""

    type: Literal["call"] = "call"
    call: str
    state: Literal["connected", "held", "ended"]
    muted: bool = False
    reason: str = ""
    context: CallContext | None = None


class WrapUpDue(_Message):
    type: Literal["wrap_up_due"] = "wrap_up_due"
    call: str
    dispositions: list[str]
    seconds: float


class Error(_Message):
    type: Literal["error"] = "error"
    message: str
    request: str = ""  # the type of the message it answers


class Pong(_Message):
    type: Literal["pong"] = "pong"
    id: int = 0


class TranscriptLine(_Message):
    """One line of a call's live transcript (the caller, a persona, a supervisor's instruction)."""

    type: Literal["transcript"] = "transcript"
    call: str
    role: str
    speaker: str
    text: str


class Joined(_Message):
    """The supervisor is in the call (or changed mode): what the call is and was."""

    type: Literal["joined"] = "joined"
    call: str
    mode: str  # listen | whisper | barge | taken_over
    context: CallContext
    timeline: list[dict[str, Any]]  # the call's events so far: steps, keys, tools, transfers, joins
    on_call: list[str]  # who talks to the caller now: flow, persona:<name>, an operator
    transcript_note: str = ""  # why there is no live transcript, where there is none
    taken_from: str | None = None  # after a take-over: whom from (persona:<name> can be handed back)


class PersonaSummary(_Message):
    """The AI persona's own summary of a call taken over from it, written by its LLM (the
    offline summary is in `joined`'s context)."""

    type: Literal["summary"] = "summary"
    call: str
    persona: str
    text: str


class LeftCall(_Message):
    type: Literal["left"] = "left"
    call: str
    reason: str


class Wallboard(_Message):
    """To a supervisor as the console opens: every live call, queue and operator. Times are
    instants (seconds since the epoch, the box's clock): `started`, `since`, `waiting_since`."""

    type: Literal["wallboard"] = "wallboard"
    at: str
    calls: list[dict[str, Any]]
    queues: list[dict[str, Any]]
    operators: list[dict[str, Any]]


class WallboardUpdate(_Message):
    """Within 0.2 s of a change: the wallboard's rows added or changed since the last
    `wallboard` or update (each row whole, replacing the one with its key), and the keys of
    rows gone. Rows are keyed by `call`, `queue` and `operator`."""

    type: Literal["wallboard_update"] = "wallboard_update"
    at: str
    calls: list[dict[str, Any]] = Field(default_factory=list)
    calls_gone: list[str] = Field(default_factory=list)
    queues: list[dict[str, Any]] = Field(default_factory=list)
    queues_gone: list[str] = Field(default_factory=list)
    operators: list[dict[str, Any]] = Field(default_factory=list)
    operators_gone: list[str] = Field(default_factory=list)


# The key of each kind of row.
_KEYS = {"calls": "call", "queues": "queue", "operators": "operator"}


def diff(old: Wallboard, new: Wallboard) -> WallboardUpdate | None:
    """What a console holding `old` needs to hold `new`: rows added or changed (whole), keys of
    rows gone. None when nothing changed."""
    update = WallboardUpdate(at=new.at)
    for kind, key in _KEYS.items():
        before = {row[key]: row for row in getattr(old, kind)}
        after = {row[key]: row for row in getattr(new, kind)}
        getattr(update, kind).extend(row for k, row in after.items() if before.get(k) != row)
        getattr(update, f"{kind}_gone").extend(k for k in before if k not in after)
    changed = any(getattr(update, kind) or getattr(update, f"{kind}_gone") for kind in _KEYS)
    return update if changed else None


def apply(board: Wallboard, update: WallboardUpdate) -> Wallboard:
    """`board` with `update` applied: what a console shows (tests and benchmarks read it so)."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for kind, key in _KEYS.items():
        current = {row[key]: row for row in getattr(board, kind)}
        for gone in getattr(update, f"{kind}_gone"):
            current.pop(gone, None)
        for row in getattr(update, kind):
            current[row[key]] = row
        rows[kind] = list(current.values())
    return Wallboard(at=update.at, **rows)


ServerMessage = Annotated[
    Welcome | StateIs | Offered | OfferWithdrawn | CallState | WrapUpDue | Error | Pong | TranscriptLine | Joined
    | PersonaSummary | LeftCall | Wallboard | WallboardUpdate,
    Field(discriminator="type"),
]
server_messages: TypeAdapter[ServerMessage] = TypeAdapter(ServerMessage)
