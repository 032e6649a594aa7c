"""The composition root: builds every service from Config and owns start-up and shutdown order.

Start-up: take the data directory's lock (a second instance refuses before touching anything),
close calls a crash left open, repair their recordings and queue their conversion, load flows
(refuse to start on a broken one), then hub → participant server → HTTP → SIP gateway → the other
worker pools. Shutdown runs the other way, hanging up calls first so every record is closed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any

from appliance.calls.manager import CallManager
from appliance.config import Config
from appliance.console.drain import DrainRoutes, DrainStatus
from appliance.console.egress import EgressRoutes
from appliance.console.http import Health, HttpApi, RoleHealth, Routes
from appliance.console.login import LoginGuard
from appliance.console.operator_api import OperatorRoutes
from appliance.console.recording_api import RecordingRoutes
from appliance.console.rtc_pool import RtcPool
from appliance.console.tls import ensure_certificate, server_context
from appliance.console.wallboard import WallboardSource
from appliance.core.lock import DataDirLock
from appliance.core.reasons import EndReason
from appliance.flow.library import FlowLibrary
from appliance.integrations.webhooks import EventWebhooks
from appliance.observability import metrics
from appliance.observability.logging import log_extra
from appliance.operators.accounts import Accounts
from appliance.operators.acd import ACD, QueueSettings
from appliance.operators.desk import Desk
from appliance.personas.dispatcher import PersonaDispatcher
from appliance.personas.pool import PersonaPool
from appliance.recording.converter import RecordingConverter
from appliance.recording.timeline import CallAudio
from appliance.recording.wavfile import repair
from appliance.rooms.hub import Hub
from appliance.rooms.server import ParticipantServer, WorkerRegistry
from appliance.rooms.tokens import TokenAuthority, worker_identity
from appliance.speech.tts import EspeakTTS
from appliance.storage import Storage
from sip.gateway import Gateway
from twilio_gateway.gateway import WORKER_NAME as TWILIO_WORKER
from twilio_gateway.gateway import TwilioGateway

log = logging.getLogger(__name__)

DATA_DIR_MODE = 0o750  # the group may reach recordings inside it; secrets in it are 0600 themselves
RECORDINGS_DIR_MODE = 0o750  # a group (e.g. an archive job) may read recordings, never others


def _private_dirs(config: Config) -> None:
    """Data and recordings private to the service user, including what an older version left open."""
    for directory, mode in ((config.data_dir, DATA_DIR_MODE), (config.recordings_dir, RECORDINGS_DIR_MODE)):
        directory.mkdir(mode=mode, parents=True, exist_ok=True)
        _tighten(directory, mode)
    for path in config.data_dir.glob("switchboard.db*"):
        _tighten(path, 0o640)
    _tighten(config.data_dir / "api_secret", 0o600)


def _tighten(path: Path, mode: int) -> None:
    """Take away what `mode` does not grant; a path we do not own is the admin's to set (said in the log)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return
    if info.st_mode & 0o777 & ~mode == 0:
        return
    if info.st_uid != os.geteuid():
        log.warning("path is more open than it should be and not ours to change",
                    extra=log_extra(path=str(path), mode=oct(info.st_mode & 0o777), wanted=oct(mode)))
        return
    path.chmod(info.st_mode & 0o777 & mode)


