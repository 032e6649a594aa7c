"""Which calls the box takes: the trunk they came on and the flow their number runs.

The SIP edge already refused sources no trunk allows (403) and named the trunk in a
header; this is the second, independent check, and the number → flow routing (404).
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


def trunk_for_source(config: Config, source: str | None) -> TrunkConfig | None:
    if not source:
        return None
    try:
        address = ipaddress.ip_address(source)
    except ValueError:
        return None
    for trunk in config.trunks:
        if any(address in ipaddress.ip_network(net, strict=False) for net in trunk.sources):
            return trunk
    return None


def admit(config: Config, trunk_name: str | None, source: str | None, number: str,
          flow_numbers: dict[str, str] | None = None) -> Decision:
    trunk = config.trunk(trunk_name) if trunk_name else trunk_for_source(config, source)
    if trunk is None:
        return Decision(403, "Forbidden")
    if trunk.numbers and number not in trunk.numbers:
        return Decision(404, "Not Found", trunk)
    flow = config.numbers.get(number) or (flow_numbers or {}).get(number)
    if flow is None:
        return Decision(404, "Not Found", trunk)
    return Decision(200, "OK", trunk, flow)
