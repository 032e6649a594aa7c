"""Report writing for bench/media_streams.py: its tables, the analysis and its docs/BENCHMARKS.md
section, from a finished run's report (measuring stays in bench/media_streams.py)."""

from __future__ import annotations

from typing import Any

from bench import calls_report
from bench.common import write_doc_section

DOC_BEGIN = "<!-- bench/media_streams.py: begin -->"
DOC_END = "<!-- bench/media_streams.py: end -->"


def _fmt(value: Any, suffix: str = "") -> str:
    return "–" if value is None else f"{value}{suffix}"


def _rows(head: str) -> list[str]:
    return [head, "|" + "---|" * (head.count("|") - 1)]


def _result(step: dict[str, Any] | None) -> str:
    if step is None:
        return "–"
    return "pass" if step["passed"] else "FAIL: " + "; ".join(step["problems"])[:200]


def streams_table(report: dict[str, Any]) -> str:
    rows = _rows("| N | failed | webhook p50 / p95 ms | start → first audio p50 / p95 ms | "
                 "CPU % of a core: appliance (main) | CPU % per call: main / tree | RSS MB per call | "
                 "tick lag p95 ms (ticks > 20 ms) | hub stalls | hub thread CPU / waiting % | "
                 "heard missing max % (longest gap ms) | recording caller missing max % | "
                 "callers CPU % (their loop lag p99 ms) | box busy % (other) | result |")
    for s in report["streams"]:
        cpu, lag = s["cpu"], s["tick_lag"]
        over = lag.get("over_20ms")
        rows.append(
            f"| {s['calls']} | {s['failed']} | "
            f"{_fmt(s['webhook_ms'].get('p50'))} / {_fmt(s['webhook_ms'].get('p95'))} | "
            f"{_fmt(s['first_media_ms'].get('p50'))} / {_fmt(s['first_media_ms'].get('p95'))} | "
            f"{_fmt(cpu.get('appliance'))} ({_fmt(cpu.get('main'))}) | "
            f"{_fmt(s['main_cpu_pct_per_call'])} / {_fmt(s['cpu_pct_per_call'])} | {_fmt(s['rss_mb_per_call'])} | "
            f"{_fmt(lag.get('p95_ms'))} ({_fmt(None if over is None else round(100 * over, 1), '%')}) | "
            f"{s['hub_stalls']} | "
            f"{_fmt(s['hub_thread'].get('cpu_pct'))} / {_fmt(s['hub_thread'].get('runq_wait_pct'))} | "
            f"{_fmt(s['heard_missing_pct'].get('max'))} ({_fmt(s['longest_heard_gap_ms'])}) | "
            f"{_fmt(s['records'].get('caller_missing_pct', {}).get('max'))} | "
            f"{_fmt(cpu.get('callers'))} ({_fmt(s['callers_loop_lag'].get('p99_ms'))}) | "
            f"{_fmt(s['box_cpu'].get('busy'))} ({_fmt(s['other_load_pct'])}) | {_result(s)} |")
    return "\n".join(rows)


def side_by_side(report: dict[str, Any]) -> str:
    """Per N: what a Media Streams call and a SIP call each cost the box, from the same run."""
    sip = {s["calls"]: s for s in report["sip"]}
    rows = _rows("| N | CPU % per call, Media Streams: main / tree | CPU % per call, SIP: tree (main / workers) | "
                 "SIP ÷ Media Streams (trees) | RSS MB per call: Media Streams / SIP | "
                 "tick lag p95 ms: Media Streams / SIP | recording caller missing max %: Media Streams / SIP | "
                 "load generator CPU % per call: "
                 "callers / sipp | result: Media Streams / SIP |")
    for s in report["streams"]:
        b = sip.get(s["calls"])
        bc = b["cpu"] if b else {}
        ratio = (round(b["cpu_pct_per_call"] / s["cpu_pct_per_call"], 1)
                 if b and b["cpu_pct_per_call"] and s["cpu_pct_per_call"] else None)

        def per_call(total: float | None, b: dict[str, Any] | None = b) -> float | None:
            return None if total is None or b is None else round(total / b["calls"], 2)

        rows.append(
            f"| {s['calls']} | {_fmt(s['main_cpu_pct_per_call'])} / {_fmt(s['cpu_pct_per_call'])} | "
            f"{_fmt(b and b['cpu_pct_per_call'])} ({_fmt(per_call(bc.get('main', {}).get('total')))} / "
            f"{_fmt(per_call(bc.get('worker', {}).get('total')))}) | {_fmt(ratio, '×')} | "
            f"{_fmt(s['rss_mb_per_call'])} / {_fmt(b and b['rss_mb_per_call'])} | "
            f"{_fmt(s['tick_lag'].get('p95_ms'))} / {_fmt(b and b['tick_lag'].get('p95_ms'))} | "
            f"{_fmt(s['records'].get('caller_missing_pct', {}).get('max'))} / "
            f"{_fmt(b and b['records'].get('caller_missing_pct', {}).get('max'))} | "
            f"{_fmt(s['callers_cpu_pct_per_call'])} / {_fmt(per_call(bc.get('sipp', {}).get('total')))} | "
            f"{'pass' if s['passed'] else 'FAIL'} / {'–' if b is None else 'pass' if b['passed'] else 'FAIL'} |")
    return "\n".join(rows)


