"""A fresh Debian 12 box for the deployment tests: a debootstrap root file system booted with
systemd as PID 1 in systemd-nspawn, on the host's network, reached over SSH like a real host.

The root file system is made once per include list and kept in CACHE (debootstrap takes ~46 s);
each test module boots a fresh copy of it. Stopped by SIGTERM to the nspawn process.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.ports import free_port_block
from tests.support.wait import wait_until

CACHE = Path(os.environ.get("SWITCHBOARD_TEST_CACHE", "/var/cache/switchboard-tests"))
# What an admin's minimal Debian host has: systemd, SSH, Python for Ansible, apt's Python
# bindings (ansible.builtin.apt) and CA certificates (pip over HTTPS).
INCLUDE = ("systemd", "systemd-sysv", "dbus", "python3", "python3-apt", "openssh-server",
           "ca-certificates", "iproute2")
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"


def rootfs() -> Path:
    """The cached root file system for INCLUDE, made with debootstrap when missing."""
    key = hashlib.sha256(" ".join((SUITE, MIRROR) + INCLUDE).encode()).hexdigest()[:12]
    done = CACHE / f"debian-{SUITE}-{key}"
    if (done / "etc" / "os-release").exists():
        return done
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = CACHE / f"{done.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(INCLUDE)}", SUITE,
                    str(partial), MIRROR], check=True, stdout=subprocess.DEVNULL)
    # Renamed only when complete: an interrupted debootstrap is never taken for a cached one.
    partial.rename(done)
    return done


@dataclass
class Box:
    """One booted copy of the cached root file system, reached as root over SSH on 127.0.0.1."""

    root: Path
    ssh_port: int = field(default_factory=lambda: free_port_block(1))
    process: subprocess.Popen[bytes] | None = None

    @property
    def key(self) -> Path:
        return self.root.parent / "id_ed25519"

    @property
    def log_path(self) -> Path:
        return self.root.parent / "nspawn.log"

    def prepare(self, image: Path) -> None:
        """A fresh copy of `image` with sshd on its own loopback port and our key for root."""
        subprocess.run(["cp", "-a", "--reflink=auto", str(image), str(self.root)], check=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)], check=True)
        ssh = self.root / "root" / ".ssh"
        ssh.mkdir(mode=0o700, exist_ok=True)
        shutil.copy(self.key.with_suffix(".pub"), ssh / "authorized_keys")
        (ssh / "authorized_keys").chmod(0o600)
        # The host's network is shared: sshd must not take the host's port 22.
        (self.root / "etc/ssh/sshd_config.d/test.conf").write_text(
            f"Port {self.ssh_port}\nListenAddress 127.0.0.1\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\n")
        (self.root / "etc/hostname").write_text("switchboard-test\n")
        # This machine reaches PyPI through a proxy with its own CA: the box trusts what the host does.
        for ca in Path("/usr/local/share/ca-certificates").glob("*.crt"):
            shutil.copy(ca, self.root / "usr/local/share/ca-certificates" / ca.name)
        subprocess.run(["chroot", str(self.root), "update-ca-certificates", "--fresh"], check=True,
                       capture_output=True)
        (self.root / "etc/pip.conf").write_text("[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n")

    def boot(self, timeout: float = 60) -> None:
        env = dict(os.environ, SYSTEMD_NSPAWN_UNIFIED_HIERARCHY="1")
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            ["systemd-nspawn", "-b", "--register=no", "--keep-unit", "-D", str(self.root)],
            env=env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)
        wait_until(self._running, "the box's systemd to reach 'running'", timeout, interval=0.5,
                   detail=lambda: self.log_path.read_text(errors="replace")[-3000:])

    def _leader(self) -> int | None:
        """PID (on the host) of the box's systemd: the nspawn process's child."""
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"systemd-nspawn exited {self.process.returncode}: "
                               f"{self.log_path.read_text(errors='replace')[-3000:]}")
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        pids = children.read_text().split() if children.exists() else []
        return int(pids[0]) if pids else None

    def _running(self) -> bool:
        if self._leader() is None:
            return False
        state = self.run("systemctl", "is-system-running", check=False).stdout.strip()
        if state == "degraded":
            failed = self.run("systemctl", "--failed", "--no-legend", check=False).stdout
            raise RuntimeError(f"the box booted degraded: {failed}")
        return state == "running"

    def run(self, *argv: str, check: bool = True, timeout: float = 120,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """A command in the box, as root, through nsenter (all of its namespaces)."""
        leader = self._leader()
        assert leader is not None, "the box has not started"
        done = subprocess.run(["nsenter", "-t", str(leader), "-a", *argv], capture_output=True, text=True,
                              timeout=timeout, input=input)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {done.returncode} in the box:\n{done.stdout}{done.stderr}")
        return done

    def stop(self, timeout: float = 60) -> None:
        """SIGTERM to nspawn (the box shuts down cleanly), SIGKILL if it does not in `timeout` s."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self._log.close()

    def ssh_ready(self) -> bool:
        probe = subprocess.run(["ssh", *self.ssh_options(), "root@127.0.0.1", "true"],
                               capture_output=True, timeout=30)
        return probe.returncode == 0

    def ssh_options(self) -> list[str]:
        return ["-p", str(self.ssh_port), "-i", str(self.key), "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR"]
