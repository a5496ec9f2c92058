"""Question groups: the LLM questions that share one system part, and so one prefill per text.

A group's system part holds the instructions of every `shared` question of the group, in a
stable order (by name), whichever of them a request asks: a question's prompt, and so its
answer, never depends on which other questions were asked with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

InstructionsPosition = Literal["before_text", "after_text"]

SHARED_HEADER = (
    "You answer questions about the user's text. Each question below has a name and "
    "instructions. You will be asked one of them at a time: answer it with a single word or "
    "number."
)
AFTER_TEXT_HEADER = (
    "You answer questions about the user's text. The next message names one question and "
    "its instructions: answer it with a single word or number."
)


@dataclass(frozen=True)
class QuestionGroup:
    name: str
    model: str
    # (question name, its rendered instructions) for every `shared` member, by name.
    sections: tuple[tuple[str, str], ...]
    instructions: InstructionsPosition
    pad_to_block: bool

    def system_text(self) -> str:
        """The group's system part: the same for every text and every question."""
        if self.instructions == "after_text":
            return AFTER_TEXT_HEADER
        body = "\n\n".join(f"### {name}\n{text.strip()}" for name, text in self.sections)
        return f"{SHARED_HEADER}\n\n{body}" if body else SHARED_HEADER

    def fingerprint(self) -> str:
        """Everything of the group that a member's prompt depends on."""
        sections = "\n".join(f"{name}:{text}" for name, text in self.sections)
        return f"{self.name}|{self.instructions}|pad={self.pad_to_block}|{sections}"
