"""The server's configuration file (`configs/*.yaml`), validated at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # Run every capability once on a fixed text before reporting healthy: the first real request
    # then finds label embeddings computed and instruction prefixes in the engine's cache.
    warmup: bool = True
    # Poll the capabilities folder every 2 s and hot-reload it when its files change (as
    # POST /admin/reload does); an invalid set is logged and the set in force stays.
    watch_capabilities: bool = False
    # Log lines as JSON objects (request id, tenant, status, latency, sizes; never text or keys),
    # or as plain text for a terminal.
    log_format: Literal["json", "text"] = "json"
    # On SIGTERM: stop accepting, give in-flight windows this long to finish, then cancel what
    # is left with 503s, then stop the engines.
    shutdown_grace_s: float = Field(default=30.0, ge=0)
    # Threads of the server process's own BLAS (numpy's products for embedding heads and label
    # prototypes); 1 leaves the cores to the engines. null: the library's default (one per
    # core). Engines are separate processes and keep their own threads.
    blas_threads: int | None = Field(default=1, ge=1)


class BatchingConfig(_Strict):
    # "batched": merge concurrent requests per window and run each capability once per window.
    # "naive": run every request's capabilities on their own as soon as it arrives (the baseline).
    mode: Literal["batched", "naive"] = "batched"
    # The longest a window gathers, from its first request; 0: no gathering at all.
    window_ms: float = Field(default=100.0, ge=0, le=10_000)
    max_texts_per_window: int = Field(default=512, ge=1)
    # true: at most max_concurrent_windows windows run at once; while fewer run, a request starts
    # at once, and while that many run, the next window gathers (up to window_ms and
    # max_texts_per_window) until one finishes. false: fixed windows of window_ms, unbounded.
    adaptive: bool = True
    max_concurrent_windows: int = Field(default=2, ge=1)
    # true: a window frees its slot (of max_concurrent_windows) once its last engine request is
    # sent, so the next one gathers and plans while the engines work; false: at its end.
    release_slot_on_submit: bool = True
    # Lets a request pick its mode with the X-Capserve-Batching header (side-by-side benchmarks).
    allow_mode_header: bool = False
    # Merge identical texts across and within a window's requests (computed once). false: every
    # occurrence is computed on its own (the ablation baseline).
    dedup: bool = True


class LimitsConfig(_Strict):
    max_texts_per_request: int = Field(default=256, ge=1)
    max_text_chars: int = Field(default=4000, ge=1)
    max_capabilities_per_request: int = Field(default=32, ge=1)
    # A request still running after this gets a 504, so that nothing waits forever.
    request_timeout_s: float = Field(default=300.0, gt=0)
    # The largest per-request `timeout_ms` a client may ask for.
    max_request_timeout_s: float = Field(default=600.0, gt=0)
    # Request bodies larger than this get a 413 before they are parsed.
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    # Capability names longer than this are refused, and never echoed whole in errors.
    max_capability_name_chars: int = Field(default=64, ge=1)


class AdmissionConfig(_Strict):
    """Bounded admission: the work accepted and not yet answered, across every request."""

    # At most this many texts admitted and not yet answered; a request that would go over gets a
    # 503 with Retry-After at once. 512 is what the default models clear well within the default
    # request timeout with the built-in pack.
    max_admitted_texts: int = Field(default=512, ge=1)
    # The Retry-After (seconds) of that 503.
    retry_after_s: int = Field(default=2, ge=1)
    # Headroom for `priority: high`: a normal request is refused once the texts admitted would
    # go over this share of max_admitted_texts, a low one over low_priority_share; a high one
    # may use the whole.
    normal_priority_share: float = Field(default=0.9, gt=0.0, le=1.0)
    low_priority_share: float = Field(default=0.75, gt=0.0, le=1.0)


class PromptingConfig(_Strict):
    """How LLM questions are laid out; see processors/questions/."""

    # Force every LLM capability into one layout (evaluation and ablations): "own" gives each
    # question its own instructions before the text; "shared" puts every question of a group
    # after one shared system part and the text. null: each capability's own `layout`.
    layout_override: Literal["own", "shared"] | None = None
    # Shared layout: pad the text so the part every question shares ends on a KV-cache block
    # boundary (vLLM caches only full blocks).
    pad_to_block: bool = False
    # Shared layout: where a question's instructions go: all of the group's before the text
    # (cached once per group), or each question's own after the text (computed per question).
    instructions: Literal["before_text", "after_text"] = "before_text"
    # The most prompt tokens of one question group sent to an engine at once: a window's texts
    # are sent in chunks that fit the KV cache, so a text's blocks are still cached when its
    # next question runs (about 46k tokens fit in 2 GiB at fp32 for the embedded LLM).
    max_tokens_in_flight: int = Field(default=16384, ge=256)


class CacheConfig(_Strict):
    """The result cache: L1 in process, L2 in Redis (optional, shared by replicas)."""

    enabled: bool = True
    # L1: the most (capability, text) results kept in process (least recently used go first).
    max_entries: int = Field(default=50_000, ge=1)
    # How long a result stays cached, in both levels.
    ttl_s: float = Field(default=3600.0, gt=0)
    # L2: e.g. redis://127.0.0.1:6379/0 (a password may be in the URL). null: L1 only.
    redis_url: str | None = None
    # The environment variable that holds the Redis password, when the URL has none.
    redis_password_env: str = "CAPSERVE_REDIS_PASSWORD"
    # Socket timeout of every Redis call: a dead Redis never stalls a request for longer.
    redis_timeout_s: float = Field(default=0.25, gt=0)
    # After a Redis error, L2 is skipped for this long, then tried again.
    redis_retry_after_s: float = Field(default=5.0, gt=0)
    # The environment variable that holds the secret the text hashes are keyed with. Unset: a
    # random secret per process (replicas then cannot share L2 results).
    secret_env: str = "CAPSERVE_CACHE_SECRET"
    # Capabilities never cached.
    exclude: list[str] = Field(default_factory=list)


class ModelConfig(_Strict):
    # "embedded:<name>": a model shipped in a PyPI package (see `capserve prepare-models`),
    # a local folder, or a model hub id.
    source: str
    runner: Literal["generate", "pooling"]
    dtype: str = "auto"
    max_model_len: int | None = None
    enforce_eager: bool = False
    enable_prefix_caching: bool = True
    block_size: int | None = None
    max_num_seqs: int | None = None
    # GPUs (or, on the CPU build, core sets) each replica's engine splits the model across.
    tensor_parallel_size: int = Field(default=1, ge=1)
    gpu_memory_utilization: float | None = None
    # Data-parallel copies of the engine; a window's texts are split across them by text hash.
    replicas: int = Field(default=1, ge=1)
    # GPU build: the GPU indices this model's engines use, replicas x tensor_parallel_size of
    # them; replica r gets devices[r*tp:(r+1)*tp]. null: the first replicas x tp GPUs.
    devices: list[int] | None = None
    # CPU build: one core set per replica in VLLM_CPU_OMP_THREADS_BIND syntax ("0-3", "0,2",
    # "1"); with tensor_parallel_size > 1 it is split evenly into that many rank sets (or give
    # them joined by "|": "0-1|2-3"). null: with one replica of tensor_parallel_size 1,
    # engine_env.cpu_omp_threads_bind as today; else the machine's cores split evenly into
    # contiguous sets (refused if fewer cores than replicas x tensor_parallel_size).
    cpu_cores: list[str] | None = None
    # Any other vllm AsyncEngineArgs field, passed as is.
    engine_args: dict[str, Any] = Field(default_factory=dict)


class EngineEnvConfig(_Strict):
    # vLLM CPU build: GiB of memory reserved for the KV cache of each engine.
    cpu_kvcache_space_gib: float = Field(default=2.0, gt=0)
    # vLLM CPU build: cores the engine's OpenMP threads bind to; "all" means every core.
    cpu_omp_threads_bind: str = "all"
    # OMP_WAIT_POLICY of each engine's OpenMP threads (libgomp). null: the library's default
    # (a thread spins a while after each parallel region before it sleeps); passive: it sleeps
    # at once, leaving the core to the other engines and the server; active: it always spins.
    omp_wait_policy: Literal["passive", "active"] | None = None


class ApiKeyConfig(_Strict):
    """One API key, known by its SHA-256 hash only (`capserve hash-key` prints it)."""

    # The tenant: it names the caller in logs, /stats and /metrics.
    name: str = Field(min_length=1, max_length=64)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    # The capabilities this key may ask for (and get through include_dependencies); null: all.
    capabilities: list[str] | None = None
    # May call /admin/*.
    admin: bool = False
    # Overrides rate_limits.per_key for this key, e.g. "1000/minute".
    rate_limit: str | None = None


class JwtConfig(_Strict):
    """Bearer JWTs (as seed 000 takes them): HS256 with a secret from the environment, or RS256
    with keys from a JWKS file. Expiry (`exp`) is always checked, the audience when set."""

    algorithm: Literal["HS256", "RS256"] = "HS256"
    secret_env: str = "CAPSERVE_JWT_SECRET"
    jwks_file: Path | None = None
    audience: str | None = "capserve"
    issuer: str | None = None
    # Claims: the tenant, the allowed capabilities (a list; absent: all), admin (true/false).
    tenant_claim: str = "sub"
    capabilities_claim: str = "capabilities"
    admin_claim: str = "admin"


class AuthConfig(_Strict):
    # auto: credentials are required when keys or JWT are configured; with none configured the
    # server runs open on a loopback address and refuses to start on any other.
    # none: no authentication at all, wherever the server listens (say so explicitly).
    mode: Literal["auto", "none"] = "auto"
    keys: list[ApiKeyConfig] = Field(default_factory=list)
    # An environment variable holding more keys: a JSON list of the same entries (hashes only).
    keys_env: str = "CAPSERVE_API_KEYS"
    jwt: JwtConfig | None = None
    # Put /metrics behind authentication too (any valid key or token).
    protect_metrics: bool = False


class RateLimitConfig(_Strict):
    """Per-caller request rates (slowapi); over the limit: 429 with Retry-After."""

    enabled: bool = True
    # Each API key or JWT tenant, unless its key says otherwise.
    per_key: str = "100/minute"
    # Callers without credentials (auth off), per client address; null: unlimited.
    anonymous: str | None = None


class SupervisorConfig(_Strict):
    """The engine supervisor: it watches every engine and restarts one that died."""

    # How often each engine's health is checked.
    health_interval_s: float = Field(default=1.0, gt=0)
    # Restart backoff: the first wait, doubled after each failed restart up to the maximum.
    restart_backoff_s: float = Field(default=1.0, gt=0)
    max_restart_backoff_s: float = Field(default=60.0, gt=0)
    # The Retry-After (seconds) of a 503 engine_unavailable: about an engine's restart time.
    retry_after_s: int = Field(default=30, ge=1)
    # /health/deep: each engine's tiny classification must answer within this.
    deep_check_timeout_s: float = Field(default=20.0, gt=0)


class DriftConfig(_Strict):
    """Label drift per capability: a recent window of predictions against a reference."""

    enabled: bool = True
    # Predictions per capability in the recent window.
    recent: int = Field(default=500, ge=10)
    # The reference: a JSON file {capability: {label: proportion}} (a relative path is relative
    # to the config file), or else, for a capability not in it, its first `reference_size`
    # predictions after start.
    reference_file: Path | None = None
    reference_size: int = Field(default=500, ge=10)
    # js: Jensen-Shannon divergence (base 2, in [0, 1]); psi: population stability index.
    metric: Literal["js", "psi"] = "js"
    # Above it, the capability is reported drifting (/stats, and the capserve_drift_alert gauge).
    alert_threshold: float = Field(default=0.1, gt=0)


class ObservabilityConfig(_Strict):
    # Serve Prometheus metrics on GET /metrics.
    metrics: bool = True
    drift: DriftConfig = Field(default_factory=DriftConfig)


class RayAutoscalingConfig(_Strict):
    """Ray Serve autoscaling of the capserve replicas (each a whole runtime with its engines)."""

    min_replicas: int = Field(default=1, ge=1)
    max_replicas: int = Field(default=2, ge=1)
    # Requests in flight per replica that Ray Serve scales towards.
    target_ongoing_requests: float = Field(default=16.0, gt=0)


class RayConfig(_Strict):
    """`capserve serve --ray`: capserve as a Ray Serve application (deploy/): replicas that are
    each a whole capserve runtime, behind an ingress whose router sends a request to the
    replica that has seen its texts."""

    # The Ray cluster to join ("auto", or an address); null: start a local one.
    address: str | None = None
    # CPUs of the local cluster started when `address` is null; null: every core.
    local_cpus: int | None = Field(default=None, ge=1)
    # Fixed replica count; ignored when `autoscaling` is set.
    num_replicas: int = Field(default=2, ge=1)
    autoscaling: RayAutoscalingConfig | None = None
    # Ray resources each replica holds.
    replica_cpus: float = Field(default=1.0, gt=0)
    replica_gpus: float = Field(default=0.0, ge=0)
    # CPU build: a replica binds its engines to `replica_cpus` cores of its own, chosen by its
    # rank on the node (replica 0: cores 0..k-1, replica 1: k..2k-1), so replicas do not share.
    pin_replica_cores: bool = True
    # Requests one replica works on at once; the router picks another replica past it.
    max_ongoing_requests: int = Field(default=64, ge=1)
    # Requests the ingress queues when every replica is full; past it, 503 with Retry-After.
    max_queued_requests: int = Field(default=512, ge=1)
    # Affinity yields to balance: a replica is passed over for the least loaded one when it holds
    # this many more requests than that one.
    imbalance_threshold: int = Field(default=8, ge=1)
    # Times a request whose replica died under it is sent to another, before a 503.
    retries: int = Field(default=2, ge=0)
    # The ingress's HTTP address (the Ray Serve proxy's); null: `server.host` and `server.port`.
    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)


class CapServeConfig(_Strict):
    server: ServerConfig = Field(default_factory=ServerConfig)
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    engine_env: EngineEnvConfig = Field(default_factory=EngineEnvConfig)
    prompting: PromptingConfig = Field(default_factory=PromptingConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    admission: AdmissionConfig = Field(default_factory=AdmissionConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    rate_limits: RateLimitConfig = Field(default_factory=RateLimitConfig)
    supervisor: SupervisorConfig = Field(default_factory=SupervisorConfig)
    observability: ObservabilityConfig = Field(default_factory=ObservabilityConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    # Folder of capability YAML files; relative paths are relative to the config file.
    capabilities_dir: Path = Path("capabilities")
    # Where prepared embedded models are kept; default: $XDG_CACHE_HOME/capserve/models.
    models_dir: Path | None = None
    models: dict[str, ModelConfig] = Field(min_length=1)

    @field_validator("auth", mode="before")
    @classmethod
    def _auth_shorthand(cls, value: Any) -> Any:
        """`auth: none` is short for `auth: {mode: none}`."""
        return {"mode": "none"} if value == "none" else value
