"""The shape of one capability definition file in `configs/capabilities/*.yaml`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

CapabilityKind = Literal["llm_choice", "embedding_similarity", "rule"]
NAME_PATTERN = r"^[a-z][a-z0-9_]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LabelDefinition(_Strict):
    name: str = Field(min_length=1, max_length=64)
    # Used by embedding_similarity as the text that stands for the label, and shown to LLMs.
    description: str | None = None
    # More texts that stand for the label (embedding_similarity scores the best match).
    examples: tuple[str, ...] = ()


class PromptDefinition(_Strict):
    # Jinja templates. `system` may use `labels` only, so that it is identical for every text
    # and the engine's prefix cache reuses it. `user` must use `text`, and may use `labels`
    # and `deps.<dependency>.label` / `.confidence`. A label prints as its name and has
    # `.name` and `.description`.
    system: str
    user: str = "{{ text }}"
    # Put after the assistant turn starts, so that the next token is the label.
    answer_prefix: str = ""


class ConditionDefinition(_Strict):
    labels: tuple[str, ...] = Field(min_length=1)
    min_confidence: float = Field(default=0.0, ge=0.0, le=1.0)


class RuleCase(_Strict):
    # Dependency name -> a label, a list of labels, or {labels: [...], min_confidence: x}.
    when: dict[str, ConditionDefinition] = Field(min_length=1)
    label: str

    @field_validator("when", mode="before")
    @classmethod
    def _expand_shorthand(cls, value: object) -> object:
        if not isinstance(value, dict):
            return value
        expanded: dict[object, object] = {}
        for dep, cond in value.items():
            if isinstance(cond, str):
                expanded[dep] = {"labels": [cond]}
            elif isinstance(cond, list):
                expanded[dep] = {"labels": cond}
            else:
                expanded[dep] = cond
        return expanded


class RuleDefinition(_Strict):
    # The first case whose conditions all hold gives the label; otherwise `default`.
    cases: tuple[RuleCase, ...] = ()
    default: str


class CapabilityDefinition(_Strict):
    name: str = Field(pattern=NAME_PATTERN, max_length=64)
    kind: CapabilityKind
    description: str = ""
    model: str | None = None
    depends_on: tuple[str, ...] = ()
    labels: tuple[LabelDefinition, ...] = Field(min_length=2)
    prompt: PromptDefinition | None = None
    rule: RuleDefinition | None = None
    # llm_choice: "auto" | "label_logprobs" | "top_logprobs" | "choice".
    scoring: Literal["auto", "label_logprobs", "top_logprobs", "choice"] = "auto"
    # llm_choice: divide out the label prior the prompt gives content-free inputs.
    calibrate: bool = False
    # embedding_similarity: softmax temperature over cosine similarities.
    temperature: float = Field(default=0.05, gt=0.0)

    @field_validator("labels", mode="before")
    @classmethod
    def _labels_from_strings(cls, value: object) -> object:
        if isinstance(value, list):
            return [{"name": item} if isinstance(item, str) else item for item in value]
        return value
