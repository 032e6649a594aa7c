"""What the benchmarks share: the machine and code under test, the appliance's CPU and memory,
the silent sipp caller, calls closing, percentiles, progress lines, and where results and
docs/BENCHMARKS.md sections are written."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

from tests.support.appliance import ApplianceProcess

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "BENCHMARKS.md"
SCENARIO = ROOT / "bench" / "scenarios" / "hold.xml"  # the sipp caller that stays up, then hangs up
CLK_TCK = os.sysconf("SC_CLK_TCK")


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


def report_head(name: str, argv: list[str], started_at: dt.datetime) -> dict[str, Any]:
    """What every benchmark's report opens with: which, when, the command, the box, the code, the load."""
    return {
        "benchmark": name,
        "date": started_at.isoformat(timespec="seconds"),
        "command": f"python bench/{name}.py " + " ".join(argv),
        "machine": machine({"sipp": first_line(["sipp", "-v"]), "kamailio": first_line(["kamailio", "-v"])}),
        "code": code_version(("appliance", "sip")),
        "loadavg_before": Path("/proc/loadavg").read_text().split()[:3],
    }


def save_results(report: dict[str, Any], name: str, tag: str) -> Path:
    """Write the report as bench/results/<name>-<date><tag>.json; its path goes in the report."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.fromisoformat(report["date"]).strftime("%Y-%m-%d")
    path = RESULTS / f"{name}-{stamp}{tag}.json"
    report["json_path"] = str(path.relative_to(ROOT))
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return path


def missing_program(script: str, programs: tuple[str, ...] = ("sipp", "kamailio")) -> bool:
    """Whether a program the benchmark drives is not installed (it says which on stderr)."""
    for program in programs:
        if shutil.which(program) is None:
            print(f"{script} needs {program} (scripts/test.sh installs it)", file=sys.stderr)
            return True
    return False


def save_and_print(report: dict[str, Any], name: str, tag: str, tables: str) -> Path:
    """Save the report (`save_results`) and print its tables and where it went."""
    path = save_results(report, name, tag)
    print()
    print(tables)
    print(f"raw results: {path}")
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


def log_warnings(path: Path) -> dict[str, int]:
    """How often each warning, error and critical message is in an appliance's JSON log."""
    counts: dict[str, int] = {}
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return counts
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and str(entry.get("level", "")).upper() in ("WARNING", "ERROR", "CRITICAL"):
            key = f"{entry.get('level')}: {entry.get('msg') or entry.get('message')}"
            counts[key] = counts.get(key, 0) + 1
    return counts


def process_rss_kb(pid: int) -> int:
    match = re.search(r"^VmRSS:\s*(\d+)", Path(f"/proc/{pid}/status").read_text(), re.MULTILINE)
    return int(match.group(1)) if match else 0


@dataclass
class Proc:
    pid: int
    role: str  # main | worker | forkserver | kamailio | sipp | callers | load | other
    cpu_ticks: int
    rss_kb: int


def stat_ticks(path: Path) -> int:
    text = path.read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


LOAD_MARK = "switchboard-bench-load"
CALLERS_MODULE = "bench.media_streams_callers"  # the Media Streams benchmark's callers (role "callers")


class BusyLoad:
    """A fixed extra load beside the appliance: one process busy-looping `fraction` of every 20 ms.

    It stands for the other work a real box does (backups, log shipping, a converter); its own
    CPU is measured (role "load") so that it is not counted against the appliance.
    """

    def __init__(self, fraction: float):
        self.fraction = fraction
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> int:
        busy_s = 0.02 * self.fraction
        code = (f"# {LOAD_MARK}\nimport time\nwhile True:\n    t = time.perf_counter()\n"
                f"    while time.perf_counter() - t < {busy_s}: pass\n    time.sleep({0.02 - busy_s})\n")
        self.process = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL)
        return self.process.pid

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


def _process_role(pid: int, main_pid: int) -> str:
    if pid == main_pid:
        return "main"
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    if len(cmdline) > 2 and LOAD_MARK.encode() in cmdline[2]:
        return "load"
    if b"sip.worker" in cmdline:
        # SIP workers are forked by a fork server and named sip-<name>; the server keeps its own name.
        return "worker" if Path(f"/proc/{pid}/comm").read_text().startswith("sip-") else "forkserver"
    if cmdline and cmdline[0].endswith(b"kamailio"):
        return "kamailio"
    if cmdline and cmdline[0].endswith(b"sipp"):
        return "sipp"
    if CALLERS_MODULE.encode() in cmdline:
        return "callers"
    return "other"


