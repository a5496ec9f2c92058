"""The raw-limit worker: times engine jobs on vLLM's offline `LLM` (see bench.raw_limit).

`python -m bench.raw_limit_worker JOBS.json RESULT.json [--config FILE]`: the jobs of one model
on one engine, started with capserve's engine arguments and environment, each warmed on a few
prompts, then timed on all of them. Writes [{model, task, capability, prompts, prompt_tokens,
seconds}]. One process per model: the engine's memory goes with it.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

WARMUP_PROMPTS = 8


def _sampling(config: Any, capability: str | None) -> Any:
    """capserve's sampling parameters of the capability: its llm_json setup, or a question's
    one step with its log-probabilities."""
    from vllm import SamplingParams

    from bench.raw_limit import QUESTION_LOGPROBS, QUESTION_TOKENS
    from processors.questions.standalone import json_question
    from server.registry_loading import load_registry

    registry = load_registry(config)
    spec = registry.get(capability or "")
    if spec.kind != "llm_json":
        return SamplingParams(
            max_tokens=QUESTION_TOKENS, temperature=0.0, logprobs=QUESTION_LOGPROBS
        )
    from transformers import AutoTokenizer

    from processors.model_store import resolve_model_path

    assert spec.model is not None and config.models_dir is not None
    model = config.models[spec.model]
    tokenizer = AutoTokenizer.from_pretrained(
        resolve_model_path(spec.model, model.source, config.models_dir)
    )
    question = json_question(tokenizer, spec, model.max_model_len or 2048, model.block_size or 16)
    return question.setup.params


def _write_result(path: Path, rows: list[dict[str, Any]]) -> None:
    """The timing rows, written whole (a temporary file renamed), before the engine shuts down:
    vLLM's CPU engine now and then aborts as it exits, after the timing is complete."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(rows))
    os.replace(partial, path)


def _run_model(config: Any, model: str, jobs: Sequence[dict[str, Any]], result: Path) -> None:
    from vllm import LLM

    from processors.engines import engine_kwargs
    from processors.model_store import resolve_model_path

    assert config.models_dir is not None
    settings = config.models[model]
    kwargs = engine_kwargs(settings, resolve_model_path(model, settings.source, config.models_dir))
    llm = LLM(**kwargs)
    rows = []
    for job in jobs:
        ids_of = job["prompts"]
        if job["task"] == "embed":
            # As capserve's Engine.tokenize: the model's special tokens, cut to its context,
            # special-token strings kept as plain text.
            ids_of = llm.get_tokenizer()(
                job["texts"],
                add_special_tokens=True,
                split_special_tokens=True,
                truncation=True,
                max_length=int(llm.llm_engine.model_config.max_model_len),
            )["input_ids"]
        prompts = [{"prompt_token_ids": list(ids)} for ids in ids_of]
        params = None if job["task"] == "embed" else _sampling(config, job["capability"])

        def run(batch: list[dict[str, Any]], params: Any = params) -> None:
            if params is None:
                llm.embed(batch, use_tqdm=False)
            else:
                llm.generate(batch, params, use_tqdm=False)

        # Warm on other tokens than the timed prompts: their prefixes stay uncached.
        warm = [list(reversed(p["prompt_token_ids"])) for p in prompts[:WARMUP_PROMPTS]]
        run([{"prompt_token_ids": ids} for ids in warm])
        started = time.perf_counter()
        run(prompts)
        rows.append(
            {
                "model": model,
                "task": job["task"],
                "capability": job["capability"],
                "prompts": len(prompts),
                "prompt_tokens": sum(len(p["prompt_token_ids"]) for p in prompts),
                "seconds": round(time.perf_counter() - started, 3),
            }
        )
    _write_result(result, rows)


def main(argv: Sequence[str] | None = None) -> int:
    from processors.engines import apply_engine_env
    from server.settings import load_config

    parser = argparse.ArgumentParser(prog="bench.raw_limit_worker")
    parser.add_argument("jobs", type=Path)
    parser.add_argument("result", type=Path)
    parser.add_argument("--config", type=Path, default=None)
    args = parser.parse_args(argv)
    config = load_config(args.config)
    apply_engine_env(config.engine_env)  # the core binding capserve's engines get
    jobs: list[dict[str, Any]] = json.loads(args.jobs.read_text())
    models = {job["model"] for job in jobs}
    if len(models) != 1:
        parser.error(f"the jobs must be of one model, not {sorted(models)}")
    _run_model(config, models.pop(), jobs, args.result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
