"""Sending the caller to another number, for a flow's transfer step or a persona's request:
the one place the transfer allow-list is checked on a live call, right before dialling.

Flow files are checked against the same list when loaded, to tell the author where the
mistake is (appliance/flow/checker.py); this check is the guard, and it must be here because
a persona's destination comes from the conversation and was never in a file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from appliance.calls.playback import Playback
from appliance.flow.policy import destination_allowed
from appliance.observability.logging import log_extra
from appliance.storage import Storage

log = logging.getLogger(__name__)


class Transfers:
    def __init__(self, call_id: str, allowed: list[str], storage: Storage, playback: Playback,
                 refer: Callable[[str], None], bridge: Callable[[str, float], None]):
        self.call_id = call_id
        self.allowed = allowed
        self.storage = storage
        self.playback = playback
        self._refer = refer
        self._bridge = bridge

    def request(self, to: str, mode: str = "refer", timeout: float = 30.0) -> bool:
        """Start a transfer to `to`; False, and nothing dialled, when the allow-list refuses it."""
        if not destination_allowed(to, self.allowed):
            log.warning("transfer destination refused", extra=log_extra(call_id=self.call_id, pii={"to": to}))
            self.storage.add_event(self.call_id, "transfer_refused", {"to": to})
            return False
        if mode == "bridge":
            self.playback.ringback()
            self._bridge(to, timeout)
        else:
            self._refer(to)
        return True
