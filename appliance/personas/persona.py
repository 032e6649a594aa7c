"""A persona definition → a livekit-agents Agent: instructions, providers and tools.

Built-in tools act on the call through `PersonaCall` (escalate, transfer, end_call,
set_variable, handoff, send_dtmf); custom tools are HTTP webhooks declared in YAML with a
JSON schema for their arguments.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any, Protocol

from livekit import rtc
from livekit.agents import Agent, ModelSettings, RunContext, function_tool, llm, stt
from livekit.agents.llm.tool_context import get_fnc_tool_names

from appliance.flow.persona import Persona, WebhookTool
from appliance.flow.webhook import WebhookError, post_json
from appliance.personas.plugins import build_llm, build_stt, build_tts
from appliance.personas.plugins.llm_scripted import CONFIRM, ScriptedLLM
from appliance.personas.plugins.stt_pocketsphinx import PocketsphinxSTT, grammar_for
from appliance.personas.turns import PersonaTurnDetector


class PersonaCall(Protocol):
    """What a persona's tools can do to the call it is in."""

    variables: dict[str, Any]

    def tool_event(self, name: str, arguments: dict[str, Any], result: Any) -> None: ...
    def exit_after_reply(self, exit_: str, variables: dict[str, Any], reason: str) -> None: ...
    def call_action(self, action: str, arguments: dict[str, Any]) -> None: ...
    def load_persona(self, name: str) -> Persona: ...
    def heard_back_channel(self) -> bool: ...


def build_agent(persona: Persona, call: PersonaCall, chat_ctx: llm.ChatContext | None = None) -> Agent:
    scripted = persona.scripted.model_dump() if persona.scripted else None
    llm_spec = persona.providers.llm.model_dump()
    if llm_spec["name"] == "scripted":
        llm_spec["options"] = {**(scripted or {}), "variables": _scalar(call.variables),
                               "numbers": persona.numbers.model_dump(), **llm_spec["options"]}
    stt_spec = persona.providers.stt.model_dump()
    if stt_spec["name"] == "pocketsphinx" and "grammar" not in stt_spec["options"]:
        stt_spec["options"] = {**stt_spec["options"], "grammar": grammar_for_persona(persona)}
    tts_spec = persona.providers.tts.model_dump()
    if tts_spec["name"] == "espeak":
        tts_spec["options"] = {"voice": persona.voice, **tts_spec["options"]}
    tools = _builtin_tools(persona, call) + [_webhook_tool(t, call) for t in persona.tools]
    turns = PersonaTurnDetector(request_phrases(persona) or [], persona.turns.incomplete_pause)
    agent = PersonaAgent(
        call,
        instructions=persona.instructions + _read_back_instructions(persona),
        tools=tools,
        stt=build_stt(stt_spec),
        llm=build_llm(llm_spec),
        tts=build_tts(tts_spec),
        chat_ctx=chat_ctx,
        # A pause inside a number read in groups, or inside a sentence, must not end the caller's turn.
        turn_handling={"turn_detection": turns, "endpointing": {"max_delay": persona.numbers.pause}},
    )
    if isinstance(agent.stt, PocketsphinxSTT):
        turns.transcribe_pending = agent.stt.transcribe_pending
    _listen_for_numbers(persona, agent)
    return agent


def _read_back_instructions(persona: Persona) -> str:
    if not persona.numbers.read_back or persona.providers.llm.name == "scripted":
        return ""  # the script reads numbers back itself (ScriptedLLM)
    return (f"\n\nBefore you call a tool with a number of {persona.numbers.read_back} digits or more that the "
            "caller said, read the number back to them digit by digit and call the tool only once they "
            "confirm it is right; if it is wrong, ask them to say it again.")


def _listen_for_numbers(persona: Persona, agent: Agent) -> None:
    """When the script asks for a number, its STT hears digits alone (a filler cannot take a
    digit's place): the persona's `expects: number` intents."""
    asks = persona.scripted is not None and any(i.expects for i in persona.scripted.intents.values())
    if asks and isinstance(agent.stt, PocketsphinxSTT) and isinstance(agent.llm, ScriptedLLM):
        script, names = agent.llm, set(get_fnc_tool_names(agent.tools))
        agent.stt.listen_for_numbers(lambda: script.expects_number(agent.chat_ctx, names))


