"""The output file: one JSON line per answered row, appended and flushed as answers come.

A rerun reads it first: rows with a result are skipped; rows written as errors (and a last
line cut short by a kill) are dropped from the file and asked again, so every id ends up in it
exactly once."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

from client.file_job.rows import InputError, Row, id_key
from client.many import TextOutcome


@dataclass(frozen=True)
class Resume:
    # The ids (as id_key) already answered with a result.
    done: frozenset[str]
    # Error rows and a cut-short last line dropped from the file.
    dropped: int


def resume(path: Path) -> Resume:
    """What the output already holds; rewrites it without its error rows when it has any."""
    if not path.exists():
        return Resume(frozenset(), 0)
    kept: list[str] = []
    done: set[str] = set()
    dropped = 0
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(
            f"cannot read {path} ({type(exc).__name__}); give another --output"
        ) from None
    # A last line without its newline (a kill between the record and its "\n") is rewritten
    # with one, or the next append would glue a record onto it.
    unterminated = bool(raw) and not raw.endswith("\n")
    lines = raw.split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or "id" not in record or "ok" not in record:
                raise ValueError
        except ValueError:
            if number == len(lines):  # no newline after it: a write cut short
                dropped += 1
                continue
            raise InputError(
                f"{path} line {number}: not a capserve classify result; give another --output"
            ) from None
        if record["ok"] is True:
            done.add(id_key(record["id"]))
            kept.append(line)
        else:
            dropped += 1
    if dropped or unterminated:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")
        os.replace(tmp, path)
    return Resume(frozenset(done), dropped)


def result_record(row: Row, outcome: TextOutcome) -> dict[str, Any]:
    """The output line of one row: `ok` with `results`, or `ok: false` with `error`."""
    record: dict[str, Any] = {"id": row.id}
    result = outcome.result
    results = {} if result is None else {n: r.model_dump() for n, r in result.results.items()}
    if outcome.error is not None:
        error = outcome.error
        record.update(ok=False, error={"type": error.type, "message": error.message})
        if error.status is not None:
            record["error"]["status"] = error.status
        return record
    assert result is not None
    if result.error is not None:
        record.update(ok=False, error=result.error.model_dump(), results=results)
    elif result.missing:
        message = f"no result by the deadline for {', '.join(result.missing)}"
        record.update(ok=False, error={"type": "missing", "message": message}, results=results)
    else:
        record.update(ok=True, results=results)
    return record


class ResultWriter:
    """Appends result lines; `write_batch` flushes, so what is answered is on disk."""

    def __init__(self, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file: TextIO = path.open("a", encoding="utf-8")
        except OSError as exc:
            raise InputError(
                f"cannot write {path} ({type(exc).__name__}); give another --output"
            ) from None

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self._file.close()

    def write_batch(self, records: list[dict[str, Any]]) -> None:
        self._file.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        self._file.flush()
