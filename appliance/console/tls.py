"""The console's TLS certificate: the admin's own, else a self-signed one made once and kept.

Browsers give a page the microphone only in a secure context, so the console is HTTPS even on
a LAN. A self-signed certificate makes each browser warn once; operators compare the SHA-256
fingerprint `appliance cert` prints (and install.sh shows) with what the browser shows.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import ipaddress
import os
import socket
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from appliance.config import ConsoleConfig
from appliance.core.errors import ConfigError

CERT_NAME, KEY_NAME, LOCK_NAME = "console.crt", "console.key", ".console.lock"
# The longest validity browsers accept for a TLS server certificate (CA/Browser Forum, 2018).
VALID_DAYS = 825
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def ensure_certificate(console: ConsoleConfig, data_dir: Path) -> tuple[Path, Path]:
    """(certificate, key) PEM files: the configured ones, checked, else data_dir's, made if missing or expired."""
    if console.cert_file or console.key_file:
        if not (console.cert_file and console.key_file):
            raise ConfigError("console: cert_file and key_file go together; set both, or neither for a self-signed one")
        for path in (console.cert_file, console.key_file):
            if not path.is_file():
                raise ConfigError(f"console: {path} does not exist or is not a file")
        _check_private(console.key_file)
        return console.cert_file, console.key_file
    cert, key = data_dir / CERT_NAME, data_dir / KEY_NAME
    data_dir.mkdir(parents=True, exist_ok=True)
    # One maker at a time: the appliance starting and `appliance cert` (install.sh) may both
    # find no certificate, and two makers could leave one's key beside the other's certificate.
    with open(data_dir / LOCK_NAME, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (cert.is_file() and key.is_file() and not _expired(cert)):
            _generate(cert, key, _hostname(), _addresses(console.host))
    _check_private(key)
    return cert, key


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"console: cannot use certificate {cert} with key {key}: {exc}") from exc
    return context


def fingerprint(cert_path: Path) -> str:
    """`SHA-256 AB:CD:...`, as browsers show a certificate's fingerprint."""
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return "SHA-256 " + cert.fingerprint(hashes.SHA256()).hex(":").upper()


def _check_private(key: Path) -> None:
    mode = key.stat().st_mode & 0o777
    if mode & 0o077:
        raise ConfigError(f"console: key {key} is readable by others (mode {mode:04o}); "
                          f"chmod 600 it and give it to the user the appliance runs as")


def _expired(cert: Path) -> bool:
    try:
        loaded = x509.load_pem_x509_certificate(cert.read_bytes())
    except ValueError:
        return True  # a torn write of our own file: make it again
    return loaded.not_valid_after_utc <= dt.datetime.now(dt.UTC)


def _generate(cert_path: Path, key_path: Path, hostname: str, addresses: list[IPAddress]) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    names: list[x509.GeneralName] = [x509.DNSName(h) for h in dict.fromkeys([hostname, "localhost"])]
    names += [x509.IPAddress(a) for a in dict.fromkeys(addresses)]
    now = dt.datetime.now(dt.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))  # a browser's clock a little behind ours
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    # Both written beside their place and renamed, the certificate last: a crash leaves either
    # the old pair or no certificate (made again next start), never a key that does not match it.
    _write(key_path, key_pem, 0o600)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    # The mode from the first byte: write-then-chmod leaves a moment where anyone may read the key.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)


def _hostname() -> str:
    name = socket.gethostname().strip().lower()
    try:
        name.encode("ascii")
    except UnicodeEncodeError:
        return "localhost"
    return name or "localhost"


def _addresses(host: str) -> list[IPAddress]:
    """Where browsers may reach the console: loopback, the configured address, the box's IPv4 ones."""
    found: list[IPAddress] = [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    candidates = [host]
    try:
        candidates += [str(info[4][0]) for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)]
    except OSError:
        pass
    # The address of the route to the outside world; connecting a UDP socket sends nothing.
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: routed like the internet, never reached
            candidates.append(probe.getsockname()[0])
    except OSError:
        pass
    for candidate in candidates:
        try:
            address = ipaddress.ip_address(candidate)
        except ValueError:
            continue  # a name, not an address
        if not (address.is_loopback or address.is_unspecified):
            found.append(address)
    return found
