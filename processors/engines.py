"""Persistent vLLM engines, built once per configured model, counting the work sent to them."""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from processors.engine_status import EngineUnavailableError, EngineWork
from processors.precision import canonical_dtype
from schemas.config import EngineEnvConfig, ModelConfig

log = logging.getLogger(__name__)

_request_ids = itertools.count()
T = TypeVar("T")


def apply_engine_env(env: EngineEnvConfig) -> None:
    """Environment the vLLM CPU build reads when an engine process starts (kept if already set)."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", f"{env.cpu_kvcache_space_gib:g}")
    bind = env.cpu_omp_threads_bind
    if bind == "all":
        bind = f"0-{max((os.cpu_count() or 1) - 1, 0)}"
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", bind)
    if env.omp_wait_policy is not None:
        os.environ.setdefault("OMP_WAIT_POLICY", env.omp_wait_policy.upper())
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


@dataclass
class Replica:
    """One data-parallel copy of a model's engine: its AsyncLLM, whether it serves, its work."""

    index: int
    llm: Any
    # Why the replica is out of service ("restarting", "stopped"...), or None while serving.
    out_of_service: str | None = None
    work: EngineWork = field(default_factory=EngineWork)


# Bounded-load affinity (consistent hashing with bounded loads): a text goes to its first
# replica by rendezvous hash unless that replica would then hold more than ceil(this factor x
# its fair share) of the requests in flight; then to the next replica in the text's own order
# that would not (one always exists).
LOAD_BOUND = 1.25


def _score(key: object, index: int) -> int:
    return hash((key, index))


def token_input(prompt_token_ids: Sequence[int]) -> dict[str, Any]:
    """A prompt as vLLM's rendered token input (`vllm.inputs.engine.TokensInput`). AsyncLLM
    turns that into an engine request on the caller's thread; a raw `{"prompt_token_ids"}`
    prompt goes through the renderer instead, in its thread pool, one thread hop per request
    for ids that capserve has already tokenized and truncated (vLLM 0.32, `AsyncLLM.add_request`).
    The engine's own checks (length against the context, the params) run either way."""
    return {"type": "token", "prompt_token_ids": list(prompt_token_ids)}


