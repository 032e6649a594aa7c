"""What both benchmarks share: the machine and code under test, process memory, calls closing,
progress lines, and where results and docs/BENCHMARKS.md sections are written."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.support.appliance import ApplianceProcess

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "BENCHMARKS.md"


def command_output(argv: list[str]) -> str:
    """stdout and stderr of a short command; "" if it cannot run."""
    try:
        out = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout + out.stderr


def first_line(argv: list[str]) -> str:
    lines = [line.strip() for line in command_output(argv).splitlines() if line.strip()]
    return lines[0] if lines else "unknown"


def machine(tools: dict[str, str]) -> dict[str, Any]:
    """The box: CPU, cores, memory, kernel, Python, and the `tools` versions a benchmark names."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    mem_kb = int(re.search(r"^MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text(), re.MULTILINE).group(1))  # type: ignore[union-attr]
    return {
        "cpu": model.group(1).strip() if model else platform.processor() or "unknown",
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    } | tools


def code_version(paths: tuple[str, ...]) -> str:
    """The commit under test, and whether `paths` differ from it."""
    pinned = ROOT / ".bench-commit"  # written by whoever benchmarks a `git archive` snapshot
    if pinned.exists():
        return pinned.read_text().strip()[:12] + " (clean snapshot)"
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"],
                              capture_output=True, text=True, timeout=10, check=False).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", *paths],
                               capture_output=True, text=True, timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    names = [f"{p}/" for p in paths]
    where = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
    return f"{head or 'unknown'}{' + uncommitted changes in ' + where if dirty else ''}"


def save_results(report: dict[str, Any], name: str, tag: str) -> Path:
    """Write the report as bench/results/<name>-<date><tag>.json; its path goes in the report."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.fromisoformat(report["date"]).strftime("%Y-%m-%d")
    path = RESULTS / f"{name}-{stamp}{tag}.json"
    report["json_path"] = str(path.relative_to(ROOT))
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return path


def write_doc_section(section: str, begin: str, end: str) -> None:
    """Replace (or append) one benchmark's section of docs/BENCHMARKS.md: other benchmarks write theirs."""
    text = (DOC.read_text() if DOC.exists()
            else "# Benchmarks\n\nMeasured numbers and the command that reproduces each.\n")
    if begin in text and end in text:
        before, rest = text.split(begin, 1)
        text = before + section.rstrip("\n") + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)


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
