"""A loopback HTTP server for tests: an aiohttp app on 127.0.0.1 that records every request
and answers each path as the test says (a CRM, a webhook target, a model endpoint).

Async tests `await server.start()` (or `async with`); tests driving the appliance as a process
use `with server.in_thread():`, which runs the same server on its own event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

__all__ = ["Answer", "LoopbackServer", "Recorded"]

# A fixed reply, or a handler for replies that depend on the request or are streamed.
Answer = web.StreamResponse | Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Recorded:
    """One request as the server received it."""

    method: str
    path: str
    raw_path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


async def _not_found(request: web.Request) -> web.StreamResponse:
    raise web.HTTPNotFound()


class LoopbackServer:
    """Answers a request for a path in `answers` (any method) with its answer, others with `default`.

    `port` 0 picks a free one; `url` is known once started.
    """

    def __init__(self, answers: dict[str, Answer] | None = None, default: Answer = _not_found,
                 port: int = 0) -> None:
        self.answers: dict[str, Answer] = dict(answers or {})
        self.default = default
        self.requests: list[Recorded] = []
        self.port = port
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> LoopbackServer:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # shutdown_timeout: a handler still streaming at teardown is cut after 1 s, not 60.
        self._runner = web.AppRunner(app, shutdown_timeout=1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> LoopbackServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @contextlib.contextmanager
    def in_thread(self) -> Iterator[LoopbackServer]:
        """Serve from a thread of its own until the block ends (for tests that do not run a loop)."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="loopback-http", daemon=True)
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.start(), loop).result(10)
            yield self
        finally:
            asyncio.run_coroutine_threadsafe(self.stop(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(Recorded(request.method, request.path, request.raw_path, dict(request.headers),
                                      await request.read()))
        answer = self.answers.get(request.path, self.default)
        return answer if isinstance(answer, web.StreamResponse) else await answer(request)
