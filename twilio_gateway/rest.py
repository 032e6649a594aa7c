"""Ending a Twilio call through Twilio's REST API, with the `twilio` client.

The flow hanging up must end the caller's phone call, not only our stream: closing a
<Connect><Stream> would move Twilio on to the next TwiML verb. `api_base_url` is Twilio's
own outside tests.
"""

from __future__ import annotations

import asyncio
import logging

from twilio.base.exceptions import TwilioException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from appliance.observability.logging import log_extra

__all__ = ["TwilioCalls"]

log = logging.getLogger(__name__)

REST_TIMEOUT_S = 10.0


class TwilioCalls:
    def __init__(self, account_sid: str, auth_token: str, api_base_url: str):
        self._http = AsyncTwilioHttpClient(timeout=REST_TIMEOUT_S)  # on the running loop: it opens a session
        self._client = Client(account_sid, auth_token, http_client=self._http)
        self._client.api.base_url = api_base_url
        self._tasks: set[asyncio.Task[None]] = set()

    def complete(self, call_sid: str) -> None:
        """Hang the call up (status=completed) in the background; failures are logged."""
        task = asyncio.get_running_loop().create_task(self._complete(call_sid))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _complete(self, call_sid: str) -> None:
        try:
            await self._client.calls(call_sid).update_async(status="completed")
        except (TwilioException, OSError, TimeoutError) as exc:
            log.error("Twilio did not end the call", extra=log_extra(call_sid=call_sid, error=str(exc)[:300]))
        else:
            log.info("Twilio call ended through the REST API", extra=log_extra(call_sid=call_sid))

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=REST_TIMEOUT_S)
        await self._http.close()
