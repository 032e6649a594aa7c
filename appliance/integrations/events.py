"""Call changes, as storage sees them, turned into LiveKit-shaped webhook events.

The body is LiveKit's `WebhookEvent` in its JSON form (`event`, `id`, `createdAt`, `room` whose
name is the call id, `participant` where a person is concerned), so a LiveKit webhook handler
parses it; the call-center facts ride alongside under `call` (LiveKit's parser skips fields it
does not know).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.storage import Storage

# Call events (Storage.add_event kinds) that become a webhook event of the same meaning.
_RENAMED = {"answered": "call_answered", "escalated": "escalated", "operator_joined": "operator_joined",
            "operator_left": "operator_left"}


@dataclass(frozen=True)
class CallEvent:
    name: str  # call_started, call_ended, recording_ready…
    call_id: str
    fields: dict[str, Any]
    participant: str | None = None

    def body(self) -> str:
        """The JSON sent, fixed once: the signature covers these exact bytes."""
        event: dict[str, Any] = {"event": self.name, "id": f"EV_{uuid.uuid4().hex[:12]}",
                                 "createdAt": int(time.time()), "room": {"name": self.call_id, "sid": self.call_id},
                                 "call": {"id": self.call_id, **self.fields}}
        if self.participant is not None:
            event["participant"] = {"identity": self.participant, "name": self.participant}
        return json.dumps(event, separators=(",", ":"))


def events_for(storage: Storage, api_url: str, call_id: str, what: str, data: dict[str, Any]) -> list[CallEvent]:
    """The webhook events one change to a call makes (none for most)."""
    if what == "opened":
        return [CallEvent("call_started", call_id, {"from_uri": data.get("from_uri"), "to_uri": data.get("to_uri"),
                                                    "trunk": data.get("trunk"), "flow": data.get("flow")})]
    if what in ("ended", "closed"):  # closed: a call a crash left open, closed at the next start
        return _ended(storage, api_url, call_id, data)
    # A recording being converted (recording.format) is announced once, as its converted file.
    if what in ("recording:voicemail", "converted:voicemail") and not data.get("converting"):
        return [CallEvent("voicemail_left", call_id, {**_audio(Path(data["path"]), data.get("format")),
                                                      "duration_s": data.get("duration_s")})]
    if what == "converted:call":
        return [_recording_ready(api_url, call_id, Path(data["path"]), data.get("duration_s"), data["format"])]
    name = _RENAMED.get(what)
    if name is None:
        return []
    identity = data.get("identity") if name.startswith("operator_") else None
    return [CallEvent(name, call_id, dict(data), participant=identity)]


def _ended(storage: Storage, api_url: str, call_id: str, data: dict[str, Any]) -> list[CallEvent]:
    record = storage.get_call(call_id)
    if record is None:
        return []
    events = [CallEvent("call_ended", call_id, {
        "reason": data.get("reason"), "duration_s": record.duration_s, "started_at": record.started_at,
        "answered_at": record.answered_at, "ended_at": record.ended_at, "flow": record.flow,
        "operator": record.operator})]
    if record.recording_path and Path(record.recording_path).exists() and not data.get("converting"):
        events.append(_recording_ready(api_url, call_id, Path(record.recording_path), data.get("recorded_s")))
    lines = len(storage.transcripts(call_id))
    if lines:
        events.append(CallEvent("transcript_ready", call_id, {"lines": lines, "url": f"{api_url}/api/calls/{call_id}"}))
    return events


def _recording_ready(api_url: str, call_id: str, path: Path, seconds: float | None,
                     audio_format: str | None = None) -> CallEvent:
    return CallEvent("recording_ready", call_id, {**_audio(path, audio_format), "duration_s": seconds,
                                                  "url": f"{api_url}/api/calls/{call_id}/recording"})


def _audio(path: Path, audio_format: str | None = None) -> dict[str, Any]:
    """Where a file is, its size, and its format (as the converter named it, else its suffix)."""
    try:
        size: int | None = path.stat().st_size
    except OSError:
        size = None
    return {"path": str(path), "size": size, "format": audio_format or path.suffix.lstrip(".") or None}
