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


def ceilings(ceiling: dict[str, Any]) -> str:
    digits = sorted(next(iter(ceiling["digits"].values()))["by_digit_pct"])
    lines = ["| grammar | codec | digits right, said alone | numbers exactly right at that rate | "
             + " | ".join(digits) + " |", "|---|---|---|---|" + "---|" * len(digits)]
    names = {"digits": "digits (a gather's)", "one_digit": "exactly one digit"}
    for grammar, codecs in ceiling.items():
        for codec, row in codecs.items():
            lines.append(f"| {names[grammar]} | {codec} | {_cell(row['digits_right'])} | "
                         f"{row['numbers_expected_pct']} % | "
                         + " | ".join(f"{row['by_digit_pct'][d]:g}" for d in digits) + " |")
    return "\n".join(lines)


def table(report: dict[str, Any]) -> str:
    s, settings = report["summary"], report["settings"]
    default = settings["digit_pause_s"]
    return "\n\n".join([
        f"exactly right (gather, digits grammar, digit pause {default} s): {_cell(s['exact'])}"
        f" — goal {settings['goal_exact_pct']} %",
        f"against a persona's grammar (phrases, fillers, digits): {_cell(s['persona_grammar'])}",
        human_line(report),
        pauses(s, default),
        breakdown(s),
        ceilings(report["ceiling"]),
        f"recognition: {s['recognise_rtf']} s per second of audio",
    ])


def human_line(report: dict[str, Any]) -> str:
    h = report["human_voices"]["summary"]
    codecs = ", ".join(f"{codec} {_cell(share)}" for codec, share in h["by"]["codec"].items())
    return f"said by flite's voices (from human recordings): {_cell(h['exact'])} ({codecs})"


def human_breakdown(report: dict[str, Any]) -> str:
    h = report["human_voices"]["summary"]
    lines = ["| by | value | exactly right |", "|---|---|---|"]
    for kind in ("codec", "voice"):
        for value, share in h["by"][kind].items():
            lines.append(f"| {kind} | {value} | {_cell(share)} |")
    return "\n".join(lines)


