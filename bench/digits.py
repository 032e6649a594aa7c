"""The spoken-numbers benchmark: how often a number read out in groups is taken exactly right,
and how often the pause inside it is taken for its end.

Builds a corpus (tests/support/spoken_numbers.py): numbers of 3–10 digits, grouped 2–4 digits
at a time with 0.4–1.2 s between groups, said by espeak-ng in six voices at three rates, with a
faint line hiss, each through PCMU (the box's μ-law path) and G.722 (ffmpeg's, via PyAV) and
back. Each is heard as a flow's gather hears it: the real recogniser (pocketsphinx, the digits
grammar, 100 ms at a time) and the real flow engine, timers run on the audio's own time, so the
endpointing decision is the product's. Reported: numbers taken exactly right, overall and by
codec, voice, rate and length, and the same numbers said by flite's voices, which are built
from recordings of human speakers; numbers taken before their last group ended (premature end of
turn) and the wait after the last group, for several digit pauses (the recognition is the same
for each, the engine is replayed); for comparison, the same audio heard against a
persona's grammar (its phrases, fillers and digits) as the order desk heard it before its
`expects: number`; and the recogniser's ceiling: every digit word said alone (each voice, rate
and codec), heard against the digits grammar and against a grammar of exactly one digit, and
the share of the corpus's numbers that would be exactly right if each of their digits were
heard as well as it is alone.

Writes raw results to bench/results/ and its section of docs/BENCHMARKS.md.

    python bench/digits.py                 # 96 numbers × 2 codecs (about 2 minutes)
    python bench/digits.py --quick         # 12 numbers: checks the benchmark
    python bench/digits.py --count 192 --seed 7
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import re
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `python bench/digits.py` puts bench/ first, not the repo

from appliance.flow import intents
from appliance.flow.loader import load_personas
from appliance.personas.persona import grammar_for_persona
from appliance.personas.plugins.llm_scripted import said_digits
from bench.common import DOC, code_version, first_line, machine, pct, save_and_print, say
from bench.digits_report import table, write_doc
from tests.support.spoken_numbers import (
    CODECS,
    HUMAN_VOICES,
    LISTEN_CHUNK_S,
    RATES,
    VOICES,
    SpokenNumber,
    corpus,
    gather,
    last_group_end,
    line_audio,
    line_speech,
    listen,
)

GOAL_EXACT_PCT = 95.0  # issue 15
DIGIT_PAUSE_S = 2.0  # the gather's and the persona's default (schema.Gather, persona.Numbers)
PAUSES_S = (0.5, 1.0, 1.5, 2.0, 2.5)
SEED = 15  # the decoder's digit settings were tuned on seed 99: this corpus is not the one they saw


def hear(number: SpokenNumber, codec: str, digits: str, persona: str) -> dict[str, Any]:
    audio = line_audio(number, codec)
    seconds = len(audio) / 32000
    started = time.perf_counter()
    heard = listen(audio, digits)
    decode_s = time.perf_counter() - started
    end = last_group_end(number)
    taken = {}
    for pause in PAUSES_S:
        value, at = gather(heard, seconds, pause)
        taken[str(pause)] = {"value": value, "at": at, "exact": value == number.digits,
                             "premature": at is not None and at < end,
                             "wait_s": None if at is None else round(at - end, 2)}
    persona_words = " ".join(h.text for h in listen(audio, persona) if h.text)
    return {
        "digits": number.digits, "groups": list(number.groups), "pauses": list(number.pauses),
        "voice": number.voice, "rate": number.rate, "codec": codec, "length": len(number.digits),
        "heard": [h.text for h in heard if h.text is not None], "last_group_end_s": round(end, 2),
        "audio_s": round(seconds, 2), "recognise_s": round(decode_s, 3),
        "gather": taken, "persona_grammar": {"heard": persona_words,
                                             "exact": said_digits(persona_words) == number.digits},
    }


# One digit and nothing else: no digit can be inserted or dropped, only mistaken for another, so
# what it gets wrong is the acoustic model's alone. Named `digits` for the same decoder settings.
ONE_DIGIT = ("#JSGF V1.0;\ngrammar digits;\npublic <digit> = ( "
             + " | ".join(sorted(intents.DIGIT_WORDS)) + " ) ;\n")
DIGIT_NAMES = {digit: word for word, digit in intents.DIGIT_WORDS.items() if word != "oh"}


def hear_alone(digits: str) -> list[dict[str, Any]]:
    """Every digit word said alone, in every voice, rate and codec, heard against the digits
    grammar (as a gather hears it) and against exactly one digit."""
    rows = []
    for codec in CODECS:
        for voice in VOICES:
            for rate in RATES:
                for digit, word in sorted(DIGIT_NAMES.items()):
                    audio = line_speech(word, codec, voice, rate)
                    row: dict[str, Any] = {"digit": digit, "codec": codec, "voice": voice, "rate": rate}
                    for name, grammar in (("digits", digits), ("one_digit", ONE_DIGIT)):
                        heard = " ".join(h.text for h in listen(audio, grammar) if h.text)
                        row[name] = {"heard": heard, "right": intents.spoken_digits(heard) == digit}
                    rows.append(row)
    return rows


def ceiling(alone: list[dict[str, Any]], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per grammar and codec: the share of digits heard right alone, and the share of the
    corpus's numbers that would be exactly right if each of their digits were heard right as
    often as that digit is alone through that codec (over all voices and rates), independently."""
    out: dict[str, Any] = {}
    for grammar in ("digits", "one_digit"):
        by_codec = {}
        for codec in CODECS:
            said = [a for a in alone if a["codec"] == codec]
            right = {d: sum(a[grammar]["right"] for a in said if a["digit"] == d) / sum(a["digit"] == d for a in said)
                     for d in DIGIT_NAMES}
            expected = [float(np.prod([right[d] for d in r["digits"]])) for r in rows if r["codec"] == codec]
            by_codec[codec] = {"digits_right": _share(said, lambda a, g=grammar: a[g]["right"]),
                               "by_digit_pct": {d: round(100 * p, 1) for d, p in sorted(right.items())},
                               "numbers_expected_pct": round(100 * sum(expected) / len(expected), 1)}
        out[grammar] = by_codec
    return out


