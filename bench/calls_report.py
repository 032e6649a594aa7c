"""Report writing for bench/calls.py: tables, the analysis and its docs/BENCHMARKS.md section,
from a finished run's report (measuring stays in bench/calls.py)."""

from __future__ import annotations

from typing import Any

from bench.common import write_doc_section

DOC_BEGIN = "<!-- bench/calls.py: begin -->"
DOC_END = "<!-- bench/calls.py: end -->"


# --- the report ----------------------------------------------------------------------------


def _fmt(value: Any, suffix: str = "") -> str:
    return "–" if value is None else f"{value}{suffix}"


def table(report: dict[str, Any]) -> str:
    head = ("| N | failed | INVITE→200 p50 / p95 ms | CPU % of a core: appliance (main / workers / kamailio) | "
            "CPU % per call | RSS MB per call | tick lag p95 ms (ticks > 20 ms) | hub stalls | "
            "hub thread waiting for a CPU % | box busy % (sipp / other) | result |")
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for s in report["steps"]:
        cpu = s["cpu"]
        lag = s["tick_lag"]
        over = lag.get("over_20ms")
        rows.append(
            f"| {s['calls']} | {s['sipp_failed']} | "
            f"{_fmt(s['invite_200_ms'].get('p50'))} / {_fmt(s['invite_200_ms'].get('p95'))} | "
            f"{_fmt(cpu.get('appliance_total'))} ({_fmt(cpu.get('main', {}).get('total'))} / "
            f"{_fmt(cpu.get('worker', {}).get('total'))} / {_fmt(cpu.get('kamailio', {}).get('total'))}) | "
            f"{_fmt(s['cpu_pct_per_call'])} | {_fmt(s['rss_mb_per_call'])} | "
            f"{_fmt(lag.get('p95_ms'))} ({_fmt(None if over is None else round(100 * over, 1), '%')}) | "
            f"{s['hub_stalls']} | {_fmt(s['hub_thread'].get('runq_wait_pct'))} | "
            f"{_fmt(s['box_cpu'].get('busy'))} "
            f"({_fmt(cpu.get('sipp', {}).get('total'))} / {_fmt(s['other_load_pct'])}) | "
            f"{'pass' if s['passed'] else 'FAIL: ' + '; '.join(s['problems'])[:200]} |"
        )
    return "\n".join(rows)


def detail_table(report: dict[str, Any]) -> str:
    kinds = ("pjsua", "asyncio", "media")
    head = ("| N | hub thread CPU % / waiting % | worker threads CPU %: " + " / ".join(kinds) + " (waiting %) | "
            "ticks lost | caller audio missing % | recording short of call, max s | INVITE→200 max ms |")
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for s in report["steps"]:
        wt = s["worker_threads"]
        cpu = " / ".join(_fmt(wt.get(k, {}).get("cpu_pct")) for k in kinds)
        wait = " / ".join(_fmt(wt.get(k, {}).get("runq_wait_pct")) for k in kinds)
        lag = s["tick_lag"]
        lost = lag["expected_ticks"] - lag["ticks"] if lag else None
        rows.append(
            f"| {s['calls']} | {_fmt(s['hub_thread'].get('cpu_pct'))} / {_fmt(s['hub_thread'].get('runq_wait_pct'))} | "
            f"{cpu} ({wait}) | {_fmt(lost)} | {_fmt(s['records'].get('caller_missing_pct', {}).get('mean'))} | "
            f"{_fmt(s['records'].get('recording_short_of_call_s_max'))} | {_fmt(s['invite_200_ms'].get('max'))} |"
        )
    return "\n".join(rows)


