"""The SIP edge's settings and the Kamailio config rendered from them.

EdgeSettings and EdgeTrunk are checked here (`_check`) before any text is written: the
dispatcher list, and kamailio.cfg filled from the sip/kamailio.cfg.tmpl package data. The
route signature the config checks in-dialog requests against is computed here too.

Trunk sources are matched with ipops `is_in_subnet` rather than the permissions module,
because permissions reads its address table from a database and the edge runs without one.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

__all__ = [
    "EdgeTrunk", "EdgeSettings", "EDGE_KEY_HEADER", "render_config", "render_dispatcher", "outbound_hosts",
    "route_signature", "uri_host", "worker_uri", "DISPATCHER_SET",
]


DISPATCHER_SET = 1
DS_INACTIVE, DS_PROBING = 1, 8  # the dispatcher list's flags (Kamailio's DS_INACTIVE_DST, DS_PROBING_DST)
WILDCARD_HOSTS = ("0.0.0.0", "::")
TRUNK_HEADER = "X-Switchboard-Trunk"
SOURCE_HEADER = "X-Switchboard-Source"
# Proves to a worker that an INVITE came through the edge. The source address alone does not:
# Kamailio binds with SO_REUSEADDR, so another local user can bind the edge's port and send
# from it (measured). The key is in the 0600 config and the workers' environments only.
EDGE_KEY_HEADER = "X-Switchboard-Edge"
# The longest unix socket path Linux accepts (sun_path is 108 bytes, NUL included).
MAX_SOCKET_PATH = 107
# pjsip drops datagrams over PJSIP_MAX_PKT_LEN (4000 by default) without a word; the edge
# adds up to ~400 bytes of Via, Record-Route and X-Switchboard headers. A bigger request
# would time out on every worker in turn and get them all marked down, so it gets 513.
MAX_REQUEST_BYTES = 3600
_TRUNK_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
# The digest realm of the 407 challenges the edge sends trunks with credentials.
REALM = "switchboard"
# The Record-Route parameter carrying route_signature(); 32 hex digits (128 bits) of SHA-256.
SIGNATURE_PARAM = "sb"
SIGNATURE_HEX = 32
_SECRET = re.compile(r"^[0-9a-f]{32,}$")
_HOST_PORT = re.compile(r"^([A-Za-z0-9.-]+)(?::(\d{1,5}))?$")
_SIP_URI_HOST = re.compile(r"^(sips?):(?:[^@;>\s]+@)?([A-Za-z0-9.-]+(?::\d{1,5})?)$")
# No SIP header carries control characters; a quote or backslash in a digest username must
# be escaped in the quoted-string of Authorization, which carriers get wrong.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class EdgeTrunk:
    name: str
    sources: list[str]  # CIDRs allowed to send INVITEs for this trunk; none: any source that authenticates
    username: str | None = None  # digest credentials the trunk's INVITEs must carry (407 challenge)
    password: str | None = field(default=None, repr=False)

    @property
    def has_credentials(self) -> bool:
        return self.username is not None


@dataclass(frozen=True)
class EdgeSettings:
    listen_host: str
    port: int
    workers: list[int]  # SIP UDP ports of the workers on 127.0.0.1
    calls_per_worker: int  # dispatcher maxload
    trunks: list[EdgeTrunk]
    flood_requests: int = 32  # per source IP per 2 s before pike drops; trunk sources skip pike
    retry_after_s: int = 5
    run_dir: Path = Path("/tmp")
    memory_mb: int = 64
    advertise: str | None = None  # Record-Route/Via address, used only when listen_host is a wildcard
    # Where workers' calls may go: host or host:port (5060 if none) of transfers.outbound_proxy
    # and of transfers.allowed SIP URIs. A worker's INVITE anywhere else gets 403.
    outbound_hosts: list[str] = field(default_factory=list)
    # Signs the edge's Record-Route (route_signature) and keys the auth module's nonces. A new
    # one per start is enough: a restart of the appliance ends every call the old one routed.
    secret: str = field(default_factory=lambda: secrets.token_hex(32), repr=False)

    @property
    def worker_key(self) -> str:
        """The value of EDGE_KEY_HEADER on every INVITE the edge relays to a worker."""
        return hashlib.sha256(f"worker:{self.secret}".encode()).hexdigest()

    @property
    def config_path(self) -> Path:
        return Path(self.run_dir) / "kamailio.cfg"

    @property
    def dispatcher_path(self) -> Path:
        return Path(self.run_dir) / "dispatcher.list"

    @property
    def pid_path(self) -> Path:
        return Path(self.run_dir) / "kamailio.pid"

    @property
    def ctl_socket(self) -> Path:
        return Path(self.run_dir) / "kamailio_ctl"

    @property
    def log_path(self) -> Path:
        return Path(self.run_dir) / "kamailio.log"



def route_signature(secret: str, call_id: str, from_tag: str) -> str:
    """The `sb` parameter of the edge's Record-Route for a dialog: SHA-256(k:SHA-256(k:ftag:callid)), 32 hex digits.

    The from-tag is the one of the dialog's first INVITE (the route's `ftag`), so requests in
    both directions check against the same value. HMAC's nested shape rather than HMAC itself:
    the config language has `{s.sha256}` over text but no HMAC (that needs the crypto module,
    which Debian's kamailio 5.6 packages do not ship); the outer hash over a fixed-length inner
    digest leaves no room for SHA-256 length extension. The from-tag goes first because a tag
    has no colon while a Call-ID may, so the input splits one way only.
    """
    inner = hashlib.sha256(f"{secret}:{from_tag}:{call_id}".encode()).hexdigest()
    return hashlib.sha256(f"{secret}:{inner}".encode()).hexdigest()[:SIGNATURE_HEX]


def outbound_hosts(uris: Iterable[str | None]) -> list[str]:
    """host:port of each SIP URI in `uris` (`sip:HOST`, `sip:USER@HOST[:PORT]`); numbers and None are skipped."""
    hosts: list[str] = []
    for uri in uris:
        match = _SIP_URI_HOST.match(uri or "")
        if match:
            host = _host_port(match.group(2), 5061 if match.group(1) == "sips" else 5060)
            if host not in hosts:
                hosts.append(host)
    return hosts


def _host_port(entry: str, default_port: int = 5060) -> str:
    match = _HOST_PORT.match(entry)
    if match is None or not 0 < int(match.group(2) or default_port) < 65536:
        raise ValueError(f"outbound host {entry!r} is not host or host:port")
    return f"{match.group(1).lower()}:{match.group(2) or default_port}"


def _check_credentials(trunk: EdgeTrunk) -> None:
    if trunk.username is None and trunk.password is None:
        return
    if trunk.username is None:
        raise ValueError(f"trunk {trunk.name!r} has a password but no username")
    if not trunk.password:
        raise ValueError(
            f"trunk {trunk.name!r} has a username but no password "
            "(its password_env variable is unset or empty, or neither password_env nor password_file is set)"
        )
    if not trunk.username or _CONTROL.search(trunk.username) or any(ch in trunk.username for ch in '"\\'):
        raise ValueError(f"trunk {trunk.name!r}: the digest username must be non-empty, without quotes, "
                         "backslashes or control characters")
    if _CONTROL.search(trunk.password):
        raise ValueError(f"trunk {trunk.name!r}: the digest password must not contain control characters or newlines")


def _check(settings: EdgeSettings) -> None:
    """Refuse settings that would render a config Kamailio rejects, or one that silently misroutes."""
    if not 0 < settings.port < 65536:
        raise ValueError(f"edge port {settings.port} is not a UDP port")
    if not settings.workers:
        raise ValueError("the edge needs at least one worker port")
    if len(set(settings.workers)) != len(settings.workers):
        raise ValueError(f"worker ports repeat: {settings.workers}")
    for port in settings.workers:
        if not 0 < port < 65536 or port == settings.port:
            raise ValueError(f"worker port {port} is not a UDP port other than the edge's")
    # maxload=0 means "unlimited" to the dispatcher, which would hide a config mistake.
    if settings.calls_per_worker < 1:
        raise ValueError("calls_per_worker must be at least 1")
    if settings.flood_requests < 1 or settings.retry_after_s < 0 or settings.memory_mb < 8:
        raise ValueError("flood_requests >= 1, retry_after_s >= 0 and memory_mb >= 8 are required")
    ipaddress.ip_address(settings.listen_host)
    if settings.advertise is not None and not re.fullmatch(r"[A-Za-z0-9.:\[\]-]+", settings.advertise):
        raise ValueError(f"advertise address {settings.advertise!r} is not a host name or address")
    run_dir = str(settings.run_dir)
    if any(ch in run_dir for ch in '"\n\r'):
        raise ValueError(f"run_dir {run_dir!r} cannot be quoted in a Kamailio config")
    if len(str(settings.ctl_socket)) > MAX_SOCKET_PATH:
        raise ValueError(f"run_dir {run_dir!r} is too long for the control socket path")
    names = [trunk.name for trunk in settings.trunks]
    if len(set(names)) != len(names):
        raise ValueError(f"trunk names repeat: {names}")
    for trunk in settings.trunks:
        if not _TRUNK_NAME.match(trunk.name):
            raise ValueError(f"trunk name {trunk.name!r} must match {_TRUNK_NAME.pattern} (it goes in a SIP header)")
        _check_credentials(trunk)
    # Trunks without sources are told apart by the username alone.
    open_users = [t.username for t in settings.trunks if t.has_credentials and not t.sources]
    if len(set(open_users)) != len(open_users):
        raise ValueError(f"trunks without sources share a digest username: {open_users}")
    for host in settings.outbound_hosts:
        _host_port(host)
    if not _SECRET.match(settings.secret):
        raise ValueError("the edge secret must be at least 32 lowercase hex digits")


def _networks(trunk: EdgeTrunk) -> str:
    # Normalised through ipaddress so that nothing but a CIDR list reaches the config text.
    return ",".join(str(ipaddress.ip_network(source.strip(), strict=False)) for source in trunk.sources)


def _listen_lines(settings: EdgeSettings) -> str:
    port = settings.port
    if settings.listen_host not in WILDCARD_HOSTS:
        return f"listen=udp:{uri_host(settings.listen_host)}:{port}"
    if settings.advertise:
        adv = uri_host(settings.advertise)
        return f"listen=udp:{uri_host(settings.listen_host)}:{port} advertise {adv}:{port}\nalias=udp:{adv}:{port}"
    # A wildcard socket would put 0.0.0.0 in Via and Record-Route; with no listen line
    # Kamailio opens one socket per local address instead, each naming itself correctly.
    return f"port={port}"


def uri_host(host: str) -> str:
    """`host` as it goes in a SIP URI or a Kamailio listen line: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _decoded(var: str, text: str, indent: str) -> list[str]:
    """Script lines setting $var(var) to `text`, written as hex so no character can end the
    string literal or start a directive (the config also checks cleanly whatever it holds)."""
    return [f'{indent}$var({var}) = "{text.encode().hex()}";',
            f"{indent}$var({var}) = $(var({var}){{s.decode.hexa}});"]


def _credentials(trunk: EdgeTrunk, indent: str) -> list[str]:
    assert trunk.username is not None and trunk.password is not None  # _check
    return _decoded("auth_user", trunk.username, indent) + _decoded("auth_pass", trunk.password, indent)


def _trunk_route(settings: EdgeSettings) -> str:
    lines = []
    for trunk in settings.trunks:
        networks = _networks(trunk)
        if not networks:
            if trunk.has_credentials:
                lines.append(f"    # trunk {trunk.name}: no sources, "
                             "named by its credentials (route TRUNK_BY_CREDENTIALS)")
            else:
                lines.append(f"    # trunk {trunk.name}: no sources and no credentials, so no request can claim it")
            continue
        lines.append(f'    if (is_in_subnet("$si", "{networks}")) {{')
        lines.append(f'        $var(trunk) = "{trunk.name}";')
        if trunk.has_credentials:
            lines += _credentials(trunk, "        ")
        lines.append("        return;")
        lines.append("    }")
    if not lines:
        lines.append("    # no trunks: every initial INVITE is refused")
    # Kamailio rejects an empty route block.
    lines.append("    return;")
    return "\n".join(lines)


def _credentials_route(settings: EdgeSettings) -> str:
    trunks = [t for t in settings.trunks if t.has_credentials and not t.sources]
    if not trunks:
        return ("    # no trunk without sources has credentials: a source in no trunk is refused\n"
                "    $var(by_credentials) = 0;\n    return;")
    lines = ["    $var(by_credentials) = 1;"]
    for trunk in trunks:
        assert trunk.username is not None
        lines += _decoded("user", trunk.username, "    ")
        lines.append("    if ($aU == $var(user)) {")
        lines.append(f'        $var(trunk) = "{trunk.name}";')
        lines += _credentials(trunk, "        ")
        lines.append("        return;")
        lines.append("    }")
    lines.append("    return;")
    return "\n".join(lines)


def _outbound_route(settings: EdgeSettings) -> str:
    hosts = [_host_port(host) for host in settings.outbound_hosts]
    if not hosts:
        return "    # no outbound hosts configured: workers place no calls"
    return "\n".join(f'    if ($var(hostport) == "{host}") {{\n        $var(allowed) = 1;\n    }}' for host in hosts)


def render_dispatcher(settings: EdgeSettings, ready: Iterable[int] | None = None) -> str:
    """The dispatcher list: every worker in one set, each with its call limit and load id.

    `ready`: the worker ports to start active; the others start inactive (and probed), so no
    call waits out a timeout at a worker whose socket is not open yet. None: all active.
    """
    _check(settings)
    up = set(settings.workers if ready is None else ready)
    lines = ["# setid destination flags priority attrs  (generated by sip/edge.py)"]
    count = len(settings.workers)
    for index, port in enumerate(settings.workers):
        attrs = f"duid=w{port};maxload={settings.calls_per_worker}"
        flags = 0 if port in up else DS_INACTIVE | DS_PROBING
        # Descending priority keeps the listed order (Kamailio would otherwise reverse
        # it), so among equally loaded workers the first listed takes the call.
        lines.append(f"{DISPATCHER_SET} {worker_uri(port)} {flags} {count - index} {attrs}")
    return "\n".join(lines) + "\n"


def worker_uri(port: int) -> str:
    """A worker as the dispatcher list (and its RPCs) name it."""
    return f"sip:127.0.0.1:{port}"


def _template() -> str:
    """The Kamailio script, sip/kamailio.cfg.tmpl, shipped as package data beside this module.

    Its {{NAME}} placeholders are filled by render_config; everything else is Kamailio syntax,
    where `$` and braces are its own.
    """
    return resources.files("sip").joinpath("kamailio.cfg.tmpl").read_text(encoding="ascii")


def render_config(settings: EdgeSettings, draining: bool = False) -> str:
    """The kamailio.cfg text for these settings; `draining`: new INVITEs get 503 from the start."""
    _check(settings)
    values = {
        "DRAINING": "1" if draining else "0",
        "LISTEN": _listen_lines(settings),
        "CTL_SOCKET": str(settings.ctl_socket),
        "DISPATCHER_LIST": str(settings.dispatcher_path),
        "SET": str(DISPATCHER_SET),
        "FLOOD": str(settings.flood_requests),
        "RETRY_AFTER": str(settings.retry_after_s),
        "MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES),
        "TRUNK_HEADER": TRUNK_HEADER,
        "SOURCE_HEADER": SOURCE_HEADER,
        "EDGE_KEY_HEADER": EDGE_KEY_HEADER,
        "EDGE_KEY": settings.worker_key,
        "TRUNK_ROUTE": _trunk_route(settings),
        "CREDENTIALS_ROUTE": _credentials_route(settings),
        "OUTBOUND_HOSTS": _outbound_route(settings),
        "REALM": REALM,
        "SIGNATURE_PARAM": SIGNATURE_PARAM,
        "SIGNATURE_HEX": str(SIGNATURE_HEX),
        "ROUTE_SECRET": settings.secret,
        # Its own key for the nonces: the route key never signs anything an outsider chooses.
        "AUTH_SECRET": hashlib.sha256(f"auth:{settings.secret}".encode()).hexdigest(),
    }
    text = _template()
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    leftover = re.search(r"\{\{[A-Z_]+\}\}", text)
    assert leftover is None, f"config template placeholder {leftover.group(0)} has no value"
    return text
