"""One `appliance run` per data directory: an exclusive lock on a file in it, held for the process's life.

A second instance (an admin starting one by hand while systemd runs the box) would otherwise replace
the first one's hub socket, so that its restarted workers could never rejoin, and close its live
calls in the database as appliance-restart, before failing on the HTTP port. flock rather than a
PID file alone: the kernel lets go of the lock when its holder dies, even by SIGKILL, so a crash
leaves nothing stale; the PID written into the file only names the holder in the refusal.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from appliance.core.errors import AlreadyRunningError, ConfigError

__all__ = ["LOCK_FILE", "DataDirLock"]

LOCK_FILE = "appliance.lock"


class DataDirLock:
    """Held from `acquire` until the process exits; workers and Kamailio do not inherit it."""

    def __init__(self, path: Path, fd: int):
        self.path = path
        self.fd = fd

    @classmethod
    def acquire(cls, data_dir: Path, mode: int = 0o750) -> DataDirLock:
        """The data directory's lock, made with `mode` if the directory is new; AlreadyRunningError
        naming the holder's PID if another process has it. Opens and writes nothing else."""
        path = data_dir / LOCK_FILE
        try:
            data_dir.mkdir(mode=mode, parents=True, exist_ok=True)
            # Not truncated on open: the holder's PID must still be there to read when we lose.
            # O_CLOEXEC: a worker or Kamailio holding it would keep the box locked after we died.
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640)
        except OSError as exc:
            raise ConfigError(f"data_dir {data_dir}: cannot open {path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _pid_in(fd)
            os.close(fd)
            raise AlreadyRunningError(
                f"another appliance (pid {holder or 'unknown'}) is running on data_dir {data_dir}; "
                "not starting a second one") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(path, fd)


def _pid_in(fd: int) -> int | None:
    """The PID its holder wrote; None while it has not yet written it."""
    with contextlib.suppress(OSError, ValueError):
        return int(os.pread(fd, 32, 0).decode().strip())
    return None
