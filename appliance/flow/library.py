"""The flows in service: loaded all-or-nothing from flows/, and reloaded when files change.

A reload is checked completely before it replaces anything: new calls take the new
versions, calls in progress keep the version they started with (they hold it), and a
broken edit is logged with every problem, counted, and the last good versions keep serving.
The watcher reads and checks files on a worker thread and swaps the result in on the event
loop, which must stay free for the 20 ms audio clock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from appliance.core.errors import FlowError
from appliance.flow.loader import PERSONAS_DIR, QUEUES_FILE, LoadedFlow, load_dir, load_personas, load_queues
from appliance.flow.persona import Persona
from appliance.flow.schema import Queue
from appliance.observability import metrics
from appliance.observability.logging import log_extra

log = logging.getLogger(__name__)


class FlowLibrary:
    def __init__(self, directory: Path, webhooks_allowed: list[str] | None = None,
                 transfers_allowed: list[str] | None = None):
        self.directory = directory
        self.webhooks_allowed = list(webhooks_allowed or [])
        self.transfers_allowed = list(transfers_allowed or [])  # the appliance always checks its policy
        self.flows, self.personas, self.queues = self._load()
        self._stamp = self._fingerprint()
        self._task: asyncio.Task[None] | None = None
        # Called after each accepted reload (the operator desk takes the new queue settings).
        self.on_reload: list[Callable[[], None]] = []

    def _load(self) -> tuple[dict[str, LoadedFlow], dict[str, Persona], dict[str, Queue]]:
        """Read and check everything; touches no state, so it may run on a worker thread."""
        flows = load_dir(self.directory, self.webhooks_allowed, self.transfers_allowed)
        # personas and queues were checked by load_dir already
        return (flows, load_personas(self.directory / PERSONAS_DIR),
                load_queues(self.directory / QUEUES_FILE).queues)

    def persona_fallback(self, name: str) -> str:
        persona = self.personas.get(name)
        return persona.fallback_prompt if persona else Persona.model_fields["fallback_prompt"].default

    def get(self, name: str) -> LoadedFlow | None:
        return self.flows.get(name)

    def numbers(self) -> dict[str, str]:
        """Numbers the flows themselves declare (appliance.yaml's `numbers` take precedence)."""
        return {n: name for name, loaded in self.flows.items() for n in loaded.flow.numbers}

    def _fingerprint(self) -> tuple[tuple[str, int, int], ...]:
        files = [p for p in self.directory.rglob("*") if p.is_file()]
        return tuple(sorted((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files))

    def reload(self) -> bool:
        """Check and swap in the flows on disk; False (and nothing changed) if any is broken."""
        try:
            loaded = self._load()
        except FlowError as exc:
            return self._rejected(exc)
        return self._swap(*loaded)

    def _rejected(self, exc: FlowError) -> bool:
        metrics.flow_reload_errors.inc()
        for problem in exc.problems:
            log.error("flow edit rejected", extra=log_extra(problem=str(problem)))
        return False

    def _swap(self, flows: dict[str, LoadedFlow], personas: dict[str, Persona], queues: dict[str, Queue]) -> bool:
        changed = {n for n in flows if n not in self.flows or flows[n].version != self.flows[n].version}
        self.flows, self.personas, self.queues = flows, personas, queues
        log.info("flows reloaded", extra=log_extra(changed=sorted(changed), flows=sorted(flows)))
        for listener in self.on_reload:
            listener()
        return True

    def start_watching(self, interval_s: float) -> None:
        if interval_s > 0:
            self._task = asyncio.get_running_loop().create_task(self._watch(interval_s), name="flows-watch")

    async def stop_watching(self) -> None:
        if self._task:
            self._task.cancel()

    async def _watch(self, interval_s: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval_s)
            try:
                stamp = await loop.run_in_executor(None, self._fingerprint)
            except OSError:
                continue  # a file vanished mid-scan: an editor saving; look again next time
            if stamp == self._stamp:
                continue
            self._stamp = stamp
            # Parsing and checking are CPU work (22 ms for the shipped flows, more for large
            # ones) that held the 20 ms audio ticks up to 45 ms when run here; on a worker
            # thread they held them 8 ms (the GIL). Only the swap runs on the loop.
            try:
                loaded = await loop.run_in_executor(None, self._load)
            except FlowError as exc:
                self._rejected(exc)
                continue
            self._swap(*loaded)
