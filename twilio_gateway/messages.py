"""Twilio's bidirectional Media Streams protocol: the one place its JSON text frames are described.

In: `connected`, `start` (stream and call ids, custom parameters, media format), `media` (base64
μ-law, 8 kHz), `dtmf`, `mark` (a mark we sent has played, or was dropped by a `clear`), `stop`.
Out: `media`, `mark`, `clear`. Twilio's own spelling (camelCase) is kept on the wire.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

# A media message carries 20 ms (160 bytes of μ-law, 216 in base64); a start message a few custom
# parameters. Far beyond this is not Twilio; the socket is closed before the frame is parsed.
MAX_MESSAGE = 16 * 1024
# One media message may carry at most a second of audio: more is a peer filling our memory.
MAX_MEDIA_BYTES = 8000
MULAW_8K = "audio/x-mulaw"

__all__ = ["MAX_MESSAGE", "Clear", "Connected", "Dtmf", "Inbound", "Mark", "Media", "MediaOut", "MarkOut",
           "MediaStreamError", "Start", "Stop", "decode", "media_out"]


class MediaStreamError(ValueError):
    """A frame that is not Twilio's Media Streams protocol: the stream is closed with this reason."""


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class Connected(_Wire):
    event: Literal["connected"]
    protocol: str = ""
    version: str = ""


class MediaFormat(_Wire):
    encoding: str
    sample_rate: int = Field(alias="sampleRate")
    channels: int = 1


class StartInfo(_Wire):
    account_sid: str = Field(alias="accountSid")
    call_sid: str = Field(alias="callSid", pattern=r"^CA[0-9a-fA-F]{32}$")
    stream_sid: str = Field(alias="streamSid")
    tracks: list[str] = Field(default_factory=list)
    custom_parameters: dict[str, str] = Field(default_factory=dict, alias="customParameters")
    media_format: MediaFormat = Field(alias="mediaFormat")


class Start(_Wire):
    event: Literal["start"]
    stream_sid: str = Field(alias="streamSid")
    start: StartInfo


class MediaPayload(_Wire):
    track: str = "inbound"
    payload: str = Field(max_length=MAX_MEDIA_BYTES * 4 // 3 + 4)

    def audio(self) -> bytes:
        """The μ-law bytes; MediaStreamError when the payload is not base64."""
        try:
            return base64.b64decode(self.payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise MediaStreamError(f"media payload is not base64: {exc}") from None


class Media(_Wire):
    event: Literal["media"]
    stream_sid: str = Field(alias="streamSid")
    media: MediaPayload


class DtmfInfo(_Wire):
    digit: str = Field(pattern=r"^[0-9*#A-Da-d]$")


class Dtmf(_Wire):
    event: Literal["dtmf"]
    stream_sid: str = Field(alias="streamSid")
    dtmf: DtmfInfo


class MarkName(_Wire):
    name: str = Field(max_length=64)


class Mark(_Wire):
    event: Literal["mark"]
    stream_sid: str = Field(alias="streamSid")
    mark: MarkName


class Stop(_Wire):
    event: Literal["stop"]
    stream_sid: str = Field(alias="streamSid")


Inbound = Annotated[Connected | Start | Media | Dtmf | Mark | Stop, Field(discriminator="event")]
_inbound: TypeAdapter[Connected | Start | Media | Dtmf | Mark | Stop] = TypeAdapter(Inbound)


def decode(text: str) -> Connected | Start | Media | Dtmf | Mark | Stop:
    """One text frame from Twilio; MediaStreamError for anything else (bad JSON, unknown event)."""
    try:
        return _inbound.validate_python(json.loads(text))
    except (ValueError, ValidationError, RecursionError) as exc:
        raise MediaStreamError(f"not a Media Streams message: {str(exc)[:300]}") from None


# --- what we send. Field names as Twilio reads them.
class _Out(BaseModel):
    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    def frame(self) -> str:
        return self.model_dump_json(by_alias=True)


class _Payload(BaseModel):
    payload: str


class MediaOut(_Out):
    event: Literal["media"] = "media"
    stream_sid: str = Field(alias="streamSid")
    media: _Payload


class MarkOut(_Out):
    event: Literal["mark"] = "mark"
    stream_sid: str = Field(alias="streamSid")
    mark: MarkName


class Clear(_Out):
    """Drop the audio Twilio has buffered for the caller (barge-in)."""

    event: Literal["clear"] = "clear"
    stream_sid: str = Field(alias="streamSid")


def media_out(stream_sid: str, mulaw: bytes) -> MediaOut:
    return MediaOut(stream_sid=stream_sid, media=_Payload(payload=base64.b64encode(mulaw).decode()))
