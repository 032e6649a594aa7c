"""A persona's webhook tool goes through the flows' one outbound HTTP client: same redirects, cap and
decoder rules. Real loopback servers; the tool is called as livekit calls it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from appliance.flow.persona import Persona, WebhookTool
from appliance.flow.webhook import MAX_REPLY_BYTES
from appliance.personas.persona import _webhook_tool
from tests.support.http_server import LoopbackServer


class Call:
    """The call a persona's tools act on; keeps the tool events it is told about."""

    def __init__(self) -> None:
        self.variables: dict[str, Any] = {"caller": "+15550100"}
        self.events: list[tuple[str, dict[str, Any], Any]] = []

    def tool_event(self, name: str, arguments: dict[str, Any], result: Any) -> None:
        self.events.append((name, arguments, result))

    def exit_after_reply(self, exit_: str, variables: dict[str, Any], reason: str) -> None: ...
    def call_action(self, action: str, arguments: dict[str, Any]) -> None: ...
    def load_persona(self, name: str) -> Persona: raise AssertionError(name)
    def heard_back_channel(self) -> bool: return False


async def trap(request: web.Request) -> web.StreamResponse:
    return web.json_response({"trap": "sprung"})


class Server(LoopbackServer):
    def __init__(self) -> None:
        super().__init__(default=trap)
        self.routes = self.answers


@pytest.fixture
async def servers() -> AsyncIterator[tuple[Server, Server]]:
    async with Server() as allowed, Server() as elsewhere:
        yield allowed, elsewhere


async def run_tool(url: str, timeout: float = 5.0) -> tuple[Any, Call]:
    call = Call()
    tool = _webhook_tool(WebhookTool(name="lookup_order", description="Look up an order.", url=url,
                                     timeout=timeout), call)
    reply = await tool({"order": "1234"})
    return json.loads(reply), call


async def test_a_json_reply_is_the_tools_result(servers: tuple[Server, Server]):
    allowed, _ = servers
    allowed.routes["/tools/order"] = web.json_response({"status": "shipped"})
    result, call = await run_tool(allowed.url + "/tools/order")
    assert result == {"status": "shipped"}
    assert call.events == [("lookup_order", {"order": "1234"}, {"status": "shipped"})]


async def test_a_redirect_is_not_followed(servers: tuple[Server, Server]):
    allowed, elsewhere = servers
    allowed.routes["/tools/order"] = web.Response(status=307, headers={"Location": elsewhere.url + "/steal"})
    result, _ = await run_tool(allowed.url + "/tools/order")
    assert elsewhere.requests == [], "the LLM's arguments went to a URL that is not allowed"
    assert result == {"error": "HTTP 307 (redirects are not followed)"}


async def test_an_endless_reply_is_cut_at_the_cap(servers: tuple[Server, Server]):
    allowed, _ = servers

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        try:
            await response.write(b'{"pad": "')
            for _ in range(10_000):
                await response.write(b"x" * 16384)
        except ConnectionError:
            pass
        return response

    allowed.routes["/tools/endless"] = endless
    result, _ = await run_tool(allowed.url + "/tools/endless", timeout=10)
    assert result == {"error": "reply too large"}


@pytest.mark.parametrize(
    "body, error",
    [
        (b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "reply too large"),
        (b"[" * 30_000 + b"]" * 30_000, "reply is not JSON"),  # RecursionError inside json
        (b'{"n": ' + b"9" * 100_000 + b"}", "reply too large"),
        (b'{"n": ' + b"9" * 5_000 + b"}", "reply is not JSON"),  # ValueError: int() digit limit
        (b'{"n": 1e999999}', "reply is not JSON"),
        (b'"x' + b"y" * (MAX_REPLY_BYTES + 1) + b'"', "reply too large"),
    ],
)
async def test_a_reply_built_to_break_the_decoder_is_an_error_result(servers: tuple[Server, Server],
                                                                    body: bytes, error: str):
    allowed, _ = servers
    allowed.routes["/tools/bad"] = web.Response(body=body, content_type="application/json")
    result, call = await run_tool(allowed.url + "/tools/bad")
    assert result == {"error": error}
    assert call.events[-1][2] == {"error": error}
