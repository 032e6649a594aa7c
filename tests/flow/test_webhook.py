"""A flow's webhook against a real HTTP server on 127.0.0.1: replies merged, every failure an error the flow handles."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from appliance.flow.checker import FlowContext
from appliance.flow.engine import CallWebhook, FlowEngine, PlaybackDone
from appliance.flow.loader import load_dir, parse
from appliance.flow.simulate import Simulation
from appliance.flow.webhook import MAX_REPLY_BYTES, call_webhook
from tests.support.http_server import LoopbackServer
from tests.support.ports import free_port_block

ROOT = Path(__file__).resolve().parents[2]
OPEN = dt.datetime(2026, 11, 24, 15, 0, tzinfo=dt.UTC)  # a Tuesday, 10:00 in New York


class CRM:
    """The admin's system the flow asks: each path answers one way; every request is kept."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, Any]] = []
        self.release = asyncio.Event()  # lets slow handlers finish at teardown
        self.reply: dict[str, Any] = {"customer_name": "Ada", "balance": "150"}
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append((request.path, json.loads(body) if body else None))
        kind = request.path.removeprefix("/crm/")
        if kind == "ok":
            return web.json_response(self.reply)
        if kind == "empty":
            return web.Response(status=204)
        if kind == "slow":
            await self._wait()
            return web.json_response(self.reply)
        if kind in ("pieces", "stall"):  # the body in two writes; "stall" never sends the second
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            await response.prepare(request)
            try:
                await response.write(b'{"customer_name": ')
                await (asyncio.sleep(0.05) if kind == "pieces" else self._wait())
                await response.write(b'"Ada"}')
            except ConnectionResetError:
                pass  # the client gave up first
            return response
        if kind == "text":
            return web.Response(text="<html>Service Unavailable</html>", content_type="text/html")
        if kind == "array":
            return web.json_response([{"customer_name": "Ada"}])
        if kind == "string":
            return web.json_response("Ada")
        if kind == "deep":
            return web.Response(body=b"[" * 60000, content_type="application/json")
        if kind == "huge":
            return web.json_response({"pad": "x" * (MAX_REPLY_BYTES + 10)})
        if kind == "error":
            return web.json_response({"error": "database down"}, status=500)
        if kind == "missing":
            raise web.HTTPNotFound()
        raise AssertionError(kind)

    async def _wait(self) -> None:
        try:
            await asyncio.wait_for(self.release.wait(), 10)
        except TimeoutError:
            pass

    def at(self, kind: str) -> str:
        return f"{self.url}/crm/{kind}"


@pytest.fixture
async def crm() -> AsyncIterator[CRM]:
    server = CRM()
    async with LoopbackServer(default=server.handle) as http:
        server.url = http.url
        yield server
        server.release.set()


def _closed_port() -> int:
    return free_port_block(1)


async def test_a_json_object_reply_is_returned(crm: CRM):
    done = await call_webhook(crm.at("ok"), {"account": "1234"}, timeout=2)
    assert done.ok and done.error is None
    assert done.data == {"customer_name": "Ada", "balance": "150"}
    assert crm.requests == [("/crm/ok", {"account": "1234"})]


async def test_an_empty_2xx_reply_is_an_empty_object(crm: CRM):
    done = await call_webhook(crm.at("empty"), {}, timeout=2)
    assert done.ok and done.data == {}


@pytest.mark.parametrize(
    "kind, error",
    [
        ("text", "reply is not JSON"),
        ("array", "reply is not a JSON object"),
        ("string", "reply is not a JSON object"),
        ("deep", "reply is not JSON"),
        ("huge", "reply too large"),
        ("error", "HTTP 500"),
        ("missing", "HTTP 404"),
    ],
)
async def test_a_reply_that_is_not_a_json_object_is_an_error(crm: CRM, kind: str, error: str):
    done = await call_webhook(crm.at(kind), {"account": "1234"}, timeout=2)
    assert (done.ok, done.error, done.data) == (False, error, {})


