"""The `embedding_similarity` processor: zero-shot labels by cosine similarity of embeddings.

Each label stands for its description (or its name) plus its examples. Their embeddings are
computed once per capability version. A text's embedding is computed once per window and model,
and shared by every embedding capability of that window that uses the same model.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence

import numpy as np

from capabilities.outputs import single_label_result
from capabilities.spec import CapabilitySpec
from processors.base import ItemFailure, ItemOutcome, PerVersion, ProcessorInput, WindowContext
from processors.engines import Engine


def unit_vector(vector: Sequence[float]) -> np.ndarray:
    array = np.asarray(vector, dtype=np.float32)
    unit: np.ndarray = array / max(float(np.linalg.norm(array)), 1e-12)
    return unit


def label_prototypes(spec: CapabilitySpec) -> list[tuple[str, str]]:
    """(label, text) pairs whose embeddings stand for each label."""
    pairs = []
    for label in spec.labels:
        pairs.append((label.name, label.description or label.name.replace("_", " ")))
        pairs.extend((label.name, example) for example in label.examples)
    return pairs


def similarity_probabilities(
    spec: CapabilitySpec, owners: list[str], similarities: np.ndarray
) -> np.ndarray:
    """Softmax over each label's best-matching prototype, one row per text."""
    names = list(spec.label_names)
    best = np.full((similarities.shape[0], len(names)), -1.0, dtype=np.float32)
    for column, owner in enumerate(owners):
        index = names.index(owner)
        best[:, index] = np.maximum(best[:, index], similarities[:, column])
    logits = best / spec.definition.temperature
    logits -= logits.max(axis=1, keepdims=True)
    weights = np.exp(logits)
    probabilities: np.ndarray = weights / weights.sum(axis=1, keepdims=True)
    return probabilities


class EmbeddingSimilarityProcessor:
    kind = "embedding_similarity"

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._label_vectors: PerVersion[tuple[list[str], np.ndarray]] = PerVersion()

    async def embed_texts(self, texts: Sequence[str]) -> list[np.ndarray | ItemFailure]:
        """A unit-length embedding per text, or that text's failure."""
        token_ids = await self.engine.tokenize(texts, truncate_to=self.engine.max_model_len)
        vectors = await asyncio.gather(
            *(self.engine.embed(ids) for ids in token_ids), return_exceptions=True
        )
        return [
            ItemFailure.from_exception(v) if isinstance(v, BaseException) else unit_vector(v)
            for v in vectors
        ]

    async def label_vectors(self, spec: CapabilitySpec) -> tuple[list[str], np.ndarray]:
        """Each prototype's label, and the prototypes' embeddings: once per version."""

        async def build() -> tuple[list[str], np.ndarray]:
            pairs = label_prototypes(spec)
            vectors = await self.embed_texts([text for _, text in pairs])
            if any(isinstance(v, ItemFailure) for v in vectors):
                raise RuntimeError(f"label embeddings of '{spec.name}' failed on the engine")
            matrix = np.stack([v for v in vectors if isinstance(v, np.ndarray)])
            return [label for label, _ in pairs], matrix

        return await self._label_vectors.get(spec, build)

    async def run(
        self, spec: CapabilitySpec, inputs: Sequence[ProcessorInput], context: WindowContext
    ) -> list[ItemOutcome]:
        owners, prototypes = await self.label_vectors(spec)
        vectors = await context.shared(
            f"embedding:{self.engine.name}", [item.text for item in inputs], self.embed_texts
        )
        ok = [v for v in vectors if isinstance(v, np.ndarray)]
        rows: Iterator[tuple[np.ndarray, np.ndarray]] = iter(())
        if ok:
            similarities = np.stack(ok) @ prototypes.T  # (texts, prototypes)
            probabilities = similarity_probabilities(spec, owners, similarities)
            rows = iter(zip(probabilities, similarities, strict=True))
        outcomes: list[ItemOutcome] = []
        for vector in vectors:
            if isinstance(vector, ItemFailure):
                outcomes.append(vector)
                continue
            row, similarity = next(rows)
            outcomes.append(
                single_label_result(
                    spec,
                    {name: float(p) for name, p in zip(spec.label_names, row, strict=True)},
                    {"similarity": round(float(similarity.max()), 4)},
                )
            )
        return outcomes
