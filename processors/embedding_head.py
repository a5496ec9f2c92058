"""The head processor: a logistic regression over the shared text embedding, one label per
text (`embedding_head`) or each label on its own (`embedding_multilabel`).

The head is ready once per capability version, at first use (the warm-up's, so at load time):
the head `capserve train` saved beside the YAML when it was trained for this version, or else
one fitted on the spot. Texts are embedded once per window for every embedding capability.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import numpy as np

from capabilities.outputs import multilabel_result, single_label_result
from capabilities.results import CapabilityResult
from capabilities.spec import CapabilitySpec
from processors.base import ItemFailure, ItemOutcome, PerVersion, ProcessorInput, WindowContext
from processors.embedding_similarity import EmbeddingSimilarityProcessor
from processors.head_training import Head, embedded_examples, fit_head, load_saved_head

log = logging.getLogger(__name__)


def head_result(
    spec: CapabilitySpec, head: Head, row: np.ndarray, details: dict[str, object] | None = None
) -> CapabilityResult:
    """The result of one text from its row of `head.probabilities`."""
    probabilities = {name: float(p) for name, p in zip(head.classes, row.tolist(), strict=True)}
    if head.multilabel:
        return multilabel_result(spec, probabilities, details)
    return single_label_result(spec, probabilities, details)


class EmbeddingHeadProcessor:
    kind = "embedding_head"

    def __init__(self, similarity: EmbeddingSimilarityProcessor) -> None:
        self.similarity = similarity
        self._heads: PerVersion[Head] = PerVersion()

    async def head(self, spec: CapabilitySpec) -> Head:
        """The saved head of this version, or one fitted now: once per version."""

        async def embed(texts: Sequence[str]) -> np.ndarray:
            return await self.similarity.embed_all(texts, f"the examples of '{spec.name}'")

        async def build() -> Head:
            saved = await asyncio.to_thread(load_saved_head, spec)
            if saved is not None:
                log.info("'%s': loaded the saved head (%d examples)", spec.name, saved.examples)
                return saved
            vectors, examples = await embedded_examples(spec, embed)
            head = await asyncio.to_thread(fit_head, spec, vectors, examples)
            log.info("'%s': trained a head on %d examples", spec.name, head.examples)
            return head

        return await self._heads.get(spec, build)

    async def run(
        self, spec: CapabilitySpec, inputs: Sequence[ProcessorInput], context: WindowContext
    ) -> list[ItemOutcome]:
        head = await self.head(spec)
        vectors = await self.similarity.text_vectors(inputs, context)
        ok = [v for v in vectors if isinstance(v, np.ndarray)]
        rows = iter(head.probabilities(np.stack(ok)) if ok else [])
        details = {"head": "logistic_regression", "examples": head.examples}
        outcomes: list[ItemOutcome] = []
        for vector in vectors:
            if isinstance(vector, ItemFailure):
                outcomes.append(vector)
                continue
            outcomes.append(head_result(spec, head, next(rows), details))
        return await self.similarity.refuse_overflow(spec, inputs, outcomes)
