"""The one fake the persona tests allow: an OpenAI-compatible chat-completions endpoint on
127.0.0.1, since no model can be downloaded here. It speaks the streaming protocol (SSE
`data: {...}` chunks, `data: [DONE]`) the way OpenAI, Ollama and vLLM do, tool calls included.

Its "model": when offered a tool and the caller mentions an order, it calls the first tool with
the digits it heard (arguments streamed in pieces); after a tool result it answers with it;
asked to summarise for a supervisor taking the call over, it quotes the conversation's
messages; otherwise it says it is a test model.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.support.http_server import LoopbackServer


@dataclass
class ChatEndpoint:
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    url: str = ""
    _server: LoopbackServer | None = None

    async def start(self) -> None:
        self._server = LoopbackServer({
            "/v1/chat/completions": self._completions,
            "/v1/models": self._models,  # livekit's prewarm asks for this
        })
        await self._server.start()
        self.url = f"{self._server.url}/v1"

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop()

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "test", "object": "model", "owned_by": "test"}]})

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)

        async def send(delta: dict[str, Any] | None, finish: str | None = None, usage: dict | None = None) -> None:
            chunk = {"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 0, "model": body["model"],
                     "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]}
            if usage:
                chunk["usage"] = usage
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

        last = body["messages"][-1]
        user = next((_text(m) for m in reversed(body["messages"]) if m["role"] == "user"), "")
        tools = body.get("tools") or []
        await send({"role": "assistant", "content": ""})
        if last["role"] == "system" and "taking this phone call over" in _text(last):
            said = [f"{m['role']}: {_text(m)}" for m in body["messages"] if m["role"] in ("user", "assistant")]
            for word in re.findall(r"\S+\s*", "Summary. " + " | ".join(said)):
                await send({"content": word})
            await send({}, "stop")
        elif last["role"] == "tool":
            for word in re.findall(r"\S+\s*", f"Here is what I found: {last['content']}"):
                await send({"content": word})
            await send({}, "stop")
        elif tools and "order" in user.lower():
            name = tools[0]["function"]["name"]
            arguments = json.dumps({"order_id": "".join(re.findall(r"\d", user))})
            await send({"tool_calls": [{"index": 0, "id": "call_test1", "type": "function",
                                        "function": {"name": name, "arguments": ""}}]})
            for i in range(0, len(arguments), 7):  # arguments arrive in pieces, as from a real model
                await send({"tool_calls": [{"index": 0, "function": {"arguments": arguments[i : i + 7]}}]})
            await send({}, "tool_calls")
        else:
            for word in ["I ", "am ", "a ", "test ", "model."]:
                await send({"content": word})
            await send({}, "stop")
        await send(None, usage={"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15})
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


def _text(message: dict[str, Any]) -> str:
    content = message.get("content") or ""
    return content if isinstance(content, str) else " ".join(part.get("text", "") for part in content)
