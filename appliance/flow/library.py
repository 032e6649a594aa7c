"""The flows in service: loaded all-or-nothing from flows/, looked up by name per new call."""

from __future__ import annotations

from pathlib import Path

from appliance.flow.loader import LoadedFlow, load_dir


class FlowLibrary:
    def __init__(self, directory: Path):
        self.directory = directory
        self.flows: dict[str, LoadedFlow] = load_dir(directory)

    def get(self, name: str) -> LoadedFlow | None:
        return self.flows.get(name)
