"""When a caller's turn ends: livekit-agents' turn-detector hook, asked once the words so far are in.

The VAD reports the end of speech after a short silence (`personas.endpointing_s`, 0.06 s); a
turn ends there only when the caller's words make a whole request. Otherwise it stays open, and
speech resuming in that time continues the same turn, its transcript appended:

- words ending in a digit: the persona's `numbers.pause` (2 s), for numbers read in groups
  ("five five five … one two": with the VAD alone the pause ended the turn and the tool got
  the first group);
- words that are not a whole request ("I would like to …", "where is my …",
  `appliance.flow.intents.complete`): the persona's `turns.incomplete_pause` (1 s).

livekit's hook has two waits per agent: below `unlikely_threshold` it waits `max_delay` (set
to `numbers.pause`), else `min_delay` (the VAD's silence, already over). The third, shorter
wait is taken here, inside the prediction: livekit cancels the prediction's task the moment the
VAD hears the caller again, or a new final transcript arrives, so the wait ends with the pause,
as its own do.

When the caller went on after a held pause and stopped again, livekit asks first on the words
before the pause and flushes the STT only after the answer: held there, the rest of the sentence
would wait the whole pause for its transcript. So a held turn (a number's too) first asks the
STT for what it still holds (`transcribe_pending`); its final transcript makes livekit ask
again, on every word. (The persona's grammar hears "to" as "two" where digits are words of it:
"I would like to …" is held as a number may be.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from livekit.agents import llm
from livekit.agents.language import LanguageCode

from appliance.flow import intents

__all__ = ["PersonaTurnDetector", "caller_words"]

UNLIKELY = 0.5


class PersonaTurnDetector:
    """The turn is unlikely over while the words end in a digit, and held `incomplete_pause`
    while they are not a whole request by `phrases` (None: the check is off, `incomplete_pause`
    0 as well)."""

    def __init__(self, phrases: list[str] | None = None, incomplete_pause: float = 0.0) -> None:
        self._phrases = phrases
        self._incomplete_pause = incomplete_pause
        # The STT's words not yet given as a final transcript, transcribed now (see the module doc).
        self.transcribe_pending: Callable[[], Awaitable[bool]] | None = None

    @property
    def model(self) -> str:
        return "words-so-far"

    @property
    def provider(self) -> str:
        return "switchboard"

    async def unlikely_threshold(self, language: LanguageCode | None) -> float | None:
        return UNLIKELY

    async def supports_language(self, language: LanguageCode | None) -> bool:
        return True  # digits and the persona's phrases are words of its grammar, whatever the tag says

    async def predict_end_of_turn(self, chat_ctx: llm.ChatContext, *, timeout: float | None = None) -> float:
        said = caller_words(chat_ctx)
        number, held = intents.ends_in_digit(said), self.holds_open(said)
        if (number or held) and self.transcribe_pending is not None:
            await self.transcribe_pending()
        if number:
            return 0.0
        if held:
            await asyncio.sleep(self._incomplete_pause)  # cancelled by livekit when the caller goes on
        return 1.0

    def holds_open(self, said: str) -> bool:
        """Whether these words (not ending in a digit) keep the turn open `incomplete_pause`."""
        return (self._phrases is not None and self._incomplete_pause > 0 and bool(said.strip())
                and not intents.complete(said, self._phrases))


def caller_words(chat_ctx: llm.ChatContext) -> str:
    """The caller's turn so far: livekit adds it to the context as the last user message."""
    for item in reversed(chat_ctx.items):
        if isinstance(item, llm.ChatMessage):
            return (item.text_content or "") if item.role == "user" else ""
    return ""
