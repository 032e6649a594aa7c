"""What both benchmarks measure the same way: process memory, calls closing, progress lines."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from tests.support.appliance import ApplianceProcess


def process_rss_kb(pid: int) -> int:
    match = re.search(r"^VmRSS:\s*(\d+)", Path(f"/proc/{pid}/status").read_text(), re.MULTILINE)
    return int(match.group(1)) if match else 0


def wait_closed(app: ApplianceProcess, seen: set[str], count: int, timeout: float) -> list[dict[str, Any]]:
    """The calls not in `seen`, once `count` of them have ended (or what there is at `timeout`)."""
    deadline = time.monotonic() + timeout
    new: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        new = [c for c in app.calls() if c["id"] not in seen]
        if len(new) >= count and all(c["ended_at"] for c in new):
            break
        time.sleep(0.5)
    return new


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)
