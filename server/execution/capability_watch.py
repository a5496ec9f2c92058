"""Reloads the capability set when the files of its folder change (`server.watch_capabilities`).

It polls the folder's file names, sizes and modification times rather than using inotify, so
it works the same on every platform and on mounted volumes. A change is acted on once two polls
in a row agree, so a file still being written is not read half-way. A set with problems is
logged and left out; the set in force keeps serving until the folder is fixed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from capabilities.loader import CapabilityConfigError

log = logging.getLogger(__name__)

WATCH_INTERVAL_S = 2.0

# File name -> (modification time in ns, size in bytes)
FolderState = dict[str, tuple[int, int]]


def folder_state(directory: Path) -> FolderState:
    """What a change of any file of the folder (YAML, training data, saved heads) changes."""
    if not directory.is_dir():
        return {}
    state: FolderState = {}
    for path in directory.iterdir():
        try:
            stat = path.stat()
        except FileNotFoundError:  # removed while we looked
            continue
        if path.is_file():
            state[path.name] = (stat.st_mtime_ns, stat.st_size)
    return state


class CapabilityWatch:
    def __init__(
        self,
        directory: Path,
        reload: Callable[[], Awaitable[object]],
        interval_s: float | None = None,
    ) -> None:
        self.directory = directory
        self._reload = reload
        self._interval_s = WATCH_INTERVAL_S if interval_s is None else interval_s
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        loaded = await asyncio.to_thread(folder_state, self.directory)
        self._task = asyncio.create_task(self._watch(loaded))
        log.info("watching %s for capability changes", self.directory)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _watch(self, loaded: FolderState) -> None:
        seen = loaded
        while True:
            await asyncio.sleep(self._interval_s)
            state = await asyncio.to_thread(folder_state, self.directory)
            settled = state == seen
            seen = state
            if settled and state != loaded:
                loaded = state
                await self._reload_logged()

    async def _reload_logged(self) -> None:
        try:
            await self._reload()
        except CapabilityConfigError as exc:
            log.error(
                "capabilities folder changed, but the new set has %d problem(s); the set in "
                "force stays:\n  %s",
                len(exc.problems),
                "\n  ".join(exc.problems),
            )
        except Exception as exc:  # the watch outlives any one failed reload
            log.error("capabilities folder changed, reload failed: %s", type(exc).__name__)
