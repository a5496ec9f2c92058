"""Persistent vLLM engines, built once per configured model, counting the work sent to them."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from processors.engine_status import EngineUnavailableError
from processors.precision import canonical_dtype
from schemas.config import EngineEnvConfig, ModelConfig

log = logging.getLogger(__name__)

_request_ids = itertools.count()
T = TypeVar("T")


@dataclass
class EngineWork:
    """Work sent to one engine since start: the honest measure of what batching saves."""

    requests: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    errors: int = 0
    # Requests at the engine now: sent and not yet ended or aborted (a cancelled caller's
    # generate()/encode() aborts its request in the engine).
    in_flight: int = 0


def apply_engine_env(env: EngineEnvConfig) -> None:
    """Environment the vLLM CPU build reads when an engine process starts (kept if already set)."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", f"{env.cpu_kvcache_space_gib:g}")
    bind = env.cpu_omp_threads_bind
    if bind == "all":
        bind = f"0-{max((os.cpu_count() or 1) - 1, 0)}"
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", bind)
    # Engines are spawned processes; nothing must fork a process that already holds threads.
    os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")


def engine_args(model: ModelConfig, path: str) -> Any:
    from vllm.engine.arg_utils import AsyncEngineArgs

    return AsyncEngineArgs(**engine_kwargs(model, path))


def engine_kwargs(model: ModelConfig, path: str) -> dict[str, Any]:
    """The engine arguments of a model, as vLLM's AsyncEngineArgs and LLM both take them."""
    kwargs: dict[str, Any] = {
        "model": path,
        "runner": model.runner,
        "dtype": model.dtype,
        "enforce_eager": model.enforce_eager,
        "enable_prefix_caching": model.enable_prefix_caching,
        "tensor_parallel_size": model.tensor_parallel_size,
        "disable_log_stats": True,
    }
    optional = {
        "max_model_len": model.max_model_len,
        "block_size": model.block_size,
        "max_num_seqs": model.max_num_seqs,
        "gpu_memory_utilization": model.gpu_memory_utilization,
    }
    kwargs.update({key: value for key, value in optional.items() if value is not None})
    kwargs.update(model.engine_args)
    structured = kwargs.get("structured_outputs_config")
    if isinstance(structured, dict):
        # AsyncEngineArgs takes the config object only, e.g. from YAML
        # `engine_args: {structured_outputs_config: {backend: xgrammar, disable_any_whitespace:
        # true}}` (compact JSON for every structured output of that engine).
        from vllm.config import StructuredOutputsConfig

        kwargs["structured_outputs_config"] = StructuredOutputsConfig(**structured)
    return kwargs


def _vector(data: Any) -> np.ndarray:
    """A pooling output (a tensor of any float dtype, or already a list) as float32, in one
    conversion (bfloat16 has no numpy dtype: widened first)."""
    if hasattr(data, "float") and hasattr(data, "numpy"):
        array: np.ndarray = data.float().numpy()
        return array
    return np.asarray(data, dtype=np.float32)


