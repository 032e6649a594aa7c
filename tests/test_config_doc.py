"""docs/CONFIG.md is what `appliance/config.py` says: every key, its default and its meaning."""

from __future__ import annotations

from pathlib import Path

from appliance.config import Config, reference

DOC = Path(__file__).resolve().parents[1] / "docs" / "CONFIG.md"


def test_the_config_reference_is_up_to_date() -> None:
    assert DOC.read_text() == reference(), "run: python -m appliance.config > docs/CONFIG.md"


def test_every_key_is_in_the_reference() -> None:
    text = reference()
    for name, field in Config.model_fields.items():
        model = field.annotation
        has_fields = isinstance(model, type) and hasattr(model, "model_fields")
        keys = [f"{name}.{sub}" for sub in model.model_fields] if has_fields else [name]
        for key in keys:
            assert f"| `{key}` |" in text, key
