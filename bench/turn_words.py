"""What the persona's end of turn waits on: how often the recogniser hears a request, said with
pauses inside it, as a whole request at all.

The new end of turn (appliance/personas/turns.py) ends a turn at once when the words make one
of the persona's phrases whole and holds it `turns.incomplete_pause` otherwise. A request
misheard ("my order" as "my all would that") is held the whole pause: that is the latency
bench/persona_turns.py measures. This benchmark measures the words alone, without calls, on
the persona-turn corpus (tests/support/spoken_requests.py, through each codec), three ways:

- parts: each part between pauses decoded as its own utterance, the caller's cepstral mean
  carried from one to the next: what the STT stream does (appliance/personas/plugins/stt_pocketsphinx.py);
- whole: the whole sentence, pauses included, decoded at once: what re-decoding a held turn's
  audio would give;
- each again with a non-rhotic pronunciation added beside every grammar word's dictionary one
  ("order" AO R D ER, also AO D AH): the shipped dictionary is General American.

For each: requests heard whole at their end (want: all), and prefixes (the words before a pause
inside the sentence) taken for a whole request (want: none; each would be answered into).
Every utterance is cut as the stream cuts it: 0.1 s before its first voiced frame to 0.1 s
after its last.

    python bench/turn_words.py                 # 96 requests per codec (~6 min)
    python bench/turn_words.py --quick         # 12 per codec: checks the benchmark
    python bench/turn_words.py --voices flite  # said by flite's voices (from human recordings);
                                               # its own results file, docs/BENCHMARKS.md untouched
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `python bench/turn_words.py` puts bench/ first, not the repo

import yaml
from pocketsphinx import Decoder, Vad

from appliance.core.audio import SAMPLE_RATE
from appliance.flow import intents
from appliance.flow.persona import Persona
from appliance.personas.persona import grammar_for_persona, request_phrases
from appliance.personas.plugins.stt_pocketsphinx import PREROLL_S, TAIL_S, VAD_FRAME_S, VOICE_FLOOR_RMS, _bytes, _rms
from appliance.speech import stt as speech_stt
from bench.common import report_head, save_results, write_doc_section
from tests.support.spoken_numbers import HUMAN_VOICES, VOICES, line_phrases
from tests.support.spoken_requests import SpokenRequest, corpus

DOC_BEGIN, DOC_END = "<!-- bench/turn_words.py: begin -->", "<!-- bench/turn_words.py: end -->"
PERSONA = ROOT / "flows" / "personas" / "orders.yaml"
CODECS = ("g722", "pcmu")
# ARPABET's vowels: an R after one and before none is not said in non-rhotic accents.
VOWELS = frozenset("AA AE AH AO AW AY EH ER EY IH IY OW OY UH UW".split())


def non_rhotic(phones: list[str]) -> list[str]:
    """A pronunciation as a non-rhotic accent says it: "order" AO R D ER → AO D AH."""
    said: list[str] = []
    for i, phone in enumerate(phones):
        before_vowel = i + 1 < len(phones) and phones[i + 1] in VOWELS
        if phone == "R" and said and said[-1] in VOWELS and not before_vowel:
            continue
        said.append("AH" if phone == "ER" and not before_vowel else phone)
    return said


# A grammar with this comment gets non-rhotic pronunciations: another key in the decoder pool,
# so no decoder serves both.
NON_RHOTIC = "// non-rhotic pronunciations\n"


@contextmanager
def non_rhotic_decoders() -> Iterator[None]:
    """While inside, a decoder built for a grammar ending in NON_RHOTIC adds a non-rhotic
    pronunciation beside each of the grammar's words."""
    build = speech_stt.decoder_for

    def decoder_for(grammar: str | None, live: bool = True) -> Decoder:
        decoder = build(grammar, live)
        if grammar is not None and grammar.endswith(NON_RHOTIC):
            for word in set(intents.words(grammar.split("=", 1)[1].split("//")[0])):
                prons = [p for n in range(1, 10) if (p := decoder.lookup_word(word if n == 1 else f"{word}({n})"))]
                for phones in list(prons):
                    variant = " ".join(non_rhotic(phones.split()))
                    if variant not in prons:
                        prons.append(variant)
                        decoder.add_word(f"{word}({len(prons)})", variant, False)
            decoder.add_jsgf_string("grammar", grammar.encode())  # compiled again, with the new words
            decoder.activate_search("grammar")
        return decoder

    speech_stt.decoder_for = decoder_for
    try:
        yield
    finally:
        speech_stt.decoder_for = build


