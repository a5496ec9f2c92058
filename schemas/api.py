"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Priority = Literal["high", "normal", "low"]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ClassifyRequest(_Request):
    texts: list[str] = Field(min_length=1, description="Texts to classify, in order.")
    capabilities: list[str] = Field(min_length=1, description="Capability names to run.")
    include_dependencies: bool = Field(
        default=False, description="Also return the results of the capabilities' dependencies."
    )
    priority: Priority = Field(
        default="normal", description="high goes first into the next window; low last."
    )
    timeout_ms: int | None = Field(
        default=None,
        ge=1,
        description="Deadline in milliseconds (default limits.request_timeout_s, at most "
        "limits.max_request_timeout_s). When it passes, the finished results come back with "
        "partial: true; 504 only when none is finished.",
    )


class SingleClassifyRequest(_Request):
    text: str
    capabilities: list[str] = Field(min_length=1)
    include_dependencies: bool = False
    priority: Priority = "normal"
    timeout_ms: int | None = Field(default=None, ge=1)


class CapabilityResultBody(BaseModel):
    label: str | None = Field(description="The answer; null for a score, skipped or error.")
    confidence: float
    probabilities: dict[str, float]
    version: str
    score: float | None = Field(
        default=None, description="llm_score, formula, labels with values: a number."
    )
    labels: list[str] | None = Field(
        default=None,
        description="llm_multilabel: the labels that reach their threshold; regex: matches.",
    )
    fields: dict[str, Any] | None = Field(
        default=None,
        description="Named output: llm_json's object, formula inputs, regex matches, top two.",
    )
    path: list[str] | None = Field(
        default=None, description="Taxonomy: the chosen node of each level, from the root."
    )
    skipped: bool = Field(default=False, description="The capability did not run (see reason).")
    reason: str | None = Field(default=None, description="Why it was skipped.")
    error: str | None = Field(
        default=None, description="Why the output could not be used (e.g. invalid JSON)."
    )
    details: dict[str, Any] = Field(default_factory=dict)


class TextErrorBody(BaseModel):
    type: str = Field(description="capability_failed, or text_too_long.")
    capability: str = Field(description="The capability that failed first on this text.")
    message: str


class TextResultBody(BaseModel):
    index: int
    results: dict[str, CapabilityResultBody] = Field(
        description="What finished for this text (all it asked for, unless error or partial)."
    )
    error: TextErrorBody | None = Field(
        default=None, description="Why this text failed; the other texts keep their results."
    )
    missing: list[str] = Field(
        default_factory=list,
        description="Capabilities asked for with no result here (failed, or past the deadline).",
    )


class WindowBody(BaseModel):
    id: int
    mode: str
    requests: int
    texts: int
    unique_texts: int
    capability_executions: int
    naive_equivalent_executions: int


class ClassifyResponse(BaseModel):
    request_id: str
    latency_ms: float
    results: list[TextResultBody]
    window: WindowBody | None = Field(description="null when the result cache answered.")
    cached: bool = Field(default=False, description="Every result came from the result cache.")
    partial: bool = Field(
        default=False, description="The deadline passed first: see each text's `missing`."
    )
    failed_texts: int = Field(default=0, description="Texts with an `error` entry.")


class SingleClassifyResponse(BaseModel):
    request_id: str
    latency_ms: float
    results: dict[str, CapabilityResultBody]
    window: WindowBody | None = Field(description="null when the result cache answered.")
    cached: bool = Field(default=False, description="Every result came from the result cache.")
    partial: bool = Field(default=False, description="The deadline passed first.")
    missing: list[str] = Field(
        default_factory=list, description="Capabilities with no result by the deadline."
    )


class LabelBody(BaseModel):
    name: str
    description: str | None = None


class CapabilityBody(BaseModel):
    name: str
    kind: str
    description: str
    model: str | None
    # The precision its model's engine computes in (part of the version); null: no model.
    dtype: str | None = None
    depends_on: list[str]
    labels: list[LabelBody]
    version: str


class CapabilitiesResponse(BaseModel):
    capabilities: list[CapabilityBody]


class LivenessResponse(BaseModel):
    status: Literal["alive"] = "alive"


class EngineStateBody(BaseModel):
    # starting | ready | restarting | failed (a restart attempt failed; retrying) | stopped
    state: str
    restarts: int
    # The exception type that took the engine out of service last, if any.
    last_error: str | None = None


class ReadinessResponse(BaseModel):
    # ok (ready) | starting (engines or warm-up under way) | unavailable (an engine is not up) |
    # stopping (shutting down)
    status: str
    engines: dict[str, EngineStateBody]


class EngineProbeBody(BaseModel):
    capability: str | None
    ok: bool
    error: str | None = None
    latency_ms: float | None = None


class CacheProbeBody(BaseModel):
    enabled: bool
    # up | down | off (no Redis L2 configured)
    l2: str
    ok: bool


class DeepHealthResponse(BaseModel):
    status: Literal["ok", "failed"]
    engines: dict[str, EngineProbeBody]
    cache: CacheProbeBody


class ErrorDetail(BaseModel):
    field: str | None = None
    message: str


# Every `error.type` the server answers with (`capserve_errors_total` starts each at 0, so that
# `rate()` sees the first one after a start). A test keeps it true to the server's code.
ERROR_TYPES = (
    "at_capacity",
    "body_too_large",
    "capability_failed",
    "client_closed",
    "engine_unavailable",
    "forbidden",
    "http_error",
    "internal_error",
    "invalid_body",
    "invalid_capabilities",
    "method_not_allowed",
    "not_found",
    "rate_limited",
    "shutting_down",
    "starting",
    "timeout",
    "unauthorized",
    "unknown_capability",
    "validation_error",
)


class ErrorBody(BaseModel):
    type: str
    message: str
    details: list[ErrorDetail] = Field(default_factory=list)


class ErrorResponse(BaseModel):
    error: ErrorBody


class VersionChangeBody(BaseModel):
    name: str
    old_version: str
    new_version: str


class ModelChangesBody(BaseModel):
    """How a reload changed the models (the config file's `models` section), by name."""

    added: list[str] = Field(description="New models: their engines started before the swap.")
    replaced: list[str] = Field(
        description="Models configured otherwise: a new engine serves the new set; the old one "
        "closes once the windows in flight on it are done."
    )
    removed: list[str] = Field(description="Models gone: their engines close after the swap.")


class ReloadResponse(BaseModel):
    reloaded: bool = Field(description="The new capability set is in force (false: dry run).")
    dry_run: bool
    capabilities: int = Field(description="How many capabilities the new set holds.")
    added: list[str]
    removed: list[str]
    changed: list[VersionChangeBody]
    unchanged: int
    models: ModelChangesBody
    restart_required: list[str] = Field(
        description="Config sections that differ in the file: a reload applies only the "
        "capabilities folder and `models`; these take effect at the next restart."
    )
