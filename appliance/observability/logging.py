"""Structured logs: one JSON object per line, with the call id whenever there is one.

Callers' numbers, digits and transcripts are PII: they go only under the `pii` key, which
`redact_pii` (on by default) replaces with a marker, so logs can be shared without them.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from typing import Any

call_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("call_id", default=None)


class JsonFormatter(logging.Formatter):
    def __init__(self, redact_pii: bool = True):
        super().__init__()
        self.redact_pii = redact_pii

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        call_id = getattr(record, "call_id", None) or call_id_var.get()
        if call_id:
            entry["call_id"] = call_id
        fields = getattr(record, "fields", None)
        if fields:
            entry.update(fields)
        pii = getattr(record, "pii", None)
        if pii:
            entry["pii"] = "[redacted]" if self.redact_pii else pii
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup(level: str = "INFO", redact_pii: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(redact_pii=redact_pii))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def log_extra(call_id: str | None = None, pii: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    """The `extra=` of a log call: structured fields, PII kept apart."""
    extra: dict[str, Any] = {"fields": fields}
    if call_id:
        extra["call_id"] = call_id
    if pii:
        extra["pii"] = pii
    return extra