def tables(report: dict[str, Any]) -> str:
    parts = ["Media Streams:", streams_table(report)]
    if report["sip"]:
        parts += ["", "SIP (bench/calls.py's step, same appliance):", calls_report.table({"steps": report["sip"]}),
                  "", "Per call, side by side:", side_by_side(report)]
    return "\n".join(parts)


def _slope(steps: list[dict[str, Any]], value: Any) -> tuple[float, int, int] | None:
    """% of a core each added call cost from the first step to the last passing one (value(step))."""
    ok = [s for s in steps if s["passed"]] or steps
    a, b = steps[0], ok[-1]
    if b["calls"] <= a["calls"]:
        return None
    return (value(b) - value(a)) / (b["calls"] - a["calls"]), a["calls"], b["calls"]


def analyse(report: dict[str, Any]) -> str:
    """A reading of the numbers for docs/BENCHMARKS.md, regenerated on every run."""
    streams, sip = report["streams"], report["sip"]
    if not streams:
        return "No step ran."
    cores = report["machine"]["cores"] or 1
    failed = next((s for s in streams if not s["passed"]), None)
    heavy = failed or streams[-1]
    parts = []
    if failed:
        parts.append(f"The Media Streams ramp stopped at {failed['calls']} calls: {'; '.join(failed['problems'])}.")
    else:
        parts.append(f"Every Media Streams step passed, up to {heavy['calls']} calls.")
    cpu, hub, lag = heavy["cpu"], heavy["hub_thread"], heavy["tick_lag"]
    parts.append(
        f"At {heavy['calls']} calls the box was {heavy['box_cpu'].get('busy')}% busy of {100 * cores}%: the "
        f"appliance's main process {cpu.get('main')}% (its event-loop thread, which runs the hub's clock and every "
        f"stream's WebSocket, {hub.get('cpu_pct')}%, and waited for a CPU {hub.get('runq_wait_pct')}% of the time), "
        f"the idle SIP workers and Kamailio {round(cpu.get('worker', 0.0) + cpu.get('kamailio', 0.0), 1)}%, "
        f"the callers {cpu.get('callers')}%, other work {heavy['other_load_pct']}%; the hub's tick ran late "
        f"(p95 {lag.get('p95_ms')} ms, {heavy['hub_stalls']} stalls).")
    if failed and heavy["hub_stalls"] and any("caller channel" in p for p in failed["problems"]):
        parts.append(
            "The recordings lost caller audio with the hub's stalls: the gateway reads every stream on the "
            "same event loop as the hub's clock and keeps at most 200 ms of a caller's frames between its 20 ms "
            "batches (twilio_gateway/stream.py RECEIVED_FRAMES), so after a longer stall the frames read at "
            "once past that are dropped before the hub sees them (a SIP worker's frames wait in its socket "
            "and all reach the recording).")
    ms = _slope(streams, lambda s: s["cpu"].get("main", 0.0))
    if ms:
        parts.append(f"Each added Media Streams call cost {ms[0]:.2f}% of a core in the main process between "
                     f"{ms[1]} and {ms[2]} calls.")
    if sip:
        sip_failed = next((s for s in sip if not s["passed"]), None)
        parts.append("Over SIP, in the same run, " + (
            f"the ramp stopped at {sip_failed['calls']} calls: {'; '.join(sip_failed['problems'])[:300]}."
            if sip_failed else f"every step passed, up to {sip[-1]['calls']} calls."))
        sp = _slope(sip, lambda s: s["cpu"]["appliance_total"])
        if sp:
            parts.append(f"Each added SIP call cost {sp[0]:.2f}% of a core in the appliance's tree (main, pjsua2 "
                         f"workers, Kamailio) between {sp[1]} and {sp[2]} calls"
                         + (f", {sp[0] / ms[0]:.1f}× a Media Streams call." if ms and ms[0] > 0 else "."))
    return " ".join(parts)


