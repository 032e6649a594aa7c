"""ScriptedLLM through livekit's chat(): replies, tool calls, answers from tool results, fallback,
and a supervisor's whisper changing the next reply."""

from __future__ import annotations

import json

import pytest
from livekit.agents import function_tool, llm
from pydantic import ValidationError

from appliance.personas.plugins.llm_scripted import ScriptedConfig, ScriptedLLM, said_digits
from appliance.personas.whisper import whisper_message

SCRIPT = {
    "intents": {
        "order": {
            "phrases": ["check my order", "where is my order", "order status"],
            "tool": "lookup_order",
            "arguments": {"order_id": "{digits}"},
            "reply": "I can look that up once I have the order number.",
            "after_tool": "Order {order_id} is {status}; it arrives {eta}.",
        },
        "hours": {"phrases": ["opening hours", "when are you open"], "reply": "{company} is open nine to five."},
        "repeat": {"phrases": ["say it back"], "reply": "You said: {text}"},
        "goodbye": {"phrases": ["goodbye", "that is all"], "tool": "end_call"},
    },
    "whispers": {
        "discount": {"phrases": ["discount"], "reply": "Good news: I can offer you a ten percent discount."},
        "read_back": {"phrases": ["read them order"], "tool": "lookup_order", "arguments": {"order_id": "{digits}"},
                      "after_tool": "Order {order_id} is {status}."},
    },
}


@function_tool
async def lookup_order(order_id: str) -> dict:
    """Look up an order by its number."""
    return {"order_id": order_id, "status": "shipped", "eta": "Tuesday"}


@function_tool
async def end_call() -> None:
    """End the call."""


def scripted() -> ScriptedLLM:
    return ScriptedLLM(SCRIPT, variables={"company": "Acme"})


def caller_says(text: str) -> llm.ChatContext:
    ctx = llm.ChatContext()
    ctx.add_message(role="system", content="You answer the phone for Acme.")
    ctx.add_message(role="user", content=text)
    return ctx


async def chunks(model: ScriptedLLM, ctx: llm.ChatContext, tools: list | None = None, **kwargs) -> list[llm.ChatChunk]:
    async with model.chat(chat_ctx=ctx, tools=tools or [], **kwargs) as stream:
        return [chunk async for chunk in stream]


def text_of(received: list[llm.ChatChunk]) -> str:
    return "".join(c.delta.content or "" for c in received if c.delta)


async def test_a_reply_is_streamed_word_by_word_with_variables() -> None:
    received = await chunks(scripted(), caller_says("When are you open?"))

    assert text_of(received) == "Acme is open nine to five."
    assert len(received) == 6
    assert all(c.delta.role == "assistant" and not c.delta.tool_calls for c in received)


async def test_the_callers_words_can_be_echoed() -> None:
    assert text_of(await chunks(scripted(), caller_says("please say it back to me"))) == \
        "You said: please say it back to me"


async def test_an_intent_with_an_offered_tool_calls_it_with_rendered_arguments() -> None:
    received = await chunks(scripted(), caller_says("I would like to check my order 1 2 3 4"), tools=[lookup_order])

    assert text_of(received) == ""
    [call] = [tc for c in received for tc in c.delta.tool_calls]
    assert call.name == "lookup_order"
    assert json.loads(call.arguments) == {"order_id": "1234"}
    assert call.call_id


async def test_without_the_tool_the_intent_replies_instead() -> None:
    received = await chunks(scripted(), caller_says("where is my order"), tools=[end_call])

    assert text_of(received) == "I can look that up once I have the order number."


async def test_tool_choice_none_keeps_the_script_from_calling_tools() -> None:
    received = await chunks(scripted(), caller_says("where is my order"), tools=[lookup_order], tool_choice="none")

    assert text_of(received) == "I can look that up once I have the order number."


def after_tool(text: str, output: str, *, name: str = "lookup_order", is_error: bool = False) -> llm.ChatContext:
    ctx = caller_says(text)
    ctx.insert(llm.FunctionCall(call_id="call_1", name=name, arguments="{}"))
    ctx.insert(llm.FunctionCallOutput(call_id="call_1", name=name, output=output, is_error=is_error))
    return ctx


@pytest.mark.parametrize("output", [
    '{"order_id": "1234", "status": "shipped", "eta": "Tuesday"}',  # a tool returning JSON text
    "{'order_id': '1234', 'status': 'shipped', 'eta': 'Tuesday'}",  # livekit's str() of a returned dict
])
async def test_after_the_tool_the_answer_uses_its_result(output: str) -> None:
    received = await chunks(scripted(), after_tool("check my order 1 2 3 4", output), tools=[lookup_order])

    assert text_of(received) == "Order 1234 is shipped; it arrives Tuesday."


async def test_a_plain_text_result_is_the_field_result() -> None:
    model = ScriptedLLM({"intents": {"weather": {
        "phrases": ["weather"], "tool": "forecast", "after_tool": "The forecast: {result}."}}})

    received = await chunks(model, after_tool("what is the weather", "sunny", name="forecast"))

    assert text_of(received) == "The forecast: sunny."


