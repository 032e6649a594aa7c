"""The SIP edge: one Kamailio process, configured by us, that owns the box's SIP port.

It admits INVITEs from trunks (by source network, digest credentials, or both), names the
trunk for the worker in a header, and spreads calls over the pjsua2 worker pool by call
load; RTP never passes through it. It relays nothing else: in-dialog requests only along a
route it record-routed and signed, and workers' calls only to hosts the admin configured.
This module renders the Kamailio config and dispatcher list, and starts and stops the process.

Trunk sources are matched with ipops `is_in_subnet` rather than the permissions module,
because permissions reads its address table from a database and the edge runs without one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import os
import re
import secrets
import signal
import socket
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.core.processes import die_with_parent

__all__ = [
    "EdgeTrunk", "EdgeSettings", "EdgeStartError", "Edge", "render_config", "render_dispatcher",
    "outbound_hosts", "route_signature",
]

DISPATCHER_SET = 1
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
STOP_GRACE_S = 5.0
START_TIMEOUT_S = 10.0
PROBE_INTERVAL_S = 0.2
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


class EdgeStartError(RuntimeError):
    """Kamailio did not come up; the message carries its log tail and its own config check."""


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
        return f"listen=udp:{_host(settings.listen_host)}:{port}"
    if settings.advertise:
        adv = _host(settings.advertise)
        return f"listen=udp:{_host(settings.listen_host)}:{port} advertise {adv}:{port}\nalias=udp:{adv}:{port}"
    # A wildcard socket would put 0.0.0.0 in Via and Record-Route; with no listen line
    # Kamailio opens one socket per local address instead, each naming itself correctly.
    return f"port={port}"


def _host(host: str) -> str:
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
                lines.append(f"    # trunk {trunk.name}: no sources, named by its credentials (route TRUNK_BY_CREDENTIALS)")
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
        return "    # no trunk without sources has credentials: a source in no trunk is refused\n    $var(by_credentials) = 0;\n    return;"
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


def render_dispatcher(settings: EdgeSettings) -> str:
    """The dispatcher list: every worker in one set, each with its call limit and load id."""
    _check(settings)
    lines = ["# setid destination flags priority attrs  (generated by sip/edge.py)"]
    count = len(settings.workers)
    for index, port in enumerate(settings.workers):
        attrs = f"duid=w{port};maxload={settings.calls_per_worker}"
        # Descending priority keeps the listed order (Kamailio would otherwise reverse
        # it), so among equally loaded workers the first listed takes the call.
        lines.append(f"{DISPATCHER_SET} sip:127.0.0.1:{port} 0 {count - index} {attrs}")
    return "\n".join(lines) + "\n"


def render_config(settings: EdgeSettings) -> str:
    """The kamailio.cfg text for these settings."""
    _check(settings)
    values = {
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
    text = _CONFIG
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    leftover = re.search(r"\{\{[A-Z_]+\}\}", text)
    assert leftover is None, f"config template placeholder {leftover.group(0)} has no value"
    return text


class Edge:
    """The running Kamailio process. One `start()` per `stop()`."""

    def __init__(self, settings: EdgeSettings, kamailio: str = "kamailio"):
        self.settings = settings
        self.kamailio = kamailio
        self._process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def start(self) -> None:
        if self.running:
            raise RuntimeError(f"the SIP edge is already running (pid {self.pid})")
        settings = self.settings
        config, dispatcher = render_config(settings), render_dispatcher(settings)
        run_dir = Path(settings.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        settings.dispatcher_path.write_text(dispatcher)
        _write_private(settings.config_path, config)
        # A socket left by a killed Kamailio would make ctl fail to bind.
        settings.ctl_socket.unlink(missing_ok=True)
        with open(settings.log_path, "wb") as log:
            # Its own session: Kamailio signals its process group on shutdown, and a
            # SIGKILL fallback must reach the children it forked.
            self._process = await asyncio.create_subprocess_exec(
                self.kamailio, "-DD", "-E",
                "-f", str(settings.config_path),
                "-Y", str(run_dir),
                "-P", str(settings.pid_path),
                "-m", str(settings.memory_mb),
                "-M", "8",
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True, preexec_fn=die_with_parent,
            )
        try:
            await self._wait_until_answering()
        except BaseException as error:
            reason = str(error) or type(error).__name__
            await self.stop()
            if isinstance(error, (asyncio.CancelledError, KeyboardInterrupt)):
                raise
            raise EdgeStartError(await self._diagnosis(reason)) from None

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), STOP_GRACE_S)
            except TimeoutError:
                pass
        # The group is the one start() created (its id is the pid we started). Anything
        # still in it is a stuck or orphaned child that would keep the SIP port bound.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()

    def local_host(self) -> str:
        """Where processes on this box reach the edge."""
        host = "127.0.0.1" if self.settings.listen_host == "0.0.0.0" else self.settings.listen_host
        return "::1" if host == "::" else host

    def local_address(self) -> str:
        """host:port of the edge for a SIP URI on this box."""
        host = self.local_host()
        return f"[{host}]:{self.settings.port}" if ":" in host else f"{host}:{self.settings.port}"

    async def _wait_until_answering(self) -> None:
        assert self._process is not None
        host = self.local_host()
        loop = asyncio.get_running_loop()
        answered: asyncio.Future[None] = loop.create_future()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Probe(answered), family=family, local_addr=(host, 0)
        )
        exited = loop.create_task(self._process.wait())
        either: list[asyncio.Future[Any]] = [answered, exited]
        try:
            local_port = transport.get_extra_info("sockname")[1]
            deadline = loop.time() + START_TIMEOUT_S
            while not answered.done():
                if exited.done():
                    raise RuntimeError(f"kamailio exited with code {exited.result()}")
                if loop.time() > deadline:
                    raise TimeoutError(f"no OPTIONS answer on {host}:{self.settings.port} in {START_TIMEOUT_S:.0f} s")
                transport.sendto(_options(host, self.settings.port, local_port), (host, self.settings.port))
                await asyncio.wait(either, timeout=PROBE_INTERVAL_S)
        finally:
            transport.close()
            if not exited.done():
                exited.cancel()

    async def _diagnosis(self, reason: str) -> str:
        settings = self.settings
        try:
            tail = settings.log_path.read_text(errors="replace").splitlines()[-40:]
        except OSError as error:
            tail = [f"(no log: {error})"]
        try:
            check = await asyncio.create_subprocess_exec(
                self.kamailio, "-c", "-f", str(settings.config_path),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )
            out, _ = await asyncio.wait_for(check.communicate(), 20)
            checked = out.decode(errors="replace").strip().splitlines()[-20:]
        except (TimeoutError, OSError) as error:
            checked = [f"(could not run {self.kamailio} -c: {error})"]
        return "\n".join(
            [f"the SIP edge did not start: {reason}", f"--- tail of {settings.log_path}", *tail,
             f"--- {self.kamailio} -c -f {settings.config_path}", *checked]
        )


def _write_private(path: Path, text: str) -> None:
    """Write `text` readable by this user alone: the config holds the route secret and trunk passwords."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        # A file left from before may have been created with wider permissions.
        os.fchmod(file.fileno(), 0o600)
        file.write(text)


