"""The `embedding_similarity` processor: zero-shot labels by cosine similarity of embeddings.

Each label stands for its description (or its name) plus its examples. Their embeddings are
computed once per capability version. A text's embedding is computed once per window and model,
and shared by every embedding capability of that window that uses the same model.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np

from capabilities.results import CapabilityResult, result_from_probabilities
from capabilities.spec import CapabilitySpec
from processors.base import ProcessorInput, WindowContext
from processors.engines import Engine


def _unit_rows(vectors: Sequence[Sequence[float]]) -> np.ndarray:
    matrix = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    unit: np.ndarray = matrix / np.maximum(norms, 1e-12)
    return unit


def label_prototypes(spec: CapabilitySpec) -> list[tuple[str, str]]:
    """(label, text) pairs whose embeddings stand for each label."""
    pairs = []
    for label in spec.labels:
        pairs.append((label.name, label.description or label.name.replace("_", " ")))
        pairs.extend((label.name, example) for example in label.examples)
    return pairs


class EmbeddingSimilarityProcessor:
    kind = "embedding_similarity"

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._label_vectors: dict[tuple[str, str], tuple[list[str], np.ndarray]] = {}
        self._label_locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length embeddings, one row per text."""
        token_ids = await self.engine.tokenize(texts, truncate_to=self.engine.max_model_len)
        vectors = await asyncio.gather(*(self.engine.embed(ids) for ids in token_ids))
        return _unit_rows(vectors)

    async def label_vectors(self, spec: CapabilitySpec) -> tuple[list[str], np.ndarray]:
        key = (spec.name, spec.version)
        lock = self._label_locks.setdefault(key, asyncio.Lock())
        async with lock:
            if key not in self._label_vectors:
                pairs = label_prototypes(spec)
                vectors = await self.embed_texts([text for _, text in pairs])
                self._label_vectors[key] = ([label for label, _ in pairs], vectors)
        return self._label_vectors[key]

    async def run(
        self, spec: CapabilitySpec, inputs: Sequence[ProcessorInput], context: WindowContext
    ) -> list[CapabilityResult]:
        owners, prototypes = await self.label_vectors(spec)
        texts = await context.shared(
            f"embedding:{self.engine.name}", [item.text for item in inputs], self.embed_texts
        )
        similarities = np.stack(texts) @ prototypes.T  # (texts, prototypes)
        names = list(spec.label_names)
        best = np.full((len(inputs), len(names)), -1.0, dtype=np.float32)
        for column, owner in enumerate(owners):
            index = names.index(owner)
            best[:, index] = np.maximum(best[:, index], similarities[:, column])
        logits = best / spec.definition.temperature
        logits -= logits.max(axis=1, keepdims=True)
        weights = np.exp(logits)
        probabilities = weights / weights.sum(axis=1, keepdims=True)
        return [
            result_from_probabilities(
                spec.name,
                spec.version,
                {name: float(p) for name, p in zip(names, row, strict=True)},
                {"similarity": round(float(row_best.max()), 4)},
            )
            for row, row_best in zip(probabilities, best, strict=True)
        ]
