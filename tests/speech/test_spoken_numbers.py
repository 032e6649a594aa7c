"""A handful of numbers read out in groups, on real audio (espeak-ng through G.722 or PCMU),
heard as a flow's gather hears them: each taken whole and exactly, none before its last group.
And groups that begin with a soft sound ("six", "seven", "four", "two"), said by voices built
from human recordings (flite): heard from their first word; and "six" and "seven" through PCMU,
which cuts most of their /s/.

The corpus-wide figures, with the voices and the codec this recogniser does worse on, are
bench/digits.py's (docs/BENCHMARKS.md, "Spoken numbers"); these are cases it gets right, kept
right.
"""

from __future__ import annotations

import pytest

from appliance.flow import intents
from tests.support.spoken_numbers import SpokenNumber, gather, last_group_end, line_audio, listen

DIGIT_PAUSE_S = 2.0  # the gather's default

NUMBERS = [
    (SpokenNumber(("555", "12"), (0.9,), "en-us", 160), "g722"),
    (SpokenNumber(("4021", "3388"), (1.1,), "en-us", 160), "g722"),
    (SpokenNumber(("212", "555", "0142"), (0.6, 1.2), "en-us", 160), "g722"),  # a phone number, 3-3-4
    (SpokenNumber(("3141", "5926"), (1.0,), "en-us", 160), "g722"),
    (SpokenNumber(("2048", "13"), (0.7,), "en-us", 190), "g722"),
    (SpokenNumber(("8043",), (), "en-us+f3", 160), "g722"),
    (SpokenNumber(("4421",), (), "en-us", 160), "pcmu"),
]


@pytest.mark.parametrize("number, codec", NUMBERS, ids=[f"{n.digits}-{n.voice}-{n.rate}-{c}" for n, c in NUMBERS])
def test_a_number_read_in_groups_is_taken_whole_and_exactly(number: SpokenNumber, codec: str) -> None:
    audio = line_audio(number, codec)
    heard = listen(audio, intents.grammar({}, digits=True))

    value, taken_at = gather(heard, len(audio) / 32000, DIGIT_PAUSE_S)

    assert value == number.digits, [h.text for h in heard if h.text]
    assert taken_at is not None and taken_at > last_group_end(number), taken_at


# From bench/digits.py's flite corpus (seed 15): each lost its first word ("634" heard as "three
# four") while the endpointer's VAD ran at its most aggressive mode and took the word's soft start
# for silence.
SOFT_STARTS = [
    SpokenNumber(("634",), (), "flite:slt", 160),
    SpokenNumber(("6767",), (), "flite:awb", 190),
    SpokenNumber(("430", "563"), (0.7,), "flite:kal16", 190),
    SpokenNumber(("283", "51"), (0.53,), "flite:rms", 160),
    SpokenNumber(("75", "9781", "33"), (0.8, 0.93), "flite:awb", 160),
]


@pytest.mark.parametrize("number", SOFT_STARTS, ids=[f"{n.digits}-{n.voice}-{n.rate}" for n in SOFT_STARTS])
def test_a_group_that_starts_softly_is_heard_from_its_first_word(number: SpokenNumber) -> None:
    audio = line_audio(number, "g722")
    heard = listen(audio, intents.grammar({}, digits=True))

    value, _ = gather(heard, len(audio) / 32000, DIGIT_PAUSE_S)

    assert value == number.digits, [h.text for h in heard if h.text]


# From bench/digits.py's corpora (seed 15), through PCMU: each was misheard ("277" as "2517",
# "660 41" as "222041") until the digits grammar also took the /s/ a phone line leaves as /f/.
NARROWBAND = [
    SpokenNumber(("277",), (), "en-us", 160),
    SpokenNumber(("660", "41"), (0.45,), "flite:rms", 190),
    SpokenNumber(("87", "63", "753"), (1.02, 0.94), "flite:slt", 160),
    SpokenNumber(("1973", "974"), (0.47,), "en-us", 190),
    SpokenNumber(("462",), (), "en-us", 190),
    SpokenNumber(("597",), (), "en-us", 130),
    SpokenNumber(("120", "650"), (1.16,), "flite:kal16", 130),
    SpokenNumber(("9433", "64", "2832"), (0.99, 1.2), "flite:kal16", 130),
]


@pytest.mark.parametrize("number", NARROWBAND, ids=[f"{n.digits}-{n.voice}-{n.rate}" for n in NARROWBAND])
def test_six_and_seven_are_heard_through_a_phone_lines_band(number: SpokenNumber) -> None:
    audio = line_audio(number, "pcmu")
    heard = listen(audio, intents.grammar({}, digits=True))

    value, _ = gather(heard, len(audio) / 32000, DIGIT_PAUSE_S)

    assert value == number.digits, [h.text for h in heard if h.text]
