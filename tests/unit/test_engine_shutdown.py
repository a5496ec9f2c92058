"""A clean stop cancels vLLM's output handler before the engine goes, so that the handler does
not log the stopped engine as a failure."""

from __future__ import annotations

import asyncio

from processors.engines import Engine


class FakeLLM:
    """An AsyncLLM's output handler waits for outputs; once the engine stops, it raises (as
    vLLM's does with EngineDeadError) unless it was cancelled first."""

    def __init__(self) -> None:
        self.engine_gone = asyncio.Event()
        self.failures: list[str] = []
        self.output_handler = asyncio.create_task(self._handle())
        self._loop = asyncio.get_running_loop()

    async def _handle(self) -> None:
        try:
            await self.engine_gone.wait()
            raise RuntimeError("engine dead")
        except RuntimeError as exc:
            self.failures.append(str(exc))  # vLLM logs it: "AsyncLLM output_handler failed."

    def shutdown(self) -> None:  # from any thread, as vLLM's
        self._loop.call_soon_threadsafe(self.engine_gone.set)


async def test_stop_on_the_loop_cancels_the_output_handler_first() -> None:
    llm = FakeLLM()
    await asyncio.sleep(0)  # the handler is waiting for outputs
    Engine("m", "generate", llm, tokenizer=None, max_model_len=64).shutdown()
    await asyncio.gather(llm.output_handler, return_exceptions=True)
    assert llm.output_handler.cancelled() and llm.failures == []


async def test_stop_from_another_thread_cancels_it_too() -> None:
    llm = FakeLLM()
    await asyncio.sleep(0)
    engine = Engine("m", "generate", llm, tokenizer=None, max_model_len=64)
    await asyncio.to_thread(engine.shutdown)
    await asyncio.gather(llm.output_handler, return_exceptions=True)
    assert llm.output_handler.cancelled() and llm.failures == []
