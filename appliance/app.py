"""The composition root: builds every service from Config and owns start-up and shutdown order.

Start-up: close calls a crash left open and repair their recordings, load flows (refuse
to start on a broken one), then hub → participant server → HTTP → SIP gateway. Shutdown
runs the other way, hanging up calls first so every record is closed.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

from appliance.calls.manager import CallManager
from appliance.config import Config
from appliance.console.http import HttpApi
from appliance.core.reasons import EndReason
from appliance.flow.library import FlowLibrary
from appliance.observability.logging import log_extra
from appliance.personas.dispatcher import PersonaDispatcher
from appliance.personas.pool import PersonaPool
from appliance.recording.wavfile import repair
from appliance.rooms.hub import Hub
from appliance.rooms.server import ParticipantServer, WorkerRegistry
from appliance.rooms.tokens import TokenAuthority, worker_identity
from appliance.speech.tts import EspeakTTS
from appliance.storage import Storage
from sip.gateway import Gateway

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
        _private_dirs(config)
        # Raises FlowError on any broken flow: the appliance never runs half-configured.
        self.flows = FlowLibrary(config.flows_dir, config.webhooks.allowed, config.transfers.allowed)
        self.storage = Storage(config.database)
        self.tokens = TokenAuthority(config.auth.api_key, config.api_secret())
        self.tts = EspeakTTS()
        self.hub = Hub()
        # Kept by the participant server; read by the dispatcher and by bridge transfers' dialling.
        self.workers = WorkerRegistry()
        self.personas = PersonaDispatcher(self.storage, self.workers)
        self.calls = CallManager(config, self.hub, self.storage, self.flows, self.tts, self.personas, self.workers)
        self.server = ParticipantServer(self.hub, self.tokens, self.workers, self.calls, self.personas)
        self.http = HttpApi(self.storage, self.tokens, config.recordings_dir, self.health)
        self.gateway = Gateway(config, lambda name: self.tokens.mint(worker_identity("sip", name), "sip"))
        self.persona_pool = PersonaPool(config, lambda name: self.tokens.mint(worker_identity("agent", name), "agent"))
        # Read once above; no child (workers, Kamailio) needs them, so none inherits them.
        for name in config.secret_env_names():
            os.environ.pop(name, None)

    def health(self) -> dict[str, Any]:
        up = len(self.workers.sip)
        return {"ok": up > 0, "workers_up": up, "workers": len(self.gateway.specs),
                "personas_up": len(self.workers.agents), "personas": len(self.persona_pool.names),
                "calls_active": len(self.calls.calls)}

    def _recover(self) -> None:
        for call in self.storage.close_orphans(EndReason.APPLIANCE_RESTART):
            if call.recording_path and repair(Path(call.recording_path)):
                log.warning("recording repaired after a crash", extra=log_extra(call_id=call.id))

    async def start(self) -> None:
        self._recover()
        self.tts.synthesize("Welcome.")  # load espeak-ng's voice before the first caller waits on it
        self.hub.start()
        await self.server.start(self.config.hub_socket)
        await self.http.start(self.config.http.host, self.config.http.port)
        await self.persona_pool.start()
        await self.gateway.start()
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
        await self.http.stop()
        await self.server.stop()
        await self.hub.stop()
        self.storage.close()

    async def run(self, stop: asyncio.Event) -> None:
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()
