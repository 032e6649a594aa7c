"""What an operator sees of a call before answering it: the flow's path and variables, and,
when a persona talked to the caller first, its transcript and a short summary of what it
learned and why it handed over. Built from the call's stored events, so a supervisor's
view and a later audit read the same facts.
"""

from __future__ import annotations

from typing import Any

from appliance.operators.protocol import CallContext
from appliance.storage import Storage

TRANSCRIPT_LINES = 40  # the operator needs the gist, not an hour of chat
# Variables every call has; the summary lists what the flow and persona learned beyond them.
_BASE_VARIABLES = {"caller", "called", "call_id", "trunk"}


def call_context(storage: Storage, call_id: str, queue: str, waited_s: float,
                 variables: dict[str, Any]) -> CallContext:
    events = list(storage.events(call_id))
    path = [e["data"]["step"] for e in events if e["kind"] == "step"]
    transcript = [{"role": t["role"], "speaker": t["speaker"], "text": t["text"]}
                  for t in storage.transcripts(call_id)][-TRANSCRIPT_LINES:]
    shown = {name: value for name, value in variables.items() if _shown(value)}
    return CallContext(
        caller=str(variables.get("caller", "")),
        called=str(variables.get("called", "")),
        queue=queue,
        waited_s=round(waited_s, 1),
        path=path,
        variables=shown,
        transcript=transcript,
        summary=summary(events, shown),
    )


def summary(events: list[dict[str, Any]], variables: dict[str, Any]) -> str:
    """One or two sentences: which persona handed over and why, what it used, what is known."""
    parts = []
    for event in events:
        if event["kind"] == "persona_ended":
            data = event["data"]
            reason = f": {data['reason']}" if data.get("reason") else ""
            parts.append(f"{data.get('persona', 'The assistant')} handed over ({data.get('exit', '')}){reason}.")
    tools = sorted({e["data"].get("name", "") for e in events if e["kind"] == "tool"} - {""})
    if tools:
        parts.append(f"Tools used: {', '.join(tools)}.")
    learned = {k: v for k, v in variables.items() if k not in _BASE_VARIABLES and v not in (None, "")}
    if learned:
        parts.append("Known: " + ", ".join(f"{k} = {v}" for k, v in sorted(learned.items())) + ".")
    return " ".join(parts) or "No assistant spoke with this caller."


def _shown(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) or value is None
