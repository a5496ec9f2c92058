"""The engine supervisor: starts the engines, checks their health, and restarts a dead one.

Processors hold `Engine` objects; the supervisor swaps the AsyncLLM of one replica inside one
(`Engine.replace`) after a crash, so the processors, and their per-version state (label
embeddings, trained heads), stay valid. Each replica of a model is watched and restarted on its
own: while one is down, its texts go to the others; while every replica is down, calls raise
EngineUnavailableError at once.

A reload that adds or changes a model starts a new engine beside the others (`launch_spare`),
puts it in service in one step (`install`, which hands back the engine it replaces), and the
caller closes the old one once nothing uses it any more (`close_retired`). `withdraw` takes
out a model that is gone. Retired engines not yet closed are shut down by `stop` too.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar

from processors.engine_status import EngineState, EngineStatus
from processors.engines import Engine
from schemas.config import ModelConfig, SupervisorConfig

log = logging.getLogger(__name__)
T = TypeVar("T")

# Closing a dead AsyncLLM may hang on its sockets or raise: it gets this long, then is left.
CLOSE_TIMEOUT_S = 30.0


class EngineLauncher(Protocol):
    """Builds engines (processors.engines.EngineFactory); both calls block."""

    def create(
        self, name: str, model: ModelConfig, path: str, env: Mapping[str, str] | None = None
    ) -> Engine: ...

    def launch(
        self, name: str, model: ModelConfig, path: str, env: Mapping[str, str] | None = None
    ) -> Any: ...


@dataclass(frozen=True)
class EngineSpec:
    """What the supervisor needs to (re)start one engine: its model, and the environment each
    replica's engine process starts with (its placement: a core set or GPUs; one entry per
    replica)."""

    name: str
    model: ModelConfig
    path: str
    replica_envs: tuple[Mapping[str, str], ...] = ({},)

    @property
    def replicas(self) -> int:
        return len(self.replica_envs)


class EngineSupervisor:
    """Owns the engines for the life of the process: starts them, watches them every
    `health_interval_s`, and restarts a dead one with exponential backoff (state `restarting`;
    `failed` after a restart attempt failed, until the next one succeeds).

    `on_started` is called (on the event loop) after every engine start and restart: the
    server feeds the new engine processes to its reaper there.
    """

    def __init__(
        self,
        specs: Mapping[str, EngineSpec],
        launcher: EngineLauncher,
        config: SupervisorConfig | None = None,
        on_started: Callable[[], None] | None = None,
    ) -> None:
        self._specs = dict(specs)
        self._launcher = launcher
        self._config = config or SupervisorConfig()
        self._on_started = on_started
        self.engines: dict[str, Engine] = {}
        # Every replica's status, by model.
        self._status = {
            name: [EngineStatus(name, "starting", replica=i) for i in range(spec.replicas)]
            for name, spec in self._specs.items()
        }
        self._watch: asyncio.Task[None] | None = None
        # Restarts under way, by (model, replica).
        self._restarts: dict[tuple[str, int], asyncio.Task[None]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        # Out of service after a reload replaced or removed them, not closed yet.
        self._retired: list[Engine] = []
        # Started by launch_spare and not installed or closed yet.
        self._spares: list[Engine] = []
        # Set by stop(), from any thread: no engine starts or restarts after it.
        self._stopping = threading.Event()

    def states(self) -> dict[str, EngineStatus]:
        """Each model's status: up while any replica is (`replicas_up` of `replicas`)."""
        return {name: EngineStatus.of_replicas(replicas) for name, replicas in self._status.items()}

    def replica_states(self) -> dict[str, list[EngineStatus]]:
        """Every replica's status, by model."""
        return {name: list(replicas) for name, replicas in self._status.items()}

    def _set(self, name: str, state: EngineState, index: int = 0, **changes: Any) -> None:
        replicas = self._status[name]
        replicas[index] = replace(replicas[index], state=state, **changes)

    async def _create(self, spec: EngineSpec) -> Engine:
        """An engine with every replica of `spec` started, one after the other, off the event
        loop; if one fails to start, the others are shut down and the failure raised."""
        engine: Engine = await _off_loop(self._launcher.create, spec, 0)
        try:
            for index in range(1, spec.replicas):
                engine.add_replica(await _off_loop(self._launcher.launch, spec, index))
        except BaseException:
            await asyncio.to_thread(_shut_down, engine)
            raise
        return engine

    async def start(self) -> None:
        """Starts every engine, one after the other, off the event loop; then watches them.
        A failed start raises (the engines that did start are left to `stop`)."""
        self._loop = asyncio.get_running_loop()
        for name, spec in self._specs.items():
            if self._stopping.is_set():
                return
            try:
                engine = await self._create(spec)
            except BaseException as exc:
                for index in range(spec.replicas):
                    self._set(name, "failed", index, last_error=type(exc).__name__)
                raise
            self.engines[name] = engine
            for index in range(spec.replicas):
                self._set(name, "ready", index, dtype=engine.dtype)
            self._started()
        self._watch = asyncio.create_task(self._watch_health(), name="engine-supervisor")

    def _started(self) -> None:
        if self._on_started is not None:
            try:
                self._on_started()
            except Exception as exc:  # the reaper's feed never stops an engine
                log.warning("engine supervisor: on_started failed: %s", type(exc).__name__)

    async def _watch_health(self) -> None:
        interval = self._config.health_interval_s
        while not self._stopping.is_set():
            await asyncio.sleep(interval)
            for name, engine in list(self.engines.items()):
                for index in range(len(engine.replicas)):
                    if not self._watching(name, engine, index):
                        continue
                    try:
                        await asyncio.wait_for(engine.check_health(index), max(interval, 1.0) * 5)
                    except Exception as exc:
                        if self._watching(name, engine, index):  # not replaced meanwhile
                            self.take_down(name, exc, index)

    def _watching(self, name: str, engine: Engine, index: int = 0) -> bool:
        """Whether `engine` is still `name`'s engine in service, and its replica `index` ready
        and not restarting."""
        replicas = self._status.get(name)
        return (
            self.engines.get(name) is engine
            and replicas is not None
            and index < len(replicas)
            and replicas[index].state == "ready"
            and (name, index) not in self._restarts
        )

    def take_down(self, name: str, exc: BaseException, index: int = 0) -> None:
        """Takes replica `index` of the engine out of service at once and restarts it in the
        background (the model's other replicas serve meanwhile)."""
        key = (name, index)
        if self._stopping.is_set() or key in self._restarts:
            return
        reason = type(exc).__name__
        replica = f" replica {index}" if len(self.engines[name].replicas) > 1 else ""
        log.error("engine '%s'%s is down (%s): restarting it", name, replica, reason)
        self.engines[name].take_out("restarting", index)
        self._set(name, "restarting", index, last_error=reason)
        task = asyncio.create_task(self._restart(name, index), name=f"engine-restart-{name}")
        self._restarts[key] = task
        task.add_done_callback(lambda _t: self._restarts.pop(key, None))

    async def _restart(self, name: str, index: int = 0) -> None:
        """Closes the dead AsyncLLM of replica `index` (bounded: it may hang or raise), starts
        a new one, with backoff until one starts, and puts it in service under the same
        Engine."""
        engine = self.engines[name]
        await _close(name, engine.replicas[index].llm)
        launched = await self._relaunch(name, index)
        if launched is None:
            return
        engine.replace(*launched, index=index)
        restarts = self._status[name][index].restarts + 1
        self._set(name, "ready", index, restarts=restarts)
        log.info("engine '%s' restarted (restart %d)", name, restarts)
        self._started()

    async def _relaunch(self, name: str, index: int = 0) -> tuple[Any, Any] | None:
        """A new AsyncLLM for replica `index` of `name` and its tokenizer, after
        `restart_backoff_s`, doubled after each failed attempt up to `max_restart_backoff_s`;
        None if stopped first."""
        spec = self._specs[name]
        backoff = self._config.restart_backoff_s
        while True:
            await asyncio.sleep(backoff)
            if self._stopping.is_set():
                return None
            try:
                llm = await _off_loop(self._launcher.launch, spec, index)
                tokenizer = llm.get_tokenizer()
            except Exception as exc:
                backoff = min(backoff * 2, self._config.max_restart_backoff_s)
                reason = type(exc).__name__
                log.error(
                    "engine '%s': restart failed (%s); next try in %g s", name, reason, backoff
                )
                self._set(name, "failed", index, last_error=reason)
                continue
            if self._stopping.is_set():  # stopped while it started: it never serves
                await _close(name, llm)
                return None
            return llm, tokenizer

    async def launch_spare(self, spec: EngineSpec) -> Engine:
        """Starts an engine for `spec` off the event loop, beside those in service and out of
        the supervision until `install`. An engine whose start outlives a cancelled caller is
        shut down when it is up; `stop` shuts down spares too."""
        if self._stopping.is_set():
            raise RuntimeError("the engine supervisor is stopping")
        launch = asyncio.ensure_future(self._create(spec))
        try:
            engine = await asyncio.shield(launch)
        except asyncio.CancelledError:
            launch.add_done_callback(_shut_down_when_up)
            raise
        self._spares.append(engine)
        self._started()
        if self._stopping.is_set():  # stopped while it started: it never serves
            await self.close_retired(engine)
            raise RuntimeError("the engine supervisor is stopping")
        return engine

    def install(self, spec: EngineSpec, engine: Engine) -> Engine | None:
        """Puts a spare engine in service for `spec.name`, under supervision, in place of the
        engine in service (returned, now retired: the caller closes it with `close_retired`
        when nothing uses it); None if the name is new."""
        self._spares.remove(engine)
        self._cancel_restart(spec.name)
        old = self.engines.get(spec.name)
        self._specs[spec.name] = spec
        self.engines[spec.name] = engine
        self._status[spec.name] = [
            EngineStatus(spec.name, "ready", dtype=engine.dtype, replica=i)
            for i in range(len(engine.replicas))
        ]
        if old is not None:
            self._retired.append(old)
        return old

    def withdraw(self, name: str) -> Engine | None:
        """Takes `name` out of the supervision (a reload removed its model); returns its
        engine, now retired, for the caller to close with `close_retired`."""
        self._cancel_restart(name)
        self._specs.pop(name, None)
        self._status.pop(name, None)
        old = self.engines.pop(name, None)
        if old is not None:
            self._retired.append(old)
        return old

    def _cancel_restart(self, name: str) -> None:
        for key in [key for key in self._restarts if key[0] == name]:
            self._restarts.pop(key).cancel()

    async def close_retired(self, engine: Engine) -> None:
        """Shuts a retired (or spare) engine down off the event loop, bounded in time."""
        for held in (self._retired, self._spares):
            if engine in held:
                held.remove(engine)
        log.info("closing a retired engine of '%s'", engine.name)
        try:
            await asyncio.wait_for(asyncio.to_thread(engine.shutdown), CLOSE_TIMEOUT_S)
        except Exception as exc:
            log.warning("engine '%s': closing it failed (%s)", engine.name, type(exc).__name__)

    @property
    def retired(self) -> list[Engine]:
        """Engines out of service and not closed yet."""
        return list(self._retired)

    def stop(self) -> None:
        """Stops watching and restarting, and shuts every engine down (retired and spare ones
        too). Blocking; callable from any thread."""
        self._stopping.set()
        loop = self._loop
        tasks = [t for t in (self._watch, *self._restarts.values()) if t is not None]
        if loop is not None and tasks and not loop.is_closed():
            for task in tasks:
                loop.call_soon_threadsafe(task.cancel)
        for name, engine in self.engines.items():
            log.info("stopping engine '%s'", name)
            try:
                engine.shutdown()
            except Exception as exc:  # a dead engine's shutdown may raise: stop the others
                log.warning("engine '%s': shutdown failed (%s)", name, type(exc).__name__)
            for index in range(len(self._status.get(name, ()))):
                self._set(name, "stopped", index)
        self.engines.clear()
        leftovers, self._retired, self._spares = [*self._retired, *self._spares], [], []
        for engine in leftovers:
            _shut_down(engine)


