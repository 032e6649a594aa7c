"""When a caller's turn ends: livekit-agents' turn-detector hook, for numbers read in groups.

With the session's VAD endpointing alone, a turn ends `endpointing_s` after the caller stops
(0.25 s + silero's 0.25 s): the pause inside "five five five … one two" ended it, the persona
called its tool with the first group, and then failed to understand the rest. livekit asks a
turn detector, once a transcript is in, how likely the turn is over; below `unlikely_threshold`
it waits the agent's `max_delay` (the persona's `numbers.pause`) instead of `min_delay`, and
speech resuming in that wait continues the same turn, its transcript appended.
"""

from __future__ import annotations

from livekit.agents import llm
from livekit.agents.language import LanguageCode

from appliance.flow import intents

__all__ = ["NumberTurnDetector"]


class NumberTurnDetector:
    """The turn is unlikely over while the caller's words so far end in a digit."""

    @property
    def model(self) -> str:
        return "ends-in-digit"

    @property
    def provider(self) -> str:
        return "switchboard"

    async def unlikely_threshold(self, language: LanguageCode | None) -> float | None:
        return 0.5

    async def supports_language(self, language: LanguageCode | None) -> bool:
        return True  # digits are words of the grammar, whatever the language tag says

    async def predict_end_of_turn(self, chat_ctx: llm.ChatContext, *, timeout: float | None = None) -> float:
        return 0.0 if intents.ends_in_digit(caller_words(chat_ctx)) else 1.0


def caller_words(chat_ctx: llm.ChatContext) -> str:
    """The caller's turn so far: livekit adds it to the context as the last user message."""
    for item in reversed(chat_ctx.items):
        if isinstance(item, llm.ChatMessage):
            return (item.text_content or "") if item.role == "user" else ""
    return ""
