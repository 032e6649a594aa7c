"""bench/soak.py's report: a soak run as JSON-ready figures, its tables, and its section of
docs/BENCHMARKS.md."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from bench.common import write_doc_section
from tests.support.soak.mix import KINDS, PERSONA
from tests.support.soak.run import CALLS_PER_WORKER, SoakRun

DOC_BEGIN = "<!-- bench/soak.py: begin -->"
DOC_END = "<!-- bench/soak.py: end -->"
ERROR_LINES_KEPT = 100


def report_of(run: SoakRun) -> dict[str, Any]:
    """Everything the soak measured and found, as plain data."""
    verdict = run.verdict.summary() if run.verdict else {"kinds": {}}
    kinds: dict[str, Any] = {}
    for kind in KINDS:
        sipp = run.sipp.get(kind.name)
        kinds[kind.name] = {"number": kind.number, "flow": kind.flow, "expected": kind.reason,
                            "sipp_successful": sipp.successful if sipp else 0,
                            "sipp_failed": sipp.failed if sipp else 0} | verdict["kinds"].get(kind.name, {})
    established = sum(c.established for c in run.persona)
    kinds["persona"] = {"number": PERSONA["number"], "flow": PERSONA["flow"], "expected": "caller-hangup",
                        "sipp_successful": established, "sipp_failed": len(run.persona) - established,
                        } | verdict["kinds"].get("persona", {})
    growth, late = run.growth(), run.growth(late=True)
    return {
        "settings": {"calls": run.plan.calls, "rate_cps": run.plan.rate, "persona_calls": run.plan.persona_calls,
                     "persona_stay_s": run.plan.persona_stay_s, "workers": run.workers,
                     "calls_per_worker": CALLS_PER_WORKER, "sample_every_s": run.plan.sample_every_s,
                     "warmup": run.plan.warmup},
        "calls_s": run.calls_s,
        "kinds": kinds,
        "desk": {"successful": run.desk.successful, "failed": run.desk.failed} if run.desk else None,
        "recordings_checked": verdict.get("recordings_checked", 0),
        "voicemails_checked": verdict.get("voicemails_checked", 0),
        "failures": run.failures(),
        "error_lines": {"count": len(run.errors), "lines": run.errors[:ERROR_LINES_KEPT]},
        "growth": {metric: [asdict(s) for s in slopes] for metric, slopes in growth.items()},
        "growth_late": {metric: [asdict(s) for s in slopes] for metric, slopes in late.items()},
        "retained": run.retained(),
        "samples": [{"at": s.at, "calls_ended": s.calls_ended, "persona_ended": s.persona_ended, "rss_kb": s.rss_kb,
                     "private_kb": s.private_kb, "fds": s.fds} for s in run.samples],
        "passed": not run.failures(),
    }


def _outcomes(outcomes: dict[str, int]) -> str:
    return ", ".join(f"{reason} {n}" for reason, n in sorted(outcomes.items(), key=lambda kv: -kv[1])) or "–"


def calls_table(report: dict[str, Any]) -> str:
    rows = ["| kind | number (flow) | calls placed | caller passed / failed | records | outcomes | expected | "
            "problems |", "|---|---|--:|--:|--:|---|---|--:|"]
    for name, k in report["kinds"].items():
        rows.append(f"| {name} | {k['number']} ({k['flow']}) | {k.get('placed', 0)} | {k['sipp_successful']} / "
                    f"{k['sipp_failed']} | {k.get('records', 0)} | {_outcomes(k.get('outcomes', {}))} | "
                    f"{k['expected']} | {k.get('problems', 0)} |")
    return "\n".join(rows)


def _growth_rows(report: dict[str, Any]) -> list[tuple[str, dict[str, dict[str, Any]]]]:
    """(process, {metric: slope}): the main process, the WebRTC and persona workers, the SIP workers and
    the kamailio processes summed, and of each of those two the one whose RSS grew most."""
    by_metric = {metric: {s["process"]: s for s in slopes} for metric, slopes in report["growth"].items()}
    rss = by_metric["rss_kb"]
    names = [n for n in rss if n == "main" or n.startswith(("rtc:", "persona:"))]
    for role in ("sip", "kamailio"):
        own = [n for n in rss if n.startswith(f"{role}:")]
        if own:
            names += [f"{role} (all)", max(own, key=lambda n: rss[n]["growth"])]
    return [(n, {metric: slopes.get(n, {}) for metric, slopes in by_metric.items()}) for n in names if n in rss]


def growth_table(report: dict[str, Any]) -> str:
    kept = report["retained"]
    late = {s["process"]: s for s in report["growth_late"]["rss_kb"]}
    rows = ["| process | RSS MB, warm-up → last call placed | RSS slope | its second half | private memory slope | "
            "RSS kept idle after the run | open fds, warm-up → last call placed | fd slope | fds kept idle |",
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for name, s in _growth_rows(report):
        rss, private, fds = s["rss_kb"], s.get("private_kb", {}), s.get("fds", {})
        per = "/ session" if rss.get("per") == "session" else "/ 1,000 calls"
        cells = [name, f"{rss.get('first', 0) / 1024:.1f} → {rss.get('last', 0) / 1024:.1f}",
                 f"{rss.get('growth', 0):+,.0f} KB {per}", f"{late.get(name, {}).get('growth', 0):+,.0f} KB {per}",
                 f"{private.get('growth', 0):+,.0f} KB {per}",
                 f"{kept['rss_kb'].get(name, 0):+,.0f} KB {per}",
                 f"{fds.get('first', 0):.0f} → {fds.get('last', 0):.0f}", f"{fds.get('growth', 0):+.1f} {per}",
                 f"{kept['fds'].get(name, 0):+.1f} {per}"]
        rows.append(f"| {' | '.join(cells)} |")
    return "\n".join(rows)


def quoted(line: str) -> str:
    """A log line as the doc shows it: a native library's source path (pjsip's `../src/pj/…`)
    is the library's, not a path of this repository, so it loses its `../`."""
    return line.replace("../", "…/")


