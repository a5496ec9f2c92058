"""Structured logs: JSON lines with the fields, readable text, vLLM sent through the same
formatter, and `capserve hash-key`."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.api.auth.keys import hash_key
from server.observability.logging import (
    VLLM_CONFIG_ENV,
    JsonFormatter,
    TextFormatter,
    configure_logging,
    vllm_logging_config,
)


def record(message: str, *args: object, **fields: object) -> logging.LogRecord:
    made = logging.LogRecord("capserve.test", logging.INFO, __file__, 1, message, args, None)
    made.fields = fields
    return made


def test_a_json_line_has_the_message_level_logger_and_fields():
    line = json.loads(JsonFormatter().format(record("GET %s %d", "/x", 200, status=200)))
    assert line["message"] == "GET /x 200" and line["level"] == "info"
    assert line["logger"] == "capserve.test" and line["status"] == 200
    assert line["time"].endswith("+00:00") and isinstance(line["process"], int)


def test_a_json_line_carries_the_exception_on_one_line():
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        made = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    text = JsonFormatter().format(made)
    assert "\n" not in text and "RuntimeError: boom" in json.loads(text)["exception"]


def test_text_lines_are_readable_with_the_fields_after():
    text = TextFormatter().format(record("GET /x", request_id="r1", status=200))
    assert "INFO capserve.test: GET /x request_id=r1 status=200" in text


@pytest.fixture
def restore_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    monkeypatch.delenv(VLLM_CONFIG_ENV, raising=False)
    monkeypatch.delenv("VLLM_CONFIGURE_LOGGING", raising=False)
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)


@pytest.mark.usefixtures("restore_logging")
def test_configure_logging_makes_every_line_json(monkeypatch: pytest.MonkeyPatch):
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stdout", stream)
    configure_logging("json", "info")
    logging.getLogger("uvicorn.error").info("Started server process")
    logging.getLogger("capserve.runtime").warning("engine %s restarted", "smollm2")
    logging.getLogger("capserve.runtime").debug("not at info level")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["message"] for line in lines] == [
        "Started server process",
        "engine smollm2 restarted",
    ]
    vllm_config = json.loads(Path(os.environ[VLLM_CONFIG_ENV]).read_text())
    assert vllm_config == vllm_logging_config("json", "INFO")


@pytest.mark.usefixtures("restore_logging")
def test_an_operators_own_vllm_logging_config_is_kept(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    monkeypatch.setenv(VLLM_CONFIG_ENV, str(tmp_path / "mine.json"))
    configure_logging("json", "info")
    assert os.environ[VLLM_CONFIG_ENV] == str(tmp_path / "mine.json")


def test_vllm_logs_through_our_formatter_without_disabling_other_loggers():
    config = vllm_logging_config("json", "INFO")
    assert config["disable_existing_loggers"] is False
    assert config["formatters"]["capserve"]["()"] == "server.observability.logging.JsonFormatter"
    assert config["loggers"]["vllm"]["level"] == "INFO"
    # Some of vLLM's debug lines hold prompts: its loggers never go below INFO.
    assert vllm_logging_config("text", "debug")["loggers"]["vllm"]["level"] == "INFO"
    assert vllm_logging_config("json", "warning")["loggers"]["vllm"]["level"] == "WARNING"


def test_vllm_engine_args_keep_request_logging_off():
    from processors.engines import engine_args
    from schemas.config import ModelConfig

    args = engine_args(ModelConfig(source="x", runner="generate"), "/nonexistent")
    assert args.enable_log_requests is False


def test_hash_key_command_prints_the_sha256_of_stdin():
    run = [sys.executable, "-m", "server.cli", "hash-key"]
    done = subprocess.run(run, input="s3cret-key\n", capture_output=True, text=True, check=True)
    assert done.stdout.strip() == hash_key("s3cret-key")
    assert "s3cret-key" not in done.stdout + done.stderr
    empty = subprocess.run(run, input="", capture_output=True, text=True)
    assert empty.returncode == 2 and "stdin" in empty.stderr
