"""A real filesystem that runs out of space: a small tmpfs mounted for one test (the tests run as root)."""

from __future__ import annotations

import contextlib
import errno
import subprocess
from collections.abc import Iterator
from pathlib import Path

__all__ = ["fill", "small_filesystem"]


@contextlib.contextmanager
def small_filesystem(directory: Path, size: str = "2m") -> Iterator[Path]:
    """A tmpfs of `size` (mount's notation: 64k, 2m) on `directory`, made if need be, until the block ends."""
    directory.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(directory)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        raise RuntimeError(f"cannot mount a tmpfs on {directory} (the tests run as root): {mounted.stderr.strip()}")
    try:
        yield directory
    finally:
        # Lazy: a process the test started may still hold a file there; the mount goes when it lets go.
        subprocess.run(["umount", "-l", str(directory)], capture_output=True, check=False)


def fill(path: Path) -> int:
    """Write `path` until its filesystem is full; returns the bytes it took. Deleting it frees them."""
    written = 0
    with open(path, "wb", buffering=0) as file:
        try:
            while True:
                written += file.write(bytes(65536))
        except OSError as error:
            if error.errno != errno.ENOSPC:
                raise
    return written
