"""Hold a worker's RTP sender inside pjmedia's UDP send, between its check and its use of the socket.

pjmedia 2.15's `transport_send_rtp` (transport_udp.c) tests `udp->started`, copies the packet, and
only then reads `udp->rtp_key` for `pj_ioqueue_sendto`; a call's teardown on another thread
clears `started` (detach) and then `rtp_key` (destroy) without any lock the sender takes. A
sender caught in between asserts in pj_ioqueue_sendto (`key && op_key && data && length`) and
aborts the worker: a window of a few instructions, which the soak hit twice in 18,000 calls.
This widens it at will: gdb, in non-stop mode (only the thread that hits the breakpoint
stops), breaks on that copy (`memcpy`) and keeps whichever thread got there until `release`.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import subprocess
import time
from pathlib import Path

import pjsua2

__all__ = ["RtpSenderHold", "send_rtp_copy_offset"]

LIBRARY = next(Path(pjsua2.__file__).parent.glob("_pjsua2*.so"))


def send_rtp_copy_offset(library: Path = LIBRARY) -> int:
    """The file offset of the packet copy in the UDP transport's `transport_send_rtp`.

    The wheel keeps its static symbols: four transports name a `transport_send_rtp`; the UDP
    one is the one calling pj_ioqueue_sendto, and its only memcpy comes after the `started` test.
    """
    symbols = subprocess.run(["nm", str(library)], capture_output=True, text=True, check=True).stdout
    starts = [int(line.split()[0], 16) for line in symbols.splitlines() if line.endswith(" transport_send_rtp")]
    for start in starts:
        code = subprocess.run(
            ["objdump", "-d", "--no-show-raw-insn", f"--start-address={start:#x}",
             f"--stop-address={start + 0x200:#x}", str(library)],
            capture_output=True, text=True, check=True).stdout
        if "<pj_ioqueue_sendto@plt>" not in code:
            continue
        copy = re.search(r"^\s*([0-9a-f]+):\s+call\s+\S+ <memcpy@plt>", code, re.MULTILINE)
        if copy:
            return int(copy.group(1), 16)
    raise LookupError(f"no UDP transport_send_rtp with a memcpy in {library}")


def _library_base(pid: int, library: Path) -> int:
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[5] == str(library.resolve()) and int(fields[2], 16) == 0:
            return int(fields[0].split("-")[0], 16)
    raise LookupError(f"{library.name} is not mapped in process {pid}")


class RtpSenderHold:
    """gdb (machine interface) attached to one process, holding the first thread to reach the copy."""

    def __init__(self, pid: int, workdir: Path):
        if shutil.which("gdb") is None:
            raise RuntimeError("gdb is needed to hold a thread inside pjmedia")
        self.pid = pid
        self.address = _library_base(pid, LIBRARY) + send_rtp_copy_offset()
        self.transcript = workdir / "gdb-mi.log"
        self._log = self.transcript.open("w")
        self.gdb = subprocess.Popen(
            ["gdb", "--interpreter=mi3", "--nx", "-q"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, bufsize=0)
        self._buffer = ""
        self.thread: str | None = None
        self.thread_name = ""

    def _send(self, command: str) -> None:
        assert self.gdb.stdin is not None
        self._log.write(f">>> {command}\n")
        self.gdb.stdin.write(command.encode() + b"\n")

    def _expect(self, pattern: str, timeout: float, errors: bool = True) -> re.Match[str]:
        """Read gdb's records until one matches `pattern`; gdb's own errors end the wait."""
        assert self.gdb.stdout is not None
        deadline = time.monotonic() + timeout
        wanted = re.compile(pattern)
        while True:
            while "\n" in self._buffer:
                line, self._buffer = self._buffer.split("\n", 1)
                self._log.write(line + "\n")
                match = wanted.search(line)
                if match:
                    return match
                if errors and line.startswith("^error"):
                    raise RuntimeError(f"gdb: {line} (waiting for {pattern!r}; see {self.transcript})")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"gdb did not say {pattern!r} in {timeout} s (see {self.transcript})")
            # Raw reads: select() cannot see what a buffered reader has already taken in.
            ready, _, _ = select.select([self.gdb.stdout], [], [], left)
            if ready:
                chunk = os.read(self.gdb.stdout.fileno(), 65536)
                if not chunk:
                    raise RuntimeError(f"gdb exited (see {self.transcript})")
                self._buffer += chunk.decode(errors="replace")

    def hold(self, timeout: float = 60) -> str:
        """Attach, break at the copy, let everything run; the name of the thread held there."""
        for setting in ("mi-async on", "non-stop on", "pagination off", "auto-solib-add off",
                        "debuginfod enabled off"):
            self._send(f"-gdb-set {setting}")
            self._expect(r"^\^(done|error)", 10)
        self._send(f"-target-attach {self.pid}")
        self._expect(r"^\^done", timeout)
        self._send(f"-break-insert *{self.address:#x}")
        self._expect(r"^\^done,bkpt=", 10)
        self._send("-exec-continue --all")
        # Attaching in non-stop mode stops the threads one by one, some only after the first
        # resume: each one reported stopped elsewhere than at the copy is resumed on its own.
        while True:
            stopped = self._expect(r'^\*stopped,(.*)thread-id="(\d+)"', timeout, errors=False)
            if 'reason="breakpoint-hit"' in stopped.group(1):
                self.thread = stopped.group(2)
                break
            self._send(f"-exec-continue --thread {stopped.group(2)}")
        # Nobody else stops there from now on; the process's own abort goes straight to it. (A resume
        # above may still answer ^error, "already running": not these commands' answer.)
        self._send("-break-delete")
        self._expect(r"^\^done", 10, errors=False)
        self._send('-interpreter-exec console "handle SIGABRT nostop noprint pass"')
        self._expect(r"^\^done", 10, errors=False)
        self._send(f"-thread-info {self.thread}")
        info = self._expect(r"^\^done,threads=", 10, errors=False).string
        name = re.search(r'name="([^"]*)"', info)
        self.thread_name = name.group(1) if name else "?"
        return self.thread_name

    def release(self) -> None:
        """Let the held thread go on and detach (the process may abort on its own as it goes)."""
        if self.thread is not None:
            self._send(f"-exec-continue --thread {self.thread}")
            self._expect(r"^\^(running|error)", 10)
            time.sleep(0.5)  # its next instructions run under gdb; the abort, if any, happens now
            self.thread = None
        self.close()

    def close(self) -> None:
        if self.gdb.poll() is None:
            try:
                self._send("-target-detach")
                self._send("-gdb-exit")
                self.gdb.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.gdb.kill()
                self.gdb.wait()
        self._log.close()
