"""A handful of numbers read out in groups, on real audio (espeak-ng through G.722 or PCMU),
heard as a flow's gather hears them: each taken whole and exactly, none before its last group.

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
