"""What the peer pipeline computes in the client, with capserve's own functions, so its results
mean what capserve's mean: regex matches, formulas, conditions and skips, taxonomy routing.

No server call happens here: embeddings come in as vectors (the server's, any length; they are
made unit length here as capserve's embedding processors make theirs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from capabilities.formulas import evaluate_formula
from capabilities.results import CapabilityResult
from capabilities.spec import CapabilitySpec
from processors.embedding_similarity import prototype_texts, unit_vector
from processors.regex import RegexProcessor, match_text
from processors.taxonomy import ROOT, Taxonomy, build_taxonomy, parents, route, taxonomy_result
from server.execution.executor import PlanExecutor


def skipped_result(
    spec: CapabilitySpec, deps: Mapping[str, CapabilityResult]
) -> CapabilityResult | None:
    """The skipped result the server gives a text with these dependency results (its `when`
    does not hold, or a dependency was skipped or in error), or None when the capability runs."""
    # The executor's own rule, so both systems skip the same texts for the same reasons.
    reason = PlanExecutor.skip_reason(spec, deps)
    return None if reason is None else CapabilityResult.skip(spec.name, spec.version, reason)


class RegexMatcher:
    """`regex` results with the server's matching; patterns compiled once per version."""

    def __init__(self) -> None:
        self._processor = RegexProcessor()  # only its compiled-pattern cache is used

    def result(self, spec: CapabilitySpec, text: str) -> CapabilityResult:
        return match_text(spec, self._processor.matchers(spec), text)


def formula_result(spec: CapabilitySpec, deps: Mapping[str, CapabilityResult]) -> CapabilityResult:
    return evaluate_formula(spec, deps)


def is_taxonomy(spec: CapabilitySpec) -> bool:
    """An `embedding_similarity` whose labels have children (the server's TaxonomyProcessor)."""
    return spec.kind == "embedding_similarity" and any(label.children for label in spec.labels)


def taxonomy_texts(spec: CapabilitySpec) -> list[str]:
    """Every prototype text of the tree, each once: what is embedded when the peer starts."""
    levels = parents(spec.labels)
    return list(dict.fromkeys(p.text for ch in levels.values() for p in prototype_texts(ch)))


def peer_taxonomy(
    spec: CapabilitySpec, texts: Sequence[str], vectors: Sequence[Sequence[float]]
) -> Taxonomy:
    """Every node's prototypes from the embeddings of `taxonomy_texts(spec)`."""
    vector_of = {text: unit_vector(v) for text, v in zip(texts, vectors, strict=True)}
    return build_taxonomy(spec.definition, parents(spec.labels), vector_of)


def taxonomy_results(
    spec: CapabilitySpec, taxonomy: Taxonomy, vectors: Sequence[Sequence[float]]
) -> list[CapabilityResult]:
    """Each text's path down the tree, its texts batched per node as the server batches them."""
    if not vectors:
        return []
    ways = route(taxonomy, np.stack([unit_vector(v) for v in vectors]))
    return [taxonomy_result(spec, taxonomy.levels[ROOT], way) for way in ways]
