"""Report writing for bench/personas.py: tables, the analysis and its docs/BENCHMARKS.md section,
from a finished run's report (measuring stays in bench/personas.py)."""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.common import write_doc_section
from bench.personas_plan import (
    CAPACITY_P95_S,
    FIRST_AT_S,
    GOAL_P50_S,
    GOAL_P95_S,
    JITTER_FRAMES,
    LOUD_RMS,
    PHASES,
    SAYS,
    SPEECH_GAP_S,
)

DOC_BEGIN = "<!-- bench/personas.py: begin -->"
DOC_END = "<!-- bench/personas.py: end -->"


# --- the report -----------------------------------------------------------------------------------


def _f(value: Any, suffix: str = "") -> str:
    return "–" if value is None else f"{value}{suffix}"


def _pp(st: dict[str, Any]) -> str:
    return "–" if not st.get("n") else f"{st['p50_ms']} / {st['p95_ms']}"


def latency_table(report: dict[str, Any]) -> str:
    head = ("| concurrent calls | calls × turns | turns measured | **latency p50 / p95 ms** | max ms | "
            "turns with no other session starting or ending on the worker: p50 / p95 (n) | "
            "hub-side p50 / p95 ms | tool turns p50 / p95 | other turns p50 / p95 | result |")
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for s in report["steps"]:
        lat = s["latency"]
        rows.append(
            f"| {s['concurrent']} | {s['calls']} × {s['turns_per_call']} | "
            f"{lat.get('n', 0)} of {lat.get('turns', 0)} | "
            f"**{_pp(lat)}** | {_f(lat.get('max_ms'))} | {_pp(lat.get('with_no_session_starting_or_ending', {}))} "
            f"({lat.get('with_no_session_starting_or_ending', {}).get('n', '–')}) | {_pp(lat['hub'])} | "
            f"{_pp(lat['by_kind']['tool (lookup_order)'])} | {_pp(lat['by_kind']['no tool'])} | "
            f"{'pass' if s['passed'] else 'FAIL: ' + '; '.join(s['problems'])[:160]} |")
    return "\n".join(rows)


def phase_table(report: dict[str, Any]) -> str:
    names = [("inbound_s", "wire → hub"), ("vad_s", "VAD end of speech"), ("stt_s", "STT"),
             ("commit_s", "turn commit"), ("reply_s", "LLM + tool + TTS → hub"), ("outbound_s", "hub → wire")]
    head = "| concurrent calls | " + " | ".join(f"{label} p50 / p95" for _, label in names) + \
        " | speech end → transcript p50 / p95 | transport both ways p50 / p95 | turns |"
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for s in report["steps"]:
        ph = s["phases"]
        rows.append(f"| {s['concurrent']} | " + " | ".join(_pp(ph[key]) for key, _ in names) +
                    f" | {_pp(ph['speech_end_to_transcript_s'])} | {_pp(ph['transport_both_ways_s'])} | "
                    f"{ph['turns_with_every_phase']} |")
    return "\n".join(rows)


def load_table(report: dict[str, Any]) -> str:
    head = ("| concurrent calls | CPU % of a core: persona workers (busiest) | SIP workers | hub (main) | kamailio | "
            "baresip callers | box busy % of 200 | other work % | persona RSS MB before → during (per session) |")
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for s in report["steps"]:
        m = s["meter"]
        cpu, top = m["cpu_pct"], m["cpu_pct_max_process"]
        rows.append(
            f"| {s['concurrent']} | {_f(cpu.get('persona'))} ({_f(top.get('persona'))}) | {_f(cpu.get('sip'))} | "
            f"{_f(cpu.get('main'))} | {_f(cpu.get('kamailio'))} | {_f(cpu.get('baresip'))} | {m['box_busy_pct']} | "
            f"{max(0.0, m['other_load_pct'])} | "
            f"{_f(s['persona_rss_mb_before'])} → {m['rss_kb'].get('persona', 0) / 1024:.0f} "
            f"({_f(s['persona_rss_mb_per_session'])}) |")
    return "\n".join(rows)


