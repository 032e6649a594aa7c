"""Report writing for bench/supervisors.py: its tables and its docs/BENCHMARKS.md section, from a
finished run's report (measuring stays in bench/supervisors.py)."""

from __future__ import annotations

import re
from typing import Any

from bench.common import write_doc_section

DOC_BEGIN = "<!-- bench/supervisors.py: begin -->"
DOC_END = "<!-- bench/supervisors.py: end -->"

# Issue 11's goals: the wallboard shows a change within 1 s (p95); a listening supervisor costs
# under 3 % of a core.
GOAL_WALLBOARD_MS = 1000
GOAL_LISTENER_PCT = 3.0


def _fmt(value: Any, suffix: str = "") -> str:
    return "–" if value is None else f"{value}{suffix}"


def _dist(d: dict[str, Any]) -> str:
    return f"{_fmt(d.get('p50'))} / {_fmt(d.get('p95'))} / {_fmt(d.get('max'))}"


def wallboard_table(w: dict[str, Any]) -> str:
    b = w.get("boards", {})
    rows = [
        "| what | p50 / p95 / max ms | samples |",
        "|---|---|---|",
        f"| **new call: INVITE sent → first wallboard showing it** | **{_dist(w['appear_ms'])}** | "
        f"{w['appear_ms']['n']} |",
        f"| of it: INVITE sent → the hub opens the call (`started_at`) | {_dist(w['appear_sip_ms'])} | "
        f"{w['appear_sip_ms']['n']} |",
        f"| of it: the hub opens the call → shown | {_dist(w['appear_board_ms'])} | {w['appear_board_ms']['n']} |",
        f"| **hang-up: BYE sent → first wallboard without it** | **{_dist(w['gone_ms'])}** | {w['gone_ms']['n']} |",
        f"| of it: BYE sent → the hub closes the call (`ended_at`) | {_dist(w['gone_sip_ms'])} | "
        f"{w['gone_sip_ms']['n']} |",
        f"| of it: the hub closes the call → gone | {_dist(w['gone_board_ms'])} | {w['gone_board_ms']['n']} |",
        f"| between wallboard messages (receipt to receipt; sent on change) | {_dist(b.get('interval_ms', {}))} | "
        f"{b.get('interval_ms', {}).get('n', '–')}, of them over 1.5 s: {b.get('intervals_over_1_5_s', '–')} |",
        f"| wallboard message built (`at`) → received | {_dist(b.get('build_to_received_ms', {}))} | "
        f"{b.get('build_to_received_ms', {}).get('n', '–')} |",
        f"| the same message: first supervisor's receipt → last's | {_dist(b.get('fan_out_spread_ms', {}))} | "
        f"{b.get('fan_out_spread_ms', {}).get('n', '–')} |",
    ]
    return "\n".join(rows)


def listening_table(listening: dict[str, Any]) -> str:
    head = ("| supervisors signed in | of them listening | appliance CPU % of a core (main / SIP workers / rtc / "
            "kamailio) | above the steps with none, per listener | rtc above, per listener | frames each listener got "
            "(with sound) % | supervisor clients + sipp, % of a core | box busy % of 2 cores (other work, "
            "% of a core) | problems |")
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    per = listening.get("per_listener", {})
    for s in listening.get("steps", []):
        c, k = s["cpu"], s["listeners"]
        busy = s["box_cpu"].get("busy")
        rows.append(
            f"| {s['signed_in']} | {k} | {_fmt(c.get('appliance'))} ({_fmt(c.get('main'))} / {_fmt(c.get('worker'))} / "
            f"{_fmt(c.get('rtc'))} / {_fmt(c.get('kamailio'))}) | "
            f"{_fmt(per.get('appliance', {}).get(str(k)) if k else None)} | "
            f"{_fmt(per.get('rtc', {}).get(str(k)) if k else None)} | "
            f"{_fmt(s['heard_frames_pct'])} ({_fmt(s['audible_frames_pct'])}) | "
            f"{_fmt(c.get('bench_clients'))} + {_fmt(c.get('sipp'))} | "
            f"{_fmt(None if busy is None else round(busy / 2, 1))} ({_fmt(s['other_load_pct'])}) | "
            f"{'; '.join(s['problems'])[:160] or '–'} |")
    return "\n".join(rows)


def table(report: dict[str, Any]) -> str:
    parts = []
    if "wallboard" in report:
        parts.append(wallboard_table(report["wallboard"]))
    if "listening" in report:
        parts.append(listening_table(report["listening"]))
    return "\n\n".join(parts) or "no measurement: " + "; ".join(report["problems"])


