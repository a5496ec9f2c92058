"""`capserve bench --against vllm-serve --limit`: the raw limit of the engines, in the same run.

For each measured round, the engine work capserve had to do for that round's requests is sent
straight to vLLM's offline `LLM` (no server, no HTTP, no batching window), with the same models,
engine arguments, dtype and core binding (`VLLM_CPU_OMP_THREADS_BIND`) as capserve's engines:

- every distinct text once through `LLM.embed`, for each embedding model the requests' closures
  use (capserve embeds a text once per window for every embedding capability);
- every distinct text's prompt of every LLM capability the closures hold, through
  `LLM.generate`, with capserve's prompts and sampling parameters (structured outputs for
  `llm_json`). A prompt's dependency results (e.g. the task type in `recommendations`' cue) are
  the ones capserve answered for that text in the round.

The engines run one after the other, each with every bound core, in a child process started
after capserve stops, so nothing else competes for the cores. The limit of a round is the
total engine time; capserve's fraction of it is limit seconds / capserve's phase seconds on the
same requests. Tokenizing is not timed (capserve's tokenizer time counts against it).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.agreement import Answer
from bench.peer import EMBEDDING_KINDS
from bench.workload import BenchRequest
from capabilities.registry import CapabilityRegistry
from capabilities.results import CapabilityResult
from processors.questions.standalone import StandaloneQuestions
from schemas.capability import QUESTION_KINDS

# max_tokens of a question prompt (one decode step) and the log-probabilities it asks for.
QUESTION_TOKENS = 1
QUESTION_LOGPROBS = 20
WORKER_TIMEOUT_S = 1800


@dataclass(frozen=True)
class LimitJob:
    """The engine work of one model: embeddings, or prompts of one capability."""

    model: str
    task: str  # "embed" | "generate"
    # generate: the prompts as token ids; embed: none (the worker tokenizes `texts` as
    # capserve's engine does, with the engine's own tokenizer and context length, untimed).
    prompts: list[list[int]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    # generate: the capability whose sampling parameters the prompts use.
    capability: str | None = None


@dataclass(frozen=True)
class RoundWork:
    """A round's engine work: its distinct texts, and each model's jobs."""

    distinct_texts: int
    jobs: list[LimitJob]


def _deps_of(answers: Mapping[str, Answer], names: Sequence[str]) -> dict[str, CapabilityResult]:
    """Dependency results rebuilt from capserve's answers (what a cue template reads)."""
    deps = {}
    for name in names:
        answer = answers.get(name)
        deps[name] = CapabilityResult(
            capability=name,
            version="",
            label=answer if isinstance(answer, str) else None,
            confidence=1.0,
            probabilities={},
            score=answer if isinstance(answer, float) else None,
            labels=tuple(sorted(answer)) if isinstance(answer, frozenset) else None,
        )
    return deps


def limit_jobs(
    registry: CapabilityRegistry,
    questions: StandaloneQuestions,
    workload: Sequence[BenchRequest],
    answers: Mapping[str, Mapping[str, Answer]],
) -> RoundWork:
    """The round's engine work; `answers`: capserve's answers of the round, by text."""
    needed: dict[str, set[str]] = {}  # distinct text -> every capability its requests need
    for item in workload:
        closure = registry.resolve(item.capabilities)
        for text in item.texts:
            needed.setdefault(text, set()).update(closure)
    embeds: dict[str, list[str]] = {}
    prompts: dict[str, list[list[int]]] = {}
    for text, names in needed.items():
        specs = [registry.get(name) for name in names]
        models = {s.model for s in specs if s.kind in EMBEDDING_KINDS and s.model is not None}
        for model in sorted(models):
            embeds.setdefault(model, []).append(text)
        for name in sorted(names):
            spec = registry.get(name)
            if spec.kind == "llm_json":
                deps = _deps_of(answers.get(text, {}), spec.depends_on)
                prompts.setdefault(name, []).append(questions.json_prompt(name, text, deps).ids)
            elif spec.kind in QUESTION_KINDS:
                deps = _deps_of(answers.get(text, {}), spec.depends_on)
                prompts.setdefault(name, []).extend(questions.prompts(name, text, deps))
    jobs = [LimitJob(model, "embed", texts=texts) for model, texts in sorted(embeds.items())]
    for name, ids in sorted(prompts.items()):
        llm = registry.get(name).model
        assert llm is not None
        jobs.append(LimitJob(llm, "generate", prompts=ids, capability=name))
    return RoundWork(len(needed), jobs)


# A worker killed by a signal before it wrote its timing is started again this many times.
# vLLM's CPU engine now and then aborts as its process exits ("terminate called without an
# active exception", after the engine's shutdown; seen on an AMD EPYC with AVX-512 BF16, in 3
# of 4 starts on one job): the worker writes its result whole before that, and a result
# written by a worker that then died is kept.
WORKER_RETRIES = 2


def run_worker(
    request: Path,
    result: Path,
    config_path: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """One bench.raw_limit_worker process on a jobs file (one model); its timing rows. A
    worker that dies of a signal without a result is started again, up to WORKER_RETRIES
    times; one that exits with an error raises at once."""
    command = [sys.executable, "-m", "bench.raw_limit_worker", str(request), str(result)]
    if config_path is not None:
        command += ["--config", str(config_path)]
    for attempt in range(WORKER_RETRIES + 1):
        result.unlink(missing_ok=True)
        process = subprocess.run(
            command, timeout=WORKER_TIMEOUT_S, env=None if env is None else dict(env)
        )
        if process.returncode < 0 and result.exists():
            print(
                f"raw-limit worker died of signal {-process.returncode} after writing its "
                "timing; keeping it",
                flush=True,
            )
            break
        if process.returncode < 0 and attempt < WORKER_RETRIES:
            print(
                f"raw-limit worker died of signal {-process.returncode}; starting it again",
                flush=True,
            )
            continue
        process.check_returncode()
        break
    rows: list[dict[str, Any]] = json.loads(result.read_text())
    return rows


def run_limit(config_path: Path | None, jobs: Sequence[LimitJob]) -> dict[str, Any]:
    """Runs each model's jobs in a worker process of its own, one model after the other;
    returns the timings (seconds per job, and their total)."""
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="capserve-limit-") as folder:
        for model in sorted({job.model for job in jobs}):
            request = Path(folder) / f"{model}.jobs.json"
            result = Path(folder) / f"{model}.result.json"
            request.write_text(json.dumps([asdict(j) for j in jobs if j.model == model]))
            rows += run_worker(request, result, config_path)
    return {"seconds": round(sum(row["seconds"] for row in rows), 3), "jobs": rows}


def limit_row(phase_seconds: float, work: RoundWork, timings: Mapping[str, Any]) -> dict[str, Any]:
    """One round's limit against capserve's phase on the same requests."""
    seconds, distinct_texts = float(timings["seconds"]), work.distinct_texts
    return {
        "distinct_texts": distinct_texts,
        "limit_seconds": round(seconds, 3),
        "limit_distinct_texts_per_s": round(distinct_texts / seconds, 2) if seconds else None,
        "capserve_seconds": round(phase_seconds, 3),
        "capserve_distinct_texts_per_s": round(distinct_texts / phase_seconds, 2),
        "fraction_of_limit": round(seconds / phase_seconds, 3) if phase_seconds else None,
        "jobs": timings["jobs"],
    }