def markdown(report: dict[str, Any], analysis: str) -> str:
    m, st, off = report["machine"], report["settings"], report["offline"]
    idle = report["idle"]
    machine = (f"{m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, Linux {m['kernel']}, "
               f"Python {m['python']}, baresip {m['baresip']}")
    last = report["steps"][-1]
    at_least = "at least " if last["passed"] and report["capacity_concurrent_calls"] == last["concurrent"] else ""
    idle_mb = idle["rss_kb"].get("persona", 0) / 1024
    after_mb = report.get("after_rss_kb", {}).get("persona", 0) / 1024
    vad = off["vad"]
    renders = "; ".join(f"\"{k}\" {v['render_ms']} ms for {v['audio_s']} s of audio, "
                        f"leading silence {v['leading_silence_ms']} ms"
                        for k, v in off["tts_render"].items())
    decode = "; ".join(f"\"{k}\" {v} ms" for k, v in off["stt_decode_ms"].items())
    return f"""{DOC_BEGIN}
## Persona voice turns

How long a caller waits for the AI persona's answer, where that time goes, and how many persona
calls the box holds. The appliance runs the order desk (`flows/orders.yaml`, number 300) on the
offline stack: silero VAD, pocketsphinx with the persona's JSGF grammar, the scripted LLM,
espeak-ng; its `lookup_order` tool is an HTTP webhook on a loopback order API. baresip calls it
over G.722 and says "{SAYS[0]}" and "{SAYS[1]}" in turn, one utterance every
{st['period_s']:g} s (the first {FIRST_AT_S:g} s in, after the greeting); the second is answered
through the tool ("Order 1234 is shipped. Is there anything else?"), the first without ("Sure.
What is your order number?").

- Date: {report['date']}
- Machine: {machine}
- Code: {report['code']}
- Command: `{report['command']}`
- Settings: {st['persona_workers']} persona workers × {st['sessions_per_worker']} sessions, \
endpointing_s {st['endpointing_s']}
  (silero's min_silence); {st['sip_workers']} SIP workers; baresip's jitter buffer \
{JITTER_FRAMES[0]}-{JITTER_FRAMES[1]} frames. The first step is {st['sequential_calls']}
  calls of {st['turns_sequential']} turns one after another; each later step is N calls of \
{st['turns_concurrent']} turns at once, their
  starts spread evenly over one {st['period_s']:g} s period so that turns of different calls interleave (so
  early callers hang up while later ones are still talking). Before each step the benchmark waits up to 30 s for
  other work on the box to drop below {st.get('quiet_pct', 30):g}% of a core, and runs a round of calls again (at most
  {st.get('retries', 0)} times in a run) when other work exceeded that during it.
- Raw results: `{report.get('json_path', '')}`

**Turn latency with one call at a time: p50 {_f(report['steps'][0]['latency'].get('p50_ms'))} ms,
p95 {_f(report['steps'][0]['latency'].get('p95_ms'))} ms over {report['steps'][0]['latency'].get('n')} turns**
(goal: p50 ≤ {GOAL_P50_S * 1000:.0f} ms, p95 ≤ {GOAL_P95_S * 1000:.0f} ms).
**Concurrent persona calls before p95 exceeds {CAPACITY_P95_S:g} s: {at_least}{report['capacity_concurrent_calls']}**
(of the steps run: {', '.join(str(s['concurrent']) for s in report['steps'])}; counting only turns with no other
session starting or ending on their worker: {report.get('capacity_without_neighbour_sessions', '–')}).

{latency_table(report)}

Where a turn's time goes (ms; turns in which every mark was found):

{phase_table(report)}

Load during each step:

{load_table(report)}

How the numbers are taken:
- **Latency** (SIP side): baresip's `sndfile` dumps. The end of the caller's speech is the
  last 10 ms frame above {LOUD_RMS:g} RMS (−44 dBFS) of an utterance in the sent dump (quiet under
  {SPEECH_GAP_S:g} s joins words); the reply is the first loud frame after it in the heard dump.
  The two dumps end together at the hang-up but the heard one starts later (baresip writes it
  after its jitter buffer), so it is aligned by its end: the heard sound is taken when baresip
  decoded it, jitter buffer included. A turn is not measured when the persona was still
  talking as the caller stopped, or when nothing was heard before the next utterance.
- **Hub-side latency**: the same in the call's recording, whose left (caller) and right (what
  the caller hears) channels are written on the same hub tick.
- **Phases**, each from the mark before: *wire → hub*, speech end in the recording's left
  channel, put on the wall clock by the call's `answered_at` (the recorder joins then) minus
  the same end in the sent dump, put on the wall clock by the moment baresip printed "Call
  established" (polled every 5 ms); *VAD end of speech*, the session's `caller state`
  `listening` log line (livekit's VAD end of speech, endpointing_s of silence after the speech);
  *STT*, the caller transcript row's `at` in SQLite (pocketsphinx's result reached the hub);
  *turn commit*, the `persona state` `thinking` line (livekit committed the turn and started
  the reply); *LLM + tool + TTS → hub*, the first loud frame of the reply in the recording's
  right channel (scripted LLM, the webhook for the digits, espeak-ng's first sentence, the
  worker → hub socket and the hub's 20 ms tick); *hub → wire*, the reply in the heard dump.
  Both wall-clock anchors are good to a tick (±20 ms); the anchors cancel in *transport both
  ways* (SIP latency minus hub-side latency), which needs none. LLM and TTS are not apart in the
  call; timed alone in this process on the same box: scripted LLM {off['llm_scripted_ms']} ms per step; espeak-ng:
  {renders}; pocketsphinx decoding a whole utterance (0.1 s before and after, as the stream cuts it):
  {decode}; loading its decoder {off['stt_decoder_load_ms']} ms; silero VAD
  {vad['inference_ms_median']} ms per 32 ms window, {vad['cpu_pct_of_a_core_per_stream']}% of a core per stream.
- **Load**: `/proc/PID/stat` CPU over each step's steady window (all calls talking) in % of one
  core (the box has {m['cores']}: {100 * (m['cores'] or 1)}% is all of it); the baresip callers run on the same box
  and are counted apart; "other work" is the rest of the box (other jobs, not ours; `/proc/stat`
  against the processes' own counters, good to about ±10% of a core on this VM). Persona RSS is
  the persona worker processes' RSS summed (median over the window); per session, the first
  round of calls' RSS minus the RSS just before the step, divided by N (idle at start: {idle_mb:.0f} MB for
  {st['persona_workers']} workers; after the last step: {after_mb:.0f} MB). The workers keep memory
  after a session ends (see below), and a later session partly reuses it, so the per-session
  figure of a later step is an underestimate; the first steps' figures are the better ones.

### What limits it

{analysis.strip()}
{DOC_END}
"""