class Engine:
    """One model's engine as the processors hold it. Processors talk to it through `generate`,
    `embed`, `classify` and the tokenizer calls.

    The supervisor can swap the AsyncLLM underneath (`replace`) after a crash: the processors
    and their per-version state stay. While the engine is out of service (`take_out`), every call
    raises EngineUnavailableError at once; a call that a dying engine fails raises it too.
    """

    def __init__(
        self,
        name: str,
        runner: str,
        llm: Any,
        tokenizer: Any,
        max_model_len: int,
        block_size: int = 16,
        dtype: str | None = None,
    ) -> None:
        self.name = name
        self.runner = runner
        # The precision the engine really computes in (vLLM's resolved model dtype).
        self.dtype = dtype
        self.max_model_len = max_model_len
        # Tokens per KV-cache block: the prefix cache reuses only whole blocks.
        self.block_size = block_size
        self.work = EngineWork()
        self._llm = llm
        self._tokenizer = tokenizer
        # Why the engine is out of service ("restarting", "stopped"...), or None while serving.
        self._out_of_service: str | None = None
        # A fast tokenizer keeps options such as split_special_tokens on the shared Rust object:
        # every use goes through this one thread, with every option set explicitly.
        self._tokenizer_thread = ThreadPoolExecutor(1, thread_name_prefix=f"tokenizer-{name}")
        self._pooling_params: dict[str, Any] = {}

    async def with_tokenizer(self, work: Callable[[Any], T]) -> T:
        """Runs `work(tokenizer)` on the tokenizer's own thread, off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._tokenizer_thread, work, self._tokenizer)

    @property
    def llm(self) -> Any:
        """The AsyncLLM in service (or the dead one, until the supervisor replaces it)."""
        return self._llm

    @property
    def serving(self) -> bool:
        return self._out_of_service is None

    def take_out(self, state: str) -> None:
        """Out of service from now on: every call raises EngineUnavailableError(state)."""
        self._out_of_service = state

    def replace(self, llm: Any, tokenizer: Any) -> Any:
        """Puts a fresh AsyncLLM (of the same model) in service; returns the one it replaced."""
        old, self._llm, self._tokenizer = self._llm, llm, tokenizer
        self._out_of_service = None
        return old

    def _serving_llm(self) -> Any:
        if self._out_of_service is not None:
            raise EngineUnavailableError(self.name, self._out_of_service)
        return self._llm

    def _next_id(self) -> str:
        return f"{self.name}-{next(_request_ids)}"

    def _account(self, output: Any) -> None:
        self.work.requests += 1
        self.work.prompt_tokens += len(output.prompt_token_ids or ())
        self.work.cached_prompt_tokens += output.num_cached_tokens or 0

    async def _final(self, llm: Any, stream: AsyncIterator[Any]) -> Any:
        """Drains `llm`'s output stream, counts the work, and returns the last output."""
        final = None
        self.work.in_flight += 1
        try:
            async for output in stream:
                final = output
        except Exception as exc:
            self.work.errors += 1
            if _died(llm, exc) or self._out_of_service is not None:
                raise EngineUnavailableError(self.name, self._out_of_service or "dead") from exc
            raise
        finally:
            self.work.in_flight -= 1
        if final is None:
            self.work.errors += 1
            raise RuntimeError(f"engine '{self.name}' returned no output")
        self._account(final)
        return final

    async def generate(self, prompt_token_ids: Sequence[int], params: Any) -> Any:
        """Runs one prompt to completion and returns the final RequestOutput."""
        prompt = {"prompt_token_ids": list(prompt_token_ids)}
        llm = self._serving_llm()
        return await self._final(llm, llm.generate(prompt, params, self._next_id()))

    def _pooling(self, task: str) -> Any:
        """The engine's PoolingParams for `task`, built once: vLLM clones the params of every
        request, and `from vllm import PoolingParams` resolves through vLLM's lazy module
        attributes, which cost more than the request itself on a hot embedding path."""
        params = self._pooling_params.get(task)
        if params is None:
            from vllm import PoolingParams

            # Raw scores for classify: vLLM's activation is softmax or sigmoid depending on the
            # model config's problem_type, and callers want one single-label distribution.
            raw = {"use_activation": False} if task == "classify" else {}
            params = self._pooling_params[task] = PoolingParams(task=task, **raw)
        return params

    async def embed(self, prompt_token_ids: Sequence[int]) -> np.ndarray:
        prompt = {"prompt_token_ids": list(prompt_token_ids)}
        llm = self._serving_llm()
        stream = llm.encode(prompt, self._pooling("embed"), self._next_id())
        final = await self._final(llm, stream)
        return _vector(final.outputs.data)

    async def classify(self, prompt_token_ids: Sequence[int]) -> list[float]:
        """A sequence-classification model's raw scores (logits), one per label in the model's
        index order."""
        prompt = {"prompt_token_ids": list(prompt_token_ids)}
        llm = self._serving_llm()
        stream = llm.encode(prompt, self._pooling("classify"), self._next_id())
        final = await self._final(llm, stream)
        scores: list[float] = _vector(final.outputs.data).tolist()
        return scores

    async def tokenize(
        self, texts: Sequence[str], truncate_to: int | None = None
    ) -> list[list[int]]:
        """Tokenizes submitted text off the event loop.

        Special-token strings inside the text (e.g. a chat template's turn markers) stay plain
        text: a client cannot close its turn and write the answer. With `truncate_to`, the
        model's own special tokens are added (embedding models need them); without, none are
        (the caller puts the text inside an already formatted prompt).
        """

        def run(tokenizer: Any) -> list[list[int]]:
            kwargs: dict[str, Any] = {
                "add_special_tokens": truncate_to is not None,
                "split_special_tokens": True,
            }
            if truncate_to is not None:
                kwargs.update(truncation=True, max_length=truncate_to)
            return [list(ids) for ids in tokenizer(list(texts), **kwargs)["input_ids"]]

        return await self.with_tokenizer(run)

    async def check_health(self) -> None:
        """Raises (vLLM's EngineDeadError) when the AsyncLLM in service has died."""
        await self._llm.check_health()

    def shutdown(self) -> None:
        self._out_of_service = "stopped"
        stop_output_handler(self._llm)
        self._llm.shutdown()
        self._tokenizer_thread.shutdown(wait=False)


def stop_output_handler(llm: Any) -> None:
    """Cancels an AsyncLLM's output handler task before the engine is stopped. vLLM's shutdown
    stops the engine first, and the handler, still waiting for outputs, then logs the engine's
    death as an error on every clean stop. Callable from any thread."""
    handler = getattr(llm, "output_handler", None)
    if not isinstance(handler, asyncio.Task) or handler.done():
        return
    loop = handler.get_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        handler.cancel()
    elif not loop.is_closed():
        loop.call_soon_threadsafe(handler.cancel)


def _died(llm: Any, exc: BaseException) -> bool:
    """Whether `exc`, raised by a call on `llm`, means that the engine died (vLLM raises its
    EngineDeadError in every call in flight when the engine core process dies)."""
    if type(exc).__name__ == "EngineDeadError":
        return True
    try:
        return bool(llm.errored)
    except Exception:  # an AsyncLLM half torn down: dead
        return True


class EngineFactory:
    """Builds engines and counts how many it built (a test checks: one per model, ever)."""

    def __init__(self) -> None:
        self.constructions = 0

    def launch(self, name: str, model: ModelConfig, path: str) -> Any:
        """Starts one AsyncLLM (blocking: call it off the event loop)."""
        from vllm.v1.engine.async_llm import AsyncLLM

        args = engine_args(model, path)
        log.info("starting engine '%s' (%s runner) from %s", name, model.runner, path)
        llm = AsyncLLM.from_engine_args(args)
        self.constructions += 1
        return llm

    def create(self, name: str, model: ModelConfig, path: str) -> Engine:
        llm = self.launch(name, model, path)
        max_len = int(llm.model_config.max_model_len)
        block_size = int(llm.vllm_config.cache_config.block_size or 16)
        dtype = canonical_dtype(str(llm.model_config.dtype))
        log.info("engine '%s' ready: dtype %s, max_model_len %d", name, dtype, max_len)
        return Engine(name, model.runner, llm, llm.get_tokenizer(), max_len, block_size, dtype)