def baseline_table(report: dict[str, Any]) -> str:
    """Our CPU per call beside the baseline's (pjsua2 recording by itself), step by step."""
    ours = {s["calls"]: s for s in report["steps"]}
    head = ("| N | baseline failed | baseline INVITE→200 p50 / p95 ms | baseline CPU % (workers / kamailio) | "
            "baseline CPU % per call | Switchboard CPU % per call | ratio |")
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for b in report.get("baseline") or []:
        s = ours.get(b["calls"])
        mine = s["cpu_pct_per_call"] if s else None
        ratio = round(mine / b["cpu_pct_per_call"], 2) if mine and b["cpu_pct_per_call"] else None
        rows.append(
            f"| {b['calls']} | {b['sipp_failed']} | {_fmt(b['invite_200_ms'].get('p50'))} / "
            f"{_fmt(b['invite_200_ms'].get('p95'))} | {_fmt(b['cpu'].get('total'))} "
            f"({_fmt(b['cpu'].get('worker'))} / {_fmt(b['cpu'].get('kamailio'))}) | {_fmt(b['cpu_pct_per_call'])} | "
            f"{_fmt(mine)} | {_fmt(ratio, '×')} |")
    return "\n".join(rows)


def loaded_section(loaded: dict[str, Any] | None) -> str:
    """The run under a fixed extra load (--extra-load): does a busy box cost the recordings?"""
    if not loaded or not loaded.get("steps"):
        return ""
    st = loaded["settings"]
    rows = ["| N | failed | extra load, % of a core | other work % | hub stalls | ticks lost | "
            "caller audio missing %, mean / max | between the caller's first and last frame, mean / max | "
            "recording vs call, max s | INVITE→200 p50 / p95 ms |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for s in loaded["steps"]:
        lag = s["tick_lag"]
        missing = s["records"].get("caller_missing_pct", {})
        after = s["records"].get("caller_missing_inside_pct", {})
        lost = lag["expected_ticks"] - lag["ticks"] if lag else None
        rows.append(f"| {s['calls']} | {s['sipp_failed']} | {_fmt(s.get('extra_load_pct'))} | "
                    f"{_fmt(s['other_load_pct'])} | {s['hub_stalls']} | {_fmt(lost)} | "
                    f"{_fmt(missing.get('mean'))} / {_fmt(missing.get('max'))} | "
                    f"{_fmt(after.get('mean'))} / {_fmt(after.get('max'))} | "
                    f"{_fmt(s['records'].get('recording_short_of_call_s_max'))} | "
                    f"{_fmt(s['invite_200_ms'].get('p50'))} / {_fmt(s['invite_200_ms'].get('p95'))} |")
    return f"""
### Under a fixed extra load: do late ticks cost the recordings?

The same steps with a process beside the appliance busy-looping {100 * st['extra_load']:.0f}% of every
20 ms (`--extra-load {st['extra_load']:g}`), {loaded['date']}, code {loaded.get('code')}, command
`{loaded['command']}`, raw results `{loaded.get('json_path', '')}`. The goal: caller audio missing
≤ 0.1 % and every recording within 0.1 s of its call. Missing is counted over the whole recording
(answer to hang-up) and again between the caller's first and last frame: before the first RTP
packet and after the last (the tick its BYE ends) the caller sent nothing.

{chr(10).join(rows)}
"""


def markdown(report: dict[str, Any], analysis: str, loaded: dict[str, Any] | None = None) -> str:
    m = report["machine"]
    idle = report["idle"]
    st = report["settings"]
    first = "" if report["first_failure"] is None else f" (first failing step: {report['first_failure']})"
    experiment = "" if st.get("hub_nice") is None else f"; EXPERIMENT: hub thread reniced to {st['hub_nice']}"
    iw = idle.get("worker_threads", {})
    retried = report.get("retried") or []
    retry_note = ""
    if retried:
        attempts = "; ".join(
            f"{s['calls']} calls (other work {s['other_load_pct']}% of a core, {s['hub_stalls']} hub stalls: "
            f"{'; '.join(s['problems'])[:120]})" for s in retried)
        retry_note = (f"\nAttempts that failed while other work used more than {st.get('quiet_pct', 25):g}% of a core "
                      f"were run again (up to 3 times per step); the table shows the last attempt. Failed attempts: "
                      f"{attempts}.\n")
    baseline = ""
    if report.get("baseline"):
        baseline = f"""
**Baseline, same run:** the same steps against the same Kamailio edge in front of {st['workers']} pjsua2
processes (`bench/baseline_worker.py`) that answer, play a greeting with pjsua2's WAV player and record
with pjsua2's own WAV recorder: no hub, no flow, no Python on the audio path. The ratio is
Switchboard's CPU per call over the baseline's: what the design costs.

{baseline_table(report)}
"""
    extra = "" if not st.get("extra_load") else (
        f"; **extra load: a process busy {100 * st['extra_load']:.0f}% of every 20 ms** beside the appliance "
        f"(its CPU is counted apart)")
    return f"""{DOC_BEGIN}
## Call capacity (`bench/calls.py`)

How many simultaneous recorded calls one box holds with 0 failed calls. Each call comes from
sipp through the Kamailio edge into a pjsua2 worker, runs the `bench` flow (a greeting, then
a menu that waits 60 s), is recorded by the hub to a stereo WAV, and is hung up by the caller
after {st['duration_s']:g} s; the caller speaks (`g711a.pcap`, replayed) the whole time. A step
passes when sipp counts 0 failed calls and all N call records are closed with `caller-hangup`
and a recording that covers the call (answer to hang-up, within 0.5 s, as `tests/calls`
checks). The ramp stops at the first failing step.

- Date: {report['date']}
- Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, Linux {m['kernel']}, Python {m['python']};
  {m['sipp']}; {m['kamailio']}
- Code: {report.get('code', 'unknown')}
- Command: `{report['command']}`
- Settings: {st['workers']} SIP workers × {st['calls_per_worker']} calls (ceil(max step / 4) + 1), calls started at
  {st['rate_cps']:g} calls/s; sipp runs on the same box and its CPU is counted apart{experiment}{extra}
- Raw results: `{report.get('json_path', '')}`

**Largest concurrency with 0 failed calls: {report['max_calls_0_failures']}**{first}

{table(report)}
{retry_note}{baseline}{loaded_section(loaded)}
Where the time goes, per step:

{detail_table(report)}

How to read them. Every number is taken over the step's steady state: every call up, before
the first caller hangs up. CPU comes from `/proc/PID/stat` (utime + stime) of the appliance's
main process, its SIP workers and Kamailio's processes, in % of one core: the box has
{m['cores']} cores, so {100 * (m['cores'] or 1)}% is all of it. "Box busy" is `/proc/stat` for the whole machine;
"other" is what neither the appliance, sipp nor the benchmark used (other work on the box).
RSS per call is the tree's RSS in the steady state minus its idle RSS, divided by N. Tick lag
is how late the hub's 20 ms media tick ran (`switchboard_hub_tick_lag_seconds`, p95
interpolated in its buckets); a hub stall is the hub falling more than 200 ms behind, after
which it skips the missed ticks ("ticks lost"): nothing is played then, and the recordings
keep those ticks as silence on the heard side, while the caller's side is written from the
frames as they arrived (`appliance/recording/timeline.py`). "Waiting %" is the time a thread was runnable but had no CPU
(`/proc/.../schedstat`), summed over the threads of that kind. The worker threads are
the pjsua2 thread `pjsua` (SIP, and the conference bridge's 20 ms ticks: codec, resampling, RTP
out and our media port callbacks; sip/bridge_clock.py), the worker's `asyncio` loop (audio
batches to and from the hub) and pjmedia's `media` (RTP in).
Caller audio missing is the share of 20 ms frames in which the recording's caller channel is
empty (no caller frame reached the hub for it); "recording short of call" is the largest
difference between a recording's length and its call's (answer to hang-up in the database).

Idle ({idle['seconds']:g} s, no calls, {st['workers']} workers): {idle['cpu']['appliance_total']}% of a core for the
tree, **{idle['cpu_pct_per_worker']}% per worker** (main {idle['cpu'].get('main', {}).get('total')}%,
workers {idle['cpu'].get('worker', {}).get('total')}% in all, of which pjsua2 threads
{_fmt(iw.get('pjsua', {}).get('cpu_pct'))}% and asyncio loops {_fmt(iw.get('asyncio', {}).get('cpu_pct'))}%;
kamailio {idle['cpu'].get('kamailio', {}).get('total')}%); RSS {idle['rss_kb'] / 1024:.0f} MB
({idle['rss_mb_per_worker_process']} MB per worker process).

### What limits it

{analysis.strip()}
{DOC_END}
"""


def analyse(report: dict[str, Any]) -> str:
    """A reading of the numbers for docs/BENCHMARKS.md, regenerated on every run."""
    steps = report["steps"]
    if not steps:
        return "No step ran."
    cores = report["machine"]["cores"] or 1
    last_ok = next((s for s in reversed(steps) if s["passed"]), None)
    failed = next((s for s in steps if not s["passed"]), None)
    heavy = failed or steps[-1]
    parts = []
    if failed:
        parts.append(f"The ramp stopped at {failed['calls']} calls: {'; '.join(failed['problems'])}.")
    else:
        parts.append(f"Every step passed, up to {heavy['calls']} calls.")
    cpu = heavy["cpu"]
    workers = cpu.get("worker", {}).get("total", 0.0)
    main = cpu.get("main", {}).get("total", 0.0)
    parts.append(
        f"At {heavy['calls']} calls the box was {heavy['box_cpu'].get('busy')}% busy of {100 * cores}%: "
        f"SIP workers {workers}%, the hub's main process {main}%, sipp {cpu.get('sipp', {}).get('total', 0.0)}%, "
        f"other work {heavy['other_load_pct']}%."
    )
    bridge = heavy["worker_threads"].get("pjsua", {})
    if bridge:
        parts.append(f"Within the workers, the pjsua2 threads took {bridge.get('cpu_pct')}% "
                     f"(SIP, and the conference bridge's ticks: G.711 and 8↔16 kHz resampling, RTP out and the "
                     f"Python media port callbacks, 100 per second per call).")
    if len(steps) >= 2:
        a, b = steps[0], heavy
        if b["calls"] > a["calls"]:
            slope = (b["cpu"]["appliance_total"] - a["cpu"]["appliance_total"]) / (b["calls"] - a["calls"])
            def per_call(kind: str) -> float:
                return (b["cpu"].get(kind, {}).get("total", 0) - a["cpu"].get(kind, {}).get("total", 0)) / (
                    b["calls"] - a["calls"])

            wslope, mslope = per_call("worker"), per_call("main")
            parts.append(f"Each added call cost {slope:.2f}% of a core between {a['calls']} and {b['calls']} calls: "
                         f"{wslope:.2f}% in the workers, {mslope:.2f}% in the hub.")
    hub = heavy["hub_thread"]
    if hub:
        parts.append(
            f"The hub's event loop itself used only {hub.get('cpu_pct')}% of a core "
            f"but spent {hub.get('runq_wait_pct')}% of the time runnable and waiting for a CPU behind the workers' "
            f"threads; its 20 ms tick ran late "
            f"(p95 {heavy['tick_lag'].get('p95_ms')} ms, {heavy['hub_stalls']} stalls, "
            f"{heavy['tick_lag']['expected_ticks'] - heavy['tick_lag']['ticks']} ticks lost)."
        )
    if last_ok and failed:
        parts.append(
            f"So the limit is CPU for the whole box, spent mostly in the pjsua2 workers, and the first thing to "
            f"break is the hub's media clock: it is starved of CPU by the workers before the box is at 100%, and "
            f"a stall drops what the caller would have heard then. {last_ok['calls']} calls is the last step where "
            f"that did not happen."
        )
    return " ".join(parts)


def write_doc(report: dict[str, Any], analysis: str, loaded: dict[str, Any] | None = None) -> None:
    write_doc_section(markdown(report, analysis, loaded), DOC_BEGIN, DOC_END)
