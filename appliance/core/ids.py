"""Identifiers: short, sortable by creation time, safe in file names."""

from __future__ import annotations

import secrets
import time


def new_call_id() -> str:
    # Time prefix keeps recordings and records sortable; the random part avoids clashes
    # between workers that start calls in the same millisecond.
    return f"CA{int(time.time() * 1000):x}{secrets.token_hex(4)}"
