"""A gather hearing a number read out in groups ("five five five … one two"): the pause
inside the number does not end it, the pause after it does. Events in, actions out."""

from __future__ import annotations

from textwrap import dedent

import pytest

from appliance.flow.engine import (
    Digit,
    EnterStep,
    FlowEngine,
    Listen,
    PlaybackDone,
    Say,
    SetVariable,
    Speech,
    SpeechStarted,
    StartTimer,
    StopListening,
    TimerFired,
)
from appliance.flow.loader import parse

FLOW = """
name: numbers
entry: ask
steps:
  ask:
    gather:
      prompt: Please say your account number.
      into: account
      min_digits: 4
      max_digits: 10
      spoken_digits: true
      digit_pause: 1.5
      timeout: 5
      retries: 1
    next: thanks
  thanks:
    say: "Thank you, {account}."
    next: bye
  bye:
    hangup: {}
"""


@pytest.fixture
def engine() -> FlowEngine:
    flow, problems = parse(dedent(FLOW), "numbers.yaml")
    assert problems == [] and flow is not None
    engine = FlowEngine(flow)
    assert engine.start() == [EnterStep("ask", "gather"), Say("Please say your account number.", interruptible=True),
                              Listen({}, digits=True)]
    assert engine.handle(PlaybackDone()) == [StartTimer(1, 5.0)]
    return engine


def _taken(account: str) -> list[object]:
    return [StopListening(), SetVariable("account", account), EnterStep("thanks", "say"),
            Say(f"Thank you, {account}.")]


def test_a_pause_between_groups_does_not_end_the_number(engine: FlowEngine):
    assert engine.handle(SpeechStarted()) == []
    assert engine.handle(Speech("five five five")) == [StartTimer(2, 1.5)]  # the digit pause, not the end
    assert engine.handle(SpeechStarted()) == []
    assert engine.handle(TimerFired(2)) == []  # it ran out while the caller read the next group: ignored
    assert engine.handle(Speech("one two")) == [StartTimer(3, 1.5)]
    assert engine.handle(TimerFired(3)) == _taken("55512")


def test_max_digits_end_the_number_at_once(engine: FlowEngine):
    engine.handle(Speech("one two three four five"))
    assert engine.handle(Speech("six seven eight nine zero")) == _taken("1234567890")


def test_words_after_the_number_end_it_without_the_pause(engine: FlowEngine):
    assert engine.handle(Speech("four four two one")) == [StartTimer(2, 1.5)]
    assert engine.handle(Speech("that is it")) == _taken("4421")


def test_a_number_followed_by_words_is_complete(engine: FlowEngine):
    assert engine.handle(Speech("four four two one please")) == _taken("4421")


def test_too_few_digits_after_the_pause_ask_again(engine: FlowEngine):
    engine.handle(Speech("four two"))
    assert engine.handle(TimerFired(2)) == [Say("Please say your account number.", interruptible=True)]


def test_spoken_and_keyed_digits_make_one_number(engine: FlowEngine):
    engine.handle(Speech("five five five"))
    engine.handle(Digit("1"))
    assert engine.handle(Digit("#")) == _taken("5551")


def test_an_utterance_heard_as_nothing_restarts_the_silence_it_interrupted(engine: FlowEngine):
    engine.handle(Speech("five five five"))
    engine.handle(SpeechStarted())
    assert engine.handle(Speech("")) == [StartTimer(3, 1.5)]
    assert engine.handle(TimerFired(2)) == []
    assert engine.handle(TimerFired(3)) == [Say("Please say your account number.", interruptible=True)]


def test_speaking_holds_the_no_input_timeout(engine: FlowEngine):
    engine.handle(SpeechStarted())
    assert engine.handle(TimerFired(1)) == []  # the caller is talking: not silent
    assert engine.handle(Speech("")) == [StartTimer(2, 5.0)]


def test_keys_then_words_a_gather_without_spoken_digits_does_not_take_as_a_number():
    flow, problems = parse(dedent(FLOW.replace("spoken_digits: true", 'intents: {"human": [operator]}')),
                           "numbers.yaml")
    assert problems == [] and flow is not None
    engine = FlowEngine(flow)
    engine.start()
    engine.handle(PlaybackDone())
    for key in "4421":
        engine.handle(Digit(key))
    assert engine.handle(Speech("bananas")) == [Say("Please say your account number.", interruptible=True)]
