"""The participant protocol: how out-of-process participants (SIP workers) talk to the hub.

A stream of frames over a local socket: 4-byte big-endian length, 1-byte kind, payload.
Kind 1 is a JSON control message (the pydantic models below); kind 2 is an audio batch,
the frames of many call legs in one write: repeated (leg u32, length u16, PCM).
Batching keeps the per-frame cost to one socket write per worker per 20 ms, not per call.
The limits below bound what a worker can make the hub hold or parse; the hub cuts off a
worker that breaks one.
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field, TypeAdapter, ValidationError

from appliance.core.audio import FRAME_BYTES
from appliance.core.errors import ProtocolError

KIND_CONTROL = 1
KIND_AUDIO = 2
_KIND_NAMES = {KIND_CONTROL: "control message", KIND_AUDIO: "audio batch"}
_HEADER = struct.Struct(">IB")
_LEG = struct.Struct(">IH")

# --- limits. Each is checked on what arrives before anything is buffered or parsed for it,
# and each sits well above what our own workers send, so only a broken or hostile peer meets one.

# Any frame, either way: a length beyond it is garbage (an HTTP request reads as 1.2 GB).
MAX_FRAME = 1 << 22
# A control message is JSON of a few hundred bytes. The largest legitimate one is a persona's
# ToolEvent carrying a webhook tool's reply (capped at 64 KB by flow.webhook.MAX_REPLY_BYTES)
# with the tool's arguments; four times that cap has no use but to make the hub parse it.
MAX_CONTROL = 256 * 1024
# An audio batch holds each leg's frames since the worker's last batch: one per 20 ms tick, or
# up to a second of them after the worker fell behind (the SIP media port keeps 50 per call).
MAX_BATCH_FRAMES_PER_LEG = 50
# The calls a worker may declare in hello, which sizes the audio batches it may send. The
# config allows 4 calls per SIP worker and 32 per persona worker; this is far above both.
MAX_CAPACITY = 256
# What the hub holds unsent for one worker: two seconds of a 32-call worker's audio, 16 s of
# a 4-call one. A worker that far behind is not reading (hung, or hostile); its calls' audio
# is already lost, and holding more only grows the hub without bound.
MAX_BACKLOG = 2 << 20
# Reasons end up in the database, metrics and logs. A remote SIP party writes some of them (a
# reason phrase the worker relays), so they are clipped rather than refused: refusing would let
# a caller's long reason phrase cut off every call on the worker that relayed it.
MAX_REASON = 256
# A peer has this long to send its hello, and a frame begun must be finished within it: a
# slow writer would otherwise hold a connection, and the calls on it, for ever. Silence
# *between* frames is normal (a worker with no calls sends nothing).
HANDSHAKE_TIMEOUT_S = 10.0
FRAME_TIMEOUT_S = 10.0


def max_audio_batch(capacity: int) -> int:
    """The largest audio batch body a worker declaring `capacity` calls may send."""
    return min(MAX_FRAME - 1, capacity * MAX_BATCH_FRAMES_PER_LEG * (_LEG.size + FRAME_BYTES))


Reason = Annotated[str, AfterValidator(lambda reason: reason[:MAX_REASON])]


class Hello(BaseModel):
    type: Literal["hello"] = "hello"
    token: str
    worker: str
    capacity: int = Field(ge=1, le=MAX_CAPACITY)


class Welcome(BaseModel):
    type: Literal["welcome"] = "welcome"


class Refused(BaseModel):
    """Hub → worker, instead of welcome: its token is not good (expired, wrong name, wrong role)."""

    type: Literal["refused"] = "refused"
    reason: str = ""


class Offer(BaseModel):
    """A worker received an INVITE; the hub decides (200 and a call id, or a SIP error)."""

    type: Literal["offer"] = "offer"
    leg: int
    sip_call_id: str
    from_uri: str
    to_uri: str
    to_user: str
    trunk: str | None = None
    source: str | None = None


class OfferReply(BaseModel):
    type: Literal["offer_reply"] = "offer_reply"
    leg: int
    code: int
    reason: Reason = ""
    call_id: str | None = None


class Answered(BaseModel):
    type: Literal["answered"] = "answered"
    leg: int
    codec: str | None = None


class Dtmf(BaseModel):
    type: Literal["dtmf"] = "dtmf"
    leg: int
    digit: str = Field(pattern=r"^[0-9*#A-Da-d]$")
    method: str = "rfc4733"


class Rtp(BaseModel):
    """A SIP leg's RTP over its call (pjmedia's counters): packets from the far end received,
    lost on the way and discarded by the jitter buffer; packets sent; the far end's worst jitter."""

    received: int = Field(ge=0)
    lost: int = Field(ge=0)
    discarded: int = Field(ge=0)
    sent: int = Field(ge=0)
    jitter_max_ms: float = Field(ge=0)


