"""Which calls the hub takes: a named trunk counts only for a source inside its networks."""

from __future__ import annotations

import pytest

from appliance.calls.admission import admit
from appliance.config import Config, TrunkConfig, TwilioConfig

CONFIG = Config(
    trunks=[
        TrunkConfig(name="lan", sources=["10.0.0.0/8"], numbers=["100"]),
        TrunkConfig(name="vip", sources=["198.51.100.0/24", "2001:db8::/32"], numbers=["900"]),
    ],
    numbers={"100": "default", "900": "premium"},
)


@pytest.mark.parametrize("source", ["10.1.2.3", "203.0.113.9", None, "", "not-an-address"])
def test_a_trunk_named_for_a_source_outside_its_networks_is_refused(source: str | None) -> None:
    decision = admit(CONFIG, "vip", source, "900")

    assert (decision.code, decision.reason, decision.flow) == (403, "Forbidden", None)


@pytest.mark.parametrize("source", ["198.51.100.7", "2001:db8::7"])
def test_a_trunk_named_for_a_source_inside_its_networks_is_admitted(source: str) -> None:
    decision = admit(CONFIG, "vip", source, "900")

    assert decision.code == 200 and decision.trunk is not None
    assert (decision.trunk.name, decision.flow) == ("vip", "premium")


def test_an_unknown_trunk_name_is_refused() -> None:
    assert admit(CONFIG, "carrier-x", "10.1.2.3", "100").code == 403


def test_without_a_name_the_source_picks_the_trunk() -> None:
    decision = admit(CONFIG, None, "10.1.2.3", "100")

    assert decision.code == 200 and decision.trunk is not None and decision.trunk.name == "lan"
    # The trunk's numbers still apply: the LAN cannot reach the premium line.
    assert admit(CONFIG, None, "10.1.2.3", "900").code == 404


def test_a_twilio_stream_is_routed_by_its_number_alone() -> None:
    # No SIP source to check: the gateway took the call only after Twilio's signed webhook.
    config = CONFIG.model_copy(update={"numbers": {"+15550100": "default", "100": "default"},
                                       "twilio": TwilioConfig(numbers=["+15550100"])})
    assert admit(config, None, None, "+15550100", twilio=True).code == 200
    assert admit(config, None, None, "100", twilio=True).code == 404  # not a number served over Twilio
    assert admit(config, None, None, "+15550100").code == 403  # the same offer from a SIP worker