def _share(rows: list[dict[str, Any]], ok: Any) -> dict[str, Any]:
    good = sum(1 for r in rows if ok(r))
    return {"n": len(rows), "ok": good, "pct": round(100 * good / len(rows), 1) if rows else None}


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    key = str(DIGIT_PAUSE_S)

    def exact(r: dict[str, Any]) -> bool:
        return bool(r["gather"][key]["exact"])

    kinds = ("codec", "voice", "rate", "length")
    by: dict[str, dict[Any, list[dict[str, Any]]]] = {k: defaultdict(list) for k in kinds}
    for r in rows:
        for k in by:
            by[k][r[k]].append(r)
    sweep = {}
    for pause in PAUSES_S:
        taken = [r["gather"][str(pause)] for r in rows]
        waits = [t["wait_s"] for t in taken if t["wait_s"] is not None and not t["premature"]]
        multi = [t for t, r in zip(taken, rows, strict=True) if len(r["groups"]) > 1]
        sweep[str(pause)] = {
            "exact": _share(taken, lambda t: t["exact"]),
            "premature": _share(taken, lambda t: t["premature"]),
            "premature_multi_group": _share(multi, lambda t: t["premature"]),
            "wait_s": {"p50": pct(waits, 0.5, 2), "p95": pct(waits, 0.95, 2)},
        }
    return {
        "exact": _share(rows, exact),
        "by": {k: {str(v): _share(group, exact) for v, group in sorted(groups.items())} for k, groups in by.items()},
        "pauses": sweep,
        "persona_grammar": _share(rows, lambda r: r["persona_grammar"]["exact"]),
        "recognise_rtf": round(sum(r["recognise_s"] for r in rows) / sum(r["audio_s"] for r in rows), 4),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    started_at = dt.datetime.now().astimezone()
    digits = intents.grammar({}, digits=True)
    orders = load_personas(ROOT / "flows" / "personas")["orders"]
    persona = grammar_for_persona(orders)
    assert persona is not None
    rows = hear_corpus(corpus(args.count, args.seed), digits, persona)
    say("each digit alone, every voice, rate and codec")
    alone = hear_alone(digits)
    say("the same numbers said by voices built from human recordings (flite)")
    human = hear_corpus(corpus(args.count, args.seed, HUMAN_VOICES), digits, persona)
    return {
        "benchmark": "digits",
        "date": started_at.isoformat(timespec="seconds"),
        "command": " ".join(["python bench/digits.py", *args.argv]),
        "machine": machine({"espeak-ng": _espeak_version(), "flite": _flite_version(),
                            "pocketsphinx": _version("pocketsphinx"), "av": _version("av")}),
        "code": code_version(("appliance",)),
        "settings": {"count": args.count, "seed": args.seed, "codecs": list(CODECS), "digit_pause_s": DIGIT_PAUSE_S,
                     "pauses_s": list(PAUSES_S), "listen_chunk_s": LISTEN_CHUNK_S, "goal_exact_pct": GOAL_EXACT_PCT},
        "summary": summarise(rows),
        "ceiling": ceiling(alone, rows),
        "rows": rows,
        "alone": alone,
        "human_voices": {"voices": list(HUMAN_VOICES), "summary": summarise(human), "rows": human},
    }


def hear_corpus(numbers: list[SpokenNumber], digits: str, persona: str) -> list[dict[str, Any]]:
    rows = []
    for i, number in enumerate(numbers):
        for codec in CODECS:
            rows.append(hear(number, codec, digits, persona))
        if (i + 1) % 12 == 0 or i + 1 == len(numbers):
            done = [r for r in rows if r["gather"][str(DIGIT_PAUSE_S)]["exact"]]
            say(f"{i + 1}/{len(numbers)} numbers, {len(done)}/{len(rows)} exactly right so far")
    return rows


def _espeak_version() -> str:
    found = re.search(r"\d+\.\d+(\.\d+)?", first_line(["espeak-ng", "--version"]))
    return found.group(0) if found else "unknown"


def _flite_version() -> str:
    said = subprocess.run(["flite", "--version"], capture_output=True, text=True).stdout
    found = re.search(r"flite-(\d+\.\d+)", said)
    return found.group(1) if found else "unknown"


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python bench/digits.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, help="numbers in the corpus, each heard through every codec (default 96)")
    parser.add_argument("--seed", type=int, default=SEED, help=f"the corpus's random seed (default {SEED})")
    parser.add_argument("--quick", action="store_true", help="12 numbers; no docs/BENCHMARKS.md")
    parser.add_argument("--tag", default="", help="added to the results file's name")
    parser.add_argument("--no-doc", action="store_true", help="do not write docs/BENCHMARKS.md (default in --quick)")
    args = parser.parse_args(argv)
    args.argv = argv
    args.count = args.count or (12 if args.quick else 96)
    if args.quick:
        args.no_doc = True
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    report = run(args)
    tag = ("-quick" if args.quick else "") + (f"-{args.tag}" if args.tag else "")
    save_and_print(report, "digits", tag, table(report))
    if not args.no_doc:
        write_doc(report)
        print(f"wrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
