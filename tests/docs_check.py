"""The docs check's reading of the docs: every shell command, Python example and link in
README.md and docs/*.md, so that tests can run or check each one (tests/unit/test_docs.py,
tests/integration/test_docs_commands.py) and none can rot.

A command in a fenced `bash` block, or after a `$ ` prompt in a `text` or `console` transcript,
is a full invocation; one in an inline code span of the prose (`capserve eval`, `make serve`)
names a command and its flags.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"(?<!`)`((?:\.venv/bin/)?(?:capserve|make|curl) [^`]+)`(?!`)")
LINK = re.compile(r"\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#+) (.*)$", re.M)


@dataclass(frozen=True)
class Command:
    page: str  # the page's path relative to the repository
    source: str  # the command as written (continuations and quoted newlines kept)
    argv: tuple[str, ...]  # shlex-split, comments dropped
    fenced: bool  # from a fenced block (a full invocation) or from the prose

    @property
    def program(self) -> str:
        return Path(self.argv[0]).name


@dataclass(frozen=True)
class Example:
    """A fenced block and the fenced block right after it (its documented output), if any."""

    page: str
    language: str
    code: str
    output_language: str | None
    output: str | None

    def output_json(self) -> Any:
        assert self.output is not None
        return json.loads(self.output)


def pages() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _name(page: Path) -> str:
    return str(page.relative_to(REPO))


def _fenced(text: str) -> list[tuple[str, str, int, int]]:
    return [(m.group(1), m.group(2), m.start(), m.end()) for m in FENCE.finditer(text)]


def commands(page: Path) -> Iterator[Command]:
    text = page.read_text()
    for language, body, _, _ in _fenced(text):
        if language in ("text", "console"):
            yield from _prompted(page, body)
            continue
        if language not in ("bash", "sh", "shell"):
            continue
        pending = ""
        for line in body.splitlines():
            pending = f"{pending}\n{line}" if pending else line
            if pending.rstrip().endswith("\\"):
                continue
            try:
                argv = _split(pending)
            except ValueError:  # an open quote: the command goes on
                continue
            if argv:
                yield Command(_name(page), pending.strip(), tuple(argv), fenced=True)
            pending = ""
        assert not pending, f"{_name(page)}: unterminated command {pending[:80]!r}"
    prose = FENCE.sub("", text)
    for match in INLINE.finditer(prose):
        words = tuple(shlex.split(match.group(1)))
        yield Command(_name(page), match.group(1), words, fenced=False)


def _split(command: str) -> list[str]:
    """The words of a shell command, as the shell reads them: a backslash-newline joins lines,
    comments dropped."""
    return shlex.split(command.replace("\\\n", " "), comments=True)


def _prompted(page: Path, body: str) -> Iterator[Command]:
    """The commands of a terminal transcript: the lines after a `$ ` prompt (with their
    continuations)."""
    pending: str | None = None
    for line in body.splitlines():
        if pending is None and not line.startswith("$ "):
            continue
        pending = line[2:] if pending is None else f"{pending}\n{line}"
        if pending.rstrip().endswith("\\"):
            continue
        argv = tuple(_split(pending))
        if argv:
            yield Command(_name(page), pending.strip(), argv, fenced=True)
        pending = None


def all_commands() -> list[Command]:
    return [command for page in pages() for command in commands(page)]


def examples(page: Path) -> Iterator[Example]:
    text = page.read_text()
    blocks = _fenced(text)
    for i, (language, body, _, end) in enumerate(blocks):
        after = blocks[i + 1] if i + 1 < len(blocks) else None
        # The output is the next block if only prose without a heading lies between them.
        between = text[end : after[2]] if after else ""
        if after is not None and "\n#" not in between and len(between) < 400:
            yield Example(_name(page), language, body, after[0], after[1])
        else:
            yield Example(_name(page), language, body, None, None)


def all_examples() -> list[Example]:
    return [example for page in pages() for example in examples(page)]


def slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    kept = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return kept.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {slug(m.group(2)) for m in HEADING.finditer(text)}


def links(page: Path) -> Iterator[str]:
    """Every link target of a page that is not a web address."""
    text = FENCE.sub("", page.read_text())
    for match in LINK.finditer(text):
        target = match.group(1)
        if not target.startswith(("http://", "https://", "mailto:")):
            yield target


def shape(value: Any) -> Any:
    """The structure of a JSON value: objects' keys (recursively), a list's first item, the
    type of a scalar (null and numbers alike, since a documented null may be a number now)."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return "scalar"
