"""Prompt layouts: how a question about a text becomes engine prompts (token ids).

Every prompt is `[prefix] [text] [padding] [glue] [question]`:
- `shared`, instructions before the text (the default): the prefix is the group's system part
  (every shared question's instructions) and the user turn's opening; the glue ends the user
  turn and starts the assistant turn; the question is the cue and the answer prefix. Everything
  up to the question is the same for every question about the text, so the engine computes the
  text once and every further question costs only its cue.
- `shared`, instructions after the text: a short generic system part; after the text, a second
  user turn with the question's own instructions and cue, then the assistant turn.
- `own`: the question's own instructions are the system part; the text is computed again for
  every question (today's layout, kept for capabilities where it measures better).

The text is truncated once per (group, text), with one budget for the whole group, never per
question, or the questions would stop sharing its prefix. With padding on, the shared part is
padded to end on a KV block boundary: vLLM caches only full blocks, so otherwise the last
partial block would be computed again for every question.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from capabilities.groups import QuestionGroup
from capabilities.results import CapabilityResult
from capabilities.spec import CapabilitySpec
from capabilities.templates import compile_template
from processors.base import WindowContext
from processors.engines import Engine
from processors.questions.answers import encode

# Tokens kept free after the text for a question's cue, upstream results and answer prefix.
QUESTION_RESERVE = 192
# What pads the shared part to a block boundary: a space token after the text.
PAD_TEXT = " "


@dataclass(frozen=True)
class ChatParts:
    """The model's chat template, cut where capserve puts its own parts."""

    head: str  # up to the system content
    system_to_user: str  # end of the system turn, start of the user turn
    user_to_user: str  # end of one user turn, start of the next
    user_to_assistant: str  # end of the user turn, start of the assistant turn


def chat_parts(tokenizer: Any) -> ChatParts:
    marks = ["\x00SYSTEM\x00", "\x00USER1\x00", "\x00USER2\x00"]
    formatted = tokenizer.apply_chat_template(
        [
            {"role": "system", "content": marks[0]},
            {"role": "user", "content": marks[1]},
            {"role": "user", "content": marks[2]},
        ],
        tokenize=False,
        add_generation_prompt=True,
    )
    head, rest = formatted.split(marks[0])
    system_to_user, rest = rest.split(marks[1])
    user_to_user, user_to_assistant = rest.split(marks[2])
    return ChatParts(head, system_to_user, user_to_user, user_to_assistant)


@dataclass(frozen=True)
class QuestionLayout:
    """One capability version's prompt layout, tokenized once."""

    name: str  # "own", "shared" or "shared-after-text"
    prefix_ids: tuple[int, ...]
    glue_ids: tuple[int, ...]
    text_budget: int  # text tokens kept (the group's budget when shared)
    pad_id: int | None  # None: no padding
    block_size: int
    question_head: str  # before the cue (instructions after the text)
    question_tail: str  # between the cue and the answer prefix
    answer_prefix: str

    def shared_ids(self, text_ids: Sequence[int]) -> tuple[list[int], bool]:
        """The part of every prompt about this text that all its questions share, and whether
        the text was cut."""
        kept = list(text_ids[: self.text_budget])
        shared = [*self.prefix_ids, *kept]
        if self.pad_id is not None:
            missing = -(len(shared) + len(self.glue_ids)) % self.block_size
            shared.extend([self.pad_id] * missing)
        shared.extend(self.glue_ids)
        return shared, len(kept) < len(text_ids)

    def question_text(self, cue: str) -> str:
        return f"{self.question_head}{cue}{self.question_tail}{self.answer_prefix}"


def _render(source: str, spec: CapabilitySpec, deps: Mapping[str, CapabilityResult]) -> str:
    return compile_template(source).render(spec.labels, None, deps)


def cues(spec: CapabilitySpec, deps: Mapping[str, CapabilityResult]) -> list[str]:
    """The cue of each engine prompt of the question: one, or one per label (multilabel)."""
    prompt = spec.definition.prompt
    if prompt is None:
        raise ValueError(f"capability '{spec.name}' has no prompt")
    cue = _render(prompt.cue, spec, deps)
    if spec.kind != "llm_multilabel":
        return [cue]
    return [f"{cue}{label.question}\n" for label in spec.labels]