def markdown(report: dict[str, Any], analysis: str) -> str:
    m, st, idle = report["machine"], report["settings"], report["idle"]
    first, sip_first = (
        "" if report[key] is None else f" (first failing step: {report[key]})"
        for key in ("first_streams_failure", "first_sip_failure"))
    retried = [*report.get("streams_retried", []), *report.get("sip_retried", [])]
    retry_note = "" if not retried else (
        f"\nAttempts that failed while other work used more than {st['quiet_pct']:g}% of a core were run again "
        f"(up to 3 times per step); the tables show the last attempt. Failed attempts: "
        + "; ".join(f"{s['calls']} calls (other work {s['other_load_pct']}% of a core: "
                    f"{'; '.join(s['problems'])[:120]})" for s in retried) + ".\n")
    sip = "" if not report["sip"] else f"""
**SIP, same run, same appliance: {report['max_sip_0_failures']}**{sip_first}. The same steps with sipp
through the Kamailio edge into the pjsua2 workers, by `bench/calls.py`'s own step (its table below),
judged by its rules and the same {st['gap_limit_pct']:g}% bound on the recordings' caller channel.

{calls_report.table({"steps": report["sip"]})}

Per call, side by side:

{side_by_side(report)}
"""
    return f"""{DOC_BEGIN}
## Twilio Media Streams capacity (`bench/media_streams.py`)

How many concurrent Twilio Media Streams calls one box holds with 0 failures and no audio gaps
over {st['gap_limit_pct']:g}%, and what each costs beside a SIP call. Each call is
`tests/support/media_streams.py` as Twilio brings one: the voice webhook signed with the `twilio`
package, answered with `<Connect><Stream>`, then the WebSocket `/twilio/media` with μ-law 8 kHz,
20 ms a message at real time. All N callers run in one asyncio process
(`bench/media_streams_callers.py`) whose CPU is counted apart, as sipp's is. Each speaks the whole
call (espeak-ng saying `tests/support/audio.py`'s caller lines, looped, over a noise floor at about
-54 dBFS so that a pause is never an all-zero frame) and sends `stop` after {st['duration_s']:g} s.
The flow is `bench/calls.py`'s `bench` flow on both the Twilio number and the SIP number, not the
shipped default flow: with no key pressed the default flow plays its menu three times and hangs
up itself (flow-hangup) about 29 s in, racing the caller's hang-up at 30 s and leaving silent
5 s waits between the prompts; the `bench` flow greets ("Welcome to the Switchboard benchmark.
Press 1 to leave.") and holds for 60 s, so the caller always hangs up first. Calls are recorded
(stereo WAV) as every call is.

A step fails on: a webhook not answered with a stream; a stream that did not start (no audio
from the box) or that the box closed before `stop`; a stream not closed with 1000 after `stop`;
a call record not closed with `caller-hangup` or whose recording does not cover the call (as
`bench/calls.py` checks); any caller that heard more than {st['gap_limit_pct']:g}% of its 20 ms
frames missing, or any recording whose caller channel misses more than that. The ramp stops at
the first failing step.

- Date: {report['date']}
- Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, Linux {m['kernel']}, Python {m['python']};
  {m['sipp']}; {m['kamailio']}; {m['espeak_ng']}
- Code: {report.get('code', 'unknown')}
- Command: `{report['command']}`
- Settings: calls started at {st['rate_cps']:g} calls/s; twilio.max_streams {st['max_streams']};
  {st['workers']} SIP workers × {st['calls_per_worker']} calls (ceil(max step / 4) + 1), idle during the Media
  Streams steps; no persona workers; the callers and sipp run on the same box
- Raw results: `{report.get('json_path', '')}`

**Largest concurrency with 0 failures and gaps ≤ {st['gap_limit_pct']:g}%, Media Streams:
{report['max_streams_0_failures']}**{first}

{streams_table(report)}
{sip}{retry_note}
How to read them. Every number is taken over a step's steady state: every call up, before the
first caller's `stop`. CPU comes from `/proc/PID/stat`, in % of one core ({100 * (m['cores'] or 1)}% is the
whole box). The Twilio gateway runs in the appliance's main process, beside the hub, so "main"
is what a Media Streams call costs; "tree" adds the SIP workers and Kamailio, idle then
(idle: {idle['cpu']['appliance_total']}% of a core for the tree, main {idle['cpu'].get('main', {}).get('total')}%).
The SIP path's cost is the whole tree. RSS per call is the tree's RSS in the steady state minus
its idle RSS ({idle['rss_kb'] / 1024:.0f} MB), divided by N. "Start → first audio" is from the
caller's `start` to the first media message of the greeting (the hub's answer, the flow's first
prompt). "Heard missing" is, per caller, the share of the 20 ms slots of wall time spanned by
the greeting and prompt it was sent in which no frame came; a late frame is not a missing one
(each end of the span is taken from the least late of the first and of the last ten frames).
"Longest gap" is the longest time between two media messages, late ones included. "Recording
caller missing" is the share of 20 ms frames in which a recording's caller channel is all zero
(`bench/calls.py` inspect_recording: no caller frame reached the hub). Tick lag is how late the
hub's 20 ms clock ran (`switchboard_hub_tick_lag_seconds`); a stall is the hub more than 200 ms
behind, when it skips the missed ticks. "Waiting" is the time the main thread was runnable but had no CPU
(`/proc/.../schedstat`). "Their loop lag" is how late the callers' own event loop woke for a
20 ms sleep: late callers send late, which is their fault, not the box's.

### What limits it

{analysis.strip()}
{DOC_END}
"""


def write_doc(report: dict[str, Any], analysis: str) -> None:
    write_doc_section(markdown(report, analysis), DOC_BEGIN, DOC_END)
