"""Log lines as JSON objects (or readable text), for ours, uvicorn's and vLLM's loggers alike.

A record's structured fields go in `extra={"fields": {...}}` (the access log's request id,
tenant, status, latency and sizes). Nothing here logs request bodies, headers, keys or tokens:
callers pass only such fields.
"""

from __future__ import annotations

import json
import logging
import logging.config
import os
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

LogFormat = Literal["json", "text"]
# vLLM (in this process and in every engine process it spawns) reads its logging config from
# the file this variable names: ours sends its lines through the same formatter.
VLLM_CONFIG_ENV = "VLLM_LOGGING_CONFIG_PATH"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, "fields", None)
    return dict(fields) if isinstance(fields, dict) else {}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, process, message, and the fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "process": record.process,
            "message": record.getMessage(),
        }
        line.update(_fields(record))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """A readable line, the fields as key=value after the message."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = _fields(record)
        if fields:
            line += " " + " ".join(f"{key}={value}" for key, value in fields.items())
        return line


def formatter_for(log_format: LogFormat) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


def vllm_logging_config(log_format: LogFormat, level: str) -> dict[str, Any]:
    """A logging.config.dictConfig for vLLM's loggers, with our formatter. Never below INFO:
    some of vLLM's debug lines hold prompts."""
    name = "JsonFormatter" if log_format == "json" else "TextFormatter"
    level = "INFO" if level.upper() == "DEBUG" else level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"capserve": {"()": f"{__name__}.{name}"}},
        "handlers": {
            "capserve": {
                "class": "logging.StreamHandler",
                "formatter": "capserve",
                "stream": "ext://sys.stdout",
            }
        },
        "loggers": {"vllm": {"handlers": ["capserve"], "level": level, "propagate": False}},
    }


def configure_logging(log_format: LogFormat, level: str) -> None:
    """Every log line of the process (and of vLLM's engine processes) in `log_format`."""
    level = level.upper()
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter_for(log_format))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)  # Python warnings become log lines too
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    # An operator's own vLLM logging config wins; with VLLM_CONFIGURE_LOGGING=0, vLLM's lines
    # propagate to the root handler above (and vLLM refuses a config file).
    if VLLM_CONFIG_ENV in os.environ or os.environ.get("VLLM_CONFIGURE_LOGGING") == "0":
        return
    folder = Path(tempfile.mkdtemp(prefix="capserve-logging-"))
    path = folder / "vllm-logging.json"
    path.write_text(json.dumps(vllm_logging_config(log_format, level)))
    os.environ[VLLM_CONFIG_ENV] = str(path)
    if "vllm.logger" in sys.modules:  # vLLM configured itself already: apply ours now
        logging.config.dictConfig(vllm_logging_config(log_format, level))
