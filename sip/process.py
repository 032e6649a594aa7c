"""Child processes of the gateway follow the appliance: they get SIGTERM when it dies."""

from __future__ import annotations

import ctypes
import signal

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In a child before exec: be sent SIGTERM when the appliance dies, even by SIGKILL.

    Otherwise an orphaned worker or edge keeps its ports and the restarted appliance
    cannot bind them.
    """
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
