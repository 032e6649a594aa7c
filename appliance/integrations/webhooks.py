"""Event webhooks: every call event a receiver asked for, delivered at least once, in order.

Each event is written to SQLite's outbox (one row per receiver) inside the change that made it,
before any attempt, so a restart resumes where delivery stopped. One task per receiver sends its
events oldest first, one at a time: order is kept (per call, and overall), and an event that
fails is retried with doubling waits (up to `events.retry_max_s`) until `events.give_up_after_s`,
then dropped with a log line and a metric. Nothing here runs on a call's path but the insert: a
slow or dead receiver delays only its own queue.

Signed as LiveKit signs its webhooks: the `Authorization` header holds a JWT from the API key
and secret carrying the body's SHA-256, which livekit-api's `WebhookReceiver` verifies.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any

from livekit import api

from appliance.config import EventsConfig
from appliance.core.errors import ConfigError
from appliance.flow.policy import url_allowed
from appliance.flow.webhook import WebhookError, post_body
from appliance.integrations.events import events_for
from appliance.observability import metrics
from appliance.observability.logging import log_extra
from appliance.storage import Storage

log = logging.getLogger(__name__)

FIRST_RETRY_S = 1.0
BACKLOG_POLL_S = 0.2


class EventWebhooks:
    def __init__(self, storage: Storage, config: EventsConfig, allowed: list[str], api_key: str, api_secret: str,
                 api_url: str, clock: Callable[[], float] = time.time):
        for i, hook in enumerate(config.webhooks):
            # Events go where the admin said, under the same allow-list as flows' webhooks.
            if not url_allowed(hook.url, allowed):
                raise ConfigError(f"events.webhooks.{i}.url: {hook.url} is not under webhooks.allowed")
        self.storage = storage
        self.config = config
        self.api_key = api_key
        self.api_secret = api_secret
        self.api_url = api_url.rstrip("/")
        self.clock = clock
        self._wake = {hook.url: asyncio.Event() for hook in config.webhooks}
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self.storage.observers.append(self._changed)
        for url in set(self.storage.webhook_urls_pending()) - set(self._wake):
            log.warning("events queued for a receiver no longer configured stay undelivered", extra=log_extra(url=url))
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._deliver(url), name=f"webhooks {url}") for url in self._wake]

    async def stop(self) -> None:
        if self._changed in self.storage.observers:
            self.storage.observers.remove(self._changed)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- events in
    def _changed(self, call_id: str, what: str, data: dict[str, Any]) -> None:
        if not self.config.webhooks:
            return
        try:
            events = events_for(self.storage, self.api_url, call_id, what, data)
            now = self.clock()
            for event in events:
                body = event.body()
                for hook in self.config.webhooks:
                    if event.name in hook.events:
                        self.storage.enqueue_webhook(hook.url, call_id, event.name, body, now)
                        self._wake[hook.url].set()
        except Exception:  # noqa: BLE001 - an event that cannot be queued must not fail the call
            log.exception("event webhook not queued", extra=log_extra(call_id=call_id, change=what))

    # --- events out
    async def _deliver(self, url: str) -> None:
        wake = self._wake[url]
        while True:
            if self.storage.pending_writes:
                # The database is locked by another process: the outbox as read now lacks events still
                # waiting to be written, and still shows pending what was delivered meanwhile.
                await asyncio.sleep(BACKLOG_POLL_S)
                continue
            row = self.storage.next_webhook(url)
            if row is None:
                await wake.wait()
                wake.clear()
                continue
            wait = row["next_at"] - self.clock()
            if wait > 0:
                wake.clear()
                try:
                    await asyncio.wait_for(wake.wait(), wait)
                except TimeoutError:
                    pass
                continue
            await self._attempt(url, row)

    async def _attempt(self, url: str, row: dict[str, Any]) -> None:
        attempts = row["attempts"] + 1
        now = self.clock()
        if now - row["created_at"] > self.config.give_up_after_s:
            self.storage.webhook_attempted(row["id"], "given_up", row["attempts"], now, row["last_error"], now)
            metrics.webhooks_given_up.inc()
            log.error("event webhook given up", extra=log_extra(call_id=row["call_id"], url=url, event=row["event"],
                                                                attempts=row["attempts"], error=row["last_error"]))
            return
        body = row["body"].encode()
        digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
        token = api.AccessToken(self.api_key, self.api_secret).with_sha256(digest).to_jwt()
        headers = {"Content-Type": "application/webhook+json", "Authorization": token}
        try:
            await post_body(url, body, headers, self.config.timeout_s, row["call_id"])
        except WebhookError as exc:
            retry = min(self.config.retry_max_s, FIRST_RETRY_S * 2 ** (attempts - 1))
            self.storage.webhook_attempted(row["id"], "pending", attempts, self.clock() + retry, str(exc), None)
            metrics.webhook_attempts_failed.inc()
            log.warning("event webhook failed; retrying", extra=log_extra(
                call_id=row["call_id"], url=url, event=row["event"], attempts=attempts, retry_s=retry, error=str(exc)))
            return
        done = self.clock()
        self.storage.webhook_attempted(row["id"], "delivered", attempts, done, None, done)
        metrics.webhooks_delivered.labels(row["event"]).inc()
        metrics.webhook_delay.observe(max(0.0, done - row["created_at"]))
