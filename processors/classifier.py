"""The `classifier` processor: a sequence-classification model on vLLM's pooling runner.

The capability's labels are the model's (config.json id2label, in index order; the loader
fills them in or checks them), so the engine's i-th score belongs to the i-th label. The engine
returns raw scores and they are turned into probabilities here with a softmax: one
single-label distribution whatever activation the model's config would pick.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from functools import partial

from capabilities.outputs import single_label_result
from capabilities.spec import CapabilitySpec
from processors.base import ItemFailure, ItemOutcome, ProcessorInput, WindowContext
from processors.engines import Engine
from processors.overflow import overflowing, refuse


class LabelCountError(ValueError):
    """The model scores a different number of labels than the capability lists."""


def softmax(scores: Sequence[float]) -> list[float]:
    top = max(scores)
    weights = [math.exp(score - top) for score in scores]
    total = sum(weights)
    return [weight / total for weight in weights]


def label_probabilities(spec: CapabilitySpec, scores: Sequence[float]) -> dict[str, float]:
    if len(scores) != len(spec.labels):
        raise LabelCountError(f"{len(scores)} scores for {len(spec.labels)} labels")
    return dict(zip(spec.label_names, softmax(scores), strict=True))


class ClassifierProcessor:
    kind = "classifier"

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def run(
        self, spec: CapabilitySpec, inputs: Sequence[ProcessorInput], context: WindowContext
    ) -> list[ItemOutcome]:
        token_ids = await self.engine.tokenize(
            [item.text for item in inputs], truncate_to=self.engine.max_model_len
        )
        # Every text at once: the engine batches them. A text's request is cancelled (aborted
        # in the engine) when no waiting caller needs the text any more.
        scores = await asyncio.gather(
            *(
                context.unless_abandoned(item.text, partial(self.engine.classify, ids))
                for item, ids in zip(inputs, token_ids, strict=True)
            ),
            return_exceptions=True,
        )
        outcomes: list[ItemOutcome] = []
        for item_scores in scores:
            try:
                if isinstance(item_scores, BaseException):
                    raise item_scores
                probabilities = label_probabilities(spec, item_scores)
                outcomes.append(single_label_result(spec, probabilities))
            except Exception as exc:
                outcomes.append(ItemFailure.from_exception(exc))
        over = await overflowing(self.engine, spec, [item.text for item in inputs])
        return refuse(outcomes, over)
