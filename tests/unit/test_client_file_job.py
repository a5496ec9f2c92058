"""`capserve classify FILE` without a server: reading JSONL and CSV, resuming from the output
(error rows and a cut-short line asked again), writing, the job with a fake classifier, and the
command's exit codes (against a MockTransport server)."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
from pathlib import Path

import httpx
import pytest

from capabilities.registry import CapabilityRegistry
from client.errors import Unavailable
from client.file_job import command
from client.file_job.in_process import RuntimeClassifier
from client.file_job.job import FileJob
from client.file_job.output import ResultWriter, result_record, resume
from client.file_job.progress import LineReporter, RichReporter, reporter
from client.file_job.rows import InputError, Row, id_key, read_rows
from client.many import TextOutcome
from schemas.api import CapabilityResultBody, TextErrorBody, TextResultBody
from schemas.config import BatchingConfig, CapServeConfig, LimitsConfig, ModelConfig
from server.runtime import Runtime
from tests.unit.fakes import FakePool


def write_jsonl(path: Path, records: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def result(label: str, **extra: object) -> TextResultBody:
    body = CapabilityResultBody(label=label, confidence=0.9, probabilities={}, version="v1")
    return TextResultBody(index=0, results={"s": body}, **extra)  # type: ignore[arg-type]


# Reading


def test_jsonl_rows_with_ids_or_row_numbers(tmp_path: Path):
    path = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "text": "x"}, {"id": 7, "text": "y"}])
    assert read_rows(path, "text", "id") == [Row("a", "x"), Row(7, "y")]
    (tmp_path / "gaps.jsonl").write_text('{"text": "x"}\n\n{"text": "y"}\n')
    assert read_rows(tmp_path / "gaps.jsonl", "text") == [Row(1, "x"), Row(2, "y")]


def test_csv_rows_by_header(tmp_path: Path):
    path = tmp_path / "in.csv"
    path.write_text('key,body\nk1,"hello, world"\nk2,"two\nlines"\n')
    assert read_rows(path, "body", "key") == [Row("k1", "hello, world"), Row("k2", "two\nlines")]
    assert [r.id for r in read_rows(path, "body")] == [1, 2]


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [("in.jsonl", '{"body": "secret text"}\n', "line 1: no 'text' field (fields: body)"),
     ("in.jsonl", '{"text": "a"}\nnot json\n', "line 2: not JSON"),
     ("in.jsonl", '["text"]\n', "line 1: not a JSON object"),
     ("in.jsonl", '{"text": 3}\n', "'text' is int, not a string"),
     ("in.csv", "id,body\n1,secret text\n", "line 2: no 'text' field (fields: id, body)"),
     ("in.txt", "text\n", "unknown file type '.txt'")],
)  # fmt: skip
def test_input_errors_name_the_line_and_field_never_the_text(
    tmp_path: Path, name: str, content: str, expected: str
):
    (tmp_path / name).write_text(content)
    with pytest.raises(InputError) as raised:
        read_rows(tmp_path / name, "text")
    assert expected in str(raised.value)
    assert "secret text" not in str(raised.value)


def test_ids_must_exist_and_be_unique(tmp_path: Path):
    path = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "text": "x"}, {"text": "y"}])
    with pytest.raises(InputError, match="line 2: no 'id' field"):
        read_rows(path, "text", "id")
    path = write_jsonl(tmp_path / "dup.jsonl", [{"id": "a", "text": "x"}, {"id": "a", "text": ""}])
    with pytest.raises(InputError, match="not unique"):
        read_rows(path, "text", "id")


# Output and resume


def test_result_records_ok_text_error_missing_and_request_error():
    row = Row("a", "the text")
    ok = result_record(row, TextOutcome(0, result=result("pos")))
    assert ok["ok"] is True and ok["id"] == "a" and ok["results"]["s"]["label"] == "pos"
    text_error = TextErrorBody(type="capability_failed", capability="s", message="boom")
    failed = result_record(row, TextOutcome(0, result=result("pos", error=text_error)))
    assert failed["ok"] is False and failed["error"]["capability"] == "s"
    missing = result_record(row, TextOutcome(0, result=result("pos", missing=["t"])))
    assert missing["ok"] is False and missing["error"]["type"] == "missing"
    down = result_record(row, TextOutcome(0, error=Unavailable("engine down", 503, "x")))
    assert down == {"id": "a", "ok": False,
                    "error": {"type": "x", "message": "engine down", "status": 503}}  # fmt: skip
    assert "the text" not in json.dumps([ok, failed, missing, down])


def test_resume_skips_answered_rows_and_drops_error_rows_and_a_cut_line(tmp_path: Path):
    out = tmp_path / "out.jsonl"
    assert resume(out).done == frozenset()
    with ResultWriter(out) as writer:
        writer.write_batch([{"id": "a", "ok": True, "results": {}},
                            {"id": "b", "ok": False, "error": {}},
                            {"id": 3, "ok": True, "results": {}}])  # fmt: skip
    with out.open("a") as f:
        f.write('{"id": "c", "ok": tr')  # killed mid-write
    state = resume(out)
    assert state.done == frozenset({'"a"', "3"}) and state.dropped == 2
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["a", 3]
    assert out.read_text().endswith("\n")


def test_resume_refuses_a_file_that_is_not_an_output(tmp_path: Path):
    out = tmp_path / "other.jsonl"
    out.write_text("hello\nworld\n")
    with pytest.raises(InputError, match="line 1: not a capserve classify result"):
        resume(out)


# The job


class FakeClassifier:
    """Labels each text with itself; a batch holding "down" fails as a whole."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    async def __call__(self, texts: list[str]) -> list[TextOutcome]:
        self.batches.append(texts)
        await asyncio.sleep(0)
        if "down" in texts:
            error = Unavailable("engine down", 503, "engine_unavailable")
            return [TextOutcome(i, error=error) for i in range(len(texts))]
        return [TextOutcome(i, result=result(t)) for i, t in enumerate(texts)]

    async def known_capabilities(self) -> set[str]:
        return {"s"}


