"""Numbers a caller reads to a persona: the turn stays open while the words end in a digit, the
script asks for a number (its STT then hears digits only), and a long number is read back and
confirmed before its tool gets it. All read from the conversation, as a model would."""

from __future__ import annotations

import json

import pytest
from livekit.agents import llm

from appliance.flow.persona import Numbers
from appliance.personas.plugins.llm_scripted import ScriptedLLM
from appliance.personas.turns import PersonaTurnDetector

DIGITS = ["zero", "oh", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
SCRIPT = {
    "intents": {
        "check": {"phrases": ["check my order", "where is my order"], "reply": "What is your order number?",
                  "expects": "number"},
        "number": {"phrases": DIGITS, "tool": "lookup_order", "arguments": {"order": "{digits}"},
                   "after_tool": "Order {digits} is {status}."},
        "hours": {"phrases": ["opening hours"], "reply": "We are open nine to five."},
        "human": {"phrases": ["talk to a person"], "tool": "escalate", "arguments": {"reason": "{text}"}},
    },
}
TOOLS = {"lookup_order", "escalate"}


def conversation(*turns: str) -> llm.ChatContext:
    """Caller, persona, caller, … (the persona's turns as the script said them)."""
    ctx = llm.ChatContext()
    for i, text in enumerate(turns):
        ctx.add_message(role="user" if i % 2 == 0 else "assistant", content=text)
    return ctx


def script(read_back: int = 0) -> ScriptedLLM:
    return ScriptedLLM(SCRIPT, numbers={"read_back": read_back})


async def test_the_turn_stays_open_while_the_callers_words_end_in_a_digit():
    detector = PersonaTurnDetector()
    threshold = await detector.unlikely_threshold(None)
    assert threshold is not None
    assert await detector.predict_end_of_turn(conversation("my number is five five five")) < threshold
    assert await detector.predict_end_of_turn(conversation("five five five one two that is it")) > threshold
    assert await detector.predict_end_of_turn(conversation("I want to talk to")) > threshold
    # the persona speaking last: nothing of the caller's is open
    assert await detector.predict_end_of_turn(conversation("five", "What is your order number?")) > threshold


def test_words_that_are_not_a_whole_request_hold_the_turn_open_and_digits_are_left_to_the_number_pause():
    detector = PersonaTurnDetector(["check my order", "opening hours"], incomplete_pause=1.0)
    assert detector.holds_open("I would like to")
    assert detector.holds_open("hello")
    assert not detector.holds_open("I would like to check my order")
    assert not detector.holds_open("")
    # off: no phrases to judge by, or no pause to hold
    assert not PersonaTurnDetector(None, incomplete_pause=1.0).holds_open("I would like to")
    assert not PersonaTurnDetector(["check my order"], incomplete_pause=0).holds_open("I would like to")


async def test_a_held_turn_ends_as_likely_over_once_the_pause_has_passed():
    detector = PersonaTurnDetector(["check my order"], incomplete_pause=0.05)
    threshold = await detector.unlikely_threshold(None)
    assert threshold is not None
    assert await detector.predict_end_of_turn(conversation("I would like to")) > threshold


def test_after_asking_for_a_number_the_script_expects_one_and_then_no_longer():
    model = script()
    assert not model.expects_number(conversation("check my order"), TOOLS)  # not answered yet
    assert model.expects_number(conversation("check my order", "What is your order number?"), TOOLS)
    assert not model.expects_number(conversation("opening hours", "We are open nine to five."), TOOLS)
    # not understood: asked again, still expecting the number
    assert model.expects_number(conversation("check my order", "What is your order number?", "bananas",
                                             "Sorry, I did not catch that. Could you say it again?"), TOOLS)


def test_a_short_number_goes_to_the_tool_at_once():
    response = script(read_back=6).respond(conversation("check my order", "What is your order number?",
                                                        "four four two one"), TOOLS)
    assert response.tool_call is not None and json.loads(response.tool_call.arguments) == {"order": "4421"}


def test_a_long_number_is_read_back_and_its_tool_waits_for_yes():
    model = script(read_back=6)
    said = ["check my order", "What is your order number?", "five five five one two three four"]
    read_back = model.respond(conversation(*said), TOOLS)
    assert read_back.tool_call is None and read_back.text == "I heard 5 5 5 1 2 3 4. Is that right?"
    assert not model.expects_number(conversation(*said, read_back.text), TOOLS)  # yes or no now

    confirmed = model.respond(conversation(*said, read_back.text, "yes"), TOOLS)
    assert confirmed.tool_call is not None
    assert json.loads(confirmed.tool_call.arguments) == {"order": "5551234"}
    # the tool's answer speaks of the number, not of the "yes"
    ctx = conversation(*said, read_back.text, "yes")
    ctx.items.append(llm.FunctionCall(call_id="c1", name="lookup_order", arguments=confirmed.tool_call.arguments))
    ctx.items.append(llm.FunctionCallOutput(call_id="c1", name="lookup_order", output='{"status": "shipped"}',
                                            is_error=False))
    assert model.respond(ctx, TOOLS).text == "Order 5551234 is shipped."


def test_only_a_tool_that_takes_the_number_waits_for_the_read_back():
    response = script(read_back=6).respond(conversation("talk to a person about order five five five one two three"),
                                           TOOLS)
    assert response.tool_call is not None and response.tool_call.name == "escalate"


def test_no_to_the_read_back_asks_for_the_number_again():
    model = script(read_back=6)
    said = ["check my order", "What is your order number?", "five five five one two three four",
            "I heard 5 5 5 1 2 3 4. Is that right?", "no"]
    again = model.respond(conversation(*said), TOOLS)
    assert again.tool_call is None and again.text == Numbers().again_prompt
    assert model.expects_number(conversation(*said, again.text), TOOLS)
    # the number said again is read back again
    retold = model.respond(conversation(*said, again.text, "five five five one two three five"), TOOLS)
    assert retold.text == "I heard 5 5 5 1 2 3 5. Is that right?"


def test_the_same_conversation_gets_the_same_answer_however_often_it_is_asked():
    # livekit may generate a reply early and throw it away: nothing may hang on having asked
    model = script(read_back=6)
    ctx = conversation("check my order", "What is your order number?", "five five five one two three four",
                       "I heard 5 5 5 1 2 3 4. Is that right?", "yes")
    first, second = model.respond(ctx, TOOLS), model.respond(ctx, TOOLS)
    assert first.tool_call is not None and second.tool_call is not None
    assert first.tool_call.arguments == second.tool_call.arguments


def test_a_read_back_prompt_without_the_number_is_refused():
    with pytest.raises(ValueError, match="number"):
        Numbers(read_back_prompt="Is that right?")
