"""listingflow's own settings (``LISTINGFLOW_*`` environment variables or ``.env``).

Knobs that operators tune per environment live here, never in flow parameters: retry policy,
limit overrides, where cached submissions and locks live, download rules. Credentials are per
provider (``PIXII_API_KEY`` ...) in each plugin's settings class.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class RetryPolicy(BaseModel):
    """In-task retries of retryable provider errors, honouring ``Retry-After``."""

    max_attempts: int = Field(6, ge=1, le=50, description="attempts per call, the first included")
    base_delay_seconds: float = Field(1.0, ge=0, description="exponential backoff base without Retry-After")
    max_delay_seconds: float = Field(120.0, ge=0, description="cap for one wait")
    max_total_seconds: float = Field(900.0, ge=0, description="give up after this much waiting")
    jitter: float = Field(0.1, ge=0, le=1, description="fraction of random jitter added to each delay")


class LimitOverride(BaseModel):
    requests: int = Field(gt=0)
    per_seconds: float = Field(60.0, gt=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LISTINGFLOW_", env_nested_delimiter="__", env_file=".env", extra="ignore"
    )

    home: Path = Field(Path(".listingflow"), description="local state: cache records, locks, spool")
    providers: list[str] | None = Field(None, description="allow-list of provider plugins to load")
    strict_plugins: bool = Field(False, description="raise when a provider plugin fails to load")

    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    product_concurrency: int = Field(50, ge=1, le=10_000, description="products in progress at once")
    batch_linger_seconds: float = Field(
        1.0, ge=0, le=60, description="how long a cross-product batch waits for more products"
    )

    use_global_limits: bool = Field(True, description="acquire Prefect global concurrency limits")
    limit_prefix: str = Field("listingflow", description="prefix of the global concurrency limit names")
    rate_limits: dict[str, dict[str, LimitOverride]] = Field(
        default_factory=dict, description="provider -> route group -> override of the declared limit"
    )
    inflight_limits: dict[str, int] = Field(default_factory=dict, description="provider -> max jobs")
    rate_margin: float = Field(
        0.001, ge=0, le=0.5, description="pace this fraction under the documented rate (clock skew)"
    )

    result_storage: str | None = Field(
        None, description="Prefect block slug for cached submissions, e.g. 's3-bucket/listingflow'"
    )
    lock_dir: Path | None = Field(None, description="file locks for overlapping runs (one host)")
    redis_url: str | None = Field(None, description="Redis lock manager for several hosts")
    lock_hold_seconds: float = Field(900.0, gt=0, description="a crashed holder's lock expires after")
    cache_version: str = Field("1", description="bump to invalidate every cached submission")

    archive: str = Field("archive", description="default archive: local folder or s3://bucket/prefix")
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, moto...)")
    spool_dir: Path | None = Field(None, description="outputs kept here while the archive is down")

    download_max_bytes: int = Field(25 * 1024 * 1024, gt=0)
    sandbox_mode: bool = Field(False, description="allow loopback output hosts (sandboxes only)")
    sandbox_instance: str | None = Field(
        None, description="set by the sandboxes: their cached jobs are kept apart, per sandbox instance"
    )

    @model_validator(mode="after")
    def _sandbox_state_apart(self) -> Settings:
        """Sandbox jobs die with their sandbox: a run against one must never find (or leave) cached
        submissions, product records or locks that a run against the real providers, or against another
        sandbox instance, would use. Its cache keys carry the instance (whatever the result storage),
        and its local state lives in ``sandbox_dir``."""
        if self.sandbox_instance and not self.cache_version.endswith(f"+sandbox-{self.sandbox_instance}"):
            self.cache_version = f"{self.cache_version}+sandbox-{self.sandbox_instance}"
        return self

    @property
    def state_dir(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def sandbox_dir(self) -> Path | None:
        """Cached submissions, locks and spool of runs against one sandbox instance."""
        return self.state_dir / "sandboxes" / self.sandbox_instance if self.sandbox_instance else None

    @property
    def cache_dir(self) -> Path:
        return self.sandbox_dir or self.state_dir

    @property
    def locks_path(self) -> Path:
        if self.lock_dir and not self.sandbox_instance:
            return self.lock_dir.expanduser().resolve()
        return self.cache_dir / "locks"

    @property
    def results_path(self) -> Path:
        return self.cache_dir / "results"

    @property
    def held_path(self) -> Path:
        """Index of held submissions (outcome unknown, or charged and lost): ``listingflow unknown``."""
        return self.state_dir / "held"

    @property
    def spool_path(self) -> Path:
        if self.spool_dir and not self.sandbox_instance:
            return self.spool_dir.expanduser().resolve()
        return self.cache_dir / "spool"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def reset_settings() -> None:
    get_settings.cache_clear()
