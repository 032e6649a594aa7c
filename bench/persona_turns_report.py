"""bench/persona_turns.py's tables and its section of docs/BENCHMARKS.md."""

from __future__ import annotations

from typing import Any

from bench.common import write_doc_section

DOC_BEGIN, DOC_END = "<!-- bench/persona_turns.py: begin -->", "<!-- bench/persona_turns.py: end -->"
# Issue 15's goals for the request turns.
GOAL_ONE_P50_MS, GOAL_ONE_P95_MS, GOAL_CONCURRENT_P95_MS, GOAL_CONCURRENT = 300, 400, 500, 16


def _rows(report: dict[str, Any]) -> list[str]:
    rows = []
    for s in report["steps"]:
        r, n, m = s["requests"], s["numbers"], s["meter"]
        rows.append(
            f"| {s['setting']} | {s['concurrent']} | {s['calls']} × {s['turns_per_call']} "
            f"| **{r.get('p50_ms', '–')} / {r.get('p95_ms', '–')}** | {r.get('max_ms', '–')} "
            f"| **{r['into_sentence']} of {r['judged']}** ({r['into_sentence_pct']}%) "
            f"| {n.get('p50_ms', '–')} / {n.get('p95_ms', '–')} | {n['into_sentence']} of {n['judged']} "
            f"| {r['turns'] - r['judged'] + n['turns'] - n['judged']} | {m['box_busy_pct']} / {m['other_load_pct']} |")
    return rows


HEAD = ("| setting | concurrent calls | calls × turns | **requests: latency p50 / p95 ms** | max ms "
        "| **requests answered inside the caller's sentence** | numbers: latency p50 / p95 ms "
        "| numbers answered inside | turns not measured | box busy / other work % of 200 |\n"
        "|---|---|---|---|---|---|---|---|---|---|")


def tables(report: dict[str, Any]) -> str:
    lines = [HEAD, *_rows(report)]
    for s in report["steps"]:
        examples = s["requests"]["into_sentence_examples"]
        if examples:
            lines.append(f"{s['setting']} at {s['concurrent']}: answered inside: {'; '.join(examples)}")
        if s["problems"]:
            lines.append(f"{s['setting']} at {s['concurrent']}: problems: {'; '.join(s['problems'])[:400]}")
    return "\n".join(lines)


def verdict(report: dict[str, Any]) -> str:
    """Issue 15's goals, each against the run's figures."""
    by = {(s["setting"], s["concurrent"]): s for s in report["steps"]}
    out = []
    one = by.get(("new", 1))
    if one and one["requests"].get("n"):
        r = one["requests"]
        ok = r["p50_ms"] <= GOAL_ONE_P50_MS and r["p95_ms"] <= GOAL_ONE_P95_MS
        out.append(f"one call at a time: p50 {r['p50_ms']} / p95 {r['p95_ms']} ms "
                   f"(goal ≤ {GOAL_ONE_P50_MS} / ≤ {GOAL_ONE_P95_MS}): {'met' if ok else 'NOT met'}")
    many = by.get(("new", GOAL_CONCURRENT))
    if many and many["requests"].get("n"):
        p95 = many["requests"]["p95_ms"]
        out.append(f"{GOAL_CONCURRENT} calls at once: p95 {p95} ms (goal ≤ {GOAL_CONCURRENT_P95_MS}): "
                   f"{'met' if p95 <= GOAL_CONCURRENT_P95_MS else 'NOT met'}")
    for concurrent in sorted({c for _, c in by}):
        old, new = by.get(("old", concurrent)), by.get(("new", concurrent))
        if old and new:
            o, n = old["requests"], new["requests"]
            fewer = None not in (o["into_sentence_pct"], n["into_sentence_pct"]) and (
                n["into_sentence_pct"] <= o["into_sentence_pct"])
            out.append(f"replies inside the caller's sentence at {concurrent} call(s): old {o['into_sentence']} of "
                       f"{o['judged']}, new {n['into_sentence']} of {n['judged']}: "
                       f"{'no more than before' if fewer else 'MORE than before'}")
    return "\n".join(f"- {line}" for line in out)


def markdown(report: dict[str, Any]) -> str:
    st, m = report["settings"], report["machine"]
    return f"""{DOC_BEGIN}
## Persona turns with pauses inside sentences (`bench/persona_turns.py`)

How long a caller waits for the order desk persona's answer, and how often the answer starts
inside the caller's sentence, for the old end of turn (`personas.endpointing_s` {st['old']['endpointing_s']},
every turn ends at silero's end of speech) and the new one (`endpointing_s` {st['new']['endpointing_s']},
words that are not a whole request held open the persona's `turns.incomplete_pause`
{st['new']['incomplete_pause']} s), in one run on the same corpus. The order desk's intents that end
or hand on the call are left out of the benchmark's copy, so that a misheard request cannot
cut a measured call short. Callers (baresip, G.722) alternate a
request from tests/support/spoken_requests.py (espeak-ng, six voices, three rates, 0.3-0.8 s
pauses where the words so far are not a whole request, such as "I would like to … check my
order") with the order number the persona then asks for ("{st['number_answer']}", which waits
`numbers.pause` by design), one utterance every {st['period_s']:g} s. A request's latency runs from its
last word's end in baresip's sent dump to the first reply sound in its heard dump; a reply
whose first sound comes before that end was answered inside the sentence (and is not in the
latency figures).

- Date: {report['date']}
- Machine: {m.get('cpu', '')}, {m.get('cores', '')} cores, Python {m.get('python', '')}
- Code: {report['code']}
- Command: `{report['command']}`
- Raw results: `{report.get('json_path', '')}`

{HEAD}
{chr(10).join(_rows(report))}

{verdict(report)}
{DOC_END}
"""


def write_doc(report: dict[str, Any]) -> None:
    write_doc_section(markdown(report), DOC_BEGIN, DOC_END)
