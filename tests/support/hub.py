"""Stand-ins for the parts of the hub a test does not exercise."""

from __future__ import annotations

from collections.abc import Callable

from appliance.rooms import protocol as p
from appliance.rooms.server import WorkerConnection


class NoCalls:
    """The CallHandler of a hub with no SIP workers: any call here is a test's mistake."""

    async def offer(self, worker: WorkerConnection, offer: p.Offer) -> p.OfferReply:
        raise AssertionError("no SIP worker in this test")

    def __getattr__(self, name: str) -> Callable[..., None]:
        def unexpected(*_: object) -> None:
            raise AssertionError(f"no SIP worker in this test ({name})")
        return unexpected
