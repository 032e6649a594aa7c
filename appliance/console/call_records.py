"""A call's record as the HTTP API answers it (GET /api/calls, GET /api/calls/{call_id}): the
pydantic models the handlers build their answers from and the OpenAPI document describes.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from appliance.config import RecordingFormat

__all__ = ["CallDetail", "CallEvent", "CallList", "CallSummary", "StoredRecording", "TranscriptLine"]


class CallSummary(BaseModel):
    """A call's record: the storage's CallRecord written out again, as the API's contract is this model
    and not the database's columns. extra="forbid" and no defaults make the two agree loudly: a column
    added to CallRecord and not here fails every test that reads a call, rather than leaving the
    document behind."""

    model_config = ConfigDict(extra="forbid")
    id: str
    trunk: str | None
    from_uri: str | None
    to_uri: str | None
    started_at: str
    answered_at: str | None
    ended_at: str | None
    end_reason: str | None
    flow: str | None
    flow_version: str | None
    recording_path: str | None
    worker: str | None
    operator: str | None
    recording_pruned_at: str | None
    duration_s: float | None
    recording_format: RecordingFormat | None


class CallList(BaseModel):
    calls: list[CallSummary]


class CallEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")
    at: str
    kind: str
    data: dict[str, Any]


class StoredRecording(BaseModel):
    """A recording of the call besides its own (a voicemail message)."""

    model_config = ConfigDict(extra="forbid")
    id: int
    call_id: str
    kind: str
    path: str
    created_at: str
    duration_s: float | None
    pruned_at: str | None


class TranscriptLine(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: int
    call_id: str
    at: str
    role: str
    speaker: str
    text: str
    interrupted: int  # 0 or 1, as stored


class CallDetail(CallSummary):
    events: list[CallEvent]
    recordings: list[StoredRecording]
    transcript: list[TranscriptLine]
