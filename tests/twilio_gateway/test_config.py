"""The twilio: section: what `enabled` needs is said at start-up, and the auth token stays private."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import TwilioConfig
from appliance.core.errors import ConfigError

ACCOUNT = "AC" + "ab" * 16
PUBLIC = "https://switchboard.example.com"


def test_the_auth_token_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "from-env")
    assert TwilioConfig().auth_token() == "from-env"
    monkeypatch.delenv("TWILIO_AUTH_TOKEN")
    with pytest.raises(ConfigError, match="no auth token"):
        TwilioConfig().auth_token()


def test_an_auth_token_file_must_be_the_owners_alone(tmp_path: Path) -> None:
    path = tmp_path / "twilio-token"
    path.write_text("from-file\n")
    path.chmod(0o640)
    with pytest.raises(ConfigError, match="chmod 600"):
        TwilioConfig(auth_token_file=path).auth_token()
    path.chmod(0o600)
    assert TwilioConfig(auth_token_file=path).auth_token() == "from-file"


def test_enabled_needs_a_public_url_an_account_and_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "t")
    TwilioConfig().check()  # disabled: nothing needed
    with pytest.raises(ConfigError, match="public_url"):
        TwilioConfig(enabled=True, account_sid=ACCOUNT).check()
    with pytest.raises(ConfigError, match="account_sid"):
        TwilioConfig(enabled=True, public_url=PUBLIC).check()
    with pytest.raises(ConfigError, match="sip_host"):
        TwilioConfig(enabled=True, public_url=PUBLIC, account_sid=ACCOUNT, mode="sip").check()
    TwilioConfig(enabled=True, public_url=PUBLIC, account_sid=ACCOUNT).check()


def test_the_public_url_is_https() -> None:
    with pytest.raises(ValueError, match="public_url"):
        TwilioConfig(public_url="http://switchboard.example.com")