def markdown(report: dict[str, Any]) -> str:
    s, settings, m = report["summary"], report["settings"], report["machine"]
    alone = {codec: row["digits_right"]["pct"] for codec, row in report["ceiling"]["one_digit"].items()}
    gather = report["ceiling"]["digits"]
    default = settings["digit_pause_s"]
    met = "met" if (s["exact"]["pct"] or 0) >= settings["goal_exact_pct"] else "**not met**"
    return f"""{DOC_BEGIN}
## Spoken numbers (bench/digits.py)

`{report["command"]}` — {report["date"]}, code {report["code"]}.
Machine: {m["cpu"]}, {m["cores"]} cores, {m["ram_gib"]} GiB, Linux {m["kernel"]}, Python {m["python"]};
espeak-ng {m["espeak-ng"]}, flite {m["flite"]}, pocketsphinx {m["pocketsphinx"]}, PyAV {m["av"]}. Raw results:
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

The recogniser's ceiling, measured in the same run: each digit word said alone (zero to nine, in
every voice and rate above, through each codec: 180 a codec), heard against the gather's digits
grammar and against a grammar of exactly one digit.

{ceilings(report["ceiling"])}

"Numbers exactly right at that rate": the corpus's numbers, each digit taken as right as often as
that digit is when said alone through that codec, the digits independent. With exactly one digit
allowed, none can be inserted or dropped: what is still wrong is the acoustic model's alone. A
number is right only if all its digits are; for 95 % of 10-digit numbers each digit must be heard
right 99.5 % of the time, and alone, with nothing to confuse it, {alone.get("g722")} % of digits
through G.722 and {alone.get("pcmu")} % through PCMU are. Against the gather's grammar a digit can
also be inserted or dropped, and its rate alone predicts the grouped numbers' figures above
(G.722 {gather["g722"]["numbers_expected_pct"]} % predicted, {_cell(s["by"]["codec"]["g722"])} measured;
PCMU {gather["pcmu"]["numbers_expected_pct"]} %, {_cell(s["by"]["codec"]["pcmu"])}): the misses are
the digits' own, not the grouping's or the pauses'. A digit said alone also passes the
endpointer, whose start decides what the decoder gets: with WebRTC VAD's most aggressive mode
(3, until 2026-12-01) the soft /s/ of "six" and "seven" in flite's voices was taken for silence and
the utterance began after it; mode 2 (now) took the flite corpus from 75.0 / 53.1 % to
90.6 / 63.5 % (G.722 / PCMU) and espeak-ng's from 38.5 / 8.3 % to 38.5 / 11.5 %, with no more false
starts on white or brown line noise up to -27 dBFS (modes 1 and 0 took brown noise at that level
for speech). Padding the utterance with 0.06–0.3 s of the audio before its start did worse on
both corpora.

**The same numbers said by voices built from recordings of human speakers** (Debian's flite:
slt, awb, rms, kal16; the same groups, pauses, rates, line and codecs; flite's own ~0.2 s
lead-in and 0.1 s tail stay in each group): {_cell(report["human_voices"]["summary"]["exact"])} exactly right.
Not the goal's corpus; it shows how far the recogniser's misses above are espeak-ng's formant
voices, which its model (trained on human speech) was never meant to hear.

{human_breakdown(report)}

How it got here, on the tuning corpus (seed 99, 48 numbers × 2 codecs, the same kind of audio):
the flow's listener fed the decoder 100 ms at a time, 2 % exactly right (and a pooled decoder
fed that way heard worse ever after, whole utterances too); each utterance decoded whole, 12 %
(16 % with the decoder's faint dither against espeak-ng's exact zeros); with a word insertion
penalty of 1e-4 for the digits grammar (most errors were extra short digits at a word's edge),
37 %. Wider beams, best-path rescoring, other language weights,
phone insertion penalties and pronunciations without the first fricative ("ive" for five) did
not do better; decoding each group cut at its known start and end did not either.

Tried next (same tuning corpus, each utterance the endpointer cut replayed through other decoder
settings, 36.5 % exactly right as they are; pocketsphinx reads the model's feat.params over the
config's front-end keys, so those were changed through a feat.params of its own): PCMU decoded at
8 kHz (`samprate 8000`, `nfft 256`, `upperf` 3500, 3800 or 4000; pocketsphinx's way to hear
narrowband audio with a wideband model), 0–4 % of PCMU numbers right instead of 17 %: the model's
25 mel filters span 130–6800 Hz, and squeezed below 4 kHz every cepstral coefficient moves away from
what the model learnt; both codecs through `upperf` 3800 at 16 kHz, 0 %; spectral folding of PCMU
into its empty 4–8 kHz band (gain 0.1–1), 10–12 % of PCMU; `remove_noise` off 34 %, `agc max` 6 %,
no dither 34 %; vocal-tract warps 0.88–1.12 32–35 %, and the best-scoring of 3 or 5 warps per
utterance 36.5 % (the unwarped one always scored best); `topn` 8 34 %, `silprob` 0.1 33 %, `fillprob`
0.01 36.5 %; 0.05–0.3 s more audio before and 0.05–1 s after each utterance, 24–35 %; the lattice's
n-best strings (the best, or summed over 10–30 paths), 26–33 %; word insertion penalty 1e-3 33 %,
1e-5 29 %; the grammar as `<d> <d>*` 35 %; a second decode against exactly one digit when nothing
was heard 36.5 %; beams of 1e-80 37.5 % (one number more: within what any small change moves).
None was kept. What is left to
try needs another acoustic model: an 8 kHz one for PCMU, or one adapted to the line (MLLR from
real callers' speech, which this box has none of; adapting it to espeak-ng's voices would tune it to
the benchmark, not to callers).

What limits it: pocketsphinx's only shipped acoustic model (16 kHz, trained on human speech)
hears espeak-ng's formant voices poorly. Through G.722 most misses are "five" heard as "nine",
"nine" as "one", "four" as "oh" and "seven" as "three one"; through PCMU, which cuts everything
above 3.4 kHz, most of /s/ is gone (espeak-ng's is centred near 4.3 kHz). What is left of it the
model heard as /f/, if at all: since 2026-12-01 the digits grammar also takes "six" and "seven"
said with /f/ (`PRONUNCIATIONS` in appliance/speech/stt.py; PCMU numbers exactly right 11.5 →
22.9 % here, flite's 63.5 → 72.9 %, G.722 unchanged), and "six" is still the digit PCMU loses most.
Long numbers suffer most, one miss in ten digits spoils the number; a persona that
reads numbers back (`numbers.read_back`) lets the caller catch it. The corpus is synthetic (no human callers, accents,
background noise, packet loss or jitter); the persona's endpointing uses the same rule
(`appliance/personas/turns.py`, livekit's max_delay) but its segmentation is silero's, which
this benchmark does not run (tests/personas/test_session_numbers.py runs it on real audio).
{DOC_END}
"""


def write_doc(report: dict[str, Any]) -> None:
    write_doc_section(markdown(report), DOC_BEGIN, DOC_END)