class PersonaAgent(Agent):
    """An Agent that does not take a back-channel ("uh-huh", "right") for a turn.

    livekit interrupts the agent on any final transcript, however short the speech under it
    was, and commits it as the caller's turn; `interruption.min_duration` alone only delays
    that. A transcript of speech shorter than min_duration, heard while the persona talks, is
    dropped here, so the reply plays on and the caller's "right" is not answered.
    """

    def __init__(self, call: PersonaCall, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._call = call

    async def stt_node(self, audio: AsyncIterable[rtc.AudioFrame], model_settings: ModelSettings
                       ) -> AsyncIterator[stt.SpeechEvent | str]:
        async for event in Agent.default.stt_node(self, audio, model_settings):
            if (isinstance(event, stt.SpeechEvent) and event.type == stt.SpeechEventType.FINAL_TRANSCRIPT
                    and self._call.heard_back_channel()):
                continue
            yield event


def grammar_for_persona(persona: Persona) -> str | None:
    """What the offline recogniser listens for: the scripted phrases and spoken digits.

    A persona on a real LLM gets open vocabulary (None), which pocketsphinx hears poorly;
    give it a hosted STT for that.
    """
    phrases = request_phrases(persona)
    return None if phrases is None else grammar_for(phrases, digits=True)


def request_phrases(persona: Persona) -> list[str] | None:
    """What a caller may say to a scripted persona (None: anything, for a real LLM): its
    intents' phrases and, when it reads numbers back, the answers to that."""
    if persona.scripted is None:
        return None
    phrases = [phrase for intent in persona.scripted.intents.values() for phrase in intent.phrases]
    if persona.numbers.read_back:
        phrases += [phrase for answer in CONFIRM.values() for phrase in answer]
    return phrases


def _scalar(variables: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in variables.items() if k not in ("text", "digits")}


def _builtin_tools(persona: Persona, call: PersonaCall) -> list[Any]:
    @function_tool(name="escalate", description="Hand the caller to a human operator in a queue.")
    async def escalate(queue: str = "", reason: str = "") -> str:
        call.tool_event("escalate", {"queue": queue, "reason": reason}, "ok")
        call.exit_after_reply("human", {"queue": queue, "escalation_reason": reason}, "escalate")
        return "The caller will be connected to a person."

    @function_tool(name="end_call", description="End the conversation once the caller's request is resolved.")
    async def end_call(reason: str = "resolved") -> str:
        call.tool_event("end_call", {"reason": reason}, "ok")
        call.exit_after_reply("resolved", {"resolution": reason}, "end_call")
        return "Say goodbye."

    @function_tool(name="transfer", description="Transfer the caller to a phone number or SIP address.")
    async def transfer(to: str) -> str:
        call.tool_event("transfer", {"to": to}, "requested")
        call.call_action("transfer", {"to": to})
        return "Transferring."

    @function_tool(name="set_variable", description="Remember a value for the rest of the call.")
    async def set_variable(name: str, value: str) -> str:
        call.variables[name] = value
        call.tool_event("set_variable", {"name": name, "value": value}, "ok")
        call.call_action("set_variable", {"name": name, "value": value})
        return "Noted."

    @function_tool(name="send_dtmf", description="Send touch-tone digits on the line.")
    async def send_dtmf(digits: str) -> str:
        call.tool_event("send_dtmf", {"digits": digits}, "ok")
        call.call_action("send_dtmf", {"digits": digits})
        return "Sent."

    @function_tool(name="handoff", description="Hand the conversation to another assistant.")
    async def handoff(context: RunContext, persona_name: str) -> Any:
        if persona_name not in persona.handoffs:
            call.tool_event("handoff", {"persona": persona_name}, "refused")
            return f"Hand-off to {persona_name} is not allowed."
        target = call.load_persona(persona_name)
        call.tool_event("handoff", {"persona": persona_name}, "ok")
        agent = build_agent(target, call, chat_ctx=context.session.history.copy())
        return agent, f"Handing over to {persona_name}."

    @function_tool(name="pause_recording",
                   description="Pause the call's recording before the caller reads a card number (PCI).")
    async def pause_recording() -> str:
        call.tool_event("pause_recording", {}, "ok")
        call.call_action("record", {"pause": True})
        return "The recording is paused; ask for the card details now."

    @function_tool(name="resume_recording", description="Resume the call's recording after the card details.")
    async def resume_recording() -> str:
        call.tool_event("resume_recording", {}, "ok")
        call.call_action("record", {"pause": False})
        return "The recording is on again."

    tools = {"escalate": escalate, "end_call": end_call, "transfer": transfer, "set_variable": set_variable,
             "send_dtmf": send_dtmf, "handoff": handoff, "pause_recording": pause_recording,
             "resume_recording": resume_recording}
    return [tools[name] for name in persona.builtins]


def _webhook_tool(tool: WebhookTool, call: PersonaCall) -> Any:
    schema = {"name": tool.name, "description": tool.description, "parameters": tool.parameters}

    async def handler(raw_arguments: dict[str, object]) -> Any:
        # The flows' client: no redirects, the reply cap, the decoder limits, the pinned address.
        try:
            result: Any = await post_json(tool.url, raw_arguments, tool.timeout)
        except WebhookError as exc:
            result = {"error": str(exc)}
        call.tool_event(tool.name, dict(raw_arguments), result)
        return json.dumps(result)

    return function_tool(handler, raw_schema=schema)
