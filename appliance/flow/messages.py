"""The flow engine's vocabulary: the events the runner feeds it and the actions it asks the
runner to carry out, as frozen dataclasses. `appliance.flow.engine` re-exports them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


# events (runner → engine)
@dataclass(frozen=True)
class PlaybackDone:
    pass


@dataclass(frozen=True)
class Digit:
    digit: str


@dataclass(frozen=True)
class Speech:
    """An utterance has ended; `text` is what was heard in it ("" when nothing was)."""

    text: str


@dataclass(frozen=True)
class SpeechStarted:
    """The caller has started an utterance (its `Speech` follows when it ends)."""


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


@dataclass(frozen=True)
class OperatorConnected:
    """The ACD put an escalated caller through to an operator: hold ends, max_wait no longer runs."""

    operator: str


@dataclass(frozen=True)
class OperatorReturned:
    """The caller is back in the queue (the operator's browser was lost, or the operator passed
    the call to another queue): hold again, and max_wait runs again from now."""


@dataclass(frozen=True)
class QueueOverflow:
    """The queue cannot take the caller (no operator logged in): the step's overflow, now."""

    reason: str


Event = (PlaybackDone | Digit | Speech | SpeechStarted | TimerFired | WebhookDone | RecordingDone | TransferDone
         | PersonaDone | OperatorConnected | OperatorReturned | QueueOverflow)


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


@dataclass(frozen=True)
class StartEgress:
    """Stream the call's audio to a WebSocket server until the call ends."""

    url: str
    track: str  # caller | heard | both
    format: str  # pcm16 | mulaw


@dataclass(frozen=True)
class PauseRecording:
    """Pause (True) or resume (False) the call's recording; `by` says who asked."""

    paused: bool
    by: str = "flow"


Action = (EnterStep | Say | PlayFile | PlayHold | StopSpeaking | StartTimer | Listen | StopListening
          | SetVariable | CallWebhook | Escalated | StartRecording | StopRecording | Transfer | StartPersona | Hangup
          | PauseRecording | StartEgress)
