"""The capacity benchmark's baseline box: the same Kamailio edge in front of the same number of
pjsua2 processes (bench/baseline_worker.py) answering the same sipp calls and recording them with
pjsua2's own recorder: no hub, no flow, no Python on the audio path.

bench/calls.py runs each of its steps against this box too, in the same run, and reports the
appliance's CPU per call as a ratio to the baseline's: what Switchboard's design costs. Alone, it
places rounds of calls at once and says how many each round kept:

    bench/run baseline.py --workers 2 --calls 8 --seconds 10 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import wave
from pathlib import Path
from typing import Any

if str(Path(__file__).resolve().parents[1]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/baseline.py` puts bench/ first

from bench.common import CLK_TCK, Proc, box_cpu, box_ticks, process_rss_kb, say, stat_ticks
from bench.sipp_load import bench_scenario, find_sipp, percentile, rtt_ms
from sip.edge import Edge
from sip.edge_config import EdgeSettings, EdgeTrunk
from tests.support.ports import free_port_block
from tests.support.sipp.process import SippResult, run_sipp
from tests.support.soak.run import CALLS_PER_WORKER

ROOT = Path(__file__).resolve().parents[1]
GREETING = "Welcome to the Switchboard benchmark. Press 1 to leave."
RTP_PORTS = 100


class BaselineBox:
    def __init__(self, root: Path, workers: int, calls_per_worker: int):
        self.root = root
        self.workers = workers
        self.calls_per_worker = calls_per_worker
        # Held for the run: the workers bind these ports only during calls (tests/support/ports.py).
        self.rtp_start = free_port_block(workers * RTP_PORTS, hold=True)
        self.sip_port = free_port_block(1)
        first = free_port_block(workers)
        self.worker_ports = list(range(first, first + workers))
        self.recordings = root / "recordings"
        self.processes: list[subprocess.Popen[bytes]] = []
        self._loop = asyncio.new_event_loop()
        self.edge: Edge | None = None

    def start(self) -> None:
        self.recordings.mkdir(parents=True, exist_ok=True)
        greeting = self.root / "greeting.wav"
        raw = self.root / "greeting-espeak.wav"
        subprocess.run(["espeak-ng", "-w", str(raw), GREETING], check=True)
        subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(greeting)], check=True)
        logs = []
        for i, port in enumerate(self.worker_ports):
            log = self.root / f"worker-{port}.log"
            logs.append(log)
            with open(log, "wb") as out:
                self.processes.append(subprocess.Popen(
                    [sys.executable, "-m", "bench.baseline_worker", "--sip-port", str(port),
                     "--rtp-port", str(self.rtp_start + i * RTP_PORTS), "--rtp-ports", str(RTP_PORTS),
                     "--recordings", str(self.recordings), "--greeting", str(greeting)],
                    cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 30 + self.workers
        for process, log in zip(self.processes, logs, strict=True):
            while b"\nready\n" not in log.read_bytes():
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"baseline worker {process.pid} did not start: see {log}")
                time.sleep(0.1)
        self.edge = Edge(EdgeSettings(
            listen_host="127.0.0.1", port=self.sip_port, workers=self.worker_ports,
            calls_per_worker=self.calls_per_worker, trunks=[EdgeTrunk("bench", ["127.0.0.1/32"])],
            run_dir=self.root / "edge"))
        self._loop.run_until_complete(self.edge.start())
        time.sleep(3)  # the dispatcher's first OPTIONS round marks the workers up

    def stop(self) -> None:
        if self.edge is not None:
            self._loop.run_until_complete(self.edge.stop())
            self.edge = None
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes = []
        self._loop.close()

    def snapshot(self, extra: list[int]) -> dict[int, Proc]:
        roles = {p.pid: "worker" for p in self.processes} | dict.fromkeys(self._edge_pids(), "kamailio")
        roles |= dict.fromkeys(extra, "sipp")
        procs = {}
        for pid, role in roles.items():
            try:
                procs[pid] = Proc(pid, role, stat_ticks(Path(f"/proc/{pid}/stat")), process_rss_kb(pid))
            except (OSError, ValueError):
                continue
        return procs

    def _edge_pids(self) -> list[int]:
        if self.edge is None or self.edge.pid is None:
            return []
        group = self.edge.pid
        pids = []
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    text = (proc / "stat").read_text()
                except OSError:
                    continue
                if int(text[text.rindex(")") + 2 :].split()[2]) == group:  # pgrp
                    pids.append(int(proc.name))
        return pids


def run_step(box: BaselineBox, n: int, duration: float, rate: float, workdir: Path) -> dict[str, Any]:
    """One step of `n` simultaneous calls against the baseline box, measured as bench/calls.py measures ours."""
    workdir.mkdir(parents=True)
    scenario = bench_scenario(workdir, duration)
    ramp_s = n / rate
    before_files = set(box.recordings.glob("*.wav"))
    result: dict[str, SippResult] = {}

    def call() -> None:
        result["sipp"] = run_sipp(scenario, box.sip_port, workdir, calls=n, rate=rate, limit=n,
                                  timeout=duration + ramp_s + 60, extra=["-trace_rtt", "-rtt_freq", "1"])

    caller = threading.Thread(target=call, name=f"baseline-sipp-{n}")
    launched = time.monotonic()
    caller.start()
    window_end = launched + duration - 0.5
    time.sleep(min(ramp_s + 2.0, max(0.0, window_end - 4 - time.monotonic())))
    sipp_pids = find_sipp(workdir)
    start = time.monotonic()
    before, box_before = box.snapshot(sipp_pids), box_ticks()
    time.sleep(max(1.0, window_end - 1.0 - time.monotonic()))
    after, box_after = box.snapshot(sipp_pids), box_ticks()
    steady = time.monotonic() - start
    caller.join()
    sipp = result.get("sipp")
    cpu: dict[str, float] = {}
    for pid, proc in after.items():
        if pid in before:
            cpu[proc.role] = cpu.get(proc.role, 0.0) + 100 * (proc.cpu_ticks - before[pid].cpu_ticks) / CLK_TCK / steady
    total = cpu.get("worker", 0.0) + cpu.get("kamailio", 0.0)
    rtts = rtt_ms(workdir)
    time.sleep(1.0)  # the recorders close their files as the BYEs arrive
    files = sorted(set(box.recordings.glob("*.wav")) - before_files)
    seconds = [_wav_seconds(f) for f in files]
    return {
        "calls": n,
        "sipp_successful": sipp.successful if sipp else 0,
        "sipp_failed": sipp.failed if sipp else n,
        "invite_200_ms": {"p50": _round(percentile(rtts, 0.5)), "p95": _round(percentile(rtts, 0.95))},
        "cpu": {role: round(v, 1) for role, v in cpu.items()} | {"total": round(total, 1)},
        "cpu_pct_per_call": round(total / n, 2),
        "box_cpu": box_cpu(box_before, box_after, steady),
        "recordings": len(files),
        "recording_s": {"min": min(seconds, default=None), "max": max(seconds, default=None)},
        "steady_s": round(steady, 1),
    }


def _wav_seconds(path: Path) -> float:
    try:
        with wave.open(str(path)) as w:
            return round(w.getnframes() / w.getframerate(), 2)
    except (OSError, EOFError, wave.Error):
        return 0.0


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def main(argv: list[str] | None = None) -> int:
    """Rounds of calls at once against the baseline box alone; fails when a round lost a call."""
    parser = argparse.ArgumentParser(description="The pjsua2-only baseline box alone: rounds of calls at once.")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--calls", type=int, default=8,
                        help="calls at once in each round (default 8: every slot of 2 workers)")
    parser.add_argument("--seconds", type=float, default=10, help="how long each call lasts (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, one after the other (default 3)")
    parser.add_argument("--rate", type=float, default=20, help="calls started per second (default 20)")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="sb-bench-baseline-"))
    box = BaselineBox(root, args.workers, CALLS_PER_WORKER)
    lost = 0
    try:
        box.start()
        for n in range(1, args.rounds + 1):
            step = run_step(box, args.calls, args.seconds, args.rate, root / f"round{n}")
            lost += step["sipp_failed"]
            say(f"round {n}: {step['sipp_successful']} of {args.calls} calls kept, {step['sipp_failed']} failed; "
                f"{step['recordings']} recordings of {step['recording_s']['min']}-{step['recording_s']['max']} s")
    finally:
        box.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 1 if lost else 0


if __name__ == "__main__":
    raise SystemExit(main())
