"""The admin's side of a deployment: their repository (inventory, group_vars, flows) and
`ansible-playbook -i inventory.ini ansible/site.yml` run against a Box over SSH."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.box import Box
from tests.support.ports import free_port_block

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = ROOT / "ansible" / "site.yml"
RECAP = re.compile(r"^\S+\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


@dataclass
class Run:
    returncode: int
    output: str
    seconds: float

    @property
    def changed(self) -> int:
        found = RECAP.search(self.output)
        assert found, f"no PLAY RECAP in:\n{self.output[-5000:]}"
        return int(found.group(2))

    def changed_tasks(self) -> list[str]:
        """Names of the tasks that reported changed (from the default callback's output)."""
        tasks, current = [], ""
        for line in self.output.splitlines():
            if line.startswith("TASK ["):
                current = line
            elif line.startswith("changed:"):
                tasks.append(current)
        return tasks


@dataclass
class Deployment:
    box: Box
    repo: Path  # the admin's own repository
    settings: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)  # the admin's shell (secrets they export)

    def __post_init__(self) -> None:
        self.sip_port = free_port_block(1)
        self.worker_base = free_port_block(2)
        self.rtp_base = free_port_block(80, hold=True)  # bound only during calls: kept from other pickers
        self.http_port = free_port_block(1)
        self.console_port = free_port_block(1)
        self.flows = self.repo / "flows"
        shutil.copytree(ROOT / "flows", self.flows)
        (self.repo / "inventory.ini").write_text(
            "[switchboard]\n"
            f"box ansible_host=127.0.0.1 ansible_port={self.box.ssh_port} ansible_user=root "
            f"ansible_ssh_private_key_file={self.box.key} ansible_python_interpreter=/usr/bin/python3 "
            "ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null'\n")
        # The box shares this machine's network: every port it binds is one free here.
        self.settings = {
            "switchboard_sip_listen_host": "127.0.0.1",
            "switchboard_sip_media_address": "127.0.0.1",
            "switchboard_sip_port": self.sip_port,
            "switchboard_sip_workers": 2,
            "switchboard_sip_worker_base_port": self.worker_base,
            "switchboard_sip_rtp_port_start": self.rtp_base,
            "switchboard_sip_rtp_ports_per_worker": 40,
            "switchboard_http_port": self.http_port,
            "switchboard_console_host": "127.0.0.1",
            "switchboard_console_port": self.console_port,
            "switchboard_console_rtc_workers": 0,
            "switchboard_personas_workers": 0,
            "switchboard_trunks": [{"name": "test", "sources": ["127.0.0.0/8"]}],
            "switchboard_flows_src": str(self.flows),
            "switchboard_drain_timeout": 60,
        } | self.settings
        self.write_settings()

    def write_settings(self, **changes: Any) -> None:
        self.settings |= changes
        group_vars = self.repo / "group_vars"
        group_vars.mkdir(exist_ok=True)
        (group_vars / "switchboard.yml").write_text(yaml.safe_dump(self.settings))

    def converge(self, *extra: str, timeout: float = 900, on_line: Any = None) -> Run:
        """ansible-playbook as an admin runs it, from their repository; `on_line` sees each output line."""
        return self.ansible("ansible-playbook", "-i", "inventory.ini", str(PLAYBOOK), *extra, timeout=timeout,
                            on_line=on_line)

    def ansible(self, program: str, *argv: str, timeout: float = 900, on_line: Any = None) -> Run:
        """One of Ansible's programs (the venv's), run in the admin's repository."""
        bin_dir = Path(sys.executable).parent
        env = {"PATH": f"{bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(self.repo), "LANG": "C.UTF-8",
               "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_PIPELINING": "1",
               "ANSIBLE_LOCAL_TEMP": str(self.repo / ".ansible-tmp")} | self.environment
        start = time.monotonic()
        process = subprocess.Popen([str(bin_dir / program), *argv], cwd=self.repo, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        lines: list[str] = []
        timer = threading.Timer(timeout, process.kill)
        timer.start()
        try:
            assert process.stdout is not None
            for line in process.stdout:
                lines.append(line)
                if on_line is not None:
                    on_line(line)
            process.wait()
        finally:
            timer.cancel()
        output = "".join(lines)
        with (self.repo / "ansible.log").open("a") as log:
            log.write(output)
        return Run(process.returncode, output, time.monotonic() - start)