async def test_a_tool_error_is_answered_with_the_fallback() -> None:
    received = await chunks(scripted(), after_tool("check my order 9", "An internal error occurred", is_error=True))

    assert text_of(received) == ScriptedConfig().fallback


async def test_a_tool_that_only_acts_says_nothing_after_it() -> None:
    received = await chunks(scripted(), after_tool("goodbye", "", name="end_call"), tools=[end_call])

    assert text_of(received) == ""


async def test_words_that_match_no_intent_get_the_fallback() -> None:
    received = await chunks(scripted(), caller_says("bananas are yellow"), tools=[lookup_order])

    assert text_of(received) == "Sorry, I did not catch that. Could you say it again?"


async def test_no_caller_words_yet_get_the_fallback() -> None:
    ctx = llm.ChatContext()
    ctx.add_message(role="system", content="You answer the phone.")

    assert text_of(await chunks(scripted(), ctx)) == ScriptedConfig().fallback


def whispered(*said: str | tuple[str, str]) -> llm.ChatContext:
    """A conversation: plain strings are the caller's and the persona's turns, alternately from
    the persona's greeting; a ("whisper", text) is a supervisor's whisper at that point."""
    ctx = llm.ChatContext()
    ctx.add_message(role="system", content="You answer the phone for Acme.")
    role = "assistant"
    for item in said:
        if isinstance(item, tuple):
            ctx.insert(whisper_message(item[1], by="sup-anna"))
            continue
        ctx.add_message(role=role, content=item)
        role = "user" if role == "assistant" else "assistant"
    return ctx


async def test_a_whisper_changes_the_next_reply_only() -> None:
    model = scripted()
    conversation = ["Hello, Acme.", ("whisper", "Offer the caller a ten percent discount"), "when are you open"]

    assert text_of(await chunks(model, whispered(*conversation))) == \
        "Good news: I can offer you a ten percent discount."
    # Once the persona has answered, the whisper is spent: the caller's words count again.
    later = [*conversation, "Good news: I can offer you a ten percent discount.", "when are you open"]
    assert text_of(await chunks(model, whispered(*later))) == "Acme is open nine to five."
    # And without one, the same turn is answered as it always was.
    assert text_of(await chunks(model, whispered("Hello, Acme.", "when are you open"))) == "Acme is open nine to five."


async def test_a_whisper_the_script_has_no_phrase_for_leaves_the_callers_turn_alone() -> None:
    ctx = whispered("Hello, Acme.", ("whisper", "be extra polite"), "when are you open")

    assert text_of(await chunks(scripted(), ctx)) == "Acme is open nine to five."


async def test_a_whisper_can_call_a_tool_with_what_the_supervisor_typed() -> None:
    ctx = whispered("Hello, Acme.", ("whisper", "read them order 5 5 1"), "bananas are yellow")

    [call] = [tc for c in await chunks(scripted(), ctx, tools=[lookup_order]) for tc in c.delta.tool_calls]
    assert (call.name, json.loads(call.arguments)) == ("lookup_order", {"order_id": "551"})

    ctx.insert(llm.FunctionCall(call_id="call_1", name="lookup_order", arguments=call.arguments))
    ctx.insert(llm.FunctionCallOutput(call_id="call_1", name="lookup_order", output='{"order_id": "551", '
                                      '"status": "shipped"}', is_error=False))
    assert text_of(await chunks(scripted(), ctx, tools=[lookup_order])) == "Order 551 is shipped."


@pytest.mark.parametrize("said, digits", [
    ("I would like to check my order 1 2 3 4", "1234"),
    ("order four two seven one please", "4271"),
    ("oh, my order is 5 6 7", "567"),
    ("to for", "24"),  # a digits grammar's homophones, and nothing else
    ("I want to talk to sales", ""),
])
def test_the_digits_the_caller_said(said: str, digits: str) -> None:
    assert said_digits(said) == digits


@pytest.mark.parametrize("config, problem", [
    ({"intents": {"x": {"phrases": ["x"]}}}, "needs a 'reply' or a 'tool'"),
    ({"intents": {"x": {"phrases": ["x"], "reply": "hi", "arguments": {"a": "b"}}}}, "need a 'tool'"),
    ({"intents": {"x": {"phrases": [], "reply": "hi"}}}, "at least 1"),
    ({"intents": {}, "greeting": "hello"}, "Extra inputs"),
    ({"intents": {"x": {"phrases": ["x"], "reply": "hi {name}"}}}, r"intents.x.reply uses \{name\}"),
    ({"intents": {"x": {"phrases": ["x"], "reply": "hi {text.upper}"}}}, "plain name"),
    ({"whispers": {"w": {"phrases": ["w"], "reply": "hi {name}"}}}, r"whispers.w.reply uses \{name\}"),
])
def test_a_bad_script_is_refused_with_where_and_why(config: dict, problem: str) -> None:
    with pytest.raises((ValidationError, ValueError), match=problem):
        ScriptedLLM(config)


def test_text_and_digits_are_not_variables() -> None:
    with pytest.raises(ValueError, match="reserved"):
        ScriptedLLM(SCRIPT, variables={"text": "x", "company": "Acme"})
