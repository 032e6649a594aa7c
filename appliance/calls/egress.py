"""A flow's `egress` step: the call's audio, live, to a WebSocket server of the admin's, as
LiveKit's track egress to a WebSocket does (the API's `GET /api/calls/{id}/audio` is the same
stream pulled by a client instead).

The URL is under `webhooks.allowed` (the flow checker refuses others) and is reached the way
webhooks are: normalised, its host looked up once and each answer checked, no redirect. The
server gets the same JSON header, 20 ms binary frames and closing JSON as API clients do. A
server that is down, refuses or goes away is a call event (`egress_failed`); the call goes on.
"""

from __future__ import annotations

import json
import logging

import aiohttp
from yarl import URL

from appliance.flow.policy import normalise_url
from appliance.flow.webhook import WebhookError, pinned_connector
from appliance.observability.logging import log_extra
from appliance.recording.tap import AudioTap, Format, Track, header
from appliance.recording.timeline import CallAudio
from appliance.storage import Storage

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0


async def stream_to(url: str, call_id: str, source: CallAudio, track: Track, fmt: Format, storage: Storage) -> None:
    """Until the call ends (or the server goes): the call's audio to the WebSocket at `url`."""
    tap = AudioTap(source, track, fmt)
    started = False
    try:
        target = URL(normalise_url(url), encoded=True)
        connector = await pinned_connector(target)
        timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT_S)
        async with aiohttp.ClientSession(connector=connector, trust_env=False, timeout=timeout) as session, \
                session.ws_connect(target, heartbeat=20, max_msg_size=4096) as socket:
            await socket.send_str(json.dumps(header(call_id, track, fmt)))
            tap.attach()
            started = True
            storage.add_event(call_id, "egress_started", {"url": url, "track": track, "format": fmt})
            log.info("audio egress to a server started", extra=log_extra(call_id=call_id, url=url))
            while (frame := await tap.frames.get()) is not None:
                if socket.closed:
                    raise ConnectionResetError("the server closed the stream")
                await socket.send_bytes(frame)
            await socket.send_str(json.dumps({"event": "ended", "reason": tap.ended, "dropped_frames": tap.dropped}))
        storage.add_event(call_id, "egress_ended", {"url": url, "reason": tap.ended, "dropped_frames": tap.dropped})
    except (aiohttp.ClientError, OSError, WebhookError, ValueError, TimeoutError) as exc:
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        storage.add_event(call_id, "egress_failed", {"url": url, "error": error, "after_start": started})
        log.warning("audio egress to a server failed", extra=log_extra(call_id=call_id, url=url, error=error))
    finally:
        tap.detach()
