"""Which calls the box takes: the trunk they came on and the flow their number runs.

The SIP edge already refused sources no trunk allows (403) and named the trunk and the
source in headers; this is the second, independent check (the named trunk must allow that
source), and the number → flow routing (404).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from appliance.config import Config, TrunkConfig


@dataclass(frozen=True)
class Decision:
    code: int
    reason: str
    trunk: TrunkConfig | None = None
    flow: str | None = None


def _allows(trunk: TrunkConfig, source: str | None) -> bool:
    try:
        address = ipaddress.ip_address(source or "")
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(net, strict=False) for net in trunk.sources)


def trunk_for_source(config: Config, source: str | None) -> TrunkConfig | None:
    return next((trunk for trunk in config.trunks if _allows(trunk, source)), None)


def admit(config: Config, trunk_name: str | None, source: str | None, number: str,
          flow_numbers: dict[str, str] | None = None, twilio: bool = False) -> Decision:
    """`twilio`: the call came from the Twilio gateway, whose voice webhook Twilio signed; it has
    no SIP source to check, only its number (twilio.numbers when listed)."""
    if twilio:
        return _route(config, None, number, flow_numbers, config.twilio.numbers)
    # A name alone proves nothing: it is a header, and whoever reaches a worker can write one.
    trunk = config.trunk(trunk_name) if trunk_name else trunk_for_source(config, source)
    if trunk is None or not _allows(trunk, source):
        return Decision(403, "Forbidden")
    return _route(config, trunk, number, flow_numbers, trunk.numbers)


def _route(config: Config, trunk: TrunkConfig | None, number: str, flow_numbers: dict[str, str] | None,
           served: list[str]) -> Decision:
    if served and number not in served:
        return Decision(404, "Not Found", trunk)
    flow = config.numbers.get(number) or (flow_numbers or {}).get(number)
    if flow is None:
        return Decision(404, "Not Found", trunk)
    return Decision(200, "OK", trunk, flow)
