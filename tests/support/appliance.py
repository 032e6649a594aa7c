"""The real appliance as a process for integration tests: its own ports, data dir and secret.

Started with `appliance run` exactly as an admin would; stopped by its PID.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.support.ports import free_port_block, release_port_block
from tests.support.wait import wait_until

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ApplianceProcess:
    root: Path
    workers: int = 2
    calls_per_worker: int = 4
    rtp_ports_per_worker: int = 40
    trunk_sources: list[str] = field(default_factory=lambda: ["127.0.0.0/8"])
    numbers: dict[str, str] = field(default_factory=lambda: {"100": "default"})
    flows_dir: Path = ROOT / "flows"
    extra: dict[str, Any] = field(default_factory=dict)
    umask: int = -1  # the umask the appliance is started with; -1: the test's own
    rtc_workers: int = 0  # WebRTC gateway processes: only tests with a console need them
    environment: dict[str, str] = field(default_factory=dict)  # more variables for the appliance (secrets)
    process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.secret = secrets.token_urlsafe(32)
        self.sip_port = free_port_block(1)
        self.worker_base = free_port_block(self.workers)
        # Held while this object lives: pjsua binds the block's ports only during calls, so without
        # the registry's hold another test's picker would take them while they wait.
        self.rtp_base = free_port_block(self.workers * self.rtp_ports_per_worker, hold=True)
        weakref.finalize(self, release_port_block, self.rtp_base)
        self.http_port = free_port_block(1)
        self.https_port = free_port_block(1)
        self.data_dir = self.root / "data"
        self.recordings_dir = self.root / "recordings"
        self.config_path = self.root / "appliance.yaml"
        config = {
            "sip": {
                "listen_host": "127.0.0.1",
                "port": self.sip_port,
                "media_address": "127.0.0.1",
                "workers": self.workers,
                "calls_per_worker": self.calls_per_worker,
                "worker_base_port": self.worker_base,
                "rtp_port_start": self.rtp_base,
                "rtp_ports_per_worker": self.rtp_ports_per_worker,
            },
            "http": {"host": "127.0.0.1", "port": self.http_port},
            "console": {"host": "127.0.0.1", "port": self.https_port, "rtc_workers": self.rtc_workers},
            "trunks": [{"name": "test", "sources": self.trunk_sources}],
            "numbers": self.numbers,
            "data_dir": str(self.data_dir),
            "recordings_dir": str(self.recordings_dir),
            "flows_dir": str(self.flows_dir),
        } | self.extra
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = self.root / "appliance.log"

    @property
    def env(self) -> dict[str, str]:
        return dict(os.environ, SWITCHBOARD_API_SECRET=self.secret, PYTHONPATH=str(ROOT)) | self.environment

    def start(self, timeout: float = 30) -> None:
        self.launch()
        self.wait_ready(timeout)

    def launch(self) -> None:
        """`appliance run`, without waiting for it to be ready."""
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "appliance.cli", "--config", str(self.config_path), "run"],
            cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT, umask=self.umask,
        )

    def wait_ready(self, timeout: float = 30) -> None:
        def ready() -> bool:
            if self.process and self.process.poll() is not None:
                raise RuntimeError(f"appliance exited {self.process.returncode}:\n{self.log_tail()}")
            try:
                # ok: every worker it started has joined (SIP, persona, WebRTC) and the edge runs.
                return bool(self.health()["ok"])
            except (OSError, ValueError):
                return False  # not listening yet

        wait_until(ready, "the appliance to be ready", timeout, interval=0.2, detail=self.log_tail)
        time.sleep(0.5)  # the edge's first OPTIONS round marks the workers up

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for pid in self.child_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if hasattr(self, "_log"):
            self._log.close()

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def token(self, role: str = "admin") -> str:
        sys.path.insert(0, str(ROOT))
        from appliance.rooms.tokens import TokenAuthority

        return TokenAuthority("switchboard", self.secret).mint(f"test-{role}", role)

    def get(self, path: str, auth: bool = True, role: str = "admin") -> Any:
        request = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}")
        if auth:
            request.add_header("Authorization", f"Bearer {self.token(role)}")
        with urllib.request.urlopen(request, timeout=5) as response:
            body = response.read()
            return json.loads(body) if response.headers.get_content_type() == "application/json" else body

    def metric(self, name: str) -> float:
        """One sample on /metrics: `switchboard_draining`, or with labels `switchboard_calls_total{outcome="x"}`."""
        text = self.get("/metrics").decode()
        return float(next(line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")))

    def health(self) -> dict[str, Any]:
        """/healthz's body, whether it answers 200 (ok) or 503 (a worker or the edge missing)."""
        try:
            return self.get("/healthz", auth=False)
        except urllib.error.HTTPError as error:
            if error.code != 503:
                raise
            return json.loads(error.read())

    def child_pids(self) -> list[int]:
        """Processes this appliance started (workers, kamailio), found by their config paths."""
        marks = (str(self.data_dir), str(self.config_path))
        pids = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or (self.process and int(proc.name) == self.process.pid):
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if any(m in cmdline for m in marks):
                pids.append(int(proc.name))
        return pids

    def worker_pid(self, name: str) -> int:
        """A SIP worker's pid: forked by the gateway's fork server, it is named sip-<name> (`ps -e`)."""
        for pid in self.child_pids():
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == f"sip-{name}":
                    return pid
            except OSError:
                continue
        raise LookupError(f"no worker {name}")

    def calls(self) -> list[dict[str, Any]]:
        return self.get("/api/calls?limit=1000")["calls"]

    def call(self, call_id: str) -> dict[str, Any]:
        return self.get(f"/api/calls/{call_id}")

    def wait_answered(self, count: int, timeout: float = 15) -> list[dict[str, Any]]:
        """The calls answered so far, once there are `count` of them."""
        def answered() -> list[dict[str, Any]]:
            calls = [c for c in self.calls() if c["answered_at"]]
            return calls if len(calls) >= count else []

        return wait_until(answered, f"{count} answered calls", timeout, interval=0.2, detail=self.log_tail)

    def wait_event(self, call_id: str, kind: str, timeout: float = 10) -> dict[str, Any]:
        """The call's first event of `kind`, once it is there (a leg's `rtp` comes after `ended`
        when the hub hung up: the worker counts its packets as the BYE goes out)."""
        def found() -> dict[str, Any] | None:
            return next((e for e in self.call(call_id)["events"] if e["kind"] == kind), None)

        return wait_until(found, f"a {kind} event of {call_id}", timeout, interval=0.2, detail=self.log_tail)

    def wait_calls_closed(self, count: int, timeout: float = 30) -> list[dict[str, Any]]:
        def closed() -> list[dict[str, Any]]:
            calls = self.calls()
            return calls if len(calls) >= count and all(c["ended_at"] for c in calls) else []

        return wait_until(closed, f"{count} closed calls", timeout, interval=0.3,
                          detail=lambda: f"have {self.calls()}\n{self.log_tail()}")
