"""Report writing for bench/digits.py: its tables and its docs/BENCHMARKS.md section, from a
finished run's report (measuring stays in bench/digits.py)."""

from __future__ import annotations

from typing import Any

from bench.common import write_doc_section

DOC_BEGIN = "<!-- bench/digits.py: begin -->"
DOC_END = "<!-- bench/digits.py: end -->"


def _cell(share: dict[str, Any]) -> str:
    return "–" if share["pct"] is None else f"{share['pct']} % ({share['ok']}/{share['n']})"


def breakdown(summary: dict[str, Any]) -> str:
    lines = ["| by | value | exactly right |", "|---|---|---|"]
    for kind, values in summary["by"].items():
        for value, share in values.items():
            lines.append(f"| {kind} | {value} | {_cell(share)} |")
    return "\n".join(lines)


def pauses(summary: dict[str, Any], default: float) -> str:
    lines = ["| digit pause | exactly right | ended before the last group (all / with 2+ groups) "
             "| wait after the last group p50 / p95 |", "|---|---|---|---|"]
    for pause, row in summary["pauses"].items():
        mark = " (default)" if float(pause) == default else ""
        wait = row["wait_s"]
        lines.append(f"| {pause} s{mark} | {_cell(row['exact'])} | {_cell(row['premature'])} / "
                     f"{_cell(row['premature_multi_group'])} | {wait['p50']} / {wait['p95']} s |")
    return "\n".join(lines)


def table(report: dict[str, Any]) -> str:
    s, settings = report["summary"], report["settings"]
    default = settings["digit_pause_s"]
    return "\n\n".join([
        f"exactly right (gather, digits grammar, digit pause {default} s): {_cell(s['exact'])}"
        f" — goal {settings['goal_exact_pct']} %",
        f"against a persona's grammar (phrases, fillers, digits): {_cell(s['persona_grammar'])}",
        pauses(s, default),
        breakdown(s),
        f"recognition: {s['recognise_rtf']} s per second of audio",
    ])


def markdown(report: dict[str, Any]) -> str:
    s, settings, m = report["summary"], report["settings"], report["machine"]
    default = settings["digit_pause_s"]
    met = "met" if (s["exact"]["pct"] or 0) >= settings["goal_exact_pct"] else "**not met**"
    return f"""{DOC_BEGIN}
## Spoken numbers (bench/digits.py)

`{report["command"]}` — {report["date"]}, code {report["code"]}.
Machine: {m["cpu"]}, {m["cores"]} cores, {m["ram_gib"]} GiB, Linux {m["kernel"]}, Python {m["python"]};
espeak-ng {m["espeak-ng"]}, pocketsphinx {m["pocketsphinx"]}, PyAV {m["av"]}. Raw results:
`{report.get("json_path", "")}`.

A corpus of {settings["count"]} numbers (seed {settings["seed"]}) of 3–10 digits, read in groups of 2–4
digits with 0.4–1.2 s between groups by espeak-ng (voices en-us, en-gb, en-us+f3, en-gb-x-rp+f4,
en-029, en-gb-scotland; 130, 160 and 190 words a minute; zero said as "oh" in some), over a
-60 dBFS line hiss, each through PCMU (the box's μ-law path, 8 kHz) and G.722 (ffmpeg's) and
back: {s["exact"]["n"]} calls. Each is heard as a flow's gather with `spoken_digits` hears it: the
real recogniser (pocketsphinx, digits-only grammar, fed {settings["listen_chunk_s"]} s at a time) and the
real flow engine, its timers on the audio's own time.

**Numbers taken exactly right: {_cell(s["exact"])}** with the default digit pause of {default} s —
goal ≥ {settings["goal_exact_pct"]} %, {met}. Heard against a persona's grammar instead (the order
desk's phrases, fillers and digits, as before its `expects: number`): {_cell(s["persona_grammar"])}.

{pauses(s, default)}

"Ended before the last group": the gather took the number before the caller had finished it
(the premature end of turn of issue 15). "Wait": from the end of the last group's speech to the
number being taken (the endpointer's ~0.4 s, then the pause).

{breakdown(s)}

Recognition (endpointer and decoder, digits grammar) costs {s["recognise_rtf"]} s of one core per
second of the caller's audio.

How it got here, on the tuning corpus (seed 99, 48 numbers × 2 codecs, the same kind of audio):
the flow's listener fed the decoder 100 ms at a time, 2 % exactly right (and a pooled decoder
fed that way heard worse ever after, whole utterances too); each utterance decoded whole, 12 %
(16 % with the decoder's faint dither against espeak-ng's exact zeros); with a word insertion
penalty of 1e-4 for the digits grammar (most errors were extra short digits at a word's edge),
37 %. Wider beams, best-path rescoring, other language weights,
phone insertion penalties and pronunciations without the first fricative ("ive" for five) did
not do better; decoding each group cut at its known start and end did not either.

What limits it: pocketsphinx's only shipped acoustic model (16 kHz, trained on human speech)
hears espeak-ng's formant voices poorly. Through G.722 most misses are "five" heard as "nine",
"nine" as "one", "four" as "oh" and "seven" as "three one"; through PCMU, which cuts everything
above 3.4 kHz, espeak-ng's /s/ (centred near 4.3 kHz) is gone and "six" and "seven" are almost
never heard. Long numbers suffer most, one miss in ten digits spoils the number; a persona that
reads numbers back (`numbers.read_back`) lets the caller catch it. The corpus is synthetic (no human callers, accents,
background noise, packet loss or jitter); the persona's endpointing uses the same rule
(`appliance/personas/turns.py`, livekit's max_delay) but its segmentation is silero's, which
this benchmark does not run (tests/personas/test_session_numbers.py runs it on real audio).
{DOC_END}
"""


def write_doc(report: dict[str, Any]) -> None:
    write_doc_section(markdown(report), DOC_BEGIN, DOC_END)