class Appliance:
    def __init__(self, config: Config):
        self.config = config
        # First of all: everything below reads or changes what a running instance on this data dir owns.
        self.lock = DataDirLock.acquire(config.data_dir, DATA_DIR_MODE)
        _private_dirs(config)
        # Raises FlowError on any broken flow: the appliance never runs half-configured.
        self.flows = FlowLibrary(config.flows_dir, config.webhooks.allowed, config.transfers.allowed)
        # Another process holding the database's write lock must not stall the media clock.
        self.storage = Storage(config.database, defer_when_locked=True, on_deferred=metrics.db_writes_deferred.inc)
        metrics.db_writes_pending.set_function(lambda: self.storage.pending_writes)
        self.tokens = TokenAuthority(config.auth.api_key, config.api_secret())
        api_url = config.events.public_api_url or f"http://{config.http.host}:{config.http.port}"
        self.webhooks = EventWebhooks(self.storage, config.events, config.webhooks.allowed, self.tokens.api_key,
                                      self.tokens.api_secret, api_url)
        self.tts = EspeakTTS()
        self.hub = Hub()
        # Kept by the participant server; read by the dispatcher and by bridge transfers' dialling.
        self.workers = WorkerRegistry()
        self.personas = PersonaDispatcher(self.storage, self.workers)
        self.accounts = Accounts(self.storage)
        self.acd = ACD(self._queue_settings())
        self.flows.on_reload.append(self._queues_changed)
        self.desk = Desk(self.storage, self.workers, self.acd, self._queue_info, config.console.operator_lost_s,
                         self._ice_servers)
        self.converter = RecordingConverter(self.storage, config.recording)
        self.calls = CallManager(config, self.hub, self.storage, self.flows, self.tts, self.personas, self.workers,
                                 self.desk, self.converter)
        self.desk.lookup = self.calls.handle  # the desk needs the calls, which need the desk
        self.desk.wallboard = WallboardSource(self.calls, self.desk)
        self.personas.on_summary.append(self.desk.supervision.summary)
        self.server = ParticipantServer(self.hub, self.tokens, self.workers, self.calls, self.personas, self.desk)
        guard = LoginGuard(config.console.login_attempts, config.console.login_window_s)
        console = OperatorRoutes(self.accounts, guard, self.tokens, self.desk, self._queues_of, self._ice_servers)
        drain = DrainRoutes(self.set_draining, self.drain_status)
        recording = RecordingRoutes(self.calls.pause_recording, self._operator_on)
        egress = EgressRoutes(self._egress_source)
        config.twilio.check()  # ConfigError now, not at the first call
        self.twilio = None
        if config.twilio.enabled:
            # The auth token is read here, before the environment holding it is cleared below.
            self.twilio = TwilioGateway(config.twilio, config.twilio.auth_token(), str(config.hub_socket),
                                        lambda: self.tokens.mint(worker_identity("twilio", TWILIO_WORKER), "twilio"),
                                        on_status=self.storage.add_event)
        routes: tuple[Routes, ...] = (console.register, drain.register, recording.register, egress.register)
        routes += (self.twilio.register,) if self.twilio else ()
        self.http = HttpApi(self.storage, self.tokens, config.recordings_dir, self.health, routes=routes)
        self.rtc_pool = RtcPool(config, lambda name: self.tokens.mint(worker_identity("rtc", name), "rtc"))
        self.gateway = Gateway(config, lambda name: self.tokens.mint(worker_identity("sip", name), "sip"))
        self.workers.on_change.append(self.gateway.worker_changed)
        self.persona_pool = PersonaPool(config, lambda name: self.tokens.mint(worker_identity("agent", name), "agent"))
        # TURN credentials go to browsers (and the WebRTC workers, in each offer), not through the environment.
        self._ice_credentials = {s.credential_env: os.environ.get(s.credential_env, "")
                                 for s in config.console.ice_servers if s.credential_env}
        # Read once above; no child (workers, Kamailio) needs them, so none inherits them.
        for name in config.secret_env_names():
            os.environ.pop(name, None)

    def _queue_settings(self) -> dict[str, QueueSettings]:
        return {name: QueueSettings.of(queue) for name, queue in self.flows.queues.items()}

    def _queues_changed(self) -> None:
        members: dict[str, list[str]] = {}
        for name, queue in self.flows.queues.items():
            for uri in queue.sip_members:  # checked against transfers.allowed when the flows loaded
                members.setdefault(uri, []).append(name)
        self.desk.queues_changed(self._queue_settings(), members)

    def _queue_info(self, queue: str) -> tuple[list[str], float]:
        settings = self.flows.queues.get(queue)
        return (list(settings.dispositions), settings.wrap_up) if settings else ([], 0.0)

    def _queues_of(self, operator: str, own: tuple[str, ...]) -> list[str]:
        """The queues an operator serves: their account's, and those whose queues.yaml names them."""
        named = [name for name, queue in self.flows.queues.items() if operator in queue.operators]
        return sorted((set(own) & set(self.flows.queues)) | set(named))

    def _ice_servers(self) -> list[dict[str, Any]]:
        servers = []
        for server in self.config.console.ice_servers:
            entry: dict[str, Any] = {"urls": server.urls}
            if server.username:
                entry["username"] = server.username
            if server.credential_env:
                entry["credential"] = self._ice_credentials.get(server.credential_env, "")
            servers.append(entry)
        return servers

    def health(self) -> Health:
        """/healthz: ok only while every worker the appliance started is connected and the SIP edge runs.

        Load balancers and the deploy role's check read it: a box short of a SIP worker takes fewer
        calls than its peers think, one without its persona or WebRTC workers fails the calls that need
        them. Start-up is honestly not ok until the last worker has joined; a drain is still ok.
        """
        expected = {"sip": len(self.gateway.specs), "agent": len(self.persona_pool.names),
                    "rtc": len(self.rtc_pool.names), "twilio": int(self.twilio is not None)}
        roles = {role: RoleHealth(expected=count, up=len(self.workers.of(role)))
                 for role, count in expected.items() if count}
        short = [role for role, workers in roles.items() if workers.up < workers.expected]
        edge = self.gateway.edge.running
        return Health(ok=not short and edge, short=short, roles=roles, edge_running=edge,
                      workers_up=len(self.workers.sip), workers=expected["sip"],
                      personas_up=len(self.workers.agents), personas=expected["agent"],
                      rtc_up=len(self.workers.rtc), rtc=expected["rtc"],
                      calls_active=len(self.calls.calls), draining=self.gateway.draining)

    def _egress_source(self, call_id: str) -> CallAudio | None:
        call = self.calls.calls.get(call_id)
        if call is None or call.recorder is None:
            return None  # not live, or not answered yet: nothing to hear
        return call.recorder.audio

    def _operator_on(self, call_id: str, identity: str) -> bool:
        """Whether `identity` is the operator (or the supervisor who took it over) on the call now."""
        record = self.storage.get_call(call_id)
        return record is not None and record.operator == identity

    def drain_status(self) -> DrainStatus:
        return DrainStatus(draining=self.gateway.draining, calls_active=len(self.calls.calls))

    async def set_draining(self, draining: bool) -> None:
        await self.gateway.set_draining(draining)

    def _recover(self) -> None:
        started = time.monotonic()
        orphans = self.storage.close_orphans(EndReason.APPLIANCE_RESTART, converting=self.converter.converting)
        for call in orphans:
            if call.recording_path and repair(Path(call.recording_path)):
                log.warning("recording repaired after a crash", extra=log_extra(call_id=call.id))
        if orphans:
            log.warning("calls a crash left open closed",
                        extra=log_extra(calls=len(orphans), seconds=round(time.monotonic() - started, 3)))

    async def start(self) -> None:
        await self.gateway.warm_up()  # the SIP workers' code loads meanwhile: callers wait on them after a restart
        self.webhooks.start()  # the calls a crash left open end with their events
        self._recover()
        self.converter.start()  # after the repair: converts what a crash (or a failure) left as WAV
        self.tts.synthesize("Welcome.")  # load espeak-ng's voice before the first caller waits on it
        self.hub.start()
        await self.server.start(self.config.hub_socket)
        console = self.config.console
        cert, key = ensure_certificate(console, self.config.data_dir)
        await self.http.start(self.config.http.host, self.config.http.port,
                              tls=(console.host, console.port, server_context(cert, key)))
        self.desk.start()
        self._queues_changed()  # desk phones are members from the start
        # SIP first: callers get through as soon as a SIP worker is up; the other pools' start-up
        # (a persona worker's is 1.5 s of CPU) would compete with them for the cores.
        await self.gateway.start()
        if self.twilio is not None:
            await self.twilio.start()
        await self.rtc_pool.start()
        await self.persona_pool.start()
        self.flows.start_watching(self.config.flows_reload_s)
        log.info(
            "appliance started",
            extra=log_extra(sip_port=self.config.sip.port, http=f"{self.config.http.host}:{self.config.http.port}",
                            flows=sorted(self.flows.flows)),
        )

    async def stop(self) -> None:
        await self.flows.stop_watching()
        self.calls.shutdown()
        await asyncio.sleep(0.2)  # let the hang-ups reach the workers
        await self.gateway.stop()
        await self.persona_pool.stop()
        if self.twilio is not None:
            await self.twilio.stop()
        await self.desk.stop()
        await self.rtc_pool.stop()
        await self.http.stop()
        await self.server.stop()
        await self.hub.stop()
        await self.converter.stop()
        await self.webhooks.stop()
        self.storage.close()

    async def run(self, stop: asyncio.Event) -> None:
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()
