"""The `embedding_similarity` processor: zero-shot labels by cosine similarity of embeddings.

Each label stands for its description (or its name) plus its examples: the best-matching one
(`prototype: nearest`) or their renormalised mean (`prototype: centroid`). Their embeddings are
computed once per capability version. A text's embedding is computed once per window and model,
and shared by every embedding capability of that window that uses the same model.

With `calibrate: true` and enough examples, the softmax temperature is fitted once per version
by leave-one-out over the examples, so that the probabilities mean what they say.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from capabilities.outputs import single_label_result
from capabilities.spec import CapabilitySpec
from processors.base import ItemFailure, ItemOutcome, PerVersion, ProcessorInput, WindowContext
from processors.engine_status import EngineUnavailableError
from processors.engines import Engine
from processors.overflow import overflowing, refuse
from schemas.capability import CapabilityDefinition, LabelDefinition

log = logging.getLogger(__name__)

# Temperatures calibration chooses from: cosine similarities of one text to different labels
# differ by hundredths to tenths, so the useful range spans a few hundredths around 0.05.
TEMPERATURE_GRID = tuple(float(t) for t in np.geomspace(0.005, 1.0, 48))
# Calibration needs this many examples per label on average, or the fit is noise.
MIN_EXAMPLES_PER_LABEL = 2.0


def unit_vector(vector: Sequence[float] | np.ndarray) -> np.ndarray:
    array = np.asarray(vector, dtype=np.float32)
    unit: np.ndarray = array / max(float(np.linalg.norm(array)), 1e-12)
    return unit


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    rows: np.ndarray = (matrix / norms).astype(np.float32)
    return rows


def softmax_rows(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    weights = np.exp(shifted)
    probabilities: np.ndarray = weights / weights.sum(axis=1, keepdims=True)
    return probabilities


@dataclass(frozen=True)
class PrototypeText:
    """A text that stands for a label. `example`: it may be left out to test the others (a
    label's own description never is, so no label is ever left with nothing)."""

    owner: str
    text: str
    example: bool


def prototype_texts(labels: Sequence[LabelDefinition]) -> list[PrototypeText]:
    """Each label's description (or name) and examples, then its descendants' (a taxonomy's
    node is recognised by what its children mean too)."""
    texts: list[PrototypeText] = []

    def add(owner: str, label: LabelDefinition, own: bool) -> None:
        description = label.description or label.name.replace("_", " ")
        texts.append(PrototypeText(owner, description, example=not own))
        texts.extend(PrototypeText(owner, example, True) for example in label.examples)
        for child in label.children:
            add(owner, child, own=False)

    for label in labels:
        add(label.name, label, own=True)
    return texts


def label_prototypes(spec: CapabilitySpec) -> list[tuple[str, str]]:
    """(label, text) pairs whose embeddings stand for each label."""
    return [(p.owner, p.text) for p in prototype_texts(spec.labels)]


def best_per_label(similarities: np.ndarray, owners: np.ndarray, labels: int) -> np.ndarray:
    """Each label's best similarity: (texts, prototypes) -> (texts, labels)."""
    best = np.full((similarities.shape[0], labels), -np.inf, dtype=np.float32)
    for label in range(labels):
        columns = similarities[:, owners == label]
        if columns.shape[1]:
            best[:, label] = columns.max(axis=1)
    return best


def centroids(owners: np.ndarray, vectors: np.ndarray, labels: int) -> np.ndarray:
    """Each label's renormalised mean prototype."""
    sums = np.zeros((labels, vectors.shape[1]), dtype=np.float64)
    np.add.at(sums, owners, vectors)
    return unit_rows(sums)


def leave_one_out_scores(
    owners: np.ndarray, vectors: np.ndarray, examples: np.ndarray, labels: int, prototype: str
) -> np.ndarray:
    """Label similarities of each example to the prototypes built without it: (examples,
    labels). Only the example's own label changes when it is left out."""
    chosen = np.flatnonzero(examples)
    queries = vectors[chosen]
    if prototype == "centroid":
        sums = np.zeros((labels, vectors.shape[1]), dtype=np.float64)
        np.add.at(sums, owners, vectors)
        scores = queries @ unit_rows(sums).T
        own = unit_rows(sums[owners[chosen]] - queries)
        scores[np.arange(len(chosen)), owners[chosen]] = np.sum(queries * own, axis=1)
        result: np.ndarray = scores.astype(np.float32)
        return result
    similarities = queries @ vectors.T
    similarities[np.arange(len(chosen)), chosen] = -np.inf
    return best_per_label(similarities, owners, labels)


def fit_temperature(
    scores: np.ndarray, gold: np.ndarray, grid: Sequence[float] = TEMPERATURE_GRID
) -> float:
    """The grid temperature whose softmax gives the gold labels the lowest mean negative
    log-likelihood."""
    logits = scores.astype(np.float64)
    nll = []
    for temperature in grid:
        scaled = logits / temperature
        top = scaled.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(scaled - top).sum(axis=1)) + top[:, 0]
        nll.append(float(np.mean(log_norm - scaled[np.arange(len(gold)), gold])))
    return float(grid[int(np.argmin(nll))])


