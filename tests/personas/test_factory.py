"""Providers by name: the offline ones, the OpenAI-compatible one, any installed livekit plugin,
and clear errors for names and options that cannot work."""

from __future__ import annotations

import pytest
from livekit.agents import llm, stt, tts, vad
from livekit.plugins import openai, silero

from appliance.personas.plugins import ProviderSpec, build_llm, build_stt, build_tts, build_vad
from appliance.personas.plugins.llm_scripted import ScriptedLLM
from appliance.personas.plugins.stt_pocketsphinx import PocketsphinxSTT
from appliance.personas.plugins.tts_espeak import EspeakPluginTTS


def test_the_offline_providers_by_name() -> None:
    recogniser = build_stt({"name": "pocketsphinx", "options": {"phrases": ["where is my order"], "digits": True}})
    voice = build_tts(ProviderSpec(name="espeak", options={"voice": "en-gb-x-rp"}))
    script = build_llm({"name": "scripted", "options": {
        "intents": {"hi": {"phrases": ["hello"], "reply": "Hello from {company}."}}, "variables": {"company": "Acme"}}})

    assert isinstance(recogniser, PocketsphinxSTT) and isinstance(recogniser, stt.STT)
    assert isinstance(voice, EspeakPluginTTS) and voice.voice == "en-gb-x-rp" and isinstance(voice, tts.TTS)
    assert isinstance(script, ScriptedLLM) and script.variables == {"company": "Acme"} and isinstance(script, llm.LLM)


def test_silero_loads_the_model_its_package_ships_offline(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    detector = build_vad({"name": "silero", "options": {"min_silence_duration": 0.35}})

    assert isinstance(detector, silero.VAD) and isinstance(detector, vad.VAD)


def test_openai_reaches_any_compatible_endpoint(monkeypatch) -> None:
    monkeypatch.setenv("OLLAMA_KEY", "unused-but-set")

    model = build_llm({"name": "openai", "options": {
        "model": "llama3.1", "base_url": "http://127.0.0.1:11434/v1", "api_key_env": "OLLAMA_KEY", "temperature": 0.2}})
    keyless = build_llm({"name": "openai", "options": {"model": "qwen", "base_url": "http://127.0.0.1:8000/v1",
                                                       "api_key_env": None}})

    assert isinstance(model, openai.LLM) and model.model == "llama3.1" and model.provider == "127.0.0.1:11434"
    assert keyless.model == "qwen"


def test_another_installed_livekit_plugin_is_built_with_its_options() -> None:
    voice = build_tts({"name": "openai", "options": {"api_key": "sk-test", "voice": "ash"}})

    assert isinstance(voice, openai.TTS)


@pytest.mark.parametrize("build, spec, message", [
    (build_stt, {"name": "deepgram"}, r"livekit-plugins-deepgram is not installed; available: built in: pocketsphinx"),
    (build_llm, {"name": "gpt"}, r"available: built in: openai, scripted; installed livekit plugins: openai, silero"),
    (build_stt, {"name": "silero"}, r"livekit.plugins.silero has no STT"),
    (build_stt, {"name": "pocketsphinx", "options": {"grammer": "x"}}, r"stt provider 'pocketsphinx': .*'grammer'"),
    (build_stt, {"name": "pocketsphinx", "options": {"grammar": "x", "phrases": ["y"]}}, "not both"),
    (build_tts, {"name": "espeak", "options": {"voice": "en-gb"}}, "no voice 'en-gb'"),  # it is en-gb-x-rp
    (build_llm, {"name": "openai", "options": {}}, "model is required"),
    (build_llm, {"name": "scripted", "options": {"intents": {"x": {"phrases": ["x"]}}}}, "needs a 'reply' or a 'tool'"),
    (build_vad, {"name": "silero", "options": {"sample_rate": 44100}}, "vad provider 'silero'"),
    (build_stt, {"name": "Pocket Sphinx"}, "should match pattern"),
    (build_stt, {"name": "pocketsphinx", "settings": {}}, "Extra inputs"),
])
def test_what_cannot_work_is_refused_clearly(build, spec: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build(spec)


def test_a_plugin_not_yet_imported_cannot_be_built_off_the_main_thread() -> None:
    import sys
    import threading

    assert "livekit.plugins.nosuchplugin" not in sys.modules
    raised: list[BaseException] = []
    worker = threading.Thread(target=lambda: _catch(raised, lambda: build_stt({"name": "nosuchplugin"})))
    worker.start()
    worker.join()

    assert isinstance(raised[0], RuntimeError) and "main thread" in str(raised[0])


def _catch(into: list[BaseException], action) -> None:
    try:
        action()
    except BaseException as e:  # noqa: BLE001 - handed back to the test's thread
        into.append(e)
