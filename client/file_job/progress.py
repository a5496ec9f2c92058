"""How far the job is: a rich progress bar (texts/s, ETA) on a terminal, else a plain line
every few seconds. Counts only, never a text."""

from __future__ import annotations

import time
from typing import Protocol, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class Reporter(Protocol):
    def start(self, total: int, done: int) -> None: ...

    def advance(self, ok: int, failed: int) -> None: ...

    def close(self) -> None: ...


def reporter(stream: TextIO, interval_s: float) -> Reporter:
    """The bar when `stream` is a terminal, else plain lines."""
    return RichReporter(stream) if stream.isatty() else LineReporter(stream, interval_s)


class _Rate(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.speed
        return Text("-- texts/s" if speed is None else f"{speed:.1f} texts/s")


class RichReporter:
    def __init__(self, stream: TextIO) -> None:
        self._progress = Progress(
            TextColumn("classify"),
            BarColumn(),
            MofNCompleteColumn(),
            _Rate(),
            TextColumn("{task.fields[failed]} failed"),
            TimeRemainingColumn(),
            console=Console(file=stream),
        )
        self._task = self._progress.add_task("classify", start=False, failed=0)
        self._failed = 0

    def start(self, total: int, done: int) -> None:
        self._progress.update(self._task, total=total, completed=done)
        self._progress.start_task(self._task)
        self._progress.start()

    def advance(self, ok: int, failed: int) -> None:
        self._failed += failed
        self._progress.update(self._task, advance=ok + failed, failed=self._failed)

    def close(self) -> None:
        self._progress.stop()


class LineReporter:
    """`classify: 120/400 rows, 9.8 texts/s, 0 failed, ETA 28 s`, at most every interval_s."""

    def __init__(self, stream: TextIO, interval_s: float) -> None:
        self._stream = stream
        self._interval_s = interval_s
        self._total = 0
        self._done = 0
        self._answered = 0
        self._failed = 0
        self._started = 0.0
        self._last = 0.0

    def start(self, total: int, done: int) -> None:
        self._total, self._done = total, done
        self._started = self._last = time.monotonic()
        self._line()

    def advance(self, ok: int, failed: int) -> None:
        self._answered += ok + failed
        self._failed += failed
        now = time.monotonic()
        if now - self._last >= self._interval_s:
            self._last = now
            self._line()

    def close(self) -> None:
        self._line()

    def _line(self) -> None:
        elapsed = time.monotonic() - self._started
        rate = self._answered / elapsed if elapsed > 0 and self._answered else 0.0
        left = self._total - self._done - self._answered
        eta = f"{left / rate:.0f} s" if rate > 0 else "--"
        print(
            f"classify: {self._done + self._answered}/{self._total} rows, {rate:.1f} texts/s, "
            f"{self._failed} failed, ETA {eta}",
            file=self._stream,
            flush=True,
        )