def run_job(rows: list[Row], out: Path, classifier: FakeClassifier) -> FileJob:
    job = FileJob(rows, out, classifier, LineReporter(io.StringIO(), 60), batch_size=2)
    asyncio.run(job.run())
    return job


def test_a_job_writes_every_row_then_a_rerun_asks_only_the_failed_ones(tmp_path: Path):
    out = tmp_path / "out.jsonl"
    rows = [Row(f"r{i}", f"t{i}") for i in range(7)]
    rows[3] = Row("r3", "down")
    first = run_job(rows, out, FakeClassifier())
    assert (first.counts.ok, first.counts.failed) == (5, 2)  # r2 shares the failed batch
    by_id = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert sorted(by_id) == [f"r{i}" for i in range(7)]
    assert by_id["r2"]["error"]["type"] == "engine_unavailable"
    assert by_id["r4"]["results"]["s"]["label"] == "t4"

    rows[3] = Row("r3", "back up")
    again = FakeClassifier()
    second = run_job(rows, out, again)
    assert again.batches == [["t2", "back up"]]
    assert (second.counts.skipped, second.counts.retried, second.counts.ok) == (5, 2, 2)
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert sorted(ids) == [f"r{i}" for i in range(7)]  # each exactly once
    assert all(json.loads(line)["ok"] for line in out.read_text().splitlines())


def test_cancelling_a_job_keeps_every_answered_line_whole(tmp_path: Path):
    out = tmp_path / "out.jsonl"
    rows = [Row(i, f"t{i}") for i in range(100)]

    class Slow(FakeClassifier):
        async def __call__(self, texts: list[str]) -> list[TextOutcome]:
            await asyncio.sleep(0.001)
            return await super().__call__(texts)

    async def interrupted() -> FileJob:
        job = FileJob(rows, out, Slow(), LineReporter(io.StringIO(), 60), batch_size=3)
        task = asyncio.ensure_future(job.run())
        while not out.exists() or out.read_text().count("\n") < 9:
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return job

    job = asyncio.run(interrupted())
    lines = out.read_text().splitlines()
    assert 9 <= len(lines) < 100 and len(lines) == job.counts.ok
    assert all(json.loads(line)["ok"] for line in lines)
    assert run_job(rows, out, FakeClassifier()).counts.skipped == len(lines)
    assert sorted(json.loads(line)["id"] for line in out.read_text().splitlines()) == list(
        range(100)
    )


