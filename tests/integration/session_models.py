"""Models the session server loads besides the shipped ones, built for the tests on the spot."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from processors.model_store import resolve_model_path
from server.settings import load_config

REPO = Path(__file__).resolve().parents[2]
TINY_CLASSIFIER_LABELS = ("alpha", "beta", "gamma")
# Only the tokenizer is borrowed: the tiny model has MiniLM's vocabulary, so its files fit.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
)


def prepared_model_folder(name: str) -> Path:
    """The folder of a default model (configs/default.yaml), as `capserve prepare-models` left
    it."""
    config = load_config(REPO / "configs/default.yaml", {})
    assert config.models_dir is not None
    return Path(resolve_model_path(name, config.models[name].source, config.models_dir))


def build_tiny_classifier(target: Path) -> Path:
    """A seeded BertForSequenceClassification with random weights: enough to test the plumbing
    (labels from id2label, probabilities that sum to 1), small enough to start in seconds."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    tokenizer_source = prepared_model_folder("minilm")
    torch.manual_seed(1234)
    config = BertConfig(
        vocab_size=30522,
        # vLLM's CPU attention supports head sizes from 32 up: 64 / 2 heads is the smallest.
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=512,
        num_labels=len(TINY_CLASSIFIER_LABELS),
        id2label=dict(enumerate(TINY_CLASSIFIER_LABELS)),
        label2id={name: i for i, name in enumerate(TINY_CLASSIFIER_LABELS)},
    )
    model = BertForSequenceClassification(config).eval()
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target, safe_serialization=True)
    for name in TOKENIZER_FILES:
        if (tokenizer_source / name).is_file():
            shutil.copy(tokenizer_source / name, target / name)
    return target


def extra_models(folder: Path) -> dict[str, dict[str, Any]]:
    """Model name -> its config entry (as in configs/default.yaml's `models`)."""
    path = build_tiny_classifier(folder / "tiny_classifier")
    return {
        "tiny_classifier": {
            "source": str(path),
            "runner": "pooling",
            "dtype": "float32",
            "max_model_len": 512,
            "enforce_eager": True,
            "enable_prefix_caching": False,
            "max_num_seqs": 64,
        }
    }