def analyse(report: dict[str, Any]) -> str:
    """A reading of the numbers for the docs, as bullets, regenerated on every run."""
    steps = report["steps"]
    if not steps:
        return "No step ran."
    one, settings = steps[0], report["settings"]
    lat, ph = one["latency"], one["phases"]
    bullets = []
    if lat.get("n"):
        meets = lat["p50_ms"] <= GOAL_P50_S * 1000 and lat["p95_ms"] <= GOAL_P95_S * 1000
        text = (f"**Latency.** With one call at a time the caller waits {lat['p50_ms']} ms (p50) "
                f"and {lat['p95_ms']} ms (p95) from the end of their speech to the first sound of the answer: the goal "
                f"({GOAL_P50_S * 1000:.0f} / {GOAL_P95_S * 1000:.0f} ms) is {'met' if meets else 'not met'}.")
        if ph.get("turns_with_every_phase"):
            p50 = {k: ph[k].get("p50_ms") for k in PHASES}
            shifts = [c["heard_dump_shift_s"] for c in one["call_info"] if c.get("heard_dump_shift_s") is not None]
            text += (f" Of the median turn, silero's end-of-speech decision takes {p50['vad_s']} ms "
                     f"({settings['endpointing_s']:g} s of it is the silence it waits for, "
                     f"`personas.endpointing_s`; the rest is its smoothing and the hub's input), "
                     f"the final transcript comes {p50['stt_s']} ms after it, "
                     f"the turn commit {p50['commit_s']} ms, the reply (scripted LLM, tool, espeak-ng, to the hub) "
                     f"{p50['reply_s']} ms, and the wire {ph['transport_both_ways_s'].get('p50_ms')} ms both ways "
                     f"({p50['inbound_s']} in, {p50['outbound_s']} out, of which baresip's own jitter buffer, set to "
                     f"{JITTER_FRAMES[0]}-{JITTER_FRAMES[1]} frames, is about "
                     f"{round(1000 * float(np.median(shifts))) if shifts else '?'} ms).")
            decode = report["offline"]["stt_decode_ms"]
            text += (f" pocketsphinx decodes the utterance during the first 0.1 s of silence (a whole-utterance decode "
                     f"takes {min(decode.values()):.0f}-{max(decode.values()):.0f} ms, timed alone), so the session's "
                     f"flush at silero's end of speech finds the transcript made. What is left is silero's silence and "
                     f"lag and the two wire legs: `personas.endpointing_s` is the one knob, and a shorter silence "
                     f"cuts in on callers who pause inside a sentence.")
        bullets.append(text)
    loaded = [s for s in steps if s["meter"].get("other_load_pct", 0) > settings.get("quiet_pct", 30)]
    discarded = sum(len(s.get("discarded_rounds", [])) for s in steps)
    warnings = report.get("log_warnings", {})
    stalls = sum(v for k, v in warnings.items() if "hub clock stalled" in k)
    box = (f"**The box was shared.** Other jobs ran on it during this benchmark; {discarded} round(s) of calls "
           f"were run again because of them.")
    if loaded:
        box += (" Other work still took "
                + ", ".join(f"{s['meter']['other_load_pct']}% of a core at {s['concurrent']} call(s)" for s in loaded)
                + ": those latencies are pessimistic.")
    if stalls:
        box += (f" The hub logged `hub clock stalled` {stalls} times in the run (the rounds run again included; "
                f"the appliance log in the kept temp dir says when).")
    if discarded or loaded or stalls:
        bullets.append(box)
    failed = next((s for s in steps if not s["passed"]), None)
    last = failed or steps[-1]
    cpu = last["meter"]["cpu_pct"]
    n = last["concurrent"]
    appliance = sum(cpu.get(r, 0.0) for r in ("persona", "sip", "main", "kamailio"))
    outcome = (f"Every step stayed under p95 {CAPACITY_P95_S:g} s, up to {n} calls" if not failed
               else f"The ramp failed at {n} calls: " + "; ".join(failed["problems"]))
    text = (f"**Capacity.** {outcome}. "
            f"At {n} concurrent calls the persona workers used {cpu.get('persona')}% of a core "
            f"(busiest worker {last['meter']['cpu_pct_max_process'].get('persona')}%), "
            f"the SIP workers {cpu.get('sip')}%, the hub {cpu.get('main')}%; the appliance {appliance:.0f}% in all, "
            f"{appliance / n:.1f}% of a core per call, of the box's {100 * (report['machine']['cores'] or 1)}% "
            f"(the baresip callers took {cpu.get('baresip')}% more).")
    if not failed:
        text += (f" The ramp ended at the configured sessions ({settings['persona_workers']} persona workers × "
                 f"{settings['sessions_per_worker']}), not at a failure, so the box holds at least {n}; at "
                 f"{appliance / n:.1f}% of a core per call the appliance alone would fill both cores at about "
                 f"{int(100 * (report['machine']['cores'] or 1) / (appliance / n))} calls, but p95 is already "
                 f"{last['latency'].get('p95_ms')} ms at {n}.")
    if report.get("capacity_without_neighbour_sessions", 0) > report["capacity_concurrent_calls"]:
        text += (f" Counting only the turns during which no other call's persona started or ended on the same worker, "
                 f"p95 stays within {CAPACITY_P95_S:g} s up to {report['capacity_without_neighbour_sessions']} calls: "
                 f"what breaks the limit first is the hang-up stall below, not the CPU.")
    bullets.append(text)
    ending = [(s["concurrent"], s["latency"].get("while_another_session_ended", {}),
               s["latency"].get("with_no_session_starting_or_ending", {})) for s in steps]
    ending = [(c, st, rest) for c, st, rest in ending if st.get("n")]
    closed_late = sum(v for k, v in warnings.items() if "did not close cleanly" in k)
    if ending or closed_late:
        text = "**Hang-ups and the other calls on the same persona worker.**"
        if ending:
            text += (f" {sum(st['n'] for _, st, _ in ending)} of {sum(s['latency'].get('n', 0) for s in steps)} turns "
                     "ended within 3 s after another call on the same worker hung up: " +
                     ", ".join(f"{st['n']} at {c} calls, p50 {st['p50_ms']} / max {st['max_ms']} ms "
                               f"(turns with no session starting or ending nearby: "
                               f"p50 {rest.get('p50_ms')} / max {rest.get('max_ms')} ms)"
                               for c, st, rest in ending) + ".")
        text += (" The worker closes a released session in a task of its own (appliance/personas/worker.py), so its "
                 "read loop keeps carrying the other sessions' audio while livekit closes it.")
        if closed_late:
            text += f" `persona session did not close cleanly` (the 5 s timeout) was logged {closed_late} time(s)."
        bullets.append(text)
    starts = [s["session_start"] for s in steps if s.get("session_start", {}).get("n")]
    during = [(s["concurrent"], s["latency"].get("while_another_session_started", {})) for s in steps]
    during = [(c, st) for c, st in during if st.get("n")]
    if starts:
        text = (f"**Session start.** A persona session takes {min(s['p50_ms'] for s in starts)}–"
                f"{max(s['p50_ms'] for s in starts)} ms to start (p50 per step; `persona job started` to its first "
                f"`persona state` line). Sessions borrow loaded pocketsphinx decoders from a pool per grammar "
                f"(loading one takes {report['offline']['stt_decoder_load_ms']} ms and about 28 MB, timed alone), so "
                f"only the first session of a persona, or more overlapping utterances than ever before, waits for one.")
        if during:
            text += (" Turns while another persona started on the same worker: " +
                     ", ".join(f"{st['n']} at {c} calls, p50 {st['p50_ms']} / max {st['max_ms']} ms"
                               for c, st in during) +
                     " — not a measurable cost at this rate of new calls.")
        bullets.append(text)
    rss = [(s["concurrent"], s["persona_rss_mb_per_session"]) for s in steps[:2]
           if s["persona_rss_mb_per_session"] is not None]
    idle_rss = report.get("idle", {}).get("rss_kb", {}).get("persona")
    after_rss = report.get("after_rss_kb", {}).get("persona")
    text = "**Memory.**"
    if rss:
        text += (" A live session costs " + " and ".join(f"{v} MB at {c} call(s)" for c, v in rss) +
                 " of persona worker RSS (its pocketsphinx decoder alone is about 28 MB).")
    if idle_rss and after_rss:
        sessions = max(1, report.get("persona_sessions") or 1)
        grown = (after_rss - idle_rss) / 1024
        text += (f" After {sessions} sessions had ended the workers held {after_rss / 1024:.0f} MB, "
                 f"{grown:.0f} MB more than idle at the start ({grown / sessions:.1f} MB per session)")
        text += (": decoders kept in the pool for the next calls, and what the allocator keeps."
                 if grown / sessions < 5 else
                 ". Unless that levels off later than these runs can show, a worker that runs for days grows until the "
                 "box runs out of memory.")
    bullets.append(text)
    if report.get("speaking_state_lines") == 0:
        bullets.append("**No `speaking` state.** The persona workers never logged `persona state` `speaking`: "
                       "`HubAudioOutput` (appliance/personas/io.py) never calls livekit's `on_playback_started`, "
                       "so the agent goes from thinking straight back to listening, livekit's first-audio mark and "
                       "latency metrics (`e2e_latency`) are never taken, and this benchmark cannot split LLM from TTS "
                       "in a call.")
    return "\n".join(f"- {b}" for b in bullets)


def write_doc(report: dict[str, Any], analysis: str) -> None:
    write_doc_section(markdown(report, analysis), DOC_BEGIN, DOC_END)