def test_line_reporter_prints_counts_rate_and_eta_only():
    stream = io.StringIO()
    reporter = LineReporter(stream, interval_s=0)
    reporter.start(total=10, done=4)
    reporter.advance(ok=2, failed=1)
    reporter.close()
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("classify: 4/10 rows")
    assert lines[-1].startswith("classify: 7/10 rows") and "1 failed" in lines[-1]
    assert "texts/s" in lines[-1] and "ETA" in lines[-1]


# The command (HTTP mode against a MockTransport)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default=None)
    command.add_classify_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.fixture
def mock_server(monkeypatch: pytest.MonkeyPatch) -> list[httpx.Request]:
    """Routes the command's client to a fake server: sentiment exists; texts 'fail' are 503."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/capabilities":
            cap: dict[str, object] = {"name": "s", "kind": "rule", "description": "", "model": None,
                   "depends_on": [], "labels": [], "version": "v1"}  # fmt: skip
            return httpx.Response(200, json={"capabilities": [cap]})
        texts = json.loads(request.content)["texts"]
        if "fail" in texts:
            body = {"error": {"type": "shutting_down", "message": "bye"}}
            return httpx.Response(503, json=body)
        results = [{"index": i, "results": {"s": {"label": "x", "confidence": 1.0,
                    "probabilities": {}, "version": "v1"}}} for i in range(len(texts))]  # fmt: skip
        return httpx.Response(200, json={"request_id": "r", "latency_ms": 1, "results": results,
                                         "window": None})  # fmt: skip

    real = httpx.AsyncClient.__init__

    def patched(self: httpx.AsyncClient, *args: object, **kwargs: object) -> None:
        kwargs["transport"] = httpx.MockTransport(handler)
        real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(httpx.AsyncClient, "__init__", patched)
    monkeypatch.setenv("CAPSERVE_API_KEY", "cs-env-key")
    return seen


def test_command_exit_codes_and_credentials_from_the_env(
    tmp_path: Path, mock_server: list[httpx.Request], capsys: pytest.CaptureFixture[str]
):
    rows = write_jsonl(tmp_path / "in.jsonl", [{"text": "a"}, {"text": "b"}, {"text": "fail"}])
    argv = (str(rows), "--capabilities", "s", "--url", "http://c", "--batch-size", "2",
            "--max-wait-s", "0")  # fmt: skip
    assert command.run_classify(parse(*argv)) == 1  # the batch [fail] failed
    assert {r.headers["Authorization"] for r in mock_server} == {"Bearer cs-env-key"}
    out = tmp_path / "in.results.jsonl"
    records = [json.loads(line) for line in out.read_text().splitlines()]
    # Batches are written as they end (here concurrently): the ids say which row is which.
    assert sorted((r["id"], r["ok"]) for r in records) == [(1, True), (2, True), (3, False)]
    err = capsys.readouterr().err
    assert "cs-env-key" not in err and "2 ok, 1 failed" in err

    write_jsonl(rows, [{"text": "a"}, {"text": "b"}, {"text": "ok now"}])
    assert command.run_classify(parse(*argv)) == 0
    assert "2 already in" in capsys.readouterr().err
    assert len(out.read_text().splitlines()) == 3


@pytest.mark.parametrize(
    ("extra", "message"),
    [(("--capabilities", "s,unknown"), "unknown capabilities: unknown"),
     (("--capabilities", "s", "--text-field", "body"), "no 'body' field"),
     (("--capabilities", "s", "--api-key-env", "NOT_SET_VAR"), "NOT_SET_VAR is not set"),
     (("--capabilities", " , "), "names no capability"),
     (("--capabilities", "s", "--batch-size", "0"), "at least 1"),
     (("--capabilities", "s", "--timeout-ms", "0"), "--timeout-ms must be at least 1"),
     (("--capabilities", "s", "--max-wait-s", "-1"), "--max-wait-s must be at least 0"),
     (("--capabilities", "s", "--config", "x.yaml"), "not both")],
)  # fmt: skip
def test_usage_and_input_errors_exit_2_with_a_message(
    tmp_path: Path,
    mock_server: list[httpx.Request],
    capsys: pytest.CaptureFixture[str],
    extra: tuple[str, ...],
    message: str,
):
    rows = write_jsonl(tmp_path / "in.jsonl", [{"text": "a"}])
    assert command.run_classify(parse(str(rows), "--url", "http://c", *extra)) == 2
    assert message in capsys.readouterr().err
    assert not any(r.url.path == "/classify" for r in mock_server)  # nothing was classified


# In-process mode: a Runtime on fake engines


async def test_runtime_classifier_answers_like_the_server(classic_registry: CapabilityRegistry):
    config = CapServeConfig(
        models={"smollm2": ModelConfig(source="x", runner="generate")},
        batching=BatchingConfig(window_ms=10),
        limits=LimitsConfig(max_text_chars=50),
    )
    runtime = Runtime(config, classic_registry, FakePool())
    await runtime.start()
    try:
        classify = RuntimeClassifier(runtime, ["sentiment"])
        assert "sentiment" in await classify.known_capabilities()
        outcomes = await classify(["good", "bad"])
        assert [o.index for o in outcomes] == [0, 1] and all(o.ok for o in outcomes)
        assert all(o.result is not None and "sentiment" in o.result.results for o in outcomes)
        refused = await classify(["good", "x" * 51])  # over max_text_chars: the batch fails
        assert [o.ok for o in refused] == [False, False]
        assert refused[0].error is not None and refused[0].error.type == "RequestRejectedError"
    finally:
        await runtime.stop()


def test_the_reporter_is_a_rich_bar_on_a_terminal_only():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    bar = reporter(Terminal(), 10)
    assert isinstance(bar, RichReporter)
    bar.start(total=5, done=1)
    bar.advance(ok=3, failed=1)
    bar.close()
    assert isinstance(reporter(io.StringIO(), 10), LineReporter)


def test_an_output_that_is_not_a_result_file_exits_2(
    tmp_path: Path, mock_server: list[httpx.Request], capsys: pytest.CaptureFixture[str]
):
    rows = write_jsonl(tmp_path / "in.jsonl", [{"text": "a"}])
    (tmp_path / "notes.jsonl").write_text("my notes\nmore notes\n")
    argv = (str(rows), "--capabilities", "s", "--url", "http://c", "--output",
            str(tmp_path / "notes.jsonl"))  # fmt: skip
    assert command.run_classify(parse(*argv)) == 2
    assert "not a capserve classify result" in capsys.readouterr().err
    assert (tmp_path / "notes.jsonl").read_text() == "my notes\nmore notes\n"  # untouched


def test_a_url_without_its_scheme_and_a_key_with_a_newline_exit_2_without_the_key(
    tmp_path: Path,
    mock_server: list[httpx.Request],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
):
    rows = write_jsonl(tmp_path / "in.jsonl", [{"text": "a"}])
    assert command.run_classify(parse(str(rows), "--capabilities", "s", "--url", "c:8000")) == 2
    assert "must start with http://" in capsys.readouterr().err
    monkeypatch.setenv("CAPSERVE_API_KEY", "cs-pasted-key\n")
    assert command.run_classify(parse(str(rows), "--capabilities", "s", "--url", "http://c")) == 2
    err = capsys.readouterr().err
    assert "whitespace or control characters" in err and "cs-pasted-key" not in err
    assert not mock_server  # nothing was sent


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [("in.jsonl", b'{"text": "caf\xe9"}\n', "not UTF-8"),
     ("in.csv", b"text\n" + b"x" * 200_000 + b"\n", "not a readable CSV file")],
)  # fmt: skip
def test_undecodable_or_oversized_input_is_an_input_error(
    tmp_path: Path, name: str, content: bytes, message: str
):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        read_rows(path, "text")


def test_an_output_that_is_a_folder_is_an_input_error(tmp_path: Path):
    with pytest.raises(InputError, match="give another --output"):
        ResultWriter(tmp_path)
    with pytest.raises(InputError, match="give another --output"):
        resume(tmp_path)


def test_resume_ends_a_whole_last_record_cut_before_its_newline(tmp_path: Path):
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": 1, "ok": true, "results": {}}\n{"id": 2, "ok": true, "results": {}}')
    assert resume(out).done == frozenset({id_key(1), id_key(2)})
    with ResultWriter(out) as writer:
        writer.write_batch([{"id": 3, "ok": True, "results": {}}])
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == [1, 2, 3]
