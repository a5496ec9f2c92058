"""Runs the file's rows through a classifier: the rows not yet in the output, in batches, a
few in flight; each batch's lines written (and flushed) as soon as it is answered."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from client.file_job.classifiers import BatchClassifier
from client.file_job.output import ResultWriter, result_record, resume
from client.file_job.progress import Reporter
from client.file_job.rows import Row
from client.many import stream_batches


@dataclass
class JobCounts:
    # Rows in the input.
    total: int = 0
    # Already answered in the output before this run.
    skipped: int = 0
    # Error rows of an earlier run dropped from the output, to be asked again.
    retried: int = 0
    # Written by this run.
    ok: int = 0
    failed: int = 0

    @property
    def left(self) -> int:
        return self.total - self.skipped - self.ok - self.failed


@dataclass
class FileJob:
    rows: list[Row]
    output: Path
    classify: BatchClassifier
    reporter: Reporter
    batch_size: int = 32
    concurrency: int = 2
    counts: JobCounts = field(default_factory=JobCounts)

    async def run(self) -> JobCounts:
        """Writes every row not yet answered. Cancelling it (Ctrl-C) stops the requests in
        flight; every line written so far is complete and on disk."""
        state = resume(self.output)
        pending = [row for row in self.rows if row.key not in state.done]
        self.counts.total = len(self.rows)
        self.counts.skipped = len(self.rows) - len(pending)
        self.counts.retried = state.dropped
        self.reporter.start(len(self.rows), self.counts.skipped)
        try:
            with ResultWriter(self.output) as writer:
                async for rows, outcomes in stream_batches(
                    self.classify, self._batches(pending), self.concurrency
                ):
                    records = [result_record(r, o) for r, o in zip(rows, outcomes, strict=True)]
                    writer.write_batch(records)
                    failed = sum(not r["ok"] for r in records)
                    self.counts.ok += len(records) - failed
                    self.counts.failed += failed
                    self.reporter.advance(len(records) - failed, failed)
        finally:
            self.reporter.close()
        return self.counts

    def _batches(self, rows: list[Row]) -> Iterator[tuple[list[Row], list[str]]]:
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start : start + self.batch_size]
            yield chunk, [row.text for row in chunk]
