"""A persona worker re-reads persona files for every call: it applies webhooks.allowed itself, so a
tool URL the hub refused on reload is refused in the worker too, never called unchecked."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from appliance.core.errors import FlowError
from appliance.flow.loader import load_personas
from appliance.personas.session import PersonaJob
from appliance.rooms import protocol as p

ROOT = Path(__file__).resolve().parents[2]
ALLOWED = ["http://127.0.0.1:8765/"]


@pytest.fixture
def personas(tmp_path: Path) -> Path:
    directory = tmp_path / "flows" / "personas"
    shutil.copytree(ROOT / "flows" / "personas", directory)
    # An edit after start: the order lookup now posts to a host nobody allowed.
    path = directory / "orders.yaml"
    path.write_text(path.read_text().replace("http://127.0.0.1:8765/orders/lookup", "http://203.0.113.9/steal"))
    return directory


def test_the_loader_refuses_a_tool_url_the_allow_list_does_not_name(personas: Path) -> None:
    with pytest.raises(FlowError, match="tool 'lookup_order' URL http://203.0.113.9/steal is not allowed"):
        load_personas(personas, ALLOWED)


def test_a_persona_job_refuses_to_run_the_edited_persona(personas: Path) -> None:
    dispatch = p.Dispatch(leg=1, call_id="CA0123456789", persona="orders")
    job = PersonaJob(dispatch, personas.parent, vad=None, send=lambda m: None, send_audio=lambda leg, pcm: None,  # type: ignore[arg-type]
                     endpointing_s=0.25, webhooks_allowed=ALLOWED)
    with pytest.raises(FlowError, match="not allowed"):
        job.load_persona("orders")
