"""The shape of one capability definition file in `configs/capabilities/*.yaml`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

CapabilityKind = Literal[
    "llm_choice",
    "llm_multilabel",
    "llm_score",
    "llm_json",
    "embedding_similarity",
    "embedding_head",
    "embedding_multilabel",
    "classifier",
    "regex",
    "formula",
    "rule",
]
# The kinds that ask an LLM a question about a text, answered in one decode step.
QUESTION_KINDS = ("llm_choice", "llm_multilabel", "llm_score")
# The kinds with an LLM prompt (instructions, cue, answer prefix), laid out shared or own.
PROMPT_KINDS = (*QUESTION_KINDS, "llm_json")
# The kinds that fit a logistic regression on the text embedding from labeled examples.
HEAD_KINDS = ("embedding_head", "embedding_multilabel")
# Built-in patterns of kind `regex`, each with a validity check beyond the pattern.
BuiltinPattern = Literal["email", "phone", "credit_card", "iban"]
NAME_PATTERN = r"^[a-z][a-z0-9_]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LabelDefinition(_Strict):
    name: str = Field(min_length=1, max_length=64)
    # Used by embedding_similarity as the text that stands for the label, and shown to LLMs.
    description: str | None = None
    # More texts that stand for the label (embedding_similarity scores the best match).
    examples: tuple[str, ...] = ()
    # llm_multilabel: the yes/no question asked about the text for this label.
    question: str | None = Field(default=None, min_length=1)
    # llm_multilabel: the label is reported when P(yes) / (P(yes) + P(no)) reaches this;
    # embedding_multilabel: when the label's own head gives it this probability.
    threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    # embedding_similarity: the label's sub-labels (a taxonomy). Each level is classified among
    # the children of the node chosen above it; the result is the path.
    children: tuple[LabelDefinition, ...] = ()
    # regex: a Python regular expression, or one of the built-in patterns (with its checks).
    pattern: str | None = Field(default=None, min_length=1, max_length=2000)
    builtin: BuiltinPattern | None = None
    # Single-label kinds: the label's value; when every label has one, the result's score is
    # the probability-weighted mean of the values (e.g. low: 0.1, medium: 0.5, high: 0.9).
    value: float | None = None

    @field_validator("children", mode="before")
    @classmethod
    def _children_from_strings(cls, value: object) -> object:
        if isinstance(value, list):
            return [{"name": item} if isinstance(item, str) else item for item in value]
        return value


class PromptDefinition(_Strict):
    """An LLM question. The text is always the user turn, on its own, so that every question
    about a text can share its prefill; what differs per question comes after it.

    Jinja templates; a label prints as its name and has `.name` and `.description`.
    """

    # What the model must know to answer: the question's whole system part in layout `own`,
    # one section of its group's shared system part in layout `shared`. May use `labels` only,
    # so that it is the same for every text and the engine's prefix cache reuses it.
    instructions: str = Field(min_length=1)
    # A short line after the text that names this question; may use `labels` and
    # `deps.<dependency>` (`.label`, `.confidence`, `.score`, `.labels`): upstream results go
    # here, after the text, so the question still shares the text's prefill.
    cue: str = ""
    # Written as the start of the answer, so that the next token is the label (llm_choice),
    # yes/no (llm_multilabel) or a digit (llm_score: end it with a space, since the embedded
    # tokenizer has no space-prefixed digits).
    answer_prefix: str = ""


class ConditionDefinition(_Strict):
    labels: tuple[str, ...] = Field(min_length=1)
    min_confidence: float = Field(default=0.0, ge=0.0, le=1.0)


class RuleCase(_Strict):
    # Dependency name -> a label, a list of labels, or {labels: [...], min_confidence: x};
    # or a condition expression, as in a capability's `when` (e.g. "pii.count > 0").
    when: dict[str, ConditionDefinition] | str = Field(min_length=1)
    label: str
    # Merged into the result's details when this case decides, e.g. a suggested model tier
    # ({tier: small}) for whoever acts on the label.
    details: dict[str, Any] = Field(default_factory=dict)

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
    # Merged into the result's details when no case holds (as a case's `details`).
    default_details: dict[str, Any] = Field(default_factory=dict)


class TrainingDefinition(_Strict):
    """embedding_head, embedding_multilabel: where the labeled examples come from, and how the
    head is fitted."""

    # A JSONL file beside the YAML, one {"text": ..., "label": ...} per line (for
    # embedding_multilabel {"text": ..., "labels": [...]}, [] for a text with none of them);
    # the labels' `examples` are used too.
    data: str | None = Field(default=None, min_length=1)
    # Inverse regularisation strength of the logistic regression.
    c: float = Field(default=1.0, gt=0.0)
    # "balanced": weight classes inversely to their frequency.
    class_weight: Literal["balanced"] | None = "balanced"


class FormulaDefinition(_Strict):
    """formula: score = clip(sum(weight * input)). An input is `dep` (its score) or
    `dep.field` (a named field of its result, e.g. `number_of_few_shots.count`)."""

    terms: dict[str, float] = Field(min_length=1)
    # More inputs reported in the result's fields with no weight.
    report: tuple[str, ...] = ()
    # The field that holds the total; default: the capability's name.
    field: str | None = Field(default=None, pattern=NAME_PATTERN, max_length=64)
    clip: tuple[float, float] | None = (0.0, 1.0)


class CapabilityDefinition(_Strict):
    name: str = Field(pattern=NAME_PATTERN, max_length=64)
    kind: CapabilityKind
    description: str = ""
    model: str | None = None
    depends_on: tuple[str, ...] = ()
    # A condition over dependency results; the capability runs only for the texts where it
    # holds, the others get a skipped result. E.g.
    # "task_type.label in ['Code Generation'] and complexity.prompt_complexity_score > 0.5".
    when: str | None = Field(default=None, min_length=1, max_length=1000)
    # Every kind but llm_score needs labels: at least two (llm_multilabel: at least one).
    labels: tuple[LabelDefinition, ...] = ()
    prompt: PromptDefinition | None = None
    # LLM questions: `shared` puts the instructions of every `shared` question of the group
    # into one system part before the text, so all of a text's questions share one prefill;
    # `own` gives the question its own system part (its text is computed again).
    layout: Literal["shared", "own"] = "shared"
    # LLM questions: the questions that share a system part; default: one group per model.
    group: str | None = Field(default=None, pattern=NAME_PATTERN, max_length=64)
    # llm_score: the answer scale: digits 0-9, or a 1-5 rubric; the score is the
    # probability-weighted mean, mapped to [0, 1].
    scale: Literal["0-9", "1-5"] = "0-9"
    rule: RuleDefinition | None = None
    # llm_choice: "auto" | "label_logprobs" | "top_logprobs" | "choice".
    scoring: Literal["auto", "label_logprobs", "top_logprobs", "choice"] = "auto"
    # llm_choice: divide out the label prior the prompt gives content-free inputs.
    calibrate: bool = False
    # embedding_similarity: softmax temperature over cosine similarities.
    temperature: float = Field(default=0.05, gt=0.0)
    # embedding_similarity: how a label's description and examples stand for it: the best
    # matching one ("nearest") or their mean ("centroid").
    prototype: Literal["nearest", "centroid"] = "nearest"
    # Single-label kinds: also report `<name>_1`, `<name>_2` and `<name>_prob` in the result's
    # fields (seed 000's task_type fields); `<name>_2` is "NA" below second_min.
    top_two_fields: bool = False
    second_min: float = Field(default=0.1, ge=0.0, le=1.0)
    # embedding_head, embedding_multilabel: its training data and settings.
    training: TrainingDefinition | None = None
    # llm_json: the JSON schema the output must follow (vLLM structured outputs).
    output_schema: dict[str, Any] | None = None
    # llm_json: the most tokens generated; output cut short is an error result.
    max_tokens: int = Field(default=256, ge=1, le=4096)
    # llm_json: a top-level string field of the output used as the result's label.
    label_field: str | None = None
    formula: FormulaDefinition | None = None
    # A text longer than the model's context: "truncate" cuts it to fit (details.truncated on
    # LLM results); "refuse" fails that text alone with the per-text error text_too_long.
    # Enters the version only when "refuse" (a truncating capability keeps its version).
    on_overflow: Literal["truncate", "refuse"] = "truncate"

    @field_validator("labels", mode="before")
    @classmethod
    def _labels_from_strings(cls, value: object) -> object:
        if isinstance(value, list):
            return [{"name": item} if isinstance(item, str) else item for item in value]
        return value
