"""The hub: every room on the box and the single 20 ms media clock that drives them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from appliance.core.audio import FRAME_MS
from appliance.observability import metrics
from appliance.rooms.room import Room

log = logging.getLogger(__name__)

TICK_S = FRAME_MS / 1000


class Hub:
    def __init__(self) -> None:
        self.rooms: dict[str, Room] = {}
        # Called after every tick, so transports can send the tick's frames in one write.
        self.after_tick: list[Callable[[], None]] = []
        self._task: asyncio.Task[None] | None = None

    def create_room(self, name: str) -> Room:
        if name in self.rooms:
            raise ValueError(f"room {name} exists")
        room = Room(name)
        self.rooms[name] = room
        return room

    def close_room(self, name: str) -> None:
        room = self.rooms.pop(name, None)
        if room and not room.closed:
            room.closed = True
            for identity in list(room.participants):
                room.leave(identity)
            room.emit("closed")

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="hub-clock")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        skipped = 0
        while True:
            next_at += TICK_S
            self.tick(skipped)
            skipped = 0
            delay = next_at - loop.time()
            if delay < -0.2:
                # We fell far behind (a stall): skip ahead rather than burst-play to catch up. The
                # recordings count the skipped ticks, so they keep the call's length.
                skipped = round(-delay / TICK_S)
                log.warning("hub clock stalled", extra={"fields": {"behind_s": round(-delay, 3), "skipped": skipped}})
                metrics.hub_ticks_skipped.inc(skipped)
                next_at = loop.time()
                delay = 0
            await asyncio.sleep(max(0.0, delay))
            metrics.hub_tick_lag.observe(max(0.0, loop.time() - next_at))

    def tick(self, skipped: int = 0) -> None:
        for room in list(self.rooms.values()):
            try:
                room.tick(skipped)
            except Exception:
                log.exception("room tick failed", extra={"call_id": room.name})
        for flush in self.after_tick:
            flush()
