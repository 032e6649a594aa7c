"""The shop's order system for the order desk persona (flows/personas/orders.yaml): a loopback
HTTP server that answers every lookup "shipped" and remembers what it was asked."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from tests.support.http_server import LoopbackServer

__all__ = ["OrdersApi"]


class OrdersApi:
    """The shop's order system on loopback: answers lookups, remembers what it was asked."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.http = LoopbackServer(default=self._answer)  # any path, as the shop has no others

    @property
    def port(self) -> int:
        return self.http.port

    async def _answer(self, request: web.Request) -> web.Response:
        if request.method != "POST":
            raise web.HTTPNotImplemented()
        body = json.loads(await request.read() or b"{}")
        self.requests.append({"path": request.raw_path, "body": body})
        reply = json.dumps({"order": body.get("order"), "status": "shipped"}).encode()
        return web.Response(body=reply, content_type="application/json")
