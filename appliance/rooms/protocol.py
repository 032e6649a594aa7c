"""The participant protocol: how out-of-process participants (SIP workers) talk to the hub.

A stream of frames over a local socket: 4-byte big-endian length, 1-byte kind, payload.
Kind 1 is a JSON control message (the pydantic models below); kind 2 is an audio batch,
the frames of many call legs in one write: repeated (leg u32, length u16, PCM).
Batching keeps the per-frame cost to one socket write per worker per 20 ms, not per call.
"""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Annotated, Any, AsyncIterator, Literal, Union

from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from appliance.core.errors import ProtocolError

KIND_CONTROL = 1
KIND_AUDIO = 2
MAX_FRAME = 1 << 22
_HEADER = struct.Struct(">IB")
_LEG = struct.Struct(">IH")


class Hello(BaseModel):
    type: Literal["hello"] = "hello"
    token: str
    worker: str
    capacity: int


class Welcome(BaseModel):
    type: Literal["welcome"] = "welcome"


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
    reason: str = ""
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


class Ended(BaseModel):
    type: Literal["ended"] = "ended"
    leg: int
    reason: str


class Hangup(BaseModel):
    type: Literal["hangup"] = "hangup"
    leg: int
    reason: str = "flow"


class Transfer(BaseModel):
    """Blind transfer: the worker sends the caller a REFER to `to`."""

    type: Literal["transfer"] = "transfer"
    leg: int
    to: str


class TransferResult(BaseModel):
    type: Literal["transfer_result"] = "transfer_result"
    leg: int
    ok: bool
    code: int = 0
    reason: str = ""


# A SIP URI's user part we put in a From header: nothing that could add a header or a host.
SIP_USER = r"[A-Za-z0-9+._~-]{1,64}"


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
    reason: str = ""
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
    """Agent → hub: a built-in tool that acts on the call (transfer, send_dtmf, set_variable)."""

    type: Literal["call_action"] = "call_action"
    leg: int
    action: Literal["transfer", "send_dtmf", "set_variable"]
    arguments: dict[str, Any] = Field(default_factory=dict)


class PersonaExit(BaseModel):
    """Agent → hub: the persona lets go of the caller (resolved, human or failed)."""

    type: Literal["persona_exit"] = "persona_exit"
    leg: int
    exit: Literal["resolved", "human", "failed"]
    variables: dict[str, Any] = Field(default_factory=dict)
    reason: str = ""


class SendDtmf(BaseModel):
    """Hub → SIP worker: play DTMF digits to the caller (RFC 4733)."""

    type: Literal["send_dtmf"] = "send_dtmf"
    leg: int
    digits: str = Field(pattern=r"^[0-9*#A-Da-d]{1,32}$")


Message = Annotated[
    Union[Hello, Welcome, Offer, OfferReply, Answered, Dtmf, Ended, Hangup, Transfer, TransferResult,
          Dial, DialResult, Dispatch, Release, SegmentEnd, ClearAudio, Played, Transcript, ToolEvent, CallAction, PersonaExit,
          SendDtmf],
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


def decode_control(body: bytes) -> BaseModel:
    try:
        return _messages.validate_python(json.loads(body))
    except (ValueError, ValidationError, RecursionError) as exc:
        raise ProtocolError(f"bad control message: {exc}") from exc


def decode_audio(body: bytes) -> list[tuple[int, bytes]]:
    frames = []
    offset = 0
    while offset < len(body):
        if offset + _LEG.size > len(body):
            raise ProtocolError("truncated audio batch")
        leg, length = _LEG.unpack_from(body, offset)
        offset += _LEG.size
        if offset + length > len(body):
            raise ProtocolError("audio batch shorter than its frame lengths")
        frames.append((leg, body[offset : offset + length]))
        offset += length
    return frames


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Next (kind, body); raises IncompleteReadError at end of stream."""
    header = await reader.readexactly(_HEADER.size)
    length, kind = _HEADER.unpack(header)
    if not 1 <= length <= MAX_FRAME:
        raise ProtocolError(f"frame length {length} out of range")
    return kind, await reader.readexactly(length - 1)


async def join_hub(socket_path: str, hello: Hello) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to the hub as a worker; raises OSError unless the hub welcomes the token."""
    reader, writer = await asyncio.open_unix_connection(socket_path)
    writer.write(encode_control(hello))
    kind, body = await asyncio.wait_for(read_frame(reader), timeout=10)
    if kind != KIND_CONTROL or not isinstance(decode_control(body), Welcome):
        writer.close()
        raise OSError("the hub refused this worker")
    return reader, writer


async def messages(reader: asyncio.StreamReader, stop: asyncio.Event) -> AsyncIterator[list[tuple[int, bytes]] | BaseModel]:
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
