"""Report writing for bench/operators.py: its table and its docs/BENCHMARKS.md section, from a
finished run's report (measuring stays in bench/operators.py)."""

from __future__ import annotations

from typing import Any

from bench.common import write_doc_section

DOC_BEGIN = "<!-- bench/operators.py: begin -->"
DOC_END = "<!-- bench/operators.py: end -->"

# The goals: accept → audio under 1 s, added one-way delay under 60 ms, gaps under 1 %
# both ways with the box below 100 % busy.
GOAL_ACCEPT_MS = 1000
GOAL_ONE_WAY_MS = 60
GOAL_GAP_PCT = 1.0


def _fmt(value: Any, suffix: str = "") -> str:
    return "–" if value is None else f"{value}{suffix}"


def _pair(d: dict[str, Any], a: str = "p50", b: str = "p95") -> str:
    return f"{_fmt(d.get(a))} / {_fmt(d.get(b))}"


def meets_goal(step: dict[str, Any]) -> bool:
    m = step["summary"]
    if not m:
        return False
    gaps = [m["to_caller_gap_pct"]["max"], m["loop_gap_pct"]["max"]]
    return (not step["problems"] and all(g is not None and g < GOAL_GAP_PCT for g in gaps)
            and (step["box_cpu"].get("busy") or 0) < 200)


def table(report: dict[str, Any]) -> str:
    head = ("| N | gaps % toward caller (mean / max) | gaps % heard by operator, whole loop (mean / max) | "
            "gaps % back from caller (mean / max) | accept → operator hears p50 / p95 ms | "
            "accept → caller hears p50 / p95 ms | round trip p50 / p95 ms | one-way (½ round trip) p50 / p95 ms | "
            "of it SIP leg round trip p50 ms | appliance CPU % of the box (% of a core: main / SIP workers / rtc / "
            "kamailio) | rtc CPU % of a core per leg | operator clients + sipp, % of a core | box busy % of 2 cores "
            "(other work, % of a core) | load avg | problems |")
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for s in report["steps"]:
        m, c = s["summary"], s["cpu"]
        if not m:
            rows.append(f"| {s['operators']} |" + " – |" * (head.count("|") - 3) + f" {'; '.join(s['problems'])} |")
            continue
        rows.append(
            f"| {s['operators']} | {_pair(m['to_caller_gap_pct'], 'mean', 'max')} | "
            f"{_pair(m['loop_gap_pct'], 'mean', 'max')} | {_pair(m['from_caller_gap_pct'], 'mean', 'max')} | "
            f"{_pair(m['accept_to_heard_ms'])} | {_pair(m['accept_to_caller_ms'])} | {_pair(m['rtt_ms'])} | "
            f"{_pair(m['one_way_ms'])} | {_fmt(m['sip_rtt_ms'].get('p50'))} | "
            f"{_fmt(c.get('appliance_pct_of_box'))} ({_fmt(c.get('main'))} / {_fmt(c.get('worker'))} / "
            f"{_fmt(c.get('rtc'))} / {_fmt(c.get('kamailio'))}) | {_fmt(c.get('rtc_per_leg'))} | "
            f"{_fmt(c.get('bench_clients'))} + {_fmt(c.get('sipp'))} | "
            f"{_fmt(None if s['box_cpu'].get('busy') is None else round(s['box_cpu']['busy'] / 2, 1))} "
            f"({_fmt(s['other_load_pct'])}) | {_fmt(m.get('loadavg_1m_before'))} | "
            f"{'; '.join(s['problems'])[:160] or '–'} |")
    return "\n".join(rows)


def markdown(report: dict[str, Any], findings: str) -> str:
    m = report["machine"]
    st = report["settings"]
    good = [s["operators"] for s in report["steps"] if meets_goal(s)]
    return f"""{DOC_BEGIN}
## Operator calls (WebRTC) (`bench/operators.py`)

N SIP callers talking to N operators at once. The real appliance runs the console's `desk`
flow (number 300 straight into queue `billing`); N operators sign in over the console's HTTPS
API and connect as aiortc clients (`tests/support/operator_client.py`, Opus), N sipp callers
dial 300 through the Kamailio edge, and each operator accepts its offer.

Method: every operator sends a continuous 500 Hz tone with a 60 ms chirp (800–3400 Hz) once a
second, and notes the wall-clock time each chirp is handed to aiortc. The callers are sipp with
`-rtp_echo`: each sends back every RTP packet it gets, so what an operator hears is its own
signal after the whole path, browser → rtc worker → hub → SIP worker → caller and back. One
clock (the operator's) times each chirp's round trip, found by normalised cross-correlation in
what the operator heard; the added one-way delay is half of it (the two directions run through
the same components). The call's recording (left: the caller, right: what the caller heard)
holds both ends of the SIP leg on one timeline, so each chirp on the right to its echo on the
left is the SIP leg's round trip (hub → SIP worker → caller → SIP worker → hub); the rest of the
round trip is the WebRTC leg, including aiortc's receive jitter buffer on the operator's side.

- Gaps: the share of 20 ms frames with no signal (RMS under 300; the tone is about 2,800)
  during the steady window: *toward the caller* from the recording's right channel (what the hub
  sent the caller: browser → hub), *back from the caller* from the left channel (the echo: the
  SIP leg both ways), *heard by the operator* from frames the operator received in the window
  against the frames the window should hold (the whole loop, both directions: an upper bound for
  caller → operator).
- Accept → audio, from the moment the operator sends `accept`: *operator hears* is the first
  frame with sound the operator receives (the caller's echo, of the hold announcement or the
  tone); *caller hears* is the first echoed frame of the operator's tone, less half that call's
  median round trip.
- CPU: utime + stime from `/proc/<pid>/stat` of the appliance process and all its children
  (SIP workers, the rtc worker, kamailio) before and after the steady window; the operators'
  aiortc clients (this benchmark's process) and sipp run on the same box and are counted apart,
  and so is any other work on the box.

- Date: {report['date']}
- Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, Linux {m['kernel']}, Python {m['python']};
  {m['sipp']}; {m['kamailio']}
- Code: {report.get('code', 'unknown')}
- Command: `{report['command']}`
- Settings: {st['workers']} SIP workers × 4 calls, {st['rtc_workers']} rtc worker(s), calls started at
  {st['rate_cps']:g} calls/s, a {st['window_s']:g} s steady window per step
- Load average (1, 5, 15 min) before the run: {' '.join(report['loadavg_before'])}; after:
  {' '.join(report.get('loadavg_after', []))}
- Raw results: `{report.get('json_path', '')}`

**Largest N with gaps under {GOAL_GAP_PCT:g} % both ways, no failed call and the box below 100 % busy:
{max(good, default='none')}**

{table(report)}

{findings.strip()}
{DOC_END}
"""


def write_doc(report: dict[str, Any], findings: str = "") -> None:
    write_doc_section(markdown(report, findings), DOC_BEGIN, DOC_END)
