"""Persona definitions (`flows/personas/<name>.yaml`): AI voice agents a flow hands callers to.

Part of the language admins write, so the flow checker validates them; the runtime that
turns one into a livekit-agents Agent lives in appliance/personas/.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

TOOL_NAME = r"^[a-z_][a-z0-9_]*$"
# On unless `builtins:` lists others; the recording ones only where listed (a persona that takes
# card numbers asks for them).
DEFAULT_BUILTINS = ("escalate", "transfer", "end_call", "set_variable", "handoff", "send_dtmf")
BUILTIN_TOOLS = (*DEFAULT_BUILTINS, "pause_recording", "resume_recording")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProviderSpec(_Model):
    """A provider by name: an offline one (pocketsphinx, espeak, silero, scripted), `openai`
    for any OpenAI-compatible endpoint, or any installed livekit plugin."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    options: dict[str, Any] = Field(default_factory=dict)


class Providers(_Model):
    stt: ProviderSpec = Field(default_factory=lambda: ProviderSpec(name="pocketsphinx"))
    tts: ProviderSpec = Field(default_factory=lambda: ProviderSpec(name="espeak"))
    vad: ProviderSpec = Field(default_factory=lambda: ProviderSpec(name="silero"))
    llm: ProviderSpec = Field(default_factory=lambda: ProviderSpec(name="scripted"))


class ScriptedIntent(_Model):
    """When the caller says one of `phrases`: call `tool` with `arguments` if the agent offers
    it, then say `after_tool` (or `reply`) filled with the result's fields; else say `reply`.
    Templates use {text}, {digits}, the persona's variables and, after a tool, its fields.
    `expects: number` when the reply asks for one: the caller's answer is heard as digits only."""

    phrases: list[str] = Field(min_length=1)
    reply: str | None = None
    tool: str | None = Field(None, pattern=TOOL_NAME)
    arguments: dict[str, str] = Field(default_factory=dict)
    after_tool: str | None = None
    expects: Literal["number"] | None = None

    @model_validator(mode="after")
    def _does_something(self) -> ScriptedIntent:
        if self.reply is None and self.tool is None:
            raise ValueError("a scripted intent needs a 'reply' or a 'tool'")
        if self.tool is None and (self.arguments or self.after_tool is not None):
            raise ValueError("'arguments' and 'after_tool' need a 'tool'")
        return self


class Scripted(_Model):
    intents: dict[str, ScriptedIntent] = Field(default_factory=dict)
    # A supervisor's whisper (typed, never heard by the caller) matched against these phrases:
    # the persona's next reply is that intent's, with {text} and {digits} from what was typed.
    whispers: dict[str, ScriptedIntent] = Field(default_factory=dict)
    fallback: str = "Sorry, I did not catch that. Could you say it again?"


class WebhookTool(_Model):
    """A custom tool: the LLM's arguments POSTed as JSON; the JSON reply is the tool's result."""

    name: str = Field(pattern=TOOL_NAME)
    description: str
    url: str
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    timeout: float = Field(5.0, gt=0, le=30)

    @model_validator(mode="after")
    def _not_builtin(self) -> WebhookTool:
        if self.name in BUILTIN_TOOLS:
            raise ValueError(f"'{self.name}' is a built-in tool; pick another name")
        return self


class Limits(_Model):
    max_turns: int = Field(30, ge=1, le=500)
    max_silence: float = Field(20.0, gt=1, le=600, description="seconds of caller silence before the persona gives up")


class Numbers(_Model):
    """Numbers callers read out (account, order, prescription numbers), in groups with pauses."""

    pause: float = Field(2.0, gt=0, le=10, description="seconds of silence after the caller's words end in a "
                         "digit before their turn ends: the next group of the number may follow")
    read_back: int = Field(0, ge=0, le=32, description="read back a number of this many digits or more and wait "
                           "for a yes before a tool gets it (0: never)")
    read_back_prompt: str = "I heard {number}. Is that right?"
    again_prompt: str = "Sorry. Please say the number again."

    @model_validator(mode="after")
    def _reads_the_number_back(self) -> Numbers:
        if "{number}" not in self.read_back_prompt:
            raise ValueError("read_back_prompt must say the number back: put {number} in it")
        return self


class Turns(_Model):
    """When the caller's turn ends. The VAD reports the end of their speech after the box's short
    `personas.endpointing_s` of silence; words that make a whole request end the turn there, words
    that do not ("I would like to", "where is my") keep it open for the rest of the sentence."""

    incomplete_pause: float = Field(1.0, ge=0, le=10, description="seconds the turn stays open after the end "
                                    "of speech when the caller's words so far are not a whole request (none of "
                                    "the persona's phrases word for word, or a last word such as 'to' or 'my' "
                                    "that leads into more); speech in that time continues the turn (0: every "
                                    "turn ends at the end of speech, numbers aside)")


class Interruption(_Model):
    # Telephone noise and "uh-huh" must not cut the persona off.
    min_duration: float = Field(0.5, ge=0, le=5)
    min_words: int = Field(0, ge=0, le=10)


class Persona(_Model):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$")
    instructions: str
    greeting: str | None = None
    voice: str = "en-us"
    language: str = "en"
    providers: Providers = Field(default_factory=Providers)
    scripted: Scripted | None = None
    tools: list[WebhookTool] = Field(default_factory=list)
    builtins: list[str] = Field(default_factory=lambda: list(DEFAULT_BUILTINS))
    handoffs: list[str] = Field(default_factory=list, description="personas this one may hand the caller to")
    limits: Limits = Field(default_factory=Limits)
    interruption: Interruption = Field(default_factory=Interruption)
    turns: Turns = Field(default_factory=Turns)
    numbers: Numbers = Field(default_factory=Numbers)
    fallback_prompt: str = "Sorry, I am having trouble. Let me get you some help."

    @model_validator(mode="after")
    def _consistent(self) -> Persona:
        unknown = set(self.builtins) - set(BUILTIN_TOOLS)
        if unknown:
            raise ValueError(f"unknown built-in tools {sorted(unknown)}; built-ins are {', '.join(BUILTIN_TOOLS)}")
        if self.providers.llm.name == "scripted" and self.scripted is None:
            raise ValueError("the scripted LLM needs a 'scripted:' section with intents")
        names = {t.name for t in self.tools} | set(self.builtins)
        scripted = self.scripted or Scripted()
        for kind, intents in (("intent", scripted.intents), ("whisper", scripted.whispers)):
            for intent_name, intent in intents.items():
                if intent.tool and intent.tool not in names:
                    raise ValueError(f"scripted {kind} '{intent_name}' calls unknown tool '{intent.tool}'")
        return self
