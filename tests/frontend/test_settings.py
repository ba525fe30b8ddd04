"""The chat's settings: env overrides, bounds, errors that name the field and its variable, secrets kept secret."""

from __future__ import annotations

import pytest

from frontend.clients import ModelInfo
from frontend.settings import SettingsError, load_settings


def test_defaults_are_valid_and_local():
    s = load_settings()
    assert s.base_url("retriever").startswith("http://127.0.0.1") and s.base_url("llm").startswith("http://127.0.0.1")
    assert not s.auth_enabled and s.llm_api_key is None and s.starters


def test_environment_overrides(monkeypatch):
    monkeypatch.setenv("RAGTUNE_CHAT_LLM_URL", "http://llm.ragtune.svc:8080/")
    monkeypatch.setenv("RAGTUNE_CHAT_BUSY_RETRIES", "5")
    monkeypatch.setenv("RAGTUNE_CHAT_STARTERS", '[{"label": "Hi", "message": "Say hi?"}]')
    monkeypatch.setenv("RAGTUNE_CHAT_AUTH_PASSWORD", "s3cret-password")
    s = load_settings()
    assert s.base_url("llm") == "http://llm.ragtune.svc:8080"
    assert s.busy_retries == 5 and [x.label for x in s.starters] == ["Hi"]
    assert s.auth_enabled and "s3cret-password" not in repr(s) and "s3cret-password" not in str(s.model_dump())


@pytest.mark.parametrize(
    ("env", "value", "field"),
    [
        ("RAGTUNE_CHAT_LLM_URL", "not a url", "llm_url (RAGTUNE_CHAT_LLM_URL)"),
        ("RAGTUNE_CHAT_BUSY_RETRIES", "99", "busy_retries (RAGTUNE_CHAT_BUSY_RETRIES)"),
        ("RAGTUNE_CHAT_LLM_TIMEOUT_S", "0", "llm_timeout_s (RAGTUNE_CHAT_LLM_TIMEOUT_S)"),
        ("RAGTUNE_CHAT_PROMPT_FILE", "/nonexistent.yaml", "prompt_file (RAGTUNE_CHAT_PROMPT_FILE)"),
        ("RAGTUNE_CHAT_AUTH_PASSWORD", "short", "auth_password (RAGTUNE_CHAT_AUTH_PASSWORD)"),
        ("RAGTUNE_CHAT_RETRIEVER_MODEL", "../x", "retriever_model (RAGTUNE_CHAT_RETRIEVER_MODEL)"),
    ],
)
def test_bad_values_name_the_field(monkeypatch, env, value, field):
    monkeypatch.setenv(env, value)
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert field in str(err.value)


def test_same_url_for_both_services_is_refused():
    with pytest.raises(SettingsError, match="same server"):
        load_settings(retriever_url="http://h:1", llm_url="http://h:1")


def test_model_info_reads_the_listing_fields():
    info = ModelInfo.from_listing({"id": "m", "object": "model", "owned_by": "ragtune", "description": "A model",
                                   "context_size": 4096, "quantization": "q4_k_m", "base_model": "smollm2"})
    assert info.context_window == 4096
    assert info.summary() == "**m** — A model (context window 4096 tokens, quantization q4_k_m, fine-tuned from smollm2)"
    nested = ModelInfo.from_listing({"id": "n", "metadata": {"n_ctx": 512, "description": "nested"}})
    assert nested.context_window == 512 and nested.description == "nested"
    assert ModelInfo.from_listing({"id": "bare"}).context_window is None