def snapshot(app: ApplianceProcess, extra: list[int] = ()) -> dict[int, Proc]:  # type: ignore[assignment]
    """CPU ticks and RSS of the appliance (main, workers, kamailio) and any extra pids (sipp)."""
    assert app.process is not None
    main = app.process.pid
    procs: dict[int, Proc] = {}
    for pid in [main, *app.child_pids(), *extra]:
        try:
            procs[pid] = Proc(pid, _process_role(pid, main), stat_ticks(Path(f"/proc/{pid}/stat")), process_rss_kb(pid))
        except (OSError, ValueError):
            continue  # exited between listing and reading
    return procs


def box_ticks() -> list[int]:
    """The first line of /proc/stat: user nice system idle iowait irq softirq steal."""
    return [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]


BOX_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def box_cpu(before: list[int], after: list[int], seconds: float) -> dict[str, float]:
    """The whole box's CPU over the window in % of one core, by kind; busy = all but idle and iowait."""
    out = {name: round(100 * (b - a) / CLK_TCK / seconds, 1)
           for name, a, b in zip(BOX_FIELDS, before, after, strict=True)}
    out["busy"] = round(sum(v for k, v in out.items() if k not in ("idle", "iowait")), 1)
    return out


def _rtc_role(pid: int) -> str | None:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return "rtc" if b"rtc_worker" in cmdline else None


def cpu_window(before: dict[int, Any], after: dict[int, Any], bench_s: float, seconds: float) -> dict[str, Any]:
    """CPU in % of one core per role between two `bench.calls.snapshot`s `seconds` apart; the
    appliance is main + SIP workers + rtc + kamailio; `bench_s`, this process's CPU seconds (the
    benchmark's aiortc clients), is counted apart."""
    roles: dict[str, float] = {}
    for pid, proc in after.items():
        if pid in before:
            role = _rtc_role(pid) or proc.role
            roles[role] = roles.get(role, 0.0) + 100 * (proc.cpu_ticks - before[pid].cpu_ticks) / CLK_TCK / seconds
    out: dict[str, Any] = {k: round(v, 1) for k, v in roles.items()}
    total = sum(roles.get(r, 0.0) for r in ("main", "worker", "forkserver", "rtc", "kamailio"))
    out["appliance"] = round(total, 1)
    out["appliance_pct_of_box"] = round(total / (os.cpu_count() or 1), 1)
    out["bench_clients"] = round(100 * bench_s / seconds, 1)
    return out


class SteadyWindow:
    """CPU over one steady window: the appliance's by role (`cpu_window`), the load generators'
    (`sipp`: sipp's or the Media Streams callers' pids), this process's (the benchmark's clients),
    the whole box's, and the other work on it."""

    def __init__(self, app: ApplianceProcess, sipp: list[int]):
        self.app, self.sipp = app, sipp
        self.started = time.time()
        self.before, self.box_before, self.bench_before = snapshot(app, sipp), box_ticks(), sum(os.times()[:2])

    def stop(self) -> dict[str, Any]:
        """{"seconds", "cpu", "box_cpu", "other_load_pct"} from the start to now."""
        after, box_after, bench_after = snapshot(self.app, self.sipp), box_ticks(), sum(os.times()[:2])
        seconds = time.time() - self.started
        cpu = cpu_window(self.before, after, bench_after - self.bench_before, seconds)
        box = box_cpu(self.box_before, box_after, seconds)
        other = (box["busy"] - cpu["appliance"] - cpu.get("sipp", 0.0) - cpu.get("callers", 0.0)
                 - cpu["bench_clients"])
        return {"seconds": round(seconds, 1), "cpu": cpu, "box_cpu": box, "other_load_pct": round(other, 1)}


def caller_scenario(workdir: Path, seconds: float, name: str = "caller.xml") -> Path:
    """The call-capacity benchmark's caller (bench/scenarios/hold.xml), silent: it calls, stays
    `seconds` and hangs up (with sipp's -rtp_echo it says back what it heard)."""
    text = Template(SCENARIO.read_text()).substitute(
        MEDIA=f'  <pause milliseconds="{int(seconds * 1000)}"/>', BYE_TIMEOUT_MS=10000)
    path = workdir / name
    path.write_text(text)
    return path


def pct(values: list[float], q: float, digits: int = 1) -> float | None:
    """The nearest-rank `q` quantile of `values`, rounded; None for none."""
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(round(q * (len(values) - 1))))], digits)


def stop_appliance(app: ApplianceProcess, report: dict[str, Any], root: Path, keep: bool) -> None:
    """Stop the appliance with its log's tail in the report; keep its temp dir `root` or remove it."""
    report["log_tail"] = app.log_tail(30)
    app.stop()
    if keep:
        report["workdir"] = str(root)
    else:
        shutil.rmtree(root, ignore_errors=True)


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
