"""A real appliance taking Twilio calls, and the loopback server standing in for Twilio's REST API.

The stand-in is the only one in these tests (Twilio cannot be reached from here): it answers
whatever the `twilio` client asks with a call resource, and keeps each request for the test.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.support.appliance import ApplianceProcess
from tests.support.http_server import LoopbackServer
from tests.support.media_streams import Twilio
from tests.support.wait import wait_until_async

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
NUMBER = "+15550100"  # the number bought on Twilio, routed to the default flow
PUBLIC_URL = "https://switchboard.example.com"  # Twilio calls this; a TLS proxy forwards to the box


async def call_resource(request: web.Request) -> web.Response:
    """Twilio's answer to a call's update: the call resource."""
    sid = request.path.rsplit("/", 1)[-1].removesuffix(".json")
    return web.Response(text=json.dumps({"sid": sid, "account_sid": ACCOUNT_SID, "status": "completed"}),
                        content_type="application/json")


@dataclass
class TwilioLine:
    box: ApplianceProcess
    twilio: Twilio
    rest: LoopbackServer  # the stand-in for api.twilio.com
    session: aiohttp.ClientSession


@pytest.fixture
async def twilio_lines(appliance_factory: Callable[..., ApplianceProcess]) -> AsyncIterator[Callable[..., TwilioLine]]:
    """Makes a TwilioLine: an appliance with `numbers` over Twilio (and `extra` settings; WebRTC
    workers for operators' consoles)."""
    rest = await LoopbackServer(default=call_resource).start()
    session = aiohttp.ClientSession()

    def make(numbers: dict[str, str], personas: int = 0, rtc_workers: int = 0, **extra: Any) -> TwilioLine:
        token = secrets.token_hex(16)
        box = appliance_factory(
            workers=1, rtc_workers=rtc_workers, numbers=numbers, environment={"TWILIO_AUTH_TOKEN": token},
            extra={"personas": {"workers": personas},
                   "twilio": {"enabled": True, "public_url": PUBLIC_URL, "account_sid": ACCOUNT_SID,
                              "numbers": list(numbers), "api_base_url": rest.url}} | extra,
        )
        return TwilioLine(box, Twilio(ACCOUNT_SID, token, PUBLIC_URL, f"http://127.0.0.1:{box.http_port}"),
                          rest, session)

    yield make
    await session.close()
    await rest.stop()


@pytest.fixture
async def twilio_line(twilio_lines: Callable[..., TwilioLine]) -> TwilioLine:
    """The shipped default flow on NUMBER, no personas."""
    return twilio_lines({NUMBER: "default"})


def events(line: TwilioLine, call_id: str, kind: str) -> list[dict[str, Any]]:
    """The data of the call's events of `kind`, in order."""
    return [e["data"] for e in line.box.call(call_id)["events"] if e["kind"] == kind]


async def the_call(line: TwilioLine, call_sid: str) -> dict[str, Any]:
    """The record of the call a stream for Twilio's `call_sid` opened, once there is one."""
    def offered() -> dict[str, Any] | None:
        for call in line.box.calls():
            if any(e["sip_call_id"] == call_sid for e in events(line, call["id"], "offered")):
                return call
        return None

    return await wait_until_async(offered, "the stream's call record", 20, detail=line.box.log_tail)


async def closed(line: TwilioLine, call_id: str) -> dict[str, Any]:
    """The call's record once it is closed."""
    return await wait_until_async(lambda: (c := line.box.call(call_id))["ended_at"] and c,
                                  "the call record to close", 60, detail=line.box.log_tail)


def only_in(text: str, *others: str) -> set[str]:
    """Words of `text` no other sentence has: hearing them means hearing `text`."""
    def words(t: str) -> set[str]:
        return set(re.findall(r"[a-z']+", t.lower()))

    return words(text) - set().union(*map(words, others))
