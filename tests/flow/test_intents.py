"""Speech choices: recognised text → intent, spoken digits, and the grammar pocketsphinx listens with.

The last test is the real audio path: espeak-ng says a phrase, the streaming recogniser hears it
against the grammar built from the support menu, and the text reaches the right step.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import Config
from appliance.flow import intents
from appliance.flow.loader import load_dir
from appliance.flow.schema import GatherStep, MenuStep
from appliance.speech.recognizer import Recognizer
from appliance.speech.stt import decoder_for
from appliance.speech.tts import EspeakTTS

FLOWS = Path(__file__).resolve().parents[2] / "flows"

# flows/support.yaml's main menu
MENU = {
    "ask_account": ["billing", "pay my bill", "invoice"],
    "technical_queue": ["technical support", "support", "my internet is down"],
    "take_message": ["leave a message", "message"],
}


@pytest.mark.parametrize(
    "said, intent",
    [
        ("billing", "ask_account"),
        ("Billing, please!", "ask_account"),
        ("I'd like to pay my bill", "ask_account"),
        ("I have a question about my invoice", "ask_account"),
        ("technical support please", "technical_queue"),
        ("my internet is down again", "technical_queue"),
        ("I want to leave a message", "take_message"),
        ("message", "take_message"),
        ("pay bill", "ask_account"),  # two of three words of 'pay my bill'
    ],
)
def test_match_picks_the_intent_the_caller_meant(said: str, intent: str):
    assert intents.match(said, MENU) == intent


def test_the_longer_exact_phrase_wins():
    choices = {"general": ["support"], "technical": ["technical support"]}
    assert intents.match("technical support", choices) == "technical"
    assert intents.match("support", choices) == "general"
    # also when the shorter phrase's intent comes later
    phrases = {"technical": ["technical support"], "general": ["support"]}
    assert intents.match("technical support", phrases) == "technical"


@pytest.mark.parametrize(
    "said",
    ["bananas", "hello", "um", "", "   ", "what is the weather like", "my", "the internet", "12345"],
)
def test_unrelated_words_match_nothing(said: str):
    assert intents.match(said, MENU) is None


@pytest.mark.parametrize(
    "said, choices, intent",
    [
        ("I know", {"yes": ["yes"], "no": ["no"]}, None),  # 'no' is inside 'know', but not said
        ("no I don't", {"yes": ["yes"], "no": ["no"]}, "no"),
        ("billy", {"billing": ["bill"]}, None),
        ("my bill", {"billing": ["bill"]}, "billing"),
    ],
)
def test_a_phrase_matches_whole_words_only(said: str, choices: dict, intent: str | None):
    assert intents.match(said, choices) == intent


@pytest.mark.parametrize(
    "said, digits",
    [
        ("one two three four", "1234"),
        ("1 2 3 4", "1234"),
        ("1234", "1234"),
        ("my account is five six seven eight", "5678"),
        ("oh nine zero", "090"),
        ("to for", "24"),  # what the recogniser writes for 'two four'
        ("too ate won", "281"),
        ("One, Two. THREE!", "123"),
        ("no digits here", ""),
        ("", ""),
    ],
)
def test_spoken_digits(said: str, digits: str):
    assert intents.spoken_digits(said) == digits


def test_grammar_holds_the_choices_words_fillers_and_optionally_digits():
    grammar = intents.grammar(MENU)
    assert grammar.startswith("#JSGF V1.0;")
    for word in ("billing", "technical", "internet", "message", "please", "would"):
        assert f" {word} " in grammar
    assert " seven " not in grammar
    with_digits = intents.grammar(MENU, digits=True)
    assert " seven " in with_digits and " oh " in with_digits
    digits_only = intents.grammar({}, digits=True)
    # a digits-only gather hears only digits: a filler 'to' would steal 'two'
    assert " to " not in digits_only and " two " in digits_only


def test_where_digits_are_heard_no_filler_that_sounds_like_one_competes_with_them():
    # "one" came out as the filler "want" (W AH N / W AA N T); "to" and "for" are "two", "four"
    assert all(w in intents.grammar(MENU) for w in (" want ", " to ", " for "))
    with_digits = intents.grammar(MENU, digits=True)
    assert not [w for w in (" want ", " to ", " for ") if w in with_digits]
    # a phrase's own words stay: the admin wrote them
    assert " to " in intents.grammar({"human": ["talk to someone"]}, digits=True)


def test_digits_alone_are_the_grammar_the_decoder_tunes_for_numbers():
    assert "\ngrammar digits;\n" in intents.grammar({}, digits=True)
    assert "\ngrammar digits;\n" not in intents.grammar(MENU, digits=True)


@pytest.mark.parametrize(
    "said, unfinished",
    [
        ("five five five", True),
        ("my account number is five five five", True),
        ("5 5 5", True),
        ("five five five that is it", False),
        ("I want to talk to", False),  # homophones of two are not a number
        ("", False),
    ],
)
def test_a_number_may_go_on_while_the_words_end_in_a_digit(said: str, unfinished: bool):
    assert intents.ends_in_digit(said) is unfinished


ORDER_DESK = ["check my order", "where is my order", "order status", "two", "talk to someone"]


@pytest.mark.parametrize(
    "said, whole",
    [
        ("check my order", True),
        ("I would like to check my order please", True),
        ("where is my order", True),
        ("I would like to", False),  # the sentence goes on
        ("where is my", False),  # three of the four words of a phrase: the very sentence that goes on
        ("check my order and", False),  # a whole phrase, then a word that leads into more
        ("I want to talk", False),  # "to" is not the phrase "two"
        ("where is my it", False),  # a stray word after the fragment: still no phrase
        ("hello", False),  # none of the phrases
        ("my order is two", False),  # a number may go on
        ("i one with to long", False),  # a digit is no request: misheard inside a fragment, it ends nothing
        ("", False),
    ],
)
def test_a_request_is_whole_when_it_holds_a_phrase_and_does_not_lead_on(said: str, whole: bool):
    assert intents.complete(said, ORDER_DESK) is whole


def test_with_no_phrases_only_the_last_word_decides():
    assert intents.complete("what are your opening hours", [])
    assert not intents.complete("what are your", [])


def test_every_grammar_the_shipped_flows_listen_with_is_accepted_by_pocketsphinx():
    grammars = {intents.grammar(MENU), intents.grammar(MENU, digits=True), intents.grammar({}, digits=True)}
    for loaded in load_dir(FLOWS, Config().webhooks.allowed).values():
        for step in loaded.flow.steps.values():
            if isinstance(step, MenuStep) and step.menu.speech:
                grammars.add(intents.grammar(step.menu.speech))
            if isinstance(step, GatherStep) and (step.gather.intents or step.gather.spoken_digits):
                grammars.add(intents.grammar(step.gather.intents, digits=step.gather.spoken_digits))
    for grammar in grammars:
        assert decoder_for(grammar) is not None


def test_a_phrase_with_a_word_the_recogniser_does_not_know_still_gives_a_usable_grammar():
    decoder_for(intents.grammar({"voip": ["voip problem"]}))


@pytest.fixture(scope="module")
def tts() -> EspeakTTS:
    return EspeakTTS()


def _recognise(recognizer: Recognizer, pcm: bytes) -> list[str]:
    silence = b"\0\0" * 16000  # one second at 16 kHz
    audio = silence + pcm + silence
    chunk = 640  # 20 ms, as the call's media arrives
    heard = []
    for i in range(0, len(audio), chunk):
        text = recognizer.feed(audio[i : i + chunk])
        if text:
            heard.append(text)
    return heard


def test_spoken_words_reach_the_intent_through_the_real_recogniser(tts: EspeakTTS):
    pcm = tts.synthesize("technical support please")
    assert len(pcm) > 16000  # more than half a second of speech
    heard = _recognise(Recognizer(intents.grammar(MENU)), pcm)
    assert len(heard) == 1, heard
    assert intents.match(heard[0], MENU) == "technical_queue"

