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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from aiohttp import WSMsgType, web

from appliance.console.http import CALL_ID, GRANT, error, needs
from appliance.core.audio import FRAME_BYTES, SAMPLE_RATE, SILENCE
from appliance.core.g711 import WIRE_RATE, Outbound
from appliance.observability.logging import log_extra
from appliance.rooms.room import Room, RoomEvent, TickView

__all__ = ["EgressRoutes", "EgressSource"]

log = logging.getLogger(__name__)

PATH = "/api/calls/{call_id}/audio"
QUEUE_FRAMES = 250  # 5 s: a client further behind than this loses the oldest audio
Track = Literal["caller", "heard", "both"]
Format = Literal["pcm16", "mulaw"]


@dataclass(frozen=True)
class EgressSource:
    """A live call as a tap needs it: its room, the caller's identity, and whether the
    recording is paused now."""

    room: Room
    caller: str
    paused: Callable[[], bool]


class _Tap:
    """A room observer that queues each tick's frames for one WebSocket client."""

    def __init__(self, source: EgressSource, track: Track, fmt: Format):
        self.source = source
        self.track = track
        self.format = fmt
        self.frames: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=QUEUE_FRAMES)
        self.dropped = 0
        self.ended = "call ended"
        self._encoders = [Outbound(), Outbound()]  # one per channel: each filter keeps its own state

    def on_tick(self, view: TickView) -> None:
        if self.source.paused():
            left = right = SILENCE
        else:
            left = _frame(view.published.get(self.source.caller))
            right = _frame(view.heard.get(self.source.caller))
        channels = {"caller": [left], "heard": [right], "both": [left, right]}[self.track]
        if self.format == "mulaw":
            channels = [self._mulaw(i, pcm) for i, pcm in enumerate(channels)]
        if len(channels) == 1:
            data = channels[0]
        else:
            width = 1 if self.format == "mulaw" else 2
            dtype = np.uint8 if width == 1 else np.int16
            stereo = np.empty((len(channels[0]) // width, 2), dtype=dtype)
            stereo[:, 0] = np.frombuffer(channels[0], dtype=dtype)
            stereo[:, 1] = np.frombuffer(channels[1], dtype=dtype)
            data = stereo.tobytes()
        if self.frames.full():
            self.frames.get_nowait()
            self.dropped += 1
        self.frames.put_nowait(data)

    def _mulaw(self, channel: int, pcm: bytes) -> bytes:
        return self._encoders[channel].encode(pcm)

    def on_room(self, event: RoomEvent) -> None:
        if event.kind == "closed":
            self.close("call ended")

    def close(self, why: str) -> None:
        self.ended = why
        if self.frames.full():
            self.frames.get_nowait()
            self.dropped += 1
        self.frames.put_nowait(None)


class EgressRoutes:
    def __init__(self, source: Callable[[str], EgressSource | None]):
        self.source = source  # a live call's room and caller, None when no such call is live

    def register(self, app: web.Application) -> None:
        app.router.add_get(PATH, needs("operator", "supervisor", "admin")(self.stream))

    async def stream(self, request: web.Request) -> web.StreamResponse:
        call_id = request.match_info["call_id"]
        if not CALL_ID.fullmatch(call_id):
            return error(400, "not a call id")
        grant = request[GRANT]
        if not grant.allows("supervisor", "admin") and grant.room != call_id:
            return error(403, "this token's grant is for another call; mint one with --room for this call")
        track, fmt = request.query.get("track", "both"), request.query.get("format", "pcm16")
        if track not in ("caller", "heard", "both"):
            return error(400, "track must be caller, heard or both")
        if fmt not in ("pcm16", "mulaw"):
            return error(400, "format must be pcm16 or mulaw")
        source = self.source(call_id)
        if source is None or source.room.closed:
            return error(404, "no such live call")
        socket = web.WebSocketResponse(heartbeat=20, max_msg_size=4096)
        await socket.prepare(request)
        tap = _Tap(source, track, fmt)  # type: ignore[arg-type]  # both checked above
        await socket.send_str(json.dumps({
            "call": call_id, "track": track, "format": "pcm_s16le" if fmt == "pcm16" else "mulaw",
            "sample_rate": SAMPLE_RATE if fmt == "pcm16" else WIRE_RATE, "channels": 2 if track == "both" else 1,
            "frame_ms": 20,
        }))
        source.room.observers.append(tap)
        source.room.listeners.append(tap.on_room)
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
            if tap in source.room.observers:
                source.room.observers.remove(tap)
            if tap.on_room in source.room.listeners:
                source.room.listeners.remove(tap.on_room)
        if not socket.closed:
            await socket.send_str(json.dumps({"event": "ended", "reason": tap.ended, "dropped_frames": tap.dropped}))
            await socket.close()
        log.info("audio egress ended", extra=log_extra(call_id=call_id, identity=grant.identity, reason=tap.ended,
                                                       dropped_frames=tap.dropped))
        return socket

    @staticmethod
    async def _read(socket: web.WebSocketResponse, tap: _Tap) -> None:
        """The client sends nothing we use; its close (or anything but text) ends the stream."""
        async for message in socket:
            if message.type not in (WSMsgType.TEXT, WSMsgType.PING, WSMsgType.PONG):
                break
        tap.close("client closed")


def _frame(pcm: bytes | None) -> bytes:
    if pcm is None:
        return SILENCE
    return pcm if len(pcm) == FRAME_BYTES else (pcm + SILENCE)[:FRAME_BYTES]
