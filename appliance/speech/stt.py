"""pocketsphinx recognition, offline, with the model the package ships.

Accurate when constrained by a grammar (JSGF) of the words expected, weak on open
vocabulary; its acoustic model is 16 kHz, which is also the box's audio rate.
"""

from __future__ import annotations

import re
from functools import lru_cache

import numpy as np
from pocketsphinx import Config, Decoder, get_model_path

from appliance.core.audio import SAMPLE_RATE


@lru_cache(maxsize=1)
def known_words() -> frozenset[str]:
    """Every word the shipped pronunciation dictionary knows (a grammar may use only these)."""
    with open(f"{get_model_path()}/en-us/cmudict-en-us.dict", encoding="utf-8", errors="replace") as f:
        return frozenset(line.split(" ", 1)[0].split("(", 1)[0] for line in f if line.strip())


def phrases_grammar(phrases: list[str]) -> str:
    """A JSGF grammar that accepts any sequence of the given phrases' words."""
    words = sorted({w for phrase in phrases for w in re.findall(r"[a-z']+", phrase.lower())})
    return "#JSGF V1.0;\ngrammar words;\npublic <utterance> = ( " + " | ".join(words) + " )+ ;\n"


def decoder_for(grammar: str | None, live: bool = True) -> Decoder:
    config = Config(
        hmm=f"{get_model_path()}/en-us/en-us",
        dict=f"{get_model_path()}/en-us/cmudict-en-us.dict",
        samprate=SAMPLE_RATE,
        loglevel="FATAL",
    )
    if grammar is None:
        config["lm"] = f"{get_model_path()}/en-us/en-us.lm.bin"
    else:
        config["jsgf"] = None
        config["lm"] = None
        # Measured: with a looping word grammar, best-path rescoring takes 2-4 s per
        # utterance; a caller cannot wait for that, an offline transcription can.
        config["bestpath"] = not live
    decoder = Decoder(config)
    if grammar is not None:
        decoder.add_jsgf_string("grammar", grammar.encode())
        decoder.activate_search("grammar")
    return decoder


def transcribe(pcm: bytes, grammar: str | None = None) -> str:
    """Text of 16 kHz s16le mono speech; `grammar` (JSGF) constrains what can be heard."""
    decoder = decoder_for(grammar, live=False)
    samples = np.frombuffer(pcm, dtype=np.int16)
    decoder.start_utt()
    decoder.process_raw(samples.tobytes(), full_utt=True)
    decoder.end_utt()
    hyp = decoder.hyp()
    return hyp.hypstr if hyp else ""
