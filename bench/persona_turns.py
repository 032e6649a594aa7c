"""Persona turns against callers who pause inside a sentence: how long the caller waits for the
answer AND how often the answer starts inside their sentence, for the old end of turn and the
new one, in the same run on the same corpus.

- old: `personas.endpointing_s` 0.25 and every turn ends at the VAD's end of speech (the
  persona's `turns.incomplete_pause` 0; numbers still wait `numbers.pause`);
- new: the appliance's defaults: a short `endpointing_s`, and words that are not a whole
  request held open `turns.incomplete_pause` (appliance/personas/turns.py).

The appliance runs the order desk (flows/orders.yaml, number 300, its lookup_order tool on a
loopback order API; its intents that end or hand on the call left out, so that a misheard
request cannot cut the measured call short); baresip callers alternate a request from tests/support/spoken_requests.py
(espeak-ng, six voices, three rates, 0.3-0.8 s pauses where the words so far are not a whole
request) with the order number it then asks for ("one two three four"), one utterance every
10 s. From baresip's dumps: a request's latency is the end of its last word to the first reply
sound; a reply whose first sound comes before that end started inside the caller's sentence.
Number turns wait `numbers.pause` (2 s) by design and are reported apart.

    python bench/persona_turns.py          # each setting: 4 calls one after another, then 16 at once (~25 min)
    python bench/persona_turns.py --quick  # each setting: 1 call, then 2 at once: checks the benchmark (~5 min)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `python bench/persona_turns.py` puts bench/ first, not the repo

import numpy as np
import yaml

from appliance.config import PersonasConfig
from appliance.flow.persona import Turns
from bench.common import code_version, log_warnings, machine, save_results, say, wait_closed
from bench.persona_turns_report import tables, verdict, write_doc
from bench.personas import (
    CallRun,
    _baresip_version,
    add_run_options,
    check_run_options,
    energy,
    loud_at,
    match_record,
    onset_after,
    place_calls,
    sound_runs,
    stats,
    wait_quiet,
    wav_channel,
    write_microphone,
)
from bench.personas_plan import FIRST_AT_S, FRAME_S, NUMBER, RATE
from tests.support.appliance import ApplianceProcess
from tests.support.http_server import LoopbackServer
from tests.support.orders_api import OrdersApi
from tests.support.spoken_numbers import LEAD_S, say_phrases
from tests.support.spoken_requests import SpokenRequest, corpus

NUMBER_ANSWER = "one two three four"
# One utterance every 10 s: the slowest number (2.2 s), its 2 s wait and the longest reply
# (3.1 s) end well before the next; at bench/personas.py's 8 s they did not, with slow voices.
PERIOD_S = 10.0
LEAVING_INTENTS = ("human", "billing", "done")  # flows/personas/orders.yaml's escalate, handoff, end_call
# Quiet shorter than this is inside one utterance: longer than any pause of the corpus (0.8 s,
# with espeak-ng's own pause at a full stop), far shorter than the silence between utterances.
JOIN_GAP_S = 1.3

SETTINGS: dict[str, dict[str, float]] = {
    "old": {"endpointing_s": 0.25, "incomplete_pause": 0.0},
    "new": {"endpointing_s": PersonasConfig().endpointing_s, "incomplete_pause": Turns().incomplete_pause},
}


@dataclass
class Utterance:
    kind: str  # "request" | "number"
    text: str
    voice: str
    rate: int
    pauses: tuple[float, ...] = ()


@dataclass
class TurnResult:
    call: str
    index: int
    kind: str
    said: str
    voice: str
    rate: int
    pauses: tuple[float, ...]
    end_s: float | None = None  # the utterance's last word ends, in the sent dump
    reply_after_end_s: float | None = None  # first reply sound minus that end (negative: inside the sentence)
    problem: str = ""

    @property
    def into_sentence(self) -> bool:
        return self.reply_after_end_s is not None and self.reply_after_end_s < 0


@dataclass
class StepResult:
    setting: str
    concurrent: int
    calls: int
    turns_per_call: int
    requests: dict[str, Any] = field(default_factory=dict)
    numbers: dict[str, Any] = field(default_factory=dict)
    meter: dict[str, Any] = field(default_factory=dict)
    other_load_before_pct: float | None = None
    problems: list[str] = field(default_factory=list)
    heard: list[dict[str, Any]] = field(default_factory=list)  # what pocketsphinx made of each call
    turns: list[dict[str, Any]] = field(default_factory=list)


def microphone(path: Path, requests: list[SpokenRequest], turns: int) -> list[Utterance]:
    """The caller's side: a request, then the order number in the request's voice, and so on,
    one utterance every PERIOD_S from FIRST_AT_S; silence that outlasts the call after."""
    pcm = np.zeros(int((FIRST_AT_S + turns * PERIOD_S + 15) * RATE), dtype=np.int16)
    script = []
    for k in range(turns):
        request = requests[k // 2]
        if k % 2 == 0:
            audio, utterance = request.audio(), Utterance("request", request.text, request.voice, request.rate,
                                                          request.pauses)
        else:
            audio = say_phrases([NUMBER_ANSWER], (), request.voice, request.rate)
            utterance = Utterance("number", NUMBER_ANSWER, request.voice, request.rate)
        start = int((FIRST_AT_S + k * PERIOD_S - LEAD_S) * RATE)  # the speech itself starts on the slot
        audio = audio[: int(PERIOD_S * RATE)]
        pcm[start : start + len(audio)] = audio
        script.append(utterance)
    write_microphone(path, pcm.tobytes())
    return script


def analyse_call(run: CallRun, record: dict[str, Any], script: list[Utterance]) -> tuple[list[TurnResult], list[str]]:
    """Each utterance's end and the first reply sound after its start, from baresip's dumps."""
    result = run.result
    if result is None or not result.established or result.sent is None or result.heard is None:
        return [], ["baresip did not establish the call or wrote no dumps"]
    sent, heard = wav_channel(result.sent), wav_channel(result.heard)
    # Both dumps end at the hang-up; the heard one starts later by baresip's jitter buffer.
    shift = len(sent) / RATE - len(heard) / RATE
    sent_rms, heard_rms = energy(sent), energy(heard)
    heard_rms = np.concatenate([np.zeros(max(0, round(shift / FRAME_S))), heard_rms])
    utterances = sound_runs(sent_rms, min_s=0.3, gap_s=JOIN_GAP_S)
    if len(utterances) != len(script):
        return [], [f"{len(utterances)} utterances in the sent dump, {len(script)} in the script"]
    turns = []
    for i, ((start, end), said) in enumerate(zip(utterances, script, strict=True)):
        turn = TurnResult(call=record["id"], index=i, kind=said.kind, said=said.text, voice=said.voice,
                          rate=said.rate, pauses=said.pauses, end_s=round(end, 3))
        turns.append(turn)
        until = utterances[i + 1][0] if i + 1 < len(utterances) else len(sent_rms) * FRAME_S
        if loud_at(heard_rms, start - 0.45, width_s=0.5):  # heard in the second before the caller began
            turn.problem = "the persona was still talking when the caller began"
            continue
        heard_at = onset_after(heard_rms, start + 0.05, until)
        if heard_at is None:
            turn.problem = "no reply before the next utterance"
            continue
        turn.reply_after_end_s = round(heard_at - end, 3)
    return turns, []


def summarise(turns: list[TurnResult], kind: str) -> dict[str, Any]:
    mine = [t for t in turns if t.kind == kind]
    judged = [t for t in mine if t.reply_after_end_s is not None]
    into = [t for t in judged if t.into_sentence]
    after = [t.reply_after_end_s for t in judged if not t.into_sentence]
    return {
        **stats(after),  # type: ignore[arg-type]
        "turns": len(mine),
        "judged": len(judged),
        "into_sentence": len(into),
        "into_sentence_pct": round(100 * len(into) / len(judged), 1) if judged else None,
        "into_sentence_examples": [f"{t.said!r} {t.voice} {t.rate} pauses {list(t.pauses)}" for t in into[:6]],
        "not_measured": sorted({t.problem for t in mine if t.reply_after_end_s is None}),
    }


def run_step(app: ApplianceProcess, setting: str, concurrent: int, calls: int, turns: int, workdir: Path,
             seen: set[str], args: argparse.Namespace) -> StepResult:
    step = StepResult(setting=setting, concurrent=concurrent, calls=calls, turns_per_call=turns)
    step.other_load_before_pct = wait_quiet(app, args.quiet, args.quiet_wait)
    requests = corpus(calls * ((turns + 1) // 2), seed=args.seed)
    per_call = (turns + 1) // 2
    seconds = FIRST_AT_S + turns * PERIOD_S
    results: list[TurnResult] = []
    meters = []
    for first in range(0, calls, concurrent):
        runs, scripts = [], {}
        for k in range(first, min(calls, first + concurrent)):
            run_dir = workdir / f"call{k + 1}"
            run_dir.mkdir(parents=True)
            script = microphone(run_dir / "microphone.wav", requests[k * per_call : (k + 1) * per_call], turns)
            run = CallRun(k, run_dir, [u.text for u in script], seconds)
            runs.append(run)
            scripts[k] = script
        meters.append(place_calls(app, runs, seconds))
        records = wait_closed(app, seen, len(runs), timeout=40)
        seen.update(r["id"] for r in records)
        for run in runs:
            record = match_record(records, run)
            if record is None:
                step.problems.append(f"call {run.index + 1}: no call record")
                continue
            detail = app.call(record["id"])
            turns_, problems = analyse_call(run, detail, scripts[run.index])
            step.problems.extend(f"call {run.index + 1}: {p}" for p in problems)
            step.heard.append({"call": record["id"], "end_reason": detail.get("end_reason"),
                               "transcript": [(t["role"], t["text"]) for t in detail.get("transcript", [])]})
            results.extend(turns_)
    step.requests = summarise(results, "request")
    step.numbers = summarise(results, "number")
    step.meter = {key: round(float(np.mean([m[key] for m in meters])), 1)
                  for key in ("box_busy_pct", "other_load_pct")} | {
        "cpu_pct": {role: round(float(np.mean([m["cpu_pct"].get(role, 0.0) for m in meters])), 1)
                    for role in {r for m in meters for r in m["cpu_pct"]}}}
    step.turns = [asdict(t) for t in results]
    return step


def run_setting(name: str, api: LoopbackServer, root: Path, args: argparse.Namespace) -> list[StepResult]:
    """One appliance with the setting, every step on it."""
    setting = SETTINGS[name]
    flows = root / "flows"
    shutil.copytree(ROOT / "flows", flows)
    persona_file = flows / "personas" / "orders.yaml"
    persona = yaml.safe_load(persona_file.read_text())
    persona["tools"][0]["url"] = persona["tools"][0]["url"].replace("127.0.0.1:8765", f"127.0.0.1:{api.port}")
    persona["turns"] = {"incomplete_pause": setting["incomplete_pause"]}
    # A misheard request may match an intent that ends the call or hands it on ("order" heard
    # as "all would that": "that is all"); the rest of the call would go unmeasured. Here the
    # persona only checks orders: a misheard request gets the fallback, as any other.
    for intent in LEAVING_INTENTS:
        persona["scripted"]["intents"].pop(intent, None)
    persona_file.write_text(yaml.safe_dump(persona, sort_keys=False))
    (root / "appliance").mkdir()
    app = ApplianceProcess(
        root / "appliance", workers=args.sip_workers, calls_per_worker=4, numbers={NUMBER: "orders"},
        flows_dir=flows,
        extra={"webhooks": {"allowed": [f"http://127.0.0.1:{api.port}/", "http://127.0.0.1:8765/"]},
               "personas": {"workers": args.persona_workers, "sessions_per_worker": args.sessions_per_worker,
                            "endpointing_s": setting["endpointing_s"]}},
    )
    steps = []
    try:
        say(f"{name}: starting the appliance in {root} ({setting})")
        app.start(timeout=60)
        seen: set[str] = set()
        for n in args.steps:
            calls, turns = (args.calls, args.turns) if n == 1 else (n, args.turns_concurrent)
            say(f"{name}: {calls} call(s) of {turns} turns, {n} at a time")
            step = run_step(app, name, n, calls, turns, root / f"step{n}", seen, args)
            r = step.requests
            say(f"  requests: latency p50={r.get('p50_ms')} p95={r.get('p95_ms')} ms (n={r.get('n')}); "
                f"replies into the sentence {r['into_sentence']} of {r['judged']}; "
                f"numbers p50={step.numbers.get('p50_ms')} ms; {'; '.join(step.problems)[:300]}")
            steps.append(step)
    finally:
        app.stop()
        warnings = log_warnings(app.log_path)
        if warnings:
            say(f"{name}: log warnings {json.dumps(warnings)[:500]}")
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return steps


def run(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "python bench/persona_turns.py " + " ".join(args.argv),
        "machine": machine({"baresip": _baresip_version()}),
        "code": code_version(("appliance", "sip", "flows")),
        "settings": {"old": SETTINGS["old"], "new": SETTINGS["new"], "persona_workers": args.persona_workers,
                     "sessions_per_worker": args.sessions_per_worker, "steps": args.steps, "calls": args.calls,
                     "turns": args.turns, "turns_concurrent": args.turns_concurrent, "seed": args.seed,
                     "period_s": PERIOD_S, "number_answer": NUMBER_ANSWER},
        "steps": [],
    }
    with OrdersApi().http.in_thread() as api:
        for name in args.settings:
            root = Path(tempfile.mkdtemp(prefix=f"sb-bench-turns-{name}-"))
            report["steps"] += [asdict(s) for s in run_setting(name, api, root, args)]
    return report


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python bench/persona_turns.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=lambda s: [int(x) for x in s.split(",") if x.strip()],
                        help="concurrent calls per step, comma-separated (default 1,16)")
    parser.add_argument("--settings", type=lambda s: [x for x in s.split(",") if x.strip()],
                        default=list(SETTINGS), help="which end-of-turn settings to run (default old,new)")
    parser.add_argument("--calls", type=int, help="calls one after another in the step of 1 (default 4)")
    parser.add_argument("--turns", type=int, help="turns per call in the step of 1, half of them requests (default 12)")
    parser.add_argument("--turns-concurrent", type=int, help="turns per call in the later steps (default 8)")
    parser.add_argument("--seed", type=int, default=15, help="the corpus's pauses (default 15)")
    parser.add_argument("--quick", action="store_true", help="1 call of 6 turns, then 2 at once: checks the benchmark")
    add_run_options(parser)
    args = parser.parse_args(argv)
    args.argv = argv
    unknown = set(args.settings) - set(SETTINGS)
    if unknown:
        parser.error(f"unknown settings {sorted(unknown)}; known: {', '.join(SETTINGS)}")
    args.steps = args.steps or ([1, 2] if args.quick else [1, 16])
    args.calls = args.calls or (1 if args.quick else 4)
    args.turns = args.turns or (6 if args.quick else 12)
    args.turns_concurrent = args.turns_concurrent or (4 if args.quick else 8)
    check_run_options(parser, args)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    for program in ("baresip", "kamailio", "espeak-ng"):
        if shutil.which(program) is None:
            print(f"bench/persona_turns.py needs {program} (scripts/test.sh installs it)", file=sys.stderr)
            return 2
    report = run(args)
    tag = f"{'-quick' if args.quick else ''}{'-' + args.tag if args.tag else ''}"
    path = save_results(report, "persona_turns", tag)
    print()
    print(tables(report))
    print(f"raw results: {path}")
    print()
    print(verdict(report))
    if not args.no_doc:
        write_doc(report)
        print("wrote docs/BENCHMARKS.md")
    return 0 if any(s["requests"].get("n") for s in report["steps"]) else 1


if __name__ == "__main__":
    sys.exit(main())
