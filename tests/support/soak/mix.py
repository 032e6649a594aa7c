"""The soak's mix of calls: the flows it dials, each kind of call (its sipp scenario, its share of
the rate) and what a kind's record must say when it is over.

Each kind dials its own number, and each sipp call carries its kind and number in its Call-ID
(`call_id_pattern`), which the appliance stores with the call (the `offered` event): a record
is matched to the very call that made it.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from string import Template

from tests.support.sipp.scenarios import SCENARIOS, caller_scenario, cued_hangup_scenario

__all__ = ["KINDS", "PERSONA", "Kind", "call_id_pattern", "flows", "scenario", "split_calls", "write_flows"]

# The soak's flows: short, so that at 15 calls a second the box holds about 50 calls at once.
# Each ends in a reason of its own, so a record's reason says which way its flow went.
FLOWS = {
    "soak_menu": """\
name: soak_menu
description: The soak's DTMF menu; 1 ends it, silence or a wrong key ends it otherwise.
entry: menu
steps:
  menu:
    menu:
      prompt: For sales, press 1.
      options: {"1": sales}
      timeout: 6
      retries: 0
      no_input: no_choice
      no_match: no_choice
  sales:
    say: Sales.
    next: done
  done:
    hangup:
  no_choice:
    hangup: {reason: no-choice}
""",
    "soak_voicemail": """\
name: soak_voicemail
description: The soak's voicemail; pound ends the message, then the flow hangs up.
entry: take_message
steps:
  take_message:
    voicemail:
      prompt: Leave a message.
      max_length: 20
    next: thanks
  thanks:
    say: Thanks.
    next: bye
  bye:
    hangup: {reason: voicemail}
""",
    "soak_prompt": """\
name: soak_prompt
description: The soak's long prompt, which callers hang up on.
entry: notice
steps:
  notice:
    say: This is a long notice about our opening hours, our prices and the many ways to reach us, read out in full.
    next: bye
  bye:
    hangup: {reason: notice-read}
""",
    "soak_closed": """\
name: soak_closed
description: The soak's closed line; the flow hangs up.
entry: closed
steps:
  closed:
    say: We are closed.
    next: bye
  bye:
    hangup: {reason: closed}
""",
    "soak_bridge": """\
name: soak_bridge
description: The soak's bridge transfer to a desk (a sipp UAS).
entry: to_desk
steps:
  to_desk:
    transfer:
      to: "$desk"
      mode: bridge
      timeout: 10
      on_error: desk_failed
  desk_failed:
    hangup: {reason: desk-failed}
""",
}

NUMBERS = {"soak_menu": "501", "soak_voicemail": "502", "soak_prompt": "503", "soak_closed": "504",
           "soak_bridge": "505"}
PERSONA = {"number": "300", "flow": "orders"}  # flows/orders.yaml, the order desk persona


@dataclass(frozen=True)
class Kind:
    """One kind of call in the mix and what its record must show.

    `reason`: the end reason. `answered`: True or False, or None when either may happen (a
    CANCEL racing the answer). `steps`: steps the flow must have entered. `digits`: keys the
    box must have heard. `voicemail`: the call leaves a message.
    """

    name: str
    flow: str
    weight: int  # share of the calls, out of the sum of all weights
    reason: str
    answered: bool | None = True
    steps: tuple[str, ...] = ()
    digits: tuple[str, ...] = ()
    voicemail: bool = False
    transferred: bool = False
    seconds: float = 0.0  # about how long the call lasts, for sizing the box

    @property
    def number(self) -> str:
        return NUMBERS[self.flow]


KINDS: tuple[Kind, ...] = (
    Kind("menu", "soak_menu", 20, "flow-hangup", steps=("menu", "sales"), digits=("1",), seconds=3.5),
    Kind("voicemail_pound", "soak_voicemail", 10, "voicemail", steps=("take_message", "thanks"), digits=("#",),
         voicemail=True, seconds=5.5),
    Kind("voicemail_hangup", "soak_voicemail", 10, "caller-hangup", steps=("take_message",), voicemail=True,
         seconds=4.0),
    Kind("prompt_hangup", "soak_prompt", 15, "caller-hangup", steps=("notice",), seconds=1.5),
    Kind("cancel", "soak_prompt", 10, "caller-hangup", answered=None, seconds=0.1),
    Kind("hold", "soak_menu", 10, "flow-hangup", steps=("menu", "sales"), digits=("1",), seconds=4.5),
    Kind("flow_hangup", "soak_closed", 15, "closed", steps=("closed", "bye"), seconds=2.0),
    Kind("bridge", "soak_bridge", 10, "transferred", steps=("to_desk",), transferred=True, seconds=3.0),
)


def flows(desk_uri: str) -> dict[str, str]:
    """The soak's flow files by name, the bridge's pointing at `desk_uri`."""
    return {name: Template(text).substitute(desk=desk_uri) for name, text in FLOWS.items()}


def write_flows(directory: Path, desk_uri: str, persona_flows: Path | None = None) -> Path:
    """The flows directory: the soak's flows, beside the persona's (copied from `persona_flows`)."""
    if persona_flows is not None:
        shutil.copytree(persona_flows, directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in flows(desk_uri).items():
        (directory / f"{name}.yaml").write_text(text)
    return directory


def scenario(kind: Kind, directory: Path) -> Path:
    """The sipp scenario one kind's caller runs, written into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    if kind.name == "menu":
        # The key 1.5 s in, while the menu listens (its prompt lasts about 1.2 s).
        return caller_scenario(directory, digit="1", wait_ms=1500, bye_timeout_ms=15000)
    if kind.name == "voicemail_pound":
        # Speaks over the prompt and the beep (about 1.5 s), and presses pound 3.5 s in.
        return caller_scenario(directory, digit="#", wait_ms=3500, bye_timeout_ms=15000)
    if kind.name == "voicemail_hangup":
        return cued_hangup_scenario(directory, [], hangup_after_ms=3500, name="voicemail_hangup")
    if kind.name == "prompt_hangup":
        return cued_hangup_scenario(directory, [], hangup_after_ms=1500, name="prompt_hangup")
    if kind.name == "cancel":
        path = directory / "cancel_ringing.xml"
        path.write_text((SCENARIOS / "cancel_ringing.xml").read_text())
        return path
    if kind.name == "hold":
        text = Template((SCENARIOS / "reinvite_hold.xml").read_text()).substitute(
            HOLD_AFTER_MS=500, HELD_MS=1000, KEY_AFTER_MS=800, BYE_TIMEOUT_MS=15000)
        path = directory / "reinvite_hold.xml"
        path.write_text(text)
        return path
    if kind.name == "flow_hangup":
        return caller_scenario(directory, digit=None, wait_ms=0, bye_timeout_ms=15000)
    if kind.name == "bridge":
        return cued_hangup_scenario(directory, [], hangup_after_ms=3000, name="bridge_caller")
    raise ValueError(f"no scenario for kind {kind.name!r}")


def call_id_pattern(kind: Kind) -> str:
    """sipp's -cid_str for a kind: its calls' Call-IDs say kind and call number (%u)."""
    return f"soak-{kind.name}-%u@%s"


def split_calls(total_calls: int, kinds: tuple[Kind, ...] = KINDS) -> dict[str, int]:
    """Calls per kind: `total_calls` shared by weight, the remainder to the heaviest kinds."""
    weights = sum(k.weight for k in kinds)
    counts = {k.name: total_calls * k.weight // weights for k in kinds}
    for k in sorted(kinds, key=lambda k: -k.weight)[: total_calls - sum(counts.values())]:
        counts[k.name] += 1
    return counts