class Engine:
    """One model's engine as the processors hold it: one or more replicas (data-parallel copies,
    each an AsyncLLM of the same model). Processors talk to it through `generate`, `embed`,
    `classify` and the tokenizer calls.

    Each call goes to one replica chosen by its `affinity` key (the text a prompt is about;
    default: the prompt itself), by rendezvous hashing over the replicas in service: every
    question about one text lands on the replica whose prefix cache holds it, and when a replica
    goes out of service only its texts move. A replica holding more than LOAD_BOUND times its
    share of the requests in flight (a slower one) passes the text on to the text's next one. A
    call that a dying replica fails is retried once on another replica in service.

    The supervisor can swap the AsyncLLM of one replica (`replace`) after a crash: the processors
    and their per-version state stay. While every replica is out of service (`take_out`), every
    call raises EngineUnavailableError at once.
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
        # Every replica's work together.
        self.work = EngineWork()
        self.replicas: list[Replica] = [Replica(0, llm)]
        self._tokenizer = tokenizer
        # A fast tokenizer keeps options such as split_special_tokens on the shared Rust object:
        # every use goes through this one thread, with every option set explicitly.
        self._tokenizer_thread = ThreadPoolExecutor(1, thread_name_prefix=f"tokenizer-{name}")
        self._pooling_params: dict[str, Any] = {}

    async def with_tokenizer(self, work: Callable[[Any], T]) -> T:
        """Runs `work(tokenizer)` on the tokenizer's own thread, off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._tokenizer_thread, work, self._tokenizer)

    def add_replica(self, llm: Any) -> Replica:
        """Another copy of the same model, in service at once."""
        replica = Replica(len(self.replicas), llm)
        self.replicas.append(replica)
        return replica

    @property
    def llm(self) -> Any:
        """The first replica's AsyncLLM (or the dead one, until the supervisor replaces it)."""
        return self.replicas[0].llm

    @property
    def serving(self) -> bool:
        """Whether any replica serves."""
        return any(r.out_of_service is None for r in self.replicas)

    def take_out(self, state: str, index: int | None = None) -> None:
        """Replica `index` (default: every replica) out of service from now on; calls that only
        it could take raise EngineUnavailableError(state)."""
        for replica in self.replicas:
            if index is None or replica.index == index:
                replica.out_of_service = state

    def replace(self, llm: Any, tokenizer: Any, index: int = 0) -> Any:
        """Puts a fresh AsyncLLM (of the same model) in service as replica `index`; returns the
        one it replaced."""
        replica = self.replicas[index]
        old, replica.llm = replica.llm, llm
        replica.out_of_service = None
        if index == 0:
            self._tokenizer = tokenizer
        return old

    def _unavailable(self) -> EngineUnavailableError:
        states = {r.out_of_service for r in self.replicas} - {None}
        return EngineUnavailableError(self.name, sorted(s for s in states if s)[0])

    def _pick(self, key: object, excluded: frozenset[int] = frozenset()) -> Replica:
        """The replica a call with affinity `key` goes to (see the class docstring)."""
        serving = [r for r in self.replicas if r.out_of_service is None and r.index not in excluded]
        if not serving:
            raise self._unavailable()
        if len(serving) == 1:
            return serving[0]
        if isinstance(key, list):
            key = tuple(key)
        ranked = sorted(serving, key=lambda r: _score(key, r.index), reverse=True)
        in_flight = sum(r.work.in_flight for r in serving)
        bound = math.ceil(LOAD_BOUND * (in_flight + 1) / len(serving))
        for replica in ranked:
            if replica.work.in_flight + 1 <= bound:
                return replica
        return ranked[0]

    def _next_id(self) -> str:
        return f"{self.name}-{next(_request_ids)}"

    def _account(self, replica: Replica, output: Any) -> None:
        for work in (self.work, replica.work):
            work.requests += 1
            work.prompt_tokens += len(output.prompt_token_ids or ())
            work.cached_prompt_tokens += output.num_cached_tokens or 0

    async def _run(self, key: object, call: Callable[[Any], AsyncIterator[Any]]) -> Any:
        """Runs `call(llm)` on the replica for `key`; once more on another replica in service
        if that one died under it. Returns the last output."""
        replica = self._pick(key)
        try:
            return await self._final(replica, call(replica.llm))
        except EngineUnavailableError:
            if not any(r.out_of_service is None and r is not replica for r in self.replicas):
                raise
            other = self._pick(key, frozenset({replica.index}))
            return await self._final(other, call(other.llm))

    async def _final(self, replica: Replica, stream: AsyncIterator[Any]) -> Any:
        """Drains a replica's output stream, counts the work, and returns the last output."""
        final = None
        llm = replica.llm
        for work in (self.work, replica.work):
            work.in_flight += 1
        try:
            async for output in stream:
                final = output
        except Exception as exc:
            for work in (self.work, replica.work):
                work.errors += 1
            if _died(llm, exc) or replica.out_of_service is not None:
                raise EngineUnavailableError(self.name, replica.out_of_service or "dead") from exc
            raise
        finally:
            for work in (self.work, replica.work):
                work.in_flight -= 1
        if final is None:
            for work in (self.work, replica.work):
                work.errors += 1
            raise RuntimeError(f"engine '{self.name}' returned no output")
        self._account(replica, final)
        return final

    async def generate(
        self, prompt_token_ids: Sequence[int], params: Any, affinity: str | None = None
    ) -> Any:
        """Runs one prompt to completion and returns the final RequestOutput. `affinity`: the
        text the prompt is about (default: the prompt)."""
        prompt = token_input(prompt_token_ids)
        key = affinity if affinity is not None else prompt_token_ids
        return await self._run(key, lambda llm: llm.generate(prompt, params, self._next_id()))

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

    async def _encode(self, prompt_token_ids: Sequence[int], task: str) -> Any:
        prompt = token_input(prompt_token_ids)
        params = self._pooling(task)
        return await self._run(
            prompt["prompt_token_ids"], lambda llm: llm.encode(prompt, params, self._next_id())
        )

    async def embed(self, prompt_token_ids: Sequence[int]) -> np.ndarray:
        final = await self._encode(prompt_token_ids, "embed")
        return _vector(final.outputs.data)

    async def classify(self, prompt_token_ids: Sequence[int]) -> list[float]:
        """A sequence-classification model's raw scores (logits), one per label in the model's
        index order."""
        final = await self._encode(prompt_token_ids, "classify")
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

    async def check_health(self, index: int = 0) -> None:
        """Raises (vLLM's EngineDeadError) when replica `index`'s AsyncLLM has died."""
        await self.replicas[index].llm.check_health()

    def shutdown(self) -> None:
        """Stops every replica (each one's failure logged; the first raised at the end)."""
        self.take_out("stopped")
        failure: Exception | None = None
        for replica in self.replicas:
            stop_output_handler(replica.llm)
            try:
                replica.llm.shutdown()
            except Exception as exc:  # a dead replica's shutdown may raise: stop the others
                failure = failure or exc
        self._tokenizer_thread.shutdown(wait=False)
        if failure is not None:
            raise failure


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


# Replicas start one at a time: each one's placement is set in this process's environment,
# which its engine process inherits when it is spawned.
_launch_lock = threading.Lock()


@contextmanager
def _environment(env: Mapping[str, str]) -> Iterator[None]:
    """`env` set in os.environ for the duration, then restored."""
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class EngineFactory:
    """Builds engines and counts how many it built (a test checks: one per model, ever)."""

    def __init__(self) -> None:
        self.constructions = 0

    def launch(
        self, name: str, model: ModelConfig, path: str, env: Mapping[str, str] | None = None
    ) -> Any:
        """Starts one AsyncLLM (blocking: call it off the event loop), its engine process started
        with `env` (a replica's placement: core set or GPUs) on top of this process's."""
        from vllm.v1.engine.async_llm import AsyncLLM

        args = engine_args(model, path)
        placement = " ".join(f"{k}={v}" for k, v in sorted((env or {}).items()))
        log.info("starting engine '%s' (%s runner) from %s %s", name, model.runner, path, placement)
        with _launch_lock, _environment(env or {}):
            llm = AsyncLLM.from_engine_args(args)
        self.constructions += 1
        return llm

    def create(
        self, name: str, model: ModelConfig, path: str, env: Mapping[str, str] | None = None
    ) -> Engine:
        """An Engine with its first replica started (`launch`); the others are added to it."""
        llm = self.launch(name, model, path, env)
        max_len = int(llm.model_config.max_model_len)
        block_size = int(llm.vllm_config.cache_config.block_size or 16)
        dtype = canonical_dtype(str(llm.model_config.dtype))
        log.info("engine '%s' ready: dtype %s, max_model_len %d", name, dtype, max_len)
        return Engine(name, model.runner, llm, llm.get_tokenizer(), max_len, block_size, dtype)
