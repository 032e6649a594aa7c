"""pocketsphinx recognition, offline, with the model the package ships: the one engine behind
both the flow's listening and the personas' STT plugin. It owns the decoders (pooled per
grammar) and decodes an utterance from the caller's own cepstral mean; callers run it in an
executor, never on the event loop that drives the 20 ms audio clock.

Accurate when constrained by a grammar (JSGF) of the words expected, weak on open
vocabulary; its acoustic model is 16 kHz, which is also the box's audio rate.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

import numpy as np
from pocketsphinx import Config, Decoder, get_model_path

from appliance.core.audio import SAMPLE_RATE

__all__ = ["PRONUNCIATIONS", "SEARCH_SETTINGS", "Utterance", "decode", "decoder_for", "known_words", "phrases_grammar",
           "prewarm", "transcribe"]

# Decoder settings by JSGF grammar name (`grammar digits;`: digit words and nothing else, as
# `appliance.flow.intents.grammar` writes it). Digits: a word insertion penalty of 1e-4 (pocketsphinx's
# default is 0.65) because most errors on spoken numbers were extra short digits ("oh", "eight",
# "three") at a word's edge: 16 % -> 37 % of grouped numbers exactly right on bench/digits.py's
# tuning corpus (seed 99, not the seed it reports).
SEARCH_SETTINGS: dict[str, dict[str, float]] = {"digits": {"wip": 1e-4}}
# Pronunciations added beside the dictionary's, by grammar name. A phone line cuts everything
# above 3.4 kHz (PCMU, PCMA), where most of /s/ lies: what is left of it is the faint, flat
# fricative the model learnt as /f/, so "six" and "seven" were heard as another digit or not
# at all. Measured on bench/digits.py's corpora (seed 15, numbers exactly right through PCMU):
# espeak-ng's voices 11.5 -> 22.9 %, flite's 63.5 -> 72.9 %; G.722 38.5 -> 38.5 % and 90.6 -> 91.7 %.
# Chosen on the tuning corpus (seed 99) among /f/, /th/, both, and "six" without its /s/ (worse).
PRONUNCIATIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "digits": {"six": ("F IH K S",), "seven": ("F EH V AH N",)},
}


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
    """A new decoder (blocking, ~0.1 s with a grammar, ~0.3 s open vocabulary); calls borrow
    pooled ones through `Utterance` instead."""
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
        for key, value in SEARCH_SETTINGS.get(_grammar_name(grammar), {}).items():
            config[key] = value
    decoder = Decoder(config)
    if grammar is not None:
        for word, variants in PRONUNCIATIONS.get(_grammar_name(grammar), {}).items():
            n = 2  # after the dictionary's own alternatives: word(2), word(3), …
            for phones in variants:
                while decoder.lookup_word(f"{word}({n})"):
                    n += 1
                decoder.add_word(f"{word}({n})", phones, False)
        decoder.add_jsgf_string("grammar", grammar.encode())
        decoder.activate_search("grammar")
    return decoder


def _grammar_name(grammar: str) -> str:
    match = re.search(r"^grammar\s+([\w.]+)\s*;", grammar, re.MULTILINE)
    return match.group(1) if match else ""


_Key = tuple[str | None, bool]  # (grammar, live)
DITHER_RMS = 10.0  # in 16-bit steps, -70 dBFS: see `_dithered`


class _DecoderPool:
    """Decoders kept per grammar and lent one utterance at a time.

    A decoder takes ~0.1 s (grammar) to ~0.3 s (open vocabulary) and ~28 MB to load, and is
    not thread-safe. One per persona session made every persona start wait for it and left the
    worker's memory growing as sessions came and went; one per flow listen step was built on
    the event loop, five missed 20 ms ticks per speech menu step. Lent from a pool, a process
    holds as many per grammar as utterances ever overlapped.
    """

    def __init__(self) -> None:
        self._idle: dict[_Key, list[Decoder]] = {}
        self._initial_cmn: dict[_Key, str] = {}
        self._lock = threading.Lock()

    def initial_cmn(self, key: _Key) -> str:
        with self._lock:
            return self._initial_cmn[key]

    def take(self, key: _Key) -> Decoder:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            decoder = idle.pop() if idle else None
        if decoder is None:
            decoder = decoder_for(*key)
            with self._lock:
                self._initial_cmn.setdefault(key, decoder.get_cmn(False))
        return decoder

    def give_back(self, key: _Key, decoder: Decoder) -> None:
        with self._lock:
            self._idle[key].append(decoder)

    @contextmanager
    def borrow(self, key: _Key) -> Iterator[Decoder]:
        decoder = self.take(key)
        yield decoder  # one that raised mid-utterance is dropped, not lent again
        self.give_back(key, decoder)


_DECODERS = _DecoderPool()


def prewarm(grammar: str | None, live: bool = True) -> None:
    """Load a decoder for `grammar` now (blocking) rather than on the first utterance."""
    with _DECODERS.borrow((grammar, live)):
        pass


class Utterance:
    """One utterance decoded on a pooled decoder, from the caller's cepstral mean `cmn` (None:
    the model's). Blocking: run it in an executor. `end()` gives the decoder back.

    pocketsphinx carries its cepstral mean from one utterance to the next. Decoders are shared
    by calls, so each caller keeps its own: a caller's words depend on what that caller said
    before, never on another call. (Restoring a mean restarts its weight at pocketsphinx's
    window of 100 frames, so a caller's mean follows their latest utterance a little faster
    than one decoder kept for them alone would.)
    """

    def __init__(self, grammar: str | None, cmn: str | None = None, live: bool = True) -> None:
        self._key: _Key = (grammar, live)
        self._decoder: Decoder | None = _DECODERS.take(self._key)
        self._decoder.set_cmn(cmn or _DECODERS.initial_cmn(self._key))
        self._decoder.start_utt()

    def process(self, pcm: bytes) -> None:
        """The entire utterance, 16 kHz s16le mono (batch CMN). Never in pieces: see
        `appliance.speech.recognizer.Recognizer` for what that does to a pooled decoder."""
        assert self._decoder is not None, "the utterance has ended"
        # pocketsphinx holds the GIL inside process_raw (~30 ms per second of speech), thread or not.
        live = self._key[1]
        self._decoder.process_raw(_dithered(pcm) if live else pcm, full_utt=True)

    def end(self) -> tuple[str, str]:
        """The text heard, and the caller's cepstral mean after it."""
        decoder, self._decoder = self._decoder, None
        assert decoder is not None, "the utterance has ended"
        decoder.end_utt()
        hyp = decoder.hyp()
        cmn = decoder.get_cmn(False)
        _DECODERS.give_back(self._key, decoder)
        return (hyp.hypstr if hyp else ""), cmn