def markdown(report: dict[str, Any], findings: str) -> str:
    m, st = report["machine"], report["settings"]
    w, listening = report["wallboard"], report.get("listening", {})
    per = listening.get("per_listener", {})
    costs = list(per.get("appliance", {}).values())
    problems = report["problems"] + w["problems"] + listening.get("problems", [])
    return f"""{DOC_BEGIN}
## Supervisors (wallboard and listening) (`bench/supervisors.py`)

What a supervisor sees and costs. The real appliance answers number 300 with a one-step flow
that puts callers in queue `billing`, where they wait on hold: one operator is signed in but
away, so nobody answers them and nobody overflows. {st['supervisors']} supervisors sign in over
the console's HTTPS API and connect as aiortc clients (`tests/support/operator_client.py`); the
appliance pushes each of them a `wallboard` message once a second. Callers are sipp
(`bench/scenarios/hold.xml`, silent) through the Kamailio edge.

Method:
- **Wallboard delay.** With {st['calls']} callers on hold, {st['probes']} probe callers (a second
  sipp, {st['probe_rate_cps']:g} calls/s, which is no divisor of the 1 s wallboard period, so the
  probes fall at every phase of it) call in, stay {st['probe_hold_s']:g} s and hang up. Two events,
  each timed by sipp's own message trace (`-trace_msg`, wall clock): the probe's INVITE sent, and
  its BYE sent. Each is matched to the first wallboard that shows the call (by the appliance's
  call id, found through the call's `offered` event and its SIP Call-ID), and the first one after
  that which no longer does, timed when the data channel hands the message to supervisor sam0's
  client (wall clock, same box). The call record's `started_at` and `ended_at` (the hub's wall
  clock) split each delay into the SIP path and the wallboard's share.
- **Listening cost.** With {st['listen_calls']} callers on hold: first one supervisor signed in (the
  others sign out, then back in), then all {st['supervisors']} signed in (so the wallboards they get
  are the same in every later step) with {', '.join(str(k) for k in st['listeners'])} of them each
  joined to a call in listen mode (`{{"type": "join", "mode": "listen"}}`, round the calls). CPU: utime + stime from
  `/proc/<pid>/stat` of the appliance process and its children (SIP workers, the rtc worker,
  kamailio) over a {st['window_s']:g} s window per step, {st['settle_s']:g} s after the joins; the
  supervisors' aiortc clients (this benchmark's process) and sipp are counted apart, and so is
  any other work on the box. One listener's cost is a step's CPU above the mean of the steps with
  none, divided by its listeners; one signed-in supervisor's (not listening) is the steps with all
  of them and none listening against the step with one, divided by the difference.

- Date: {report['date']}
- Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, Linux {m['kernel']}, Python {m['python']};
  {m['sipp']}; {m['kamailio']}
- Code: {report.get('code', 'unknown')}
- Command: `{report['command']}`
- Settings: {st['workers']} SIP workers × 4 calls, {st['rtc_workers']} rtc worker(s), callers started at
  {st['rate_cps']:g} calls/s
- Load average (1, 5, 15 min) before the run: {' '.join(report['loadavg_before'])}; after:
  {' '.join(report.get('loadavg_after', []))}
- Raw results: `{report.get('json_path', '')}`

**Wallboard: a new call shows after {_fmt(w['appear_ms']['p50'])} ms p50, {_fmt(w['appear_ms']['p95'])} ms p95
with {st['calls']} live calls (goal: p95 under {GOAL_WALLBOARD_MS} ms); a hang-up after
{_fmt(w['gone_ms']['p50'])} / {_fmt(w['gone_ms']['p95'])} ms.
A listening supervisor: {' and '.join(f'{c:g}' for c in costs) or '–'} % of a core
(at {' and '.join(k for k in per.get('appliance', {})) or '–'} listeners; goal: under {GOAL_LISTENER_PCT:g} %);
a supervisor signed in, not listening: {_fmt((listening.get('per_signed_in') or {}).get('appliance'))} % of a core.**

{wallboard_table(w)}

{listening_table(listening) if listening else ''}

{('Problems: ' + '; '.join(problems)) if problems else ''}

{findings.strip()}
{DOC_END}
"""


def write_doc(report: dict[str, Any], findings: str = "") -> None:
    text = re.sub(r"\n{3,}", "\n\n", markdown(report, findings))  # the parts a run did not fill
    write_doc_section(text, DOC_BEGIN, DOC_END)