def build_layout(
    tokenizer: Any,
    spec: CapabilitySpec,
    max_model_len: int,
    block_size: int,
    answer_tokens: int,
) -> QuestionLayout:
    """Runs on the engine's tokenizer thread."""
    prompt = spec.definition.prompt
    if prompt is None:
        raise ValueError(f"capability '{spec.name}' has no prompt")
    parts = chat_parts(tokenizer)
    instructions = _render(prompt.instructions, spec, {}).strip()
    answer_prefix = _render(prompt.answer_prefix, spec, {})
    group = spec.group
    after_text = group is not None and group.instructions == "after_text"
    if group is None:  # own layout
        system, glue = instructions, parts.user_to_assistant
        head, tail, name = "", "", "own"
    elif after_text:
        system, glue = group.system_text(), parts.user_to_user
        head, tail, name = f"{instructions}\n\n", parts.user_to_assistant, "shared-after-text"
    else:
        system, glue = group.system_text(), parts.user_to_assistant
        head, tail, name = "", "", "shared"
    prefix_ids = tuple(encode(tokenizer, parts.head + system + parts.system_to_user))
    glue_ids = tuple(encode(tokenizer, glue))
    if group is None:
        reserve = QUESTION_RESERVE + answer_tokens + len(encode(tokenizer, tail + answer_prefix))
    else:
        # One reserve for every question of the group, so the text is cut the same way for
        # all of them and they keep sharing it; a question that overflows it fails alone.
        reserve = (
            QUESTION_RESERVE + block_size + _longest_instructions(tokenizer, group, after_text)
        )
    padded = group is not None and group.pad_to_block
    return QuestionLayout(
        name=name,
        prefix_ids=prefix_ids,
        glue_ids=glue_ids,
        text_budget=max(max_model_len - len(prefix_ids) - len(glue_ids) - reserve, 1),
        pad_id=encode(tokenizer, PAD_TEXT)[0] if padded else None,
        block_size=block_size,
        question_head=head,
        question_tail=tail,
        answer_prefix=answer_prefix,
    )


def _longest_instructions(tokenizer: Any, group: QuestionGroup, after_text: bool) -> int:
    """With instructions after the text, room for the group's longest: one budget for all."""
    if not after_text or not group.sections:
        return 0
    return max(len(encode(tokenizer, text)) for _, text in group.sections)


def fitted_prompt(
    layout: QuestionLayout, text_ids: Sequence[int], question_ids: Sequence[int], limit: int
) -> tuple[list[int], bool] | None:
    """`[shared part][question]` in at most `limit` tokens, and whether the text was cut.

    The shared part is the one every question about the text has, so that it shares the
    text's prefill. A question that needs more room than the group's reserve (e.g. a long
    generated answer) gets the text cut further for its prompt alone: it loses the shared
    prefill, not its answer. None when the question does not fit even with no text."""
    shared, truncated = layout.shared_ids(text_ids)
    if len(shared) + len(question_ids) <= limit:
        return [*shared, *question_ids], truncated
    over = len(shared) + len(question_ids) - limit
    kept = min(len(text_ids), layout.text_budget) - over
    if kept < 0:
        return None
    own_cut = dataclasses.replace(layout, text_budget=kept, pad_id=None)
    shared, _ = own_cut.shared_ids(text_ids)
    return [*shared, *question_ids], True


async def window_text_ids(
    engine: Engine, texts: Sequence[str], context: WindowContext
) -> list[list[int]]:
    """Each text's tokens, computed once per window and engine for every LLM prompt about it
    (the questions and llm_json alike)."""

    async def tokenize(keys: Sequence[str]) -> list[list[int]]:
        return await engine.tokenize(keys)

    values = await context.shared(f"question-text:{engine.name}", texts, tokenize)
    return [list(v) for v in values]
