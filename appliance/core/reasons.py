"""Why a call (or one of its legs) ended: the words stored in a call's record and counted in metrics.

A `StrEnum`, so a member *is* its string and `str()` or an f-string gives the word: records,
events and log lines keep the words they always had. Two families carry a SIP status code
(`refused-486`, `sip-404`); a flow's `hangup` step may name a reason of its own, and a worker may
relay anything, so reasons travel as `str` and only the metric label is held to this list
(`outcome_label`).
"""

from __future__ import annotations

import re
from enum import StrEnum

__all__ = ["EndReason", "outcome_label", "refused", "sip_failure"]


class EndReason(StrEnum):
    CALLER_HANGUP = "caller-hangup"
    DESTINATION_HANGUP = "destination-hangup"  # a bridge transfer's far end hung up
    FLOW_HANGUP = "flow-hangup"  # a flow's `hangup` step that names no reason
    FLOW_ERROR = "flow-error"
    TRANSFERRED = "transferred"
    OPERATOR_HANGUP = "operator-hangup"  # the operator hung up from the console
    RING_TIMEOUT = "ring-timeout"  # a bridge transfer's destination did not answer in time
    WORKER_LOST = "worker-lost"  # the hub lost the SIP worker carrying the leg
    HUB_LOST = "hub-lost"  # the SIP worker lost the hub
    STREAM_LOST = "stream-lost"  # a Twilio Media Streams WebSocket closed, or stalled, without a stop
    APPLIANCE_STOP = "appliance-stop"
    APPLIANCE_RESTART = "appliance-restart"  # left open by a crash, closed at the next start
    OTHER = "other"  # the metric label of every reason not listed here


def refused(code: int) -> str:
    """The hub declined an offered call with `code` (the caller got that response)."""
    return f"refused-{code}"


def sip_failure(code: int) -> str:
    """The far end ended the call with a SIP status other than a normal BYE or CANCEL."""
    return f"sip-{code}"


_WITH_CODE = re.compile(r"(?:refused|sip)-[1-6][0-9]{2}")
_KNOWN = frozenset(reason.value for reason in EndReason)


def outcome_label(reason: str) -> str:
    """The `calls_total` label for `reason`: itself when listed or a coded SIP outcome, else `other`.

    Workers relay reasons and flows may name their own; each new label is a new time series
    for as long as the process lives, so the set of labels is kept to a known, bounded one.
    """
    if reason in _KNOWN or _WITH_CODE.fullmatch(reason):
        return reason
    return EndReason.OTHER.value
