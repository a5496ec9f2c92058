"""Taxonomies: `embedding_similarity` whose labels have children, classified level by level.

Level 1 chooses among the root labels; then every text that reached a node with children is
classified among those children, all such texts in one matrix product, down to a leaf. A node's
prototypes are its own description and examples plus its descendants', so a parent is
recognised by what its children mean. Text embeddings are the window's shared ones.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from capabilities.outputs import single_label_result
from capabilities.results import CapabilityResult
from capabilities.spec import CapabilitySpec
from processors.base import ItemFailure, ItemOutcome, PerVersion, ProcessorInput, WindowContext
from processors.embedding_similarity import (
    EmbeddingSimilarityProcessor,
    LabelPrototypes,
    build_prototypes,
    prototype_texts,
)
from schemas.capability import CapabilityDefinition, LabelDefinition

# The key of the root level in a Taxonomy's levels.
ROOT = ""


@dataclass(frozen=True)
class Taxonomy:
    """Each node with children (ROOT for the top) -> the prototypes of its children."""

    levels: Mapping[str, LabelPrototypes]


@dataclass
class Route:
    """One text's way down the tree: the chosen nodes, and each level's confidence."""

    path: list[str] = dataclasses.field(default_factory=list)
    confidences: list[float] = dataclasses.field(default_factory=list)
    top: np.ndarray | None = None  # the level-1 distribution


def parents(
    labels: Sequence[LabelDefinition], key: str = ROOT
) -> dict[str, tuple[LabelDefinition, ...]]:
    """Every node with children (ROOT for the top level) -> its children."""
    found = {key: tuple(labels)}
    for label in labels:
        if label.children:
            found.update(parents(label.children, label.name))
    return found


def build_taxonomy(
    definition: CapabilityDefinition,
    levels: Mapping[str, tuple[LabelDefinition, ...]],
    vector_of: Mapping[str, np.ndarray],
) -> Taxonomy:
    """Prototypes per level from the embeddings of every text of the tree."""
    built = {}
    for parent, children in levels.items():
        texts = prototype_texts(children)
        vectors = np.stack([vector_of[p.text] for p in texts])
        built[parent] = build_prototypes(definition, texts, vectors)
    return Taxonomy(built)


def route(taxonomy: Taxonomy, vectors: np.ndarray) -> list[Route]:
    """Every text's path, one matrix product per node reached (its texts batched)."""
    routes = [Route() for _ in range(len(vectors))]
    frontier: dict[str, list[int]] = {ROOT: list(range(len(vectors)))}
    while frontier:
        reached: dict[str, list[int]] = {}
        for parent, rows in frontier.items():
            level = taxonomy.levels[parent]
            probabilities = level.probabilities(vectors[rows])
            for row, distribution in zip(rows, probabilities, strict=True):
                chosen = int(np.argmax(distribution))
                name = level.names[chosen]
                routes[row].path.append(name)
                routes[row].confidences.append(float(distribution[chosen]))
                if parent == ROOT:
                    routes[row].top = distribution
                if name in taxonomy.levels:
                    reached.setdefault(name, []).append(row)
        frontier = reached
    return routes


def taxonomy_result(spec: CapabilitySpec, root: LabelPrototypes, way: Route) -> CapabilityResult:
    """The deepest node as the label, the path's probability as the confidence; the level-1
    distribution as the probabilities (with label values and top-two fields, if asked)."""
    assert way.top is not None
    probabilities = {name: float(p) for name, p in zip(root.names, way.top, strict=True)}
    levels = [
        {"label": name, "confidence": round(confidence, 6)}
        for name, confidence in zip(way.path, way.confidences, strict=True)
    ]
    result = single_label_result(spec, probabilities, {"levels": levels, **root.details()})
    return dataclasses.replace(
        result,
        label=way.path[-1],
        confidence=float(np.prod(way.confidences)),
        path=tuple(way.path),
    )


class TaxonomyProcessor:
    kind = "embedding_similarity"

    def __init__(self, similarity: EmbeddingSimilarityProcessor) -> None:
        self.similarity = similarity
        self._taxonomies: PerVersion[Taxonomy] = PerVersion()

    async def taxonomy(self, spec: CapabilitySpec) -> Taxonomy:
        """Every level's prototypes: once per version, each text of the tree embedded once."""

        async def build() -> Taxonomy:
            levels = parents(spec.labels)
            texts = list(
                dict.fromkeys(p.text for ch in levels.values() for p in prototype_texts(ch))
            )
            vectors = await self.similarity.embed_all(texts, f"the labels of '{spec.name}'")
            vector_of = dict(zip(texts, vectors, strict=True))
            return await asyncio.to_thread(build_taxonomy, spec.definition, levels, vector_of)

        return await self._taxonomies.get(spec, build)

    async def run(
        self, spec: CapabilitySpec, inputs: Sequence[ProcessorInput], context: WindowContext
    ) -> list[ItemOutcome]:
        taxonomy = await self.taxonomy(spec)
        vectors = await self.similarity.text_vectors(inputs, context)
        ok = [v for v in vectors if isinstance(v, np.ndarray)]
        ways = iter(route(taxonomy, np.stack(ok)) if ok else [])
        root = taxonomy.levels[ROOT]
        outcomes: list[ItemOutcome] = [
            vector if isinstance(vector, ItemFailure) else taxonomy_result(spec, root, next(ways))
            for vector in vectors
        ]
        return await self.similarity.refuse_overflow(spec, inputs, outcomes)
