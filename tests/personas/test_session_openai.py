"""The "openai" provider against an OpenAI-compatible endpoint (here a local fake speaking the
streaming protocol): a streamed tool call, the tool's output sent back, then the final answer;
a supervisor's whisper reaches the model in its context."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from livekit.agents import Agent, AgentSession, function_tool

from appliance.personas.plugins import build_llm
from appliance.personas.whisper import PREFIX, whisper
from tests.personas.openai_endpoint import ChatEndpoint


@function_tool
async def lookup_order(order_id: str) -> dict:
    """Look up an order by its number."""
    return {"order_id": order_id, "status": "shipped"}


@pytest.fixture
async def endpoint() -> AsyncIterator[ChatEndpoint]:
    server = ChatEndpoint()
    await server.start()
    yield server
    await server.stop()


async def test_a_streamed_tool_call_then_the_answer_from_its_output(endpoint: ChatEndpoint, monkeypatch) -> None:
    monkeypatch.setenv("SWITCHBOARD_TEST_KEY", "sk-local")
    model = build_llm({"name": "openai", "options": {
        "base_url": endpoint.url, "model": "test", "api_key_env": "SWITCHBOARD_TEST_KEY"}})

    async with AgentSession(llm=model) as session:
        await session.start(Agent(instructions="You answer order questions.", tools=[lookup_order]))
        result = await session.run(user_input="Where is my order 1234?")

        result.expect.next_event().is_function_call(name="lookup_order", arguments={"order_id": "1234"})
        result.expect.next_event().is_function_call_output()
        answer = result.expect.next_event().is_message(role="assistant")
        result.expect.no_more_events()

        result = await session.run(user_input="Who are you?")
        plain = result.expect.next_event().is_message(role="assistant")
    await model.aclose()

    assert "shipped" in answer.event().item.text_content
    assert plain.event().item.text_content == "I am a test model."
    first, second, third = endpoint.requests
    assert first["model"] == "test" and first["stream"] is True
    assert [t["function"]["name"] for t in first["tools"]] == ["lookup_order"]
    # The tool's output went back to the model under the call's id.
    assert second["messages"][-2]["tool_calls"][0]["id"] == "call_test1"
    assert json.loads(second["messages"][-2]["tool_calls"][0]["function"]["arguments"]) == {"order_id": "1234"}
    assert second["messages"][-1]["role"] == "tool" and second["messages"][-1]["tool_call_id"] == "call_test1"
    assert third["messages"][-1] == {"role": "user", "content": "Who are you?"}
    assert {h.get("Authorization") for h in endpoint.headers} == {"Bearer sk-local"}


def test_the_key_comes_from_the_named_environment_variable(monkeypatch) -> None:
    monkeypatch.delenv("SWITCHBOARD_NO_SUCH_KEY", raising=False)

    with pytest.raises(ValueError, match="SWITCHBOARD_NO_SUCH_KEY"):
        build_llm({"name": "openai", "options": {"model": "test", "api_key_env": "SWITCHBOARD_NO_SUCH_KEY"}})
    with pytest.raises(ValueError, match="api_key_env"):
        build_llm({"name": "openai", "options": {"model": "test", "api_key": "sk-in-a-file"}})


async def test_a_whisper_is_in_the_models_context_for_its_next_reply(endpoint: ChatEndpoint, monkeypatch) -> None:
    monkeypatch.setenv("SWITCHBOARD_TEST_KEY", "sk-local")
    model = build_llm({"name": "openai", "options": {
        "base_url": endpoint.url, "model": "test", "api_key_env": "SWITCHBOARD_TEST_KEY"}})

    async with AgentSession(llm=model) as session:
        await session.start(Agent(instructions="You answer order questions."))
        await whisper(session, "Offer a ten percent discount.", by="sup-anna")
        assert endpoint.requests == []  # a whisper asks the model for nothing by itself
        await session.run(user_input="Who are you?")
    await model.aclose()

    [request] = endpoint.requests
    assert request["messages"][-2:] == [
        {"role": "system", "content": PREFIX + "Offer a ten percent discount."},
        {"role": "user", "content": "Who are you?"},
    ]
