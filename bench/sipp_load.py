"""The sipp callers of a capacity step, and what they measured: the scenario that keeps a call up
with the caller speaking for its whole length, sipp's processes, and INVITE → 200 OK times."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.support.sipp.scenarios import speaking_caller_scenario


def find_sipp(workdir: Path) -> list[int]:
    mark = str(workdir).encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if cmdline.startswith(b"sipp\0") and mark in cmdline:
                pids.append(int(proc.name))
    return pids


def bench_scenario(directory: Path, duration_s: float) -> Path:
    """The hold scenario with the caller speaking for all of `duration_s`."""
    return speaking_caller_scenario(directory, duration_s, name="bench_hold.xml")


def rtt_ms(workdir: Path) -> list[float]:
    """Per-call INVITE → 200 OK times from sipp's -trace_rtt file."""
    values = []
    for path in workdir.glob("*_rtt.csv"):
        rows = path.read_text().splitlines()
        if not rows:
            continue
        header = rows[0].split(";")
        column = header.index("response_time_ms") if "response_time_ms" in header else 1
        for row in rows[1:]:
            cells = row.split(";")
            try:
                values.append(float(cells[column]))
            except (IndexError, ValueError):
                continue
    return values


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return float(np.percentile(np.array(values), q * 100))