class Ended(BaseModel):
    type: Literal["ended"] = "ended"
    leg: int
    reason: Reason
    rtp: Rtp | None = None  # None: a leg without media, or not a SIP leg


class Hangup(BaseModel):
    type: Literal["hangup"] = "hangup"
    leg: int
    reason: Reason = "flow"


class ClearPlayback(BaseModel):
    """Hub → worker: what leg `leg` was hearing was cut (a persona interrupted, a prompt cut by a key);
    drop whatever is buffered for the caller's ear beyond the hub (Twilio's buffer: a `clear`)."""

    type: Literal["clear_playback"] = "clear_playback"
    leg: int


class Playout(BaseModel):
    """Worker → hub: the caller's ear is `behind_ms` behind what the hub has sent leg `leg` (audio
    buffered beyond the hub, as at Twilio, measured by its marks). A persona's interrupted reply is
    then cut where the caller really stopped hearing it, not where the hub stopped sending."""

    type: Literal["playout"] = "playout"
    leg: int
    behind_ms: int = Field(ge=0, le=60_000)


# A SIP URI's user part we put in a From header: nothing that could add a header or a host.
SIP_USER = r"[A-Za-z0-9+._~-]{1,64}"


class Transfer(BaseModel):
    """Blind transfer: a SIP worker sends the caller a REFER to `to`; the Twilio gateway has Twilio
    dial `to` instead (new TwiML for the live call), showing `caller_id` as a bridge's Dial does."""

    type: Literal["transfer"] = "transfer"
    leg: int
    to: str
    caller_id: str | None = Field(None, pattern=f"^{SIP_USER}$")  # None: the carrier's default


class TransferResult(BaseModel):
    type: Literal["transfer_result"] = "transfer_result"
    leg: int
    ok: bool
    code: int = 0
    reason: Reason = ""


class Dial(BaseModel):
    """Hub → SIP worker: place a call to `to` as leg `leg` (the hub numbers the legs it dials).

    The worker answers with one DialResult; after an answered one, the leg ends with Ended
    like any other, and a Hangup for the leg cancels it while it rings.
    """

    type: Literal["dial"] = "dial"
    leg: int
    call_id: str
    to: str = Field(pattern=r"^sips?:[^\s<>]+$")
    caller_id: str | None = Field(None, pattern=f"^{SIP_USER}$")  # the From user; None: the worker's own


class DialResult(BaseModel):
    type: Literal["dial_result"] = "dial_result"
    leg: int
    ok: bool
    code: int = 0  # the SIP status that decided it (200, 486, 603…); 0 if the worker refused locally
    reason: Reason = ""
    codec: str | None = None


# --- persona (agent) workers: dispatched to a room, as livekit-agents workers are
class Dispatch(BaseModel):
    """Hub → agent worker: join the call `call_id` as persona `persona` (job = `leg`)."""

    type: Literal["dispatch"] = "dispatch"
    leg: int
    call_id: str
    persona: str
    variables: dict[str, Any] = Field(default_factory=dict)


class Release(BaseModel):
    """Hub → agent worker: the call ended or the flow took the caller back."""

    type: Literal["release"] = "release"
    leg: int


# A supervisor types an instruction, not an essay: a few sentences, far below MAX_CONTROL.
MAX_INSTRUCTION = 1000


class Instruct(BaseModel):
    """Hub → agent worker: a supervisor's typed instruction (a whisper) for the persona on job `leg`.

    It goes into the persona's chat context for its next reply; the persona never speaks it by
    itself, so the caller hears nothing of it. `by` is the supervisor's identity.
    """

    type: Literal["instruct"] = "instruct"
    leg: int
    text: str = Field(min_length=1, max_length=MAX_INSTRUCTION)
    by: str


class PersonaIO(BaseModel):
    """Hub → agent worker: switch the persona's audio input and output off (a supervisor took the
    call over) or on again (handed back), as livekit-agents' warm transfer does. The session,
    its context and its tools stay: switched off, it neither hears nor speaks."""

    type: Literal["persona_io"] = "persona_io"
    leg: int
    enabled: bool
    by: str


