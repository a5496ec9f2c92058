"""The input file's rows: each one's id (its id field, or its row number) and text. Reading
checks the whole file first, so a bad row stops the job before any request is sent."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

JSONL_SUFFIXES = (".jsonl", ".ndjson")
CSV_SUFFIXES = (".csv",)

RowId = str | int | float | bool | None


class InputError(Exception):
    """The input cannot be read as asked (exit code 2). Names the line and the field, never
    the text."""


@dataclass(frozen=True)
class Row:
    id: RowId
    text: str

    @property
    def key(self) -> str:
        return id_key(self.id)


def id_key(row_id: object) -> str:
    """The id as the output compares it: 7 and "7" differ, as they do in the input."""
    return json.dumps(row_id, sort_keys=True)


def read_rows(path: Path, text_field: str, id_field: str | None = None) -> list[Row]:
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        records = _jsonl(path)
    elif suffix in CSV_SUFFIXES:
        records = _csv(path)
    else:
        known = ", ".join(JSONL_SUFFIXES + CSV_SUFFIXES)
        raise InputError(f"{path}: unknown file type '{suffix}' (known: {known})")
    rows: list[Row] = []
    seen: set[str] = set()
    try:
        for number, (line, record) in enumerate(records, start=1):
            row = _row(path, line, number, record, text_field, id_field)
            if row.key in seen:
                raise InputError(f"{path} line {line}: {id_field} {row.key} is not unique")
            seen.add(row.key)
            rows.append(row)
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or type(exc).__name__}") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 (byte {exc.start})") from None
    except csv.Error as exc:  # e.g. a field over the csv module's size limit
        raise InputError(f"{path}: not a readable CSV file ({exc})") from None
    return rows


def _row(
    path: Path,
    line: int,
    number: int,
    record: dict[str, Any],
    text_field: str,
    id_field: str | None,
) -> Row:
    fields = ", ".join(record) or "none"
    if text_field not in record:
        raise InputError(f"{path} line {line}: no '{text_field}' field (fields: {fields})")
    text = record[text_field]
    if not isinstance(text, str):
        raise InputError(
            f"{path} line {line}: '{text_field}' is {type(text).__name__}, not a string"
        )
    if id_field is None:
        return Row(number, text)
    if id_field not in record:
        raise InputError(f"{path} line {line}: no '{id_field}' field (fields: {fields})")
    row_id = record[id_field]
    if not isinstance(row_id, str | int | float | bool) or row_id is None:
        raise InputError(f"{path} line {line}: '{id_field}' is not a string or number")
    return Row(row_id, text)


def _jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8") as lines:
        for line_number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path} line {line_number}: not JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise InputError(f"{path} line {line_number}: not a JSON object")
            yield line_number, record


def _csv(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        for record in reader:
            yield reader.line_num, {k: v for k, v in record.items() if k is not None}
