"""What a transfer tells the far end comes from configuration, never from what a caller wrote."""

from __future__ import annotations

import pytest

from appliance.calls.manager import _caller_id, _refer_target
from appliance.config import TransfersConfig

# A caller's From names any user and host it likes: nothing here is verified.
VARIABLES = {"caller": "+19005550100", "called": "400", "call_id": "CA1", "trunk": "lan"}


def test_the_default_caller_id_is_the_number_the_caller_dialled() -> None:
    assert TransfersConfig().caller_id == "called"
    assert _caller_id("called", VARIABLES) == "400"


def test_a_fixed_caller_id_is_sent_as_configured() -> None:
    assert _caller_id("+15550100", VARIABLES) == "+15550100"


def test_passing_the_callers_number_on_is_an_explicit_choice() -> None:
    assert _caller_id("caller", VARIABLES) == "+19005550100"


@pytest.mark.parametrize("user", ["", "a b", "x@evil.example", "<sip:x@y>", "1" * 65, "x\r\nVia: evil"])
def test_a_from_user_unfit_for_a_header_is_not_sent(user: str) -> None:
    assert _caller_id("caller", VARIABLES | {"caller": user}) is None


def test_a_refer_for_a_number_goes_to_the_configured_carrier_host() -> None:
    assert _refer_target("+15550199", "sip:example.pstn.twilio.com") == "sip:+15550199@example.pstn.twilio.com"


def test_without_a_carrier_host_a_number_is_referred_as_tel() -> None:
    # Before: sip:+15550199@<the host in the caller's From>, a host the caller chose.
    assert _refer_target("+15550199", None) == "tel:+15550199"


def test_sip_destinations_are_referred_as_the_admin_wrote_them() -> None:
    assert _refer_target("sip:desk@pbx.example.com", None) == "sip:desk@pbx.example.com"
