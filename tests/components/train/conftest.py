"""Shared fixtures of the train tests: a tiny real dataset and a stand-in for the Hugging Face Hub API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from components.data.prepare import DataConfig, prepare_dataset
from tests.components.train.hub_standin import HubStandIn

COUNTRIES = [
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Japan", "Tokyo"),
    ("Canada", "Ottawa"), ("Egypt", "Cairo"), ("Peru", "Lima"), ("Kenya", "Nairobi"), ("Norway", "Oslo"),
    ("Chile", "Santiago"), ("Greece", "Athens"), ("Poland", "Warsaw"), ("Cuba", "Havana"), ("Iran", "Tehran"),
    ("Nepal", "Kathmandu"), ("Ghana", "Accra"), ("Ireland", "Dublin"), ("Austria", "Vienna"), ("Portugal", "Lisbon"),
]


def write_capitals(path: Path, repeats: int = 2) -> Path:
    """A small, learnable chat set in ShareGPT form: short questions with a fixed answer pattern."""
    rows = []
    for r in range(repeats):
        for country, capital in COUNTRIES:
            rows.append({"id": f"{country}-{r}", "conversations": [
                {"from": "system", "value": "Answer in one sentence."},
                {"from": "human", "value": f"What is the capital of {country}?"},
                {"from": "gpt", "value": f"The capital of {country} is {capital}."},
            ]})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def capitals_data(tmp_path_factory) -> Path:
    """A prepared dataset folder (train 36 / held-out 4 conversations)."""
    root = tmp_path_factory.mktemp("capitals")
    src = write_capitals(root / "capitals.jsonl")
    out = root / "data"
    prepare_dataset(DataConfig(source=str(src), heldout_size=4, seed=1), out)
    return out


@pytest.fixture(scope="session")
def smol_tokenizer():
    """SmolLM2-135M-Instruct's tokenizer from the packaged GGUF (with its ChatML template)."""
    from components.train.base_model import load_tokenizer, resolve_base_model

    return load_tokenizer(resolve_base_model(None))


@pytest.fixture
def hub_standin(tmp_path) -> HubStandIn:
    return HubStandIn(tmp_path / "hub")