def _dithered(pcm: bytes) -> bytes:
    """The audio with a faint hiss (-70 dBFS, below any phone line's own), the same hiss for
    the same audio.

    espeak-ng's speech (and a muted line) has runs of exact zeros, even inside words; their log
    energy is the front end's floor, and in a whole-utterance mean it pulls words apart
    (measured: "technical support please" with digital silence around it decoded as "technical
    to for leave"). pocketsphinx's own `dither` draws from one generator per decoder, so an
    utterance would be heard differently depending on what the pooled decoder heard before.
    The level, measured on the test suite's utterances with digital silence: σ = 0 → 5 misheard,
    2 steps → 2, 4 → 1 ("one two three four" as "would a two three four"), 6 and 10 → none.
    Calls only: offline transcription (`transcribe`, best-path rescoring) heard the caller's
    side of a persona call worse with it ("four is shipped" as "four is three the the").
    """
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float64)
    hiss = np.random.default_rng(len(samples)).normal(0.0, DITHER_RMS, len(samples))
    return np.clip(np.round(samples + hiss), -32768, 32767).astype(np.int16).tobytes()


def decode(pcm: bytes, grammar: str | None, cmn: str | None = None, live: bool = True) -> tuple[str, str | None]:
    """Text of one whole utterance of 16 kHz s16le mono (blocking), decoded from the caller's
    cepstral mean `cmn`, and the mean after it.

    Whole, the cepstral mean is the utterance's own (batch CMN); fed in chunks it is a running
    mean, and a call's first words are heard worse (so nothing here decodes in chunks).
    """
    if not pcm:
        return "", cmn
    utterance = Utterance(grammar, cmn, live)
    utterance.process(pcm)
    return utterance.end()


def transcribe(pcm: bytes, grammar: str | None = None) -> str:
    """Text of 16 kHz s16le mono speech; `grammar` (JSGF) constrains what can be heard.

    Offline (tests, recordings): best-path rescoring on, from the model's cepstral mean."""
    return decode(pcm, grammar, live=False)[0]
