"""Trunk presets and the transfer credentials in appliance.yaml: what they fill in, and the errors."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
import yaml

from appliance.config import TRUNK_PRESETS, Config, TransfersConfig
from appliance.core.errors import ConfigError


def _load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "appliance.yaml"
    path.write_text(text)
    return Config.load(path)


def _admits(config: Config, address: str) -> bool:
    (trunk,) = config.trunks
    return any(ipaddress.ip_address(address) in ipaddress.ip_network(net) for net in trunk.sources)


def test_the_twilio_preset_fills_in_name_and_every_regions_signalling_networks(tmp_path: Path) -> None:
    config = _load(tmp_path, "trunks:\n  - preset: twilio\n    numbers: ['+15017122661']\n")

    (trunk,) = config.trunks
    assert (trunk.name, trunk.numbers) == ("twilio", ["+15017122661"])
    assert trunk.sources == TRUNK_PRESETS["twilio"]
    # One gateway address of each edge location Twilio lists (Virginia ... São Paulo).
    for address in ("54.172.60.1", "54.244.51.2", "54.171.127.193", "35.156.191.130", "54.65.63.195",
                    "54.169.127.128", "54.252.254.66", "177.71.206.194"):
        assert _admits(config, address), address
    assert not _admits(config, "54.172.60.4") and not _admits(config, "198.51.100.7")


def test_sources_beside_a_preset_replace_its_list(tmp_path: Path) -> None:
    config = _load(tmp_path, "trunks:\n  - {preset: twilio, name: twilio-us, sources: ['54.172.60.0/30']}\n")

    (trunk,) = config.trunks
    assert (trunk.name, trunk.sources) == ("twilio-us", ["54.172.60.0/30"])
    assert not _admits(config, "177.71.206.194")


def test_an_unknown_preset_is_a_config_error_naming_the_file_and_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        _load(tmp_path, "trunks:\n  - {preset: twillio, numbers: ['+15017122661']}\n")

    assert str(error.value) == (f"{tmp_path / 'appliance.yaml'}: trunks.0.preset: Value error, "
                                "unknown trunk preset 'twillio'; known presets: twilio")


@pytest.mark.parametrize(("settings", "message"), [
    ({"username": "box"}, "set transfers.outbound_proxy too"),
    ({"outbound_proxy": "sip:example.pstn.twilio.com", "password_env": "X"}, "set transfers.username too"),
    ({"outbound_proxy": "sip:example.pstn.twilio.com", "username": "box", "password_file": "password"},
     "must be an absolute path"),
])
def test_transfer_credentials_are_checked_as_they_load(tmp_path: Path, settings: dict[str, str],
                                                       message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Config.load(_write(tmp_path, {"transfers": settings}))


def _write(tmp_path: Path, data: dict[str, object]) -> Path:
    path = tmp_path / "appliance.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_transfer_password_is_read_as_a_trunks_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = "sip:example.pstn.twilio.com"
    monkeypatch.setenv("TERMINATION_PASSWORD", "s3cret")
    by_env = TransfersConfig(outbound_proxy=proxy, username="box", password_env="TERMINATION_PASSWORD")
    assert by_env.password == "s3cret"
    shared = tmp_path / "shared"
    shared.write_text("s3cret\n")
    shared.chmod(0o644)
    with pytest.raises(ConfigError, match="transfers: password_file .* chmod 600"):
        _ = TransfersConfig(outbound_proxy=proxy, username="box", password_file=shared).password
    shared.chmod(0o600)
    assert TransfersConfig(outbound_proxy=proxy, username="box", password_file=shared).password == "s3cret"
    # Like a trunk's, it is kept out of the workers' and Kamailio's environments.
    assert "TERMINATION_PASSWORD" in Config(transfers=by_env).secret_env_names()