class Summary(BaseModel):
    """Agent → hub: the persona's own summary of the call for the supervisor who took it over,
    written by its LLM (sent only where the persona has one; offline, the hub summarises)."""

    type: Literal["summary"] = "summary"
    leg: int
    text: str = Field(max_length=4000)


class SegmentEnd(BaseModel):
    """Agent → hub: the audio of reply `segment` is all sent; tell me when it has played."""

    type: Literal["segment_end"] = "segment_end"
    leg: int
    segment: int


class ClearAudio(BaseModel):
    """Agent → hub: barge-in; drop what is queued of the current reply."""

    type: Literal["clear_audio"] = "clear_audio"
    leg: int
    segment: int


class Played(BaseModel):
    """Hub → agent: how much of reply `segment` the caller really heard."""

    type: Literal["played"] = "played"
    leg: int
    segment: int
    seconds: float
    interrupted: bool


class Transcript(BaseModel):
    type: Literal["transcript"] = "transcript"
    leg: int
    role: Literal["caller", "persona"]
    text: str
    persona: str = ""
    interrupted: bool = False


class ToolEvent(BaseModel):
    type: Literal["tool_event"] = "tool_event"
    leg: int
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    result: Any = None


class CallAction(BaseModel):
    """Agent → hub: a built-in tool that acts on the call (transfer, send_dtmf, set_variable, record:
    `{"pause": bool}`)."""

    type: Literal["call_action"] = "call_action"
    leg: int
    action: Literal["transfer", "send_dtmf", "set_variable", "record"]
    arguments: dict[str, Any] = Field(default_factory=dict)


class PersonaExit(BaseModel):
    """Agent → hub: the persona lets go of the caller (resolved, human or failed)."""

    type: Literal["persona_exit"] = "persona_exit"
    leg: int
    exit: Literal["resolved", "human", "failed"]
    variables: dict[str, Any] = Field(default_factory=dict)
    reason: Reason = ""


class SendDtmf(BaseModel):
    """Hub → SIP worker: play DTMF digits to the caller (RFC 4733)."""

    type: Literal["send_dtmf"] = "send_dtmf"
    leg: int
    digits: str = Field(pattern=r"^[0-9*#A-Da-d]{1,32}$")


# --- WebRTC gateway workers: browser legs (operators, supervisors), as LiveKit's WebRTC transport.
# The hub picks `leg` (one per browser session); signalling is one offer/answer (aiortc gathers
# every candidate before answering, so there is nothing to trickle).
MAX_SDP = 64 * 1024  # a browser's offer is 3-6 KB; far beyond that is not an offer


class RtcOffer(BaseModel):
    """Hub → WebRTC worker: a browser's SDP offer for session `leg`; answer with RtcAnswer."""

    type: Literal["rtc_offer"] = "rtc_offer"
    leg: int
    sdp: str = Field(max_length=MAX_SDP)
    identity: str
    ice_servers: list[dict[str, Any]] = Field(default_factory=list)


class RtcAnswer(BaseModel):
    """WebRTC worker → hub: the SDP answer, or why there is none (a malformed offer, no audio)."""

    type: Literal["rtc_answer"] = "rtc_answer"
    leg: int
    ok: bool
    sdp: str = Field("", max_length=MAX_SDP)
    error: Reason = ""


class RtcState(BaseModel):
    """WebRTC worker → hub: the session's control channel opened, or the browser is gone."""

    type: Literal["rtc_state"] = "rtc_state"
    leg: int
    state: Literal["open", "closed"]
    reason: Reason = ""


class RtcData(BaseModel):
    """Either way: one JSON message on the session's data channel (appliance.operators.protocol)."""

    type: Literal["rtc_data"] = "rtc_data"
    leg: int
    payload: dict[str, Any]


class RtcClose(BaseModel):
    """Hub → WebRTC worker: end session `leg` (logged out, token refused, appliance stopping)."""

    type: Literal["rtc_close"] = "rtc_close"
    leg: int
    reason: Reason = ""


Message = Annotated[
    (Hello | Welcome | Refused | Offer | OfferReply | Answered | Dtmf | Ended | Hangup | ClearPlayback | Playout
     | Transfer | TransferResult
     | Dial | DialResult | Dispatch | Release | Instruct | PersonaIO | Summary | SegmentEnd | ClearAudio | Played
     | Transcript | ToolEvent | CallAction | PersonaExit | SendDtmf | RtcOffer | RtcAnswer | RtcState | RtcData
     | RtcClose),
    Field(discriminator="type"),
]
_messages = TypeAdapter(Message)


