"""Noticing that a client went away while its request waits.

Starlette does not cancel a handler when its client disconnects: the work would run on for
nobody. Once the body is read, the next ASGI message is `http.disconnect`, sent when the client
closes the connection (or when the response is complete), so a watcher waits for it beside the
work and cancels the work when it comes first.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any, TypeVar

from fastapi import Request

T = TypeVar("T")


class ClientDisconnectedError(Exception):
    """The client closed the connection before its answer was ready; its work was cancelled."""


async def _until_disconnected(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def unless_disconnected(request: Request, work: Coroutine[Any, Any, T]) -> T:
    """The result of `work`; cancels it and raises ClientDisconnectedError when the client
    leaves first."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_until_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if watcher.done() and not watcher.cancelled():
            watcher.exception()  # a broken receive channel counts as the client gone
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.cancelled():
        raise ClientDisconnectedError("the client closed the connection")
    return task.result()
