"""A deterministic livekit-agents LLM: phrases → intents → replies and tool calls, no model.

It reads the chat context as a real LLM would: after a tool result it answers with that
result; otherwise it matches the caller's last words to an intent (the flow engine's rule,
`appliance.flow.intents.match`) and either calls the intent's tool or speaks its reply.
A supervisor's whisper since the persona last spoke, when it matches one of the script's
`whispers`, takes the caller's intent's place for that one turn; one that matches none is
left to the caller's words (a script acts only on what it was written for).

Numbers: an intent with `expects: number` asks for one, and while its reply is the last thing
said the STT hears digits only (`expects_number`); with `numbers.read_back`, a number that long
is read back and its tool waits for the caller's yes. Both are read from the conversation, as
the rest is: what the script answered before is what it answers to the conversation up to then,
so a preemptive generation livekit throws away changes nothing.
"""

from __future__ import annotations

import ast
import asyncio
import json
import logging
import re
import string
from dataclasses import dataclass, field
from typing import Any

from livekit.agents import llm
from livekit.agents.llm.tool_context import get_fnc_tool_names
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, APIConnectOptions, NotGivenOr
from livekit.agents.utils import shortuuid

from appliance.flow import intents
from appliance.flow.persona import Numbers, Scripted, ScriptedIntent
from appliance.observability.logging import log_extra
from appliance.personas.whisper import pending_whispers

__all__ = ["CONFIRM", "ScriptedConfig", "ScriptedIntent", "ScriptedLLM", "Response", "render", "said_digits"]

logger = logging.getLogger(__name__)

# Names every template may use besides the constructor's variables.
TURN_FIELDS = ("text", "digits")


# The persona file's models are the scripted LLM's configuration: one definition of each.
ScriptedConfig = Scripted
# The caller's answer to a number read back to them.
CONFIRM = {"yes": ["yes", "yes it is", "correct", "that is right", "right"],
           "no": ["no", "wrong", "that is wrong", "it is not"]}


@dataclass
class Response:
    """What the script answers to one chat context: words to speak, or one tool to call."""

    text: str = ""
    tool_call: llm.FunctionToolCall | None = None
    intent: str | None = None  # None when the fallback answered
    expects_number: bool = False  # the reply asks the caller for a number
    read_back: _Choice | None = None  # the reply reads this request's number back: is it right?


@dataclass
class _Turn:
    user_text: str = ""
    call: llm.FunctionCall | None = None
    output: llm.FunctionCallOutput | None = None
    whispers: list[str] = field(default_factory=list)  # newest first


@dataclass
class _Choice:
    """The intent that answers a turn, and the words that chose it (its {text} and {digits})."""

    name: str
    intent: ScriptedIntent
    words: str


