"""The layout is the architecture: imports point down, and each outside library has one home."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Lower number = lower layer; a module may import its own layer's package or lower layers.
LAYERS = {
    "appliance.core": 0,
    "appliance.config": 1,
    "appliance.observability": 1,
    "appliance.storage": 1,
    "appliance.speech": 1,
    "appliance.rooms": 2,
    "appliance.flow": 2,
    "appliance.recording": 3,
    "appliance.personas": 3,
    "appliance.operators": 3,
    "appliance.integrations": 3,
    "appliance.calls": 4,
    "appliance.console": 5,
    "sip": 5,
    "twilio_gateway": 5,
    "appliance.app": 6,
    "appliance.cli": 7,
}
# sip/ reaches the hub only through the participant protocol, as a LiveKit SIP service would.
# The hub client is that protocol's client side (rooms/client.py imports nothing of the hub's).
# twilio_gateway/ is the same kind of gateway and keeps the same rule.
GATEWAY_MAY_IMPORT = ("appliance.core", "appliance.config", "appliance.observability", "appliance.rooms.protocol",
                      "appliance.rooms.client")
GATEWAYS = ("sip", "twilio_gateway")
ONLY_HOME = {"pjsua2": "sip", "sqlite_utils": "appliance.storage", "aiortc": "appliance.console",
             "cryptography": "appliance.console", "twilio": "twilio_gateway"}


def _package(module: str) -> str:
    return max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)


def _modules() -> list[tuple[str, Path]]:
    out = []
    for top in ("appliance", *GATEWAYS):
        for path in (ROOT / top).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(p for p in parts if p != "__init__")
            out.append((name, path))
    return out


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def test_imports_point_down() -> None:
    wrong = []
    for module, path in _modules():
        if module in ("appliance", *GATEWAYS):
            continue
        own = _package(module)
        for name in _imports(path):
            if not name.startswith(("appliance", *GATEWAYS)) or name in ("appliance",):
                continue
            target = _package(name)
            if own in GATEWAYS and not name.startswith((*GATEWAY_MAY_IMPORT, own)):
                wrong.append(f"{module} imports {name}: {own}/ talks to the hub only by the participant protocol")
            elif (target != own and LAYERS[target] >= LAYERS[own]
                  and not (own == "appliance.app" and target in GATEWAYS)):
                wrong.append(f"{module} (layer {LAYERS[own]}) imports {name} (layer {LAYERS[target]})")
    assert wrong == []


def test_outside_libraries_have_one_home() -> None:
    wrong = []
    for module, path in _modules():
        for name in _imports(path):
            home = ONLY_HOME.get(name.split(".")[0])
            if home and not module.startswith(home):
                wrong.append(f"{module} imports {name}; only {home} may")
    assert wrong == []


def test_walker_sees_an_upward_import(tmp_path: Path) -> None:
    # The checker itself must be able to fail.
    bad = tmp_path / "m.py"
    bad.write_text("from appliance.app import Appliance\n")
    assert "appliance.app" in _imports(bad)
    assert LAYERS[_package("appliance.app")] > LAYERS[_package("appliance.storage.db")]


def test_the_hub_client_is_only_the_protocols_client_side() -> None:
    # sip/ may import it (GATEWAY_MAY_IMPORT) only because it reaches no further into the hub than the protocol.
    path = ROOT / "appliance" / "rooms" / "client.py"
    hub = [name for name in _imports(path) if name.startswith("appliance.rooms") and name != "appliance.rooms.protocol"]
    reached = [name for name in _imports(path) if name.startswith("appliance")
               and not name.startswith(("appliance.core", "appliance.observability", "appliance.rooms"))]
    assert hub == [] and reached == []