def encode_control(message: BaseModel) -> bytes:
    body = message.model_dump_json().encode()
    return _HEADER.pack(len(body) + 1, KIND_CONTROL) + body


def encode_audio(frames: list[tuple[int, bytes]]) -> bytes:
    parts = [_LEG.pack(leg, len(pcm)) + pcm for leg, pcm in frames]
    body = b"".join(parts)
    return _HEADER.pack(len(body) + 1, KIND_AUDIO) + body


def decode_control(body: bytes) -> Message:
    try:
        return _messages.validate_python(json.loads(body))
    except (ValueError, ValidationError, RecursionError) as exc:
        raise ProtocolError(f"bad control message: {exc}") from exc


def decode_audio(body: bytes, frame_bytes: int | None = None) -> list[tuple[int, bytes]]:
    """The (leg, PCM) frames of a batch; with `frame_bytes`, every frame must be that long."""
    frames = []
    offset = 0
    while offset < len(body):
        if offset + _LEG.size > len(body):
            raise ProtocolError("truncated audio batch")
        leg, length = _LEG.unpack_from(body, offset)
        offset += _LEG.size
        if frame_bytes is not None and length != frame_bytes:
            # The room mixes equal frames; one of another size is another audio format.
            raise ProtocolError(f"audio frame of {length} bytes; frames are {frame_bytes}")
        if offset + length > len(body):
            raise ProtocolError("audio batch shorter than its frame lengths")
        frames.append((leg, body[offset : offset + length]))
        offset += length
    return frames


async def read_frame(reader: asyncio.StreamReader, max_control: int = MAX_FRAME - 1, max_audio: int = MAX_FRAME - 1,
                     timeout: float | None = None) -> tuple[int, bytes]:
    """Next (kind, body); raises IncompleteReadError at end of stream.

    ProtocolError for a frame of an unknown kind or longer than its kind's limit (judged on
    the header, before any of the body is read), or whose body takes over `timeout` seconds.
    The defaults are a worker's, which trusts the hub; the hub passes its own limits.
    """
    header = await reader.readexactly(_HEADER.size)
    length, kind = _HEADER.unpack(header)
    if not 1 <= length <= MAX_FRAME:
        raise ProtocolError(f"frame length {length} out of range")
    limit = {KIND_CONTROL: max_control, KIND_AUDIO: max_audio}.get(kind)
    if limit is None:
        raise ProtocolError(f"unknown frame kind {kind}")
    if length - 1 > limit:
        raise ProtocolError(f"{_KIND_NAMES[kind]} of {length - 1} bytes over the limit of {limit}")
    try:
        return kind, await asyncio.wait_for(reader.readexactly(length - 1), timeout)
    except TimeoutError:
        raise ProtocolError(f"frame body not received within {timeout} s") from None


class HubRefused(Exception):
    """The hub will not take this worker's token: trying again with it is pointless.

    Not an OSError, so reconnect loops do not catch it: the worker exits, and the appliance
    respawns it with a fresh token (a token minted at spawn expires; see rooms/tokens.py).
    """


async def join_hub(socket_path: str, hello: Hello) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to the hub as a worker. Raises HubRefused when the hub refuses the token, OSError
    (or IncompleteReadError) when there is no hub to talk to, worth another try."""
    reader, writer = await asyncio.open_unix_connection(socket_path)
    writer.write(encode_control(hello))
    kind, body = await asyncio.wait_for(read_frame(reader), timeout=10)
    message = decode_control(body) if kind == KIND_CONTROL else None
    if isinstance(message, Welcome):
        return reader, writer
    writer.close()
    if isinstance(message, Refused):
        raise HubRefused(message.reason)
    raise OSError("the hub did not welcome this worker")


async def messages(reader: asyncio.StreamReader,
                   stop: asyncio.Event) -> AsyncIterator[list[tuple[int, bytes]] | BaseModel]:
    """What the hub sends, until `stop` is set: audio batches and control messages."""
    stopped = asyncio.ensure_future(stop.wait())
    try:
        while True:
            read = asyncio.ensure_future(read_frame(reader))
            done, _ = await asyncio.wait([read, stopped], return_when=asyncio.FIRST_COMPLETED)
            if stopped in done:
                read.cancel()
                return
            kind, body = read.result()
            yield decode_audio(body) if kind == KIND_AUDIO else decode_control(body)
    finally:
        stopped.cancel()
