"""The SIP edge: one Kamailio process, configured by us, that owns the box's SIP port.

It admits INVITEs from trunk sources only, names the trunk for the worker in a header, and
spreads calls over the pjsua2 worker pool by call load; RTP never passes through it. This
module renders the Kamailio config and dispatcher list, and starts and stops the process.

Trunk sources are matched with ipops `is_in_subnet` rather than the permissions module,
because permissions reads its address table from a database and the edge runs without one.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import re
import signal
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.core.processes import die_with_parent

__all__ = ["EdgeTrunk", "EdgeSettings", "EdgeStartError", "Edge", "render_config", "render_dispatcher"]

DISPATCHER_SET = 1
WILDCARD_HOSTS = ("0.0.0.0", "::")
TRUNK_HEADER = "X-Switchboard-Trunk"
SOURCE_HEADER = "X-Switchboard-Source"
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


@dataclass(frozen=True)
class EdgeTrunk:
    name: str
    sources: list[str]  # CIDRs allowed to send INVITEs for this trunk
    username: str | None = None  # digest credentials: not implemented by the edge yet
    password: str | None = None


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
        if trunk.username is not None or trunk.password is not None:
            raise NotImplementedError(
                f"trunk {trunk.name!r} has digest credentials, which the SIP edge does not check yet; "
                "admit it by source CIDR and leave username/password unset"
            )


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


def _trunk_route(settings: EdgeSettings) -> str:
    lines = []
    for trunk in settings.trunks:
        networks = _networks(trunk)
        if not networks:
            lines.append(f"    # trunk {trunk.name}: no sources, so no request can claim it")
            continue
        lines.append(f'    if (is_in_subnet("$si", "{networks}")) {{')
        lines.append(f'        $var(trunk) = "{trunk.name}";')
        lines.append("        return;")
        lines.append("    }")
    if not lines:
        lines.append("    # no trunks: every initial INVITE is refused")
    # Kamailio rejects an empty route block.
    lines.append("    return;")
    return "\n".join(lines)


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
        "TRUNK_ROUTE": _trunk_route(settings),
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
        settings.config_path.write_text(config)
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

modparam("ctl", "binrpc", "unix:{{CTL_SOCKET}}")

# 2 s for any reply: workers are on loopback and answer 100 Trying at once, and the
# dispatcher's OPTIONS pings use this timer too, so a dead worker shows within ~4 s.
modparam("tm", "fr_timer", 2000)
modparam("tm", "fr_inv_timer", 60000)

modparam("rr", "append_fromtag", 1)

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

    if (!is_method("INVITE")) {
        append_to_reply("Allow: INVITE, ACK, BYE, CANCEL, OPTIONS\r\n");
        sl_send_reply("405", "Method Not Allowed");
        exit;
    }

    route(INVITE);
}

# Sets $var(trunk) to the trunk the source address belongs to, "" if none, and
# $var(trusted) to 1 for trunk and worker sources.
route[CLASSIFY] {
    $var(trunk) = "";
    $var(trusted) = 0;
    $var(worker) = 0;
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

route[INVITE] {
    if ($var(worker) == 1) {
        route(OUTBOUND);
        exit;
    }
    if ($var(trunk) == "") {
        xlog("L_INFO", "edge: INVITE from $si:$sp matches no trunk, refused\n");
        sl_send_reply("403", "Forbidden");
        exit;
    }

    # The trunk name is ours to say: drop anything the caller claims.
    remove_hf("{{TRUNK_HEADER}}");
    remove_hf("{{SOURCE_HEADER}}");
    append_hf("{{TRUNK_HEADER}}: $var(trunk)\r\n");
    append_hf("{{SOURCE_HEADER}}: $si\r\n");
    record_route();

    # A transaction before selecting a worker, so tm absorbs INVITE retransmissions
    # instead of each one adding call load.
    if (!t_newtran()) {
        sl_reply_error();
        exit;
    }

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

# A call a worker places (a bridge transfer; the hub checked the destination against
# transfers.allowed): out to its Request-URI, staying in the path so the far end's BYE
# comes back through here. The hub, not tm, decides how long it may ring.
route[OUTBOUND] {
    remove_hf("Route");
    record_route();
    t_set_fr(180000, 8000);
    route(RELAY);
}

route[WITHINDLG] {
    # In-dialog requests only from trunks and workers: a Route header from anyone
    # else must not turn the edge into an open relay.
    if ($var(trusted) == 0) {
        sl_send_reply("403", "Forbidden");
        exit;
    }
    if (loose_route()) {
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