async def test_a_server_slower_than_the_step_timeout_is_an_error_at_the_timeout(crm: CRM):
    started = time.monotonic()
    done = await call_webhook(crm.at("slow"), {}, timeout=0.3)
    waited = time.monotonic() - started
    assert (done.ok, done.error) == (False, "no reply within 0.3 s")
    assert waited < 5, "the call must not wait for the server (it would wait 10 s)"


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("pieces", (True, None, {"customer_name": "Ada"})),
        ("stall", (False, "no reply within 0.3 s", {})),
    ],
)
async def test_a_reply_body_is_read_whole_within_the_timeout(crm: CRM, kind: str, expected: tuple):
    done = await call_webhook(crm.at(kind), {}, timeout=0.3)
    assert (done.ok, done.error, done.data) == expected


async def test_connection_refused_is_an_error():
    done = await call_webhook(f"http://127.0.0.1:{_closed_port()}/lookup", {}, timeout=2)
    assert not done.ok
    assert "ClientConnectorError" in (done.error or "") and "127.0.0.1" in (done.error or "")


async def test_an_unusable_url_is_an_error():
    done = await call_webhook("http://", {}, timeout=2)
    assert not done.ok and done.error


# --- the webhook step in a flow: payload posted, reply merged, errors take on_error

def _support_copy(tmp_path: Path, crm: CRM) -> Path:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "queues.yaml").write_text((ROOT / "flows" / "queues.yaml").read_text())
    text = (ROOT / "flows" / "support.yaml").read_text()
    assert "http://127.0.0.1:8765/accounts/lookup" in text
    (flows / "support.yaml").write_text(text.replace("http://127.0.0.1:8765/accounts/lookup", crm.at("ok")))
    return flows


async def test_simulated_call_posts_the_send_variables_only_and_merges_the_reply(tmp_path: Path, crm: CRM):
    flows = load_dir(_support_copy(tmp_path, crm), webhooks_allowed=[crm.url + "/"])
    sim = Simulation(flows["support"], variables={"caller": "+15550100", "called": "200"}, now=OPEN)
    await sim.start()
    for line in ["#1", "#1234#"]:
        await sim.line(line)
    # `send: [account, caller]`: not balance, customer_name, called or open
    assert crm.requests == [("/crm/ok", {"account": "1234", "caller": "+15550100"})]
    assert sim.engine.variables["customer_name"] == "Ada"
    assert sim.engine.variables["balance"] == "150"
    # the reply's digits compare as a number in `balance > 0`
    assert "Hello Ada. Your balance is 150 dollars." in sim.heard
    assert sim.steps[-3:] == ["route_account", "balance_due", "billing_queue"]


async def test_simulated_call_takes_on_error_when_the_server_fails(tmp_path: Path, crm: CRM):
    directory = _support_copy(tmp_path, crm)
    support = directory / "support.yaml"
    support.write_text(support.read_text().replace(crm.at("ok"), crm.at("error")))
    flows = load_dir(directory, webhooks_allowed=[crm.url + "/"])
    sim = Simulation(flows["support"], now=OPEN)
    await sim.start()
    await sim.line("#1")
    await sim.line("#1234#")
    assert sim.engine.variables["webhook_error"] == "HTTP 500"
    assert "Sorry, we cannot look up your account right now." in sim.heard
    assert "lookup_failed" in sim.steps and "route_account" not in sim.steps
    assert sim.engine.variables["customer_name"] == ""  # nothing merged from an error reply


async def test_without_send_every_variable_is_posted(crm: CRM):
    text = f"""\
name: t
variables: {{account: "42", tier: gold}}
entry: ask
steps:
  ask:
    webhook: {{url: "{crm.at('ok')}", on_error: bye, timeout: 2}}
    next: bye
  bye:
    hangup:
"""
    flow, problems = parse(text, "t.yaml", FlowContext(webhooks_allowed=[crm.url + "/"]))
    assert flow is not None, problems
    engine = FlowEngine(flow, variables={"caller": "+15550100"})
    (_, call) = engine.start()
    assert isinstance(call, CallWebhook)
    done = await call_webhook(call.url, call.payload, call.timeout)
    actions = engine.handle(done)
    assert crm.requests == [("/crm/ok", {"account": "42", "tier": "gold", "caller": "+15550100"})]
    assert engine.variables["customer_name"] == "Ada" and engine.finished
    assert engine.handle(PlaybackDone()) == [] and actions[-1].reason == "flow-hangup"
