"""A supervisor's whisper to a persona: typed text that enters the persona's chat context.

It is a system message marked in `extra`, added without starting a reply, so the caller
hears nothing until the persona's next turn; any LLM reads it there as an instruction, and
the scripted LLM finds it with `pending_whispers`.
"""

from __future__ import annotations

from livekit.agents import AgentSession, llm

__all__ = ["PREFIX", "pending_whispers", "whisper", "whisper_message"]

PREFIX = "Supervisor instruction (the caller does not hear this; act on it in your next reply): "
_EXTRA = "supervisor_whisper"  # the ChatMessage.extra key: {"by": identity, "text": what was typed}


def whisper_message(text: str, by: str) -> llm.ChatMessage:
    return llm.ChatMessage(role="system", content=[PREFIX + text], extra={_EXTRA: {"by": by, "text": text}})


async def whisper(session: AgentSession, text: str, by: str) -> None:
    """Add the whisper to the running agent's context and to the session's history (which a
    hand-off passes on). `update_chat_ctx` starts no reply: the persona acts on it when it
    next answers the caller."""
    message = whisper_message(text, by)
    session.history.insert(message)
    agent = session.current_agent
    chat_ctx = agent.chat_ctx.copy()
    chat_ctx.insert(message)
    await agent.update_chat_ctx(chat_ctx)


def pending_whispers(chat_ctx: llm.ChatContext) -> list[str]:
    """What supervisors typed since the persona last spoke, newest first."""
    pending: list[str] = []
    for item in reversed(chat_ctx.items):
        if not isinstance(item, llm.ChatMessage):
            continue
        if item.role == "assistant" and item.text_content:
            break  # an empty reply (a reply cut before the caller heard a word) acted on nothing
        if _EXTRA in item.extra:
            pending.append(str(item.extra[_EXTRA]["text"]))
    return pending
