"""Live audio egress: a live call's audio over a WebSocket as it happens, as LiveKit's track
egress to a WebSocket does, for transcription and analytics outside the box.

`GET /api/calls/{id}/audio?track=caller|heard|both&format=pcm16|mulaw` (WebSocket). Admins and
supervisors may tap any call; any other person's token only the call its grant names
(`appliance token --room CALL_ID`). The first message is a JSON header (text); then each 20 ms
of the call is one binary message: the caller (left of the recording), what the caller heard
(right), or both interleaved as stereo; 16 kHz s16le, or μ-law at 8 kHz. It is taken on the
hub's tick from the same frames the recorder writes, so it matches the recording sample for
sample; while the recording is paused (PCI) it is silence too. A last JSON message says why
the stream ended. A client that stops reading loses frames (counted in that message), never
slows the call.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence

from aiohttp import WSMsgType, web
from pydantic import BaseModel, Field

from appliance.console.http import CALL_ID, GRANT, CallPath, error, query, serve
from appliance.core.api import Operation
from appliance.observability.logging import log_extra
from appliance.recording.tap import AudioTap, Format, Track, header
from appliance.recording.timeline import CallAudio
from appliance.rooms.tokens import PERSON_ROLES

__all__ = ["EgressRoutes"]

log = logging.getLogger(__name__)

PATH = "/api/calls/{call_id}/audio"


class AudioQuery(BaseModel):
    track: Track = Field("both", description="the caller, what they heard, or both as stereo")
    format: Format = Field("pcm16", description="16 kHz s16le, or μ-law at 8 kHz")


AUDIO = Operation(
    "GET", PATH, "A live call's audio as it happens, over a WebSocket: a JSON header (text), then a binary "
    "message per 20 ms of audio, then a JSON message saying why it ended", "calls", roles=PERSON_ROLES,
    path_params=CallPath, query=AudioQuery, websocket=True,
    errors={400: "not a call id, a bad track or format, or not a WebSocket upgrade",
            403: "an operator's token without a grant for this call (appliance token --room CALL_ID)",
            404: "no such live call"})


class EgressRoutes:
    def __init__(self, source: Callable[[str], CallAudio | None]):
        self.source = source  # a live call's room and caller, None when no such call is live

    def register(self, app: web.Application) -> Sequence[Operation]:
        return serve(app, (AUDIO, self.stream))

    async def stream(self, request: web.Request) -> web.StreamResponse:
        call_id = request.match_info["call_id"]
        if not CALL_ID.fullmatch(call_id):
            return error(400, "not a call id")
        grant = request[GRANT]
        if not grant.allows("supervisor", "admin") and grant.room != call_id:
            return error(403, "this token's grant is for another call; mint one with --room for this call")
        asked = query(request, AudioQuery)
        if isinstance(asked, web.Response):
            return asked
        track, fmt = asked.track, asked.format
        source = self.source(call_id)
        if source is None or source.room.closed:
            return error(404, "no such live call")
        socket = web.WebSocketResponse(heartbeat=20, max_msg_size=4096)
        await socket.prepare(request)
        tap = AudioTap(source, track, fmt)
        await socket.send_str(json.dumps(header(call_id, track, fmt)))
        tap.attach()
        log.info("audio egress started", extra=log_extra(call_id=call_id, identity=grant.identity, track=track,
                                                         format=fmt))
        reader = asyncio.get_running_loop().create_task(self._read(socket, tap))
        try:
            while (frame := await tap.frames.get()) is not None:
                await socket.send_bytes(frame)
        except (ConnectionResetError, RuntimeError):
            tap.ended = "client gone"
        finally:
            reader.cancel()
            tap.detach()
        if not socket.closed:
            await socket.send_str(json.dumps({"event": "ended", "reason": tap.ended, "dropped_frames": tap.dropped}))
            await socket.close()
        log.info("audio egress ended", extra=log_extra(call_id=call_id, identity=grant.identity, reason=tap.ended,
                                                       dropped_frames=tap.dropped))
        return socket

    @staticmethod
    async def _read(socket: web.WebSocketResponse, tap: AudioTap) -> None:
        """The client sends nothing we use; its close (or anything but text) ends the stream."""
        async for message in socket:
            if message.type not in (WSMsgType.TEXT, WSMsgType.PING, WSMsgType.PONG):
                break
        tap.close("client closed")
