"""`capserve classify FILE`: the command's arguments, and running it (exit 0: every row ok,
1: some rows failed, 2: usage or input error, 130: interrupted by Ctrl-C)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from client.file_job.classifiers import BatchClassifier
    from client.file_job.job import JobCounts
    from client.file_job.rows import Row

DEFAULT_KEY_ENV = "CAPSERVE_API_KEY"
EXIT_OK, EXIT_FAILED_ROWS, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """A wrong argument or environment (exit 2)."""


def add_classify_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="input rows: .jsonl / .ndjson or .csv")
    parser.add_argument(
        "--capabilities", required=True, help="comma-separated capability names, e.g. a,b"
    )
    parser.add_argument("--text-field", default="text", help="the field holding the text")
    parser.add_argument(
        "--id-field", default=None, help="the field holding each row's id (default: row number)"
    )
    parser.add_argument(
        "--url", default=None, help="a capserve server; without it, an in-process runtime "
        "(--config) classifies",
    )  # fmt: skip
    parser.add_argument(
        "--output", type=Path, default=None, help="JSONL results (default: FILE.results.jsonl); "
        "a rerun skips the rows it already holds",
    )  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=32, help="texts per request")
    parser.add_argument("--concurrency", type=int, default=2, help="requests in flight")
    parser.add_argument(
        "--api-key-env", default=None, metavar="VAR",
        help=f"the environment variable holding the API key or JWT (default: {DEFAULT_KEY_ENV}"
        " when set); a credential is never taken from the command line",
    )  # fmt: skip
    parser.add_argument("--priority", choices=["high", "normal", "low"], default="normal")
    parser.add_argument("--timeout-ms", type=int, default=None, help="each request's deadline")
    parser.add_argument(
        "--max-wait-s", type=float, default=300.0,
        help="how long a request may wait in all for retries (429, 503, server restarts)",
    )  # fmt: skip
    parser.add_argument(
        "--progress-interval", type=float, default=10.0,
        help="seconds between progress lines when stderr is not a terminal",
    )  # fmt: skip


def run_classify(args: argparse.Namespace) -> int:
    from client.file_job.rows import InputError, read_rows

    started = time.monotonic()
    try:
        capabilities = _capabilities(args.capabilities)
        output = _output(args.file, args.output)
        _check_numbers(args)
        credential = _credential(args.api_key_env, os.environ) if args.url else None
        rows = read_rows(args.file, args.text_field, args.id_field)
    except (UsageError, InputError) as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:  # Ctrl-C while reading: nothing was sent
        return EXIT_INTERRUPTED
    try:
        return asyncio.run(_run(args, capabilities, output, credential, rows, started))
    except KeyboardInterrupt:  # a second Ctrl-C while the first one stops the job
        return EXIT_INTERRUPTED


def _check_numbers(args: argparse.Namespace) -> None:
    if args.batch_size < 1 or args.concurrency < 1:
        raise UsageError("--batch-size and --concurrency must be at least 1")
    if args.timeout_ms is not None and args.timeout_ms < 1:
        raise UsageError("--timeout-ms must be at least 1")
    if args.max_wait_s < 0:
        raise UsageError("--max-wait-s must be at least 0")
    if args.url is not None:
        if not args.url.startswith(("http://", "https://")):
            raise UsageError(f"--url must start with http:// or https://, got {args.url!r}")
        if args.config is not None:
            raise UsageError("give --url (a server) or --config (in process), not both")


def _capabilities(given: str) -> list[str]:
    names = [name.strip() for name in given.split(",") if name.strip()]
    if not names:
        raise UsageError("--capabilities names no capability")
    return names


def _output(file: Path, given: Path | None) -> Path:
    output = given or file.with_name(f"{file.stem}.results.jsonl")
    if output.resolve() == file.resolve():
        raise UsageError("--output is the input file")
    return output


def _credential(env_var: str | None, environ: Mapping[str, str]) -> str | None:
    """The API key or JWT from `env_var` (required to be set when named), else from
    CAPSERVE_API_KEY when set, else none. Problems are said without the value."""
    name = env_var or DEFAULT_KEY_ENV
    value = environ.get(name) or None
    if value is None and env_var is not None:
        raise UsageError(f"--api-key-env: the environment variable {env_var} is not set")
    if value is not None and any(c.isspace() or not c.isprintable() for c in value):
        raise UsageError(f"the environment variable {name} holds whitespace or control characters")
    return value


def _fail(message: str) -> int:
    print(f"capserve classify: {message}", file=sys.stderr)
    return EXIT_USAGE


async def _run(
    args: argparse.Namespace,
    capabilities: list[str],
    output: Path,
    credential: str | None,
    rows: list[Row],
    started: float,
) -> int:
    from client.errors import CapserveError
    from client.file_job.job import FileJob
    from client.file_job.progress import reporter
    from client.file_job.rows import InputError

    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    interrupted = False

    def on_sigint() -> None:
        nonlocal interrupted
        interrupted = True
        loop.remove_signal_handler(signal.SIGINT)  # a second Ctrl-C stops at once
        task.cancel()

    loop.add_signal_handler(signal.SIGINT, on_sigint)
    job: FileJob | None = None
    try:
        async with _classifier(args, capabilities, credential) as classify:
            try:
                unknown = set(capabilities) - await classify.known_capabilities()
            except CapserveError as exc:
                return _fail(f"cannot start: {exc}")
            if unknown:
                return _fail(f"unknown capabilities: {', '.join(sorted(unknown))}")
            progress = reporter(sys.stderr, args.progress_interval)
            job = FileJob(rows, output, classify, progress, args.batch_size, args.concurrency)
            counts = await job.run()
    except (UsageError, InputError) as exc:  # InputError: the output is not a result file
        return _fail(str(exc))
    except asyncio.CancelledError:
        if not interrupted:
            raise
        task.uncancel()
        if job is not None:
            _summary(job.counts, output, started, interrupted=True)
        return EXIT_INTERRUPTED
    finally:
        if not interrupted:
            loop.remove_signal_handler(signal.SIGINT)
    _summary(counts, output, started, interrupted=False)
    return EXIT_FAILED_ROWS if counts.failed else EXIT_OK


def _summary(counts: JobCounts, output: Path, started: float, interrupted: bool) -> None:
    line = (
        f"classify: {counts.total} rows: {counts.ok} ok, {counts.failed} failed, "
        f"{counts.skipped} already in {output}"
    )
    if counts.retried:
        line += f", {counts.retried} earlier error rows asked again"
    line += f"; {time.monotonic() - started:.1f} s"
    if interrupted:
        line += f"; interrupted with {counts.left} rows left: rerun the same command to resume"
    print(line, file=sys.stderr, flush=True)


@asynccontextmanager
async def _classifier(
    args: argparse.Namespace, capabilities: list[str], credential: str | None
) -> AsyncIterator[BatchClassifier]:
    if args.url:
        from client.async_client import AsyncCapserveClient
        from client.file_job.classifiers import HttpClassifier
        from client.retry import RetryPolicy

        retry = RetryPolicy(max_attempts=1000, max_total_wait_s=args.max_wait_s)
        async with AsyncCapserveClient(args.url, token=credential, retry=retry) as client:
            yield HttpClassifier(client, capabilities, args.priority, args.timeout_ms)
        return
    async with _in_process(args, capabilities) as classify:
        yield classify


@asynccontextmanager
async def _in_process(
    args: argparse.Namespace, capabilities: list[str]
) -> AsyncIterator[BatchClassifier]:
    from capabilities.loader import CapabilityConfigError
    from client.file_job.in_process import RuntimeClassifier
    from processors.model_store import ModelNotReadyError
    from processors.placement import PlacementError
    from server.runtime import Runtime
    from server.settings import load_config

    try:
        runtime = Runtime.build(load_config(args.config))
    except (CapabilityConfigError, ModelNotReadyError, PlacementError) as exc:
        raise UsageError(str(exc)) from None
    try:
        await runtime.start()
        yield RuntimeClassifier(runtime, capabilities, args.priority, args.timeout_ms)
    finally:
        await runtime.stop()
