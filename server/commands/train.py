"""`capserve train NAME`: fits a head capability (`embedding_head`, `embedding_multilabel`) and
saves its head beside the YAML.

Starts only the capability's embedding engine, embeds the examples, prints the 5-fold stratified
cross-validated accuracy on them (each label's F1 for a multilabel head), fits the head on all
of them and adds it to `<name>.head.json` (classes, coefficients, intercepts, and the capability
version it was trained for; the file keeps the heads of a few versions, so that one trained on
bfloat16 and one on float32 machines live side by side). The server then loads the head of its
version at first use instead of training it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

import numpy as np

from capabilities.loader import CapabilityConfigError
from capabilities.registry import UnknownCapabilityError
from capabilities.spec import CapabilitySpec
from processors.embedding_similarity import EmbeddingSimilarityProcessor
from processors.engines import apply_engine_env
from processors.head_training import (
    TrainingDataError,
    cross_validation_report,
    fit_head,
    head_path,
    save_head,
    training_set,
)
from processors.model_store import ModelNotReadyError
from processors.pool import ProcessorPool
from schemas.capability import HEAD_KINDS
from schemas.config import CapServeConfig
from server.registry_loading import load_registry
from server.settings import load_config


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the embedding_head or embedding_multilabel capability")


async def embed_on_model(
    config: CapServeConfig, model: str, texts: Sequence[str], what: str
) -> np.ndarray:
    """Unit embeddings of texts from one model, on its own engine (started, then stopped)."""
    assert config.models_dir is not None
    apply_engine_env(config.engine_env)
    pool = ProcessorPool({model: config.models[model]}, config.models_dir)
    await pool.start()
    try:
        return await EmbeddingSimilarityProcessor(pool.engines[model]).embed_all(texts, what)
    finally:
        await asyncio.to_thread(pool.stop)


async def train(config: CapServeConfig, spec: CapabilitySpec) -> str:
    """Trains and saves the head; returns the line that reports it."""
    assert spec.model is not None
    # The examples are checked before any engine starts.
    examples = await asyncio.to_thread(training_set, spec)
    what = f"the examples of '{spec.name}'"
    vectors = await embed_on_model(config, spec.model, examples.texts, what)
    report = await asyncio.to_thread(cross_validation_report, spec, vectors, examples)
    head = await asyncio.to_thread(fit_head, spec, vectors, examples)
    path = head_path(spec)
    await asyncio.to_thread(save_head, path, head)
    return (
        f"{spec.name}: {report} on {len(examples.texts)} examples; "
        f"head for version {spec.version} written to {path}"
    )


def run_train(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    try:
        spec = load_registry(config).get(args.name)
    except (CapabilityConfigError, UnknownCapabilityError) as exc:
        print(f"capserve train: {exc}", file=sys.stderr)
        return 2
    if spec.kind not in HEAD_KINDS:
        print(
            f"capserve train: '{spec.name}' is of kind {spec.kind}; only "
            f"{' and '.join(HEAD_KINDS)} train",
            file=sys.stderr,
        )
        return 2
    try:
        line = asyncio.run(train(config, spec))
    except TrainingDataError as exc:
        print(f"capserve train: {exc}", file=sys.stderr)
        return 1
    except ModelNotReadyError as exc:
        print(f"capserve train: {exc}", file=sys.stderr)
        return 2
    print(line)
    return 0