class _Probe(asyncio.DatagramProtocol):
    def __init__(self, answered: asyncio.Future[None]):
        self.answered = answered

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if data.startswith(b"SIP/2.0 200") and not self.answered.done():
            self.answered.set_result(None)


def _options(host: str, port: int, local_port: int) -> bytes:
    tag = uuid.uuid4().hex
    h = _host(host)
    return (
        f"OPTIONS sip:{h}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {h}:{local_port};branch=z9hG4bK{tag[:16]};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:edge-probe@{h}>;tag={tag[16:24]}\r\n"
        f"To: <sip:{h}:{port}>\r\n"
        f"Call-ID: {tag}@edge-probe\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


# The Kamailio script. {{NAME}} placeholders are filled by render_config; everything
# else is Kamailio syntax, where `$` and braces are its own.
_CONFIG = r"""#!KAMAILIO
# Generated by switchboard sip/edge.py on every start; edits here are lost.

####### Global parameters #########
# Notices and worse: a refused INVITE is INFO, since internet scanners send many.
debug=1
log_stderror=yes
fork=yes
children=4
auto_aliases=no
dns=no
rev_dns=no
dns_try_ipv6=no
disable_tcp=yes
enable_sctp=0
server_signature=no
sip_warning=0
user_agent_header="User-Agent: Switchboard edge"
server_header="Server: Switchboard edge"
{{LISTEN}}

####### Modules #########
loadmodule "ctl.so"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "sanity.so"
loadmodule "ipops.so"
loadmodule "pike.so"
loadmodule "dispatcher.so"
loadmodule "auth.so"

modparam("ctl", "binrpc", "unix:{{CTL_SOCKET}}")

# 2 s for any reply: workers are on loopback and answer 100 Trying at once, and the
# dispatcher's OPTIONS pings use this timer too, so a dead worker shows within ~4 s.
modparam("tm", "fr_timer", 2000)
modparam("tm", "fr_inv_timer", 60000)

# The ftag parameter: route_signature() in sip/edge.py signs it with the Call-ID.
modparam("rr", "append_fromtag", 1)

# Digest for trunks with credentials: qop=auth with nonce counting (each nc used once, so a
# captured INVITE cannot be replayed), nonces valid 30 s, and for clients without qop a nonce
# bound to the Request-URI and source address (auth_checks_no_dlg 1 + 8).
modparam("auth", "secret", "{{AUTH_SECRET}}")
modparam("auth", "qop", "auth")
modparam("auth", "nonce_count", 1)
modparam("auth", "nonce_expire", 30)
modparam("auth", "auth_checks_no_dlg", 9)

modparam("pike", "sampling_time_unit", 2)
modparam("pike", "reqs_density_per_unit", {{FLOOD}})

modparam("dispatcher", "list_file", "{{DISPATCHER_LIST}}")
modparam("dispatcher", "flags", 2)
modparam("dispatcher", "xavp_dst", "_dsdst_")
modparam("dispatcher", "ds_hash_size", 9)
# A call whose BYE never came (a worker died mid-call) stops counting after an hour.
modparam("dispatcher", "ds_hash_expire", 3600)
modparam("dispatcher", "ds_hash_initexpire", 120)
modparam("dispatcher", "ds_ping_interval", 2)
modparam("dispatcher", "ds_probing_mode", 1)
modparam("dispatcher", "ds_probing_threshold", 1)
modparam("dispatcher", "ds_inactive_threshold", 1)
modparam("dispatcher", "ds_ping_from", "sip:edge@switchboard.invalid")

####### Routing #########
request_route {
    route(CLASSIFY);

    # Flood protection for anyone we do not know; trunks and workers are never throttled.
    if ($var(trusted) == 0 && !pike_check_req()) {
        # A reply would only feed the flood.
        exit;
    }

    if (!mf_process_maxfwd_header("10")) {
        sl_send_reply("483", "Too Many Hops");
        exit;
    }

    if ($ml > {{MAX_REQUEST_BYTES}}) {
        # A worker's SIP stack would drop it unanswered; see MAX_REQUEST_BYTES in sip/edge.py.
        sl_send_reply("513", "Message Too Large");
        exit;
    }

    # sanity replies 400 by itself and stops the script on failure.
    if (!sanity_check()) {
        exit;
    }

    if (is_method("CANCEL")) {
        if (t_check_trans()) {
            route(RELAY);
        }
        exit;
    }

    if (has_totag()) {
        route(WITHINDLG);
        exit;
    }

    # Health checks and trunk keepalives: nothing behind the edge wants out-of-dialog OPTIONS.
    if (is_method("OPTIONS")) {
        sl_send_reply("200", "OK");
        exit;
    }

    if (is_method("ACK")) {
        # An ACK without To-tag matches nothing we sent.
        exit;
    }

    # Nothing else goes anywhere out of dialog, from workers either: a MESSAGE or SUBSCRIBE
    # relayed on a Route would make the edge an open relay.
    if (!is_method("INVITE")) {
        append_to_reply("Allow: INVITE, ACK, BYE, CANCEL, OPTIONS\r\n");
        sl_send_reply("405", "Method Not Allowed");
        exit;
    }

    route(INVITE);
}

# Sets $var(trunk) to the trunk the source address belongs to, "" if none, and
# $var(trusted) to 1 for trunk and worker sources. A trunk with credentials also sets
# $var(auth_user) and $var(auth_pass), which its INVITEs must prove.
route[CLASSIFY] {
    # $var lives on in the process from one message to the next: reset every one.
    $var(trunk) = "";
    $var(trusted) = 0;
    $var(worker) = 0;
    $var(auth_user) = "";
    $var(auth_pass) = "";
    $var(by_credentials) = 0;
    if (ds_is_from_list("{{SET}}")) {
        # Workers first: they may share a trunk's network; their INVITEs are calls the hub places.
        $var(worker) = 1;
        $var(trusted) = 1;
        return;
    }
    route(TRUNK);
    if ($var(trunk) != "") {
        $var(trusted) = 1;
    }
}

route[TRUNK] {
{{TRUNK_ROUTE}}
}

# Trunks with credentials and no sources: the username in Proxy-Authorization names the
# trunk (route AUTH then checks the password). Sets $var(by_credentials) to 1 when such
# trunks exist, so a source in no trunk is challenged instead of refused.
route[TRUNK_BY_CREDENTIALS] {
{{CREDENTIALS_ROUTE}}
}

route[INVITE] {
    if ($var(worker) == 1) {
        route(OUTBOUND);
        exit;
    }
    if ($var(trunk) == "") {
        route(TRUNK_BY_CREDENTIALS);
    }
    if ($var(trunk) == "" && $var(by_credentials) == 0) {
        xlog("L_INFO", "edge: INVITE from $si:$sp matches no trunk, refused\n");
        sl_send_reply("403", "Forbidden");
        exit;
    }

    # A transaction before anything is counted, so tm absorbs INVITE retransmissions
    # instead of each one spending a nonce count or adding call load.
    if (!t_newtran()) {
        sl_reply_error();
        exit;
    }

    if ($var(trunk) == "" || $var(auth_pass) != "") {
        route(AUTH);
    }

    # The trunk name is ours to say: drop anything the caller claims.
    remove_hf("{{TRUNK_HEADER}}");
    remove_hf("{{SOURCE_HEADER}}");
    remove_hf("{{EDGE_KEY_HEADER}}");
    append_hf("{{TRUNK_HEADER}}: $var(trunk)\r\n");
    append_hf("{{SOURCE_HEADER}}: $si\r\n");
    append_hf("{{EDGE_KEY_HEADER}}: {{EDGE_KEY}}\r\n");
    $var(ftag) = $ft;
    route(SIGN);
    record_route(";{{SIGNATURE_PARAM}}=$var(sig)");

    # Algorithm 10: the worker with the fewest calls below its maxload; the others
    # with room are kept in the _dsdst_ xavps for failover.
    if (!ds_select_dst("{{SET}}", "10")) {
        xlog("L_WARN", "edge: no worker has room for call $ci, 503\n");
        append_to_reply("Retry-After: {{RETRY_AFTER}}\r\n");
        send_reply("503", "Service Unavailable");
        exit;
    }

    t_on_reply("WORKER_REPLY");
    t_on_failure("WORKER_FAILURE");
    if (!t_relay()) {
        ds_load_unset();
        sl_reply_error();
    }
    exit;
}

# The caller proves its trunk's password: a 407 challenge, then the same INVITE with
# Proxy-Authorization, whose credentials stop here rather than reach the worker.
route[AUTH] {
    if (!is_present_hf("Proxy-Authorization")) {
        # 1: qop=auth in the challenge.
        proxy_challenge("{{REALM}}", "1");
        exit;
    }
    if ($var(auth_user) == "" || $aU != $var(auth_user)) {
        route(WRONG_CREDENTIALS);
    }
    pv_proxy_authenticate("{{REALM}}", "$var(auth_pass)", "0");
    $var(rc) = $rc;
    if ($var(rc) == -4 || $var(rc) == -6) {
        # An expired or already counted nonce: a fresh one (17: qop=auth, stale=true) lets the
        # caller answer again without anyone typing a password.
        proxy_challenge("{{REALM}}", "17");
        exit;
    }
    if ($var(rc) == -5) {
        # Credentials for another realm.
        proxy_challenge("{{REALM}}", "1");
        exit;
    }
    if ($var(rc) < 0) {
        route(WRONG_CREDENTIALS);
    }
    consume_credentials();
}

route[WRONG_CREDENTIALS] {
    # Refused, not challenged again: a wrong password asked again only invites guessing.
    xlog("L_NOTICE", "edge: wrong credentials in INVITE from $si:$sp, refused\n");
    t_reply("403", "Forbidden");
    exit;
}

# $var(sig) = route_signature(secret, Call-ID, $var(ftag)) of sip/edge.py.
route[SIGN] {
    $var(inner) = "{{ROUTE_SECRET}}:" + $var(ftag) + ":" + $ci;
    $var(inner) = $(var(inner){s.sha256});
    $var(sig) = "{{ROUTE_SECRET}}:" + $var(inner);
    $var(sig) = $(var(sig){s.sha256}{s.substr,0,{{SIGNATURE_HEX}}});
}

# A call a worker places (a bridge transfer; the hub checked the destination against
# transfers.allowed): out to its Request-URI if that names a configured outbound host,
# staying in the path so the far end's BYE comes back through here. The hub, not tm,
# decides how long it may ring.
route[OUTBOUND] {
    route(OUTBOUND_HOST);
    if ($var(allowed) == 0) {
        xlog("L_NOTICE", "edge: worker INVITE to $rd:$rp, not a configured outbound host, refused\n");
        sl_send_reply("403", "Forbidden");
        exit;
    }
    remove_hf("Route");
    $var(ftag) = $ft;
    route(SIGN);
    record_route(";{{SIGNATURE_PARAM}}=$var(sig)");
    t_set_fr(180000, 8000);
    route(RELAY);
}

# $var(allowed) = 1 if the Request-URI's host:port is an outbound host (EdgeSettings.outbound_hosts).
route[OUTBOUND_HOST] {
    $var(allowed) = 0;
    # maddr would send the request elsewhere than the host it names.
    if ($(ru{uri.param,maddr}) != "") {
        return;
    }
    $var(hostport) = $(rd{s.tolower}) + ":" + $rp;
{{OUTBOUND_HOSTS}}
}

# In-dialog requests from any source, but only along a route the edge record-routed itself:
# route CHECK_ROUTE refuses the rest, so a Route header naming the edge cannot turn it into
# a relay. (The far end of a bridge transfer is in no trunk; its BYE carries our route.)
route[WITHINDLG] {
    if (loose_route()) {
        route(CHECK_ROUTE);
        if (is_method("BYE")) {
            # Either side hanging up ends the call's load on its worker.
            ds_load_update();
        }
        if ($var(worker) == 1) {
            # Towards a trunk across a real network: the loopback 2 s is too short.
            t_set_fr(0, 8000);
        }
        route(RELAY);
        exit;
    }
    if (is_method("ACK")) {
        # The ACK to a negative final reply is hop-by-hop: tm takes it.
        if (t_check_trans()) {
            route(RELAY);
        }
        exit;
    }
    sl_send_reply("404", "Not Here");
    exit;
}

# After loose_route(): the Route it consumed must be ours (check_route_param looks only at
# a local Route) and carry this dialog's signature; from anyone but a worker, the next hop
# must be a worker. A worker's in-dialog requests go wherever the dialog's route set says.
route[CHECK_ROUTE] {
    $var(why) = "no route the edge signed for this dialog";
    if (!check_route_param("{{SIGNATURE_PARAM}}=[0-9a-f]{{{SIGNATURE_HEX}}}")) {
        route(FORGED_ROUTE);
    }
    $var(ftag) = $(route_uri{uri.param,ftag});
    route(SIGN);
    if ($(route_uri{uri.param,{{SIGNATURE_PARAM}}}) != $var(sig)) {
        route(FORGED_ROUTE);
    }
    if ($var(worker) == 1) {
        return;
    }
    $var(next) = $ru;
    if ($du != $null) {
        $var(next) = $du;
    }
    $var(why) = "the next hop is no worker";
    # An address, not a name: ds_is_from_list would resolve a name the sender chose.
    if ($(var(next){uri.param,maddr}) != "" || !is_ip("$(var(next){uri.host})")
            || !ds_is_from_list("{{SET}}", "2", "$var(next)")) {
        route(FORGED_ROUTE);
    }
}

route[FORGED_ROUTE] {
    xlog("L_NOTICE", "edge: in-dialog $rm from $si:$sp refused: $var(why)\n");
    # No reply to an ACK, ever.
    if (!is_method("ACK")) {
        sl_send_reply("403", "Forbidden");
    }
    exit;
}

route[RELAY] {
    if (!t_relay()) {
        sl_reply_error();
    }
    exit;
}

onreply_route[WORKER_REPLY] {
    if (status =~ "^2[0-9][0-9]$") {
        # The worker took the call: its load is now confirmed until the BYE.
        ds_load_update();
    }
}

failure_route[WORKER_FAILURE] {
    if (t_is_canceled()) {
        ds_load_unset();
        exit;
    }

    $var(silent) = 0;
    if (t_branch_timeout() && !t_branch_replied()) {
        $var(silent) = 1;
        # The worker said nothing at all: take it out until it answers pings again.
        ds_mark_dst("ip");
    }

    if ($var(silent) == 1 || t_check_status("^(5[0-9][0-9]|408)$")) {
        # ds_next_dst() moves this call's load to the next worker, but only when there is
        # one: with none it drops the current xavp record, after which ds_load_unset()
        # can no longer find the load and the worker's counter would leak.
        if ($xavp(_dsdst_[1]=>uri) != $null && ds_next_dst()) {
            t_on_reply("WORKER_REPLY");
            t_on_failure("WORKER_FAILURE");
            route(RELAY);
            exit;
        }
        ds_load_unset();
        append_to_reply("Retry-After: {{RETRY_AFTER}}\r\n");
        t_reply("503", "Service Unavailable");
        exit;
    }

    # Any other final answer (busy, not found, declined) is the call's answer.
    ds_load_unset();
}

event_route[dispatcher:dst-down] {
    xlog("L_WARN", "edge: worker $ru is down\n");
}

event_route[dispatcher:dst-up] {
    xlog("L_NOTICE", "edge: worker $ru is up\n");
}
"""