@dataclass(frozen=True)
class LabelPrototypes:
    """The labels of one level, as prototype vectors, with the temperature in force."""

    names: tuple[str, ...]
    owners: np.ndarray  # the label index of each row of `matrix`
    matrix: np.ndarray  # (prototypes, dim), unit rows
    temperature: float
    calibrated: bool

    def probabilities(self, texts: np.ndarray) -> np.ndarray:
        """(texts, dim) unit rows -> (texts, labels) probabilities."""
        return self.probabilities_from(texts @ self.matrix.T)

    def probabilities_from(self, similarities: np.ndarray) -> np.ndarray:
        scores = best_per_label(similarities, self.owners, len(self.names))
        return softmax_rows(scores / self.temperature)

    def details(self) -> dict[str, Any]:
        return {"temperature": round(self.temperature, 6), "calibrated": self.calibrated}


def build_prototypes(
    definition: CapabilityDefinition, texts: Sequence[PrototypeText], vectors: np.ndarray
) -> LabelPrototypes:
    """The level's prototypes (one per text, or one centroid per label) and its temperature:
    fitted when the definition asks for calibration and the examples are enough."""
    names = tuple(dict.fromkeys(p.owner for p in texts))
    owners = np.array([names.index(p.owner) for p in texts], dtype=np.int64)
    examples = np.array([p.example for p in texts], dtype=bool)
    temperature, calibrated = definition.temperature, False
    if definition.calibrate and examples.sum() >= MIN_EXAMPLES_PER_LABEL * len(names):
        scores = leave_one_out_scores(owners, vectors, examples, len(names), definition.prototype)
        temperature, calibrated = fit_temperature(scores, owners[examples]), True
    if definition.prototype == "centroid":
        matrix = centroids(owners, vectors, len(names))
        owners = np.arange(len(names), dtype=np.int64)
    else:
        matrix = vectors.astype(np.float32)
    return LabelPrototypes(names, owners, matrix, temperature, calibrated)


def similarity_probabilities(
    spec: CapabilitySpec, owners: list[str], similarities: np.ndarray
) -> np.ndarray:
    """Softmax over each label's best-matching prototype at the definition's temperature, one
    row per text (for clients that hold the prototypes' similarities only)."""
    names = list(spec.label_names)
    columns = np.array([names.index(owner) for owner in owners], dtype=np.int64)
    best = best_per_label(similarities, columns, len(names))
    return softmax_rows(best / spec.definition.temperature)


