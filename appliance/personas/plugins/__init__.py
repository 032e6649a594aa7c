"""Persona providers by name: config (`ProviderSpec`) → a livekit-agents STT, TTS, LLM or VAD.

The offline ones are ours (pocketsphinx, espeak, scripted) or shipped with their model
(silero); "openai" reaches any OpenAI-compatible endpoint (OpenAI, Ollama, vLLM); any other
name is the installed `livekit-plugins-<name>` package, its class built with the options.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

from livekit.agents import llm, stt, tts, vad

from appliance.flow.persona import ProviderSpec

__all__ = ["ProviderSpec", "build_llm", "build_stt", "build_tts", "build_vad"]


def build_stt(spec: ProviderSpec | dict[str, Any]) -> stt.STT:
    return _build("stt", spec)


def build_tts(spec: ProviderSpec | dict[str, Any]) -> tts.TTS:
    return _build("tts", spec)


def build_llm(spec: ProviderSpec | dict[str, Any]) -> llm.LLM:
    return _build("llm", spec)


def build_vad(spec: ProviderSpec | dict[str, Any]) -> vad.VAD:
    return _build("vad", spec)


# Imports stay inside the builders: a persona pays only for the providers it names.

def _pocketsphinx(options: dict[str, Any]) -> stt.STT:
    from .stt_pocketsphinx import PocketsphinxSTT, grammar_for

    options = dict(options)
    if "phrases" in options or "digits" in options:
        if "grammar" in options:
            raise ValueError("give either grammar or phrases/digits, not both")
        options["grammar"] = grammar_for(options.pop("phrases", []), options.pop("digits", False))
    return PocketsphinxSTT(**options)


def _espeak(options: dict[str, Any]) -> tts.TTS:
    from .tts_espeak import EspeakPluginTTS

    return EspeakPluginTTS(**options)


def _scripted(options: dict[str, Any]) -> llm.LLM:
    from .llm_scripted import ScriptedLLM

    options = dict(options)
    variables = options.pop("variables", None)
    numbers = options.pop("numbers", None)
    return ScriptedLLM(options, variables=variables, numbers=numbers)


def _openai(options: dict[str, Any]) -> llm.LLM:
    openai = _import_plugin("openai")
    options = dict(options)
    if "model" not in options:
        raise ValueError("option model is required (the endpoint's model name)")
    if "api_key" in options:
        raise ValueError("give the key's environment variable as api_key_env, not the key itself")
    key_env = options.pop("api_key_env", "OPENAI_API_KEY")
    if key_env is None:
        key = "unused"  # local servers (Ollama, vLLM) ignore it, the client insists on one
    elif os.environ.get(key_env):
        key = os.environ[key_env]
    else:
        raise ValueError(f"environment variable {key_env} (api_key_env) is not set")
    return openai.LLM(api_key=key, **options)


def _silero(options: dict[str, Any]) -> vad.VAD:
    silero = _import_plugin("silero")
    return silero.VAD.load(**options)  # the onnx model ships inside the package


_BUILTIN: dict[str, dict[str, Callable[[dict[str, Any]], Any]]] = {
    "stt": {"pocketsphinx": _pocketsphinx},
    "tts": {"espeak": _espeak},
    "llm": {"scripted": _scripted, "openai": _openai},
    "vad": {"silero": _silero},
}
# The class a livekit-plugins package names each kind with.
_PLUGIN_CLASS = {"stt": "STT", "tts": "TTS", "llm": "LLM", "vad": "VAD"}


def _build(kind: str, spec: ProviderSpec | dict[str, Any]) -> Any:
    spec = ProviderSpec.model_validate(spec)
    builder = _BUILTIN[kind].get(spec.name) or _from_plugin_package(kind, spec.name)
    try:
        return builder(spec.options)
    except TypeError as e:  # an option the provider does not take
        raise ValueError(f"{kind} provider {spec.name!r}: {e}") from e
    except ValueError as e:
        raise ValueError(f"{kind} provider {spec.name!r}: {e}") from e


def _from_plugin_package(kind: str, name: str) -> Callable[[dict[str, Any]], Any]:
    module_name = f"livekit.plugins.{name}"
    try:
        module = _import_plugin(name)
    except ModuleNotFoundError as e:
        if e.name is None or not module_name.startswith(e.name):
            raise  # the plugin is there but one of its own imports is missing
        raise ValueError(
            f"unknown {kind} provider {name!r}: not built in and livekit-plugins-{name.replace('_', '-')} "
            f"is not installed; available: {_available(kind)}"
        ) from None
    cls = getattr(module, _PLUGIN_CLASS[kind], None)
    if cls is None:
        raise ValueError(f"{module_name} has no {_PLUGIN_CLASS[kind]}; available {kind} providers: {_available(kind)}")
    if kind == "vad" and hasattr(cls, "load"):
        return lambda options: cls.load(**options)  # livekit VADs are built by load()
    return lambda options: cls(**options)


def _import_plugin(name: str) -> ModuleType:
    module_name = f"livekit.plugins.{name}"
    if module_name not in sys.modules and threading.current_thread() is not threading.main_thread():
        # livekit.agents.Plugin.register_plugin refuses any other thread.
        raise RuntimeError(f"{module_name} registers itself on import, which livekit allows only on the "
                           "main thread: import it there at start-up before building providers in a thread")
    return importlib.import_module(module_name)


def _available(kind: str) -> str:
    import livekit.plugins

    installed = sorted(m.name for m in pkgutil.iter_modules(livekit.plugins.__path__))
    return (f"built in: {', '.join(sorted(_BUILTIN[kind]))}; installed livekit plugins: "
            f"{', '.join(installed) or 'none'} (more: pip install livekit-plugins-<name>)")
