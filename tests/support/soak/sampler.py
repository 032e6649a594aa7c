"""Memory and open files of every appliance process over a soak, and how they grow per call.

Every few seconds: RSS (/proc/PID/status), private memory (/proc/PID/smaps_rollup) and open file
descriptors (/proc/PID/fd) of the main process, each SIP worker, persona worker, WebRTC gateway
and kamailio process, against the calls ended so far. A leak is a slope: least squares over the
samples of the steady run, in KB and fds per 1,000 calls (per persona session for persona
workers, which only persona calls touch).
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.support.appliance import ApplianceProcess

__all__ = ["Sample", "Sampler", "Slope", "fit_slope", "process_roles", "retained", "slopes"]

# A process's role, from its command line: what the soak reports apart.
_ROLES = ((b"sip.worker", "sip"), (b"appliance.personas.worker", "persona"), (b"appliance.console.rtc_worker", "rtc"),
          (b"kamailio", "kamailio"))


def process_roles(app: ApplianceProcess) -> dict[int, str]:
    """pid → "main", "sip:w1", "persona:p1", "rtc:r1", "kamailio:PID": the appliance's long-lived
    processes (a recording's short-lived converter is left out)."""
    assert app.process is not None
    roles = {app.process.pid: "main"}
    for pid in app.child_pids():
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        for mark, role in _ROLES:
            if any(mark in arg for arg in argv):
                roles[pid] = f"{role}:{_name(pid, argv) or pid}"
                break
    return roles


def _name(pid: int, argv: list[bytes]) -> str | None:
    """The worker's --name, or the name a forked SIP worker has in `ps` (sip-w1: w1; its fork server has none)."""
    for flag, value in zip(argv, argv[1:], strict=False):
        if flag == b"--name":
            return value.decode(errors="replace")
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None
    return comm.removeprefix("sip-") if comm.startswith("sip-") else None


def _rss_kb(pid: int) -> int:
    match = re.search(r"^VmRSS:\s*(\d+)", Path(f"/proc/{pid}/status").read_text(), re.MULTILINE)
    return int(match.group(1)) if match else 0


def _private_kb(pid: int) -> int:
    """Memory only this process maps (USS): RSS counts the shared memory kamailio's processes all
    touch as each of them first reads it, which grows their RSS without any leak."""
    text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    return sum(int(kb) for kb in re.findall(r"^Private_(?:Clean|Dirty):\s*(\d+)", text, re.MULTILINE))


@dataclass
class Sample:
    at: float  # seconds since the sampler started
    calls_ended: int
    persona_ended: int
    rss_kb: dict[str, int]  # by process (its role name)
    private_kb: dict[str, int]
    fds: dict[str, int]


class Sampler:
    """Samples in a thread every `interval` s until `stop()`; `ended()` counts the calls ended so far
    as (all, persona)."""

    def __init__(self, app: ApplianceProcess, ended: Callable[[], tuple[int, int]], interval: float = 3.0):
        self.app, self.ended, self.interval = app, ended, interval
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-sampler", daemon=True)
        self._started = 0.0

    def start(self) -> None:
        self._started = time.monotonic()
        self.sample()
        self._thread.start()

    def stop(self) -> list[Sample]:
        self._stop.set()
        self._thread.join()
        self.sample()
        return self.samples

    def elapsed(self) -> float:
        """Seconds since the sampler started: the clock of the samples' `at`."""
        return round(time.monotonic() - self._started, 1)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        calls, persona = self.ended()
        rss, private, fds = {}, {}, {}
        for pid, role in process_roles(self.app).items():
            try:
                rss[role], private[role] = _rss_kb(pid), _private_kb(pid)
                fds[role] = len(os.listdir(f"/proc/{pid}/fd"))
            except OSError:
                continue  # exited between listing and reading
        self.samples.append(Sample(self.elapsed(), calls, persona, rss, private, fds))


@dataclass
class Slope:
    """Growth of one process (or a role's processes summed) after the warm-up."""

    process: str
    growth: float  # KB (or fds) per 1,000 calls; persona workers: per persona session
    per: str  # "1000 calls" or "session"
    first: float  # the value sampled first after the warm-up, and last
    last: float
    samples: int
    unit: str = "KB"


def fit_slope(xs: list[float], ys: list[float]) -> float | None:
    """Least squares slope of ys over xs; None when xs do not vary."""
    n = len(xs)
    if n < 2:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


def _role(process: str) -> str:
    return process.split(":", 1)[0]


def _series(samples: list[Sample], metric: str) -> dict[str, list[tuple[float, float]]]:
    """Each process's and each role's (summed) values against the calls ended (persona workers:
    persona sessions ended) at each sample."""
    series: dict[str, list[tuple[float, float]]] = {}
    for s in samples:
        values: dict[str, int] = getattr(s, metric)
        totals: dict[str, int] = {}
        for process, value in values.items():
            totals[_role(process)] = totals.get(_role(process), 0) + value
        for name, value in list(values.items()) + [(f"{role} (all)", v) for role, v in totals.items()]:
            x = s.persona_ended if _role(name).startswith("persona") else s.calls_ended
            series.setdefault(name, []).append((float(x), float(value)))
    return series


def slopes(samples: list[Sample], warmup_calls: int, until_s: float | None = None,
           metric: str = "rss_kb") -> list[Slope]:
    """A slope per process and per role over the steady run: samples taken once `warmup_calls`
    calls had ended, and (`until_s`) while callers were still calling, so that the calls still up
    at the end, and their draining, do not count as growth."""
    kept = [s for s in samples if s.calls_ended >= warmup_calls and (until_s is None or s.at <= until_s)]
    unit = "fds" if metric == "fds" else "KB"
    out = []
    for name, points in sorted(_series(kept, metric).items()):
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        slope = fit_slope(xs, ys)
        if slope is None:
            continue
        persona = _role(name).startswith("persona")
        out.append(Slope(name, round(slope * (1 if persona else 1000), 1), "session" if persona else "1000 calls",
                         ys[0], ys[-1], len(points), unit))
    return out


def retained(samples: list[Sample], metric: str = "rss_kb") -> dict[str, float]:
    """What each process holds idle after the run beyond what it held idle before it, per 1,000
    calls (persona: per session): the first sample is taken before the first call, the last once
    every call has closed. Caches and pools filled on the way count too: an upper bound."""
    out = {}
    for name, points in _series([samples[0], samples[-1]] if len(samples) > 1 else [], metric).items():
        if len(points) == 2 and points[1][0] > 0:
            per = 1 if _role(name).startswith("persona") else 1000
            out[name] = round((points[1][1] - points[0][1]) / points[1][0] * per, 1)
    return out