class EmbeddingSimilarityProcessor:
    kind = "embedding_similarity"

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._prototypes: PerVersion[LabelPrototypes] = PerVersion()

    async def embed_texts(
        self, texts: Sequence[str], context: WindowContext | None = None
    ) -> list[np.ndarray | ItemFailure]:
        """A unit-length embedding per text, or that text's failure. With a window's `context`,
        a text's request is cancelled (aborted in the engine) when the text is abandoned; its
        outcome is then ItemAbandoned."""
        token_ids = await self.engine.tokenize(texts, truncate_to=self.engine.max_model_len)
        window = WindowContext() if context is None else context
        vectors = await asyncio.gather(
            *(
                window.unless_abandoned(text, partial(self.engine.embed, ids))
                for text, ids in zip(texts, token_ids, strict=True)
            ),
            return_exceptions=True,
        )
        return [
            ItemFailure.from_exception(v) if isinstance(v, BaseException) else unit_vector(v)
            for v in vectors
        ]

    async def embed_all(self, texts: Sequence[str], what: str) -> np.ndarray:
        """Embeddings of the texts a capability brings (descriptions, examples), stacked; any
        failure fails the capability, whose labels would be incomplete. `what` names them."""
        vectors = await self.embed_texts(texts)
        failures = {v.reason for v in vectors if isinstance(v, ItemFailure)}
        if EngineUnavailableError.__name__ in failures:  # down or restarting: a 503, not a 500
            raise EngineUnavailableError(self.engine.name)
        if failures:
            raise RuntimeError(f"embeddings of {what} failed on the engine")
        return np.stack([v for v in vectors if isinstance(v, np.ndarray)])

    async def text_vectors(
        self, inputs: Sequence[ProcessorInput], context: WindowContext
    ) -> list[np.ndarray | ItemFailure]:
        """The texts' embeddings, computed once per window for every embedding capability."""
        texts = [item.text for item in inputs]
        return await context.shared(
            f"embedding:{self.engine.name}", texts, partial(self.embed_texts, context=context)
        )

    async def prototypes(self, spec: CapabilitySpec) -> LabelPrototypes:
        """The labels' prototypes and temperature: once per version."""

        async def build() -> LabelPrototypes:
            texts = prototype_texts(spec.labels)
            vectors = await self.embed_all([p.text for p in texts], f"the labels of '{spec.name}'")
            # Calibration scores every example against the others: off the event loop.
            built = await asyncio.to_thread(build_prototypes, spec.definition, texts, vectors)
            if built.calibrated:
                log.info("'%s': calibrated temperature %.4g", spec.name, built.temperature)
            return built

        return await self._prototypes.get(spec, build)

    async def run(
        self, spec: CapabilitySpec, inputs: Sequence[ProcessorInput], context: WindowContext
    ) -> list[ItemOutcome]:
        prototypes = await self.prototypes(spec)
        vectors = await self.text_vectors(inputs, context)
        ok = [v for v in vectors if isinstance(v, np.ndarray)]
        rows: Iterator[tuple[np.ndarray, np.ndarray]] = iter(())
        if ok:
            similarities = np.stack(ok) @ prototypes.matrix.T  # (texts, prototypes)
            probabilities = prototypes.probabilities_from(similarities)
            rows = iter(zip(probabilities, similarities, strict=True))
        outcomes: list[ItemOutcome] = []
        for vector in vectors:
            if isinstance(vector, ItemFailure):
                outcomes.append(vector)
                continue
            row, similarity = next(rows)
            details = {"similarity": round(float(similarity.max()), 4), **prototypes.details()}
            outcomes.append(
                single_label_result(
                    spec,
                    {name: float(p) for name, p in zip(prototypes.names, row, strict=True)},
                    details,
                )
            )
        return await self.refuse_overflow(spec, inputs, outcomes)

    async def refuse_overflow(
        self, spec: CapabilitySpec, inputs: Sequence[ProcessorInput], outcomes: list[ItemOutcome]
    ) -> list[ItemOutcome]:
        """The texts' embeddings are truncated to the model's context: a capability that
        refuses that fails the texts over it (see processors/overflow.py)."""
        over = await overflowing(self.engine, spec, [item.text for item in inputs])
        return refuse(outcomes, over)
