"""`capserve eval FILE.jsonl`: how accurate the capabilities are, on the real engines.

The file is read and checked against the capability registry before any engine starts (a bad
row exits with code 1, naming its line and capability). Then the engines start in-process,
every row is sent as its own `classify` call, all of them at once (up to --concurrency), so the
batcher's windows merge them as they would merge live traffic; a capability that fails on a row
is counted as an error of that row, and the other capabilities of the row still run.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from bench.run import write_result
from capabilities.loader import CapabilityConfigError
from capabilities.registry import CapabilityRegistry
from capabilities.results import CapabilityResult
from evaluation.dataset import (
    SPLITS,
    DatasetError,
    EvalRow,
    Gold,
    LabelSpace,
    label_space,
    load_dataset,
)
from evaluation.metrics import (
    Metrics,
    count_metrics,
    multilabel_metrics,
    score_metrics,
    single_label_metrics,
    taxonomy_metrics,
)
from evaluation.report import CapabilityReport, EvalReport, RowError, format_report, report_json
from processors.model_store import ModelNotReadyError
from schemas.config import CapServeConfig
from server.execution.pipeline import CapabilityFailedError
from server.registry_loading import model_fingerprints
from server.runtime import Pool, RequestTimeoutError, Runtime
from server.settings import load_config
from server.validation import RequestRejectedError

Prediction = str | None | frozenset[str] | float
PROGRESS_EVERY = 25


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="labeled JSONL: one {text, labels, split} a line")
    parser.add_argument(
        "--capability",
        dest="capabilities",
        action="append",
        default=None,
        metavar="NAME",
        help="evaluate only this capability (repeatable; default: every one the file labels)",
    )
    parser.add_argument(
        "--layout",
        choices=("shared", "own"),
        default=None,
        help="force every LLM question into this layout (default: each capability's own)",
    )
    parser.add_argument("--split", choices=SPLITS, default=None, help="only the rows of a split")
    parser.add_argument(
        "--concurrency", type=int, default=32, help="rows in flight at once (default: 32)"
    )
    parser.add_argument("--output", type=Path, default=None, help="write the result as JSON here")


def eval_config(config: CapServeConfig, layout: str | None) -> CapServeConfig:
    """The configuration the evaluation runs with: the layout forced when asked, no warm-up
    (it only costs time), no result cache (every answer is computed, nothing is shared)."""
    config = config.model_copy(deep=True)
    if layout is not None:
        config.prompting = config.prompting.model_copy(update={"layout_override": layout})
    config.server.warmup = False
    config.cache.enabled = False
    return config


def label_spaces(registry: CapabilityRegistry) -> dict[str, LabelSpace | None]:
    return {spec.name: label_space(spec) for spec in registry.specs()}


def prediction_of(space: LabelSpace, result: CapabilityResult) -> Prediction:
    if space.form == "multilabel":
        return frozenset(result.labels or ())
    if space.form == "score":
        return result.score
    if space.form == "count":
        count = (result.fields or {}).get("count")
        return float(count) if isinstance(count, int | float) else None
    return result.label


@dataclass
class RowOutcome:
    line: int
    predictions: dict[str, Prediction] = field(default_factory=dict)
    errors: list[RowError] = field(default_factory=list)


async def classify_row(
    runtime: Runtime, row: EvalRow, spaces: Mapping[str, LabelSpace]
) -> RowOutcome:
    """The row's predictions; a failed capability (and what depends on it) becomes an error
    and the rest of the row is asked again without it."""
    outcome = RowOutcome(row.line)
    pending = list(row.gold)
    while pending:
        try:
            result = await runtime.classify([row.text], pending)
        except CapabilityFailedError as exc:
            failed = [n for n in pending if exc.capability in runtime.registry.resolve([n])]
            failed = failed or list(pending)  # never ask the same failing request again
            for name in failed:
                reason = exc.reason if name == exc.capability else f"{exc.capability} failed"
                outcome.errors.append(RowError(row.line, name, reason))
            pending = [n for n in pending if n not in failed]
            continue
        except (RequestRejectedError, RequestTimeoutError) as exc:
            outcome.errors += [RowError(row.line, name, str(exc)) for name in pending]
            return outcome
        for name in pending:
            predicted = prediction_of(spaces[name], result.per_text[0][name])
            if predicted is None and spaces[name].form in ("score", "count"):
                outcome.errors.append(RowError(row.line, name, "the result carries no score"))
            else:
                outcome.predictions[name] = predicted
        return outcome
    return outcome


async def classify_rows(
    runtime: Runtime, rows: Sequence[EvalRow], spaces: Mapping[str, LabelSpace], concurrency: int
) -> list[RowOutcome]:
    gate = asyncio.Semaphore(max(1, concurrency))
    done = 0

    async def one(row: EvalRow) -> RowOutcome:
        nonlocal done
        async with gate:
            outcome = await classify_row(runtime, row, spaces)
        done += 1
        if done % PROGRESS_EVERY == 0 or done == len(rows):
            print(f"capserve eval: {done}/{len(rows)} rows", file=sys.stderr, flush=True)
        return outcome

    return list(await asyncio.gather(*(one(row) for row in rows)))


def capability_metrics(
    space: LabelSpace, gold: Sequence[Gold], predicted: Sequence[Prediction]
) -> Metrics:
    if space.form == "multilabel":
        return multilabel_metrics(
            [cast("frozenset[str]", g) for g in gold],
            [cast("frozenset[str]", p) for p in predicted],
            space.labels,
        )
    if space.form == "score":
        return score_metrics([cast(float, g) for g in gold], [cast(float, p) for p in predicted])
    if space.form == "count":
        return count_metrics([cast(float, g) for g in gold], [cast(float, p) for p in predicted])
    labels = [cast(str, g) for g in gold], [cast("str | None", p) for p in predicted]
    if space.paths:
        return taxonomy_metrics(*labels, space.paths)
    return single_label_metrics(*labels, space.labels)


@dataclass(frozen=True)
class RunFacts:
    file: str
    split: str | None
    layout: str | None
    seconds: float


def build_report(
    registry: CapabilityRegistry,
    spaces: Mapping[str, LabelSpace],
    rows: Sequence[EvalRow],
    outcomes: Sequence[RowOutcome],
    facts: RunFacts,
) -> EvalReport:
    """Metrics per capability the rows label, by name."""
    labeled = {name for row in rows for name in row.gold}
    capabilities = []
    for spec in map(registry.get, sorted(labeled)):
        pairs = [
            (row.gold[spec.name], outcome.predictions[spec.name])
            for row, outcome in zip(rows, outcomes, strict=True)
            if spec.name in outcome.predictions
        ]
        metrics = None
        if pairs:
            gold, predicted = zip(*pairs, strict=True)
            metrics = capability_metrics(spaces[spec.name], gold, predicted)
        errors = sum(e.capability == spec.name for o in outcomes for e in o.errors)
        capabilities.append(
            CapabilityReport(
                spec.name, spec.kind, spaces[spec.name].form, spec.version, errors, metrics
            )
        )
    return EvalReport(
        file=facts.file,
        split=facts.split,
        layout=facts.layout,
        rows=len(rows),
        seconds=facts.seconds,
        capabilities=tuple(capabilities),
        errors=tuple(e for o in outcomes for e in o.errors),
    )


async def evaluate(
    config: CapServeConfig,
    rows: Sequence[EvalRow],
    spaces: Mapping[str, LabelSpace],
    concurrency: int,
    pool: Pool | None = None,
) -> tuple[Runtime, list[RowOutcome], float]:
    """Starts the engines (`pool`: real vLLM engines when None), classifies every row, stops
    the engines."""
    runtime = Runtime.build(config, pool)
    try:
        await runtime.start()
        started = time.perf_counter()
        outcomes = await classify_rows(runtime, rows, spaces, concurrency)
        seconds = time.perf_counter() - started
    finally:
        await runtime.stop()
    return runtime, outcomes, seconds


def run_eval(args: argparse.Namespace) -> int:
    config = eval_config(load_config(args.config), args.layout)
    try:
        registry = CapabilityRegistry.from_directory(
            config.capabilities_dir,
            {name: model.runner for name, model in config.models.items()},
            model_fingerprints(config),
            config.prompting,
        )
        all_spaces = label_spaces(registry)
        rows = load_dataset(args.file, all_spaces, args.capabilities, args.split)
    except (DatasetError, OSError, UnicodeDecodeError) as exc:
        print(f"capserve eval: {exc}", file=sys.stderr)
        return 1
    except CapabilityConfigError as exc:
        print(f"capserve eval: {exc}", file=sys.stderr)
        return 2
    spaces = {name: space for name, space in all_spaces.items() if space is not None}
    try:
        runtime, outcomes, seconds = asyncio.run(evaluate(config, rows, spaces, args.concurrency))
    except ModelNotReadyError as exc:
        print(f"capserve eval: {exc}", file=sys.stderr)
        return 2
    facts = RunFacts(str(args.file), args.split, args.layout, seconds)
    report = build_report(runtime.registry, spaces, rows, outcomes, facts)
    table = format_report(report)
    print(table)
    if args.output is not None:
        write_result(args.output, report_json(report), table)
    return 0
