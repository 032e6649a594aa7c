"""A livekit-agents AgentSession in text mode on the offline ScriptedLLM: a persona that calls a
plain Python tool and answers with its result, one that falls back when it does not understand,
and one a supervisor whispers to."""

from __future__ import annotations

from livekit.agents import Agent, AgentSession, function_tool

from appliance.personas.plugins import build_llm
from appliance.personas.whisper import PREFIX, whisper

ORDERS = {"1234": {"status": "shipped", "eta": "Tuesday"}}
looked_up: list[str] = []


@function_tool
async def lookup_order(order_id: str) -> dict:
    """Look up an order by its number."""
    looked_up.append(order_id)
    return {"order_id": order_id, **ORDERS.get(order_id, {"status": "unknown", "eta": "never"})}


SCRIPT = {
    "name": "scripted",
    "options": {
        "intents": {
            "order": {
                "phrases": ["check my order", "where is my order"],
                "tool": "lookup_order",
                "arguments": {"order_id": "{digits}"},
                "after_tool": "Order {order_id} has {status} and arrives {eta}.",
            },
            "hours": {"phrases": ["opening hours"], "reply": "{company} is open nine to five."},
        },
        "whispers": {"discount": {"phrases": ["discount"], "reply": "I can offer you a ten percent discount."}},
        "variables": {"company": "Acme"},
    },
}


async def test_a_persona_calls_a_tool_and_answers_with_its_result() -> None:
    looked_up.clear()
    async with AgentSession(llm=build_llm(SCRIPT)) as session:
        await session.start(Agent(instructions="You answer order questions for Acme.", tools=[lookup_order]))

        result = await session.run(user_input="I would like to check my order 1 2 3 4")

        result.expect.next_event().is_function_call(name="lookup_order", arguments={"order_id": "1234"})
        result.expect.next_event().is_function_call_output(is_error=False)
        answer = result.expect.next_event().is_message(role="assistant")
        result.expect.no_more_events()
        assert answer.event().item.text_content == "Order 1234 has shipped and arrives Tuesday."
        assert looked_up == ["1234"]

        result = await session.run(user_input="what are your opening hours")
        hours = result.expect.next_event().is_message(role="assistant")
        assert hours.event().item.text_content == "Acme is open nine to five."


async def test_words_the_persona_does_not_understand_get_the_fallback() -> None:
    async with AgentSession(llm=build_llm(SCRIPT)) as session:
        await session.start(Agent(instructions="You answer order questions for Acme.", tools=[lookup_order]))

        result = await session.run(user_input="do you sell bananas")

        reply = result.expect.next_event().is_message(role="assistant")
        result.expect.no_more_events()
        assert reply.event().item.text_content == "Sorry, I did not catch that. Could you say it again?"
        # The conversation is recorded as a model would see it next turn.
        roles = [item.role for item in session.history.items if item.type == "message"]
        assert roles[-2:] == ["user", "assistant"]


async def test_a_whisper_shapes_the_next_reply_and_says_nothing_itself() -> None:
    async with AgentSession(llm=build_llm(SCRIPT)) as session:
        await session.start(Agent(instructions="You answer order questions for Acme.", tools=[lookup_order]))

        await whisper(session, "Offer the caller a ten percent discount", by="sup-anna")
        assert [item.role for item in session.history.items if item.type == "message"] == ["system"]

        result = await session.run(user_input="what are your opening hours")
        reply = result.expect.next_event().is_message(role="assistant")
        result.expect.no_more_events()
        assert reply.event().item.text_content == "I can offer you a ten percent discount."
        [seen] = [item for item in session.current_agent.chat_ctx.items
                  if item.type == "message" and item.role == "system" and PREFIX in (item.text_content or "")]
        assert seen.text_content == PREFIX + "Offer the caller a ten percent discount"

        result = await session.run(user_input="what are your opening hours")
        assert result.expect.next_event().is_message(role="assistant").event().item.text_content == \
            "Acme is open nine to five."
