"""A client that leaves cancels its request's work (server/api/disconnect.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fastapi import Request

from server.api.disconnect import ClientDisconnectedError, unless_disconnected

GUARD_S = 5.0


def request_with(gone: asyncio.Event) -> Request:
    """A request whose body was read, and whose client leaves when `gone` is set."""

    async def receive() -> dict[str, Any]:
        await gone.wait()
        return {"type": "http.disconnect"}

    return Request({"type": "http", "method": "POST", "headers": []}, receive)


async def test_the_work_is_cancelled_when_the_client_leaves():
    gone = asyncio.Event()
    cancelled = asyncio.Event()

    async def work() -> str:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    waiting = asyncio.create_task(unless_disconnected(request_with(gone), work()))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    gone.set()
    with pytest.raises(ClientDisconnectedError):
        await asyncio.wait_for(waiting, GUARD_S)
    assert cancelled.is_set()


async def test_the_result_comes_back_while_the_client_stays():
    async def work() -> str:
        await asyncio.sleep(0.01)
        return "answer"

    assert await unless_disconnected(request_with(asyncio.Event()), work()) == "answer"


async def test_an_error_of_the_work_reaches_the_caller():
    async def work() -> str:
        raise ValueError("bad request")

    with pytest.raises(ValueError, match="bad request"):
        await unless_disconnected(request_with(asyncio.Event()), work())