class ScriptedLLM(llm.LLM):
    def __init__(self, config: ScriptedConfig | dict[str, Any], *, variables: dict[str, Any] | None = None,
                 numbers: Numbers | dict[str, Any] | None = None) -> None:
        super().__init__()
        self.config = ScriptedConfig.model_validate(config)
        self.numbers = Numbers.model_validate(numbers or {})
        self.variables = dict(variables or {})
        if clash := set(self.variables) & set(TURN_FIELDS):
            raise ValueError(f"variables {sorted(clash)} are reserved: templates get them from the caller's words")
        self._phrases = {name: intent.phrases for name, intent in self.config.intents.items()}
        self._whisper_phrases = {name: intent.phrases for name, intent in self.config.whispers.items()}
        self._check_templates()

    @property
    def model(self) -> str:
        return "scripted"

    @property
    def provider(self) -> str:
        return "switchboard"

    def chat(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[llm.ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> llm.LLMStream:
        return _ScriptedStream(
            self, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options,
            tools_allowed=tool_choice != "none",
        )

    def respond(self, chat_ctx: llm.ChatContext, tool_names: set[str]) -> Response:
        """The script's answer to the conversation so far, given the tools it may call."""
        turn = _read_turn(chat_ctx)
        choice = self._choose(turn)
        before = self._last_reply(chat_ctx, tool_names)
        if before.read_back is not None and turn.user_text:
            answer = intents.match(turn.user_text, CONFIRM)
            if answer == "yes":
                choice = before.read_back
                if turn.output is None:
                    return self._act(choice, tool_names, confirmed=True)
            elif answer == "no" and turn.output is None:
                return Response(text=self.numbers.again_prompt, intent="read_back:no", expects_number=True)
            # Neither: a new request, answered as any other.
        if turn.output is not None and turn.call is not None:
            return self._after_tool(turn, choice)
        if choice is None:
            # Asked again, still expecting what the last reply asked for.
            return Response(text=self.config.fallback, expects_number=before.expects_number)
        return self._act(choice, tool_names)

    def expects_number(self, chat_ctx: llm.ChatContext, tool_names: set[str]) -> bool:
        """Whether the last thing the persona said asked the caller for a number."""
        return self._last_reply(chat_ctx, tool_names).expects_number

    def _last_reply(self, chat_ctx: llm.ChatContext, tool_names: set[str]) -> Response:
        """What the script answered with the persona's last reply: its answer to the
        conversation up to that reply (deterministic, so the same answer as then)."""
        items = list(chat_ctx.items)
        spoken = [i for i, item in enumerate(items)
                  if isinstance(item, llm.ChatMessage) and item.role == "assistant" and item.text_content]
        if not spoken or not any(isinstance(item, llm.ChatMessage) and item.role == "user"
                                 for item in items[: spoken[-1]]):
            return Response()  # nothing said yet, or only the greeting
        return self.respond(llm.ChatContext(items[: spoken[-1]]), tool_names)

    def _act(self, choice: _Choice, tool_names: set[str], confirmed: bool = False) -> Response:
        intent, values = choice.intent, self._values(choice.words)
        if intent.tool is not None and intent.tool in tool_names:
            number = values["digits"] if "digits" in _argument_fields(intent) else ""
            # A supervisor's typed number was not misheard: only the caller's is read back.
            if (not confirmed and not choice.name.startswith("whisper:") and self.numbers.read_back
                    and len(number) >= self.numbers.read_back):
                return Response(text=render(self.numbers.read_back_prompt, {"number": " ".join(number)}),
                                intent=f"read_back:{choice.name}", read_back=choice)
            arguments = {key: render(template, values) for key, template in intent.arguments.items()}
            call = llm.FunctionToolCall(name=intent.tool, arguments=json.dumps(arguments), call_id=shortuuid("call_"))
            return Response(tool_call=call, intent=choice.name)
        if intent.reply is None:
            # The tool this intent exists for is not offered to this agent.
            return Response(text=self.config.fallback)
        return Response(text=render(intent.reply, values), intent=choice.name,
                        expects_number=intent.expects == "number")

    def _choose(self, turn: _Turn) -> _Choice | None:
        for typed in turn.whispers:
            name = intents.match(typed, self._whisper_phrases)
            if name is not None:
                return _Choice(f"whisper:{name}", self.config.whispers[name], typed)
        if turn.whispers:
            logger.info("a whisper matches none of the script's whispers", extra=log_extra(
                pii={"whispers": turn.whispers}))
        name = intents.match(turn.user_text, self._phrases)
        return _Choice(name, self.config.intents[name], turn.user_text) if name is not None else None

    def _values(self, words: str) -> dict[str, Any]:
        return self.variables | {"text": words, "digits": said_digits(words)}

    def _after_tool(self, turn: _Turn, choice: _Choice | None) -> Response:
        assert turn.call is not None and turn.output is not None
        if choice is None or choice.intent.tool != turn.call.name:
            # Matching is deterministic, so the words that made the call name its intent again;
            # failing that, any intent that calls this tool answers its result.
            choice = next((_Choice(n, i, turn.user_text) for n, i in self.config.intents.items()
                           if i.tool == turn.call.name), None)
        if choice is None:
            return Response(text=self.config.fallback)
        intent = choice.intent
        template = intent.after_tool if intent.after_tool is not None else intent.reply
        if template is None:
            return Response(intent=choice.name)  # a tool that acts (hang up, transfer) and says nothing
        values = self._values(choice.words) | _result_fields(turn.output.output)
        try:
            return Response(text=render(template, values), intent=choice.name,
                            expects_number=intent.expects == "number")
        except KeyError as missing:
            # A tool error, or a result without the field the script expects.
            logger.warning("tool result lacks a field the reply uses", extra=log_extra(
                intent=choice.name, tool=turn.call.name, missing=str(missing), is_error=turn.output.is_error,
                pii={"output": turn.output.output}))
            return Response(text=self.config.fallback, intent=choice.name)

    def _check_templates(self) -> None:
        known = set(self.variables) | set(TURN_FIELDS)
        problems = []
        scripted = {**{f"intents.{n}": i for n, i in self.config.intents.items()},
                    **{f"whispers.{n}": i for n, i in self.config.whispers.items()}}
        for name, intent in scripted.items():
            templates = {"reply": intent.reply} | {f"arguments.{k}": v for k, v in intent.arguments.items()}
            for where, template in templates.items():
                if template is None:
                    continue
                for used in _fields(template):
                    if used not in known:
                        problems.append(f"{name}.{where} uses {{{used}}}; known: {sorted(known)}")
            if intent.after_tool is not None:
                _fields(intent.after_tool)  # the tool's fields are known only at run time
        if problems:
            raise ValueError("; ".join(problems))


class _ScriptedStream(llm.LLMStream):
    _llm: ScriptedLLM

    def __init__(self, scripted: ScriptedLLM, *, tools_allowed: bool, **kwargs: Any) -> None:
        super().__init__(scripted, **kwargs)
        self._tools_allowed = tools_allowed

    async def _run(self) -> None:
        tool_names = set(get_fnc_tool_names(self._tools)) if self._tools_allowed else set()
        response = self._llm.respond(self._chat_ctx, tool_names)
        request_id = shortuuid("scripted_")
        if response.tool_call is not None:
            self._event_ch.send_nowait(llm.ChatChunk(
                id=request_id, delta=llm.ChoiceDelta(role="assistant", tool_calls=[response.tool_call])))
            return
        # Word by word, as a model streams: the session starts speaking before the end.
        for piece in re.findall(r"\S+\s*", response.text):
            self._event_ch.send_nowait(llm.ChatChunk(
                id=request_id, delta=llm.ChoiceDelta(role="assistant", content=piece)))
            await asyncio.sleep(0)


def _read_turn(chat_ctx: llm.ChatContext) -> _Turn:
    turn = _Turn()
    items = [i for i in chat_ctx.items if i.type in ("message", "function_call", "function_call_output")]
    if items and isinstance(items[-1], llm.FunctionCallOutput):
        turn.output = items[-1]
        turn.call = next((i for i in reversed(items) if isinstance(i, llm.FunctionCall)
                          and i.call_id == turn.output.call_id), None)
    for item in reversed(items):
        if isinstance(item, llm.ChatMessage) and item.role == "user":
            turn.user_text = item.text_content or ""
            break
    turn.whispers = pending_whispers(chat_ctx)
    return turn


def _result_fields(output: str) -> dict[str, Any]:
    """A tool result's fields. livekit writes a returned dict with str(), so both JSON and
    Python literals are read; anything else is the single field `result`."""
    for parse in (json.loads, ast.literal_eval):
        try:
            value = parse(output)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        return {str(k): v for k, v in value.items()} if isinstance(value, dict) else {"result": value}
    return {"result": output}


_DIGIT_TOKENS = intents.DIGIT_WORDS | {str(d): str(d) for d in range(10)}


def said_digits(text: str) -> str:
    """The digits the caller said: the longest run of digit words or numerals.

    "I would like to check my order 1 2 3 4" → "1234". `intents.spoken_digits` alone would
    read "to" as a 2 (it is made for digit-only answers); here a homophone counts inside a
    run of unambiguous digits, or when the caller said nothing else.
    """
    runs: list[list[str]] = [[]]
    # Short words the recogniser slips between digits ("one it two") do not end a run.
    for word in (w for w in intents.words(text) if len(w) > 2 or w in _DIGIT_TOKENS or w in intents.HOMOPHONES):
        if word in _DIGIT_TOKENS or word in intents.HOMOPHONES:
            runs[-1].append(word)
        elif runs[-1]:
            runs.append([])
    best = ""
    for run in runs:
        while run and run[0] in intents.HOMOPHONES:
            run.pop(0)
        while run and run[-1] in intents.HOMOPHONES:
            run.pop()
        digits = intents.spoken_digits(" ".join(run))
        if len(digits) > len(best):
            best = digits
    if best:
        return best
    # Only homophones: digits if that is all that was said ("to for" from a digits grammar).
    said = intents.words(text)
    return intents.spoken_digits(text) if said and all(w in intents.HOMOPHONES for w in said) else ""


def _argument_fields(intent: ScriptedIntent) -> set[str]:
    return {name for template in intent.arguments.values() for name in _fields(template)}


def _fields(template: str) -> list[str]:
    names = []
    for _literal, name, _spec, _conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if not name.isidentifier():
            # No attribute or index access: a template is configuration, not code.
            raise ValueError(f"template field {{{name}}} must be a plain name, in {template!r}")
        names.append(name)
    return names


def render(template: str, values: dict[str, Any]) -> str:
    """str.format limited to plain names; a missing name raises KeyError."""
    out = []
    for literal, name, spec, conversion in string.Formatter().parse(template):
        out.append(literal)
        if name is None:
            continue
        if not name.isidentifier():
            raise ValueError(f"template field {{{name}}} must be a plain name, in {template!r}")
        value = values[name]
        if conversion == "r":
            value = repr(value)
        elif conversion in ("s", "a"):
            value = str(value) if conversion == "s" else ascii(value)
        out.append(format(value, spec or ""))
    return "".join(out)
