"""The sipp callers of a capacity step, and what they measured: the scenario that keeps a call up
with the caller speaking for its whole length, sipp's processes, and INVITE → 200 OK times."""

from __future__ import annotations

import struct
from pathlib import Path
from string import Template

import numpy as np

from bench.common import SCENARIO
from tests.support.sipp.scenarios import PCAPS

PCAP = PCAPS / "g711a.pcap"


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


def pcap_seconds(path: Path) -> float:
    """Play time of a pcap: first to last packet plus one packet's ptime."""
    data = path.read_bytes()
    endian = "<" if data[:4] == b"\xd4\xc3\xb2\xa1" else ">"
    stamps = []
    offset = 24
    while offset + 16 <= len(data):
        seconds, micros, captured, _ = struct.unpack(endian + "IIII", data[offset : offset + 16])
        stamps.append(seconds + micros / 1e6)
        offset += 16 + captured
    ptime = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
    return stamps[-1] - stamps[0] + ptime


def bench_scenario(directory: Path, duration_s: float) -> Path:
    """The hold scenario with play/pause pairs that fill `duration_s` with the caller speaking."""
    play_ms = int(pcap_seconds(PCAP) * 1000)
    left = int(duration_s * 1000)
    media = []
    while left > 0:
        pause = min(play_ms, left)
        media.append(f'  <nop><action><exec play_pcap_audio="{PCAP}"/></action></nop>\n'
                     f'  <pause milliseconds="{pause}"/>')
        left -= pause
    text = Template(SCENARIO.read_text()).substitute(MEDIA="\n".join(media), BYE_TIMEOUT_MS=10000)
    path = directory / "bench_hold.xml"
    path.write_text(text)
    return path


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
