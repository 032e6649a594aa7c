"""What an allowed webhook server cannot make the appliance do: follow it elsewhere, read without
end, or raise out of the call on a reply built to break the JSON decoder. Real loopback servers."""

from __future__ import annotations

import gzip
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import ResolveResult

from appliance.flow.checker import FlowContext
from appliance.flow.engine import FlowEngine
from appliance.flow.loader import parse
from appliance.flow.policy import url_allowed
from appliance.flow.webhook import (
    MAX_REPLY_BYTES,
    WebhookError,
    _PinnedConnector,
    call_webhook,
)
from tests.support.http_server import Answer, LoopbackServer


async def trap(request: web.Request) -> web.StreamResponse:
    return web.json_response({"trap": "sprung"})


class Server:
    """A loopback HTTP server that keeps every request it receives (any method: a followed 303 is a GET)."""

    def __init__(self) -> None:
        self.http = LoopbackServer(default=trap)
        self.sent = 0  # body bytes the endless reply handed to the transport

    @property
    def url(self) -> str:
        return self.http.url

    @property
    def requests(self) -> list[tuple[str, bytes]]:
        return [(r.path, r.body) for r in self.http.requests]

    async def start(self, routes: dict[str, Answer]) -> None:
        self.http.answers = routes
        await self.http.start()


@pytest.fixture
async def servers() -> AsyncIterator[tuple[Server, Server]]:
    allowed, elsewhere = Server(), Server()
    yield allowed, elsewhere
    for server in (allowed, elsewhere):
        await server.http.stop()


async def endless(server: Server, request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    try:
        await response.write(b'{"pad": "')
        for _ in range(10_000):  # 160 MB if nobody stops reading
            await response.write(b"x" * 16384)
            server.sent += 16384
    except (ConnectionResetError, ConnectionError):
        pass
    return response


async def test_a_redirect_to_a_url_not_allowed_is_not_followed_and_is_an_error(servers: tuple[Server, Server]):
    allowed, elsewhere = servers
    await elsewhere.start({})
    target = f"{elsewhere.url}/admin/steal"
    await allowed.start({"/hooks/lookup": web.Response(status=307, headers={"Location": target})})
    url = f"{allowed.url}/hooks/lookup"
    policy = [f"{allowed.url}/hooks/"]
    assert url_allowed(url, policy) and not url_allowed(target, policy)

    done = await call_webhook(url, {"caller": "+15550100", "digits": "1234"}, timeout=2)

    assert elsewhere.requests == [], "the caller's number and digits went to a URL that is not allowed"
    assert not done.ok and done.data == {}
    assert done.error == "HTTP 307 (redirects are not followed)"
    assert [path for path, _ in allowed.requests] == ["/hooks/lookup"]


@pytest.mark.parametrize("status", [301, 302, 303, 308])
async def test_every_redirect_is_an_error_for_on_error(servers: tuple[Server, Server], status: int):
    allowed, elsewhere = servers
    await elsewhere.start({})
    await allowed.start({"/hooks/lookup": web.Response(status=status, headers={"Location": elsewhere.url + "/x"})})
    text = f"""\
name: t
variables: {{account: "1"}}
entry: ask
steps:
  ask:
    webhook: {{url: "{allowed.url}/hooks/lookup", on_error: failed, timeout: 2}}
    next: bye
  failed:
    hangup:
  bye:
    hangup:
"""
    flow, problems = parse(text, "t.yaml", FlowContext(webhooks_allowed=[allowed.url + "/hooks/"]))
    assert flow is not None, problems
    engine = FlowEngine(flow)
    (_, call) = engine.start()
    engine.handle(await call_webhook(call.url, call.payload, call.timeout))
    assert elsewhere.requests == []
    assert engine.variables["webhook_error"] == f"HTTP {status} (redirects are not followed)"
    assert "trap" not in engine.variables


async def test_an_endless_reply_is_cut_at_the_cap(servers: tuple[Server, Server]):
    allowed, _ = servers
    await allowed.start({"/hooks/endless": lambda request: endless(allowed, request)})
    done = await call_webhook(f"{allowed.url}/hooks/endless", {}, timeout=10)
    assert (done.ok, done.error) == (False, "reply too large")


async def test_a_reply_announcing_more_than_the_cap_is_not_read(servers: tuple[Server, Server]):
    allowed, _ = servers
    body = b'{"pad": "' + b"x" * (4 * MAX_REPLY_BYTES) + b'"}'
    await allowed.start({"/hooks/huge": web.Response(body=body, content_type="application/json")})
    done = await call_webhook(f"{allowed.url}/hooks/huge", {}, timeout=2)
    assert (done.ok, done.error) == (False, "reply too large")


async def test_a_compressed_reply_is_not_inflated(servers: tuple[Server, Server]):
    allowed, _ = servers
    bomb = gzip.compress(b'{"pad": "' + b"0" * (64 * 1024 * 1024) + b'"}')
    assert len(bomb) < MAX_REPLY_BYTES
    await allowed.start({"/hooks/gzip": web.Response(body=bomb, headers={
        "Content-Type": "application/json", "Content-Encoding": "gzip"})})
    done = await call_webhook(f"{allowed.url}/hooks/gzip", {}, timeout=5)
    assert (done.ok, done.error) == (False, "reply is compressed (Content-Encoding: gzip)")


@pytest.mark.parametrize(
    "name, body, error",
    [
        ("deep-100000", b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "reply too large"),
        ("deep-30000", b'{"a": ' + b"[" * 30_000 + b"]" * 30_000 + b"}", "reply is not JSON"),
        ("deep-200", b'{"a": ' + b"[" * 200 + b"]" * 200 + b"}", "reply is nested too deeply"),
        ("digits-100k", b'{"n": ' + b"9" * 100_000 + b"}", "reply too large"),
        ("digits-5000", b'{"n": ' + b"9" * 5_000 + b"}", "reply is not JSON"),  # int() refuses > 4300 digits
        ("exponent", b'{"n": 1e999999}', "reply is not JSON"),  # inf: not JSON when sent on
        ("nan", b'{"n": NaN}', "reply is not JSON"),
        ("utf-8", b'{"n": "\xff"}', "reply is not JSON"),
    ],
)
async def test_a_reply_built_to_break_the_decoder_is_an_error_not_an_exception(
        servers: tuple[Server, Server], name: str, body: bytes, error: str):
    allowed, _ = servers
    await allowed.start({f"/hooks/{name}": web.Response(body=body, content_type="application/json")})
    done = await call_webhook(f"{allowed.url}/hooks/{name}", {}, timeout=5)
    assert (done.ok, done.error, done.data) == (False, error, {})


def _loopback_name() -> str | None:
    """A host name other than localhost that this box resolves to a loopback address (/etc/hosts)."""
    name = socket.gethostname()
    try:
        answers = {info[4][0] for info in socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)}
    except OSError:
        return None
    loopback = answers and all(a.startswith("127.") or a == "::1" for a in answers)
    return name if loopback and name != "localhost" else None


