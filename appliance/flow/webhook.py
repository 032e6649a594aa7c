"""A flow's webhook call: POST the call's variables as JSON, merge a JSON object reply.

Anything but a 2xx JSON object within the timeout is an error the flow handles through
its `on_error` branch; the call never waits longer than the step's timeout.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import aiohttp

from appliance.flow.engine import WebhookDone
from appliance.observability.logging import log_extra

log = logging.getLogger(__name__)
MAX_REPLY_BYTES = 64 * 1024


async def call_webhook(url: str, payload: dict[str, Any], timeout: float, call_id: str | None = None) -> WebhookDone:
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            async with session.post(url, json=payload, headers={"User-Agent": "Switchboard"}) as response:
                body = b""
                async for chunk in response.content.iter_chunked(16384):
                    body += chunk
                    if len(body) > MAX_REPLY_BYTES:
                        break
                if response.status // 100 != 2:
                    return _failed(url, f"HTTP {response.status}", call_id)
                if len(body) > MAX_REPLY_BYTES:
                    return _failed(url, "reply too large", call_id)
                try:
                    data = json.loads(body) if body.strip() else {}
                except (ValueError, RecursionError):  # RecursionError: deeply nested JSON
                    return _failed(url, "reply is not JSON", call_id)
                if not isinstance(data, dict):
                    return _failed(url, "reply is not a JSON object", call_id)
                return WebhookDone(ok=True, data=data)
    except asyncio.TimeoutError:
        return _failed(url, f"no reply within {timeout:g} s", call_id)
    except aiohttp.ClientError as exc:
        return _failed(url, f"{type(exc).__name__}: {exc}", call_id)


def _failed(url: str, error: str, call_id: str | None) -> WebhookDone:
    log.warning("webhook failed", extra=log_extra(call_id=call_id, url=url, error=error))
    return WebhookDone(ok=False, error=error)