def cut(pcm: bytes) -> bytes:
    """The utterance as the STT stream decodes it: from PREROLL_S before the first voiced frame
    to TAIL_S after the last."""
    vad = Vad(Vad.LOOSE, SAMPLE_RATE, VAD_FRAME_S)
    size = vad.frame_bytes
    voiced = [at for at in range(0, len(pcm) - size + 1, size)
              if _rms(pcm[at:at + size]) > VOICE_FLOOR_RMS and vad.is_speech(pcm[at:at + size])]
    return pcm[max(0, voiced[0] - _bytes(PREROLL_S)): voiced[-1] + size + _bytes(TAIL_S)] if voiced else b""


def judge(requests: list[SpokenRequest], codec: str, grammar: str, phrases: list[str]) -> dict[str, Any]:
    whole_ok = parts_ok = prefixes = prefixes_whole = 0
    examples: list[str] = []
    for request in requests:
        whole, _ = speech_stt.decode(cut(line_phrases(list(request.parts), request.pauses, codec,
                                                      request.voice, request.rate)), grammar, None)
        whole_ok += intents.complete(whole, phrases)
        heard: list[str] = []
        cmn = None
        for i, part in enumerate(request.parts):
            said = cut(line_phrases([part], (), codec, request.voice, request.rate))
            text, cmn = speech_stt.decode(said, grammar, cmn)
            heard.append(text)
            if i < len(request.parts) - 1:
                prefixes += 1
                prefixes_whole += intents.complete(" ".join(heard), phrases)
        parts_ok += intents.complete(" ".join(heard), phrases)
        if len(examples) < 3 and not intents.complete(" ".join(heard), phrases):
            examples.append(f"{request.voice} {request.rate}: “{request.text}” heard as “{' | '.join(heard)}”")
    return {"requests": len(requests), "parts_whole": parts_ok, "whole_whole": whole_ok,
            "prefixes": prefixes, "prefixes_taken_whole": prefixes_whole, "misheard_examples": examples}


def markdown(report: dict[str, Any]) -> str:
    head = ("| codec | pronunciations | requests heard whole: parts (the stream) | whole sentence at once "
            "| prefixes taken for a whole request (parts) |\n|---|---|---|---|---|")
    rows = [f"| {r['codec']} | {r['pronunciations']} | **{r['parts_whole']} of {r['requests']}** "
            f"| {r['whole_whole']} of {r['requests']} | {r['prefixes_taken_whole']} of {r['prefixes']} |"
            for r in report["rows"]]
    examples = [f"- {r['codec']}, {e}" for r in report["rows"] if r["pronunciations"] == "dictionary"
                for e in r["misheard_examples"]]
    return "\n".join([
        DOC_BEGIN,
        "## Requests heard whole (`bench/turn_words.py`)",
        "",
        f"- Date: {report['date']}; machine: {report['machine']['cpu']}, {report['machine']['cores']} cores",
        f"- Code: {report['code']}",
        f"- Command: `{report['command']}`",
        f"- Corpus: {report['rows'][0]['requests']} requests per codec (tests/support/spoken_requests.py, seed 15), "
        "the order desk's grammar (flows/personas/orders.yaml)",
        f"- Raw results: `{report['json_path']}`",
        "",
        head,
        *rows,
        "",
        "Requests the dictionary's pronunciations did not hear whole, for example:",
        *examples,
        DOC_END,
        "",
    ])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="12 requests per codec")
    parser.add_argument("--count", type=int, default=96, help="requests per codec")
    parser.add_argument("--voices", choices=("espeak", "flite"), default="espeak",
                        help="espeak-ng's voices (the corpus of issue 15), or flite's, built from human recordings")
    args = parser.parse_args(argv)
    count = 12 if args.quick else args.count
    report = report_head("turn_words", argv, dt.datetime.now(dt.UTC))
    persona = Persona.model_validate(yaml.safe_load(PERSONA.read_text()))
    phrases, grammar = request_phrases(persona) or [], grammar_for_persona(persona)
    assert grammar is not None, "the order desk is a scripted persona"
    requests = corpus(count, voices=VOICES if args.voices == "espeak" else HUMAN_VOICES)
    report["rows"] = []
    for codec in CODECS:
        report["rows"].append({"codec": codec, "pronunciations": "dictionary",
                               **judge(requests, codec, grammar, phrases)})
        with non_rhotic_decoders():
            report["rows"].append({"codec": codec, "pronunciations": "dictionary + non-rhotic",
                                   **judge(requests, codec, grammar + NON_RHOTIC, phrases)})
    save_results(report, "turn_words", ("-quick" if args.quick else "") + ("-flite" if args.voices == "flite" else ""))
    print(markdown(report))
    if not args.quick and args.voices == "espeak":
        write_doc_section(markdown(report), DOC_BEGIN, DOC_END)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
