"""The persona's own summary for the supervisor who takes its call over, written by its LLM.

Asked only of a real LLM: the scripted one would repeat its script, and the hub's offline
summary (transcript, variables, tool calls) already says what it knows. The request is the
persona's history with one instruction after it; no tools are offered, so the model answers
in text and cannot act on the call while the supervisor has it.
"""

from __future__ import annotations

import asyncio

from livekit.agents import llm

__all__ = ["INSTRUCTION", "SUMMARY_TIMEOUT_S", "summarise"]

# The supervisor has already started talking to the caller: a late summary is still useful,
# one that never comes must not hold a task open for the rest of the call.
SUMMARY_TIMEOUT_S = 20.0
MAX_CHARS = 2000
INSTRUCTION = ("A human supervisor is taking this phone call over from you now; you will not speak again. "
               "For them, in at most three short sentences of plain text: who the caller is, what they want, "
               "what you did or found (tool results included), and what is still open.")


async def summarise(model: llm.LLM, history: llm.ChatContext) -> str:
    """The model's summary of `history`; raises on a provider error or after SUMMARY_TIMEOUT_S."""
    chat_ctx = history.copy(exclude_empty_message=True, exclude_handoff=True, exclude_config_update=True)
    chat_ctx.add_message(role="system", content=INSTRUCTION)

    async def ask() -> str:
        response = await model.chat(chat_ctx=chat_ctx).collect()
        return response.text.strip()

    text = await asyncio.wait_for(ask(), SUMMARY_TIMEOUT_S)
    return text[:MAX_CHARS]
