"""The console's certificate: made once, kept private, and good for a real TLS handshake on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from appliance.config import ConsoleConfig
from appliance.console.tls import ensure_certificate, fingerprint, server_context
from appliance.core.errors import ConfigError


def test_generated_certificate_is_kept_and_reused(tmp_path: Path):
    cert, key = ensure_certificate(ConsoleConfig(), tmp_path / "data")
    assert (cert, key) == (tmp_path / "data" / "console.crt", tmp_path / "data" / "console.key")
    assert key.stat().st_mode & 0o777 == 0o600
    first = cert.read_bytes(), key.read_bytes()
    assert ensure_certificate(ConsoleConfig(), tmp_path / "data") == (cert, key)
    assert (cert.read_bytes(), key.read_bytes()) == first
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [".console.lock", "console.crt", "console.key"]


def test_generated_certificate_names_loopback_and_is_p256(tmp_path: Path):
    cert, _ = ensure_certificate(ConsoleConfig(host="192.0.2.7"), tmp_path)
    loaded = x509.load_pem_x509_certificate(cert.read_bytes())
    sans = loaded.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    addresses = sans.get_values_for_type(x509.IPAddress)
    assert {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"),
            ipaddress.ip_address("192.0.2.7")} <= set(addresses)
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    public = loaded.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == "secp256r1"
    days = (loaded.not_valid_after_utc - loaded.not_valid_before_utc).days
    assert days == 825


def test_fingerprint_is_what_browsers_show(tmp_path: Path):
    cert, _ = ensure_certificate(ConsoleConfig(), tmp_path)
    der = ssl.PEM_cert_to_DER_cert(cert.read_text())
    digest = hashlib.sha256(der).hexdigest().upper()
    shown = fingerprint(cert)
    assert shown == "SHA-256 " + ":".join(digest[i:i + 2] for i in range(0, 64, 2))


async def test_a_client_pinning_the_certificate_completes_a_handshake(tmp_path: Path):
    cert, key = ensure_certificate(ConsoleConfig(), tmp_path)

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readexactly(5))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=server_context(cert, key))
    port = server.sockets[0].getsockname()[1]
    client = ssl.create_default_context(cafile=cert)  # trusts this certificate and nothing else
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client, server_hostname="127.0.0.1")
        writer.write(b"hello")
        assert await reader.readexactly(5) == b"hello"
        assert writer.get_extra_info("ssl_object").version() in ("TLSv1.2", "TLSv1.3")
        writer.close()
        await writer.wait_closed()
        # A certificate made elsewhere is not this one: the pinned client refuses it.
        other_cert, other_key = ensure_certificate(ConsoleConfig(), tmp_path / "other")
        other = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=server_context(other_cert, other_key))
        other_port = other.sockets[0].getsockname()[1]
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.open_connection("127.0.0.1", other_port, ssl=client, server_hostname="127.0.0.1")
        other.close()
    finally:
        server.close()
        await server.wait_closed()


def test_server_context_refuses_tls_below_1_2(tmp_path: Path):
    cert, key = ensure_certificate(ConsoleConfig(), tmp_path)
    assert server_context(cert, key).minimum_version == ssl.TLSVersion.TLSv1_2


def test_admin_certificate_is_used_when_its_key_is_private(tmp_path: Path):
    cert, key = ensure_certificate(ConsoleConfig(), tmp_path / "made")
    console = ConsoleConfig(cert_file=cert, key_file=key)
    assert ensure_certificate(console, tmp_path / "data") == (cert, key)
    assert not (tmp_path / "data").exists()


def test_admin_key_readable_by_others_is_refused(tmp_path: Path):
    cert, key = ensure_certificate(ConsoleConfig(), tmp_path)
    key.chmod(0o644)
    with pytest.raises(ConfigError, match=r"readable by others \(mode 0644\); chmod 600"):
        ensure_certificate(ConsoleConfig(cert_file=cert, key_file=key), tmp_path / "data")


def test_admin_files_missing_or_half_configured_are_refused(tmp_path: Path):
    cert, key = ensure_certificate(ConsoleConfig(), tmp_path)
    with pytest.raises(ConfigError, match="go together"):
        ensure_certificate(ConsoleConfig(cert_file=cert), tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        ensure_certificate(ConsoleConfig(cert_file=tmp_path / "nope.crt", key_file=key), tmp_path)


def test_a_key_that_does_not_match_the_certificate_is_a_config_error(tmp_path: Path):
    cert, _ = ensure_certificate(ConsoleConfig(), tmp_path / "a")
    _, other_key = ensure_certificate(ConsoleConfig(), tmp_path / "b")
    with pytest.raises(ConfigError, match="cannot use certificate"):
        server_context(cert, other_key)


def test_a_torn_certificate_is_made_again(tmp_path: Path):
    cert, key = ensure_certificate(ConsoleConfig(), tmp_path)
    cert.write_text("-----BEGIN CERTIFICATE-----\ntorn")
    assert ensure_certificate(ConsoleConfig(), tmp_path) == (cert, key)
    server_context(cert, key)  # the new pair matches