async def _off_loop(
    launch: Callable[[str, ModelConfig, str, Mapping[str, str]], T], spec: EngineSpec, index: int
) -> T:
    """Runs a (blocking) launch of replica `index` in a worker thread."""
    env = spec.replica_envs[index]
    return await asyncio.to_thread(launch, spec.name, spec.model, spec.path, env)


async def _close(name: str, llm: Any) -> None:
    """Shuts an AsyncLLM down off the event loop, bounded in time; failures are logged."""
    try:
        await asyncio.wait_for(asyncio.to_thread(llm.shutdown), CLOSE_TIMEOUT_S)
    except Exception as exc:
        log.warning("engine '%s': closing the old engine failed (%s)", name, type(exc).__name__)


def _shut_down(engine: Engine) -> None:
    log.info("stopping a retired engine of '%s'", engine.name)
    try:
        engine.shutdown()
    except Exception as exc:
        log.warning("engine '%s': shutdown failed (%s)", engine.name, type(exc).__name__)


def _shut_down_when_up(launch: asyncio.Future[Engine]) -> None:
    """Done callback of an engine start whose caller went away: the engine never serves."""
    if not launch.cancelled() and launch.exception() is None:
        asyncio.get_running_loop().run_in_executor(None, _shut_down, launch.result())