def errors_block(report: dict[str, Any]) -> str:
    errors = report["error_lines"]
    if not errors["count"]:
        return "Error lines in the appliance log: none."
    shown = "\n".join(f"    {quoted(line)[:240]}" for line in errors["lines"][:10])
    return f"Error lines in the appliance log: {errors['count']}. The first:\n\n{shown}"


def tables(report: dict[str, Any]) -> str:
    return "\n\n".join([calls_table(report), growth_table(report), errors_block(report)])


def markdown(report: dict[str, Any]) -> str:
    m, st = report["machine"], report["settings"]
    failures = report["failures"]
    verdict = ("**Passed**: every call has exactly one record, closed as its kind must end, every recording plays "
               "and covers its call, and the log has no error line." if not failures else
               f"**Failed**: {len(failures)} problems. The first:\n\n" +
               "\n".join(f"- {quoted(line)[:300]}" for line in failures[:15]))
    return f"""{DOC_BEGIN}
## Soak (`bench/soak.py`)

Thousands of calls of every kind through the real appliance behind its Kamailio edge, and
afterwards whether each left what it should. One sipp per kind of call runs side by side at
its share of the rate: DTMF menus (the key picks the branch), voicemail ended by pound and by
hanging up, callers hanging up mid-prompt, CANCEL while ringing (it races the answer: either
outcome passes, the record must say which), re-INVITE hold and resume and then a key, the
flow hanging up, and bridge transfers to a sipp desk; baresip calls the order desk persona
one call at a time. Every sipp call carries its kind and number in its Call-ID, which the
appliance stores with the call, so each record is matched to the very call that made it.

Checks (`tests/support/soak/checks.py`, the same as `tests/calls/test_soak.py` with 300 calls):
each call placed has exactly one record and no record belongs to no call; it is closed with
its kind's end reason, answered or not as its kind must be, went through the steps and keys
its caller chose; every answered call's recording is a WAV that plays to its end and lasts
answered → ended within 0.5 s; every voicemail plays and fits in its call; no line of the
appliance log is at level error. RSS (`/proc/PID/status`), private memory (USS, from
`/proc/PID/smaps_rollup`) and open file descriptors (`/proc/PID/fd`) of the main process, each
SIP worker, the persona worker, the WebRTC gateway and each kamailio process are sampled every
{st['sample_every_s']:g} s against the calls ended so far. A slope is the least-squares fit from
the first {st['warmup'] * 100:.0f} % of the calls to the last call placed (the calls still up at the
end, and their draining, are not growth), per 1,000 calls (persona workers: per persona session),
and again over that window's second half, where a cache or an allocator that fills up has levelled off;
"kept idle" is what a process held once every call had closed beyond what it held before the
first, per 1,000 calls: caches and pools filled on the way count in it, so it is an upper bound.
Kamailio's processes share memory, which each one's RSS counts as it first touches it: their
private memory is the figure for a leak.

- Date: {report['date']}
- Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, Linux {m['kernel']}, Python {m['python']};
  {m['sipp']}; {m['kamailio']}; {m['baresip']}
- Code: {report.get('code', 'unknown')}
- Command: `{report['command']}`
- Settings: {st['calls']} sipp calls at {st['rate_cps']:g} calls/s ({report['calls_s']} s from the first call to the
  last caller's end), {st['persona_calls']} persona calls of {st['persona_stay_s']:g} s, {st['workers']} SIP workers ×
  {st['calls_per_worker']} calls
- Load average (1, 5, 15 min) before the run: {' '.join(report['loadavg_before'])}; after:
  {' '.join(report.get('loadavg_after', []))}
- Raw results: `{report.get('json_path', '')}`

{verdict}

{calls_table(report)}

Recordings checked: {report['recordings_checked']}; voicemail messages checked: {report['voicemails_checked']}.

{growth_table(report)}

{errors_block(report)}
{DOC_END}
"""


def write_doc(report: dict[str, Any]) -> None:
    write_doc_section(markdown(report), DOC_BEGIN, DOC_END)