async def test_a_host_name_answering_with_a_loopback_address_is_not_connected_to(servers: tuple[Server, Server]):
    """DNS rebinding: an allowed name whose DNS now points at the appliance's own loopback services."""
    name = _loopback_name()
    if name is None:
        pytest.skip("no host name other than localhost resolves to loopback here")
    allowed, _ = servers
    await allowed.start({})
    url = allowed.url.replace("127.0.0.1", name) + "/hooks/lookup"
    assert url_allowed(url, [url])
    done = await call_webhook(url, {"caller": "+15550100"}, timeout=2)
    assert allowed.requests == []
    assert not done.ok and "loopback" in (done.error or "")


async def test_localhost_by_name_is_still_reachable(servers: tuple[Server, Server]):
    allowed, _ = servers
    await allowed.start({"/hooks/ok": web.json_response({"customer_name": "Ada"})})
    done = await call_webhook(allowed.url.replace("127.0.0.1", "localhost") + "/hooks/ok", {}, timeout=2)
    assert (done.ok, done.data) == (True, {"customer_name": "Ada"})



async def test_the_peer_address_is_checked_before_anything_is_sent(servers: tuple[Server, Server]):
    """The last line of the rebinding defence: the socket's peer must be an address that was checked.

    aiohttp connects to an IP-literal URL without asking the resolver, so a connector told to
    expect 127.0.0.2 while the URL says 127.0.0.1 shows the check refusing a real connection.
    """
    allowed, _ = servers
    await allowed.start({})
    port = int(allowed.url.rsplit(":", 1)[1])
    expected = [ResolveResult(hostname="127.0.0.1", host="127.0.0.2", port=port, family=socket.AF_INET,
                              proto=0, flags=0)]
    async with aiohttp.ClientSession(connector=_PinnedConnector("127.0.0.1", expected)) as session:
        with pytest.raises(WebhookError, match="connected to 127.0.0.1, not an address of 127.0.0.1"):
            await session.post(allowed.url + "/hooks/lookup", json={"caller": "+15550100"})
    assert allowed.requests == []
