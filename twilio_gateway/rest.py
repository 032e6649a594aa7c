"""Ending or redirecting a Twilio call through Twilio's REST API, with the `twilio` client.

The flow hanging up must end the caller's phone call, not only our stream: closing a
<Connect><Stream> would move Twilio on to the next TwiML verb. A blind transfer gives the live
call new TwiML instead. `api_base_url` is Twilio's own outside tests.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from appliance.observability.logging import log_extra
from twilio_gateway.session import Redirected

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
        self._background(self._complete(call_sid))

    def redirect(self, call_sid: str, twiml: str, done: Callable[[Redirected], None]) -> None:
        """Give the call `twiml` in the background; `done` learns what Twilio answered."""
        self._background(self._redirect(call_sid, twiml, done))

    def _background(self, request: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(request)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _complete(self, call_sid: str) -> None:
        try:
            await self._client.calls(call_sid).update_async(status="completed")
        except (TwilioException, OSError, TimeoutError) as exc:
            log.error("Twilio did not end the call", extra=log_extra(call_sid=call_sid, error=str(exc)[:300]))
        else:
            log.info("Twilio call ended through the REST API", extra=log_extra(call_sid=call_sid))

    async def _redirect(self, call_sid: str, twiml: str, done: Callable[[Redirected], None]) -> None:
        try:
            await self._client.calls(call_sid).update_async(twiml=twiml)
        except TwilioRestException as exc:
            # Twilio's own words: the call is over (21220), the TwiML was refused, ...
            outcome = Redirected(False, exc.status, f"Twilio error {exc.code}: {exc.msg}"[:200])
        except (TwilioException, OSError, TimeoutError) as exc:
            outcome = Redirected(False, 503, f"Twilio's API did not answer: {exc or type(exc).__name__}"[:200])
        else:
            outcome = Redirected(True, 200, "redirected by Twilio's API")
        log.log(logging.INFO if outcome.ok else logging.ERROR, "Twilio call redirect answered",
                extra=log_extra(call_sid=call_sid, ok=outcome.ok, code=outcome.code, reason=outcome.reason))
        done(outcome)

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=REST_TIMEOUT_S)
        await self._http.close()
